// The job kind that executes benchmark runs: the plan runner (run-plan.js) measures on the region's
// batch backend (runBatchJob), its progress per metric follows the operation, and its scores are
// recorded in the transaction that finishes the job. The API is BenchmarkService (benchmarks.ts).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import type { BatchBackend } from '../backends/cluster/types.js';
import type { PlanResults, ProgressEvent } from '../backends/benchmark/run-plan.js';
import {
  JobFailure,
  type JobHandler,
  type JobRecord,
  type RunContext,
  type Transition,
} from '../backends/scheduler/scheduler.js';
import * as q from '../db/benchmarks.js';
import type { BenchmarkRunRecord } from '../db/benchmarks.js';
import { countExecutions } from '../db/jobs.js';
import { projectRegion } from '../db/projects.js';
import { repoRoot } from '../paths.js';
import { batchExecution, runBatchJob } from './batch-jobs.js';
import { operationProblem, type OperationService } from './operations.js';

export const benchmarkRunKind = 'benchmark-run';
const runPlanScript = join(repoRoot, 'dist', 'src', 'backends', 'benchmark', 'run-plan.js');

export class BenchmarkJobs {
  constructor(
    private readonly deps: {
      db: Knex;
      clock: Clock;
      log: Logger;
      dataDir: string;
      operations: OperationService;
      /** Where run-to-completion work runs, per region. */
      batches: Map<string, BatchBackend>;
      /** The image of Atrium that runs plans on clusters. */
      clusterImage: string | null;
    },
  ) {}

  /** The scheduler's handler of benchmark runs. */
  handler(): JobHandler {
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
    const { db, dataDir } = this.deps;
    const run = await this.runOf(job);
    const backend = this.deps.batches.get(await projectRegion(db, run.projectId));
    if (!backend) throw new JobFailure(`the region of project ${run.projectId} has no batch backend`, false);
    const execution = batchExecution(dataDir, job.id, await countExecutions(db, job.id));
    const onCluster = run.runner.startsWith('cluster:');
    const results = await runBatchJob({
      backend,
      execution,
      signal: ctx.signal,
      what: 'the benchmark runner',
      prepare: async (workDir) => {
        await mkdir(join(workDir, 'output'), { recursive: true });
        await writeFile(
          join(workDir, 'input.json'),
          JSON.stringify({ function: 'run-plan', options: { plan: run.plan }, files: [] }),
        );
      },
      workload: {
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
                workSubPath: execution.workSubPath,
              },
            }
          : {
              local: {
                command: [process.execPath, runPlanScript, execution.workDir],
                cwd: execution.workDir,
                env: {},
              },
              cluster: null,
            },
        resources: { cpuMillis: 1000, memoryBytes: 1024 * 1024 * 1024, gpu: 0 },
        timeoutMs: 60 * 60_000,
        labels: { job: job.id, 'benchmark-run': run.id },
      },
      // Progress per metric comes as JSON lines on the runner's stdout.
      alongside: (id, signal) => this.followProgress(backend, id, run, signal),
      collect: async (workDir) =>
        JSON.parse(await readFile(join(workDir, 'output', 'results.json'), 'utf8')) as PlanResults,
      // The results (or the failure) are in the job's record: this execution's leftovers go.
      afterwards: 'remove',
    });
    return { results };
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
        results,
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
