// One server under test, run as a child of run.mjs so that it has an event loop of its own. Started
// with one JSON argument:
//   {"kind":"atrium","databaseUrl":…,"dataDir":…,"catalogId":…,"catalogDir":…,"extraPaths":N,
//    "adminToken":…}
//       the compiled app (dist/), built as src/server.ts builds it, from the real spec padded with
//       N synthetic paths; with adminToken (optional), that token is registered for the admin user,
//       as ATRIUM_ADMIN_TOKEN is (the service controller is not started: no service runs); with
//       cache (optional), those settings of the config's `cache`;
//   {"kind":"bare","databaseUrl":…,"dataDir":…}  node:http answering only the package list, with
//       the same knex query shape over the same database.
// It listens on 127.0.0.1, port 0, sends {type: 'listening', port, createAppMs} over IPC, answers
// {type: 'cpu'} with its CPU usage and {type: 'memory', gc} with its RSS and heap (after a full
// collection with gc: true), and exits on SIGTERM or when run.mjs goes away.
// The bare server takes "driver": "better-sqlite3" (default "sqlite3", knex's client for SQLite),
// resolved from BENCH_DRIVERS_DIR (make bench installs it there: see scripts/bench/drivers.mjs).
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { performance } from 'node:perf_hooks';
// Atrium's modules are imported by the Atrium server only: the bare one loads knex and its driver,
// nothing else, so that its memory is that of a bare process.
import { openDatabase } from '../../dist/src/db/database.js';

async function startAtrium({ databaseUrl, dataDir, catalogId, catalogDir, extraPaths, adminToken, cache }) {
  const [
    { createApp, loadBundledSpec },
    { bootstrapAdmin },
    { readBuildInfo },
    { systemClock },
    { loadConfig },
    { controllers },
    { migrate },
    { createLogger },
    { createServices },
    { benchController, padSpec },
  ] = await Promise.all([
    import('../../dist/src/app.js'),
    import('../../dist/src/bootstrap.js'),
    import('../../dist/src/build-info.js'),
    import('../../dist/src/clock.js'),
    import('../../dist/src/config.js'),
    import('../../dist/src/controllers/index.js'),
    import('../../dist/src/db/database.js'),
    import('../../dist/src/log.js'),
    import('../../dist/src/services/index.js'),
    import('./padded-spec.mjs'),
  ]);
  const config = loadConfig({
    env: {},
    overrides: {
      dataDir,
      databaseUrl,
      validateResponses: false,
      log: { level: 'silent' },
      server: { host: '127.0.0.1', port: 0, rateLimit: { enabled: false } },
      catalogs: [{ id: catalogId, name: 'Benchmark catalog', path: catalogDir }],
      // e.g. {"catalogPagesMs": 0}: the catalog page then makes its query on every request.
      ...(cache ? { cache } : {}),
    },
  });
  const log = createLogger(config.log.level);
  const database = openDatabase(config.databaseUrl, config.dataDir);
  await migrate(database);
  const services = createServices({ config, database, clock: systemClock, log, build: readBuildInfo() });
  if (adminToken) await bootstrapAdmin(services, adminToken);
  await services.catalogs.loadAll();
  const catalog = await services.catalogs.get(catalogId);
  if (catalog.status !== 'ok') {
    throw new Error(`the benchmark catalog loaded as ${catalog.status}: ${JSON.stringify(catalog.issues)}`);
  }
  const started = performance.now();
  const app = createApp({
    config,
    database,
    services,
    log,
    ready: async () => ({ ready: true }),
    apiDoc: padSpec(loadBundledSpec(), extraPaths),
    controllers: extraPaths > 0 ? { ...controllers, bench: benchController(extraPaths) } : controllers,
  });
  const createAppMs = performance.now() - started;
  return {
    handler: app,
    createAppMs,
    close: async () => {
      await services.audit.flush();
      await database.close();
    },
  };
}

const shutdownGraceMs = 250;
const packageListPath = /^\/api\/v1\/catalogs\/([^/]+)\/packages$/;
const parseJson = (value) => (typeof value === 'string' ? JSON.parse(value) : value);

/** What Atrium's listPackages does with no filter and no cursor, and nothing else. */
async function openBareDatabase({ databaseUrl, dataDir, driver }) {
  if (driver !== 'better-sqlite3') return openDatabase(databaseUrl, dataDir);
  const { createRequire } = await import('node:module');
  const require = createRequire(import.meta.url);
  const knexFactory = require('knex');
  const BetterSqlite3Client = require('knex/lib/dialects/better-sqlite3/index.js');
  // knex's own better-sqlite3 client, given the driver from where make bench installed it.
  const Driver = createRequire(`${process.env.BENCH_DRIVERS_DIR}/`)('better-sqlite3');
  class Client extends BetterSqlite3Client {
    _driver() {
      return Driver;
    }
  }
  const knex = knexFactory({
    client: Client,
    connection: { filename: databaseUrl.replace(/^sqlite:\/\//, '') },
    useNullAsDefault: true,
  });
  await knex.raw('pragma journal_mode = wal');
  return { knex, close: () => knex.destroy() };
}

async function startBare(options) {
  const database = await openBareDatabase(options);
  const { knex } = database;
  const handler = async (req, res) => {
    try {
      const url = new URL(req.url, 'http://bench.invalid');
      const match = req.method === 'GET' ? packageListPath.exec(url.pathname) : null;
      if (!match) {
        res.writeHead(404).end();
        return;
      }
      const catalogId = decodeURIComponent(match[1]);
      const limit = Number(url.searchParams.get('limit') ?? 20);
      const rows = await knex('packages as p')
        .where('p.catalog_id', catalogId)
        .select(
          'p.catalog_id',
          'p.name',
          'p.title',
          'p.description',
          'p.icon',
          'p.keywords',
          'p.home',
          'p.latest_version',
        )
        .orderBy('p.name', 'asc')
        .limit(limit + 1);
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      const body = JSON.stringify({
        items: page.map((row) => ({
          catalog_id: row.catalog_id,
          name: row.name,
          title: row.title,
          description: row.description,
          icon: row.icon,
          keywords: parseJson(row.keywords),
          latest_version: row.latest_version,
        })),
        next_cursor:
          rows.length > limit && last
            ? Buffer.from(
                JSON.stringify({ l: `packages:${JSON.stringify([catalogId, [], null])}`, k: [last.name] }),
              ).toString('base64url')
            : null,
      });
      res.writeHead(200, {
        'Content-Type': 'application/json; charset=utf-8',
        'Content-Length': Buffer.byteLength(body),
      });
      res.end(body);
    } catch (error) {
      res.writeHead(500, { 'Content-Type': 'text/plain' }).end(String(error));
    }
  };
  return { handler, createAppMs: 0, close: () => database.close() };
}

async function main() {
  const options = JSON.parse(process.argv[2] ?? '{}');
  const target = options.kind === 'atrium' ? await startAtrium(options) : await startBare(options);
  const server = createServer(target.handler);
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    const closed = new Promise((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
    // Requests cut off mid-way (an interrupted run) may still be waiting on the database: let their
    // queries finish before the pool goes, rather than have them fail noisily.
    await new Promise((resolve) => setTimeout(resolve, shutdownGraceMs));
    await target.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('disconnect', stop);
  let profiler = null;
  process.on('message', async (message) => {
    if (message?.type === 'cpu') process.send({ type: 'cpu', usage: process.cpuUsage() });
    // Resident memory, after a full collection when asked (the children run with --expose-gc).
    if (message?.type === 'memory') {
      if (message.gc && typeof globalThis.gc === 'function') globalThis.gc();
      const { rss, heapUsed } = process.memoryUsage();
      process.send({ type: 'memory', rss, heapUsed });
    }
    // make bench-profile: a CPU profile of the requests only (start-up left out).
    if (message?.type === 'profile-start') {
      const { Session } = await import('node:inspector/promises');
      profiler = new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.setSamplingInterval', { interval: message.intervalUs ?? 200 });
      await profiler.post('Profiler.start');
      process.send({ type: 'profile-started' });
    }
    if (message?.type === 'profile-stop' && profiler) {
      const { profile } = await profiler.post('Profiler.stop');
      profiler.disconnect();
      profiler = null;
      writeFileSync(message.file, JSON.stringify(profile));
      process.send({ type: 'profile-stopped' });
    }
  });
  process.send({ type: 'listening', port: server.address().port, createAppMs: target.createAppMs });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
