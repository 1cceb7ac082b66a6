// A worker: claims jobs up to its concurrency, runs them with their handler, renews their leases,
// and reaps the jobs of workers that died. Inside the API process by default; `atrium worker` runs
// one on its own. Stopping lets running jobs finish for a grace period, then gives them back.
//
// Round trips are shared: a round of the worker's loop records the jobs that ended since the last
// one and fills the slots they freed (and any others) with one claim, in one transaction; one timer
// renews every lease. The worker sleeps until a job may be waiting: woken in-process by enqueues and
// ends, from other processes by PostgreSQL's NOTIFY or SQLite's data_version (jobs.ts,
// listenForJobNotices), else by a poll that starts quick after work and slows to `pollMs` while the
// queue stays empty.
import type { Logger } from 'pino';
import { hostname } from 'node:os';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { randomBase62 } from '../../ids.js';
import type { Notifier } from '../../notifier.js';
import {
  JobFailure,
  jobsTopic,
  jobTopic,
  type AbortReason,
  type Claim,
  type Completion,
  type Scheduler,
} from './scheduler.js';

export interface WorkerOptions {
  concurrency: number;
  /** The longest wait between two looks at the queue when nothing wakes the worker. */
  pollMs: number;
  /** Only these kinds (default: every registered kind). */
  kinds?: string[];
  /** A name for logs and job history; unique by default. */
  id?: string;
}

const abandonAfterMs = 5000;
/** The most jobs one claim or one completion transaction takes. */
const batchLimit = 64;
/** The first wait after the queue ran dry; it doubles while it stays dry, up to pollMs. */
const quickPollMs = 5;

export function workerId(): string {
  return `${hostname()}/${process.pid}/${randomBase62(6)}`;
}

interface Running {
  claim: Claim;
  controller: AbortController;
  settled: Promise<void>;
}

interface PendingCompletion extends Completion {
  resolve(recorded: boolean): void;
  reject(error: unknown): void;
}

export class Worker {
  readonly id: string;
  private readonly running = new Map<string, Running>();
  private loop: Promise<void> | null = null;
  private stopping = false;
  private readonly wakeUp = new AbortController();
  /** Set by any wake-up since the loop last looked at the queue, so that none is missed. */
  private woken = false;
  private wakeLoop: (() => void) | null = null;
  private heartbeat: NodeJS.Timeout | undefined;
  private renewing = false;
  private readonly completions: PendingCompletion[] = [];
  private recording = false;
  private stopListening: (() => Promise<void>) | null = null;

  constructor(
    private readonly deps: { scheduler: Scheduler; notifier: Notifier; log: Logger },
    private readonly options: WorkerOptions,
  ) {
    this.id = options.id ?? workerId();
  }

  start(): void {
    if (this.loop || this.options.concurrency < 1) return;
    this.stopListening = this.deps.scheduler.listen();
    this.hearWakeUps();
    const { leaseMs } = this.deps.scheduler.options;
    this.heartbeat = setInterval(() => void this.renewLeases(), Math.max(50, Math.floor(leaseMs / 3)));
    this.heartbeat.unref();
    this.loop = this.run().catch((err: unknown) =>
      this.deps.log.error({ err, worker: this.id }, 'worker stopped'),
    );
  }

  /** How many jobs it runs now. */
  get busy(): number {
    return this.running.size;
  }

  /** Keeps one wait on the jobs topic armed while the worker runs; each notification sets `woken`. */
  private hearWakeUps(): void {
    if (this.stopping) return;
    void this.deps.notifier.wait(jobsTopic, 2 ** 31 - 1, this.wakeUp.signal).then((notified) => {
      if (!notified) return;
      this.woken = true;
      this.wakeLoop?.();
      this.hearWakeUps();
    });
  }

  /** Resolves when woken (at once if it was since the last look) or after `ms`. */
  private async sleep(ms: number): Promise<void> {
    if (!this.woken && !this.stopping) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.wakeLoop = resolve;
        timer = setTimeout(resolve, ms);
        timer.unref();
      });
      clearTimeout(timer);
      this.wakeLoop = null;
    }
    // Jobs that end together free their slots together: let them, then claim for all at once.
    await nextTurn();
  }

  private async run(): Promise<void> {
    const { scheduler, log } = this.deps;
    const leaseMs = scheduler.options.leaseMs;
    let lastReap = 0;
    let idleMs = quickPollMs;
    while (!this.stopping) {
      if (Date.now() - lastReap > leaseMs / 2) {
        lastReap = Date.now();
        await scheduler
          .reapExpired()
          .catch((err: unknown) => log.warn({ err }, 'reaping expired jobs failed'));
      }
      const batch = this.completions.splice(0, batchLimit);
      // The slots of the jobs in the batch are free once they are recorded.
      const wanted = Math.min(batchLimit, this.options.concurrency - this.running.size + batch.length);
      this.woken = false;
      if (batch.length === 0 && wanted < 1) {
        // Full: only a job ending (which wakes the worker) makes room; the poll is the safety net.
        await this.sleep(this.options.pollMs);
        continue;
      }
      const claims = await this.recordAndClaim(batch, wanted);
      for (const claim of claims) this.execute(claim);
      if (claims.length > 0) idleMs = quickPollMs;
      // Jobs ended meanwhile, or a full batch with slots to spare (more may be waiting).
      if (this.completions.length > 0 || (claims.length === wanted && wanted > 0)) continue;
      if (claims.length < wanted) {
        // The queue ran dry: wait for a wake-up, looking again sooner while work is recent.
        await this.sleep(Math.min(idleMs, this.options.pollMs));
        idleMs = Math.min(idleMs * 2, this.options.pollMs);
      }
    }
    this.flushCompletions();
  }

  /**
   * Records the batch's jobs finished and claims up to `wanted` jobs, in one transaction: a
   * worker's round costs one commit. Each job of the batch leaves the running ones as it is
   * recorded (its slot is the claim's to fill).
   */
  private async recordAndClaim(batch: PendingCompletion[], wanted: number): Promise<Claim[]> {
    try {
      const { outcomes, claims } = await this.deps.scheduler.completeAndClaim(batch, {
        workerId: this.id,
        limit: wanted,
        kinds: this.options.kinds,
      });
      this.settle(batch, outcomes);
      return claims;
    } catch (err) {
      if (batch.length === 0) this.deps.log.warn({ err, worker: this.id }, 'claiming jobs failed');
      this.settle(
        batch,
        batch.map(() => ({ status: 'rejected', reason: err })),
      );
      return [];
    }
  }

  private settle(batch: PendingCompletion[], outcomes: PromiseSettledResult<boolean>[]): void {
    batch.forEach((pending, i) => {
      this.running.delete(pending.claim.job.id);
      const outcome = outcomes[i];
      if (outcome?.status === 'fulfilled') pending.resolve(outcome.value);
      else pending.reject(outcome?.reason);
    });
  }

  /** Renews the lease of every running job in one statement, and stops those cancelled or lost. */
  private async renewLeases(): Promise<void> {
    if (this.renewing || this.running.size === 0) return;
    this.renewing = true;
    const running = [...this.running.values()];
    try {
      const states = await this.deps.scheduler.heartbeatAll(running.map((r) => r.claim));
      for (const { claim, controller } of running) {
        const state = states.get(claim.job.id);
        if (controller.signal.aborted) continue;
        if (state === 'cancel') controller.abort('cancel' satisfies AbortReason);
        if (state === 'lost') controller.abort('lease-lost' satisfies AbortReason);
      }
    } catch (err) {
      this.deps.log.warn({ err, worker: this.id }, 'heartbeat failed');
    } finally {
      this.renewing = false;
    }
  }

  /**
   * Records a job finished with the others that end about now, in one transaction: the loop's
   * next round, which claims for the slots they free; once the worker is stopping, a transaction
   * of their own.
   */
  private recordFinished(claim: Claim, result: Record<string, unknown>): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.completions.push({ claim, result, resolve, reject });
      if (this.stopping) {
        this.flushCompletions();
      } else {
        this.woken = true;
        this.wakeLoop?.();
      }
    });
  }

  /** Records the completions waiting, without claiming (the loop has ended). */
  private flushCompletions(): void {
    if (this.recording || this.completions.length === 0) return;
    this.recording = true;
    setImmediate(() => void this.recordCompletions());
  }

  private async recordCompletions(): Promise<void> {
    while (this.completions.length > 0) {
      const batch = this.completions.splice(0, batchLimit);
      try {
        this.settle(batch, await this.deps.scheduler.completeAll(batch));
      } catch (err) {
        this.settle(
          batch,
          batch.map(() => ({ status: 'rejected', reason: err })),
        );
      }
    }
    this.recording = false;
  }

  private execute(claim: Claim): void {
    const { scheduler, notifier, log } = this.deps;
    const controller = new AbortController();
    const job = claim.job;
    const jobLog = log.child({ job: job.id, kind: job.kind, attempt: job.attempts });
    // The worker's timer renews the lease; a cancel made in this process, or announced by
    // PostgreSQL, calls for a look at once.
    const watchCancel = async () => {
      while (!controller.signal.aborted) {
        const notified = await notifier.wait(jobTopic(job.id), scheduler.options.leaseMs, controller.signal);
        if (!notified || controller.signal.aborted) continue;
        const state = await scheduler.heartbeat(claim).catch((err: unknown) => {
          jobLog.warn({ err }, 'heartbeat failed');
          return 'ok' as const;
        });
        if (controller.signal.aborted) break;
        if (state === 'cancel') controller.abort('cancel' satisfies AbortReason);
        if (state === 'lost') controller.abort('lease-lost' satisfies AbortReason);
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
      const reason = controller.signal.aborted ? (controller.signal.reason as AbortReason) : null;
      controller.abort('lease-lost');
      try {
        if (reason === 'cancel') await scheduler.cancelled(claim);
        else if (reason === 'shutdown') await scheduler.release(claim);
        else if (reason === 'lease-lost') jobLog.warn('lease lost: the job was given to another worker');
        else if ('result' in outcome) await this.recordFinished(claim, outcome.result);
        else await scheduler.fail(claim, asFailure(outcome.error));
      } catch (err) {
        // The lease will expire and the job be reaped: nothing is lost.
        jobLog.error({ err }, 'recording the outcome of a job failed');
      }
    })().finally(() => {
      // A job recorded by the loop's round left already, its slot filled by that round's claim.
      if (this.running.delete(job.id)) notifier.notify(jobsTopic);
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
    this.wakeLoop?.();
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
    clearInterval(this.heartbeat);
    await this.stopListening?.();
  }
}

function asFailure(error: unknown): JobFailure {
  if (error instanceof JobFailure) return error;
  return new JobFailure(error instanceof Error ? error.message : String(error), true);
}
