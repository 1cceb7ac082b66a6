// The execution contract between Atrium and a module function, the same for a local process and a
// cluster Job (MLsploit's modules use the same shape). The work directory holds:
//
//   input/<name>   the input files, by name
//   input.json     {function, options, files: [{name, path: 'input/<name>', media_type, size, sha256, tags}]}
//   output/<name>  what the function writes
//   output.json    {files: [{name, media_type?, tags?, parent?}], tags?}, written by the function
//
// The function runs with the work directory as its current directory (and in ATRIUM_WORK_DIR); its
// stdout and stderr are the job's log; a non-zero exit is a failure. What it writes is untrusted:
// readOutput accepts only plain files, all of them listed, none reaching outside output/.
import { createHash } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { chmod, copyFile, link, lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { z } from 'zod';
import type { FunctionOutputKind } from './manifest.js';

export type Tags = Record<string, string | number | boolean>;

export interface InputFile {
  name: string;
  /** Relative to the work directory: `input/<name>`. */
  path: string;
  media_type: string;
  size: number;
  sha256: string;
  tags: Tags;
}

/** The content of input.json. */
export interface InputDocument {
  function: string;
  options: Record<string, unknown>;
  files: InputFile[];
}

/** What the caller knows of an input file; size and sha256 are computed from the copied bytes. */
export interface InputFileInfo {
  name: string;
  media_type: string;
  tags?: Tags;
  /** When given, the copied bytes must have this digest (the file store's integrity check). */
  sha256?: string;
}

export interface InputSpec {
  function: string;
  options: Record<string, unknown>;
  files: InputFileInfo[];
}

/** Where an input file's bytes are, for example its content-addressed path in the file store. */
export interface InputSource {
  name: string;
  path: string;
}

export interface OutputFile {
  name: string;
  /** Absolute path of the file under output/. */
  path: string;
  /** As declared, or guessed from the name's extension. */
  media_type: string;
  size: number;
  tags: Tags;
  /** The input file it derives from, by name. */
  parent: string | null;
}

export interface OutputResult {
  files: OutputFile[];
  /** Tags of the job as a whole (for example metrics). */
  tags: Tags;
}

export class ContractError extends Error {
  override name = 'ContractError';
  constructor(readonly problems: string[]) {
    super(problems.join('; '));
  }
}

export const inputDirName = 'input';
export const outputDirName = 'output';
export const inputDocumentName = 'input.json';
export const outputDocumentName = 'output.json';
/** The environment variable naming the work directory, for the function. */
export const workDirEnvName = 'ATRIUM_WORK_DIR';

export const maxOutputFiles = 100;
export const maxTags = 50;
const maxOutputDocumentBytes = 1024 * 1024;

/**
 * Why a name cannot be a file name in input/ or output/: a path separator, `.` or `..`, a control
 * character, surrounding spaces, or more than 255 bytes. Null when it can.
 */
export function fileNameProblem(name: string): string | null {
  if (name === '' || name === '.' || name === '..') return 'is not a file name';
  if (/[/\\]/.test(name)) return 'must be a plain file name, without a directory';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'must not contain control characters';
  if (name.trim() !== name) return 'must not start or end with spaces';
  if (name.startsWith('.')) return 'must not start with a dot';
  if (Buffer.byteLength(name) > 255) return 'is longer than 255 bytes';
  return null;
}

const fileName = z.string().superRefine((name, ctx) => {
  const problem = fileNameProblem(name);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});
const tagValue = z.union([z.string().max(1000), z.number().finite(), z.boolean()]);
const tags = z
  .record(z.string().min(1).max(100), tagValue)
  .refine((t) => Object.keys(t).length <= maxTags, `at most ${maxTags} tags`);
const mediaType = z
  .string()
  .max(255)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(\s*;.*)?$/,
    'must be a media type',
  );

const outputDocumentSchema = z
  .object({
    files: z
      .array(
        z
          .object({
            name: fileName,
            media_type: mediaType.optional(),
            tags: tags.optional(),
            parent: fileName.optional(),
          })
          .strict(),
      )
      .max(maxOutputFiles),
    tags: tags.optional(),
  })
  .strict();

const knownMediaTypes: Record<string, string> = {
  '.csv': 'text/csv',
  '.tsv': 'text/tab-separated-values',
  '.txt': 'text/plain',
  '.md': 'text/markdown',
  '.json': 'application/json',
  '.html': 'text/html',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.pdf': 'application/pdf',
  '.zip': 'application/zip',
};

/** A media type from a file name's extension, for outputs that do not declare one. */
export function mediaTypeFor(name: string): string {
  return knownMediaTypes[extname(name).toLowerCase()] ?? 'application/octet-stream';
}

/**
 * Makes a work directory: input/ with a copy of each input (or a hard link, when `hardLink` is set
 * and the store's files are never written in place), an empty output/, and input.json. The
 * directory must not exist or be empty. Returns what input.json holds.
 */
export async function prepareWorkDir(
  dir: string,
  input: InputSpec,
  sources: InputSource[],
  options: { hardLink?: boolean } = {},
): Promise<InputDocument> {
  const problems = inputProblems(input, sources);
  if (problems.length > 0) throw new ContractError(problems);
  await mkdir(dir, { recursive: true });
  if ((await readdir(dir)).length > 0) throw new ContractError([`work directory ${dir} is not empty`]);
  await mkdir(join(dir, inputDirName));
  await mkdir(join(dir, outputDirName));
  const files: InputFile[] = [];
  for (const info of input.files) {
    const source = sources.find((s) => s.name === info.name) as InputSource;
    const path = `${inputDirName}/${info.name}`;
    await placeInput(source.path, join(dir, path), options.hardLink ?? false);
    const { size, sha256 } = await sizeAndSha256(join(dir, path));
    if (info.sha256 !== undefined && info.sha256 !== sha256) {
      throw new ContractError([`input "${info.name}": its content does not have the expected sha256`]);
    }
    files.push({ name: info.name, path, media_type: info.media_type, size, sha256, tags: info.tags ?? {} });
  }
  const document: InputDocument = { function: input.function, options: input.options, files };
  await writeFile(join(dir, inputDocumentName), `${JSON.stringify(document, null, 2)}\n`);
  return document;
}

function inputProblems(input: InputSpec, sources: InputSource[]): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const file of input.files) {
    const problem = fileNameProblem(file.name);
    if (problem) problems.push(`input "${file.name}": ${problem}`);
    if (seen.has(file.name)) problems.push(`input "${file.name}": two inputs have this name`);
    seen.add(file.name);
    if (!sources.some((s) => s.name === file.name)) problems.push(`input "${file.name}": no source given`);
  }
  return problems;
}

async function placeInput(source: string, target: string, hardLink: boolean): Promise<void> {
  if (hardLink) {
    try {
      await link(source, target);
      return;
    } catch (error) {
      // Across file systems, or where links are not allowed: copy instead.
      if (!['EXDEV', 'EPERM', 'ENOTSUP'].includes((error as NodeJS.ErrnoException).code ?? '')) throw error;
    }
  }
  // A copy-on-write clone where the file system can, a plain copy elsewhere.
  await copyFile(source, target, constants.COPYFILE_FICLONE);
  // Inputs are for reading; a function that "modifies" writes its result to output/.
  await chmod(target, 0o444);
}

function sizeAndSha256(path: string): Promise<{ size: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let size = 0;
    createReadStream(path)
      .on('data', (chunk) => {
        size += chunk.length;
        hash.update(chunk);
      })
      .on('error', reject)
      .on('end', () => resolve({ size, sha256: hash.digest('hex') }));
  });
}

/** Distinct input names for files that may share one: `data.csv`, `data-2.csv`, `data-3.csv`. */
export function distinctFileNames(names: string[]): string[] {
  const taken = new Set<string>();
  return names.map((name) => {
    const extension = extname(name);
    const stem = name.slice(0, name.length - extension.length);
    let candidate = name;
    for (let n = 2; taken.has(candidate); n++) candidate = `${stem}-${n}${extension}`;
    taken.add(candidate);
    return candidate;
  });
}

export interface OutputExpectation {
  /** What the function declares it does with files. */
  output: FunctionOutputKind;
  /** The names of its input files: a `parent` must be one of them. */
  inputs: string[];
}

/**
 * Reads and checks what the function left in the work directory. A function that writes nothing may
 * omit output.json. Throws ContractError listing every problem.
 */
export async function readOutput(dir: string, expected?: OutputExpectation): Promise<OutputResult> {
  const outputDir = join(dir, outputDirName);
  const entries = await outputEntries(outputDir);
  const document = await readOutputDocument(dir, entries.length > 0);
  const problems: string[] = [];
  const listed = new Set<string>();
  const files: OutputFile[] = [];
  for (const entry of document.files) {
    if (listed.has(entry.name)) {
      problems.push(`output.json: "${entry.name}" is listed twice`);
      continue;
    }
    listed.add(entry.name);
    const info = await lstat(join(outputDir, entry.name)).catch(() => null);
    if (!info) problems.push(`output.json: "${entry.name}" is not in output/`);
    else if (!info.isFile())
      problems.push(`output/${entry.name}: not a regular file (links and directories are refused)`);
    else {
      files.push({
        name: entry.name,
        path: join(outputDir, entry.name),
        media_type: entry.media_type ?? mediaTypeFor(entry.name),
        size: info.size,
        tags: entry.tags ?? {},
        parent: entry.parent ?? null,
      });
    }
  }
  for (const name of entries) {
    if (!listed.has(name)) problems.push(`output/${name}: not listed in output.json`);
  }
  if (expected) problems.push(...expectationProblems(document.files, expected));
  if (problems.length > 0) throw new ContractError(problems);
  return { files, tags: document.tags ?? {} };
}

async function outputEntries(outputDir: string): Promise<string[]> {
  const info = await lstat(outputDir).catch(() => null);
  if (!info) return [];
  if (!info.isDirectory()) throw new ContractError(['output/: not a directory']);
  const entries = await readdir(outputDir);
  if (entries.length > maxOutputFiles) {
    throw new ContractError([`output/: more than ${maxOutputFiles} entries`]);
  }
  return entries.sort();
}

async function readOutputDocument(
  dir: string,
  required: boolean,
): Promise<z.infer<typeof outputDocumentSchema>> {
  const path = join(dir, outputDocumentName);
  const info = await lstat(path).catch(() => null);
  if (!info) {
    if (required) throw new ContractError(['output.json is missing, but output/ has files']);
    return { files: [] };
  }
  if (!info.isFile()) throw new ContractError(['output.json: not a regular file']);
  if (info.size > maxOutputDocumentBytes) {
    throw new ContractError([`output.json: larger than ${maxOutputDocumentBytes} bytes`]);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    throw new ContractError([`output.json: not valid JSON: ${(error as Error).message}`]);
  }
  const parsed = outputDocumentSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ContractError(
      parsed.error.issues.map(
        (issue) => `output.json: ${issue.path.join('.') || '(document)'}: ${issue.message}`,
      ),
    );
  }
  return parsed.data;
}

function expectationProblems(
  files: { name: string; parent?: string | undefined }[],
  expected: OutputExpectation,
): string[] {
  const problems: string[] = [];
  if (expected.output === 'none' && files.length > 0) {
    problems.push(`the function creates no files, but output.json lists ${files.length}`);
  }
  for (const file of files) {
    if (file.parent !== undefined && !expected.inputs.includes(file.parent)) {
      problems.push(`output.json: "${file.name}": parent "${file.parent}" is not an input file`);
    }
    if (expected.output === 'modifies' && file.parent !== file.name) {
      problems.push(
        `output.json: "${file.name}": a function that modifies files keeps the input's name and names it as parent`,
      );
    }
  }
  return problems;
}
