// Workers against a real queue: they run jobs to the end, hear cancellations at once, and give
// running jobs back when they stop.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { setTimeout as sleep } from 'node:timers/promises';
import { noopHandler } from '../../../src/backends/scheduler/noop.js';
import { Scheduler, type JobRecord } from '../../../src/backends/scheduler/scheduler.js';
import { Worker } from '../../../src/backends/scheduler/worker.js';
import { systemClock } from '../../../src/clock.js';
import { openDatabase } from '../../../src/db/database.js';
import { createLogger } from '../../../src/log.js';
import { Notifier } from '../../../src/notifier.js';
import { testEngines } from '../../fixtures/databases.js';
import { openMigratedDatabase, type MigratedDatabase } from '../../db/builders.js';

const log = createLogger('silent');

describe.each(testEngines())('worker (%s)', (engine) => {
  let t: MigratedDatabase;
  let scheduler: Scheduler;
  const notifier = new Notifier();

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
    scheduler = new Scheduler({
      db: t.knex,
      clock: systemClock,
      log,
      notifier,
      options: { leaseMs: 2000, maxAttempts: 3, backoffMs: 10, maxBackoffMs: 50 },
    });
    scheduler.register('noop', noopHandler);
  });
  afterAll(() => t.close());

  const enqueue = (payload: Record<string, unknown>) =>
    t.knex.transaction((trx) => scheduler.enqueue(trx, { kind: 'noop', projectId: null, payload }));

  async function waitFor(id: string, done: (job: JobRecord) => boolean, timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
      const job = await scheduler.find(id);
      if (job && done(job)) return job;
      await sleep(20);
    }
    throw new Error(
      `job ${id} never reached the expected state: ${JSON.stringify(await scheduler.find(id))}`,
    );
  }

  it('runs queued jobs to the end, several at once', async () => {
    const worker = new Worker({ scheduler, notifier, log }, { concurrency: 3, pollMs: 50 });
    const jobs = await Promise.all(Array.from({ length: 9 }, () => enqueue({ sleepMs: 100 })));
    worker.start();
    const done: JobRecord[] = [];
    for (const job of jobs) done.push(await waitFor(job.id, (j) => j.status === 'finished'));
    // How many ran at once, from their recorded start and end: several, never more than three.
    const running = (at: number) =>
      done.filter((j) => Date.parse(j.startedAt ?? '') <= at && at < Date.parse(j.finishedAt ?? '')).length;
    const peak = Math.max(...done.map((j) => running(Date.parse(j.startedAt ?? ''))));
    expect(peak).toBeGreaterThanOrEqual(2);
    expect(peak).toBeLessThanOrEqual(3);
    await worker.stop(1000);
  });

  it('runs many short jobs, each once, with its whole history', async () => {
    const worker = new Worker({ scheduler, notifier, log }, { concurrency: 8, pollMs: 50 });
    worker.start();
    const jobs: JobRecord[] = [];
    for (let i = 0; i < 200; i++) jobs.push(await enqueue({}));
    for (const job of jobs) await waitFor(job.id, (j) => j.status === 'finished', 60_000);
    for (const job of jobs.slice(0, 20)) {
      expect(await scheduler.find(job.id)).toMatchObject({ attempts: 1, leaseOwner: null, holdsSlot: false });
      expect((await scheduler.history(job.id)).map((e) => [e.seq, e.type])).toEqual([
        [1, 'queued'],
        [2, 'running'],
        [3, 'finished'],
      ]);
    }
    await worker.stop(1000);
  });

  it('hears of jobs another process queued without waiting for its poll', async () => {
    // Another process: its own connection, scheduler and notifier, so nothing of it reaches the
    // worker in-process (PostgreSQL's NOTIFY carries it, or SQLite's data_version).
    const other = openDatabase(t.testDatabase.url, t.testDatabase.dataDir);
    const elsewhere = new Scheduler({
      db: other.knex,
      clock: systemClock,
      log,
      notifier: new Notifier(),
      options: scheduler.options,
    });
    elsewhere.register('noop', noopHandler);
    const worker = new Worker({ scheduler, notifier, log }, { concurrency: 2, pollMs: 600_000 });
    worker.start();
    try {
      // Its first look at the queue, and its listening, come first; then only a notice can wake it.
      await sleep(1000);
      const job = await other.knex.transaction((trx) =>
        elsewhere.enqueue(trx, { kind: 'noop', projectId: null, payload: {} }),
      );
      await waitFor(job.id, (j) => j.status === 'finished', 60_000);
    } finally {
      await worker.stop(1000);
      await other.close();
    }
  });

  it('retries a failing job with backoff and dead-letters it after its attempts', async () => {
    const worker = new Worker({ scheduler, notifier, log }, { concurrency: 1, pollMs: 20 });
    worker.start();
    const job = await enqueue({ fail: 'retriable' });
    const dead = await waitFor(job.id, (j) => j.status === 'failed');
    expect(dead.attempts).toBe(3);
    const history = await scheduler.history(job.id);
    expect(history.map((e) => e.type)).toEqual([
      'queued',
      'running',
      'queued',
      'running',
      'queued',
      'running',
      'failed',
    ]);
    await worker.stop(1000);
  });

  it('stops a running job as soon as it is cancelled in this process', async () => {
    const worker = new Worker({ scheduler, notifier, log }, { concurrency: 1, pollMs: 50 });
    worker.start();
    const job = await enqueue({ sleepMs: 30_000 });
    await waitFor(job.id, (j) => j.status === 'running');
    const asked = Date.now();
    await t.knex.transaction((trx) => scheduler.cancel(trx, job.id, 'test'));
    await waitFor(job.id, (j) => j.status === 'cancelled', 3000);
    expect(Date.now() - asked).toBeLessThan(1500);
    await worker.stop(1000);
  });

  it('gives back a job still running when the grace period ends, without counting the attempt', async () => {
    const worker = new Worker({ scheduler, notifier, log }, { concurrency: 1, pollMs: 50 });
    worker.start();
    const job = await enqueue({ sleepMs: 30_000 });
    await waitFor(job.id, (j) => j.status === 'running');
    await worker.stop(100);
    expect(await scheduler.find(job.id)).toMatchObject({ status: 'queued', attempts: 0 });
    await t.knex.transaction((trx) => scheduler.cancel(trx, job.id, 'clean up'));
  });

  it('lets a running job finish within the grace period', async () => {
    const worker = new Worker({ scheduler, notifier, log }, { concurrency: 1, pollMs: 50 });
    worker.start();
    const job = await enqueue({ sleepMs: 300 });
    await waitFor(job.id, (j) => j.status === 'running');
    await worker.stop(5000);
    expect((await scheduler.find(job.id))?.status).toBe('finished');
  });
});
