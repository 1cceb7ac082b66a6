// The job kind that executes pipeline tasks: each run task is a scheduler job that runs its module
// function through the execution contract on the region's batch backend (runBatchJob), records its
// outputs with their lineage in the transaction that finishes the job, and keeps the run's status,
// events and operation in step with its jobs. The API over runs is RunService (runs.ts).
import { rm } from 'node:fs/promises';
import type { Knex } from 'knex';
import type { BatchBackend } from '../backends/cluster/types.js';
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
  type Transition,
} from '../backends/scheduler/scheduler.js';
import { appendEvent } from '../db/events.js';
import * as files from '../db/files.js';
import { countExecutions, jobsOfRun } from '../db/jobs.js';
import { projectRegion } from '../db/projects.js';
import * as q from '../db/runs.js';
import type { RunRecord, RunStatus } from '../db/runs.js';
import { newId } from '../ids.js';
import { batchExecution, jobWorkDir, runBatchJob } from './batch-jobs.js';
import type { FileRecord, FileService } from './files.js';
import type { ModuleService } from './modules.js';
import { topics, type Notifier } from '../notifier.js';
import { operationProblem, type OperationService } from './operations.js';

export const runTaskKind = 'run-task';

export interface TaskPayload {
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

export class RunTasks {
  constructor(
    private readonly deps: {
      db: Knex;
      dataDir: string;
      modules: ModuleService;
      files: FileService;
      operations: OperationService;
      notifier: Notifier;
      /** Where run-to-completion work runs, per region. */
      batches: Map<string, BatchBackend>;
    },
  ) {}

  /** The scheduler's handler of run tasks. */
  handler(): JobHandler {
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
    const { modules, db, dataDir } = this.deps;
    const { run, task } = await this.taskOf(job);
    const regionId = await projectRegion(db, run.projectId);
    const backend = this.deps.batches.get(regionId);
    if (!backend) throw new JobFailure(`region ${regionId} has no backend for batch work`, false);
    const images = backend.capabilities.runs === 'image';
    let resolved;
    try {
      resolved = await modules.function(task.module, task.function);
    } catch {
      throw new JobFailure(`${task.module}.${task.function} is no longer loaded`, false);
    }
    const { fn, module } = resolved;
    if (images ? !fn.run.cluster : !fn.run.local) {
      const where = images ? 'cluster' : 'local';
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
    const execution = batchExecution(dataDir, job.id, await countExecutions(db, job.id));
    const output = await runBatchJob({
      backend,
      execution,
      signal: ctx.signal,
      what: `${task.module}.${task.function}`,
      prepare: async (workDir) => {
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
      },
      workload: {
        projectId: run.projectId,
        // With images, the work directory is the execution's sub-path of the region's shared work
        // volume, which Atrium mounts at <data dir>/work.
        run: images
          ? {
              local: null,
              cluster: await clusterRunSpec(fn, module.stored.dir, execution.workSubPath),
            }
          : { local: localRunSpec(fn, module.stored.dir, execution.workDir), cluster: null },
        resources: functionResources(fn),
        timeoutMs: functionTimeoutMs(fn),
        labels: { job: job.id, run: run.id },
      },
      // Its log stays readable (GET …/jobs/{id}/logs) until the run is deleted.
      afterwards: 'keep',
      collect: async (workDir) => {
        try {
          return await readOutput(workDir, { output: fn.output, inputs: names });
        } catch (error) {
          if (error instanceof ContractError) {
            throw new JobFailure(
              `${task.module}.${task.function} broke the output contract: ${error.message}`,
              false,
            );
          }
          throw error;
        }
      },
    });
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
        () => rm(jobWorkDir(this.deps.dataDir, job.id), { recursive: true, force: true }),
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
    const outputs = await files.filesOfRun(trx, run.id);
    if (status === 'finished') {
      await this.deps.operations.finishIn(trx, run.operationId, {
        status: 'succeeded',
        message: `all ${jobs.length} tasks finished`,
        result: { run_id: run.id, output_file_ids: outputs.map((o) => o.id) },
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
