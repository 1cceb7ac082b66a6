// Benchmarks: built-in metrics, QPIs and plans; plans saved in projects; runs of a plan as scheduler
// jobs (one at a time per runner: queued, never refused) whose process measures the machine and
// writes raw samples and scores; results as JSON or CSV; comparisons of two runs.
import { mkdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { batchLogTail, waitForBatch, type BatchBackend } from '../backends/cluster/types.js';
import {
  BenchmarkDefinitionError,
  parsePlan,
  resolvePlan,
  type PlanDefinition,
  type QpiDefinition,
  type ResolvedPlan,
} from '../backends/benchmark/definitions.js';
import type { BenchmarkDefinitions } from '../backends/benchmark/builtin.js';
import { builtinMetrics, findMetric } from '../backends/benchmark/metrics/index.js';
import type { PlanResults, ProgressEvent } from '../backends/benchmark/run-plan.js';
import { compareRuns, type RunComparison } from '../backends/benchmark/scoring.js';
import type { AnyMetric } from '../backends/benchmark/types.js';
import {
  JobFailure,
  type JobHandler,
  type JobRecord,
  type RunContext,
  type Scheduler,
  type Transition,
} from '../backends/scheduler/scheduler.js';
import * as q from '../db/benchmarks.js';
import { projectRegion } from '../db/projects.js';
import type { BenchmarkPlanRecord, BenchmarkRunRecord, BenchmarkRunStatus } from '../db/benchmarks.js';
import type { OperationRecord } from '../db/operations.js';
import type { Page, PageRequest } from '../db/pagination.js';
import { conflict, DomainError, notFound, unprocessable } from '../errors.js';
import { newId } from '../ids.js';
import { repoRoot } from '../paths.js';
import { checkIfMatch, etagFor } from './etag.js';
import { operationProblem, type OperationService } from './operations.js';
import type { Principal } from './principal.js';
import type { ProjectService } from './projects.js';
import { produced } from './changes.js';

export type { BenchmarkPlanRecord, BenchmarkRunRecord } from '../db/benchmarks.js';

export const benchmarkRunKind = 'benchmark-run';
const runPlanScript = join(repoRoot, 'dist', 'src', 'backends', 'benchmark', 'run-plan.js');

export const benchmarkPlanEtag = (p: BenchmarkPlanRecord) => etagFor(p.version, p.updatedAt);

/** One row of a run's results: a metric of a section of a QPI, with every number that scores it. */
export interface ResultRow extends Omit<MetricDetail, 'score'> {
  qpi: string;
  section: string;
  metricScore: number;
  sectionScore: number;
  qpiScore: number;
}

/** What one scored metric of a run measured: its score joined with its raw measurement. */
export interface MetricDetail {
  id: string;
  metric: string;
  unit: string;
  better: 'higher' | 'lower';
  parameters: Record<string, unknown>;
  baseline: number;
  value: number;
  spread: number;
  samples: number[];
  score: number;
}

/** Every metric's detail, by id. */
export function metricDetails(results: PlanResults): Map<string, MetricDetail> {
  const measured = new Map(results.measurements.map((m) => [m.id, m]));
  const details = new Map<string, MetricDetail>();
  for (const m of results.scores.qpis.flatMap((q) => q.sections.flatMap((s) => s.metrics))) {
    const measurement = measured.get(m.id);
    details.set(m.id, {
      id: m.id,
      metric: m.metric,
      unit: measurement?.unit ?? m.unit ?? '',
      better: m.better,
      parameters: measurement?.parameters ?? m.parameters ?? {},
      baseline: m.baseline,
      value: m.value,
      spread: measurement?.spread ?? 0,
      samples: measurement?.samples ?? [],
      score: m.score,
    });
  }
  return details;
}

/** A run's results, flattened for tables (CSV) and checks. */
export function resultRows(results: PlanResults): ResultRow[] {
  const details = metricDetails(results);
  return results.scores.qpis.flatMap((qpi) =>
    qpi.sections.flatMap((section) =>
      section.metrics.map((m) => {
        const { score, ...detail } = details.get(m.id) as MetricDetail;
        return {
          ...detail,
          qpi: qpi.name,
          section: section.name,
          metricScore: score,
          sectionScore: section.score,
          qpiScore: qpi.score,
        };
      }),
    ),
  );
}

const csvCell = (value: string | number) => {
  const text = String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
};

/** The results as CSV: one line per metric, with its samples, scores and the overall score. */
export function resultsCsv(run: BenchmarkRunRecord, results: PlanResults): string {
  const header = [
    'run_id',
    'plan',
    'qpi',
    'section',
    'metric',
    'unit',
    'better',
    'baseline',
    'value',
    'spread',
    'samples',
    'metric_score',
    'section_score',
    'qpi_score',
    'overall_score',
  ];
  const lines = resultRows(results).map((r) =>
    [
      run.id,
      run.planName,
      r.qpi,
      r.section,
      r.metric,
      r.unit,
      r.better,
      r.baseline,
      r.value,
      r.spread,
      r.samples.join(' '),
      r.metricScore,
      r.sectionScore,
      r.qpiScore,
      results.scores.score,
    ]
      .map(csvCell)
      .join(','),
  );
  return `${[header.join(','), ...lines].join('\n')}\n`;
}

export class BenchmarkService {
  constructor(
    private readonly deps: {
      db: Knex;
      clock: Clock;
      log: Logger;
      dataDir: string;
      definitions: () => BenchmarkDefinitions;
      projects: ProjectService;
      operations: OperationService;
      scheduler: Scheduler;
      batches: Map<string, BatchBackend>;
      /** The image of cluster runs: Atrium's own (it holds dist/src/backends/benchmark/run-plan.js). */
      clusterImage: string | null;
    },
  ) {}

  // ---- Definitions ---------------------------------------------------------------------------------

  metrics(): readonly AnyMetric[] {
    return builtinMetrics;
  }

  metric(name: string): AnyMetric {
    const metric = findMetric(name);
    if (!metric) throw notFound('metric', name);
    return metric;
  }

  qpis(): QpiDefinition[] {
    return [...this.deps.definitions().qpis.values()];
  }

  qpi(name: string): QpiDefinition {
    const qpi = this.deps.definitions().qpis.get(name);
    if (!qpi) throw notFound('QPI', name);
    return qpi;
  }

  builtinPlans(): PlanDefinition[] {
    return [...this.deps.definitions().plans.values()];
  }

  builtinPlan(name: string): PlanDefinition {
    const plan = this.deps.definitions().plans.get(name);
    if (!plan) throw notFound('plan', name);
    return plan;
  }

  // ---- Plans of projects -----------------------------------------------------------------------------

  private validatePlan(document: Record<string, unknown>): PlanDefinition {
    try {
      return parsePlan(document, this.deps.definitions().qpis, 'the plan');
    } catch (error) {
      if (!(error instanceof BenchmarkDefinitionError)) throw error;
      throw new DomainError('unprocessable', error.message, {
        errors: error.problems.map((message) => ({ location: 'body', message })),
      });
    }
  }

  async createPlan(principal: Principal, projectId: string, document: Record<string, unknown>) {
    await this.deps.projects.access(principal, projectId, 'member');
    const definition = this.validatePlan(document);
    if (this.deps.definitions().plans.has(definition.name)) {
      throw conflict(`"${definition.name}" is the name of a built-in plan; choose another`);
    }
    const now = iso(this.deps.clock());
    const plan: BenchmarkPlanRecord = {
      id: newId('bplan'),
      projectId,
      name: definition.name,
      definition,
      createdBy: principal.user.id,
      version: 1,
      createdAt: now,
      updatedAt: now,
    };
    try {
      await this.deps.db.transaction(async (trx) => {
        produced(plan);
        await q.insertPlan(trx, plan);
      });
    } catch (error) {
      if (/unique|duplicate/i.test((error as Error).message)) {
        throw conflict(`project ${projectId} already has a plan named "${definition.name}"`);
      }
      throw error;
    }
    return plan;
  }

  private async findPlan(projectId: string, planId: string): Promise<BenchmarkPlanRecord> {
    const plan = await q.findPlan(this.deps.db, projectId, planId);
    if (!plan) throw notFound('plan', planId);
    return plan;
  }

  async getPlan(principal: Principal, projectId: string, planId: string): Promise<BenchmarkPlanRecord> {
    await this.deps.projects.access(principal, projectId, 'viewer');
    return this.findPlan(projectId, planId);
  }

  async listPlans(
    principal: Principal,
    projectId: string,
    page: PageRequest,
  ): Promise<Page<BenchmarkPlanRecord>> {
    await this.deps.projects.access(principal, projectId, 'viewer');
    return q.listPlans(this.deps.db, projectId, page);
  }

  private async writablePlan(principal: Principal, projectId: string, planId: string) {
    return this.deps.projects.findChangeable(
      principal,
      projectId,
      () => this.findPlan(projectId, planId),
      'only whoever created a plan, the project owners and administrators may change it',
    );
  }

  async updatePlan(
    principal: Principal,
    projectId: string,
    planId: string,
    changes: Record<string, unknown>,
    ifMatch: string | undefined,
  ): Promise<BenchmarkPlanRecord> {
    const plan = await this.writablePlan(principal, projectId, planId);
    checkIfMatch(ifMatch, benchmarkPlanEtag(plan), `plan ${planId}`);
    const definition = this.validatePlan({ ...plan.definition, ...changes });
    const updated = await q
      .updatePlan(this.deps.db, projectId, planId, definition, plan.version, iso(this.deps.clock()))
      .catch((error: unknown) => {
        if (/unique|duplicate/i.test((error as Error).message)) {
          throw conflict(`project ${projectId} already has a plan named "${definition.name}"`);
        }
        throw error;
      });
    if (!updated) checkIfMatch('"stale"', benchmarkPlanEtag(plan), `plan ${planId}`);
    return this.getPlan(principal, projectId, planId);
  }

  async deletePlan(principal: Principal, projectId: string, planId: string, ifMatch: string | undefined) {
    const plan = await this.writablePlan(principal, projectId, planId);
    checkIfMatch(ifMatch, benchmarkPlanEtag(plan), `plan ${planId}`);
    await q.deletePlan(this.deps.db, projectId, planId);
  }

  // ---- Runs --------------------------------------------------------------------------------------------

  /**
   * Runs a plan (a built-in one by name, or one of the project's by id) as a job: the operation it
   * answers follows it, with progress per metric. Runs on one runner wait for each other.
   */
  async createRun(
    principal: Principal,
    projectId: string,
    request: { plan: string; samples?: number | undefined; warmup?: number | undefined },
  ): Promise<OperationRecord> {
    const { db, clock, operations, scheduler, definitions } = this.deps;
    await this.deps.projects.access(principal, projectId, 'member');
    let definition: PlanDefinition;
    if (request.plan.startsWith('bplan_')) {
      const stored = await q.findPlan(db, projectId, request.plan);
      if (!stored) throw unprocessable(`project ${projectId} has no plan ${request.plan}`);
      definition = this.validatePlan(stored.definition);
    } else {
      const builtin = definitions().plans.get(request.plan);
      if (!builtin) throw unprocessable(`there is no built-in plan "${request.plan}"`);
      definition = builtin;
    }
    const plan: ResolvedPlan = resolvePlan(
      {
        ...definition,
        ...(request.samples !== undefined ? { samples: request.samples } : {}),
        ...(request.warmup !== undefined ? { warmup: request.warmup } : {}),
      },
      definitions().qpis,
    );
    const regionId = await projectRegion(this.deps.db, projectId);
    const batch = this.deps.batches.get(regionId);
    const runner = plan.runner === 'cluster' ? `cluster:${regionId}` : 'local';
    if (plan.runner === 'cluster' && (batch?.type !== 'kubernetes' || !this.deps.clusterImage)) {
      throw unprocessable(
        `plan ${plan.name} runs on a cluster, but region ${regionId} has no Kubernetes cluster or no benchmarks.clusterImage is configured`,
      );
    }
    const now = iso(clock());
    const run: BenchmarkRunRecord = {
      id: newId('brun'),
      projectId,
      planName: plan.name,
      plan: plan as unknown as Record<string, unknown>,
      runner,
      status: 'queued',
      operationId: null,
      jobId: null,
      results: null,
      score: null,
      error: null,
      createdBy: principal.user.id,
      createdAt: now,
      updatedAt: now,
      finishedAt: null,
    };
    return db.transaction(async (trx) => {
      await q.insertRun(trx, run);
      const operation = await operations.create(trx, {
        kind: 'run-benchmark',
        projectId,
        target: { type: 'benchmark-run', id: run.id },
        userId: principal.user.id,
        message: `benchmark plan ${plan.name} queued on runner ${runner}`,
      });
      const job = await scheduler.enqueue(trx, {
        kind: benchmarkRunKind,
        projectId,
        payload: { benchmarkRunId: run.id },
        concurrencyKey: `benchmark-runner:${runner}`,
        // A measurement interrupted is measured again from the start, at most once more.
        maxAttempts: 2,
      });
      await q.updateRun(trx, run.id, { operationId: operation.id, jobId: job.id }, now);
      return operation;
    });
  }

  private async findRun(projectId: string, runId: string): Promise<BenchmarkRunRecord> {
    const run = await q.findRun(this.deps.db, runId);
    if (!run || run.projectId !== projectId) throw notFound('benchmark run', runId);
    return run;
  }

  private async visibleRun(principal: Principal, projectId: string, runId: string) {
    await this.deps.projects.access(principal, projectId, 'viewer');
    return this.findRun(projectId, runId);
  }

  getRun(principal: Principal, projectId: string, runId: string): Promise<BenchmarkRunRecord> {
    return this.visibleRun(principal, projectId, runId);
  }

  async listRuns(
    principal: Principal,
    projectId: string,
    filter: { planName?: string | undefined; status?: BenchmarkRunStatus | undefined },
    page: PageRequest,
  ): Promise<Page<BenchmarkRunRecord>> {
    await this.deps.projects.access(principal, projectId, 'viewer');
    return q.listRuns(this.deps.db, projectId, filter, page);
  }

  /** A run that `principal` may cancel or delete: theirs, or any as a project owner or administrator. */
  private async actionableRun(principal: Principal, projectId: string, runId: string) {
    return this.deps.projects.findChangeable(
      principal,
      projectId,
      () => this.findRun(projectId, runId),
      'only whoever started a run, the project owners and administrators may act on it',
    );
  }

  async deleteRun(principal: Principal, projectId: string, runId: string): Promise<void> {
    const run = await this.actionableRun(principal, projectId, runId);
    if (run.status === 'queued' || run.status === 'running') {
      throw conflict(`benchmark run ${runId} has not ended; cancel it first`);
    }
    await q.deleteRun(this.deps.db, runId);
  }

  /**
   * Cancels the run's job: a queued one at once (the run and its operation end `cancelled` in the
   * same transaction), a running one by its worker, which stops the runner.
   */
  async cancelRun(principal: Principal, projectId: string, runId: string): Promise<BenchmarkRunRecord> {
    const run = await this.actionableRun(principal, projectId, runId);
    if ((run.status !== 'queued' && run.status !== 'running') || !run.jobId) {
      throw conflict(
        `benchmark run ${runId} has already ${run.status === 'cancelled' ? 'been cancelled' : run.status}`,
      );
    }
    const { jobId } = run;
    const reason = `benchmark run ${runId} was cancelled by ${principal.user.username}`;
    await this.deps.db.transaction((trx) => this.deps.scheduler.cancelIfLive(trx, jobId, reason));
    return this.visibleRun(principal, projectId, runId);
  }

  /** The results of a finished run (409 before it has any). */
  async results(
    principal: Principal,
    projectId: string,
    runId: string,
  ): Promise<{ run: BenchmarkRunRecord; results: PlanResults }> {
    const run = await this.visibleRun(principal, projectId, runId);
    if (!run.results) throw conflict(`benchmark run ${runId} is ${run.status}; it has no results yet`);
    return { run, results: run.results as unknown as PlanResults };
  }

  async compare(
    principal: Principal,
    projectId: string,
    baseId: string,
    otherId: string,
    thresholdPercent: number,
  ): Promise<{ base: BenchmarkRunRecord; other: BenchmarkRunRecord; comparison: RunComparison }> {
    const base = await this.results(principal, projectId, baseId);
    const other = await this.results(principal, projectId, otherId);
    return {
      base: base.run,
      other: other.run,
      comparison: compareRuns(base.results.scores, other.results.scores, thresholdPercent),
    };
  }

  // ---- The job kind -----------------------------------------------------------------------------------

  taskHandler(): JobHandler {
    return {
      run: (job, ctx) => this.runJob(job, ctx),
      commit: (trx, job, result) => this.commitJob(trx, job, result),
      onTransition: (trx, job, transition) => this.onTransition(trx, job, transition),
    };
  }

  private async runOf(job: JobRecord, db: Knex = this.deps.db): Promise<BenchmarkRunRecord> {
    const id = String((job.payload as { benchmarkRunId?: unknown }).benchmarkRunId ?? '');
    const run = await q.findRun(db, id);
    if (!run) throw new JobFailure(`benchmark run ${id} is gone`, false);
    return run;
  }

  private async runJob(job: JobRecord, ctx: RunContext): Promise<Record<string, unknown>> {
    const run = await this.runOf(job);
    const batch = this.deps.batches.get(await projectRegion(this.deps.db, run.projectId));
    if (!batch) throw new JobFailure(`the region of project ${run.projectId} has no batch backend`, false);
    const executionId = `${job.id}-b${Date.now().toString(36)}`;
    const workDir = join(this.deps.dataDir, 'work', job.id, executionId);
    await rm(workDir, { recursive: true, force: true });
    await mkdir(join(workDir, 'output'), { recursive: true });
    await writeFile(
      join(workDir, 'input.json'),
      JSON.stringify({ function: 'run-plan', options: { plan: run.plan }, files: [] }),
    );
    const onCluster = run.runner.startsWith('cluster:');
    await batch.start({
      jobId: executionId,
      projectId: run.projectId,
      run: onCluster
        ? {
            local: null,
            cluster: {
              image: this.deps.clusterImage ?? '',
              command: ['node', '/opt/atrium/dist/src/backends/benchmark/run-plan.js', '/work'],
              args: null,
              env: { ATRIUM_WORK_DIR: '/work' },
              files: {},
              workSubPath: join(job.id, executionId),
            },
          }
        : {
            local: { command: [process.execPath, runPlanScript, workDir], cwd: workDir, env: {} },
            cluster: null,
          },
      resources: { cpuMillis: 1000, memoryBytes: 1024 * 1024 * 1024, gpu: 0 },
      timeoutMs: 60 * 60_000,
      labels: { job: job.id, 'benchmark-run': run.id },
    });
    const stop = () => void batch.cancel(executionId);
    ctx.signal.addEventListener('abort', stop, { once: true });
    try {
      // Progress per metric comes as JSON lines on the runner's stdout.
      const progress = this.followProgress(batch, executionId, run, ctx.signal);
      const status = await waitForBatch(batch, executionId, ctx.signal);
      await progress;
      if (ctx.signal.aborted) throw new JobFailure('stopped', true);
      if (!status || status.phase !== 'succeeded') {
        throw new JobFailure(`the benchmark runner ${status?.message ?? 'vanished'}`, false, {
          exit_code: status?.exitCode ?? null,
          log_tail: await batchLogTail(batch, executionId),
        });
      }
      const results = JSON.parse(
        await readFile(join(workDir, 'output', 'results.json'), 'utf8'),
      ) as PlanResults;
      return { results };
    } finally {
      // The results (or the failure) are in the job's record: this execution's leftovers go.
      ctx.signal.removeEventListener('abort', stop);
      if (ctx.signal.aborted) await batch.cancel(executionId).catch(() => undefined);
      await batch.remove(executionId).catch(() => undefined);
      await rm(workDir, { recursive: true, force: true });
      // The job's directory, unless another execution (after a lost lease) is using it.
      await rmdir(join(this.deps.dataDir, 'work', job.id)).catch(() => undefined);
    }
  }

  private async followProgress(
    batch: BatchBackend,
    id: string,
    run: BenchmarkRunRecord,
    signal: AbortSignal,
  ) {
    if (!run.operationId) return;
    let pending = '';
    try {
      for await (const chunk of batch.logs(id, { follow: true, signal })) {
        pending += chunk;
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines) {
          let event: ProgressEvent;
          try {
            event = JSON.parse(line) as ProgressEvent;
          } catch {
            continue;
          }
          if (event.event !== 'metric-started' && event.event !== 'metric-finished') continue;
          const done = event.event === 'metric-finished' ? event.index : event.index - 1;
          await this.deps.operations.progress(
            run.operationId,
            Math.min(99, Math.floor((100 * done) / event.total)),
            `${event.event === 'metric-started' ? 'measuring' : 'measured'} ${event.metric} (${event.index} of ${event.total})`,
            { ...event },
          );
        }
      }
    } catch (err) {
      this.deps.log.warn({ err, run: run.id }, 'following benchmark progress failed');
    }
  }

  private async commitJob(
    trx: Knex.Transaction,
    job: JobRecord,
    result: Record<string, unknown>,
  ): Promise<void> {
    const run = await this.runOf(job, trx);
    const results = result.results as PlanResults;
    const now = iso(this.deps.clock());
    await q.updateRun(
      trx,
      run.id,
      {
        status: 'succeeded',
        results: results as unknown as Record<string, unknown>,
        score: results.scores.score,
        finishedAt: now,
      },
      now,
    );
    if (run.operationId) {
      await this.deps.operations.finishIn(trx, run.operationId, {
        status: 'succeeded',
        message: `plan ${run.planName} scored ${results.scores.score.toFixed(1)}`,
        result: { benchmark_run_id: run.id, score: results.scores.score },
      });
    }
  }

  private async onTransition(trx: Knex.Transaction, job: JobRecord, transition: Transition): Promise<void> {
    const run = await this.runOf(job, trx).catch(() => null);
    if (!run) return;
    const now = transition.at;
    if (transition.to === 'running') {
      await q.updateRun(trx, run.id, { status: 'running' }, now);
      if (run.operationId) {
        await this.deps.operations.progressIn(trx, run.operationId, 0, `measuring on runner ${run.runner}`);
      }
    } else if (transition.to === 'failed' || transition.to === 'cancelled') {
      const status = transition.to;
      await q.updateRun(trx, run.id, { status, error: job.error, finishedAt: now }, now);
      if (run.operationId) {
        await this.deps.operations.finishIn(trx, run.operationId, {
          status,
          message: transition.message,
          error: operationProblem(status === 'failed' ? 'task-failed' : 'cancelled', transition.message, {
            benchmark_run_id: run.id,
            job_error: job.error,
          }),
        });
      }
    }
  }
}
