// The content-addressed file store: each distinct content once, under its sha256, in the data
// directory. Content arrives in a staging file (hashed and counted as it streams, refused beyond a
// size limit with nothing left behind), then moves into place with an atomic rename.
import { createHash } from 'node:crypto';
import { constants, createReadStream, createWriteStream, type ReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { finished, PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DomainError } from '../../errors.js';
import { randomBase62 } from '../../ids.js';

/** ENOSPC (no room left on the device) or EDQUOT (the user's disk quota is used up). */
export function isStorageFull(error: unknown): boolean {
  const code = (error as { code?: string } | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

const storageFull = () =>
  new DomainError(
    'insufficient-storage',
    'the file store has no room left; nothing of the upload was kept',
    {},
    { 'Retry-After': '60', Connection: 'close' },
  );

export interface StagedContent {
  path: string;
  size: number;
  sha256: string;
}

export class ContentStore {
  private readonly blobs: string;
  private readonly staging: string;

  constructor(root: string) {
    this.blobs = join(root, 'sha256');
    this.staging = join(root, 'staging');
  }

  /**
   * Removes staging files a crash left behind: those untouched for `graceMs` (another process
   * sharing the data directory may be streaming into a younger one).
   */
  async removeLeftovers(graceMs = 60 * 60_000): Promise<void> {
    const before = Date.now() - graceMs;
    for (const name of await readdir(this.staging).catch(() => [] as string[])) {
      const info = await stat(join(this.staging, name)).catch(() => null);
      if (info && info.mtimeMs < before) await rm(join(this.staging, name), { force: true });
    }
  }

  path(sha256: string): string {
    return join(this.blobs, sha256.slice(0, 2), sha256);
  }

  /**
   * Streams `source` into a staging file. Beyond `maxBytes` it stops reading, removes what it
   * wrote and throws `payload-too-large`; a source that fails (client gone) leaves nothing either.
   */
  async stage(source: Readable, maxBytes: number): Promise<StagedContent> {
    await mkdir(this.staging, { recursive: true }).catch((error: unknown) => {
      throw isStorageFull(error) ? storageFull() : error;
    });
    const path = join(this.staging, randomBase62(24));
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        size += chunk.length;
        if (size > maxBytes) {
          done(
            new DomainError(
              'payload-too-large',
              `the file is larger than the upload limit of ${maxBytes} bytes`,
              { limit: maxBytes },
              { Connection: 'close' },
            ),
          );
          return;
        }
        hash.update(chunk);
        done(null, chunk);
      },
    });
    // The source (a request, say) is the caller's: a failed write must not destroy it, and with it
    // the connection the answer is still to be sent on. It is unhooked and left to be drained.
    const input = new PassThrough();
    // Also told at once of a source that failed or was cut short before we got here.
    const stopWatching = finished(source, (error) => {
      if (error) input.destroy(error);
      else if (!input.writableEnded) input.end();
    });
    source.pipe(input);
    try {
      await pipeline(input, meter, createWriteStream(path, { flags: 'wx' }));
    } catch (error) {
      source.unpipe(input);
      source.resume();
      await rm(path, { force: true });
      if (error instanceof DomainError) throw error;
      // The disk, not the client, failed the write: nothing was kept, the client may try again later.
      if (isStorageFull(error)) throw storageFull();
      throw new DomainError('bad-request', `the upload did not complete: ${(error as Error).message}`);
    } finally {
      stopWatching();
    }
    return { path, size, sha256: hash.digest('hex') };
  }

  /** Stages a copy of a file on disk (a job's output); a symbolic link is refused, not followed. */
  async stageFile(path: string, maxBytes: number): Promise<StagedContent> {
    const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    return this.stage(handle.createReadStream(), maxBytes);
  }

  /** Moves staged content into place (a content already stored is kept, the copy dropped). */
  async commit(staged: StagedContent): Promise<void> {
    const target = this.path(staged.sha256);
    await mkdir(join(target, '..'), { recursive: true });
    try {
      await stat(target);
      await unlink(staged.path);
      // Stored again: young again for the garbage collector.
      const now = new Date();
      await utimes(target, now, now);
    } catch {
      await rename(staged.path, target);
    }
  }

  /** Removes contents older than `graceMs` that `inUse` says nothing refers to; returns how many. */
  async sweep(inUse: (sha256: string) => Promise<boolean>, graceMs: number): Promise<number> {
    let removed = 0;
    const before = Date.now() - graceMs;
    for (const dir of await readdir(this.blobs).catch(() => [] as string[])) {
      for (const sha256 of await readdir(join(this.blobs, dir)).catch(() => [] as string[])) {
        const info = await stat(this.path(sha256)).catch(() => null);
        if (!info || info.mtimeMs > before || (await inUse(sha256))) continue;
        await rm(this.path(sha256), { force: true });
        removed += 1;
      }
    }
    return removed;
  }

  async discard(staged: StagedContent): Promise<void> {
    await rm(staged.path, { force: true });
  }

  /** Reads stored content, whole or from `start` to `end` inclusive. */
  read(sha256: string, range?: { start: number; end: number }): ReadStream {
    return createReadStream(this.path(sha256), range ? { start: range.start, end: range.end } : {});
  }
}
