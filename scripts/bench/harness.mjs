// What every figure of `make bench` shares (see run.mjs for how to read the figures): the server
// children (scripts/bench/server.mjs), measuring cases in interleaved rounds with the load generator
// (scripts/bench/load.mjs), plain API calls for setting up, the cleanups that must run however a run
// ends, and the tables.
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import knexFactory from 'knex';
import { measure } from './load.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const serverScript = join(here, 'server.mjs');
/** Where make bench installs drivers it compares (scripts/bench/drivers.mjs). */
export const driversDir = join(here, '..', '..', '.bench', 'drivers');

const startupTimeoutMs = 180_000;
const stopTimeoutMs = 10_000;
const ipcTimeoutMs = 5_000;
const apiTimeoutMs = 60_000;
// A bound on the requests of one measurement, besides its duration.
const maxRequestsPerMeasurement = 20_000_000;

export class BenchFailure extends Error {
  name = 'BenchFailure';
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new BenchFailure(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Signals one process (or, with a negative pid, one process group); one that is gone is no error. */
export function signal(pid, name) {
  try {
    process.kill(pid, name);
  } catch (error) {
    if (error.code !== 'ESRCH') throw error;
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- Cleanups -------------------------------------------------------------------------------------

// What must be undone however the run ends (a failure, Ctrl-C): run last-in, first-out, once.
const cleanups = new Set();

/** Registers `cleanup` to run at the end of the run; returns a function that unregisters it. */
export function onCleanUp(cleanup) {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

/**
 * For a figure run alone: a scratch directory removed at the end, and Ctrl-C (or SIGTERM) cleaning
 * up before it exits.
 */
export function standaloneScratch(prefix) {
  const scratch = mkdtempSync(join(tmpdir(), prefix));
  onCleanUp(() => rmSync(scratch, { recursive: true, force: true }));
  const onSignal = (name) => {
    console.error(`\n${name}: stopping and cleaning up`);
    cleanUp().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return scratch;
}

export async function cleanUp() {
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

// ---- Server children ------------------------------------------------------------------------------

const running = new Set();

/** Forks scripts/bench/server.mjs and resolves once it listens. */
export async function startServer(label, options) {
  const child = fork(serverScript, [JSON.stringify(options)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    // --expose-gc: memory figures are read after a full collection.
    execArgv: ['--expose-gc'],
    env: { ...process.env, BENCH_DRIVERS_DIR: driversDir },
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
    /** Its resident set and heap, in bytes, after a full collection. */
    async memory() {
      return server.ask({ type: 'memory', gc: true }, 'memory');
    },
    /** Asks the child for `type` and waits for `reply` (make bench-profile). */
    async ask(message, reply) {
      const answered = new Promise((resolve) => {
        const onMessage = (m) => {
          if (m?.type !== reply) return;
          child.off('message', onMessage);
          resolve(m);
        };
        child.on('message', onMessage);
      });
      child.send(message);
      return withTimeout(answered, apiTimeoutMs, `asking ${label} for ${message.type}`);
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

/** Runs `use` with a scratch PostgreSQL database, created through `adminUrl` and dropped after. */
export async function withPostgresDatabase(adminUrl, scratch, use) {
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
  const forget = onCleanUp(drop);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  try {
    await use({ databaseUrl: url.toString(), dataDir: scratch, catalogDir: join(scratch, 'catalog') });
  } finally {
    await stopAll();
    forget();
    await drop();
  }
}

// ---- Plain API calls (setting up, and figures that time single requests) ---------------------------

/**
 * One request to the API on 127.0.0.1:`port` with `token`; resolves to {status, headers, body}, the
 * body parsed when it is JSON. Throws on a status outside `expect` (when given).
 */
export async function callApi(
  port,
  method,
  path,
  { token, body, headers = {}, expect, timeoutMs = apiTimeoutMs } = {},
) {
  let response;
  try {
    response = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: {
        Accept: 'application/json',
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    throw new BenchFailure(`${method} ${path} failed: ${error.cause?.message ?? error.message}`);
  }
  const text = await response.text();
  const json = /json/.test(response.headers.get('content-type') ?? '');
  const result = { status: response.status, headers: response.headers, body: json ? JSON.parse(text) : text };
  if (expect !== undefined && !expect.includes(response.status)) {
    throw new BenchFailure(`${method} ${path} answered ${response.status}: ${text.slice(0, 300)}`);
  }
  return result;
}

// ---- Measuring ------------------------------------------------------------------------------------

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
async function measureOnce(settings, { server, path, headers }) {
  const before = await server.cpu();
  const result = await measure({
    port: server.port,
    path,
    headers,
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
 * Warms every case ({server, path, headers?}) up, then measures them in turn, BENCH_ROUNDS times
 * over: interleaving spreads whatever else the machine is doing over all cases alike. Each case
 * reports its median round (by req/s), with the lowest and highest req/s of its rounds to show the
 * noise.
 */
export async function measureCases(settings, cases) {
  for (const { server, path, headers } of cases) {
    if (settings.warmupSeconds === 0) break;
    const warm = await measure({
      port: server.port,
      path,
      headers,
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
      rounds[i].push(await measureOnce(settings, cases[i]));
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

// ---- Printing -------------------------------------------------------------------------------------

const fixed = (digits) => (value) => (Number.isFinite(value) ? value.toFixed(digits) : '-');
export const ms = fixed(2);
export const ratio = fixed(2);
export const count = (value) => String(Math.round(value));
export const mib = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
export const percent = (value) => `${Math.round(value * 100)} %`;
export const range = (result) => `${count(result.rpsMin)}–${count(result.rpsMax)}`;

/** Prints rows of cells; the first `textColumns` columns are left-aligned, the others right-aligned. */
export function printTable(header, rows, textColumns = 1) {
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
