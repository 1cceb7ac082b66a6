// `make bench`: throughput and latency of the compiled app (dist/), each figure set against a
// baseline measured in the same run, on the same machine, with the same load generator. Figures,
// never pass/fail thresholds; the run fails only when a request does (any non-2xx, socket error or
// timeout, or a launch or delete that does not succeed), because a figure that includes failures
// means nothing.
//
// 1. GET /api/v1/catalogs/bench/packages?limit=20 on a generated catalog of BENCH_PACKAGES packages
//    (the only catalog configured): Atrium next to a bare node:http server that runs the same knex
//    query (the catalog's packages by name, limit 21) on the same database and JSON-encodes the same
//    {items, next_cursor} (the run checks that the bodies are identical). "Atrium / bare" is the price
//    of everything Atrium adds: Express, the OpenAPI validator, request ids, metrics, security headers
//    and the dispatcher (both make one query for a page with packages in it).
//    On SQLite, and also on PostgreSQL when ATRIUM_BENCH_DATABASE_URL (an admin postgres:// URL) is
//    set; a temporary database is created there and dropped afterwards.
// 2. The same request, and GET /api/v1/regions (no database: routing and validation alone), on apps
//    built from the real spec and from the real spec padded with BENCH_EXTRA_PATHS synthetic paths
//    (/bench/p{i}/items/{id}, each bound to a handler). "req/s ratio" is req/s over that of the real
//    spec, "CPU/req ratio" the server's CPU time per request over that of the real spec: both about
//    1.00 means the cost of a request does not grow with the size of the spec; req/s falling (and
//    CPU/req rising) as paths are added means something scans the whole spec on every request.
//    The intro line says whether scripts/patches/ made express-openapi-validator's route lookup a
//    trie (the fix for exactly that).
// 3. Launch to running (scripts/bench/launch.mjs): the real `atrium serve` (dist/src/cli.js; its
//    defaults: rate limiter on, log level warn) on SQLite in a scratch data dir, BENCH_LAUNCHES
//    sequential POST /api/v1/projects/user-admin/services {"catalog_id":"demo","package":"echo"}
//    with Prefer: wait=30, each timed from the request to its 202, which must carry the succeeded
//    operation; then the operation's created_at → finished_at (server side), split by the service's
//    events into created → echo process spawned → /healthz answered the supervisor → operation
//    succeeded; and the DELETE (Prefer: wait=30) that follows each launch. The baseline, taking
//    turns with the launches: node echo.mjs spawned directly (same Node, PORT and HOST), probed
//    every 5 ms until /healthz answers. The ratios are what Atrium adds (supervisor, health probing,
//    bookkeeping, polling) to starting the program. p50/p95 are nearest-rank over the launches, after
//    one warm-up launch of each (printed, not counted). No process may outlive its delete: whatever
//    still runs under the scratch data dir is killed by PID and reported.
// 4. GET /api/v1/projects/{p}/services?limit=20 (scripts/bench/service-list.mjs) in projects of
//    each of BENCH_SERVICES services, on one server: the admin's first page, the admin's middle page
//    (reached by following next_cursor), and the first page of a member who owns only the 20 oldest
//    services (a member sees their own and the shared ones: a filtered list). The services are rows
//    inserted straight into the database (suspended echo services; no process, no quota); on
//    PostgreSQL the tables are then ANALYZEd, as autovacuum would have done on a live server.
//    "req/s ratio", "p99 ratio" and "CPU/req ratio" are to the smallest project: about 1.00 means a
//    page costs the same however many services the project holds (keyset pagination on an index);
//    rising with the total means something scans the project. On SQLite, and on PostgreSQL with
//    ATRIUM_BENCH_DATABASE_URL (in the same database as figure 1).
// 5. Scheduler throughput (scripts/bench/queue.mjs): noop jobs enqueued one per transaction by
//    BENCH_ENQUEUERS producers, run by an in-process worker and by BENCH_WORKER_PROCESSES `atrium
//    worker` processes, enqueue → start and → done; next to a bare queue on the same database
//    (insert in a transaction, claim by UPDATE … RETURNING, mark done: no leases, history or
//    fencing). On SQLite, and on PostgreSQL with ATRIUM_BENCH_DATABASE_URL.
// 6. Pipeline tasks (scripts/bench/tasks.mjs): one-task runs of text.word-count through `atrium
//    serve` and BENCH_TASK_WORKERS `atrium worker` processes of BENCH_TASK_SLOTS slots, next to the
//    same workload spawned directly at the same concurrency. On SQLite, and on PostgreSQL.
// 7. The gateway (scripts/bench/gateway.mjs): GET /bench?x=1 on the demo echo service launched
//    through `atrium serve`, reached through its gateway URL (/services/{project}/{service}/http/…,
//    bearer token), next to the same echo.mjs spawned directly and reached on its own port. "req/s
//    ratio" and "p99 ratio" are the gateway's to the direct path: the price of authentication,
//    access checks and one more hop.
// Figure 1 also shows the server's memory (RSS after a full GC) idle and after the figure, next to
// the bare server's; on SQLite it measures the bare server with better-sqlite3 too (the driver
// decision: scripts/bench/drivers.mjs installs it into .bench/drivers for the bench only).
//
// How to read it: every case is measured BENCH_ROUNDS times, the cases taking turns, and the median
// round is shown; "req/s range" is the lowest and highest of the rounds, so a ratio inside that noise
// means nothing. req/s is the mean over one measured window; p50/p99 are per-request latencies
// (1 % resolution); "server CPU" is the server process's CPU over the window (100 % = one core; more
// when database work runs on libuv threads) and "load-gen CPU" the generator's. A server near
// 100 % while the generator has headroom is the server's limit, which is what we want to measure; if
// the generator is the one near 100 %, the ratios understate the difference. "CPU µs/req" is the
// server's CPU time per request (median of the rounds): other load on the machine disturbs it far
// less than req/s, so trust it when the req/s ranges are wide. Ratios are what carry from one
// machine to another; the absolute numbers are of this machine only. Figure 3 is one request at a
// time, so it is as noisy as the machine: compare its rows with the baseline of the same run.
//
// Each server of figures 1, 2 and 4 is a child process (scripts/bench/server.mjs) listening on
// 127.0.0.1 at a free port; this process is the load generator (scripts/bench/load.mjs):
// BENCH_CONNECTIONS keep-alive connections, BENCH_WARMUP_SECONDS of warm-up per case, then
// BENCH_SECONDS per measured round. The shared machinery is in scripts/bench/harness.mjs.
// Settings (environment): BENCH_SECONDS (5), BENCH_WARMUP_SECONDS (2), BENCH_ROUNDS (3),
// BENCH_CONNECTIONS (32), BENCH_PACKAGES (500), BENCH_EXTRA_PATHS (200,1000), BENCH_LAUNCHES (20),
// BENCH_SERVICES (100,10000), BENCH_JOBS (2000), BENCH_WORKER_CONCURRENCY (8),
// ATRIUM_BENCH_DATABASE_URL (unset; `make bench` sets it when PostgreSQL answers on 127.0.0.1:5432),
// BENCH_FIGURES (1,2,3,4,5,6,7: which figures), BENCH_TASKS (120), BENCH_TASK_WORKERS (3),
// BENCH_TASK_SLOTS (4), BENCH_TASK_ROUNDS (3).
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCatalog } from './catalog.mjs';
import {
  BenchFailure,
  cleanUp,
  count,
  measureCases,
  mib,
  ms,
  onCleanUp,
  percent,
  printTable,
  range,
  ratio,
  startServer,
  withPostgresDatabase,
} from './harness.mjs';
import { ensureBetterSqlite3 } from './drivers.mjs';
import { figureGateway } from './gateway.mjs';
import { figureLaunchLatency } from './launch.mjs';
import { fetchOnce } from './load.mjs';
import { figureQueueThroughput } from './queue.mjs';
import { figureServiceList } from './service-list.mjs';
import { figurePipelineTasks } from './tasks.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const builtApp = join(here, '..', '..', 'dist', 'src', 'app.js');
const bundledSpec = join(here, '..', '..', 'generated', 'openapi.json');
const validatorMetadata = join(
  here,
  '..',
  '..',
  'node_modules',
  'express-openapi-validator',
  'dist',
  'middlewares',
  'openapi.metadata.js',
);

const catalogId = 'bench';
const regionsPath = '/api/v1/regions';
const packagesPath = `/api/v1/catalogs/${catalogId}/packages?limit=20`;
const pageSize = 20;

// Set on Ctrl-C: the measurement then failing (its servers gone) is not news.
let interrupted = false;

function numberSetting(name, fallback, { min, max, integer = false }) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
    throw new BenchFailure(
      `${name}=${raw}: expected ${integer ? 'an integer' : 'a number'} in [${min}, ${max}]`,
    );
  }
  return value;
}

/** A comma-separated list of integers in [min, max], sorted, without duplicates. */
function listSetting(name, fallback, { min, max }) {
  const raw = process.env[name] || fallback;
  const values = raw
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean)
    .map(Number);
  if (values.length === 0 || values.some((n) => !Number.isInteger(n) || n < min || n > max)) {
    throw new BenchFailure(`${name}=${raw}: expected comma-separated integers in [${min}, ${max}]`);
  }
  return [...new Set(values)].sort((a, b) => a - b);
}

function readSettings() {
  const extraPaths = listSetting('BENCH_EXTRA_PATHS', '200,1000', { min: 1, max: 20_000 });
  return {
    seconds: numberSetting('BENCH_SECONDS', 5, { min: 0.5, max: 600 }),
    warmupSeconds: numberSetting('BENCH_WARMUP_SECONDS', 2, { min: 0, max: 600 }),
    connections: numberSetting('BENCH_CONNECTIONS', 32, { min: 1, max: 1024, integer: true }),
    rounds: numberSetting('BENCH_ROUNDS', 3, { min: 1, max: 100, integer: true }),
    packages: numberSetting('BENCH_PACKAGES', 500, { min: pageSize + 1, max: 10_000, integer: true }),
    extraPaths: [0, ...extraPaths],
    launches: numberSetting('BENCH_LAUNCHES', 20, { min: 1, max: 1000, integer: true }),
    // A middle page needs a full page before it and a full page itself.
    serviceCounts: listSetting('BENCH_SERVICES', '100,10000', { min: 2 * pageSize + 1, max: 100_000 }),
    jobs: numberSetting('BENCH_JOBS', 2000, { min: 10, max: 1_000_000, integer: true }),
    workerConcurrency: numberSetting('BENCH_WORKER_CONCURRENCY', 8, { min: 1, max: 64, integer: true }),
    // Figure 6 (scripts/bench/tasks.mjs).
    tasks: numberSetting('BENCH_TASKS', 120, { min: 1, max: 100_000, integer: true }),
    taskWorkers: numberSetting('BENCH_TASK_WORKERS', 3, { min: 1, max: 64, integer: true }),
    taskSlots: numberSetting('BENCH_TASK_SLOTS', 4, { min: 1, max: 64, integer: true }),
    taskRounds: numberSetting('BENCH_TASK_ROUNDS', 3, { min: 1, max: 100, integer: true }),
    postgresAdminUrl: process.env.ATRIUM_BENCH_DATABASE_URL || null,
    // BENCH_FIGURES=1,4: only those figures (all by default).
    figures: new Set(listSetting('BENCH_FIGURES', '1,2,3,4,5,6,7', { min: 1, max: 7 })),
    realPaths: Object.keys(JSON.parse(readFileSync(bundledSpec, 'utf8')).paths).length,
  };
}

async function expectOk(server, path) {
  const response = await fetchOnce(server.port, path);
  if (response.status !== 200) {
    throw new BenchFailure(
      `GET ${path} on ${server.label} answered ${response.status}: ${response.body.slice(0, 300)}`,
    );
  }
  return response.body;
}

/** Both servers must answer the package list with the same bytes: a full page and a next cursor. */
async function expectSamePage(reference, other) {
  const expected = await expectOk(reference, packagesPath);
  const actual = await expectOk(other, packagesPath);
  const page = JSON.parse(expected);
  if (page.items?.length !== pageSize || typeof page.next_cursor !== 'string') {
    throw new BenchFailure(
      `${reference.label} did not return a full page with a next cursor: ${expected.slice(0, 300)}`,
    );
  }
  if (actual !== expected) {
    throw new BenchFailure(
      `${other.label} and ${reference.label} return different package pages:\n  ${actual.slice(0, 300)}\n  ${expected.slice(0, 300)}`,
    );
  }
}

// ---- Figures ----------------------------------------------------------------------------------

async function figureBareVsAtrium(settings, engineName, database) {
  console.log(
    `1. GET ${packagesPath}: Atrium against bare node:http (${settings.packages} packages, ${engineName})`,
  );
  const servers = [];
  try {
    const atrium = await startServer(`Atrium (${engineName})`, {
      kind: 'atrium',
      ...database,
      catalogId,
      extraPaths: 0,
    });
    servers.push({ name: 'Atrium', server: atrium });
    const uncached = await startServer(`Atrium, page cache off (${engineName})`, {
      kind: 'atrium',
      ...database,
      catalogId,
      extraPaths: 0,
      cache: { catalogPagesMs: 0 },
    });
    servers.push({ name: 'Atrium, page cache off', server: uncached });
    const bare = await startServer(`bare node:http (${engineName})`, { kind: 'bare', ...database });
    servers.unshift({ name: 'bare node:http', server: bare });
    let driverNote = null;
    if (engineName === 'SQLite') {
      driverNote = await ensureBetterSqlite3();
      if (!driverNote) {
        const better = await startServer('bare node:http, better-sqlite3', {
          kind: 'bare',
          ...database,
          driver: 'better-sqlite3',
        });
        servers.splice(1, 0, { name: 'bare, better-sqlite3', server: better });
      }
    }
    for (const { server } of servers.slice(1)) await expectSamePage(bare, server);
    const idle = await Promise.all(servers.map(({ server }) => server.memory()));
    const results = await measureCases(
      settings,
      servers.map(({ server }) => ({ server, path: packagesPath })),
    );
    const after = await Promise.all(servers.map(({ server }) => server.memory()));
    const base = results[0];
    const row = (name, r, i) => [
      name,
      count(r.rps),
      range(r),
      ms(r.p50),
      ms(r.p99),
      count(r.errors),
      percent(r.serverCpu),
      count(r.cpuPerRequest),
      percent(r.generatorCpu),
      i === 0 ? '' : ratio(r.rps / base.rps),
      i === 0 ? '' : ratio(base.cpuPerRequest / r.cpuPerRequest),
      mib(idle[i].rss),
      mib(after[i].rss),
    ];
    printTable(
      [
        'server',
        'req/s',
        'req/s range',
        'p50 ms',
        'p99 ms',
        'errors',
        'server CPU',
        'CPU µs/req',
        'load-gen CPU',
        'req/s ÷ bare',
        'bare CPU ÷ CPU',
        'RSS idle',
        'RSS after',
      ],
      servers.map(({ name }, i) => row(name, results[i], i)),
    );
    console.log(
      '  (÷ bare: above 1 is faster than bare; "Atrium" serves the page from memory between catalog loads, ' +
        '"page cache off" makes the query on every request as bare does; RSS after a full GC, idle = before the warm-up' +
        `${engineName === 'PostgreSQL' ? "; the database server's CPU is not in CPU µs/req" : ''})`,
    );
    if (engineName === 'SQLite') {
      const better = servers.findIndex(({ name }) => name === 'bare, better-sqlite3');
      if (better < 0) console.log(`  (better-sqlite3 not measured: ${driverNote})`);
      else {
        // What the driver would buy Atrium: the query's CPU saved, on the page that makes it.
        const saved = base.cpuPerRequest - results[better].cpuPerRequest;
        const uncachedCpu =
          results[servers.findIndex(({ name }) => name === 'Atrium, page cache off')].cpuPerRequest;
        console.log(
          `  driver: better-sqlite3 saves ${count(saved)} µs/req on the bare server (${ratio(base.cpuPerRequest / results[better].cpuPerRequest)}×); ` +
            `on Atrium's page with its query that would be ${ratio(uncachedCpu / Math.max(1, uncachedCpu - saved))}×, ` +
            'and nothing on the cached page (no query): a switch is worth it at ≥ 1.50×',
        );
      }
    }
    console.log('');
  } finally {
    await Promise.all(servers.map(({ server }) => server.stop()));
  }
}

async function figureSpecSize(settings, database) {
  const specs = [];
  try {
    for (const extraPaths of settings.extraPaths) {
      const label = extraPaths === 0 ? 'real spec' : `real spec + ${extraPaths} paths`;
      const server = await startServer(`Atrium, ${label}`, {
        kind: 'atrium',
        ...database,
        catalogId,
        extraPaths,
      });
      specs.push({ extraPaths, label, server });
    }
    const reference = specs[0].server;
    for (const { extraPaths, server } of specs.slice(1)) {
      await expectSamePage(reference, server);
      await expectOk(server, `/api/v1/bench/p${extraPaths - 1}/items/last`);
    }
    const realPaths = settings.realPaths;
    console.log(
      `2. Request cost against spec size (SQLite; the real spec has ${realPaths} paths; ratios are to the real spec)`,
    );
    const cases = [packagesPath, regionsPath].flatMap((path) => specs.map((spec) => ({ ...spec, path })));
    const results = await measureCases(settings, cases);
    const rows = cases.map(({ extraPaths, label, server, path }, i) => {
      const result = results[i];
      const baseline = results[cases.findIndex((c) => c.path === path)];
      return [
        extraPaths === 0 ? `GET ${path}` : '',
        label,
        count(realPaths + extraPaths),
        count(server.createAppMs),
        count(result.rps),
        range(result),
        ms(result.p50),
        ms(result.p99),
        count(result.errors),
        count(result.cpuPerRequest),
        ratio(result.rps / baseline.rps),
        ratio(result.cpuPerRequest / baseline.cpuPerRequest),
      ];
    });
    printTable(
      [
        'request',
        'spec',
        'paths',
        'createApp ms',
        'req/s',
        'req/s range',
        'p50 ms',
        'p99 ms',
        'errors',
        'CPU µs/req',
        'req/s ratio',
        'CPU/req ratio',
      ],
      rows,
      2,
    );
  } finally {
    await Promise.all(specs.map(({ server }) => server.stop()));
  }
}

/** Whether the patch in scripts/patches/ (a trie in lookupRoute) is applied to node_modules. */
function routeLookupKind() {
  const source = existsSync(validatorMetadata) ? readFileSync(validatorMetadata, 'utf8') : '';
  return source.includes('buildRouteIndex')
    ? 'segment trie (scripts/patches/ applied)'
    : 'a regexp per route per request (scripts/patches/ NOT applied: run npm ci)';
}

async function main() {
  if (!existsSync(builtApp)) {
    throw new BenchFailure(`${builtApp} is missing: build first (npm run build, or make bench)`);
  }
  const settings = readSettings();

  const scratch = mkdtempSync(join(tmpdir(), 'atrium-bench-'));
  onCleanUp(() => rmSync(scratch, { recursive: true, force: true }));
  const onSignal = (signal) => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${signal}: stopping the servers and cleaning up`);
    cleanUp().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const catalogDir = join(scratch, 'catalog');
    writeCatalog(catalogDir, settings.packages);
    const sqlite = { databaseUrl: `sqlite://${join(scratch, 'atrium.db')}`, dataDir: scratch, catalogDir };
    console.log(
      `Atrium benchmarks — Node ${process.version}, ${availableParallelism()} CPUs (${cpus()[0]?.model.trim() ?? 'unknown'})\n` +
        `${settings.connections} keep-alive connections, ${settings.warmupSeconds} s warm-up, ` +
        `median of ${settings.rounds} round${settings.rounds === 1 ? '' : 's'} of ${settings.seconds} s per row; ` +
        'rate limiter off, log level silent, response validation off\n' +
        `express-openapi-validator route lookup: ${routeLookupKind()}\n`,
    );
    const want = (n) => settings.figures.has(n);
    if (want(1)) await figureBareVsAtrium(settings, 'SQLite', sqlite);
    if (want(2)) await figureSpecSize(settings, sqlite);
    if (want(3)) await figureLaunchLatency(settings, scratch);
    if (want(7)) await figureGateway(settings, scratch);
    if (want(4)) {
      await figureServiceList(settings, 'SQLite', {
        ...sqlite,
        databaseUrl: `sqlite://${join(scratch, 'service-list.db')}`,
      });
    }
    const taskSqlite = { label: 'SQLite', databaseUrl: null, dataDir: scratch };
    const queueEngines = [
      { label: 'SQLite', databaseUrl: `sqlite://${join(scratch, 'queue.db')}`, dataDir: scratch },
    ];
    if (settings.postgresAdminUrl) {
      if (want(1) || want(4)) {
        await withPostgresDatabase(settings.postgresAdminUrl, scratch, async (postgres) => {
          if (want(1)) await figureBareVsAtrium(settings, 'PostgreSQL', postgres);
          if (want(4)) await figureServiceList(settings, 'PostgreSQL', postgres);
        });
      }
      if (want(5)) {
        await withPostgresDatabase(settings.postgresAdminUrl, scratch, (postgres) =>
          figureQueueThroughput(settings, [...queueEngines, { label: 'PostgreSQL', ...postgres }]),
        );
      }
      if (want(6)) {
        await withPostgresDatabase(settings.postgresAdminUrl, scratch, ({ databaseUrl }) =>
          figurePipelineTasks(settings, [taskSqlite, { label: 'PostgreSQL', databaseUrl, dataDir: scratch }]),
        );
      }
    } else {
      if (want(5)) await figureQueueThroughput(settings, queueEngines);
      if (want(6)) await figurePipelineTasks(settings, [taskSqlite]);
      console.log(
        '(PostgreSQL skipped: set ATRIUM_BENCH_DATABASE_URL to an admin postgres:// URL to include it)',
      );
    }
  } finally {
    await cleanUp();
  }
}

main().catch((error) => {
  if (interrupted) return;
  console.error(`\nBENCH FAILED: ${error instanceof BenchFailure ? error.message : (error?.stack ?? error)}`);
  cleanUp().finally(() => process.exit(1));
});
