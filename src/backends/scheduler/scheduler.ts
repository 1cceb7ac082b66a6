// The durable job queue: everything that runs to completion (pipeline tasks, benchmark runs, queued
// function calls) is a job row. Jobs are enqueued inside the caller's transaction, claimed atomically
// with a lease, renewed by heartbeats, and every write of a claimed job is fenced by its lease token,
// so a worker that lost its lease can change nothing. Effects that must happen exactly once are made
// by the kind's `commit` hook in the transaction that records the job finished.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Clock } from '../../clock.js';
import { iso } from '../../clock.js';
import { appendEvent, listEvents, type StoredEvent } from '../../db/events.js';
import * as q from '../../db/jobs.js';
import type { JobRecord, JobStatus } from '../../db/jobs.js';
import { conflict, notFound } from '../../errors.js';
import { newId, randomBase62 } from '../../ids.js';
import type { Notifier } from '../../notifier.js';

export type { JobRecord, JobStatus } from '../../db/jobs.js';

export const terminalStatuses: JobStatus[] = ['finished', 'failed', 'cancelled'];

/** Why a job's work stopped before it ended on its own. */
export type AbortReason = 'cancel' | 'lease-lost' | 'shutdown';

export interface RunContext {
  /** Aborts when the job is cancelled, its lease is lost, or the worker stops; `reason` says which. */
  signal: AbortSignal;
  workerId: string;
  /** 1 for the first attempt. */
  attempt: number;
  log: Logger;
}

/** A failure a handler reports; `retriable` failures are tried again while attempts remain. */
export class JobFailure extends Error {
  override name = 'JobFailure';
  constructor(
    message: string,
    readonly retriable: boolean,
    readonly data: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export interface Transition {
  from: JobStatus | null;
  to: JobStatus;
  at: string;
  message: string;
}

export interface JobHandler {
  /** Does the job's work and resolves with its result (rejects with a JobFailure, or any error: retriable). */
  run(job: JobRecord, ctx: RunContext): Promise<Record<string, unknown>>;
  /** In the transaction that records the job finished (only if the worker still holds the lease). */
  commit?(trx: Knex.Transaction, job: JobRecord, result: Record<string, unknown>): Promise<void>;
  /** Every status change of a job of this kind, in the transaction that makes it. */
  onTransition?(trx: Knex.Transaction, job: JobRecord, transition: Transition): Promise<void>;
}

export interface EnqueueRequest {
  kind: string;
  projectId: string | null;
  payload: Record<string, unknown>;
  priority?: number;
  maxAttempts?: number;
  /** The job waits (pending) until this one finished. */
  dependsOn?: string | null;
  /** Jobs with the same key never run at the same time (the others stay queued). */
  concurrencyKey?: string | null;
  runId?: string | null;
  taskIndex?: number | null;
  id?: string;
}

/** A job claimed by a worker: the token fences its every write. */
export interface Claim {
  job: JobRecord;
  token: string;
  workerId: string;
}

export interface SchedulerOptions {
  leaseMs: number;
  maxAttempts: number;
  backoffMs: number;
  maxBackoffMs: number;
}

export const jobsTopic = 'jobs';
export const jobTopic = (id: string) => `job:${id}`;

export class Scheduler {
  private readonly handlers = new Map<string, JobHandler>();

  constructor(
    private readonly deps: {
      db: Knex;
      clock: Clock;
      log: Logger;
      notifier: Notifier;
      options: SchedulerOptions;
    },
  ) {}

  get options(): SchedulerOptions {
    return this.deps.options;
  }

  register(kind: string, handler: JobHandler): void {
    if (this.handlers.has(kind)) throw new Error(`job kind "${kind}" is registered twice`);
    this.handlers.set(kind, handler);
  }

  kinds(): string[] {
    return [...this.handlers.keys()];
  }

  handler(kind: string): JobHandler {
    const handler = this.handlers.get(kind);
    if (!handler) throw new Error(`no handler for job kind "${kind}"`);
    return handler;
  }

  /** Wakes idle workers of this process (those of other processes see new jobs at their next poll). */
  wake(): void {
    this.deps.notifier.notify(jobsTopic);
  }

  private now(offsetMs = 0): string {
    return iso(new Date(this.deps.clock().getTime() + offsetMs));
  }

  /** Records a transition: the job's history, the kind's hook. */
  private async transition(
    trx: Knex.Transaction,
    job: JobRecord,
    from: JobStatus | null,
    to: JobStatus,
    message: string,
    data: Record<string, unknown> = {},
  ): Promise<void> {
    const at = this.now();
    await appendEvent(trx, 'job', job.id, { at, type: to, message, data: { from, ...data } });
    const hook = this.handlers.get(job.kind)?.onTransition;
    if (hook) await hook(trx, { ...job, status: to }, { from, to, at, message });
  }

  /** Enqueues a job in the caller's transaction; workers are woken when it commits. */
  async enqueue(trx: Knex.Transaction, request: EnqueueRequest): Promise<JobRecord> {
    if (!this.handlers.has(request.kind)) throw new Error(`no handler for job kind "${request.kind}"`);
    const dependsOn = request.dependsOn ?? null;
    let waits = false;
    if (dependsOn) {
      const upstream = await q.findJob(trx, dependsOn);
      if (!upstream) throw new Error(`job ${dependsOn} does not exist`);
      waits = upstream.status !== 'finished';
    }
    const now = this.now();
    const job: q.NewJob = {
      id: request.id ?? newId('job'),
      kind: request.kind,
      projectId: request.projectId,
      runId: request.runId ?? null,
      taskIndex: request.taskIndex ?? null,
      payload: request.payload,
      priority: request.priority ?? 0,
      status: waits ? 'pending' : 'queued',
      dependsOn,
      concurrencyKey: request.concurrencyKey ?? null,
      maxAttempts: request.maxAttempts ?? this.deps.options.maxAttempts,
      runAfter: now,
      createdAt: now,
    };
    await q.insertJob(trx, job);
    const record = (await q.findJob(trx, job.id)) as JobRecord;
    await this.transition(trx, record, null, job.status, waits ? `waiting for job ${dependsOn}` : 'queued');
    void trx.executionPromise?.then(
      () => this.wake(),
      () => undefined,
    );
    return record;
  }

  /** Claims the next job this worker can run, or null. */
  async claim(workerId: string, kinds: string[] = this.kinds()): Promise<Claim | null> {
    if (kinds.length === 0) return null;
    const token = randomBase62(32);
    const now = this.now();
    return this.deps.db
      .transaction(async (trx) => {
        const job = await q.claimJob(trx, {
          kinds,
          token,
          owner: workerId,
          now,
          leaseExpiresAt: this.now(this.deps.options.leaseMs),
        });
        if (!job) return null;
        if (job.concurrencyKey && !(await q.takeJobLock(trx, job.concurrencyKey, job.id, now))) {
          throw new SlotTaken();
        }
        if (job.projectId) {
          // The claim excluded projects at their limit; this makes it exact under concurrency.
          if (!(await q.takeJobSlot(trx, job.projectId, now))) {
            throw new SlotTaken();
          }
          await q.updateLeasedJob(trx, job.id, token, { holdsSlot: true }, now);
        }
        await this.transition(trx, job, 'queued', 'running', `attempt ${job.attempts} on ${workerId}`, {
          attempt: job.attempts,
          worker: workerId,
        });
        return { job: { ...job, holdsSlot: Boolean(job.projectId) }, token, workerId };
      })
      .catch((error: unknown) => {
        if (error instanceof SlotTaken) return null;
        throw error;
      });
  }

  /** Renews the lease: 'ok', 'cancel' (cancellation was asked for) or 'lost' (stop, write nothing). */
  async heartbeat(claim: Claim): Promise<'ok' | 'cancel' | 'lost'> {
    const renewed = await q.extendLease(
      this.deps.db,
      claim.job.id,
      claim.token,
      this.now(this.deps.options.leaseMs),
      this.now(),
    );
    if (!renewed) return 'lost';
    return renewed.cancelRequested ? 'cancel' : 'ok';
  }

  /**
   * Ends the claim on a job in one transaction, if the claim still holds its lease: writes
   * `changes`, gives back the project slot and the concurrency lock the job held, then lets
   * `record` write the rest (history, hooks, dependents). False, and nothing written, when the lease
   * was lost meanwhile.
   */
  private async settleClaim(
    claim: Claim,
    changes: (trx: Knex.Transaction) => Promise<q.JobChanges | null>,
    record: (trx: Knex.Transaction, before: JobRecord) => Promise<void>,
  ): Promise<boolean> {
    const now = this.now();
    const done = await this.deps.db.transaction(async (trx) => {
      const wanted = await changes(trx);
      if (!wanted) return false;
      const before = await q.updateLeasedJob(
        trx,
        claim.job.id,
        claim.token,
        { ...wanted, releaseLease: true, holdsSlot: false },
        now,
      );
      if (!before) return false;
      if (before.holdsSlot && before.projectId) await q.giveJobSlot(trx, before.projectId, now);
      await q.giveJobLocks(trx, before.id);
      await record(trx, { ...before, holdsSlot: false });
      return true;
    });
    this.notifyJob(claim.job.id);
    return done;
  }

  /**
   * Records the job finished, runs its commit hook and queues what waited on it, in one
   * transaction; false (and nothing written) when the lease was lost meanwhile.
   */
  complete(claim: Claim, result: Record<string, unknown>): Promise<boolean> {
    const now = this.now();
    return this.settleClaim(
      claim,
      async () => ({ status: 'finished', result, finishedAt: now, error: null }),
      async (trx, before) => {
        const job: JobRecord = { ...before, status: 'finished', result, finishedAt: now };
        const commit = this.handlers.get(job.kind)?.commit;
        if (commit) await commit(trx, job, result);
        await this.transition(trx, job, 'running', 'finished', 'finished');
        for (const next of await q.dependentsOf(trx, job.id, ['pending'])) {
          await q.updateJobIn(trx, next.id, ['pending'], { status: 'queued', runAfter: now }, now);
          await this.transition(trx, next, 'pending', 'queued', `job ${job.id} finished`);
        }
      },
    );
  }

  /**
   * Records a failed attempt: queued again after a backoff while attempts remain and the failure is
   * retriable, else failed for good with its error (the dead letter), and what waited on it cancelled.
   */
  fail(claim: Claim, failure: JobFailure): Promise<boolean> {
    const now = this.now();
    const error = { message: failure.message, retriable: failure.retriable, ...failure.data };
    let retryAt: string | null = null;
    return this.settleClaim(
      claim,
      async (trx) => {
        const current = await q.findJob(trx, claim.job.id);
        if (!current) return null;
        if (failure.retriable && current.attempts < current.maxAttempts) {
          retryAt = this.now(this.backoff(current.attempts));
          return { status: 'queued', runAfter: retryAt, error };
        }
        return { status: 'failed', error, finishedAt: now };
      },
      async (trx, before) => {
        const job = { ...before, error };
        if (retryAt) {
          const message = `attempt ${before.attempts} failed: ${failure.message}`;
          await this.transition(trx, job, 'running', 'queued', message, { error, retryAt });
        } else {
          await this.transition(trx, job, 'running', 'failed', failure.message, { error });
          await this.cancelDependents(trx, job.id, `job ${job.id} failed`);
        }
      },
    );
  }

  /** The worker stopped the job because cancellation was asked for. */
  cancelled(claim: Claim): Promise<boolean> {
    return this.settleClaim(
      claim,
      async () => ({ status: 'cancelled', finishedAt: this.now() }),
      async (trx, before) => {
        await this.transition(trx, before, 'running', 'cancelled', 'cancelled while running');
        await this.cancelDependents(trx, before.id, `job ${before.id} was cancelled`);
      },
    );
  }

  /** Gives a claimed job back to the queue (the worker is stopping); the attempt does not count. */
  release(claim: Claim): Promise<boolean> {
    return this.settleClaim(
      claim,
      async () => ({ status: 'queued', runAfter: this.now(), uncountAttempt: true }),
      async (trx, before) => {
        const message = `given back by ${claim.workerId}, which is stopping`;
        await this.transition(trx, before, 'running', 'queued', message);
      },
    );
  }

  /**
   * Cancels a job: at once when it has not started (with what waits on it); a running one is asked to
   * stop, and its worker records it cancelled. Ended jobs cannot be cancelled.
   */
  async cancel(trx: Knex.Transaction, jobId: string, reason: string): Promise<JobRecord> {
    const job = await q.findJob(trx, jobId);
    if (!job) throw notFound('job', jobId);
    return this.cancelJob(trx, job, reason);
  }

  /**
   * Cancels a job as `cancel` does unless it has ended or was asked to stop already (for whoever
   * cancels what a job stands for, which may have got there first); whether it did.
   */
  async cancelIfLive(trx: Knex.Transaction, jobId: string, reason: string): Promise<boolean> {
    const job = await q.findJob(trx, jobId);
    if (!job || job.cancelRequested || terminalStatuses.includes(job.status)) return false;
    await this.cancelJob(trx, job, reason);
    return true;
  }

  private async cancelJob(trx: Knex.Transaction, job: JobRecord, reason: string): Promise<JobRecord> {
    const now = this.now();
    const jobId = job.id;
    if (job.status === 'pending' || job.status === 'queued') {
      const before = await q.updateJobIn(
        trx,
        jobId,
        [job.status],
        { status: 'cancelled', finishedAt: now },
        now,
      );
      if (before) {
        await this.transition(trx, before, before.status, 'cancelled', reason);
        await this.cancelDependents(trx, jobId, `job ${jobId} was cancelled`);
      }
    } else if (job.status === 'running') {
      await q.updateJobIn(trx, jobId, ['running'], { cancelRequested: true }, now);
      await appendEvent(trx, 'job', jobId, { at: now, type: 'cancel-requested', message: reason, data: {} });
      void trx.executionPromise?.then(
        () => this.notifyJob(jobId),
        () => undefined,
      );
    } else {
      throw conflict(`job ${jobId} is already ${job.status}`);
    }
    return (await q.findJob(trx, jobId)) as JobRecord;
  }

  /**
   * Tries a failed or cancelled job again from scratch (attempts reset), and with it the jobs that
   * were cancelled because of it; it waits again if what it depends on has not finished.
   */
  async retry(trx: Knex.Transaction, jobId: string, reason: string): Promise<JobRecord> {
    const now = this.now();
    const job = await q.findJob(trx, jobId);
    if (!job) throw notFound('job', jobId);
    if (job.status !== 'failed' && job.status !== 'cancelled') {
      throw conflict(`job ${jobId} is ${job.status}; only failed or cancelled jobs can be retried`);
    }
    const upstream = job.dependsOn ? await q.findJob(trx, job.dependsOn) : null;
    const to: JobStatus = upstream && upstream.status !== 'finished' ? 'pending' : 'queued';
    await this.reset(trx, job, to, reason, now);
    // Downstream jobs cancelled because of this one wait for it again.
    let frontier = [job.id];
    for (let depth = 0; frontier.length > 0 && depth < 1000; depth++) {
      const next: string[] = [];
      for (const id of frontier) {
        for (const dependent of await q.dependentsOf(trx, id, ['cancelled'])) {
          await this.reset(trx, dependent, 'pending', `job ${id} is tried again`, now);
          next.push(dependent.id);
        }
      }
      frontier = next;
    }
    void trx.executionPromise?.then(
      () => this.wake(),
      () => undefined,
    );
    return (await q.findJob(trx, jobId)) as JobRecord;
  }

  private async reset(trx: Knex.Transaction, job: JobRecord, to: JobStatus, reason: string, now: string) {
    await q.updateJobIn(
      trx,
      job.id,
      [job.status],
      {
        status: to,
        attempts: 0,
        error: null,
        result: null,
        finishedAt: null,
        cancelRequested: false,
        runAfter: now,
      },
      now,
    );
    await this.transition(trx, job, job.status, to, reason);
  }

  /** Cancels, transitively, every job waiting on this one. */
  private async cancelDependents(trx: Knex.Transaction, jobId: string, reason: string): Promise<void> {
    const now = this.now();
    let frontier = [jobId];
    for (let depth = 0; frontier.length > 0 && depth < 1000; depth++) {
      const next: string[] = [];
      for (const id of frontier) {
        for (const dependent of await q.dependentsOf(trx, id, ['pending', 'queued'])) {
          const before = await q.updateJobIn(
            trx,
            dependent.id,
            ['pending', 'queued'],
            { status: 'cancelled', finishedAt: now },
            now,
          );
          if (!before) continue;
          await this.transition(trx, before, before.status, 'cancelled', reason);
          next.push(dependent.id);
        }
      }
      frontier = next;
    }
  }

  /**
   * Gives back to the queue the jobs whose worker stopped renewing its lease (crashed, killed,
   * partitioned); a job that used up its attempts this way fails. Returns how many were reaped.
   */
  async reapExpired(limit = 100): Promise<number> {
    const now = this.now();
    let reaped = 0;
    for (const job of await q.expiredJobs(this.deps.db, now, limit)) {
      const changed = await this.deps.db.transaction(async (trx) => {
        const exhausted = job.attempts >= job.maxAttempts;
        const error = {
          message: `its worker ${job.leaseOwner ?? ''} stopped renewing its lease (attempt ${job.attempts} of ${job.maxAttempts})`,
          retriable: !exhausted,
        };
        const changes: q.JobChanges = exhausted
          ? { status: 'failed', error, finishedAt: now }
          : { status: 'queued', error, runAfter: this.now(this.backoff(job.attempts)) };
        const before = await q.updateExpiredJob(
          trx,
          job.id,
          { ...changes, releaseLease: true, holdsSlot: false },
          now,
        );
        if (!before) return false;
        if (before.holdsSlot && before.projectId) await q.giveJobSlot(trx, before.projectId, now);
        await q.giveJobLocks(trx, before.id);
        await this.transition(trx, before, 'running', exhausted ? 'failed' : 'queued', error.message, {
          error,
        });
        if (exhausted) await this.cancelDependents(trx, job.id, `job ${job.id} failed`);
        return true;
      });
      if (changed) {
        reaped += 1;
        this.notifyJob(job.id);
      }
    }
    if (reaped > 0) this.wake();
    return reaped;
  }

  /** Exponential backoff after the given attempt, with jitter, capped. */
  backoff(attempt: number): number {
    const { backoffMs, maxBackoffMs } = this.deps.options;
    const base = Math.min(maxBackoffMs, backoffMs * 2 ** Math.max(0, attempt - 1));
    return Math.round(base * (0.5 + Math.random() / 2));
  }

  private notifyJob(id: string): void {
    this.deps.notifier.notify(jobTopic(id));
    this.wake();
  }

  find(id: string): Promise<JobRecord | null> {
    return q.findJob(this.deps.db, id);
  }

  history(id: string, afterSeq = 0, limit = 200): Promise<StoredEvent[]> {
    return listEvents(this.deps.db, 'job', id, afterSeq, limit);
  }
}

class SlotTaken extends Error {}
