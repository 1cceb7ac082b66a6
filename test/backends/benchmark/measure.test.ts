import { existsSync } from 'node:fs';
import { describe, expect, it } from '@jest/globals';
import { measure, median, summarize } from '../../../src/backends/benchmark/measure.js';
import { defineMetric, type AnyMetric } from '../../../src/backends/benchmark/types.js';

/** A metric that returns the given values in turn and records what it shared and disposed. */
function scripted(values: number[]) {
  const log: string[] = [];
  const tmpDirs: string[] = [];
  let next = 0;
  const metric: AnyMetric = defineMetric<{ offset: number }>({
    name: 'scripted',
    title: 'Scripted values',
    description: 'Returns its script, plus offset.',
    category: 'compute',
    unit: 'ops/s',
    better: 'higher',
    parameters: {
      type: 'object',
      properties: { offset: { type: 'number', default: 0 } },
      additionalProperties: false,
    },
    async sample({ offset }, ctx) {
      tmpDirs.push(ctx.tmpDir);
      await ctx.shared(
        'resource',
        async () => log.push('created'),
        () => {
          log.push('disposed');
        },
      );
      ctx.note('scripted');
      return (values[next++] ?? Number.NaN) + offset;
    },
  });
  return { metric, log, tmpDirs };
}

describe('median and spread', () => {
  it('take the middle value, or the mean of the two middle ones', () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 10])).toBe(3.5);
    expect(() => median([])).toThrow();
  });

  it('report the spread as the median absolute deviation relative to the median', () => {
    // median 100; deviations 10, 0, 2, 50, 4 → median deviation 4 → spread 0.04
    expect(summarize([90, 100, 102, 150, 96])).toEqual({ median: 100, spread: 0.04, min: 90, max: 150 });
    expect(summarize([7]).spread).toBe(0);
  });
});

describe('measure', () => {
  it('discards warm-up samples and summarises the others', async () => {
    const { metric, log, tmpDirs } = scripted([1000, 10, 12, 11, 30]);
    const events: string[] = [];
    const result = await measure(
      metric,
      { offset: 0 },
      { samples: 4, warmup: 1, onSample: (e) => events.push(`${e.warmup ? 'w' : 's'}${e.index}=${e.value}`) },
    );
    expect(result.warmup_samples).toEqual([1000]);
    expect(result.samples).toEqual([10, 12, 11, 30]);
    expect(result.median).toBe(11.5);
    // deviations 1.5, 0.5, 0.5, 18.5 → median 1
    expect(result.spread).toBeCloseTo(1 / 11.5, 12);
    expect(events).toEqual(['w0=1000', 's0=10', 's1=12', 's2=11', 's3=30']);
    expect(result.notes).toEqual(['scripted']);
    expect(result).toMatchObject({
      metric: 'scripted',
      unit: 'ops/s',
      better: 'higher',
      parameters: { offset: 0 },
    });
    // One shared resource for all samples, disposed at the end with the temporary directory.
    expect(log).toEqual(['created', 'disposed']);
    expect(new Set(tmpDirs).size).toBe(1);
    expect(existsSync(tmpDirs[0] as string)).toBe(false);
  });

  it('fills in default parameters and rejects invalid ones before sampling', async () => {
    const { metric, log } = scripted([5]);
    expect((await measure(metric, {}, { samples: 1, warmup: 0 })).parameters).toEqual({ offset: 0 });
    await expect(measure(metric, { offset: 'x' }, { samples: 1, warmup: 0 })).rejects.toThrow(/offset/);
    await expect(measure(metric, {}, { samples: 0 })).rejects.toThrow(/samples/);
    expect(log).toEqual(['created', 'disposed']);
  });

  it('fails on a value that is not a positive finite number, still cleaning up', async () => {
    const { metric, log, tmpDirs } = scripted([3, -1]);
    await expect(measure(metric, {}, { samples: 2, warmup: 0 })).rejects.toThrow(/-1 ops\/s/);
    expect(log).toEqual(['created', 'disposed']);
    expect(existsSync(tmpDirs[0] as string)).toBe(false);
  });

  it('stops when its signal is aborted', async () => {
    const { metric } = scripted([1, 2, 3]);
    const controller = new AbortController();
    controller.abort(new Error('cancelled'));
    await expect(measure(metric, {}, { samples: 3, signal: controller.signal })).rejects.toThrow('cancelled');
  });
});
