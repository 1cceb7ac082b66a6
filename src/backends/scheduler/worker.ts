// A worker: claims jobs up to its concurrency, runs them with their handler, renews their leases,
// and reaps the jobs of workers that died. Inside the API process by default; `atrium worker` runs
// one on its own. Stopping lets running jobs finish for a grace period, then gives them back.
import type { Logger } from 'pino';
import { hostname } from 'node:os';
import { randomBase62 } from '../../ids.js';
import type { Notifier } from '../../notifier.js';
import {
  JobFailure,
  jobsTopic,
  jobTopic,
  type AbortReason,
  type Claim,
  type Scheduler,
} from './scheduler.js';

export interface WorkerOptions {
  concurrency: number;
  pollMs: number;
  /** Only these kinds (default: every registered kind). */
  kinds?: string[];
  /** A name for logs and job history; unique by default. */
  id?: string;
}

const abandonAfterMs = 5000;

export function workerId(): string {
  return `${hostname()}/${process.pid}/${randomBase62(6)}`;
}

export class Worker {
  readonly id: string;
  private readonly running = new Map<
    string,
    { claim: Claim; controller: AbortController; settled: Promise<void> }
  >();
  private loop: Promise<void> | null = null;
  private stopping = false;
  private readonly wakeUp = new AbortController();

  constructor(
    private readonly deps: { scheduler: Scheduler; notifier: Notifier; log: Logger },
    private readonly options: WorkerOptions,
  ) {
    this.id = options.id ?? workerId();
  }

  start(): void {
    if (this.loop || this.options.concurrency < 1) return;
    this.loop = this.run().catch((err: unknown) =>
      this.deps.log.error({ err, worker: this.id }, 'worker stopped'),
    );
  }

  /** How many jobs it runs now. */
  get busy(): number {
    return this.running.size;
  }

  private async run(): Promise<void> {
    const { scheduler, notifier, log } = this.deps;
    const leaseMs = scheduler.options.leaseMs;
    let lastReap = 0;
    while (!this.stopping) {
      if (Date.now() - lastReap > leaseMs / 2) {
        lastReap = Date.now();
        await scheduler
          .reapExpired()
          .catch((err: unknown) => log.warn({ err }, 'reaping expired jobs failed'));
      }
      let claimed = false;
      if (this.running.size < this.options.concurrency) {
        try {
          const claim = await scheduler.claim(this.id, this.options.kinds);
          if (claim) {
            claimed = true;
            this.execute(claim);
          }
        } catch (err) {
          log.warn({ err, worker: this.id }, 'claiming a job failed');
        }
      }
      if (claimed) continue;
      // Idle or full: wait for a new job, a finished one, or the poll interval.
      await notifier.wait(jobsTopic, this.options.pollMs, this.wakeUp.signal);
    }
  }

  private execute(claim: Claim): void {
    const { scheduler, notifier, log } = this.deps;
    const controller = new AbortController();
    const job = claim.job;
    const jobLog = log.child({ job: job.id, kind: job.kind, attempt: job.attempts });
    const abort = (reason: AbortReason) => {
      if (!controller.signal.aborted) controller.abort(reason);
    };
    // Heartbeats renew the lease and carry cancellation requests; a cancel made in this process
    // is seen at once through the notifier.
    const beat = async () => {
      const state = await scheduler.heartbeat(claim).catch((err: unknown) => {
        jobLog.warn({ err }, 'heartbeat failed');
        return 'ok' as const;
      });
      if (state === 'cancel') abort('cancel');
      if (state === 'lost') abort('lease-lost');
    };
    const heartbeat = setInterval(() => void beat(), Math.max(50, Math.floor(scheduler.options.leaseMs / 3)));
    const watchCancel = async () => {
      while (!controller.signal.aborted) {
        // Only a notification calls for a check; the interval does the regular renewals.
        const notified = await notifier.wait(jobTopic(job.id), scheduler.options.leaseMs, controller.signal);
        if (notified && !controller.signal.aborted) await beat();
      }
    };
    void watchCancel();

    const settled = (async () => {
      let outcome: { result: Record<string, unknown> } | { error: unknown };
      try {
        const handler = scheduler.handler(job.kind);
        outcome = {
          result: await handler.run(job, {
            signal: controller.signal,
            workerId: this.id,
            attempt: job.attempts,
            log: jobLog,
          }),
        };
      } catch (error) {
        outcome = { error };
      }
      clearInterval(heartbeat);
      const reason = controller.signal.aborted ? (controller.signal.reason as AbortReason) : null;
      controller.abort('lease-lost');
      try {
        if (reason === 'cancel') await scheduler.cancelled(claim);
        else if (reason === 'shutdown') await scheduler.release(claim);
        else if (reason === 'lease-lost') jobLog.warn('lease lost: the job was given to another worker');
        else if ('result' in outcome) await scheduler.complete(claim, outcome.result);
        else await scheduler.fail(claim, asFailure(outcome.error));
      } catch (err) {
        // The lease will expire and the job be reaped: nothing is lost.
        jobLog.error({ err }, 'recording the outcome of a job failed');
      }
    })().finally(() => {
      this.running.delete(job.id);
      notifier.notify(jobsTopic);
    });
    this.running.set(job.id, { claim, controller, settled });
  }

  /**
   * Stops claiming; running jobs get `graceMs` to finish, then are aborted and given back to the
   * queue (their attempt not counted). Resolves when every job is recorded.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    this.wakeUp.abort();
    await this.loop;
    const all = () => Promise.all([...this.running.values()].map((r) => r.settled));
    if (this.running.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([all(), new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
    }
    for (const { controller } of this.running.values()) {
      if (!controller.signal.aborted) controller.abort('shutdown' satisfies AbortReason);
    }
    // A handler deaf to its signal is not waited for: its lease runs out and the job is reaped.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      all(),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, abandonAfterMs))),
    ]);
    clearTimeout(timer);
  }
}

function asFailure(error: unknown): JobFailure {
  if (error instanceof JobFailure) return error;
  return new JobFailure(error instanceof Error ? error.message : String(error), true);
}
