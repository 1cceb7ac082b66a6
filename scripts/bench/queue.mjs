// Figure 5 of `make bench` (see run.mjs): the scheduler's throughput on no-op jobs, enqueue → done,
// on SQLite and PostgreSQL, next to the floor of the same database doing the bare minimum per job.
//
// Scheduler: BENCH_JOBS noop jobs are enqueued one per transaction (as API requests would) while
// one in-process worker of BENCH_WORKER_CONCURRENCY slots (dist/src/backends/scheduler/worker.js)
// runs them; the clock runs from the first enqueue to the last job finished. Each job is a claim
// (lease, attempt, history event), a heartbeat-free no-op and a fenced completion (history event).
// Latency is each job's created_at → finished_at. Baseline, same database, same concurrency: a bare
// knex loop doing per job only what any durable queue must (insert a row; claim one row with an
// UPDATE … RETURNING; mark it done), no leases, no events, no fencing. "ratio" is scheduler jobs/s
// over baseline jobs/s: what Atrium's guarantees cost over the database's own floor.
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { printTable, ratio, count, ms } from './harness.mjs';

const dist = join(import.meta.dirname, '..', '..', 'dist', 'src');

async function load() {
  const [
    { openDatabase, migrate },
    { Scheduler },
    { Worker },
    { noopHandler },
    { Notifier },
    { createLogger },
  ] = await Promise.all([
    import(join(dist, 'db', 'database.js')),
    import(join(dist, 'backends', 'scheduler', 'scheduler.js')),
    import(join(dist, 'backends', 'scheduler', 'worker.js')),
    import(join(dist, 'backends', 'scheduler', 'noop.js')),
    import(join(dist, 'services', 'notifier.js')),
    import(join(dist, 'log.js')),
  ]);
  return { openDatabase, migrate, Scheduler, Worker, noopHandler, Notifier, createLogger };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function schedulerRun(lib, database, jobs, concurrency) {
  const notifier = new lib.Notifier();
  const scheduler = new lib.Scheduler({
    db: database.knex,
    clock: () => new Date(),
    log: lib.createLogger('silent'),
    notifier,
    options: { leaseMs: 30_000, maxAttempts: 3, backoffMs: 100, maxBackoffMs: 1000 },
  });
  scheduler.register('noop', lib.noopHandler);
  const worker = new lib.Worker(
    { scheduler, notifier, log: lib.createLogger('silent') },
    { concurrency, pollMs: 50 },
  );
  const started = performance.now();
  worker.start();
  const ids = [];
  for (let i = 0; i < jobs; i++) {
    const job = await database.knex.transaction((trx) =>
      scheduler.enqueue(trx, { kind: 'noop', projectId: null, payload: {} }),
    );
    ids.push(job.id);
  }
  const enqueued = performance.now();
  const deadline = Date.now() + 600_000;
  for (let i = 0; i < 100_000 && Date.now() < deadline; i++) {
    const open = await database.knex('jobs').whereNot('status', 'finished').count({ n: '*' }).first();
    if (Number(open.n) === 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const done = performance.now();
  await worker.stop(1000);
  const rows = await database.knex('jobs').select('created_at', 'finished_at', 'status');
  const unfinished = rows.filter((r) => r.status !== 'finished').length;
  if (unfinished > 0) throw new Error(`${unfinished} of ${jobs} noop jobs did not finish`);
  const latencies = rows
    .map((r) => Date.parse(r.finished_at) - Date.parse(r.created_at))
    .sort((a, b) => a - b);
  await database.knex('job_events').del();
  await database.knex('jobs').del();
  return {
    jobsPerSecond: (jobs * 1000) / (done - started),
    enqueuePerSecond: (jobs * 1000) / (enqueued - started),
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
  };
}

/** The floor: insert, claim by UPDATE … RETURNING, mark done; the same concurrency, nothing else. */
async function baselineRun(database, jobs, concurrency) {
  const knex = database.knex;
  await knex.schema.dropTableIfExists('bench_queue');
  await knex.schema.createTable('bench_queue', (t) => {
    t.increments('id');
    t.string('status', 10).notNullable();
    t.string('created_at', 30).notNullable();
    t.string('finished_at', 30);
    t.index(['status', 'id']);
  });
  const started = performance.now();
  let producing = true;
  const producer = (async () => {
    for (let i = 0; i < jobs; i++) {
      await knex('bench_queue').insert({ status: 'queued', created_at: new Date().toISOString() });
    }
    producing = false;
  })();
  const consumer = async () => {
    for (let i = 0; i < jobs * 10; i++) {
      const next = knex('bench_queue').select('id').where({ status: 'queued' }).orderBy('id').limit(1);
      if (database.engine === 'postgres') next.forUpdate().skipLocked();
      const claimed = await knex('bench_queue')
        .where('id', next)
        .where({ status: 'queued' })
        .update({ status: 'running' })
        .returning('id');
      if (claimed.length === 0) {
        if (!producing) return;
        await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      await knex('bench_queue')
        .where({ id: claimed[0].id })
        .update({ status: 'done', finished_at: new Date().toISOString() });
    }
  };
  await Promise.all([producer, ...Array.from({ length: concurrency }, consumer)]);
  const leftover = await knex('bench_queue').whereNot('status', 'done').count({ n: '*' }).first();
  if (Number(leftover.n) !== 0) {
    // The consumers stopped when the producer did; finish what remains.
    await consumer();
  }
  const done = performance.now();
  const rows = await knex('bench_queue').select('created_at', 'finished_at');
  const latencies = rows
    .map((r) => Date.parse(r.finished_at) - Date.parse(r.created_at))
    .sort((a, b) => a - b);
  await knex.schema.dropTable('bench_queue');
  return {
    jobsPerSecond: (jobs * 1000) / (done - started),
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
  };
}

export async function figureQueueThroughput(settings, engines) {
  const lib = await load();
  const { jobs, workerConcurrency: concurrency } = settings;
  console.log(
    `5. Scheduler throughput: ${jobs} noop jobs, enqueue → done, one worker of ${concurrency} slots (in-process)`,
  );
  const rows = [];
  for (const { label, databaseUrl, dataDir } of engines) {
    const database = lib.openDatabase(databaseUrl, dataDir);
    try {
      await lib.migrate(database);
      // A short warm-up of each, not counted.
      await schedulerRun(lib, database, Math.min(100, jobs), concurrency);
      await baselineRun(database, Math.min(100, jobs), concurrency);
      const scheduler = await schedulerRun(lib, database, jobs, concurrency);
      const baseline = await baselineRun(database, jobs, concurrency);
      rows.push(
        [
          label,
          'bare queue (insert, claim, done)',
          count(baseline.jobsPerSecond),
          '',
          ms(baseline.p50),
          ms(baseline.p95),
          '',
        ],
        [
          '',
          'Atrium scheduler',
          count(scheduler.jobsPerSecond),
          count(scheduler.enqueuePerSecond),
          ms(scheduler.p50),
          ms(scheduler.p95),
          ratio(scheduler.jobsPerSecond / baseline.jobsPerSecond),
        ],
      );
    } finally {
      await database.close();
    }
  }
  printTable(['database', 'queue', 'jobs/s', 'enqueues/s', 'p50 ms', 'p95 ms', 'ratio'], rows, 2);
}
