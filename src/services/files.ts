// Files of projects: uploads streamed into the content store and admitted against the storage
// quota; downloads by members only; deletion refused while a run uses the file.
import { extname } from 'node:path';
import type { Readable } from 'node:stream';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import type { ContentStore, StagedContent } from '../backends/files/store.js';
import * as q from '../db/files.js';
import type { FileFilter, FileKind, FileRecord } from '../db/files.js';
import type { Page, PageRequest } from '../db/pagination.js';
import { adjustStorageUsage, findQuota } from '../db/quotas.js';
import { conflict, DomainError, notFound } from '../errors.js';
import { newId } from '../ids.js';
import { checkIfMatch, etagFor } from './etag.js';
import type { Principal } from './principal.js';
import type { ProjectService } from './projects.js';

export type { FileRecord } from '../db/files.js';

const mediaTypes: Record<string, string> = {
  '.csv': 'text/csv',
  '.tsv': 'text/tab-separated-values',
  '.txt': 'text/plain',
  '.md': 'text/markdown',
  '.json': 'application/json',
  '.jsonl': 'application/jsonl',
  '.yaml': 'application/yaml',
  '.yml': 'application/yaml',
  '.xml': 'application/xml',
  '.html': 'text/html',
  '.pdf': 'application/pdf',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.svg': 'image/svg+xml',
  '.zip': 'application/zip',
  '.gz': 'application/gzip',
  '.tar': 'application/x-tar',
  '.parquet': 'application/vnd.apache.parquet',
};

/** The media type a file name suggests (application/octet-stream when it suggests none). */
export function guessMediaType(name: string): string {
  return mediaTypes[extname(name).toLowerCase()] ?? 'application/octet-stream';
}

export function fileEtag(file: FileRecord): string {
  return etagFor(file.version, file.updatedAt);
}

export interface UploadRequest {
  content: Readable;
  /** The size the client announced (Content-Length), if any: refused at once when over the limit. */
  declaredSize: number | null;
  name: string;
  mediaType: string | null;
  tags: string[];
  parentId: string | null;
  /** Resolves once the request was read to its end; rejects if it was not well-formed. */
  finished?: Promise<void>;
}

/** A new file made from content on disk (a job's output), in the caller's transaction. */
export interface OutputFile {
  id: string;
  projectId: string;
  name: string;
  mediaType: string;
  tags: string[];
  parentId: string | null;
  runId: string;
  jobId: string;
  createdBy: string;
}

export type ByteRange = { start: number; end: number };

export class FileService {
  constructor(
    private readonly deps: {
      db: Knex;
      clock: Clock;
      projects: ProjectService;
      store: ContentStore;
      maxUploadBytes: number;
    },
  ) {}

  get store(): ContentStore {
    return this.deps.store;
  }

  async upload(principal: Principal, projectId: string, request: UploadRequest): Promise<FileRecord> {
    const { db, clock, store, maxUploadBytes } = this.deps;
    await this.deps.projects.access(principal, projectId, 'member');
    if (request.declaredSize !== null && request.declaredSize > maxUploadBytes) {
      request.content.resume();
      throw new DomainError(
        'payload-too-large',
        `the body (${request.declaredSize} bytes) is larger than the upload limit of ${maxUploadBytes} bytes`,
        { limit: maxUploadBytes },
        { Connection: 'close' },
      );
    }
    if (request.parentId) await this.find(projectId, request.parentId);
    const staged = await store.stage(request.content, maxUploadBytes);
    try {
      await request.finished;
      const now = iso(clock());
      const file: FileRecord = {
        id: newId('file'),
        projectId,
        name: request.name,
        size: staged.size,
        sha256: staged.sha256,
        mediaType: request.mediaType ?? guessMediaType(request.name),
        tags: [...new Set(request.tags)],
        kind: 'input',
        parentId: request.parentId,
        runId: null,
        jobId: null,
        createdBy: principal.user.id,
        version: 1,
        createdAt: now,
        updatedAt: now,
      };
      await db.transaction(async (trx) => {
        await this.admit(trx, projectId, staged.size, now);
        await q.insertFile(trx, file);
        // In place before the row commits; should the commit fail, the garbage collector finds it.
        await store.commit(staged);
      });
      return file;
    } catch (error) {
      await store.discard(staged);
      throw error;
    }
  }

  /** Takes `bytes` of the project's storage quota, or refuses with quota-exceeded. */
  private async admit(trx: Knex.Transaction, projectId: string, bytes: number, now: string): Promise<void> {
    if (await adjustStorageUsage(trx, projectId, bytes, now)) return;
    const quota = await findQuota(trx, projectId);
    throw new DomainError(
      'quota-exceeded',
      `storing ${bytes} more bytes would exceed the project's storage quota`,
      {
        resource: 'storage',
        requested: bytes,
        usage: quota?.usage.storageBytes ?? null,
        limit: quota?.limits.storageBytes ?? null,
      },
    );
  }

  /** Stages a job's output file from disk; `commitOutput` then records it in the job's transaction. */
  stageOutput(path: string): Promise<StagedContent> {
    return this.deps.store.stageFile(path, this.deps.maxUploadBytes);
  }

  /** Records a staged output in the caller's transaction (admitted against the storage quota). */
  async commitOutput(trx: Knex.Transaction, staged: StagedContent, output: OutputFile): Promise<FileRecord> {
    const now = iso(this.deps.clock());
    await this.admit(trx, output.projectId, staged.size, now);
    const file: FileRecord = {
      id: output.id,
      projectId: output.projectId,
      name: output.name,
      size: staged.size,
      sha256: staged.sha256,
      mediaType: output.mediaType,
      tags: output.tags,
      kind: 'output' satisfies FileKind,
      parentId: output.parentId,
      runId: output.runId,
      jobId: output.jobId,
      createdBy: output.createdBy,
      version: 1,
      createdAt: now,
      updatedAt: now,
    };
    await q.insertFile(trx, file);
    await this.deps.store.commit(staged);
    return file;
  }

  private async find(projectId: string, fileId: string): Promise<FileRecord> {
    const file = await q.findFile(this.deps.db, projectId, fileId);
    if (!file) throw notFound('file', fileId);
    return file;
  }

  async get(principal: Principal, projectId: string, fileId: string): Promise<FileRecord> {
    await this.deps.projects.readable(principal, projectId);
    return this.find(projectId, fileId);
  }

  async list(
    principal: Principal,
    projectId: string,
    filter: FileFilter,
    page: PageRequest,
  ): Promise<Page<FileRecord>> {
    await this.deps.projects.readable(principal, projectId);
    return q.listFiles(this.deps.db, projectId, filter, page);
  }

  /** Files of the project by id, all of them or a not-found naming the first missing. */
  async resolve(projectId: string, ids: string[]): Promise<FileRecord[]> {
    const found = await q.findFiles(this.deps.db, projectId, ids);
    const byId = new Map(found.map((f) => [f.id, f]));
    return ids.map((id) => {
      const file = byId.get(id);
      if (!file) throw notFound('file', id);
      return file;
    });
  }

  /** Whoever uploaded a file, the project's owners and administrators may change or delete it. */
  private async changeable(principal: Principal, projectId: string, fileId: string): Promise<FileRecord> {
    return this.deps.projects.changeable(
      principal,
      projectId,
      () => this.find(projectId, fileId),
      'only whoever uploaded a file, the project owners and administrators may change it',
    );
  }

  async update(
    principal: Principal,
    projectId: string,
    fileId: string,
    changes: { name?: string | undefined; tags?: string[] | undefined },
    ifMatch: string | undefined,
  ): Promise<FileRecord> {
    const file = await this.changeable(principal, projectId, fileId);
    checkIfMatch(ifMatch, fileEtag(file), `file ${fileId}`);
    const updated = await q.updateFile(
      this.deps.db,
      projectId,
      fileId,
      changes,
      file.version,
      iso(this.deps.clock()),
    );
    if (!updated) checkIfMatch('"stale"', fileEtag(file), `file ${fileId}`);
    return this.find(projectId, fileId);
  }

  async delete(
    principal: Principal,
    projectId: string,
    fileId: string,
    ifMatch: string | undefined,
  ): Promise<void> {
    const { db, clock } = this.deps;
    const file = await this.changeable(principal, projectId, fileId);
    checkIfMatch(ifMatch, fileEtag(file), `file ${fileId}`);
    await db.transaction(async (trx) => {
      const run = await q.activeRunUsing(trx, file);
      if (run) throw conflict(`file ${fileId} is used by run ${run}, which has not ended; cancel it or wait`);
      if (!(await q.deleteFileRow(trx, projectId, fileId))) throw notFound('file', fileId);
      await adjustStorageUsage(trx, projectId, -file.size, iso(clock()));
    });
  }

  /**
   * Removes stored content no file refers to and that nobody stored for `graceMs`: an upload in
   * progress puts its content in place before its row commits, so young content is left alone.
   */
  collectGarbage(graceMs = 60 * 60_000): Promise<number> {
    return this.deps.store.sweep((sha256) => q.contentInUse(this.deps.db, sha256), graceMs);
  }

  /** The whole content of a file of the project (no access check), or null: none, or over `maxBytes`. */
  async content(projectId: string, fileId: string, maxBytes: number): Promise<Buffer | null> {
    const file = await q.findFile(this.deps.db, projectId, fileId);
    if (!file || file.size > maxBytes) return null;
    const chunks: Buffer[] = [];
    for await (const chunk of this.deps.store.read(file.sha256)) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  /**
   * The content to send: whole, or one byte range of it. A range past the end is a 416; several
   * ranges, or one that cannot be parsed, get the whole file (as RFC 9110 allows).
   */
  async download(
    principal: Principal,
    projectId: string,
    fileId: string,
    rangeHeader: string | undefined,
  ): Promise<{ file: FileRecord; range: ByteRange | null; content: Readable }> {
    const file = await this.get(principal, projectId, fileId);
    const range = rangeHeader ? parseRange(rangeHeader, file.size) : null;
    return { file, range, content: this.deps.store.read(file.sha256, range ?? undefined) };
  }
}

/** One `bytes=` range within `size`; null when the header asks for none or several. */
export function parseRange(header: string, size: number): ByteRange | null {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match) return null;
  const [, first, last] = match as unknown as [string, string, string];
  let start: number;
  let end: number;
  if (first === '' && last === '') return null;
  if (first === '') {
    start = Math.max(0, size - Number(last));
    end = size - 1;
  } else {
    start = Number(first);
    end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
    if (last !== '' && Number(last) < start) return null;
  }
  if (start >= size || size === 0) {
    throw new DomainError(
      'range-not-satisfiable',
      `the file has ${size} bytes; the range ${header} lies outside it`,
      {},
      { 'Content-Range': `bytes */${size}` },
    );
  }
  return { start, end };
}
