// Figure 5 of `make bench` (see run.mjs): the scheduler's throughput on no-op jobs, enqueue → done,
// on SQLite and PostgreSQL, next to the floor of the same database doing the bare minimum per job.
// Runs alone too: `node scripts/bench/queue.mjs` (after `npm run build`) measures SQLite in a
// scratch directory, and PostgreSQL when ATRIUM_BENCH_DATABASE_URL names an admin postgres:// URL
// (a scratch database is created there and dropped); settings as below.
//
// Three queues, side by side in one run, each fed the same way: BENCH_JOBS jobs enqueued one per
// transaction (as API requests would) by BENCH_ENQUEUERS concurrent producers (4) in this process.
// - "bare queue": a knex loop doing per job only what any durable queue must (insert a row in the
//   producer's transaction; claim one row with an UPDATE … RETURNING; mark it done),
//   BENCH_WORKER_CONCURRENCY consumers in this process; no leases, history, fencing or wake-ups (an
//   idle consumer polls every millisecond). Its insert runs in a transaction of its own, as
//   Atrium's enqueue does: Atrium's guarantee is that a job is queued with the writes of the
//   request that queues it (or not at all), and a queue that offers the same must be given the
//   same BEGIN and COMMIT, not an autocommit insert.
// - "Atrium, in-process worker": the scheduler's enqueue, and one Worker of
//   BENCH_WORKER_CONCURRENCY slots in this process (dist/src/backends/scheduler/worker.js), as
//   `atrium serve` runs it. Each job is a claim (lease, attempt, history event), a no-op and a
//   fenced completion (history event).
// - "Atrium, N worker processes": the same enqueue here, worked by BENCH_WORKER_PROCESSES (2)
//   `atrium worker --concurrency BENCH_WORKER_CONCURRENCY` processes (dist/src/cli.js), started
//   and idle before the clock starts. They hear of new jobs by NOTIFY on PostgreSQL and by reading
//   SQLite's data_version every few milliseconds.
// Workers are configured with pollMs 50 (the in-process one too). jobs/s runs from the first enqueue
// to the last job's finished_at; "ratio" is over the bare queue's jobs/s: what Atrium's guarantees
// cost over the database's own floor. Latencies are per job, from the database's timestamps
// (millisecond resolution): enqueue → start is created_at → started_at (the claim), enqueue → done
// created_at → finished_at. Each queue gets a short warm-up (100 jobs) first, not counted; then
// BENCH_ROUNDS rounds (3) taking turns, and the round of median jobs/s is shown.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { count, ms, onCleanUp, printTable, ratio, withPostgresDatabase, withTimeout } from './harness.mjs';

const dist = join(import.meta.dirname, '..', '..', 'dist', 'src');
const cli = join(dist, 'cli.js');
const pollMs = 50;
const warmupJobs = 100;
const runTimeoutMs = 600_000;

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
    import(join(dist, 'notifier.js')),
    import(join(dist, 'log.js')),
  ]);
  return { openDatabase, migrate, Scheduler, Worker, noopHandler, Notifier, createLogger };
}

/** The round of median jobs/s (its latencies with it). */
function median(results) {
  const sorted = [...results].sort((a, b) => a.jobsPerSecond - b.jobsPerSecond);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** Calls `enqueueOne` `jobs` times from `enqueuers` concurrent producers. */
async function produce(jobs, enqueuers, enqueueOne) {
  let next = 0;
  const producer = async () => {
    while (next < jobs) {
      next += 1;
      await enqueueOne();
    }
  };
  await Promise.all(Array.from({ length: Math.min(enqueuers, jobs) }, producer));
}

/** Polls until `open()` is 0, within the run's time bound. */
async function drained(open, what) {
  const deadline = Date.now() + runTimeoutMs;
  while (Date.now() < deadline) {
    if ((await open()) === 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${what}: not done after ${runTimeoutMs / 1000} s`);
}

/** jobs/s and the latency percentiles of finished rows, the clock started at `startedAt` (epoch ms). */
function summarise(rows, jobs, startedAt) {
  const unfinished = rows.filter((r) => !r.finished_at).length;
  if (unfinished > 0 || rows.length !== jobs) {
    throw new Error(`${unfinished} of ${jobs} jobs did not finish (${rows.length} rows)`);
  }
  const sorted = (f) => rows.map(f).sort((a, b) => a - b);
  const toStart = sorted((r) => Date.parse(r.started_at) - Date.parse(r.created_at));
  const toDone = sorted((r) => Date.parse(r.finished_at) - Date.parse(r.created_at));
  const lastDone = Math.max(...rows.map((r) => Date.parse(r.finished_at)));
  return {
    jobsPerSecond: (jobs * 1000) / Math.max(1, lastDone - startedAt),
    startP50: percentile(toStart, 50),
    startP95: percentile(toStart, 95),
    doneP50: percentile(toDone, 50),
    doneP95: percentile(toDone, 95),
  };
}

/** A scheduler as `atrium serve` builds one, with its notifier (an in-process worker must share it). */
function newScheduler(lib, database) {
  const notifier = new lib.Notifier();
  const scheduler = new lib.Scheduler({
    db: database.knex,
    clock: () => new Date(),
    log: lib.createLogger('silent'),
    notifier,
    options: { leaseMs: 30_000, maxAttempts: 3, backoffMs: 100, maxBackoffMs: 1000 },
  });
  scheduler.register('noop', lib.noopHandler);
  return { scheduler, notifier };
}

/** Enqueues `jobs` noop jobs through `scheduler` and waits until every one finished. */
async function schedulerRun(database, scheduler, jobs, settings, what) {
  const knex = database.knex;
  const startedAt = Date.now();
  await produce(jobs, settings.enqueuers, () =>
    knex.transaction((trx) => scheduler.enqueue(trx, { kind: 'noop', projectId: null, payload: {} })),
  );
  await drained(async () => {
    const open = await knex('jobs').whereNot('status', 'finished').count({ n: '*' }).first();
    return Number(open.n);
  }, what);
  const rows = await knex('jobs').select('created_at', 'started_at', 'finished_at');
  await knex('job_events').del();
  await knex('jobs').del();
  return summarise(rows, jobs, startedAt);
}

/** Atrium's scheduler with one Worker in this process. */
async function inProcessRun(lib, database, jobs, settings) {
  const { scheduler, notifier } = newScheduler(lib, database);
  const worker = new lib.Worker(
    { scheduler, notifier, log: lib.createLogger('silent') },
    { concurrency: settings.workerConcurrency, pollMs },
  );
  worker.start();
  try {
    return await schedulerRun(database, scheduler, jobs, settings, 'in-process worker');
  } finally {
    await worker.stop(1000);
  }
}

/** Starts `atrium worker` processes on the database and resolves once each said it started. */
async function startWorkerProcesses(engine, settings, scratch) {
  const configFile = join(scratch, 'queue-worker.json');
  writeFileSync(configFile, JSON.stringify({ scheduler: { pollMs }, log: { level: 'info' } }));
  const children = [];
  const stop = async () => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', resolve);
            child.kill('SIGTERM');
          }),
      ),
    );
  };
  const forget = onCleanUp(stop);
  try {
    await Promise.all(
      Array.from({ length: settings.workerProcesses }, () => {
        const child = spawn(
          process.execPath,
          [cli, 'worker', '--concurrency', String(settings.workerConcurrency), '--kinds', 'noop'],
          {
            env: {
              PATH: process.env.PATH ?? '',
              ATRIUM_CONFIG: configFile,
              ATRIUM_DATA_DIR: engine.dataDir,
              ATRIUM_DATABASE_URL: engine.databaseUrl,
            },
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        children.push(child);
        let stderr = '';
        child.stderr.on('data', (d) => (stderr = (stderr + String(d)).slice(-4000)));
        return withTimeout(
          new Promise((resolve, reject) => {
            let stdout = '';
            const onData = (d) => {
              stdout += String(d);
              if (stdout.includes('"worker started"')) {
                child.stdout.off('data', onData);
                child.stdout.resume();
                resolve();
              }
            };
            child.stdout.on('data', onData);
            child.once('exit', (code) => reject(new Error(`atrium worker exited with ${code}: ${stderr}`)));
          }),
          120_000,
          'starting an atrium worker',
        );
      }),
    );
  } catch (error) {
    await stop();
    forget();
    throw error;
  }
  return async () => {
    await stop();
    forget();
  };
}

async function processesRun(lib, database, engine, jobs, settings, scratch) {
  const stop = await startWorkerProcesses(engine, settings, scratch);
  try {
    const { scheduler } = newScheduler(lib, database);
    return await schedulerRun(database, scheduler, jobs, settings, 'worker processes');
  } finally {
    await stop();
  }
}

/** The floor: insert, claim by UPDATE … RETURNING, mark done; the same producers and concurrency. */
async function baselineRun(database, jobs, settings) {
  const knex = database.knex;
  await knex.schema.dropTableIfExists('bench_queue');
  await knex.schema.createTable('bench_queue', (t) => {
    t.increments('id');
    t.string('status', 10).notNullable();
    t.string('created_at', 30).notNullable();
    t.string('started_at', 30);
    t.string('finished_at', 30);
    t.index(['status', 'id']);
  });
  const startedAt = Date.now();
  let producing = true;
  const producer = produce(jobs, settings.enqueuers, () =>
    knex.transaction((trx) =>
      trx('bench_queue').insert({ status: 'queued', created_at: new Date().toISOString() }),
    ),
  ).finally(() => (producing = false));
  const consumer = async () => {
    for (;;) {
      const next = knex('bench_queue').select('id').where({ status: 'queued' }).orderBy('id').limit(1);
      if (database.engine === 'postgres') next.forUpdate().skipLocked();
      const claimed = await knex('bench_queue')
        .where('id', next)
        .where({ status: 'queued' })
        .update({ status: 'running', started_at: new Date().toISOString() })
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
  await Promise.all([producer, ...Array.from({ length: settings.workerConcurrency }, consumer)]);
  // A consumer that found the queue empty just before the last insert stopped; finish what remains.
  await consumer();
  const rows = await knex('bench_queue').select('created_at', 'started_at', 'finished_at');
  await knex.schema.dropTable('bench_queue');
  return summarise(rows, jobs, startedAt);
}

/** The settings figure 5 reads, with their defaults (run.mjs passes jobs and workerConcurrency). */
function queueSettings(settings) {
  const integer = (value, name, fallback) => {
    const n = Number(value ?? process.env[name] ?? fallback);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name}: expected a positive integer`);
    return n;
  };
  return {
    jobs: integer(settings.jobs, 'BENCH_JOBS', 2000),
    workerConcurrency: integer(settings.workerConcurrency, 'BENCH_WORKER_CONCURRENCY', 8),
    workerProcesses: integer(settings.workerProcesses, 'BENCH_WORKER_PROCESSES', 2),
    enqueuers: integer(settings.enqueuers, 'BENCH_ENQUEUERS', 4),
    rounds: integer(settings.rounds, 'BENCH_ROUNDS', 3),
  };
}

export async function figureQueueThroughput(settings, engines) {
  const lib = await load();
  const queue = queueSettings(settings);
  const { jobs, workerConcurrency, workerProcesses, enqueuers } = queue;
  console.log(
    `5. Scheduler throughput: ${jobs} noop jobs enqueued one per transaction by ${enqueuers} producers, ` +
      `enqueue → done; ${workerConcurrency} slots per worker (in-process, or in each of ` +
      `${workerProcesses} \`atrium worker\` processes); median of ${queue.rounds} rounds`,
  );
  const rows = [];
  for (const engine of engines) {
    const scratch = mkdtempSync(join(tmpdir(), 'atrium-queue-'));
    const database = lib.openDatabase(engine.databaseUrl, engine.dataDir);
    try {
      await lib.migrate(database);
      const cases = [
        ['bare queue (insert in a transaction, claim, done)', (n) => baselineRun(database, n, queue)],
        ['Atrium, in-process worker', (n) => inProcessRun(lib, database, n, queue)],
        [
          `Atrium, ${workerProcesses} worker processes`,
          (n) => processesRun(lib, database, engine, n, queue, scratch),
        ],
      ];
      for (const [, run] of cases) await run(Math.min(warmupJobs, jobs));
      // Rounds take turns, so that the machine's other load falls on every queue alike.
      const rounds = cases.map(() => []);
      for (let round = 0; round < queue.rounds; round++) {
        for (const [i, [, run]] of cases.entries()) rounds[i].push(await run(jobs));
      }
      const results = cases.map(([label], i) => [label, median(rounds[i])]);
      const bare = results[0][1].jobsPerSecond;
      results.forEach(([label, r], i) =>
        rows.push([
          i === 0 ? engine.label : '',
          label,
          count(r.jobsPerSecond),
          i === 0 ? '' : ratio(r.jobsPerSecond / bare),
          ms(r.startP50),
          ms(r.startP95),
          ms(r.doneP50),
          ms(r.doneP95),
        ]),
      );
    } finally {
      await database.close();
      rmSync(scratch, { recursive: true, force: true });
    }
  }
  printTable(
    ['database', 'queue', 'jobs/s', 'ratio', 'start p50 ms', 'start p95 ms', 'done p50 ms', 'done p95 ms'],
    rows,
    2,
  );
}

async function main() {
  const scratch = mkdtempSync(join(tmpdir(), 'atrium-bench-queue-'));
  try {
    const sqlite = {
      label: 'SQLite',
      databaseUrl: `sqlite://${join(scratch, 'queue.db')}`,
      dataDir: scratch,
    };
    const adminUrl = process.env.ATRIUM_BENCH_DATABASE_URL;
    if (adminUrl) {
      await withPostgresDatabase(adminUrl, scratch, (postgres) =>
        figureQueueThroughput({}, [sqlite, { label: 'PostgreSQL', ...postgres }]),
      );
    } else {
      await figureQueueThroughput({}, [sqlite]);
      console.log(
        '(PostgreSQL skipped: set ATRIUM_BENCH_DATABASE_URL to an admin postgres:// URL to include it)',
      );
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
