// Figure 3 of `make bench` (see run.mjs): launch-to-running latency of the demo echo service on the
// local runtime, through the real `atrium serve` (dist/src/cli.js) in a scratch data directory, next
// to the time the same program takes to answer /healthz when spawned directly.
//
// Every service this starts is deleted through the API; whatever is still running under the scratch
// data directory afterwards (a supervisor or an echo process: found through /proc by working
// directory or command line) is killed by PID and reported, and so is everything on a failure.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, sep } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import {
  BenchFailure,
  callApi,
  cleanUp,
  ms,
  onCleanUp,
  printTable,
  ratio,
  signal,
  sleep,
  withTimeout,
  standaloneScratch,
} from './harness.mjs';
import { fetchOnce } from './load.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const cliScript = join(repo, 'dist', 'src', 'cli.js');
const echoScript = join(repo, 'src', 'demo', 'catalog', 'echo', 'echo.mjs');

const projectId = 'user-admin';
const servicesPath = `/api/v1/projects/${projectId}/services`;
const launchBody = { catalog_id: 'demo', package: 'echo' };
const waitSeconds = 30;
const startupTimeoutMs = 60_000;
// Above `atrium serve`'s own shutdown grace (10 s).
const stopTimeoutMs = 15_000;
const healthTimeoutMs = 30_000;
// How often the direct spawn is probed: fine enough that the baseline is the program's own start.
const healthRetryMs = 5;
const exitTimeoutMs = 5_000;
const leftoverGraceMs = 2_000;
const eventsTimeoutMs = 2_000;
// A pause before each measured launch or direct spawn, so that neither is charged with what the
// other left running: the direct spawn's process ending, or the spare supervisor Atrium starts once
// a launch is running (so that the next launch need not wait for Node.js to start).
const settleMs = 500;
const outputKeptBytes = 20_000;

// ---- Processes ------------------------------------------------------------------------------------

/** The PIDs of processes working in `dir` or naming it on their command line (Linux /proc). */
function processesUnder(dir) {
  let entries;
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  const found = [];
  for (const entry of entries) {
    if (!/^[0-9]+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cwd = readlinkSync(`/proc/${entry}/cwd`);
      const commandLine = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cwd === dir || cwd.startsWith(`${dir}${sep}`) || commandLine.includes(dir))
        found.push(Number(entry));
    } catch {
      // Gone meanwhile, or a zombie.
    }
  }
  return found;
}

/** Kills (SIGKILL, by PID) what runs under `dir`, in a few bounded rounds; returns the PIDs killed. */
export async function killProcessesUnder(dir) {
  const killed = new Set();
  for (let round = 0; round < 5; round++) {
    const pids = processesUnder(dir);
    if (pids.length === 0) break;
    for (const pid of pids) {
      signal(pid, 'SIGKILL');
      killed.add(pid);
    }
    await sleep(100);
  }
  return [...killed];
}

/** Waits up to `ms` for what runs under `dir` to end; returns the PIDs still there. */
async function processesLeftUnder(dir, ms) {
  const deadline = performance.now() + ms;
  let pids = processesUnder(dir);
  while (pids.length > 0 && performance.now() < deadline) {
    await sleep(50);
    pids = processesUnder(dir);
  }
  return pids;
}

/** A free port on the loopback interface, found the way the local runtime finds one. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves with the child's exit, or with the error that kept it from starting. */
export const exitOf = (child) =>
  new Promise((resolve) => {
    child.once('exit', (code, signalName) => resolve({ code, signal: signalName }));
    child.once('error', (error) => resolve({ error }));
  });

/** SIGTERM, then SIGKILL if it is still there after `graceMs`. */
export async function stopChild(child, exited, graceMs = exitTimeoutMs) {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  signal(child.pid, 'SIGTERM');
  const gone = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!gone) {
    signal(child.pid, 'SIGKILL');
    await exited;
  }
}

// ---- The baseline: echo.mjs spawned directly --------------------------------------------------------

/** Spawns echo.mjs as the local runtime would (same Node, PORT/HOST), times it to /healthz, stops it. */
async function spawnDirectly(children) {
  const port = await freePort();
  const started = performance.now();
  const child = spawn(process.execPath, [echoScript], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOST: '127.0.0.1', PORT: String(port) },
    stdio: 'ignore',
  });
  children.add(child);
  const exited = exitOf(child);
  let ended = null;
  exited.then((how) => {
    ended = how;
  });
  try {
    for (;;) {
      const answered = await fetchOnce(port, '/healthz', { timeoutMs: 1000 }).then(
        (response) => response.status === 200,
        () => false,
      );
      if (answered) return performance.now() - started;
      if (ended) {
        throw new BenchFailure(`echo.mjs ended before /healthz answered: ${JSON.stringify(ended)}`);
      }
      if (performance.now() - started > healthTimeoutMs) {
        throw new BenchFailure(`echo.mjs did not answer /healthz within ${healthTimeoutMs} ms`);
      }
      await sleep(healthRetryMs);
    }
  } finally {
    await stopChild(child, exited);
    children.delete(child);
  }
}

// ---- Atrium: the real `atrium serve` ----------------------------------------------------------------

/** Starts `node dist/src/cli.js serve` on a free port with a scratch data dir and a fixed admin token. */
export async function startAtriumServe(dataDir, token) {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('ATRIUM_')),
  );
  const child = spawn(process.execPath, [cliScript, 'serve'], {
    env: {
      ...inherited,
      ATRIUM_DATA_DIR: dataDir,
      ATRIUM_HOST: '127.0.0.1',
      ATRIUM_PORT: '0',
      ATRIUM_ADMIN_TOKEN: token,
      ATRIUM_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = exitOf(child);
  // What it printed: stderr carries the banner; stdout its log (warnings and errors only), of which
  // the lines written after it became ready are counted and the first one kept.
  const output = { stderr: '', stdout: '' };
  const log = { ready: false, count: 0, first: null, pending: '' };
  child.stderr.on('data', (chunk) => {
    output.stderr = (output.stderr + chunk.toString('utf8')).slice(-outputKeptBytes);
  });
  child.stdout.on('data', (chunk) => {
    output.stdout = (output.stdout + chunk.toString('utf8')).slice(-outputKeptBytes);
    const lines = (log.pending + chunk.toString('utf8')).split('\n');
    log.pending = lines.pop() ?? '';
    if (!log.ready) return;
    for (const line of lines.filter(Boolean)) {
      log.count += 1;
      log.first ??= line;
    }
  });
  const banner = /listening on http:\/\/127\.0\.0\.1:([0-9]+)/;
  const listening = new Promise((resolve, reject) => {
    const check = () => {
      const match = banner.exec(output.stderr);
      if (match) resolve(Number(match[1]));
    };
    child.stderr.on('data', check);
    exited.then((how) =>
      reject(
        new BenchFailure(
          `atrium serve ended before listening (${JSON.stringify(how)}):\n${output.stderr}${output.stdout}`,
        ),
      ),
    );
  });
  log.tail = () =>
    output.stdout
      .split('\n')
      .filter(Boolean)
      .slice(-10)
      .map((line) => `    ${line.slice(0, 500)}`)
      .join('\n');
  const atrium = {
    log,
    pid: child.pid,
    stop: () => stopChild(child, exited, stopTimeoutMs),
  };
  try {
    atrium.port = await withTimeout(listening, startupTimeoutMs, 'starting atrium serve');
    // Launches need the demo catalog: wait until it is loaded.
    const deadline = performance.now() + startupTimeoutMs;
    while ((await callApi(atrium.port, 'GET', '/readyz')).status !== 200) {
      if (performance.now() > deadline) throw new BenchFailure('atrium serve did not become ready');
      await sleep(20);
    }
    log.ready = true;
    return atrium;
  } catch (error) {
    await atrium.stop();
    throw error;
  }
}

const parseEvents = (text) =>
  text
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .map((line) => JSON.parse(line.slice('data: '.length)));

const at = (timestamp) => Date.parse(timestamp);

/**
 * One launch, timed from the request to the 202 (which, with Prefer: wait, comes once the operation
 * is done); then the service's events, for where the time went. The wall clock (Date.now) is read
 * too, to set the request and the answer against the server's timestamps (the same clock).
 */
async function launchOnce(atrium, token, launched) {
  const sentAt = Date.now();
  const started = performance.now();
  const response = await callApi(atrium.port, 'POST', servicesPath, {
    token,
    body: launchBody,
    headers: { Prefer: `wait=${waitSeconds}` },
    expect: [202],
  });
  const elapsed = performance.now() - started;
  const answeredAt = Date.now();
  const operation = response.body;
  const serviceId = operation.target?.id;
  if (serviceId) launched.add(serviceId);
  if (operation.status !== 'succeeded') {
    const service = serviceId
      ? await callApi(atrium.port, 'GET', `${servicesPath}/${serviceId}`, { token }).catch(() => null)
      : null;
    throw new BenchFailure(
      `the launch was ${operation.status} after ${ms(elapsed)} ms (Prefer: wait=${waitSeconds}): ` +
        `${JSON.stringify(operation).slice(0, 600)}\n  the service: ${JSON.stringify(service?.body).slice(0, 600)}`,
    );
  }
  const { supervising, spawned, ready } = await launchEvents(atrium, token, serviceId);
  const created = at(operation.created_at);
  const finished = at(operation.finished_at);
  // NaN where an event is missing: that launch is left out of the breakdown (and counted).
  const between = (from, to) => (from && to ? at(to.at) - at(from.at) : NaN);
  return {
    serviceId,
    client: elapsed,
    toCreated: created - sentAt,
    server: finished - created,
    toSupervising: supervising ? at(supervising.at) - created : NaN,
    toSpawned: between(supervising, spawned),
    toReady: between(spawned, ready),
    toNoticed: ready ? finished - at(ready.at) : NaN,
    toAnswered: answeredAt - finished,
  };
}

/**
 * The supervisor's first event ("starting", once it has read its spec and made the cgroups; the
 * reconciler's own "starting" carries no phase), its "started" (process spawned) and its "running"
 * (ready), with the supervisor's timestamps. They may be recorded a moment after the operation
 * succeeds, so they are waited for, briefly; any is undefined if it does not come.
 */
async function launchEvents(atrium, token, serviceId) {
  const deadline = performance.now() + eventsTimeoutMs;
  for (;;) {
    const events = parseEvents(
      (
        await callApi(atrium.port, 'GET', `${servicesPath}/${serviceId}/events?follow=false`, {
          token,
          headers: { Accept: 'text/event-stream' },
          expect: [200],
        })
      ).body,
    );
    const supervising = events.find((event) => event.type === 'starting' && event.data?.phase);
    const spawned = events.find((event) => event.type === 'started');
    const ready = events.find((event) => event.type === 'running');
    if ((supervising && spawned && ready) || performance.now() > deadline) {
      return { supervising, spawned, ready };
    }
    await sleep(50);
  }
}

export async function deleteOnce(atrium, token, serviceId, launched, { timeoutMs } = {}) {
  const started = performance.now();
  const response = await callApi(atrium.port, 'DELETE', `${servicesPath}/${serviceId}`, {
    token,
    headers: { Prefer: `wait=${waitSeconds}` },
    expect: [202],
    timeoutMs,
  });
  const elapsed = performance.now() - started;
  if (response.body.status !== 'succeeded') {
    throw new BenchFailure(
      `deleting ${serviceId} ended ${response.body.status}: ${JSON.stringify(response.body).slice(0, 600)}`,
    );
  }
  launched.delete(serviceId);
  return elapsed;
}

// ---- The figure -------------------------------------------------------------------------------------

/** The nearest-rank percentile of `values` (NaN, for a missing sample, left out). */
function percentile(values, fraction) {
  const sorted = values.filter((value) => !Number.isNaN(value)).sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted[Math.max(0, Math.ceil(fraction * sorted.length) - 1)];
}

const maximum = (values) => percentile(values, 1);

export async function figureLaunchLatency(settings, scratch) {
  const { launches } = settings;
  console.log(
    `3. Launch to running: demo/echo on the local runtime, through \`atrium serve\` (SQLite; ${launches} ` +
      'sequential launches after 1 warm-up, each deleted before the next; ratios to the direct spawn)',
  );
  const dataDir = mkdtempSync(join(scratch, 'launch-'));
  const token = `atr_${randomBytes(16).toString('hex')}`;
  const directChildren = new Set();
  const launched = new Set();
  let atrium = null;
  // Set once stopping starts (the end, a failure, Ctrl-C): nothing new is started after it.
  let stopping = false;
  const killDirectChildren = () => {
    for (const child of directChildren) signal(child.pid, 'SIGKILL');
  };
  const stopEverything = async () => {
    stopping = true;
    killDirectChildren();
    if (atrium) {
      for (const serviceId of [...launched]) {
        await deleteOnce(atrium, token, serviceId, launched, { timeoutMs: 15_000 }).catch(() => undefined);
      }
      await atrium.stop();
    }
    killDirectChildren();
    return killProcessesUnder(dataDir);
  };
  const unlessStopping = () => {
    if (stopping) throw new BenchFailure('stopped while launching');
  };
  const forget = onCleanUp(async () => {
    const killed = await stopEverything();
    if (killed.length > 0) console.error(`killed ${killed.length} processes left under ${dataDir}`);
  });

  const steps = ['toCreated', 'toSupervising', 'toSpawned', 'toReady', 'toNoticed', 'toAnswered'];
  const samples = { direct: [], client: [], server: [], delete: [] };
  for (const step of steps) samples[step] = [];
  const leftBehind = [];
  let warmup = null;
  const runDirect = async () => {
    await sleep(settleMs);
    unlessStopping();
    return spawnDirectly(directChildren);
  };
  const runAtrium = async () => {
    await sleep(settleMs);
    unlessStopping();
    const launch = await launchOnce(atrium, token, launched);
    const deleted = await deleteOnce(atrium, token, launch.serviceId, launched);
    const left = await processesLeftUnder(dataDir, leftoverGraceMs);
    if (left.length > 0) {
      leftBehind.push({ serviceId: launch.serviceId, pids: left });
      await killProcessesUnder(dataDir);
    }
    return { ...launch, delete: deleted };
  };
  try {
    atrium = await startAtriumServe(dataDir, token);
    for (let i = 0; i <= launches; i++) {
      // Take turns at going first, so that neither always runs on a machine just busied by the other.
      let direct;
      let launch;
      if (i % 2 === 0) {
        direct = await runDirect();
        launch = await runAtrium();
      } else {
        launch = await runAtrium();
        direct = await runDirect();
      }
      if (i === 0) {
        warmup = { direct, client: launch.client };
        continue;
      }
      samples.direct.push(direct);
      for (const key of ['client', 'server', ...steps, 'delete']) samples[key].push(launch[key]);
    }
  } catch (error) {
    if (error instanceof BenchFailure && atrium) {
      error.message += `\n  atrium serve's log (warn and above), last lines:\n${atrium.log.tail()}`;
    }
    throw error;
  } finally {
    forget();
    const killed = await stopEverything();
    if (killed.length > 0) leftBehind.push({ serviceId: '(at the end)', pids: killed });
  }

  const base = { p50: percentile(samples.direct, 0.5), p95: percentile(samples.direct, 0.95) };
  const row = (name, values, withRatio = false) => {
    const p50 = percentile(values, 0.5);
    const p95 = percentile(values, 0.95);
    return [
      name,
      ms(p50),
      ms(p95),
      ms(maximum(values)),
      withRatio ? ratio(p50 / base.p50) : '',
      withRatio ? ratio(p95 / base.p95) : '',
    ];
  };
  printTable(
    [
      'what (ms; events and operation timestamps have 1 ms resolution)',
      'p50',
      'p95',
      'max',
      'p50 ratio',
      'p95 ratio',
    ],
    [
      row('node echo.mjs spawned directly, until /healthz answers', samples.direct, true),
      row(`POST …/services, Prefer: wait=${waitSeconds}, until the 202 (succeeded)`, samples.client, true),
      row('  request sent → operation created (auth, validation, admission)', samples.toCreated),
      row('  server side: operation created_at → finished_at', samples.server, true),
      row('    created → supervisor running its spec (its "starting")', samples.toSupervising),
      row('    supervisor → echo process spawned ("started")', samples.toSpawned),
      row('    spawned → /healthz answered the supervisor ("running")', samples.toReady, true),
      row('    ready → operation succeeded', samples.toNoticed),
      row('  operation succeeded → 202 received', samples.toAnswered),
      row(`DELETE …/services/{id}, Prefer: wait=${waitSeconds}, until the 202 (succeeded)`, samples.delete),
    ],
  );
  // Where the time goes: what Atrium adds before the program runs, how much longer the program
  // takes to be ready under it than alone (the cgroup, the probe's rhythm), and what comes after.
  const p50 = (values) => percentile(values, 0.5);
  const before = p50(samples.toCreated) + p50(samples.toSupervising) + p50(samples.toSpawned);
  const after = p50(samples.toNoticed) + p50(samples.toAnswered);
  const notes = [
    `where the time goes (p50s of the steps, ms): ${ms(before)} before the echo process is spawned ` +
      `(request ${ms(p50(samples.toCreated))}, reconciler and hand-over ${ms(p50(samples.toSupervising))}, ` +
      `spawn ${ms(p50(samples.toSpawned))}); spawn to ready ${ms(p50(samples.toReady))} against ` +
      `${ms(base.p50)} for the whole direct spawn; ${ms(after)} from ready to the 202`,
    `first launch (warm-up, not counted; no spare supervisor yet): Atrium ${ms(warmup.client)} ms, ` +
      `direct ${ms(warmup.direct)} ms`,
    `${settleMs} ms pause before each launch and each direct spawn (the machine settles in between)`,
  ];
  const incomplete = samples.toReady.filter((value) => Number.isNaN(value)).length;
  if (incomplete > 0) {
    notes.push(
      `${incomplete} launches had no "started" and "running" events within ${eventsTimeoutMs} ms of ` +
        'succeeding: left out of the breakdown',
    );
  }
  if (leftBehind.length > 0) {
    notes.push(
      `PROCESSES LEFT BEHIND after a succeeded delete (killed by PID): ${leftBehind
        .map(({ serviceId, pids }) => `${serviceId}: ${pids.join(' ')}`)
        .join('; ')}`,
    );
  }
  if (atrium.log.count > 0) {
    notes.push(
      `atrium serve logged ${atrium.log.count} lines at warn or above during the launches; the first: ` +
        atrium.log.first.slice(0, 300),
    );
  }
  console.log(`  ${notes.join('\n  ')}\n`);
}

// ---- Alone: `node scripts/bench/launch.mjs` ----------------------------------------------------------

async function runAlone() {
  const raw = process.env.BENCH_LAUNCHES || '20';
  const launches = Number(raw);
  if (!Number.isInteger(launches) || launches < 1 || launches > 1000) {
    throw new BenchFailure(`BENCH_LAUNCHES=${raw}: expected an integer in [1, 1000]`);
  }
  const scratch = standaloneScratch('atrium-bench-');
  try {
    await figureLaunchLatency({ launches }, scratch);
  } finally {
    await cleanUp();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  runAlone().catch((error) => {
    console.error(
      `\nBENCH FAILED: ${error instanceof BenchFailure ? error.message : (error?.stack ?? error)}`,
    );
    cleanUp().finally(() => process.exit(1));
  });
}
