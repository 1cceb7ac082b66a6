// atrium files put / get / ls / show / rm: a project's files. Transfers stream (nothing is held in
// memory), show a byte bar on a terminal, and are checked end to end: the sha256 computed here while
// the bytes go by must be the one the server records for the file.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { unwrap, type AtriumClient, type AtriumFile } from '@atrium/client';
import type { RegisterCommands } from '../../program.js';
import { CliError, exitCodes, type CliContext, type Column } from '../context.js';
import { formatBytes, transferProgress } from '../progress.js';

export const fileColumns: Column<AtriumFile>[] = [
  { header: 'ID', value: (f) => f.id },
  { header: 'NAME', value: (f) => f.name },
  { header: 'SIZE', value: (f) => formatBytes(f.size) },
  { header: 'KIND', value: (f) => f.kind },
  { header: 'TAGS', value: (f) => f.tags.join(',') },
  { header: 'CREATED', value: (f) => f.created_at },
];

/** The sha256 and length of the bytes a transfer let through. */
interface Digest {
  sha256: string;
  size: number;
}

/** Passes chunks on unchanged, hashing and counting them, and telling `onChunk` each length. */
function digesting(digest: Digest, onChunk: (bytes: number) => void) {
  const hash = createHash('sha256');
  return async function* (source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of source) {
      hash.update(chunk);
      digest.size += chunk.length;
      onChunk(chunk.length);
      yield chunk;
    }
    digest.sha256 = hash.digest('hex');
  };
}

function checkDigest(file: AtriumFile, digest: Digest, transfer: 'uploaded' | 'downloaded'): void {
  if (digest.sha256 === file.sha256 && digest.size === file.size) return;
  throw new CliError(
    `the bytes ${transfer} do not match what the server has for ${file.name} (${file.id})`,
    exitCodes.failure,
    [
      `here: ${digest.size} bytes, sha256 ${digest.sha256}`,
      `server: ${file.size} bytes, sha256 ${file.sha256}`,
      ...(transfer === 'uploaded'
        ? [`the stored file is kept: "atrium files rm ${file.id}" deletes it`]
        : []),
    ].join('\n'),
  );
}

export interface UploadOptions {
  name?: string;
  tags?: string[];
}

/** Streams a local file (or standard input, `-`) into the project; throws unless the stored sha256 is ours. */
export async function uploadFile(
  ctx: CliContext,
  projectId: string,
  path: string,
  options: UploadOptions = {},
): Promise<AtriumFile> {
  const fromStdin = path === '-';
  const name = options.name ?? (fromStdin ? undefined : basename(path));
  if (!name) throw new CliError('uploading standard input needs --name', exitCodes.usage);
  let size: number | undefined;
  if (!fromStdin) {
    const stat = statSync(path, { throwIfNoEntry: false });
    if (!stat?.isFile()) throw new CliError(`${path}: no such file`, exitCodes.usage);
    size = stat.size;
  }
  const digest: Digest = { sha256: '', size: 0 };
  const progress = transferProgress(ctx.io, name, size);
  const source: AsyncIterable<Uint8Array> = fromStdin ? process.stdin : createReadStream(path);
  const body = Readable.toWeb(Readable.from(digesting(digest, progress.advance)(source)));
  let file: AtriumFile;
  try {
    file = await ctx.client().uploadFile(projectId, body as ReadableStream<Uint8Array>, {
      name,
      ...(options.tags?.length ? { tags: options.tags } : {}),
    });
  } finally {
    progress.stop();
  }
  checkDigest(file, digest, 'uploaded');
  ctx.note(
    `uploaded ${path} as ${file.id} (${formatBytes(file.size)}, sha256 ${file.sha256.slice(0, 12)}… verified)`,
  );
  return file;
}

export interface DownloadTarget {
  /** A path, a directory to put it in under its own name, or `-` for standard output. */
  output?: string;
  /** Replace a file of the same name that is already there (a named --output always does). */
  force?: boolean;
}

function targetPath(file: AtriumFile, { output, force }: DownloadTarget): string {
  const named = output !== undefined && !statSync(output, { throwIfNoEntry: false })?.isDirectory();
  if (named) return output;
  const path = join(output ?? '.', basename(file.name));
  if (!force && statSync(path, { throwIfNoEntry: false }))
    throw new CliError(`${path} exists`, exitCodes.conflict, 'pass --force to replace it, or -o PATH');
  return path;
}

/**
 * Streams a file's content to a path (written to a temporary file beside it, renamed into place once
 * its sha256 is checked, so that the path never holds a partial or altered file) or to standard
 * output. Answers where it went.
 */
export async function downloadFile(
  ctx: CliContext,
  projectId: string,
  fileId: string,
  target: DownloadTarget = {},
): Promise<{ file: AtriumFile; path: string }> {
  const client = ctx.client();
  const file = unwrap(
    await client.GET('/projects/{projectId}/files/{fileId}', {
      params: { path: { projectId, fileId } },
    }),
  );
  const toStdout = target.output === '-';
  const path = toStdout ? '-' : targetPath(file, target);
  const digest: Digest = { sha256: '', size: 0 };
  const progress = transferProgress(ctx.io, file.name, file.size);
  const checked = digesting(digest, progress.advance);
  try {
    const content = Readable.fromWeb(await contentOf(client, projectId, fileId));
    if (toStdout) {
      const stdout = ctx.io.stdout;
      for await (const chunk of checked(content)) if (!stdout.write(chunk)) await once(stdout, 'drain');
      checkDigest(file, digest, 'downloaded');
    } else {
      const temporary = join(dirname(path), `.${basename(path)}.${process.pid}.part`);
      try {
        await pipeline(content, checked, createWriteStream(temporary, { flags: 'wx', flush: true }));
        checkDigest(file, digest, 'downloaded');
        await rename(temporary, path);
      } finally {
        await rm(temporary, { force: true });
      }
    }
  } finally {
    progress.stop();
  }
  ctx.note(
    `downloaded ${file.id} to ${toStdout ? 'standard output' : path} (${formatBytes(file.size)}, sha256 ${file.sha256.slice(0, 12)}… verified)`,
  );
  return { file, path };
}

async function contentOf(client: AtriumClient, projectId: string, fileId: string) {
  const stream = await client.downloadFile(projectId, fileId);
  // The web stream of fetch and the one node:stream speaks are the same class under two type names.
  return stream as Parameters<typeof Readable.fromWeb>[0];
}

export const registerFiles: RegisterCommands = (program, act) => {
  const files = program.command('files').description("a project's files: upload, download, list, delete");

  files
    .command('put')
    .description('upload files (streamed; the sha256 the server stores is checked against the local one)')
    .argument('<path...>', 'local files, or - for standard input (with --name)')
    .option('--name <name>', 'the name to store it under (one file only; default: its own name)')
    .option('--tag <tag...>', 'labels, name or name=value (repeatable)')
    .action(
      act(async (ctx, _args, options, command) => {
        const paths = command.processedArgs[0] as string[];
        const name = options.name as string | undefined;
        if (name && paths.length > 1) throw new CliError('--name names one file only', exitCodes.usage);
        const projectId = await ctx.project();
        const uploaded: AtriumFile[] = [];
        for (const path of paths)
          uploaded.push(
            await uploadFile(ctx, projectId, path, {
              ...(name ? { name } : {}),
              tags: (options.tag as string[] | undefined) ?? [],
            }),
          );
        // The ids alone, one per line, so that `F=$(atrium files put x)` holds the id (the names,
        // sizes and checksums went to stderr as each upload ended).
        ctx.result(uploaded, () => ctx.out(uploaded.map((f) => f.id).join('\n')));
      }),
    );

  files
    .command('get')
    .description('download files (streamed, sha256 checked, written under a temporary name until it is)')
    .argument('<id...>', 'file ids')
    .option(
      '-o, --output <path>',
      'where to write it: a path, a directory, or - for standard output (default: its name, here)',
    )
    .option('-f, --force', 'replace a file of the same name', false)
    .action(
      act(async (ctx, _args, options, command) => {
        const ids = command.processedArgs[0] as string[];
        const output = options.output as string | undefined;
        const toDirectory =
          output !== undefined && statSync(output, { throwIfNoEntry: false })?.isDirectory();
        if (ids.length > 1 && output !== undefined && !toDirectory)
          throw new CliError('several files go to a directory: -o DIR', exitCodes.usage);
        const projectId = await ctx.project();
        const written: { id: string; name: string; path: string; size: number; sha256: string }[] = [];
        for (const id of ids) {
          const { file, path } = await downloadFile(ctx, projectId, id, {
            ...(output === undefined ? {} : { output }),
            force: options.force === true,
          });
          written.push({ id: file.id, name: file.name, path, size: file.size, sha256: file.sha256 });
        }
        if (output !== '-') ctx.result(written, () => ctx.out(written.map((w) => w.path).join('\n')));
      }),
    );

  files
    .command('ls')
    .alias('list')
    .description("list the project's files, newest first")
    .option('--tag <tag...>', 'files carrying every one of these tags')
    .option('--kind <kind>', 'input (uploaded) or output (produced by a run)')
    .option('--name <name>', 'files of exactly this name')
    .option('--run <id>', 'what this run produced')
    .action(
      act(async (ctx, _args, options) => {
        const projectId = await ctx.project();
        const rows: AtriumFile[] = [];
        for await (const file of ctx.client().paginate('/projects/{projectId}/files', {
          params: {
            path: { projectId },
            query: {
              ...(options.tag ? { tag: options.tag as string[] } : {}),
              ...(options.kind ? { kind: options.kind as AtriumFile['kind'] } : {}),
              ...(options.name ? { name: options.name as string } : {}),
              ...(options.run ? { run_id: options.run as string } : {}),
            },
          },
        }))
          rows.push(file);
        ctx.table(rows, fileColumns);
      }),
    );

  files
    .command('show')
    .description("one file's metadata")
    .argument('<id>', 'a file id')
    .action(
      act(async (ctx, [fileId]) => {
        const projectId = await ctx.project();
        const file = unwrap(
          await ctx.client().GET('/projects/{projectId}/files/{fileId}', {
            params: { path: { projectId, fileId: fileId! } },
          }),
        );
        ctx.fields(file, [
          ['id', file.id],
          ['name', file.name],
          ['size', `${formatBytes(file.size)} (${file.size} bytes)`],
          ['sha256', file.sha256],
          ['media type', file.media_type],
          ['kind', file.kind],
          ['tags', file.tags.join(', ') || '-'],
          ['derived from', file.parent_id],
          ['run', file.run_id],
          ['job', file.job_id],
          ['created', file.created_at],
        ]);
      }),
    );

  files
    .command('rm')
    .alias('delete')
    .description('delete files (refused while a run that has not ended uses one)')
    .argument('<id...>', 'file ids')
    .action(
      act(async (ctx, _args, _options, command) => {
        const ids = command.processedArgs[0] as string[];
        const projectId = await ctx.project();
        for (const fileId of ids) {
          unwrap(
            await ctx.client().DELETE('/projects/{projectId}/files/{fileId}', {
              params: { path: { projectId, fileId } },
            }),
          );
          if (!ctx.json) ctx.out(`deleted ${fileId}`);
        }
        if (ctx.json) ctx.out(JSON.stringify({ deleted: ids }));
      }),
    );
};
