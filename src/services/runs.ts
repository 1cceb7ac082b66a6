// Runs of pipelines: a run is recorded with one scheduler job per task, chained (task k+1 waits for
// task k and consumes its output files), and an operation that follows it to the end. Each job runs
// its module function through the execution contract on a batch backend; its outputs are recorded,
// with their lineage, in the transaction that finishes the job.
import { rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { batchLogTail, waitForBatch, type BatchBackend } from '../backends/cluster/types.js';
import type { StagedContent } from '../backends/files/store.js';
import {
  ContractError,
  distinctFileNames,
  prepareWorkDir,
  readOutput,
  type Tags,
} from '../backends/modules/contract.js';
import { functionResources, functionTimeoutMs, inputProblems } from '../backends/modules/manifest.js';
import { clusterRunSpec, localRunSpec } from '../backends/modules/run-spec.js';
import {
  JobFailure,
  terminalStatuses,
  type JobHandler,
  type JobRecord,
  type RunContext,
  type Scheduler,
  type Transition,
} from '../backends/scheduler/scheduler.js';
import { appendEvent, listEvents } from '../db/events.js';
import * as files from '../db/files.js';
import { jobsOfRun } from '../db/jobs.js';
import type { Page, PageRequest } from '../db/pagination.js';
import { adjustStorageUsage, projectRegion } from '../db/projects.js';
import * as q from '../db/runs.js';
import type { RunRecord, RunStatus } from '../db/runs.js';
import { conflict, DomainError, notFound, unprocessable } from '../errors.js';
import { newId } from '../ids.js';
import type { FileRecord, FileService } from './files.js';
import type { ModuleService } from './modules.js';
import { topics, type Notifier } from './notifier.js';
import { operationProblem, type OperationService } from './operations.js';
import type { OperationRecord } from '../db/operations.js';
import type { PipelineService } from './pipelines.js';
import type { Principal } from './principal.js';
import type { ProjectService } from './projects.js';
import { streamEvents } from './services.js';

export type { RunRecord, RunStatus } from '../db/runs.js';

export const runTaskKind = 'run-task';

interface TaskPayload {
  runId: string;
  taskIndex: number;
}

/** What a task's job hands from its work (outside any transaction) to its commit. */
interface TaskResult extends Record<string, unknown> {
  outputs: {
    fileId: string;
    name: string;
    mediaType: string;
    tags: string[];
    parentId: string | null;
    staged: StagedContent;
  }[];
  tags: Tags;
}

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

/** Tags as `name=value` strings (files) from a module's tag map, and back. */
export function tagStrings(tags: Tags): string[] {
  return Object.entries(tags).map(([k, v]) => (v === true ? k : `${k}=${String(v)}`));
}

function tagMap(tags: string[]): Tags {
  const map: Tags = {};
  for (const tag of tags) {
    const eq = tag.indexOf('=');
    if (eq < 0) map[tag] = true;
    else map[tag.slice(0, eq)] = tag.slice(eq + 1);
  }
  return map;
}

/** What a run's status is, from its jobs' statuses. */
export function runStatusOf(statuses: string[]): RunStatus {
  if (statuses.some((s) => !terminalStatuses.includes(s as never))) return 'running';
  if (statuses.every((s) => s === 'finished')) return 'finished';
  if (statuses.some((s) => s === 'failed')) return 'failed';
  return 'cancelled';
}

export class RunService {
  constructor(
    private readonly deps: {
      db: Knex;
      clock: Clock;
      log: Logger;
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

  private batchOf(regionId: string): BatchBackend {
    const backend = this.deps.batches.get(regionId);
    if (!backend) throw new JobFailure(`region ${regionId} has no backend for batch work`, false);
    return backend;
  }

  private workDir(jobId: string, attempt: number): string {
    return join(this.deps.dataDir, 'work', jobId, `attempt-${attempt}`);
  }

  private batchId(jobId: string, attempt: number): string {
    return `${jobId}-a${attempt}`;
  }

  /**
   * How many times the job was started, over every retry of its run (attempts start again from 0
   * when a run is retried): numbers its executions, so each keeps its own log and work directory.
   */
  private async executions(jobId: string, db: Knex = this.deps.db): Promise<number> {
    const row = (await db('job_events')
      .where({ job_id: jobId, type: 'running' })
      .count({ n: '*' })
      .first()) as { n: number | string } | undefined;
    return Number(row?.n ?? 0);
  }

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
    await this.deps.projects.access(principal, projectId, 'viewer');
    return this.find(projectId, runId);
  }

  /** Whoever started a run, the project's owners and administrators may act on it. */
  private async actionable(principal: Principal, projectId: string, runId: string): Promise<RunRecord> {
    return this.deps.projects.findChangeable(
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
    await this.deps.projects.access(principal, projectId, 'viewer');
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
    const run = await this.actionable(principal, projectId, runId);
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
    const run = await this.actionable(principal, projectId, runId);
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
    const run = await this.actionable(principal, projectId, runId);
    const batch = this.deps.batches.get(await projectRegion(this.deps.db, projectId));
    if (run.status === 'running') throw conflict(`run ${runId} is running; cancel it first`);
    const jobs = await jobsOfRun(db, runId);
    const executions = await Promise.all(jobs.map((job) => this.executions(job.id)));
    await db.transaction(async (trx) => {
      const produced = (await trx('files').where({ run_id: runId }).select('id', 'size')) as {
        id: string;
        size: number | string;
      }[];
      const readers = await q.activeRunsReading(
        trx,
        produced.map((f) => f.id),
      );
      if (readers.length > 0) throw conflict(`run ${readers[0]} is using files this run produced`);
      await trx('files').where({ run_id: runId }).delete();
      const bytes = produced.reduce((sum, f) => sum + Number(f.size), 0);
      if (bytes > 0) await adjustStorageUsage(trx, projectId, -bytes, iso(clock()));
      await q.deleteRun(trx, runId);
    });
    for (const [i, job] of jobs.entries()) {
      for (let attempt = 1; attempt <= (executions[i] ?? 0); attempt++) {
        await batch?.remove(this.batchId(job.id, attempt)).catch(() => undefined);
      }
      await rm(join(this.deps.dataDir, 'work', job.id), { recursive: true, force: true });
    }
  }

  async *events(
    principal: Principal,
    projectId: string,
    runId: string,
    afterSeq: number,
    follow: boolean,
    signal: AbortSignal,
  ): AsyncIterable<string> {
    await this.visible(principal, projectId, runId);
    yield* streamEvents({
      read: (after) => listEvents(this.deps.db, 'run', runId, after, 100),
      ended: async () => (await q.findRun(this.deps.db, runId))?.status !== 'running',
      topic: topics.run(runId),
      notifier: this.deps.notifier,
      afterSeq,
      follow,
      signal,
    });
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
    const last = Math.max(1, await this.executions(job.id));
    const first = options.tail !== undefined ? last : 1;
    for (let attempt = first; attempt <= last; attempt++) {
      if (last > 1 && options.tail === undefined) yield `--- attempt ${attempt} ---\n`;
      const following = options.follow && attempt === last && !terminalStatuses.includes(job.status);
      if (following) await this.untilStarted(batch, job.id, attempt, options.signal);
      yield* batch.logs(this.batchId(job.id, attempt), {
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
      if ((await batch.status(this.batchId(jobId, execution))) !== null) return;
      const job = await this.deps.scheduler.find(jobId);
      if (!job || job.status !== 'running') return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  // ---- The job kind -----------------------------------------------------------------------------

  /** The scheduler's handler of run tasks. */
  taskHandler(): JobHandler {
    return {
      run: (job, ctx) => this.runTask(job, ctx),
      commit: (trx, job, result) => this.commitTask(trx, job, result as TaskResult),
      onTransition: (trx, job, transition) => this.onTaskTransition(trx, job, transition),
    };
  }

  private async taskOf(job: JobRecord, db: Knex = this.deps.db) {
    const payload = job.payload as unknown as TaskPayload;
    const run = await q.findRun(db, payload.runId);
    if (!run) throw new JobFailure(`run ${payload.runId} is gone`, false);
    const task = run.tasks[payload.taskIndex];
    if (!task) throw new JobFailure(`run ${run.id} has no task ${payload.taskIndex}`, false);
    return { run, task, taskIndex: payload.taskIndex };
  }

  /** The files a task works on: the run's inputs for the first, the previous job's outputs after. */
  private async inputsOf(run: RunRecord, job: JobRecord): Promise<FileRecord[]> {
    const { db } = this.deps;
    const ids = job.dependsOn
      ? ((await q.outputsByJob(db, run.id)).get(job.dependsOn) ?? [])
      : await q.runInputIds(db, run.id);
    return files.findFiles(db, run.projectId, ids).then((found) => {
      const byId = new Map(found.map((f) => [f.id, f]));
      return ids.flatMap((id) => byId.get(id) ?? []);
    });
  }

  private async runTask(job: JobRecord, ctx: RunContext): Promise<TaskResult> {
    const { modules } = this.deps;
    const { run, task } = await this.taskOf(job);
    const batch = this.batchOf(await projectRegion(this.deps.db, run.projectId));
    const onCluster = batch.type === 'kubernetes';
    let resolved;
    try {
      resolved = await modules.function(task.module, task.function);
    } catch {
      throw new JobFailure(`${task.module}.${task.function} is no longer loaded`, false);
    }
    const { fn, module } = resolved;
    if (onCluster ? !fn.run.cluster : !fn.run.local) {
      const where = onCluster ? 'cluster' : 'local';
      throw new JobFailure(`${task.module}.${task.function} has no ${where} run spec for this region`, false);
    }
    const inputs = await this.inputsOf(run, job);
    const problems = inputProblems(
      fn,
      inputs.map((f) => ({ name: f.name, media_type: f.mediaType })),
    );
    if (problems.length > 0) {
      throw new JobFailure(
        `the input files do not suit ${task.module}.${task.function}: ${problems.join('; ')}`,
        false,
      );
    }
    const names = distinctFileNames(inputs.map((f) => f.name));
    const execution = await this.executions(job.id);
    const workDir = this.workDir(job.id, execution);
    await rm(workDir, { recursive: true, force: true });
    await prepareWorkDir(
      workDir,
      {
        function: task.function,
        options: task.options,
        files: inputs.map((f, i) => ({
          name: names[i] as string,
          media_type: f.mediaType,
          tags: tagMap(f.tags),
          sha256: f.sha256,
        })),
      },
      inputs.map((f, i) => ({ name: names[i] as string, path: this.deps.files.store.path(f.sha256) })),
    );

    const batchId = this.batchId(job.id, execution);
    await batch.start({
      jobId: batchId,
      projectId: run.projectId,
      // On a cluster the work directory is the job's sub-path of the region's shared work volume,
      // which Atrium mounts at <data dir>/work.
      run: onCluster
        ? {
            local: null,
            cluster: await clusterRunSpec(
              fn,
              module.stored.dir,
              relative(join(this.deps.dataDir, 'work'), workDir),
            ),
          }
        : { local: localRunSpec(fn, module.stored.dir, workDir), cluster: null },
      resources: functionResources(fn),
      timeoutMs: functionTimeoutMs(fn),
      labels: { job: job.id, run: run.id },
    });
    const stop = () => void batch.cancel(batchId);
    ctx.signal.addEventListener('abort', stop, { once: true });
    const status = await waitForBatch(batch, batchId, ctx.signal);
    ctx.signal.removeEventListener('abort', stop);
    if (ctx.signal.aborted) throw new JobFailure('stopped', true);
    if (!status || status.phase !== 'succeeded') {
      const tail = await batchLogTail(batch, batchId);
      throw new JobFailure(`${task.module}.${task.function} ${status?.message ?? 'vanished'}`, false, {
        exit_code: status?.exitCode ?? null,
        log_tail: tail,
      });
    }
    let output;
    try {
      output = await readOutput(workDir, { output: fn.output, inputs: names });
    } catch (error) {
      if (error instanceof ContractError) {
        throw new JobFailure(
          `${task.module}.${task.function} broke the output contract: ${error.message}`,
          false,
        );
      }
      throw error;
    }
    const byName = new Map(names.map((name, i) => [name, inputs[i] as FileRecord]));
    const outputs: TaskResult['outputs'] = [];
    for (const file of output.files) {
      outputs.push({
        fileId: newId('file'),
        name: file.name,
        mediaType: file.media_type,
        tags: tagStrings({ ...output.tags, ...file.tags }),
        parentId: file.parent ? (byName.get(file.parent)?.id ?? null) : null,
        staged: await this.deps.files.stageOutput(file.path),
      });
    }
    ctx.log.info({ outputs: outputs.length }, 'task finished');
    return { outputs, tags: output.tags };
  }

  private async commitTask(trx: Knex.Transaction, job: JobRecord, result: TaskResult): Promise<void> {
    const { run } = await this.taskOf(job, trx);
    for (const output of result.outputs) {
      await this.deps.files.commitOutput(trx, output.staged, {
        id: output.fileId,
        projectId: run.projectId,
        name: output.name,
        mediaType: output.mediaType,
        tags: output.tags,
        parentId: output.parentId,
        runId: run.id,
        jobId: job.id,
        createdBy: run.createdBy,
      });
    }
  }

  /** Keeps the run's status, event log and operation in step with its jobs, in the same transaction. */
  private async onTaskTransition(
    trx: Knex.Transaction,
    job: JobRecord,
    transition: Transition,
  ): Promise<void> {
    if (!job.runId) return;
    const run = await q.findRun(trx, job.runId);
    if (!run) return;
    const task = run.tasks[job.taskIndex ?? 0];
    const label = `task ${job.taskIndex ?? 0} (${task?.module}.${task?.function})`;
    await appendEvent(trx, 'run', run.id, {
      at: transition.at,
      type: `job-${transition.to}`,
      message: `${label}: ${transition.message}`,
      data: { job_id: job.id, task_index: job.taskIndex, from: transition.from, to: transition.to },
    });
    const jobs = await jobsOfRun(trx, run.id);
    const status = runStatusOf(jobs.map((j) => j.status));
    const finished = jobs.filter((j) => j.status === 'finished').length;
    const notify = () => this.deps.notifier.notify(topics.run(run.id));
    void trx.executionPromise?.then(notify, () => undefined);
    if (terminalStatuses.includes(transition.to)) {
      void trx.executionPromise?.then(
        () => rm(join(this.deps.dataDir, 'work', job.id), { recursive: true, force: true }),
        () => undefined,
      );
    }
    if (status !== run.status) {
      await q.updateRun(
        trx,
        run.id,
        { status, finishedAt: status === 'running' ? null : transition.at },
        transition.at,
      );
      await appendEvent(trx, 'run', run.id, {
        at: transition.at,
        type: `run-${status}`,
        message: `run ${status === 'running' ? 'running again' : status}`,
        data: { status },
      });
    }
    if (!run.operationId) return;
    if (status === 'running') {
      if (transition.to === 'finished') {
        await this.deps.operations.progressIn(
          trx,
          run.operationId,
          Math.floor((100 * finished) / jobs.length),
          `${finished} of ${jobs.length} tasks finished`,
        );
      }
      return;
    }
    const outputs = await trx('files').where({ run_id: run.id }).select('id');
    if (status === 'finished') {
      await this.deps.operations.finishIn(trx, run.operationId, {
        status: 'succeeded',
        message: `all ${jobs.length} tasks finished`,
        result: { run_id: run.id, output_file_ids: (outputs as { id: string }[]).map((o) => o.id) },
      });
    } else {
      const failedJob = jobs.find((j) => j.status === 'failed');
      const detail =
        status === 'failed'
          ? `task ${failedJob?.taskIndex ?? '?'} failed: ${String(failedJob?.error?.message ?? 'unknown error')}`
          : `run ${run.id} was cancelled`;
      await this.deps.operations.finishIn(trx, run.operationId, {
        status: status === 'failed' ? 'failed' : 'cancelled',
        message: detail,
        error: operationProblem(status === 'failed' ? 'task-failed' : 'cancelled', detail, {
          run_id: run.id,
          ...(failedJob ? { job_id: failedJob.id, job_error: failedJob.error } : {}),
        }),
      });
    }
  }
}
