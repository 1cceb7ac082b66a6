// The scheduler's queue semantics on every engine: claims, leases and fencing, retries and the dead
// letter, chains, cancellation, priorities and the per-project concurrency limit.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Knex } from 'knex';
import {
  JobFailure,
  Scheduler,
  type Claim,
  type JobRecord,
  type JobHandler,
} from '../../../src/backends/scheduler/scheduler.js';
import { Notifier } from '../../../src/notifier.js';
import { createLogger } from '../../../src/log.js';
import { testEngines } from '../../fixtures/databases.js';
import {
  openMigratedDatabase,
  rejectionOf,
  storedProject,
  storedUser,
  type MigratedDatabase,
} from '../../db/builders.js';
import type { DomainError } from '../../../src/errors.js';

const log = createLogger('silent');

describe.each(testEngines())('scheduler (%s)', (engine) => {
  let t: MigratedDatabase;
  let now = Date.UTC(2026, 0, 1);
  const clock = () => new Date(now);
  const committed: string[] = [];
  const transitions: string[] = [];
  let scheduler: Scheduler;
  let ownerId: string;

  const handler: JobHandler = {
    run: async () => ({ ok: true }),
    commit: async (trx: Knex.Transaction, job) => {
      committed.push(job.id);
      await trx('users').where({ id: ownerId }).update({ updated_at: clock().toISOString() });
    },
    onTransition: async (_trx, job, transition) => {
      transitions.push(`${job.id}:${transition.from ?? '-'}>${transition.to}`);
    },
  };

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
    ownerId = (await storedUser(t.knex)).id;
    scheduler = new Scheduler({
      db: t.knex,
      clock,
      log,
      notifier: new Notifier(),
      options: { leaseMs: 10_000, maxAttempts: 3, backoffMs: 1000, maxBackoffMs: 8000 },
    });
    scheduler.register('test', handler);
    scheduler.register('fragile', {
      run: async () => ({}),
      commit: async (trx, job) => {
        if (job.payload.breakCommit) throw new Error('the commit hook broke');
        await trx('users').where({ id: ownerId }).update({ updated_at: clock().toISOString() });
      },
    });
    scheduler.register('plain', { run: async () => ({}) });
  });
  afterAll(() => t.close());

  /** Empties the queue so that each test sees only its own jobs. */
  async function drain() {
    await t.knex('jobs').whereIn('status', ['pending', 'queued', 'running']).update({ status: 'cancelled' });
  }

  const enqueue = (request: Partial<Parameters<Scheduler['enqueue']>[1]> = {}) =>
    t.knex.transaction((trx) =>
      scheduler.enqueue(trx, { kind: 'test', projectId: null, payload: {}, ...request }),
    );

  const claim = async (worker = 'w1'): Promise<Claim> => {
    const claimed = await scheduler.claim(worker);
    if (!claimed) throw new Error('expected a job to claim');
    return claimed;
  };

  describe('enqueue', () => {
    it('queues a job that depends on nothing, and keeps a dependent one pending', async () => {
      await drain();
      const first = await enqueue();
      const second = await enqueue({ dependsOn: first.id });
      expect(first.status).toBe('queued');
      expect(second.status).toBe('pending');
      const history = await scheduler.history(second.id);
      expect(history.map((e) => e.type)).toEqual(['pending']);
    });

    it('enqueues nothing when the caller’s transaction rolls back', async () => {
      await drain();
      let id = '';
      await rejectionOf(
        t.knex.transaction(async (trx) => {
          id = (await scheduler.enqueue(trx, { kind: 'test', projectId: null, payload: {} })).id;
          throw new Error('the caller changed its mind');
        }),
      );
      expect(id).not.toBe('');
      expect(await scheduler.find(id)).toBeNull();
    });
  });

  describe('claim', () => {
    it('takes the highest priority first, then the oldest', async () => {
      await drain();
      const low = await enqueue({ priority: 0 });
      now += 1;
      const high = await enqueue({ priority: 5 });
      now += 1;
      const low2 = await enqueue({ priority: 0 });
      const order = [(await claim()).job.id, (await claim()).job.id, (await claim()).job.id];
      expect(order).toEqual([high.id, low.id, low2.id]);
      expect(await scheduler.claim('w1')).toBeNull();
    });

    it('never gives one job to two workers claiming at once', async () => {
      await drain();
      const ids = new Set<string>();
      for (let i = 0; i < 10; i++) ids.add((await enqueue()).id);
      const claims = await Promise.all(Array.from({ length: 16 }, (_, i) => scheduler.claim(`w${i}`)));
      const got = claims.filter((c): c is Claim => c !== null).map((c) => c.job.id);
      expect(got).toHaveLength(10);
      expect(new Set(got)).toEqual(ids);
    });

    it('holds a project to its concurrent-job limit and frees the slot when a job ends', async () => {
      await drain();
      const project = await storedProject(
        t.knex,
        ownerId,
        {},
        {
          cpuMillis: null,
          memoryBytes: null,
          gpu: null,
          services: null,
          concurrentJobs: 1,
          storageBytes: null,
        },
      );
      const a = await enqueue({ projectId: project.id });
      now += 1;
      const b = await enqueue({ projectId: project.id });
      const first = await claim();
      expect(first.job.id).toBe(a.id);
      expect(await scheduler.claim('w2')).toBeNull();
      const quota = await t.knex('project_quotas').where({ project_id: project.id }).first();
      expect(Number(quota.used_concurrent_jobs)).toBe(1);
      await scheduler.complete(first, {});
      const second = await claim('w2');
      expect(second.job.id).toBe(b.id);
      await scheduler.fail(second, new JobFailure('broken', false));
      const after = await t.knex('project_quotas').where({ project_id: project.id }).first();
      expect(Number(after.used_concurrent_jobs)).toBe(0);
    });
  });

  describe('claimMany', () => {
    const limited = (concurrentJobs: number) =>
      storedProject(
        t.knex,
        ownerId,
        {},
        {
          cpuMillis: null,
          memoryBytes: null,
          gpu: null,
          services: null,
          concurrentJobs,
          storageBytes: null,
        },
      );

    it('claims several jobs in one call, most urgent first, and never more than asked', async () => {
      await drain();
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        ids.push((await enqueue({ priority: i === 3 ? 9 : 0 })).id);
        now += 1;
      }
      const claims = await scheduler.claimMany('w1', 3);
      expect(claims.map((c) => c.job.id)).toEqual([ids[3], ids[0], ids[1]]);
      expect(claims.every((c) => c.job.status === 'running' && c.job.attempts === 1)).toBe(true);
      expect(new Set(claims.map((c) => c.token)).size).toBe(1);
      const rest = await scheduler.claimMany('w2', 10);
      expect(rest.map((c) => c.job.id)).toEqual([ids[2], ids[4]]);
      expect(await scheduler.claimMany('w3', 10)).toEqual([]);
      for (const claim of [...claims, ...rest]) {
        expect((await scheduler.history(claim.job.id)).map((e) => [e.seq, e.type])).toEqual([
          [1, 'queued'],
          [2, 'running'],
        ]);
      }
    });

    it('holds a project to its limit and a concurrency key to one job within one batch', async () => {
      await drain();
      const project = await limited(2);
      const inProject = [];
      for (let i = 0; i < 3; i++) {
        inProject.push(await enqueue({ projectId: project.id }));
        now += 1;
      }
      const keyed = [await enqueue({ concurrencyKey: 'runner:one' })];
      now += 1;
      keyed.push(await enqueue({ concurrencyKey: 'runner:one' }));
      const claims = await scheduler.claimMany('w1', 10);
      expect(claims.map((c) => c.job.id).sort()).toEqual(
        [inProject[0]?.id, inProject[1]?.id, keyed[0]?.id].sort(),
      );
      const quota = await t.knex('project_quotas').where({ project_id: project.id }).first();
      expect(Number(quota.used_concurrent_jobs)).toBe(2);
      expect(await scheduler.claimMany('w2', 10)).toEqual([]);
      const outcomes = await scheduler.completeAll(claims.map((claim) => ({ claim, result: {} })));
      expect(outcomes.every((o) => o.status === 'fulfilled' && o.value)).toBe(true);
      const after = await t.knex('project_quotas').where({ project_id: project.id }).first();
      expect(Number(after.used_concurrent_jobs)).toBe(0);
      const next = await scheduler.claimMany('w2', 10);
      expect(next.map((c) => c.job.id).sort()).toEqual([inProject[2]?.id, keyed[1]?.id].sort());
    });
  });

  describe('completeAll', () => {
    it('finishes several jobs in one transaction; a lost lease or a broken commit hook costs only its own job', async () => {
      await drain();
      const plain = await enqueue({ kind: 'plain' });
      const hooked = await enqueue({ kind: 'fragile' });
      const broken = await enqueue({ kind: 'fragile', payload: { breakCommit: true } });
      const stale = await enqueue({ kind: 'plain' });
      const waiting = await enqueue({ kind: 'plain', dependsOn: plain.id });
      const claims = await scheduler.claimMany('w1', 10);
      expect(claims).toHaveLength(4);
      const claimOf = (id: string) => claims.find((c) => c.job.id === id) as Claim;
      // The stale claim's lease runs out and another worker takes the job.
      await t.knex('jobs').where({ id: stale.id }).update({ lease_expires_at: '2000-01-01T00:00:00.000Z' });
      expect(await scheduler.reapExpired()).toBe(1);
      now += 60_000;
      const fresh = await claim('w2');
      expect(fresh.job.id).toBe(stale.id);

      const outcomes = await scheduler.completeAll(
        [plain, hooked, broken, stale].map((job) => ({ claim: claimOf(job.id), result: { from: job.id } })),
      );
      expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
      expect(outcomes.map((o) => (o.status === 'fulfilled' ? o.value : null))).toEqual([
        true,
        true,
        null,
        false,
      ]);
      expect(await scheduler.find(plain.id)).toMatchObject({
        status: 'finished',
        result: { from: plain.id },
      });
      expect(await scheduler.find(hooked.id)).toMatchObject({
        status: 'finished',
        result: { from: hooked.id },
      });
      // Nothing of the broken one was written: it runs until its lease runs out, and is tried again.
      expect(await scheduler.find(broken.id)).toMatchObject({ status: 'running', result: null });
      expect((await scheduler.history(broken.id)).map((e) => e.type)).toEqual(['queued', 'running']);
      expect(await scheduler.find(stale.id)).toMatchObject({ status: 'running', leaseOwner: 'w2' });
      expect((await scheduler.find(waiting.id))?.status).toBe('queued');
      expect((await scheduler.history(plain.id)).map((e) => [e.seq, e.type])).toEqual([
        [1, 'queued'],
        [2, 'running'],
        [3, 'finished'],
      ]);
    });
  });

  describe('completeAndClaim', () => {
    it('records jobs finished and claims, in one transaction, what their ending let run', async () => {
      await drain();
      const project = await storedProject(
        t.knex,
        ownerId,
        {},
        {
          cpuMillis: null,
          memoryBytes: null,
          gpu: null,
          services: null,
          concurrentJobs: 1,
          storageBytes: null,
        },
      );
      const first = await enqueue({ projectId: project.id });
      now += 1;
      const second = await enqueue({ projectId: project.id });
      const keyed = await enqueue({ concurrencyKey: 'runner:two' });
      now += 1;
      const keyedNext = await enqueue({ concurrencyKey: 'runner:two' });
      const waiting = await enqueue({ dependsOn: keyed.id });
      const claims = await scheduler.claimMany('w1', 10);
      expect(claims.map((c) => c.job.id).sort()).toEqual([first.id, keyed.id].sort());

      const { outcomes, claims: next } = await scheduler.completeAndClaim(
        claims.map((claim) => ({ claim, result: {} })),
        { workerId: 'w1', limit: 10 },
      );
      expect(outcomes.every((o) => o.status === 'fulfilled' && o.value)).toBe(true);
      // The project's slot, the key's lock and the dependent freed by the completions.
      expect(next.map((c) => c.job.id).sort()).toEqual([second.id, keyedNext.id, waiting.id].sort());
      expect(next.every((c) => c.job.status === 'running' && c.workerId === 'w1')).toBe(true);
      const quota = await t.knex('project_quotas').where({ project_id: project.id }).first();
      expect(Number(quota.used_concurrent_jobs)).toBe(1);
      expect((await scheduler.history(first.id)).map((e) => [e.seq, e.type])).toEqual([
        [1, 'queued'],
        [2, 'running'],
        [3, 'finished'],
      ]);
      expect((await scheduler.history(waiting.id)).map((e) => [e.seq, e.type])).toEqual([
        [1, 'pending'],
        [2, 'queued'],
        [3, 'running'],
      ]);
    });

    it('claims no more than asked, and nothing with a limit of 0', async () => {
      await drain();
      const jobs: JobRecord[] = [];
      for (let i = 0; i < 3; i++) {
        jobs.push(await enqueue({}));
        now += 1;
      }
      const [only] = await scheduler.claimMany('w1', 1);
      const { claims } = await scheduler.completeAndClaim([{ claim: only as Claim, result: {} }], {
        workerId: 'w1',
        limit: 1,
      });
      expect(claims.map((c) => c.job.id)).toEqual([jobs[1]?.id]);
      expect((await scheduler.completeAndClaim([], { workerId: 'w1', limit: 0 })).claims).toEqual([]);
      expect((await scheduler.find(jobs[2]?.id ?? ''))?.status).toBe('queued');
    });
  });

  describe('heartbeatAll', () => {
    it('renews the leases still held, and says which were lost or asked to stop', async () => {
      await drain();
      const kept = await enqueue();
      const cancelled = await enqueue();
      const lost = await enqueue();
      const claims = await scheduler.claimMany('w1', 3);
      await t.knex.transaction((trx) => scheduler.cancel(trx, cancelled.id, 'the user cancelled'));
      await t.knex('jobs').where({ id: lost.id }).update({ lease_expires_at: '2000-01-01T00:00:00.000Z' });
      expect(await scheduler.reapExpired()).toBe(1);
      now += 5000;
      const states = await scheduler.heartbeatAll(claims);
      expect(Object.fromEntries(states)).toEqual({
        [kept.id]: 'ok',
        [cancelled.id]: 'cancel',
        [lost.id]: 'lost',
      });
      expect((await scheduler.find(kept.id))?.leaseExpiresAt).toBe(new Date(now + 10_000).toISOString());
      // The history stays numbered in order across both ways of writing it.
      expect((await scheduler.history(cancelled.id)).map((e) => [e.seq, e.type])).toEqual([
        [1, 'queued'],
        [2, 'running'],
        [3, 'cancel-requested'],
      ]);
    });
  });

  describe('concurrency keys', () => {
    it('runs one job of a key at a time, queueing the others, and lets other keys pass', async () => {
      await drain();
      const a = await enqueue({ concurrencyKey: 'runner:local' });
      now += 1;
      const b = await enqueue({ concurrencyKey: 'runner:local' });
      now += 1;
      const other = await enqueue({ concurrencyKey: 'runner:elsewhere' });
      const first = await claim();
      expect(first.job.id).toBe(a.id);
      expect((await claim()).job.id).toBe(other.id);
      expect(await scheduler.claim('w1')).toBeNull();
      await scheduler.fail(first, new JobFailure('broken', false));
      expect((await claim()).job.id).toBe(b.id);
    });

    it('runs up to a key’s limit at once — in one batch and between racing claimers — and the next as soon as one ends', async () => {
      await drain();
      const jobs = [];
      for (let i = 0; i < 7; i++) {
        jobs.push(await enqueue({ concurrencyKey: 'calls:svc', concurrencyLimit: 3 }));
        now += 1;
      }
      const batch = await scheduler.claimMany('w1', 2);
      const raced = await Promise.all([scheduler.claimMany('w2', 10), scheduler.claimMany('w3', 10)]);
      const running = [...batch, ...raced.flat()];
      expect(running.map((c) => c.job.id).sort()).toEqual(
        jobs
          .slice(0, 3)
          .map((j) => j.id)
          .sort(),
      );
      const locks = await t.knex('job_locks').where({ lock_group: 'calls:svc' }).select('key');
      expect(locks.map((l) => l.key).sort()).toEqual(['calls:svc#0', 'calls:svc#1', 'calls:svc#2']);
      expect(await scheduler.claim('w1')).toBeNull();
      await scheduler.complete(running[1] as Claim, {});
      const next = await scheduler.claimMany('w1', 10);
      expect(next.map((c) => c.job.id)).toEqual([jobs[3]?.id]);
      await scheduler.completeAll(
        [...running, ...next].filter((c) => c !== running[1]).map((claim) => ({ claim, result: {} })),
      );
      const rest = await scheduler.claimMany('w1', 10);
      expect(rest.map((c) => c.job.id)).toEqual(jobs.slice(4).map((j) => j.id));
      await scheduler.completeAll(rest.map((claim) => ({ claim, result: {} })));
      expect(await t.knex('job_locks').where({ lock_group: 'calls:svc' })).toEqual([]);
    });
  });

  describe('complete', () => {
    it('finishes the job, runs its commit hook once and queues the job waiting on it', async () => {
      await drain();
      const first = await enqueue();
      const second = await enqueue({ dependsOn: first.id });
      const claimed = await claim();
      expect(await scheduler.complete(claimed, { answer: 42 })).toBe(true);
      expect(committed).toContain(first.id);
      const done = await scheduler.find(first.id);
      expect(done).toMatchObject({ status: 'finished', result: { answer: 42 }, leaseOwner: null });
      expect((await scheduler.find(second.id))?.status).toBe('queued');
      expect(transitions).toEqual(
        expect.arrayContaining([`${first.id}:running>finished`, `${second.id}:pending>queued`]),
      );
    });

    it('refuses a worker whose lease expired and was given to another (fencing)', async () => {
      await drain();
      const job = await enqueue();
      const stale = await claim('slow');
      now += 11_000;
      expect(await scheduler.reapExpired()).toBe(1);
      now += 10_000;
      const fresh = await claim('fast');
      expect(fresh.job.id).toBe(job.id);
      expect(fresh.job.attempts).toBe(2);
      const before = committed.length;
      expect(await scheduler.complete(stale, { from: 'slow' })).toBe(false);
      expect(await scheduler.heartbeat(stale)).toBe('lost');
      expect(committed.length).toBe(before);
      expect(await scheduler.complete(fresh, { from: 'fast' })).toBe(true);
      expect((await scheduler.find(job.id))?.result).toEqual({ from: 'fast' });
    });
  });

  describe('fail', () => {
    it('queues a retriable failure again after a growing backoff, then fails it for good', async () => {
      await drain();
      const job = await enqueue();
      const waiting = await enqueue({ dependsOn: job.id });
      const delays: number[] = [];
      for (let attempt = 1; attempt <= 3; attempt++) {
        const claimed = await claim();
        expect(claimed.job.attempts).toBe(attempt);
        await scheduler.fail(claimed, new JobFailure(`try ${attempt} broke`, true));
        const after = await scheduler.find(job.id);
        if (attempt < 3) {
          expect(after?.status).toBe('queued');
          delays.push(Date.parse(after?.runAfter ?? '') - now);
          expect(await scheduler.claim('w1')).toBeNull();
          now += 60_000;
        }
      }
      expect(delays[0]).toBeGreaterThanOrEqual(500);
      expect(delays[1]).toBeGreaterThanOrEqual(1000);
      const dead = await scheduler.find(job.id);
      expect(dead).toMatchObject({ status: 'failed', attempts: 3, error: { message: 'try 3 broke' } });
      expect((await scheduler.find(waiting.id))?.status).toBe('cancelled');
    });

    it('fails a job at once when the failure is not retriable', async () => {
      await drain();
      const job = await enqueue();
      await scheduler.fail(await claim(), new JobFailure('bad options', false, { code: 'invalid' }));
      expect(await scheduler.find(job.id)).toMatchObject({
        status: 'failed',
        attempts: 1,
        error: { message: 'bad options', code: 'invalid', retriable: false },
      });
    });
  });

  describe('reapExpired', () => {
    it('fails a job whose workers kept dying once its attempts are used up', async () => {
      await drain();
      const job = await enqueue({ maxAttempts: 2 });
      for (let i = 0; i < 2; i++) {
        await claim(`doomed-${i}`);
        now += 60_000;
        expect(await scheduler.reapExpired()).toBe(1);
        now += 60_000;
      }
      expect(await scheduler.find(job.id)).toMatchObject({ status: 'failed', attempts: 2 });
    });

    it('leaves alone a job whose lease is renewed', async () => {
      await drain();
      const job = await enqueue();
      const claimed = await claim();
      now += 6000;
      expect(await scheduler.heartbeat(claimed)).toBe('ok');
      now += 6000;
      expect(await scheduler.reapExpired()).toBe(0);
      expect((await scheduler.find(job.id))?.status).toBe('running');
    });
  });

  describe('cancel', () => {
    it('cancels a queued job and the chain waiting on it', async () => {
      await drain();
      const a = await enqueue();
      const b = await enqueue({ dependsOn: a.id });
      const c = await enqueue({ dependsOn: b.id });
      await t.knex.transaction((trx) => scheduler.cancel(trx, a.id, 'the user cancelled'));
      for (const id of [a.id, b.id, c.id]) expect((await scheduler.find(id))?.status).toBe('cancelled');
    });

    it('asks a running job to stop; its worker hears it in the heartbeat and records it cancelled', async () => {
      await drain();
      const job = await enqueue();
      const claimed = await claim();
      await t.knex.transaction((trx) => scheduler.cancel(trx, job.id, 'the user cancelled'));
      expect((await scheduler.find(job.id))?.status).toBe('running');
      expect(await scheduler.heartbeat(claimed)).toBe('cancel');
      expect(await scheduler.cancelled(claimed)).toBe(true);
      expect((await scheduler.find(job.id))?.status).toBe('cancelled');
    });

    it('refuses to cancel an ended job (409)', async () => {
      await drain();
      const job = await enqueue();
      await scheduler.complete(await claim(), {});
      const error = await rejectionOf(t.knex.transaction((trx) => scheduler.cancel(trx, job.id, 'late')));
      expect((error as DomainError).kind).toBe('conflict');
    });
  });

  describe('cancelIfLive', () => {
    const cancelIfLive = (id: string) =>
      t.knex.transaction((trx) => scheduler.cancelIfLive(trx, id, 'the user cancelled'));

    it('cancels a queued job, and says so', async () => {
      await drain();
      const job = await enqueue();
      expect(await cancelIfLive(job.id)).toBe(true);
      expect((await scheduler.find(job.id))?.status).toBe('cancelled');
    });

    it('asks a running job to stop once; a second call leaves it as it is', async () => {
      await drain();
      const job = await enqueue();
      const claimed = await claim();
      expect(await cancelIfLive(job.id)).toBe(true);
      const asked = await scheduler.history(job.id);
      expect(await cancelIfLive(job.id)).toBe(false);
      expect(await scheduler.history(job.id)).toEqual(asked);
      expect(await scheduler.heartbeat(claimed)).toBe('cancel');
    });

    it('leaves an ended job as it is, without an error', async () => {
      await drain();
      const job = await enqueue();
      await scheduler.complete(await claim(), {});
      expect(await cancelIfLive(job.id)).toBe(false);
      expect((await scheduler.find(job.id))?.status).toBe('finished');
    });
  });

  describe('release', () => {
    it('gives a job back without counting the attempt', async () => {
      await drain();
      const job = await enqueue();
      const claimed = await claim();
      expect(await scheduler.release(claimed)).toBe(true);
      expect(await scheduler.find(job.id)).toMatchObject({ status: 'queued', attempts: 0, leaseOwner: null });
    });
  });

  describe('retry', () => {
    it('tries a failed job again from scratch, and the jobs cancelled because of it', async () => {
      await drain();
      const a = await enqueue();
      const b = await enqueue({ dependsOn: a.id });
      await scheduler.fail(await claim(), new JobFailure('broken', false));
      expect((await scheduler.find(b.id))?.status).toBe('cancelled');
      await t.knex.transaction((trx) => scheduler.retry(trx, a.id, 'the user retried'));
      expect(await scheduler.find(a.id)).toMatchObject({ status: 'queued', attempts: 0, error: null });
      expect((await scheduler.find(b.id))?.status).toBe('pending');
      await scheduler.complete(await claim(), {});
      expect((await scheduler.find(b.id))?.status).toBe('queued');
    });
  });
});
