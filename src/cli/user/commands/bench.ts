// atrium bench: benchmark plans, runs of them (followed live with --wait), their scores, and the
// comparison of two runs metric by metric — the table a regression check reads.
import { InvalidArgumentError } from 'commander';
import { unwrap, type AtriumClient, type Schemas } from '@atrium/client';
import type { RegisterCommands } from '../../program.js';
import { CliError, exitCodes, type CliContext } from '../context.js';
import { liveStatus, parseSeconds, percentBar, withTimeout } from '../progress.js';

type BenchmarkRun = Schemas['BenchmarkRun'];
type BenchmarkPlan = Schemas['BenchmarkPlan'];
type Delta = Schemas['BenchmarkDelta'];

const runStatuses: BenchmarkRun['status'][] = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];

/** Four significant digits, and every digit of the integer part: 0.01234, 12.35, 123457. */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  return Math.abs(value) >= 1000 ? value.toFixed(0) : String(Number(value.toPrecision(4)));
}

function formatPercent(value: number): string {
  return `${value > 0 ? '+' : ''}${value.toFixed(1)}%`;
}

/** Whether b is better or worse than a, in the direction in which this measure is better. */
function change(delta: Delta, better: 'higher' | 'lower'): string {
  if (delta.delta_percent === 0) return 'same';
  const improved = better === 'higher' ? delta.delta_percent > 0 : delta.delta_percent < 0;
  return `${improved ? 'better' : 'worse'}${delta.regression ? ' (regression)' : ''}`;
}

function parseCount(value: string): number {
  const count = Number(value);
  if (!Number.isInteger(count) || count < 0) throw new InvalidArgumentError('not a whole number');
  return count;
}

function parsePercent(value: string): number {
  const percent = Number(value);
  if (!Number.isFinite(percent) || percent < 0) throw new InvalidArgumentError('not a percentage');
  return percent;
}

async function getBenchmarkRun(
  client: AtriumClient,
  projectId: string,
  runId: string,
): Promise<BenchmarkRun> {
  return unwrap(
    await client.GET('/projects/{projectId}/benchmark-runs/{runId}', {
      params: { path: { projectId, runId } },
    }),
  );
}

function showBenchmarkRun(ctx: CliContext, run: BenchmarkRun): void {
  const error = run.error?.message ?? run.error?.detail;
  ctx.fields(run, [
    ['id', run.id],
    ['plan', run.plan_name],
    ['runner', run.runner],
    ['status', run.status],
    ['score', run.score === null ? null : formatNumber(run.score)],
    [
      'qpi scores',
      Object.entries(run.qpi_scores)
        .map(([name, score]) => `${name} ${formatNumber(score)}`)
        .join(', ') || '-',
    ],
    ...(error ? ([['error', error]] as [string, unknown][]) : []),
    ['operation', run.operation_id],
    ['created', run.created_at],
    ['finished', run.finished_at],
  ]);
}

/** Follows a benchmark's operation (progress per metric on stderr) until it is done; throws its problem if it failed. */
async function waitForBenchmark(
  ctx: CliContext,
  operationId: string,
  runId: string,
  timeoutSeconds: number | undefined,
): Promise<void> {
  const client = ctx.client();
  const status = liveStatus(ctx.io);
  try {
    await withTimeout(timeoutSeconds, `benchmark run ${runId} was not done`, async (signal) => {
      for await (const event of client.events('/operations/{operationId}/events', {
        params: { path: { operationId } },
        ...(signal ? { signal } : {}),
      })) {
        const progress = event.data.data?.progress;
        const text = event.data.message ?? event.event;
        if (typeof progress === 'number')
          status.set('progress', `${status.live ? `${percentBar(progress)} ` : ''}${progress}% ${text}`);
        else status.log(`${event.event}: ${text}`);
      }
      // The stream ends once the operation is done: this settles it (its problem, when it failed).
      await client.waitForOperation(operationId, { timeoutMs: 60_000, ...(signal ? { signal } : {}) });
    });
  } finally {
    status.stop();
  }
}

interface ComparisonRow extends Delta {
  name: string;
  unit: string | null;
  better: 'higher' | 'lower';
}

function comparisonRows(comparison: Schemas['BenchmarkComparison']): ComparisonRow[] {
  const field = (delta: Delta, key: string) => delta[key];
  return [
    ...comparison.metrics.map((m) => ({
      ...m,
      name: String(field(m, 'id')),
      unit: (field(m, 'unit') as string | null) ?? null,
      better: field(m, 'better') === 'lower' ? ('lower' as const) : ('higher' as const),
    })),
    ...comparison.qpis.map((q) => ({
      ...q,
      name: `qpi ${String(field(q, 'name'))}`,
      unit: 'score',
      better: 'higher' as const,
    })),
    { ...comparison.overall, name: 'overall', unit: 'score', better: 'higher' as const },
  ];
}

export const registerBench: RegisterCommands = (program, act) => {
  const bench = program
    .command('bench')
    .description("benchmarks of this lab's machines: plans, runs, scores");

  bench
    .command('plans')
    .description("the built-in plans and the project's own")
    .action(
      act(async (ctx) => {
        const client = ctx.client();
        const projectId = await ctx.project();
        const plans: BenchmarkPlan[] = [];
        for await (const plan of client.paginate('/benchmark-plans')) plans.push(plan);
        for await (const plan of client.paginate('/projects/{projectId}/benchmark-plans', {
          params: { path: { projectId } },
        }))
          plans.push(plan);
        ctx.table(plans, [
          { header: 'PLAN', value: (p) => p.name },
          { header: 'ID', value: (p) => p.id ?? 'built-in' },
          { header: 'RUNNER', value: (p) => p.runner },
          { header: 'QPIS', value: (p) => p.qpis.join(',') },
          { header: 'SAMPLES', value: (p) => p.samples },
          { header: 'TITLE', value: (p) => p.title },
        ]);
      }),
    );

  bench
    .command('run')
    .description('run a plan (runs on one runner never overlap: a second one waits, queued)')
    .argument('<plan>', "a built-in plan's name, or the id of one of the project's plans")
    .option('--samples <n>', "samples per metric (instead of the plan's)", parseCount)
    .option('--warmup <n>', 'warm-up rounds per metric', parseCount)
    .option('-w, --wait', 'follow it to its end, showing progress per metric (exit 1 when it fails)', false)
    .option('--timeout <seconds>', 'stop waiting after this long (exit 7)', parseSeconds)
    .action(
      act(async (ctx, [plan], options) => {
        const projectId = await ctx.project();
        const client = ctx.client();
        const operation = unwrap(
          await client.POST('/projects/{projectId}/benchmark-runs', {
            params: { path: { projectId } },
            body: {
              plan: plan!,
              ...(options.samples === undefined ? {} : { samples: options.samples as number }),
              ...(options.warmup === undefined ? {} : { warmup: options.warmup as number }),
            },
          }),
        );
        const runId = operation.target?.id;
        if (!runId) throw new CliError('the server answered an operation without its run', exitCodes.failure);
        if (options.wait) {
          ctx.note(`benchmark run ${runId} of ${plan} queued; following it`);
          await waitForBenchmark(ctx, operation.id, runId, options.timeout as number | undefined);
        }
        showBenchmarkRun(ctx, await getBenchmarkRun(client, projectId, runId));
      }),
    );

  bench
    .command('runs')
    .description("the project's benchmark runs, newest first")
    .option('--plan <plan>', 'runs of this plan')
    .option('--status <status>', `only runs in this status (${runStatuses.join(', ')})`)
    .action(
      act(async (ctx, _args, options) => {
        const projectId = await ctx.project();
        const rows: BenchmarkRun[] = [];
        for await (const run of ctx.client().paginate('/projects/{projectId}/benchmark-runs', {
          params: {
            path: { projectId },
            query: {
              ...(options.plan ? { plan: options.plan as string } : {}),
              ...(options.status ? { status: options.status as BenchmarkRun['status'] } : {}),
            },
          },
        }))
          rows.push(run);
        ctx.table(rows, [
          { header: 'ID', value: (r) => r.id },
          { header: 'PLAN', value: (r) => r.plan_name },
          { header: 'STATUS', value: (r) => r.status },
          { header: 'SCORE', value: (r) => (r.score === null ? null : formatNumber(r.score)) },
          { header: 'RUNNER', value: (r) => r.runner },
          { header: 'CREATED', value: (r) => r.created_at },
          { header: 'FINISHED', value: (r) => r.finished_at },
        ]);
      }),
    );

  bench
    .command('show')
    .description('one benchmark run: its status and scores')
    .argument('<run>', 'a benchmark run id')
    .action(
      act(async (ctx, [runId]) => {
        const projectId = await ctx.project();
        showBenchmarkRun(ctx, await getBenchmarkRun(ctx.client(), projectId, runId!));
      }),
    );

  bench
    .command('results')
    .description(
      "a run's results: each metric's value, baseline and score, each QPI's score, the overall score",
    )
    .argument('<run>', 'a benchmark run id')
    .option('--csv', "the server's CSV (one line per metric, with the raw samples)", false)
    .action(
      act(async (ctx, [runId], options) => {
        const projectId = await ctx.project();
        const client = ctx.client();
        const path = { projectId, runId: runId! };
        if (options.csv) {
          const csv = unwrap(
            await client.GET('/projects/{projectId}/benchmark-runs/{runId}/results', {
              params: { path, query: { format: 'csv' } },
              parseAs: 'text',
            }),
          );
          ctx.out(String(csv));
          return;
        }
        // The operation answers JSON or CSV; without format=csv it is the JSON.
        const results = unwrap(
          await client.GET('/projects/{projectId}/benchmark-runs/{runId}/results', { params: { path } }),
        ) as Schemas['BenchmarkResults'];
        ctx.result(results, () => {
          const rows = results.qpis.flatMap((qpi) =>
            qpi.sections.flatMap((section) => section.metrics.map((metric) => ({ qpi, section, metric }))),
          );
          ctx.table(rows, [
            { header: 'QPI', value: (r) => r.qpi.name },
            { header: 'SECTION', value: (r) => r.section.name },
            { header: 'METRIC', value: (r) => r.metric.id },
            { header: 'UNIT', value: (r) => r.metric.unit },
            { header: 'BETTER', value: (r) => r.metric.better },
            { header: 'BASELINE', value: (r) => formatNumber(r.metric.baseline) },
            { header: 'VALUE', value: (r) => formatNumber(r.metric.value) },
            { header: 'SPREAD', value: (r) => `${(r.metric.spread * 100).toFixed(1)}%` },
            { header: 'SCORE', value: (r) => formatNumber(r.metric.score) },
          ]);
          ctx.out('');
          ctx.table(results.qpis, [
            { header: 'QPI', value: (q) => q.name },
            { header: 'SCORE', value: (q) => formatNumber(q.score) },
            { header: 'BASELINE SCORE', value: (q) => formatNumber(q.baseline_score) },
          ]);
          ctx.out(`\noverall score (${results.formula} mean): ${formatNumber(results.score)}`);
        });
      }),
    );

  bench
    .command('compare')
    .description('compare run B with run A: each metric, each QPI and overall, and what regressed')
    .argument('<run-a>', 'the base run (the reference)')
    .argument('<run-b>', 'the run compared with it')
    .option('--threshold <percent>', 'how much worse is a regression', parsePercent, 5)
    .option('--fail-on-regression', 'exit 1 when anything regressed beyond the threshold', false)
    .action(
      act(async (ctx, [base, other], options) => {
        const projectId = await ctx.project();
        const comparison = unwrap(
          await ctx.client().GET('/projects/{projectId}/benchmark-comparisons', {
            params: {
              path: { projectId },
              query: { base: base!, run: other!, threshold: options.threshold as number },
            },
          }),
        );
        ctx.result(comparison, () => {
          ctx.table(comparisonRows(comparison), [
            { header: 'METRIC', value: (r) => r.name },
            { header: 'UNIT', value: (r) => r.unit },
            { header: 'A', value: (r) => formatNumber(r.a) },
            { header: 'B', value: (r) => formatNumber(r.b) },
            { header: 'DELTA', value: (r) => formatPercent(r.delta_percent) },
            { header: 'CHANGE', value: (r) => change(r, r.better) },
          ]);
          if (comparison.unmatched.length > 0)
            ctx.out(`\nnot compared (in one run only): ${comparison.unmatched.join(', ')}`);
          ctx.out(
            `\n${comparison.regression ? 'regression' : 'no regression'} beyond ${comparison.threshold_percent}% (A ${base}, B ${other})`,
          );
        });
        if (comparison.regression && options.failOnRegression)
          throw new CliError(
            `${other} regressed from ${base} by more than ${comparison.threshold_percent}%`,
            exitCodes.failure,
          );
      }),
    );

  bench
    .command('cancel')
    .description('cancel a queued or running benchmark run')
    .argument('<run>', 'a benchmark run id')
    .action(
      act(async (ctx, [runId]) => {
        const projectId = await ctx.project();
        showBenchmarkRun(
          ctx,
          unwrap(
            await ctx.client().POST('/projects/{projectId}/benchmark-runs/{runId}/cancellation', {
              params: { path: { projectId, runId: runId! } },
            }),
          ),
        );
      }),
    );

  bench
    .command('rm')
    .alias('delete')
    .description('delete ended benchmark runs and their results')
    .argument('<run...>', 'benchmark run ids')
    .action(
      act(async (ctx, _args, _options, command) => {
        const projectId = await ctx.project();
        const ids = command.processedArgs[0] as string[];
        for (const runId of ids) {
          unwrap(
            await ctx.client().DELETE('/projects/{projectId}/benchmark-runs/{runId}', {
              params: { path: { projectId, runId } },
            }),
          );
          if (!ctx.json) ctx.out(`deleted ${runId}`);
        }
        if (ctx.json) ctx.out(JSON.stringify({ deleted: ids }));
      }),
    );
};
