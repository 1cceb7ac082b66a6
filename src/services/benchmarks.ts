// Benchmarks: built-in metrics, QPIs and plans; plans saved in projects; runs of a plan as scheduler
// jobs (one at a time per runner: queued, never refused) whose process measures the machine and
// writes raw samples and scores (executed by BenchmarkJobs, benchmark-jobs.ts); comparisons of two
// runs. Results for people (details, CSV) are the presenters' (controllers/present-benchmarks.ts).
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import type { BatchBackend } from '../backends/cluster/types.js';
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
import type { PlanResults } from '../backends/benchmark/run-plan.js';
import { compareRuns, type RunComparison } from '../backends/benchmark/scoring.js';
import type { AnyMetric } from '../backends/benchmark/types.js';
import type { Scheduler } from '../backends/scheduler/scheduler.js';
import * as q from '../db/benchmarks.js';
import { projectRegion } from '../db/projects.js';
import type { BenchmarkPlanRecord, BenchmarkRunRecord, BenchmarkRunStatus } from '../db/benchmarks.js';
import type { OperationRecord } from '../db/operations.js';
import type { Page, PageRequest } from '../db/pagination.js';
import { conflict, DomainError, notFound, unprocessable } from '../errors.js';
import { newId } from '../ids.js';
import { checkIfMatch, etagFor } from './etag.js';
import type { OperationService } from './operations.js';
import { benchmarkRunKind } from './benchmark-jobs.js';
import type { Principal } from './principal.js';
import type { ProjectService } from './projects.js';
import { produced } from './changes.js';

export type { BenchmarkPlanRecord, BenchmarkRunRecord } from '../db/benchmarks.js';

export const benchmarkPlanEtag = (p: BenchmarkPlanRecord) => etagFor(p.version, p.updatedAt);

export class BenchmarkService {
  constructor(
    private readonly deps: {
      db: Knex;
      clock: Clock;
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
    await this.deps.projects.readable(principal, projectId);
    return this.findPlan(projectId, planId);
  }

  async listPlans(
    principal: Principal,
    projectId: string,
    page: PageRequest,
  ): Promise<Page<BenchmarkPlanRecord>> {
    await this.deps.projects.readable(principal, projectId);
    return q.listPlans(this.deps.db, projectId, page);
  }

  private async changeablePlan(principal: Principal, projectId: string, planId: string) {
    return this.deps.projects.changeable(
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
    const plan = await this.changeablePlan(principal, projectId, planId);
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
    const plan = await this.changeablePlan(principal, projectId, planId);
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
    if (plan.runner === 'cluster' && (batch?.capabilities.runs !== 'image' || !this.deps.clusterImage)) {
      throw unprocessable(
        `plan ${plan.name} runs on a cluster, but region ${regionId} runs no images (no cluster) or no benchmarks.clusterImage is configured`,
      );
    }
    const now = iso(clock());
    const run: BenchmarkRunRecord = {
      id: newId('brun'),
      projectId,
      planName: plan.name,
      plan,
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
    await this.deps.projects.readable(principal, projectId);
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
    await this.deps.projects.readable(principal, projectId);
    return q.listRuns(this.deps.db, projectId, filter, page);
  }

  /** A run that `principal` may cancel or delete: theirs, or any as a project owner or administrator. */
  private async changeableRun(principal: Principal, projectId: string, runId: string) {
    return this.deps.projects.changeable(
      principal,
      projectId,
      () => this.findRun(projectId, runId),
      'only whoever started a run, the project owners and administrators may act on it',
    );
  }

  async deleteRun(principal: Principal, projectId: string, runId: string): Promise<void> {
    const run = await this.changeableRun(principal, projectId, runId);
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
    const run = await this.changeableRun(principal, projectId, runId);
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
    return { run, results: run.results };
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
}
