// The one protocol for batch work a scheduler job runs (pipeline tasks, benchmark runs, and what
// comes next): prepare the execution's work directory → start the workload on the region's batch
// backend → an abort of the job cancels it → wait for its end → on failure, a JobFailure with the
// log's tail → collect the outcome → clean up.
import { mkdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  batchLogTail,
  waitForBatch,
  type BatchBackend,
  type BatchWorkloadSpec,
} from '../backends/cluster/types.js';
import { JobFailure } from '../backends/scheduler/scheduler.js';

/** One execution of a job: the n-th time it was started (each keeps its own log and directory). */
export interface BatchExecution {
  /** What the batch backend knows it by. */
  id: string;
  /** The work directory, on Atrium's side. */
  workDir: string;
  /** The same directory as a sub-path of the region's work volume (`<data dir>/work`). */
  workSubPath: string;
}

export function batchExecution(dataDir: string, jobId: string, execution: number): BatchExecution {
  return {
    id: `${jobId}-a${execution}`,
    workDir: join(dataDir, 'work', jobId, `attempt-${execution}`),
    workSubPath: join(jobId, `attempt-${execution}`),
  };
}

/** The directory of every execution of a job. */
export const jobWorkDir = (dataDir: string, jobId: string) => join(dataDir, 'work', jobId);

export interface BatchJob<T> {
  backend: BatchBackend;
  execution: BatchExecution;
  /** The job's signal: its abort cancels the workload. */
  signal: AbortSignal;
  /** Who failed, for the failure's message ("text.upper", "the benchmark runner"). */
  what: string;
  /** Writes the inputs into the execution's (fresh, empty) work directory. */
  prepare(workDir: string): Promise<void>;
  /** The workload to start once the directory is ready. */
  workload: Omit<BatchWorkloadSpec, 'jobId'>;
  /** Runs beside the workload until it ends (for example following its progress); never throws. */
  alongside?(id: string, signal: AbortSignal): Promise<void>;
  /** Reads the outcome of a successful workload from its work directory. */
  collect(workDir: string): Promise<T>;
  /**
   * `keep`: the workload and its directory stay after the outcome (their log is read later; they
   * go with what they belong to). `remove`: both go as soon as the outcome is known.
   */
  afterwards: 'keep' | 'remove';
}

export async function runBatchJob<T>(job: BatchJob<T>): Promise<T> {
  const { backend, execution, signal } = job;
  await rm(execution.workDir, { recursive: true, force: true });
  await mkdir(execution.workDir, { recursive: true });
  await job.prepare(execution.workDir);
  await backend.start({ jobId: execution.id, ...job.workload });
  const stop = () => void backend.cancel(execution.id).catch(() => undefined);
  signal.addEventListener('abort', stop, { once: true });
  try {
    const alongside = job.alongside?.(execution.id, signal) ?? Promise.resolve();
    const status = await waitForBatch(backend, execution.id, signal);
    await alongside;
    if (signal.aborted) throw new JobFailure('stopped', true);
    if (!status || status.phase !== 'succeeded') {
      throw new JobFailure(`${job.what} ${status?.message ?? 'vanished'}`, false, {
        exit_code: status?.exitCode ?? null,
        log_tail: await batchLogTail(backend, execution.id).catch(() => []),
      });
    }
    return await job.collect(execution.workDir);
  } finally {
    signal.removeEventListener('abort', stop);
    if (job.afterwards === 'remove') {
      if (signal.aborted) await backend.cancel(execution.id).catch(() => undefined);
      await backend.remove(execution.id).catch(() => undefined);
      await rm(execution.workDir, { recursive: true, force: true });
      // The job's directory, unless another execution (after a lost lease) is using it.
      await rmdir(join(execution.workDir, '..')).catch(() => undefined);
    }
  }
}
