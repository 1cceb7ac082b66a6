// Memory metrics: bandwidth of large copies and latency of dependent random reads, both over
// buffers much larger than the caches (32 MiB of L3 on the reference machine) by default.
import { defineMetric } from '../types.js';
import { randomCycle } from './data.js';
import { MB, MiB, repeatFor } from './timing.js';

export const memoryCopyBandwidth = defineMetric<{ size: number; duration_ms: number }>({
  name: 'memory_copy_bandwidth',
  title: 'Memory copy bandwidth',
  description:
    'Buffer.copy (memmove) of one `size`-byte buffer into another, repeated; counted as bytes copied ' +
    '(not read plus written), as mbw does. Both buffers are written first: copying from never-touched ' +
    "memory reads the kernel's shared zero page and looks three times faster than RAM.",
  category: 'memory',
  unit: 'MB/s',
  better: 'higher',
  parameters: {
    type: 'object',
    properties: {
      size: { type: 'integer', minimum: 4096, maximum: 4096 * MiB, default: 256 * MiB },
      duration_ms: { type: 'integer', minimum: 1, maximum: 600_000, default: 1000 },
    },
    additionalProperties: false,
  },
  async sample({ size, duration_ms }, { signal, shared }) {
    const [source, target] = await shared(`buffers-${size}`, async () => [
      Buffer.alloc(size, 0xaa),
      Buffer.alloc(size, 0x55),
    ]);
    const run = repeatFor(duration_ms, signal, () => {
      source.copy(target);
    });
    return (run.count * size) / run.seconds / MB;
  },
});

/** Follows the chain for `steps` loads; returns where it ended so that the loop is not dead code. */
export function chase(chain: Uint32Array, steps: number, from = 0): number {
  let slot = from;
  for (let i = 0; i < steps; i++) slot = chain[slot] as number;
  return slot;
}

const stepsPerRound = 65_536;

export const memoryRandomLatency = defineMetric<{ size: number; duration_ms: number }>({
  name: 'memory_random_latency',
  title: 'Memory random-access latency',
  description:
    'Pointer chasing through one random cycle over every 64-byte line of a `size`-byte array ' +
    '(randomCycle): each load depends on the previous one, so the time per step is the latency of ' +
    'a random access, TLB misses included (ordinary 4 KiB pages, as malloc gives).',
  category: 'memory',
  unit: 'ns',
  better: 'lower',
  parameters: {
    type: 'object',
    properties: {
      size: { type: 'integer', minimum: 65_536, maximum: 4096 * MiB, default: 256 * MiB },
      duration_ms: { type: 'integer', minimum: 1, maximum: 600_000, default: 1000 },
    },
    additionalProperties: false,
  },
  async sample({ size, duration_ms }, { signal, shared }) {
    const chain = await shared(`chain-${size}`, async () => randomCycle(size));
    let slot = chase(chain, stepsPerRound);
    const run = repeatFor(duration_ms, signal, () => {
      slot = chase(chain, stepsPerRound, slot);
    });
    if (slot >= chain.length) throw new Error('unreachable: keeps the chase alive');
    return (run.seconds * 1e9) / (run.count * stepsPerRound);
  },
});

export const memoryMetrics = [memoryCopyBandwidth, memoryRandomLatency];
