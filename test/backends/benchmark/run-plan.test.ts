import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from '@jest/globals';
import { loadBenchmarkDefinitions } from '../../../src/backends/benchmark/builtin.js';
import { resolvePlan, type ResolvedPlan } from '../../../src/backends/benchmark/definitions.js';
import { main, runPlan, type PlanResults } from '../../../src/backends/benchmark/run-plan.js';

const referenceRun = { machine: 'test', date: '2026-01-31', method: '' };

/** Two QPIs, one of them geometric, with a lower-is-better metric: every rule of the formula. */
const tinyPlan: ResolvedPlan = {
  name: 'tiny',
  title: 'Tiny',
  description: '',
  runner: 'local',
  formula: 'arithmetic',
  samples: 3,
  warmup: 1,
  parameters: { integer_checksum: { duration_ms: 10 } },
  qpis: [
    {
      name: 'cpu',
      title: 'CPU',
      description: '',
      formula: 'arithmetic',
      baseline_score: 2048,
      reference_run: referenceRun,
      sections: [
        {
          name: 'mixed',
          metrics: [
            { metric: 'integer_checksum', parameters: { size: 65_536, duration_ms: 500 }, baseline: 700 },
            {
              metric: 'sha256_throughput',
              parameters: { block_size: 4096, duration_ms: 10 },
              baseline: 1500,
            },
          ],
        },
        {
          name: 'float',
          metrics: [{ metric: 'float_matmul', parameters: { n: 16, duration_ms: 10 }, baseline: 2 }],
        },
      ],
    },
    {
      name: 'mem',
      title: 'Memory',
      description: '',
      formula: 'geometric',
      baseline_score: 1000,
      reference_run: referenceRun,
      sections: [
        {
          name: 'all',
          metrics: [
            {
              metric: 'memory_random_latency',
              parameters: { size: 1_048_576, duration_ms: 10 },
              baseline: 50,
            },
            {
              metric: 'memory_copy_bandwidth',
              parameters: { size: 1_048_576, duration_ms: 10 },
              baseline: 9000,
            },
          ],
        },
      ],
    },
  ],
};

const workDirs: string[] = [];
afterEach(() => {
  for (const dir of workDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function workDir(input: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'atrium-run-plan-'));
  workDirs.push(dir);
  writeFileSync(join(dir, 'input.json'), JSON.stringify(input));
  return dir;
}

const median = (values: number[]) => {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const arithmetic = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const geometric = (xs: number[]) => Math.exp(arithmetic(xs.map(Math.log)));

describe('the run-plan entry point', () => {
  it('writes results.json and output.json whose scores follow from the raw samples and baselines', async () => {
    const dir = workDir({
      function: 'run-plan',
      options: { plan: tinyPlan, samples: 3, warmup: 1 },
      files: [],
    });
    const stdout: string[] = [];
    const stderr: string[] = [];
    const code = await main(dir, { stdout: (l) => stdout.push(l), stderr: (l) => stderr.push(l) });
    expect(stderr).toEqual([]);
    expect(code).toBe(0);

    const progress = stdout.map(
      (line) => JSON.parse(line) as { event: string; index: number; total: number; metric: string },
    );
    expect(progress.map((p) => `${p.event}:${p.index}/${p.total}:${p.metric}`)).toEqual(
      [
        'integer_checksum',
        'sha256_throughput',
        'float_matmul',
        'memory_random_latency',
        'memory_copy_bandwidth',
      ].flatMap((metric, i) => [
        `metric-started:${i + 1}/5:${metric}`,
        `metric-finished:${i + 1}/5:${metric}`,
      ]),
    );

    const results = JSON.parse(readFileSync(join(dir, 'output', 'results.json'), 'utf8')) as PlanResults;
    expect(results.plan).toMatchObject({ name: 'tiny', samples: 3, warmup: 1 });
    const byId = new Map(results.measurements.map((m) => [m.id, m]));
    for (const m of results.measurements) {
      expect(m.samples).toHaveLength(3);
      expect(m.warmup_samples).toHaveLength(1);
      expect(m.median).toBe(median(m.samples));
    }
    // The plan's override wins over the QPI's parameter.
    expect(byId.get('cpu/mixed/integer_checksum')?.parameters).toEqual({ size: 65_536, duration_ms: 10 });

    // Recompute every score from the raw samples and the baselines alone.
    const score = (id: string) => {
      const m = byId.get(id);
      if (!m) throw new Error(`no measurement ${id}`);
      const value = median(m.samples);
      return m.better === 'higher' ? value / m.baseline : m.baseline / value;
    };
    const cpuMixed = arithmetic([score('cpu/mixed/integer_checksum'), score('cpu/mixed/sha256_throughput')]);
    const cpu = arithmetic([cpuMixed, score('cpu/float/float_matmul')]) * 2048;
    const mem =
      geometric([score('mem/all/memory_random_latency'), score('mem/all/memory_copy_bandwidth')]) * 1000;
    expect(byId.get('mem/all/memory_random_latency')?.better).toBe('lower');
    expect(results.scores.qpis[0]?.sections[0]?.score).toBeCloseTo(cpuMixed, 9);
    expect(results.scores.qpis[0]?.score).toBeCloseTo(cpu, 6);
    expect(results.scores.qpis[1]?.score).toBeCloseTo(mem, 6);
    expect(results.scores.score).toBeCloseTo((cpu + mem) / 2, 6);

    const output = JSON.parse(readFileSync(join(dir, 'output.json'), 'utf8')) as {
      files: { name: string; media_type: string }[];
      tags: Record<string, string | number>;
    };
    expect(output.files).toEqual([{ name: 'results.json', media_type: 'application/json' }]);
    expect(output.tags['plan']).toBe('tiny');
    expect(output.tags['score_cpu']).toBeCloseTo(cpu, 1);
    expect(output.tags['score']).toBeCloseTo((cpu + mem) / 2, 1);
  });

  it('fails with a reason and writes nothing for an invalid request', async () => {
    const badPlan = { ...tinyPlan, parameters: { no_such_metric: {} } };
    const dir = workDir({ function: 'run-plan', options: { plan: badPlan }, files: [] });
    const stderr: string[] = [];
    const code = await main(dir, { stdout: () => undefined, stderr: (l) => stderr.push(l) });
    expect(code).toBe(1);
    expect(stderr.join('\n')).toMatch(/no_such_metric/);
    expect(() => readFileSync(join(dir, 'output.json'))).toThrow();

    const wrongFunction = workDir({ function: 'predict', options: { plan: tinyPlan }, files: [] });
    expect(await main(wrongFunction, { stdout: () => undefined, stderr: () => undefined })).toBe(1);
  });

  it('stops a run when its signal is aborted', async () => {
    const controller = new AbortController();
    const run = runPlan(tinyPlan, {
      signal: controller.signal,
      onProgress: (event) => {
        if (event.event === 'metric-finished') controller.abort(new Error('cancelled'));
      },
    });
    await expect(run).rejects.toThrow('cancelled');
  });
});

describe('the quick built-in plan', () => {
  // About 6 s on the reference machine when idle; bounded by jest's 30 s timeout, not asserted, so
  // that other work on the machine cannot fail it.
  it('runs every built-in metric end to end', async () => {
    const { qpis, plans } = loadBenchmarkDefinitions();
    const quick = plans.get('quick');
    if (!quick) throw new Error('no quick plan');
    const results = await runPlan(resolvePlan(quick, qpis));
    expect(results.measurements).toHaveLength(11);
    expect(results.scores.qpis.map((q) => q.name)).toEqual(['compute', 'memory', 'storage', 'network']);
    expect(results.scores.score).toBeGreaterThan(0);
  });
});
