// `make bench`: throughput and latency of the compiled app (dist/), each figure set against a
// baseline measured in the same run, on the same machine, with the same load generator. Figures,
// never pass/fail thresholds; the run fails only when a request does (any non-2xx, socket error or
// timeout), because a figure that includes failures means nothing.
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
// machine to another; the absolute numbers are of this machine only.
//
// Each server is a child process (scripts/bench/server.mjs) listening on 127.0.0.1 at a free port;
// this process is the load generator (scripts/bench/load.mjs): BENCH_CONNECTIONS keep-alive
// connections, BENCH_WARMUP_SECONDS of warm-up per case, then BENCH_SECONDS per measured round.
// Settings (environment): BENCH_SECONDS (5), BENCH_WARMUP_SECONDS (2), BENCH_ROUNDS (3),
// BENCH_CONNECTIONS (32), BENCH_PACKAGES (500), BENCH_EXTRA_PATHS (200,1000),
// ATRIUM_BENCH_DATABASE_URL (unset).
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import knexFactory from 'knex';
import { writeCatalog } from './catalog.mjs';
import { fetchOnce, measure } from './load.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const serverScript = join(here, 'server.mjs');
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
const startupTimeoutMs = 180_000;
const stopTimeoutMs = 10_000;
const ipcTimeoutMs = 5_000;
// A bound on the requests of one measurement, besides its duration.
const maxRequestsPerMeasurement = 20_000_000;

class BenchFailure extends Error {
  name = 'BenchFailure';
}

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

function readSettings() {
  const extraRaw = process.env.BENCH_EXTRA_PATHS ?? '200,1000';
  const extraPaths = extraRaw
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean)
    .map(Number);
  if (extraPaths.some((n) => !Number.isInteger(n) || n < 1 || n > 20_000)) {
    throw new BenchFailure(`BENCH_EXTRA_PATHS=${extraRaw}: expected comma-separated integers in [1, 20000]`);
  }
  return {
    seconds: numberSetting('BENCH_SECONDS', 5, { min: 0.5, max: 600 }),
    warmupSeconds: numberSetting('BENCH_WARMUP_SECONDS', 2, { min: 0, max: 600 }),
    connections: numberSetting('BENCH_CONNECTIONS', 32, { min: 1, max: 1024, integer: true }),
    rounds: numberSetting('BENCH_ROUNDS', 3, { min: 1, max: 100, integer: true }),
    packages: numberSetting('BENCH_PACKAGES', 500, { min: pageSize + 1, max: 10_000, integer: true }),
    extraPaths: [0, ...new Set(extraPaths)].sort((a, b) => a - b),
    postgresAdminUrl: process.env.ATRIUM_BENCH_DATABASE_URL || null,
    realPaths: Object.keys(JSON.parse(readFileSync(bundledSpec, 'utf8')).paths).length,
  };
}

// ---- Server children ------------------------------------------------------------------------

const running = new Set();
// Set on Ctrl-C: the measurement then failing (its servers gone) is not news.
let interrupted = false;

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new BenchFailure(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Signals one child by its PID; one that has just exited is no error. */
function signal(pid, name) {
  try {
    process.kill(pid, name);
  } catch (error) {
    if (error.code !== 'ESRCH') throw error;
  }
}

/** Forks scripts/bench/server.mjs and resolves once it listens. */
async function startServer(label, options) {
  const child = fork(serverScript, [JSON.stringify(options)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: [],
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const server = {
    label,
    pid: child.pid,
    async cpu() {
      const reply = new Promise((resolve) => {
        const onMessage = (message) => {
          if (message?.type !== 'cpu') return;
          child.off('message', onMessage);
          resolve(message.usage);
        };
        child.on('message', onMessage);
      });
      child.send({ type: 'cpu' });
      return withTimeout(reply, ipcTimeoutMs, `asking ${label} for its CPU usage`);
    },
    async stop() {
      running.delete(server);
      if (child.exitCode !== null || child.signalCode !== null) return;
      signal(server.pid, 'SIGTERM');
      const stopped = await Promise.race([
        exited.then(() => true),
        new Promise((resolve) => setTimeout(() => resolve(false), stopTimeoutMs)),
      ]);
      if (!stopped) {
        signal(server.pid, 'SIGKILL');
        await exited;
      }
    },
  };
  running.add(server);
  const listening = new Promise((resolve, reject) => {
    child.on('message', (message) => {
      if (message?.type === 'listening') resolve(message);
    });
    exited.then(({ code, signal }) =>
      reject(new BenchFailure(`${label} exited before listening (code ${code}, signal ${signal})`)),
    );
  });
  try {
    const { port, createAppMs } = await withTimeout(listening, startupTimeoutMs, `starting ${label}`);
    return Object.assign(server, { port, createAppMs });
  } catch (error) {
    await server.stop();
    throw error;
  }
}

async function stopAll() {
  await Promise.all([...running].map((server) => server.stop()));
}

// ---- Measuring --------------------------------------------------------------------------------

function describeFailures(result) {
  const { statuses, socketErrors, timeouts, samples } = result.failures;
  const parts = [...statuses].map(([status, count]) => `${count} × HTTP ${status}`);
  if (socketErrors) parts.push(`${socketErrors} socket errors`);
  if (timeouts) parts.push(`${timeouts} timeouts`);
  return `${parts.join(', ')}\n  first failures:\n    ${samples.join('\n    ')}`;
}

function failIfAny(result, server, path, phase) {
  if (result.errors > 0) {
    throw new BenchFailure(`GET ${path} on ${server.label} failed ${phase}: ${describeFailures(result)}`);
  }
}

/** One measured window of `path` on `server`, with the server's CPU use over it. */
async function measureOnce(settings, server, path) {
  const before = await server.cpu();
  const result = await measure({
    port: server.port,
    path,
    connections: settings.connections,
    seconds: settings.seconds,
    maxRequests: maxRequestsPerMeasurement,
  });
  const after = await server.cpu();
  failIfAny(result, server, path, 'under load');
  const serverMicros = after.user + after.system - (before.user + before.system);
  return {
    ...result,
    serverCpu: serverMicros / 1000 / (result.seconds * 1000),
    cpuPerRequest: serverMicros / result.requests,
  };
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)];

/**
 * Warms every case up, then measures them in turn, BENCH_ROUNDS times over: interleaving spreads
 * whatever else the machine is doing over all cases alike. Each case reports its median round (by
 * req/s), with the lowest and highest req/s of its rounds to show the noise.
 */
async function measureCases(settings, cases) {
  for (const { server, path } of cases) {
    if (settings.warmupSeconds === 0) break;
    const warm = await measure({
      port: server.port,
      path,
      connections: settings.connections,
      seconds: settings.warmupSeconds,
      maxRequests: maxRequestsPerMeasurement,
    });
    failIfAny(warm, server, path, 'during warm-up');
  }
  const rounds = cases.map(() => []);
  for (let round = 0; round < settings.rounds; round++) {
    // Each round starts one case further on, so that no case always follows the same other.
    for (let turn = 0; turn < cases.length; turn++) {
      const i = (round + turn) % cases.length;
      rounds[i].push(await measureOnce(settings, cases[i].server, cases[i].path));
    }
  }
  return rounds.map((results) => {
    const sorted = [...results].sort((a, b) => a.rps - b.rps);
    return {
      ...sorted[Math.floor((sorted.length - 1) / 2)],
      rpsMin: sorted[0].rps,
      rpsMax: sorted[sorted.length - 1].rps,
      cpuPerRequest: median(results.map((r) => r.cpuPerRequest)),
      requests: results.reduce((sum, r) => sum + r.requests, 0),
      errors: results.reduce((sum, r) => sum + r.errors, 0),
    };
  });
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

// ---- Printing ---------------------------------------------------------------------------------

const fixed = (digits) => (value) => (Number.isFinite(value) ? value.toFixed(digits) : '-');
const ms = fixed(2);
const ratio = fixed(2);
const count = (value) => String(Math.round(value));
const percent = (value) => `${Math.round(value * 100)} %`;
const range = (result) => `${count(result.rpsMin)}–${count(result.rpsMax)}`;

/** Prints rows of cells; the first `textColumns` columns are left-aligned, the others right-aligned. */
function printTable(header, rows, textColumns = 1) {
  const widths = header.map((_, i) =>
    Math.max(...[header, ...rows].map((row) => String(row[i] ?? '').length)),
  );
  const line = (row) =>
    '  ' +
    row
      .map((cell, i) =>
        i < textColumns ? String(cell ?? '').padEnd(widths[i]) : String(cell ?? '').padStart(widths[i]),
      )
      .join('   ')
      .trimEnd();
  console.log(line(header));
  console.log(`  ${'-'.repeat(line(header).length - 2)}`);
  for (const row of rows) console.log(line(row));
  console.log('');
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
    servers.push(atrium);
    const bare = await startServer(`bare node:http (${engineName})`, { kind: 'bare', ...database });
    servers.push(bare);
    await expectSamePage(atrium, bare);
    const [bareResult, atriumResult] = await measureCases(
      settings,
      [bare, atrium].map((server) => ({ server, path: packagesPath })),
    );
    const row = (name, r) => [
      name,
      count(r.rps),
      range(r),
      ms(r.p50),
      ms(r.p99),
      count(r.requests),
      count(r.errors),
      percent(r.serverCpu),
      count(r.cpuPerRequest),
      percent(r.generatorCpu),
    ];
    const ratioRow = (name, r, base) => [
      name,
      ratio(r.rps / base.rps),
      '',
      ratio(r.p50 / base.p50),
      ratio(r.p99 / base.p99),
      '',
      '',
      '',
      ratio(r.cpuPerRequest / base.cpuPerRequest),
    ];
    printTable(
      [
        'server',
        'req/s',
        'req/s range',
        'p50 ms',
        'p99 ms',
        'requests',
        'errors',
        'server CPU',
        'CPU µs/req',
        'load-gen CPU',
      ],
      [
        row('bare node:http', bareResult),
        row('Atrium', atriumResult),
        ratioRow('Atrium / bare', atriumResult, bareResult),
      ],
    );
  } finally {
    await Promise.all(servers.map((server) => server.stop()));
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

// What must be undone however the run ends (a failure, Ctrl-C): run last-in, first-out, once.
const cleanups = new Set();

async function cleanUp() {
  await stopAll();
  for (const cleanup of [...cleanups].reverse()) {
    cleanups.delete(cleanup);
    try {
      await cleanup();
    } catch (error) {
      console.error(`cleaning up failed: ${error?.message ?? error}`);
    }
  }
}

/** Runs `use` with a scratch PostgreSQL database, created through `adminUrl` and dropped after. */
async function withPostgresDatabase(adminUrl, scratch, use) {
  const name = `atrium_bench_${process.pid}_${randomBytes(4).toString('hex')}`;
  const admin = async (sql) => {
    const knex = knexFactory({ client: 'pg', connection: adminUrl, pool: { min: 0, max: 1 } });
    try {
      await knex.raw(sql);
    } finally {
      await knex.destroy();
    }
  };
  await admin(`create database ${name}`);
  const drop = () => admin(`drop database if exists ${name} with (force)`);
  cleanups.add(drop);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  try {
    await use({ databaseUrl: url.toString(), dataDir: scratch, catalogDir: join(scratch, 'catalog') });
  } finally {
    await stopAll();
    cleanups.delete(drop);
    await drop();
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
  cleanups.add(() => rmSync(scratch, { recursive: true, force: true }));
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
    await figureBareVsAtrium(settings, 'SQLite', sqlite);
    await figureSpecSize(settings, sqlite);
    if (settings.postgresAdminUrl) {
      await withPostgresDatabase(settings.postgresAdminUrl, scratch, (postgres) =>
        figureBareVsAtrium(settings, 'PostgreSQL', postgres),
      );
    } else {
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
