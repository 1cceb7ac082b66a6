// Compute metrics: one core, no threads. Each sample repeats its kernel for `duration_ms` and
// reports the work done per second of wall-clock time.
import { createHash } from 'node:crypto';
import { deflateSync } from 'node:zlib';
import { defineMetric } from '../types.js';
import { compressibleText, noise } from './data.js';
import { createMatmulKernel } from './matmul-wasm.js';
import { MB, MiB, repeatFor } from './timing.js';

const durationMs = (defaultMs: number) => ({
  type: 'integer',
  minimum: 1,
  maximum: 600_000,
  default: defaultMs,
  description: 'How long one sample repeats its kernel, in milliseconds.',
});

export const sha256Throughput = defineMetric<{ block_size: number; duration_ms: number }>({
  name: 'sha256_throughput',
  title: 'SHA-256 throughput',
  description:
    'Digests of block_size bytes (one init/update/final per block, as `openssl speed -evp sha256 ' +
    '-bytes` does) through node:crypto, i.e. the OpenSSL bundled with Node.',
  category: 'compute',
  unit: 'MB/s',
  better: 'higher',
  parameters: {
    type: 'object',
    properties: {
      block_size: { type: 'integer', minimum: 16, maximum: 64 * MiB, default: MiB },
      duration_ms: durationMs(1000),
    },
    additionalProperties: false,
  },
  async sample({ block_size, duration_ms }, { signal }) {
    const block = noise(block_size);
    const run = repeatFor(duration_ms, signal, () => {
      createHash('sha256').update(block).digest();
    });
    return (run.count * block_size) / run.seconds / MB;
  },
});

export const deflateThroughput = defineMetric<{ size: number; level: number; duration_ms: number }>({
  name: 'deflate_throughput',
  title: 'zlib deflate throughput',
  description:
    'zlib deflate of `size` bytes of English-like text (compressibleText: about 4.4:1 at level 6) ' +
    'through node:zlib, counted in input bytes.',
  category: 'compute',
  unit: 'MB/s',
  better: 'higher',
  parameters: {
    type: 'object',
    properties: {
      size: { type: 'integer', minimum: 1024, maximum: 256 * MiB, default: 4 * MiB },
      level: { type: 'integer', minimum: 1, maximum: 9, default: 6 },
      duration_ms: durationMs(1000),
    },
    additionalProperties: false,
  },
  async sample({ size, level, duration_ms }, { signal, shared }) {
    const text = await shared(`text-${size}`, async () => compressibleText(size));
    const run = repeatFor(duration_ms, signal, () => {
      deflateSync(text, { level });
    });
    return (run.count * size) / run.seconds / MB;
  },
});

/**
 * The BSD checksum of `sum -r`: a 16-bit rotate-right then add per byte. Every step depends on the
 * previous one (shift, mask, add, mask), so it measures the latency of simple integer operations,
 * which no compiler or JIT can vectorise away.
 */
export function bsdChecksum(bytes: Uint8Array): number {
  let checksum = 0;
  for (let i = 0; i < bytes.length; i++) {
    checksum = (checksum >>> 1) + ((checksum & 1) << 15);
    checksum = (checksum + (bytes[i] as number)) & 0xffff;
  }
  return checksum;
}

export const integerChecksum = defineMetric<{ size: number; duration_ms: number }>({
  name: 'integer_checksum',
  title: 'Integer kernel: BSD checksum',
  description:
    'The BSD 16-bit rotating checksum (the algorithm of `sum -r`) over `size` bytes in memory: a ' +
    'chain of dependent integer shifts, masks and adds, counted in bytes checksummed.',
  category: 'compute',
  unit: 'MB/s',
  better: 'higher',
  parameters: {
    type: 'object',
    properties: {
      size: { type: 'integer', minimum: 1024, maximum: 1024 * MiB, default: 16 * MiB },
      duration_ms: durationMs(1000),
    },
    additionalProperties: false,
  },
  async sample({ size, duration_ms }, { signal, shared }) {
    const bytes = await shared(`noise-${size}`, async () => noise(size));
    let sink = 0;
    const run = repeatFor(duration_ms, signal, () => {
      sink ^= bsdChecksum(bytes);
    });
    if (sink < 0) throw new Error('unreachable: keeps the checksum alive');
    return (run.count * size) / run.seconds / MB;
  },
});

export const floatMatmul = defineMetric<{ n: number; duration_ms: number }>({
  name: 'float_matmul',
  title: 'Floating-point kernel: matrix multiply',
  description:
    'Naive float64 n×n matrix multiply (i, j, k loops, one accumulator, the right-hand matrix ' +
    'transposed so both operands are read in order), as WebAssembly: 2·n³ floating-point ' +
    'operations per multiply, scalar and in program order, as C compiled without -ffast-math does.',
  category: 'compute',
  unit: 'GFLOP/s',
  better: 'higher',
  parameters: {
    type: 'object',
    properties: {
      n: { type: 'integer', minimum: 2, maximum: 1024, default: 256 },
      duration_ms: durationMs(1000),
    },
    additionalProperties: false,
  },
  async sample({ n, duration_ms }, { signal, shared }) {
    const kernel = await shared(`matmul-${n}`, () => createMatmulKernel(n));
    const run = repeatFor(duration_ms, signal, () => kernel.multiply());
    return (run.count * 2 * n ** 3) / run.seconds / 1e9;
  },
});

export const computeMetrics = [sha256Throughput, deflateThroughput, integerChecksum, floatMatmul];
