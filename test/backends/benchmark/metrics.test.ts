import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from '@jest/globals';
import { measure } from '../../../src/backends/benchmark/measure.js';
import { bsdChecksum } from '../../../src/backends/benchmark/metrics/compute.js';
import { randomCycle, chaseStride } from '../../../src/backends/benchmark/metrics/data.js';
import { createMatmulKernel } from '../../../src/backends/benchmark/metrics/matmul-wasm.js';
import { chase } from '../../../src/backends/benchmark/metrics/memory.js';
import { blockingDescriptor, roundTrip } from '../../../src/backends/benchmark/metrics/network.js';
import { readSequentially } from '../../../src/backends/benchmark/metrics/storage.js';
import { builtinMetrics, findMetric } from '../../../src/backends/benchmark/metrics/index.js';
import { parameterProblems, resolveParameters } from '../../../src/backends/benchmark/parameters.js';
import type { MetricParameters } from '../../../src/backends/benchmark/types.js';

const MiB = 1024 * 1024;

/** Parameters small enough for a sample to take well under a second. */
const small: Record<string, MetricParameters> = {
  sha256_throughput: { block_size: 4096, duration_ms: 20 },
  deflate_throughput: { size: 65_536, duration_ms: 20 },
  integer_checksum: { size: 65_536, duration_ms: 20 },
  float_matmul: { n: 16, duration_ms: 20 },
  memory_copy_bandwidth: { size: MiB, duration_ms: 20 },
  memory_random_latency: { size: MiB, duration_ms: 20 },
  storage_seq_write: { size: MiB, block_size: 65_536 },
  storage_seq_read: { size: MiB, block_size: 65_536 },
  storage_random_read_iops: { file_size: MiB, duration_ms: 20 },
  network_tcp_throughput: { block_size: 65_536, duration_ms: 50, ramp_ms: 10 },
  network_tcp_latency: { message_size: 64, duration_ms: 50, ramp_ms: 10 },
};

describe('the built-in metrics', () => {
  it('cover the four categories with the required measurements', () => {
    expect(builtinMetrics.map((m) => m.name).sort()).toEqual(Object.keys(small).sort());
    expect(new Set(builtinMetrics.map((m) => m.category))).toEqual(
      new Set(['compute', 'memory', 'storage', 'network']),
    );
  });

  it.each(builtinMetrics.map((m) => [m.name, m] as const))(
    '%s declares a unit, a direction and parameters that all have defaults',
    (_name, metric) => {
      expect(metric.unit).not.toBe('');
      expect(['higher', 'lower']).toContain(metric.better);
      for (const [name, schema] of Object.entries(metric.parameters.properties)) {
        expect([name, schema['default']]).not.toEqual([name, undefined]);
      }
      expect(parameterProblems(metric, resolveParameters(metric))).toEqual([]);
    },
  );

  it.each(builtinMetrics.map((m) => [m.name, m] as const))(
    '%s measures a positive finite value with small parameters',
    async (name, metric) => {
      const started = Date.now();
      const result = await measure(metric, small[name], { samples: 1, warmup: 0 });
      expect(result.samples).toHaveLength(1);
      expect(Number.isFinite(result.median)).toBe(true);
      expect(result.median).toBeGreaterThan(0);
      expect(Date.now() - started).toBeLessThan(5000);
    },
  );

  it('rejects parameters outside their schema, naming the parameter', () => {
    const metric = findMetric('storage_seq_write');
    if (!metric) throw new Error('storage_seq_write is missing');
    expect(parameterProblems(metric, { size: 1000 })).toContain('size: must be >= 65536');
    expect(parameterProblems(metric, { colour: 'red' })[0]).toContain('colour');
    expect(() => resolveParameters(metric, { block_size: 'big' })).toThrow(/block_size/);
  });
});

describe('the kernels', () => {
  it('compute the BSD checksum that `sum -r` prints', () => {
    // printf 'hello world\n' | sum -r  →  "03762     1"
    expect(bsdChecksum(Buffer.from('hello world\n'))).toBe(3762);
  });

  it('multiply matrices correctly in WebAssembly', async () => {
    const n = 5;
    const kernel = await createMatmulKernel(n);
    kernel.multiply();
    const a = (i: number, k: number) => ((i * n + k) % 97) / 97;
    // b holds the right-hand matrix transposed: row j of b is column j of the product's operand.
    const b = (j: number, k: number) => ((j * n + k) % 89) / 89;
    for (const [i, j] of [
      [0, 0],
      [2, 3],
      [4, 4],
    ] as const) {
      let expected = 0;
      for (let k = 0; k < n; k++) expected += a(i, k) * b(j, k);
      expect(kernel.result(i, j)).toBeCloseTo(expected, 12);
    }
  });

  it('chase one cycle through every cache line of the array', () => {
    const chain = randomCycle(64 * 1024);
    const lines = chain.length / chaseStride;
    const visited = new Set<number>();
    let slot = 0;
    for (let i = 0; i < lines; i++) {
      visited.add(slot);
      slot = chase(chain, 1, slot);
    }
    expect(visited.size).toBe(lines);
    expect(slot).toBe(0);
  });

  it('read a file in order, and refuse one shorter than the size to read', () => {
    const dir = mkdtempSync(join(tmpdir(), 'atrium-read-'));
    try {
      const path = join(dir, 'file.bin');
      writeFileSync(path, Buffer.alloc(4 * 65_536, 7));
      const signal = new AbortController().signal;
      expect(readSequentially(path, 4 * 65_536, 65_536, true, signal).mbPerSecond).toBeGreaterThan(0);
      expect(() => readSequentially(path, 8 * 65_536, 65_536, false, signal)).toThrow(/shorter/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('round-trip a message on a blocking socket descriptor, outside the event loop', async () => {
    // The echo runs in its own thread: this one blocks in read until the reply is back.
    const echo = new Worker(
      `const net = require('node:net');
       const server = net.createServer((socket) => socket.pipe(socket));
       server.listen(0, '127.0.0.1', () => require('node:worker_threads').parentPort.postMessage(server.address().port));`,
      { eval: true },
    );
    try {
      const [port] = (await once(echo, 'message')) as [number];
      const socket = connect({ port, host: '127.0.0.1' });
      await once(socket, 'connect');
      try {
        const fd = blockingDescriptor(socket);
        for (const text of ['ping', 'a longer message, echoed whole']) {
          const reply = Buffer.alloc(text.length);
          roundTrip(fd, Buffer.from(text), reply);
          expect(reply.toString()).toBe(text);
        }
      } finally {
        socket.destroy();
      }
    } finally {
      await echo.terminate();
    }
  });
});
