// Storage metrics, on files in the measurement's temporary directory (so on the file system that
// holds it). Synchronous calls on purpose: one request in flight at a time, from this thread, as
// dd and fio's psync engine do, with no thread-pool hand-off in the timing.
//
// The page cache: a file just written is in memory, and reading it back measures RAM. Node has no
// posix_fadvise(DONTNEED) and dropping caches needs root, so the read metrics open the file with
// O_DIRECT, which bypasses the cache. O_DIRECT needs a buffer aligned to the device's logical block
// size and Node cannot ask for one; directBuffer takes a page-aligned one from a WebAssembly memory
// and checks it by probing (the kernel refuses a misaligned read with EINVAL). Where the file system refuses
// O_DIRECT (tmpfs before Linux 6.6, some network file systems), the metrics fall back to cached
// reads and say so in the measurement's notes.
import { closeSync, constants, fsyncSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { join } from 'node:path';
import { defineMetric, type SampleContext } from '../types.js';
import { noise, xorshift32 } from './data.js';
import { MB, MiB, nowNs, repeatFor, secondsSince } from './timing.js';

const maxAlignment = 4096;
const probeStep = 16;

interface ReadHandle {
  fd: number;
  /** `length` bytes, aligned for O_DIRECT when `direct`. */
  buffer: Buffer;
  direct: boolean;
}

function isInvalidArgument(error: unknown): boolean {
  return (error as NodeJS.ErrnoException).code === 'EINVAL';
}

// Node has WebAssembly, but its type declarations come with the DOM library, which this project
// does not load (as in matmul-wasm.ts): the one constructor used here, declared.
declare const WebAssembly: {
  Memory: new (descriptor: { initial: number }) => { readonly buffer: ArrayBuffer };
};

/**
 * `bytes` bytes that start on a memory page: a WebAssembly memory is mapped whole, so its first
 * byte is page-aligned. dd and fio read into page-aligned buffers; a buffer that is only aligned to
 * the 512-byte logical block makes each 4 KiB O_DIRECT read span two pages, two segments of the
 * request, and costs about 10 % of the IOPS of a virtual disk.
 */
function pageAlignedBytes(bytes: number): Buffer {
  const wasmPage = 65_536;
  const memory = new WebAssembly.Memory({ initial: Math.ceil(bytes / wasmPage) });
  return Buffer.from(memory.buffer, 0, bytes);
}

/** An aligned window of `length` bytes for O_DIRECT reads of `fd`, or null when none works. */
function directBuffer(fd: number, length: number): Buffer | null {
  const raw = pageAlignedBytes(length + maxAlignment);
  for (let offset = 0; offset < maxAlignment; offset += probeStep) {
    try {
      readSync(fd, raw, offset, maxAlignment, 0);
      return raw.subarray(offset, offset + length);
    } catch (error) {
      if (!isInvalidArgument(error)) throw error;
    }
  }
  return null;
}

/** Opens `path` for uncached reads when the file system allows it, else for ordinary ones. */
export function openForReading(path: string, length: number, wantDirect: boolean): ReadHandle {
  if (wantDirect) {
    let fd: number | null = null;
    try {
      fd = openSync(path, constants.O_RDONLY | constants.O_DIRECT);
      const buffer = directBuffer(fd, length);
      if (buffer) return { fd, buffer, direct: true };
    } catch (error) {
      if (!isInvalidArgument(error)) throw error;
    }
    if (fd !== null) closeSync(fd);
  }
  return { fd: openSync(path, 'r'), buffer: Buffer.alloc(length), direct: false };
}

/**
 * Writes `size` bytes, `block` after `block`, and fsyncs them; with `distinct`, the block is filled
 * with new random bytes each time, so that no layer below (a host's deduplicating or compressing
 * storage) can read back one block for many.
 */
export function writeFile(
  path: string,
  size: number,
  block: Buffer,
  signal: AbortSignal,
  distinct = false,
): void {
  const blockSize = block.length;
  const fd = openSync(path, 'w');
  try {
    for (let offset = 0; offset < size; offset += blockSize) {
      signal.throwIfAborted();
      if (distinct) randomFillSync(block);
      writeSync(fd, block, 0, Math.min(blockSize, size - offset), offset);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The file every sample of a measurement reads: random bytes, written and fsynced once, untimed. */
function sharedFile(ctx: SampleContext, size: number): Promise<string> {
  return ctx.shared(
    `file-${size}`,
    async () => {
      const path = join(ctx.tmpDir, `read-${size}.bin`);
      writeFile(path, size, Buffer.alloc(MiB), ctx.signal, true);
      return path;
    },
    (path) => rmSync(path, { force: true }),
  );
}

function noteCached(ctx: SampleContext, handle: { direct: boolean }): void {
  if (!handle.direct) {
    ctx.note('O_DIRECT is not supported here: reads went through the page cache (memory speed)');
  }
}

const blockSizeProperty = (defaultBytes: number) => ({
  type: 'integer',
  minimum: 4096,
  maximum: 64 * MiB,
  multipleOf: 4096,
  default: defaultBytes,
});
const sizeProperty = (defaultBytes: number) => ({
  type: 'integer',
  minimum: 65_536,
  maximum: 64 * 1024 * MiB,
  multipleOf: 65_536,
  default: defaultBytes,
});

export const storageSequentialWrite = defineMetric<{ size: number; block_size: number }>({
  name: 'storage_seq_write',
  title: 'Sequential write with fsync',
  description:
    'Writes a new `size`-byte file in `block_size` blocks then fsyncs it, timed from open to the end ' +
    'of fsync: what `dd if=/dev/zero of=F bs=block_size count=N conv=fsync` measures.',
  category: 'storage',
  unit: 'MB/s',
  better: 'higher',
  parameters: {
    type: 'object',
    properties: { size: sizeProperty(256 * MiB), block_size: blockSizeProperty(MiB) },
    additionalProperties: false,
  },
  async sample({ size, block_size }, { tmpDir, signal }) {
    const path = join(tmpDir, 'write.bin');
    rmSync(path, { force: true });
    const block = noise(block_size);
    const start = nowNs();
    writeFile(path, size, block, signal);
    const seconds = secondsSince(start);
    rmSync(path, { force: true });
    return size / seconds / MB;
  },
});

/**
 * The timed part of storage_seq_read: reads the first `size` bytes of `path` in order, in
 * `blockSize` blocks, timed from open to the last read. Exported so that `make bench-accuracy` runs
 * this very code on the file its reference tool reads.
 */
export function readSequentially(
  path: string,
  size: number,
  blockSize: number,
  direct: boolean,
  signal: AbortSignal,
): { mbPerSecond: number; direct: boolean } {
  const start = nowNs();
  const handle = openForReading(path, blockSize, direct);
  try {
    let offset = 0;
    while (offset < size) {
      signal.throwIfAborted();
      const read = readSync(handle.fd, handle.buffer, 0, blockSize, offset);
      if (read === 0) throw new Error(`${path} is shorter than ${size} bytes`);
      offset += read;
    }
  } finally {
    closeSync(handle.fd);
  }
  return { mbPerSecond: size / secondsSince(start) / MB, direct: handle.direct };
}

export const storageSequentialRead = defineMetric<{ size: number; block_size: number; direct: boolean }>({
  name: 'storage_seq_read',
  title: 'Sequential read',
  description:
    'Reads a `size`-byte file (written and fsynced before timing) from start to end in `block_size` ' +
    'blocks with O_DIRECT, bypassing the page cache: what `dd if=F of=/dev/null bs=block_size ' +
    'iflag=direct` measures. Falls back to cached reads, noted, where O_DIRECT is refused.',
  category: 'storage',
  unit: 'MB/s',
  better: 'higher',
  parameters: {
    type: 'object',
    properties: {
      size: sizeProperty(256 * MiB),
      block_size: blockSizeProperty(MiB),
      direct: { type: 'boolean', default: true },
    },
    additionalProperties: false,
  },
  async sample({ size, block_size, direct }, ctx) {
    const path = await sharedFile(ctx, size);
    const read = readSequentially(path, size, block_size, direct, ctx.signal);
    noteCached(ctx, read);
    return read.mbPerSecond;
  },
});

/**
 * The timed part of storage_random_read_iops: `blockSize` reads at random aligned offsets of
 * `path`, one at a time, for `durationMs`. Exported, as readSequentially, for `make bench-accuracy`.
 */
export function readRandomly(
  path: string,
  blockSize: number,
  durationMs: number,
  direct: boolean,
  signal: AbortSignal,
): { iops: number; direct: boolean } {
  const blocks = Math.floor(statSync(path).size / blockSize);
  if (blocks === 0) throw new Error(`${path} is shorter than one ${blockSize}-byte block`);
  const next = xorshift32(0x51f15e ^ Math.floor(Math.random() * 0xffffffff));
  const handle = openForReading(path, blockSize, direct);
  try {
    const run = repeatFor(durationMs, signal, () => {
      readSync(handle.fd, handle.buffer, 0, blockSize, (next() % blocks) * blockSize);
    });
    return { iops: run.count / run.seconds, direct: handle.direct };
  } finally {
    closeSync(handle.fd);
  }
}

export const storageRandomReadIops = defineMetric<{
  file_size: number;
  block_size: number;
  duration_ms: number;
  direct: boolean;
}>({
  name: 'storage_random_read_iops',
  title: 'Random 4 KiB read IOPS',
  description:
    'Reads of `block_size` bytes at random aligned offsets of a `file_size`-byte file, one at a time ' +
    '(queue depth 1), with O_DIRECT: what `fio --rw=randread --bs=4k --direct=1 --ioengine=psync ' +
    '--iodepth=1` measures.',
  category: 'storage',
  unit: 'IOPS',
  better: 'higher',
  parameters: {
    type: 'object',
    properties: {
      file_size: sizeProperty(256 * MiB),
      block_size: blockSizeProperty(4096),
      duration_ms: { type: 'integer', minimum: 1, maximum: 600_000, default: 1000 },
      direct: { type: 'boolean', default: true },
    },
    additionalProperties: false,
  },
  async sample({ file_size, block_size, duration_ms, direct }, ctx) {
    const path = await sharedFile(ctx, file_size);
    const read = readRandomly(path, block_size, duration_ms, direct, ctx.signal);
    noteCached(ctx, read);
    return read.iops;
  },
});

export const storageMetrics = [storageSequentialWrite, storageSequentialRead, storageRandomReadIops];
