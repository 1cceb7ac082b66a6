// The durable job queue: everything that runs to completion (pipeline tasks, benchmark runs, queued
// function calls) is a job row. Jobs are enqueued inside the caller's transaction, claimed atomically
// with a lease, renewed by heartbeats, and every write of a claimed job is fenced by its lease token,
// so a worker that lost its lease can change nothing. Effects that must happen exactly once are made
// by the kind's `commit` hook in the transaction that records the job finished.
//
// The hot path is built for throughput without giving any of that up: a worker claims several jobs
// in one transaction, records the jobs that finish together in one transaction (each with a
// commit hook in a savepoint of its own, so that one failing hook fails only its job), renews all
// its leases in one statement, and is woken by new jobs (in-process, and on PostgreSQL by a NOTIFY
// from the process that queued them) rather than polling for them.
import { setTimeout as sleep } from 'node:timers/promises';
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
  /** At most `concurrencyLimit` jobs with the same key run at the same time (the others stay queued). */
  concurrencyKey?: string | null;
  /** 1 unless given; jobs of one key should agree on it (each claim checks its own). */
  concurrencyLimit?: number;
  runId?: string | null;
  taskIndex?: number | null;
  id?: string;
}

/** A job claimed by a worker: the token fences its every write (the jobs of one claim share it). */
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

/** A status change whose history event the job's UPDATE has numbered already. */
interface NumberedTransition {
  job: JobRecord;
  seq: number;
  from: JobStatus | null;
  to: JobStatus;
  message: string;
  data?: Record<string, unknown>;
}

/** A finished job's result, for `completeAll`. */
export interface Completion {
  claim: Claim;
  result: Record<string, unknown>;
}

/** The least time between two notices of queued jobs from one process to the others. */
const announceGapMs = 5;

export class Scheduler {
  private readonly handlers = new Map<string, JobHandler>();
  /** A notice of queued jobs is on its way to other processes; `announceAgain`: one more after it. */
  private announcing = false;
  private announceAgain = false;

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

  /**
   * Wakes idle workers: those of this process at once; on PostgreSQL those of other processes too,
   * through `listen`, by one notice for whatever was queued within a few milliseconds. On SQLite
   * the others see the commit itself (`listen`).
   */
  wake(): void {
    this.deps.notifier.notify(jobsTopic);
    if (!q.carriesJobNotices(this.deps.db)) return;
    if (this.announcing) {
      this.announceAgain = true;
      return;
    }
    this.announcing = true;
    void (async () => {
      do {
        this.announceAgain = false;
        await q
          .announceJobNotice(this.deps.db, { queued: true })
          .catch((err: unknown) => this.deps.log.warn({ err }, 'announcing queued jobs failed'));
        await sleep(announceGapMs);
      } while (this.announceAgain);
      this.announcing = false;
    })();
  }

  /**
   * Turns the job notices of every process (PostgreSQL's NOTIFY: a job queued, a running job asked
   * to stop; on SQLite, any change another process committed) into this process's wake-ups, until
   * the function it returns is called.
   */
  listen(): () => Promise<void> {
    return q.listenForJobNotices(
      this.deps.db,
      {
        // In-process only: passing a notice on would echo it between processes forever.
        queued: () => this.deps.notifier.notify(jobsTopic),
        cancelRequested: (jobId) => this.deps.notifier.notify(jobTopic(jobId)),
      },
      this.deps.log,
    );
  }

  private now(offsetMs = 0): string {
    return iso(new Date(this.deps.clock().getTime() + offsetMs));
  }

  /** Records transitions whose events are numbered already: the jobs' history, the kinds' hooks. */
  private async recordTransitions(trx: Knex.Transaction, transitions: NumberedTransition[]): Promise<void> {
    const at = this.now();
    await q.insertJobEvents(
      trx,
      transitions.map((t) => ({
        jobId: t.job.id,
        seq: t.seq,
        at,
        type: t.to,
        message: t.message,
        data: { from: t.from, ...t.data },
      })),
    );
    for (const { job, from, to, message } of transitions) {
      const hook = this.handlers.get(job.kind)?.onTransition;
      if (hook) await hook(trx, { ...job, status: to }, { from, to, at, message });
    }
  }

  /** Records a transition of a job changed without numbering its event: its history, the kind's hook. */
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
      concurrencyLimit: Math.max(1, Math.floor(request.concurrencyLimit ?? 1)),
      maxAttempts: request.maxAttempts ?? this.deps.options.maxAttempts,
      runAfter: now,
      createdAt: now,
    };
    const message = waits ? `waiting for job ${dependsOn}` : 'queued';
    const record = await q.insertJob(trx, job, { at: now, type: job.status, message, data: { from: null } });
    const hook = this.handlers.get(job.kind)?.onTransition;
    if (hook) await hook(trx, record, { from: null, to: job.status, at: now, message });
    void trx.executionPromise?.then(
      () => this.wake(),
      () => undefined,
    );
    return record;
  }

  /** Claims the next job this worker can run, or null. */
  async claim(workerId: string, kinds: string[] = this.kinds()): Promise<Claim | null> {
    return (await this.claimMany(workerId, 1, kinds))[0] ?? null;
  }

  /**
   * Claims up to `limit` jobs this worker can run, most urgent first, in one transaction: each gets
   * its project slot and concurrency lock (a job whose slot or lock another took in the meantime,
   * or an earlier job of this batch, stays queued), a lease under one token, and its history event.
   */
  async claimMany(workerId: string, limit: number, kinds: string[] = this.kinds()): Promise<Claim[]> {
    if (kinds.length === 0 || limit < 1) return [];
    return this.deps.db.transaction(async (trx) => {
      const { claims, transitions } = await this.claimIn(trx, workerId, limit, kinds);
      await this.recordTransitions(trx, transitions);
      return claims;
    });
  }

  /** What `claimMany` does in its transaction, but for the history: the events to record. */
  private async claimIn(
    trx: Knex.Transaction,
    workerId: string,
    limit: number,
    kinds: string[],
  ): Promise<{ claims: Claim[]; transitions: NumberedTransition[] }> {
    if (kinds.length === 0 || limit < 1) return { claims: [], transitions: [] };
    const token = randomBase62(32);
    const now = this.now();
    const chosen: string[] = [];
    for (const candidate of await q.claimableJobs(trx, { kinds, now, limit })) {
      const { id, projectId, concurrencyKey, concurrencyLimit } = candidate;
      if (
        concurrencyKey &&
        !(await q.takeJobLock(trx, { key: concurrencyKey, limit: concurrencyLimit }, id, now))
      )
        continue;
      // The query excluded projects at their limit; this makes it exact under concurrency.
      if (projectId && !(await q.takeJobSlot(trx, projectId, now))) {
        if (concurrencyKey) await q.giveJobLocks(trx, id);
        continue;
      }
      chosen.push(id);
    }
    const leased = await q.leaseJobs(trx, chosen, {
      token,
      owner: workerId,
      now,
      expiresAt: this.now(this.deps.options.leaseMs),
    });
    // The candidates are locked (PostgreSQL) or the database is (SQLite): none can have changed.
    if (leased.length !== chosen.length) throw new Error('claimed jobs changed under their lock');
    return {
      claims: leased.map(({ job }) => ({ job, token, workerId })),
      transitions: leased.map(({ job, eventSeq }) => ({
        job,
        seq: eventSeq,
        from: 'queued',
        to: 'running',
        message: `attempt ${job.attempts} on ${workerId}`,
        data: { attempt: job.attempts, worker: workerId },
      })),
    };
  }

  /** Renews the lease: 'ok', 'cancel' (cancellation was asked for) or 'lost' (stop, write nothing). */
  async heartbeat(claim: Claim): Promise<'ok' | 'cancel' | 'lost'> {
    return (await this.heartbeatAll([claim])).get(claim.job.id) ?? 'lost';
  }

  /** Renews the leases of several claims in one statement; each job's state as `heartbeat` says it. */
  async heartbeatAll(claims: Claim[]): Promise<Map<string, 'ok' | 'cancel' | 'lost'>> {
    const held = await q.extendLeases(
      this.deps.db,
      claims.map((c) => ({ id: c.job.id, token: c.token })),
      this.now(this.deps.options.leaseMs),
      this.now(),
    );
    return new Map(
      claims.map((c) => {
        const renewed = held.get(c.job.id);
        return [c.job.id, !renewed ? 'lost' : renewed.cancelRequested ? 'cancel' : 'ok'];
      }),
    );
  }

  /**
   * What ending claims gives back, in the transaction that ends them: their project slots and
   * concurrency locks. Only for claims whose fenced change was made (the lease was still held, so
   * the job holds what its claim took).
   */
  private async giveBack(trx: Knex.Transaction, claims: Claim[]): Promise<void> {
    const now = this.now();
    const slots = new Map<string, number>();
    for (const { job } of claims) {
      if (job.holdsSlot && job.projectId) slots.set(job.projectId, (slots.get(job.projectId) ?? 0) + 1);
    }
    for (const [projectId, count] of slots) await q.giveJobSlot(trx, projectId, now, count);
    const locked = claims.filter((c) => c.job.concurrencyKey).map((c) => c.job.id);
    if (locked.length > 0) await q.giveJobLocks(trx, locked);
  }

  /**
   * Ends one claim in a transaction, if the claim still holds its lease: makes `changes` (numbering
   * the event that records them), gives back the slot and the lock, then lets `record` write the
   * rest (history, hooks, dependents). False, and nothing written, when the lease was lost.
   */
  private async settleClaim(
    claim: Claim,
    changes: q.JobChanges,
    record: (trx: Knex.Transaction, job: JobRecord, seq: number) => Promise<void>,
  ): Promise<boolean> {
    const now = this.now();
    const done = await this.deps.db.transaction(async (trx) => {
      const changed = await q.updateLeasedJob(
        trx,
        claim.job.id,
        claim.token,
        { ...changes, releaseLease: true, holdsSlot: false, numberEvent: true },
        now,
      );
      if (!changed) return false;
      await this.giveBack(trx, [claim]);
      await record(trx, changed.job, changed.eventSeq);
      return true;
    });
    this.notifyJob(claim.job.id);
    return done;
  }

  /**
   * Records the job finished, runs its commit hook and queues what waited on it, in one
   * transaction; false (and nothing written) when the lease was lost meanwhile.
   */
  async complete(claim: Claim, result: Record<string, unknown>): Promise<boolean> {
    const [outcome] = await this.completeAll([{ claim, result }]);
    if (outcome?.status === 'rejected') throw outcome.reason;
    return outcome?.status === 'fulfilled' && outcome.value;
  }

  /**
   * Records jobs finished, as `complete` does each, in one transaction: per job true, false when its
   * lease was lost meanwhile (nothing of it written), or the error of its commit hook (nothing of it
   * written either: it stays running until its lease runs out, and is tried again). Jobs whose kind
   * has no hooks are finished by one statement; the others each in a savepoint.
   */
  async completeAll(completions: Completion[]): Promise<PromiseSettledResult<boolean>[]> {
    return (await this.completeAndClaim(completions, { workerId: '', limit: 0 })).outcomes;
  }

  /**
   * Records jobs finished as `completeAll` does, and claims up to `next.limit` jobs for the worker
   * as `claimMany` does, in one transaction (one commit for a worker's round): the claim sees the
   * slots and locks the finished jobs gave back, and the jobs they let out of pending. The history
   * events of both are one statement. A failure of the claim fails the transaction, completions
   * and all (their leases run out and they are tried again, as after any failure to record them).
   */
  async completeAndClaim(
    completions: Completion[],
    next: { workerId: string; limit: number; kinds?: string[] },
  ): Promise<{ outcomes: PromiseSettledResult<boolean>[]; claims: Claim[] }> {
    if (completions.length === 0 && next.limit < 1) return { outcomes: [], claims: [] };
    const now = this.now();
    let claims: Claim[] = [];
    const outcomes = new Map<string, PromiseSettledResult<boolean>>();
    let freedOthers = false;
    const hooked = (c: Completion) => {
      const handler = this.handlers.get(c.claim.job.kind);
      return Boolean(handler?.commit ?? handler?.onTransition);
    };
    await this.deps.db.transaction(async (trx) => {
      const finished: Claim[] = [];
      const plain = completions.filter((c) => !hooked(c));
      const seqs = await q.finishLeasedJobs(
        trx,
        plain.map((c) => ({ id: c.claim.job.id, token: c.claim.token, result: c.result })),
        now,
      );
      const numbered: NumberedTransition[] = [];
      for (const { claim, result } of plain) {
        const seq = seqs.get(claim.job.id);
        outcomes.set(claim.job.id, { status: 'fulfilled', value: seq !== undefined });
        if (seq === undefined) continue;
        finished.push(claim);
        const job = this.finishedRecord(claim.job, result, now);
        numbered.push({ job, seq, from: 'running', to: 'finished', message: 'finished' });
      }
      for (const { claim, result } of completions.filter(hooked)) {
        try {
          const done = await trx.transaction(async (savepoint) => {
            const changed = await q.updateLeasedJob(
              savepoint,
              claim.job.id,
              claim.token,
              {
                status: 'finished',
                result,
                error: null,
                finishedAt: now,
                releaseLease: true,
                holdsSlot: false,
                numberEvent: true,
              },
              now,
            );
            if (!changed) return false;
            const commit = this.handlers.get(changed.job.kind)?.commit;
            if (commit) await commit(savepoint, changed.job, result);
            await this.recordTransitions(savepoint, [
              {
                job: changed.job,
                seq: changed.eventSeq,
                from: 'running',
                to: 'finished',
                message: 'finished',
              },
            ]);
            return true;
          });
          outcomes.set(claim.job.id, { status: 'fulfilled', value: done });
          if (done) finished.push(claim);
        } catch (error) {
          outcomes.set(claim.job.id, { status: 'rejected', reason: error });
        }
      }
      await this.giveBack(trx, finished);
      const ids = finished.map((c) => c.job.id);
      for (const next of ids.length > 0 ? await q.dependentsOf(trx, ids, ['pending']) : []) {
        await q.updateJobIn(trx, next.id, ['pending'], { status: 'queued', runAfter: now }, now);
        await this.transition(trx, next, 'pending', 'queued', `job ${next.dependsOn ?? ''} finished`);
        freedOthers = true;
      }
      if (finished.some(({ job }) => job.holdsSlot || job.concurrencyKey)) freedOthers = true;
      const claimed = await this.claimIn(trx, next.workerId, next.limit, next.kinds ?? this.kinds());
      claims = claimed.claims;
      await this.recordTransitions(trx, [...numbered, ...claimed.transitions]);
    });
    for (const { claim } of completions) this.deps.notifier.notify(jobTopic(claim.job.id));
    // Other processes care only when a job became claimable: queued, or its slot or lock freed.
    // A worker that claims with its completions knows its slots are free; one that does not
    // hears it in-process.
    if (freedOthers) this.wake();
    else if (next.limit < 1 && completions.length > 0) this.deps.notifier.notify(jobsTopic);
    return {
      outcomes: completions.map(
        ({ claim }) => outcomes.get(claim.job.id) ?? { status: 'fulfilled', value: false },
      ),
      claims,
    };
  }

  /** A claimed job as finishing it leaves it. */
  private finishedRecord(job: JobRecord, result: Record<string, unknown>, now: string): JobRecord {
    return {
      ...job,
      status: 'finished',
      result,
      error: null,
      finishedAt: now,
      updatedAt: now,
      leaseOwner: null,
      leaseExpiresAt: null,
      holdsSlot: false,
    };
  }

  /**
   * Records a failed attempt: queued again after a backoff while attempts remain and the failure is
   * retriable, else failed for good with its error (the dead letter), and what waited on it cancelled.
   */
  fail(claim: Claim, failure: JobFailure): Promise<boolean> {
    const now = this.now();
    const error = { message: failure.message, retriable: failure.retriable, ...failure.data };
    // The claim's attempts are the job's: only a claim, a reap or a retry changes them, and each of
    // those takes the lease away from this one first.
    const { attempts, maxAttempts } = claim.job;
    const retryAt = failure.retriable && attempts < maxAttempts ? this.now(this.backoff(attempts)) : null;
    return this.settleClaim(
      claim,
      retryAt ? { status: 'queued', runAfter: retryAt, error } : { status: 'failed', error, finishedAt: now },
      async (trx, job, seq) => {
        if (retryAt) {
          const message = `attempt ${attempts} failed: ${failure.message}`;
          await this.recordTransitions(trx, [
            { job, seq, from: 'running', to: 'queued', message, data: { error, retryAt } },
          ]);
        } else {
          await this.recordTransitions(trx, [
            { job, seq, from: 'running', to: 'failed', message: failure.message, data: { error } },
          ]);
          await this.cancelDependents(trx, job.id, `job ${job.id} failed`);
        }
      },
    );
  }

  /** The worker stopped the job because cancellation was asked for. */
  cancelled(claim: Claim): Promise<boolean> {
    return this.settleClaim(claim, { status: 'cancelled', finishedAt: this.now() }, async (trx, job, seq) => {
      await this.recordTransitions(trx, [
        { job, seq, from: 'running', to: 'cancelled', message: 'cancelled while running' },
      ]);
      await this.cancelDependents(trx, job.id, `job ${job.id} was cancelled`);
    });
  }

  /** Gives a claimed job back to the queue (the worker is stopping); the attempt does not count. */
  release(claim: Claim): Promise<boolean> {
    return this.settleClaim(
      claim,
      { status: 'queued', runAfter: this.now(), uncountAttempt: true },
      async (trx, job, seq) => {
        const message = `given back by ${claim.workerId}, which is stopping`;
        await this.recordTransitions(trx, [{ job, seq, from: 'running', to: 'queued', message }]);
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
        () => {
          this.notifyJob(jobId);
          q.announceJobNotice(this.deps.db, { cancelRequested: jobId }).catch((err: unknown) =>
            this.deps.log.warn({ err, job: jobId }, 'announcing a cancellation failed'),
          );
        },
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
