// Runs of pipelines, the API: a run is recorded with one scheduler job per task, chained (task k+1
// waits for task k and consumes its output files), and an operation that follows it to the end.
// The jobs themselves are executed by RunTasks (run-tasks.ts).
import { rm } from 'node:fs/promises';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import type { BatchBackend } from '../backends/cluster/types.js';
import { inputProblems } from '../backends/modules/manifest.js';
import { terminalStatuses, type JobRecord, type Scheduler } from '../backends/scheduler/scheduler.js';
import { appendEvent, listEvents } from '../db/events.js';
import * as files from '../db/files.js';
import { countExecutions, jobsOfRun } from '../db/jobs.js';
import type { Page, PageRequest } from '../db/pagination.js';
import { projectRegion } from '../db/projects.js';
import { adjustStorageUsage } from '../db/quotas.js';
import * as q from '../db/runs.js';
import type { RunRecord, RunStatus } from '../db/runs.js';
import { conflict, DomainError, notFound, unprocessable } from '../errors.js';
import { newId } from '../ids.js';
import type { OperationRecord } from '../db/operations.js';
import { batchExecution, jobWorkDir } from './batch-jobs.js';
import { followEvents, type EventFeed } from './event-feed.js';
import type { FileService } from './files.js';
import type { ModuleService } from './modules.js';
import { topics, type Notifier } from '../notifier.js';
import type { OperationService } from './operations.js';
import type { PipelineService } from './pipelines.js';
import type { Principal } from './principal.js';
import type { ProjectService } from './projects.js';
import { runTaskKind, type TaskPayload } from './run-tasks.js';

export type { RunRecord, RunStatus } from '../db/runs.js';

export interface RunView {
  run: RunRecord;
  inputFileIds: string[];
  jobs: JobView[];
}

export interface JobView {
  job: JobRecord;
  inputFileIds: string[];
  outputFileIds: string[];
  history: { status: string; at: string; message: string }[];
}

export class RunService {
  constructor(
    private readonly deps: {
      db: Knex;
      clock: Clock;
      dataDir: string;
      projects: ProjectService;
      pipelines: PipelineService;
      modules: ModuleService;
      files: FileService;
      operations: OperationService;
      scheduler: Scheduler;
      notifier: Notifier;
      /** Where run-to-completion work runs, per region. */
      batches: Map<string, BatchBackend>;
    },
  ) {}

  // ---- The API ---------------------------------------------------------------------------------

  async create(
    principal: Principal,
    projectId: string,
    input: { pipelineId: string; inputFileIds: string[]; name?: string | undefined },
  ): Promise<OperationRecord> {
    const { db, clock, operations, scheduler, pipelines, modules } = this.deps;
    await this.deps.projects.access(principal, projectId, 'member');
    const pipeline = await pipelines.find(projectId, input.pipelineId).catch((error: unknown) => {
      throw error instanceof DomainError && error.kind === 'not-found'
        ? unprocessable(`pipeline ${input.pipelineId} does not exist in project ${projectId}`)
        : error;
    });
    if (!pipeline.enabled) throw unprocessable(`pipeline ${pipeline.id} is disabled; enable it to run it`);
    // Modules may have changed since the pipeline was saved: check its tasks against them now.
    const tasks = await pipelines.validateTasks(pipeline.tasks);
    const inputs = await this.deps.files.resolve(projectId, input.inputFileIds).catch((error: unknown) => {
      throw error instanceof DomainError && error.kind === 'not-found' ? unprocessable(error.detail) : error;
    });
    const first = tasks[0];
    if (!first) throw unprocessable('the pipeline has no tasks');
    const { fn } = await modules.function(first.module, first.function);
    const problems = inputProblems(
      fn,
      inputs.map((f) => ({ name: f.name, media_type: f.mediaType })),
    );
    if (problems.length > 0) {
      throw unprocessable(
        `the input files do not suit ${first.module}.${first.function}: ${problems.join('; ')}`,
      );
    }
    const now = iso(clock());
    const run: RunRecord = {
      id: newId('run'),
      projectId,
      pipelineId: pipeline.id,
      name: input.name ?? pipeline.name,
      status: 'running',
      tasks,
      operationId: null,
      createdBy: principal.user.id,
      version: 1,
      createdAt: now,
      updatedAt: now,
      finishedAt: null,
    };
    return db.transaction(async (trx) => {
      await q.insertRun(trx, run, input.inputFileIds);
      const operation = await operations.create(trx, {
        kind: 'run-pipeline',
        projectId,
        target: { type: 'run', id: run.id },
        userId: principal.user.id,
        message: `running pipeline ${pipeline.name} (${tasks.length} task${tasks.length === 1 ? '' : 's'})`,
      });
      await q.updateRun(trx, run.id, { operationId: operation.id }, now);
      await appendEvent(trx, 'run', run.id, {
        at: now,
        type: 'run-created',
        message: `${tasks.length} tasks over ${inputs.length} input file${inputs.length === 1 ? '' : 's'}`,
        data: { operation_id: operation.id },
      });
      let previous: string | null = null;
      for (const [taskIndex] of tasks.entries()) {
        const job: JobRecord = await scheduler.enqueue(trx, {
          kind: runTaskKind,
          projectId,
          payload: { runId: run.id, taskIndex } satisfies TaskPayload,
          dependsOn: previous,
          runId: run.id,
          taskIndex,
        });
        previous = job.id;
      }
      return operation;
    });
  }

  /** A run the principal may see: any run of a project they belong to. */
  private async find(projectId: string, runId: string): Promise<RunRecord> {
    const run = await q.findRun(this.deps.db, runId);
    if (!run || run.projectId !== projectId) throw notFound('run', runId);
    return run;
  }

  private async visible(principal: Principal, projectId: string, runId: string): Promise<RunRecord> {
    await this.deps.projects.readable(principal, projectId);
    return this.find(projectId, runId);
  }

  /** Whoever started a run, the project's owners and administrators may act on it. */
  private async changeable(principal: Principal, projectId: string, runId: string): Promise<RunRecord> {
    return this.deps.projects.changeable(
      principal,
      projectId,
      () => this.find(projectId, runId),
      'only whoever started a run, the project owners and administrators may act on it',
    );
  }

  async get(principal: Principal, projectId: string, runId: string): Promise<RunView> {
    return this.view(await this.visible(principal, projectId, runId));
  }

  async list(
    principal: Principal,
    projectId: string,
    filter: { pipelineId?: string | undefined; status?: RunStatus | undefined },
    page: PageRequest,
  ): Promise<Page<RunView>> {
    await this.deps.projects.readable(principal, projectId);
    const result = await q.listRuns(this.deps.db, projectId, filter, page);
    return {
      items: await Promise.all(result.items.map((run) => this.view(run))),
      nextCursor: result.nextCursor,
    };
  }

  private async view(run: RunRecord): Promise<RunView> {
    const { db } = this.deps;
    const [inputFileIds, jobs, outputs] = await Promise.all([
      q.runInputIds(db, run.id),
      jobsOfRun(db, run.id),
      q.outputsByJob(db, run.id),
    ]);
    const histories = await q.jobHistories(
      db,
      jobs.map((j) => j.id),
    );
    return {
      run,
      inputFileIds,
      jobs: jobs.map((job, i) => ({
        job,
        inputFileIds: i === 0 ? inputFileIds : (outputs.get(jobs[i - 1]?.id ?? '') ?? []),
        outputFileIds: outputs.get(job.id) ?? [],
        history: (histories.get(job.id) ?? [])
          .filter((e) => e.type !== 'cancel-requested')
          .map((e) => ({ status: e.type, at: e.at, message: e.message })),
      })),
    };
  }

  async cancel(principal: Principal, projectId: string, runId: string): Promise<RunView> {
    const run = await this.changeable(principal, projectId, runId);
    if (run.status !== 'running')
      throw conflict(
        `run ${runId} has already ${run.status === 'cancelled' ? 'been cancelled' : run.status}`,
      );
    const reason = `run ${runId} was cancelled by ${principal.user.username}`;
    await this.deps.db.transaction(async (trx) => {
      // Cancelling a job cancels those waiting on it: each is looked at afresh as it comes.
      for (const job of await jobsOfRun(trx, runId)) {
        await this.deps.scheduler.cancelIfLive(trx, job.id, reason);
      }
    });
    return this.get(principal, projectId, runId);
  }

  async retry(principal: Principal, projectId: string, runId: string): Promise<OperationRecord> {
    const { db, operations, scheduler } = this.deps;
    const run = await this.changeable(principal, projectId, runId);
    if (run.status !== 'failed' && run.status !== 'cancelled') {
      throw conflict(`run ${runId} is ${run.status}; only a failed or cancelled run can be retried`);
    }
    return db.transaction(async (trx) => {
      const jobs = await jobsOfRun(trx, runId);
      const from = jobs.find((j) => j.status === 'failed' || j.status === 'cancelled');
      if (!from) throw conflict(`run ${runId} has no failed or cancelled job to retry`);
      const operation = await operations.create(trx, {
        kind: 'run-pipeline',
        projectId,
        target: { type: 'run', id: runId },
        userId: principal.user.id,
        message: `retrying run ${run.name} from task ${from.taskIndex ?? 0}`,
      });
      await q.updateRun(trx, runId, { operationId: operation.id }, iso(this.deps.clock()));
      await scheduler.retry(trx, from.id, `retried by ${principal.user.username}`);
      return operation;
    });
  }

  async delete(principal: Principal, projectId: string, runId: string): Promise<void> {
    const { db, clock } = this.deps;
    const run = await this.changeable(principal, projectId, runId);
    const batch = this.deps.batches.get(await projectRegion(this.deps.db, projectId));
    if (run.status === 'running') throw conflict(`run ${runId} is running; cancel it first`);
    const jobs = await jobsOfRun(db, runId);
    const executions = await Promise.all(jobs.map((job) => countExecutions(db, job.id)));
    await db.transaction(async (trx) => {
      const produced = await files.filesOfRun(trx, runId);
      const readers = await q.activeRunsReading(
        trx,
        produced.map((f) => f.id),
      );
      if (readers.length > 0) throw conflict(`run ${readers[0]} is using files this run produced`);
      await files.deleteFilesOfRun(trx, runId);
      const bytes = produced.reduce((sum, f) => sum + f.size, 0);
      if (bytes > 0) await adjustStorageUsage(trx, projectId, -bytes, iso(clock()));
      await q.deleteRun(trx, runId);
    });
    for (const [i, job] of jobs.entries()) {
      for (let attempt = 1; attempt <= (executions[i] ?? 0); attempt++) {
        await batch?.remove(batchExecution(this.deps.dataDir, job.id, attempt).id).catch(() => undefined);
      }
      await rm(jobWorkDir(this.deps.dataDir, job.id), { recursive: true, force: true });
    }
  }

  async *events(
    principal: Principal,
    projectId: string,
    runId: string,
    options: { afterSeq: number; follow: boolean; signal: AbortSignal },
  ): EventFeed {
    await this.visible(principal, projectId, runId);
    yield* followEvents(
      {
        read: (after) => listEvents(this.deps.db, 'run', runId, after, 100),
        ended: async () => (await q.findRun(this.deps.db, runId))?.status !== 'running',
        topic: topics.run(runId),
        notifier: this.deps.notifier,
      },
      options,
    );
  }

  /** A job's log over its attempts; followed until the job ends. */
  async jobLogs(
    principal: Principal,
    projectId: string,
    runId: string,
    jobId: string,
    options: { tail?: number | undefined; follow: boolean; signal: AbortSignal },
  ): Promise<AsyncIterable<string>> {
    await this.visible(principal, projectId, runId);
    const job = await this.deps.scheduler.find(jobId);
    if (!job || job.runId !== runId) throw notFound('job', jobId);
    return this.logsOf(job, options);
  }

  private async *logsOf(
    job: JobRecord,
    options: { tail?: number | undefined; follow: boolean; signal: AbortSignal },
  ): AsyncIterable<string> {
    const batch = this.deps.batches.get(await projectRegion(this.deps.db, job.projectId ?? ''));
    if (!batch) return;
    const last = Math.max(1, await countExecutions(this.deps.db, job.id));
    const first = options.tail !== undefined ? last : 1;
    for (let attempt = first; attempt <= last; attempt++) {
      if (last > 1 && options.tail === undefined) yield `--- attempt ${attempt} ---\n`;
      const following = options.follow && attempt === last && !terminalStatuses.includes(job.status);
      if (following) await this.untilStarted(batch, job.id, attempt, options.signal);
      yield* batch.logs(batchExecution(this.deps.dataDir, job.id, attempt).id, {
        ...(options.tail !== undefined ? { tail: options.tail } : {}),
        follow: following,
        signal: options.signal,
      });
    }
  }

  /**
   * Waits until the process of a job's execution has started (a claimed job prepares its inputs
   * first), the job has ended, or the client is gone: a followed log does not end before it began.
   */
  private async untilStarted(batch: BatchBackend, jobId: string, execution: number, signal: AbortSignal) {
    for (let i = 0; i < 100_000 && !signal.aborted; i++) {
      if ((await batch.status(batchExecution(this.deps.dataDir, jobId, execution).id)) !== null) return;
      const job = await this.deps.scheduler.find(jobId);
      if (!job || job.status !== 'running') return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
