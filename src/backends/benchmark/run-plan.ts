// Runs a benchmark plan: every metric of every QPI measured in turn, then scored.
//
// As a process (a local child or the command of a cluster Job), it follows Atrium's module
// execution contract in its work directory (the current directory, or the first argument):
//   input.json   {function: 'run-plan', options: {plan: <resolved plan>, samples?, warmup?, tmp_dir?}, files: []}
//   stdout       one JSON line per metric started and finished ({event, index, total, metric, …})
//   output/results.json   raw samples, per-metric median and spread, every score (PlanResults)
//   output.json  {files: [{name: 'results.json', media_type: 'application/json'}], tags: {plan, score…}}
// and exits 0, or 1 with the reason on stderr. SIGTERM aborts the metric in progress.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { arch, cpus, hostname, release, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { parseResolvedPlan, effectiveParameters, type ResolvedPlan } from './definitions.js';
import { measure, type Measurement } from './measure.js';
import { findMetric } from './metrics/index.js';
import { scorePlan, type Formula, type PlanScore, type QpiInput } from './scoring.js';

export interface RunPlanOptions {
  /** Measured samples per metric; the plan's own when absent. */
  samples?: number;
  /** Discarded warm-up samples per metric; the plan's own when absent. */
  warmup?: number;
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
  /** Where the storage metrics' temporary files go: the file system they measure. os.tmpdir(). */
  tmpRoot?: string;
}

interface ProgressPosition {
  /** 1-based position of the metric in the run. */
  index: number;
  total: number;
  qpi: string;
  section: string;
  metric: string;
}

export type ProgressEvent =
  | ({ event: 'metric-started' } & ProgressPosition)
  | ({ event: 'metric-finished'; median: number; spread: number; unit: string } & ProgressPosition);

export interface MetricResult extends Measurement {
  /** As in the scores: `qpi/section/metric`. */
  id: string;
  qpi: string;
  section: string;
  baseline: number;
}

export interface PlanResults {
  plan: {
    name: string;
    title: string;
    runner: 'local' | 'cluster';
    formula: Formula;
    samples: number;
    warmup: number;
  };
  started_at: string;
  finished_at: string;
  /** The machine measured. */
  environment: {
    hostname: string;
    platform: string;
    arch: string;
    kernel: string;
    cpu_model: string;
    cpu_count: number;
    memory_bytes: number;
    node: string;
  };
  measurements: MetricResult[];
  scores: PlanScore;
}

function environment(): PlanResults['environment'] {
  const cores = cpus();
  return {
    hostname: hostname(),
    platform: process.platform,
    arch: arch(),
    kernel: release(),
    cpu_model: cores[0]?.model.trim() ?? 'unknown',
    cpu_count: cores.length,
    memory_bytes: totalmem(),
    node: process.version,
  };
}

interface PlannedMetric {
  qpi: string;
  section: string;
  metric: string;
  parameters: Record<string, unknown>;
  baseline: number;
}

function plannedMetrics(plan: ResolvedPlan): PlannedMetric[] {
  return plan.qpis.flatMap((qpi) =>
    qpi.sections.flatMap((section) =>
      section.metrics.map((entry) => ({
        qpi: qpi.name,
        section: section.name,
        metric: entry.metric,
        parameters: effectiveParameters(plan, entry),
        baseline: entry.baseline,
      })),
    ),
  );
}

/** The scoring input of a plan once its metrics are measured (in plannedMetrics order). */
export function scoringInput(plan: ResolvedPlan, values: readonly Measurement[]): QpiInput[] {
  let next = 0;
  return plan.qpis.map((qpi) => ({
    name: qpi.name,
    formula: qpi.formula,
    baseline_score: qpi.baseline_score,
    sections: qpi.sections.map((section) => ({
      name: section.name,
      metrics: section.metrics.map((entry) => {
        const measured = values[next++];
        if (!measured || measured.metric !== entry.metric) throw new Error('measurements out of order');
        return {
          metric: entry.metric,
          better: measured.better,
          unit: measured.unit,
          parameters: measured.parameters,
          baseline: entry.baseline,
          value: measured.median,
        };
      }),
    })),
  }));
}

/** Measures every metric of the plan, one after the other, and scores the plan. */
export async function runPlan(plan: ResolvedPlan, options: RunPlanOptions = {}): Promise<PlanResults> {
  const checked = parseResolvedPlan(plan);
  const samples = options.samples ?? checked.samples;
  const warmup = options.warmup ?? checked.warmup;
  const planned = plannedMetrics(checked);
  const startedAt = new Date().toISOString();
  const measurements: Measurement[] = [];
  for (const [i, entry] of planned.entries()) {
    const position = {
      index: i + 1,
      total: planned.length,
      qpi: entry.qpi,
      section: entry.section,
      metric: entry.metric,
    };
    options.onProgress?.({ event: 'metric-started', ...position });
    const metric = findMetric(entry.metric);
    if (!metric) throw new Error(`unknown metric "${entry.metric}"`);
    const measured = await measure(metric, entry.parameters, {
      samples,
      warmup,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.tmpRoot ? { tmpRoot: options.tmpRoot } : {}),
    });
    measurements.push(measured);
    options.onProgress?.({
      event: 'metric-finished',
      ...position,
      median: measured.median,
      spread: measured.spread,
      unit: measured.unit,
    });
  }
  const scores = scorePlan(scoringInput(checked, measurements), checked.formula);
  const ids = scores.qpis.flatMap((q) => q.sections.flatMap((s) => s.metrics.map((m) => m.id)));
  return {
    plan: {
      name: checked.name,
      title: checked.title,
      runner: checked.runner,
      formula: checked.formula,
      samples,
      warmup,
    },
    started_at: startedAt,
    finished_at: new Date().toISOString(),
    environment: environment(),
    measurements: measurements.map((measured, i) => {
      const entry = planned[i] as PlannedMetric;
      return {
        id: ids[i] as string,
        qpi: entry.qpi,
        section: entry.section,
        baseline: entry.baseline,
        ...measured,
      };
    }),
    scores,
  };
}

// ---- The process entry point ----

const inputSchema = z.object({
  function: z.literal('run-plan'),
  options: z
    .object({
      plan: z.unknown(),
      samples: z.number().int().min(1).max(50).optional(),
      warmup: z.number().int().min(0).max(10).optional(),
      tmp_dir: z.string().min(1).optional(),
    })
    .strict(),
  files: z.array(z.unknown()).max(0, 'run-plan takes no input files'),
});

export const resultsFileName = 'results.json';

/** Tags of the job: the plan and its scores, rounded (the full numbers are in results.json). */
function resultTags(results: PlanResults): Record<string, string | number> {
  const round = (value: number) => Math.round(value * 100) / 100;
  const tags: Record<string, string | number> = {
    plan: results.plan.name,
    score: round(results.scores.score),
  };
  for (const qpi of results.scores.qpis) tags[`score_${qpi.name}`] = round(qpi.score);
  return tags;
}

export interface MainIo {
  stdout: (line: string) => void;
  stderr: (line: string) => void;
  signal?: AbortSignal;
}

/** Runs the request of `workDir`/input.json; returns the exit code. */
export async function main(workDir: string, io: MainIo): Promise<number> {
  try {
    const input = inputSchema.parse(JSON.parse(await readFile(join(workDir, 'input.json'), 'utf8')));
    const plan = parseResolvedPlan(input.options.plan, 'input.json: options.plan');
    const { samples, warmup, tmp_dir: tmpDir } = input.options;
    const results = await runPlan(plan, {
      ...(samples !== undefined ? { samples } : {}),
      ...(warmup !== undefined ? { warmup } : {}),
      ...(tmpDir ? { tmpRoot: resolve(workDir, tmpDir) } : {}),
      ...(io.signal ? { signal: io.signal } : {}),
      onProgress: (event) => io.stdout(JSON.stringify(event)),
    });
    await mkdir(join(workDir, 'output'), { recursive: true });
    await writeFile(join(workDir, 'output', resultsFileName), `${JSON.stringify(results, null, 2)}\n`);
    const output = {
      files: [{ name: resultsFileName, media_type: 'application/json' }],
      tags: resultTags(results),
    };
    await writeFile(join(workDir, 'output.json'), `${JSON.stringify(output, null, 2)}\n`);
    return 0;
  } catch (error) {
    io.stderr(`run-plan failed: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const controller = new AbortController();
  process.once('SIGTERM', () => controller.abort(new Error('stopped by SIGTERM')));
  process.exitCode = await main(process.argv[2] ?? process.cwd(), {
    stdout: (line) => process.stdout.write(`${line}\n`),
    stderr: (line) => process.stderr.write(`${line}\n`),
    signal: controller.signal,
  });
}
