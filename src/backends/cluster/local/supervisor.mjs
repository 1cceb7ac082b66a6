// The supervisor of one service on the local runtime, started detached by backend.ts:
//
//   node supervisor.mjs <service directory>
//   node supervisor.mjs --spare      (with an IPC channel: waits, warm, to be given a directory)
//
// It reads <dir>/spec.json, runs the command (an argv, never a shell) in its own process group,
// timestamps what it writes into a capped log file, probes readiness, restarts it with backoff when
// it crashes after having been ready, applies memory and cpu limits through cgroups when the
// machine lets it, and stops it on SIGTERM (SIGTERM to the group, SIGKILL after a grace period).
// It reports through files only, so that it outlives the API and the API can pick it up again:
//   <dir>/state.json   its state, replaced atomically on every change;
//   <dir>/events.jsonl one line per event, numbered.
// A spare is started ahead of need, so that a launch does not wait for Node.js to start: once given
// its directory it acknowledges, lets go of the channel and is a supervisor like any other; a spare
// never given one ends with the API that started it (its channel closes).
// It is plain JavaScript so that it runs the same from src/ (tests) and from dist/.
import { spawn } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmdirSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';

/** A spare's directory: the first message on its channel; without one it ends with the channel. */
function assignment() {
  return new Promise((assigned) => {
    const quit = () => process.exit(0);
    // Closed already (before this ran): nothing will come.
    if (!process.connected) quit();
    process.once('disconnect', quit);
    process.once('message', (message) => {
      process.off('disconnect', quit);
      const given = resolve(String(message?.dir ?? ''));
      // Whatever goes wrong from here on is told where a supervisor started directly writes it.
      failureLog = join(given, 'supervisor.log');
      process.send({ accepted: message?.dir }, () => {
        if (process.connected) process.disconnect();
      });
      assigned(given);
    });
  });
}

// A supervisor that cannot go on (its directory gone, a full disk) must not leave its program
// running unsupervised: it kills the program's group, says why where it can, and exits.
let failureLog = null;
let killChildGroup = () => undefined;
process.on('uncaughtException', (error) => {
  try {
    killChildGroup();
  } finally {
    try {
      if (failureLog) appendFileSync(failureLog, `${error?.stack ?? error}\n`);
      else process.stderr.write(`${error?.stack ?? error}\n`);
    } catch {
      // Nowhere left to say it.
    }
    process.exit(1);
  }
});

const spare = process.argv[2] === '--spare';
if (!process.argv[2] || (spare && !process.send)) {
  process.stderr.write('usage: node supervisor.mjs <service directory> | --spare (with an IPC channel)\n');
  process.exit(2);
}
const dir = spare ? await assignment() : resolve(process.argv[2]);
// Its own directory, not the API's, is where it works (and what shows it belongs to the service).
process.chdir(dir);
const spec = JSON.parse(readFileSync(join(dir, 'spec.json'), 'utf8'));
const stateFile = join(dir, 'state.json');
const eventsFile = join(dir, 'events.jsonl');

/** The start time of a process in clock ticks since boot (Linux), to tell a pid from its reuse. */
function startTimeOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

const now = () => new Date().toISOString();

const state = {
  generation: spec.generation,
  supervisor: { pid: process.pid, startTime: startTimeOf(process.pid) },
  phase: 'starting',
  ready: false,
  child: null,
  restarts: 0,
  exitCode: null,
  signal: null,
  message: null,
  limits: { applied: false, how: null, reason: null },
  startedAt: null,
  updatedAt: now(),
};

function saveState(changes) {
  Object.assign(state, changes, { updatedAt: now() });
  writeFileSync(`${stateFile}.tmp`, JSON.stringify(state));
  renameSync(`${stateFile}.tmp`, stateFile);
}

let seq = 0;
if (existsSync(eventsFile)) {
  const lines = readFileSync(eventsFile, 'utf8').trim().split('\n').filter(Boolean);
  const last = lines.length > 0 ? JSON.parse(lines[lines.length - 1]) : null;
  seq = last?.seq ?? 0;
}

function event(type, message, at = now()) {
  seq += 1;
  appendFileSync(eventsFile, `${JSON.stringify({ seq, at, type, message, generation: spec.generation })}\n`);
}

// ---- the log: "<ISO time> <stream> <line>" per line, rotated to .1 past maxBytes ----

const logFile = spec.log.file;
mkdirSync(dirname(logFile), { recursive: true });
let logFd = openSync(logFile, 'a');
let logSize = fstatSync(logFd).size;
const maxLineBytes = 16 * 1024;

function writeLogLine(stream, text) {
  const line = `${now()} ${stream} ${text.length > maxLineBytes ? `${text.slice(0, maxLineBytes)}…` : text}\n`;
  if (logSize + line.length > spec.log.maxBytes && logSize > 0) {
    closeSync(logFd);
    renameSync(logFile, `${logFile}.1`);
    logFd = openSync(logFile, 'a');
    logSize = 0;
  }
  logSize += writeSync(logFd, line);
}

function lineSplitter(stream) {
  let pending = '';
  return {
    push(chunk) {
      pending += chunk.toString('utf8');
      let newline;
      while ((newline = pending.indexOf('\n')) >= 0) {
        writeLogLine(stream, pending.slice(0, newline).replace(/\r$/, ''));
        pending = pending.slice(newline + 1);
      }
      if (pending.length > maxLineBytes) {
        writeLogLine(stream, pending);
        pending = '';
      }
    },
    flush() {
      if (pending) writeLogLine(stream, pending);
      pending = '';
    },
  };
}

// ---- resource limits through cgroups, where the machine allows it ----

const cgroupDirs = [];

function tryWrite(file, value) {
  try {
    writeFileSync(file, String(value));
    return true;
  } catch {
    return false;
  }
}

// The cpu share is enforced per period: 100 ms once the program is ready (as Kubernetes does), 1 s
// while it starts. The share is the same; over the longer period the burst of CPU a start takes
// (Node.js needs some 50 ms of it just to boot) runs at once, where 10 ms slices of 100 ms would
// keep a 100m service throttled for the better part of a second before it can answer.
const cpuPeriodUs = { starting: 1_000_000, running: 100_000 };

/** Writes the cpu share over the period of `phase` into a cgroup's files; false when it cannot. */
function writeCpuLimit(files, phase) {
  const period = cpuPeriodUs[phase];
  const quota = Math.round((spec.limits.cpuMillis * period) / 1000);
  if (files.max) return tryWrite(files.max, `${quota} ${period}`);
  // cgroup v1 has two files: whichever lowers the share is written first, so it never rises between.
  let current = 0;
  try {
    current = Number(readFileSync(files.period, 'utf8'));
  } catch {
    return false;
  }
  return period > current
    ? tryWrite(files.period, period) && tryWrite(files.quota, quota)
    : tryWrite(files.quota, quota) && tryWrite(files.period, period);
}

/** Creates a cgroup for the service's processes with its memory and cpu limits; null when not allowed. */
function prepareCgroup() {
  const { memoryBytes } = spec.limits;
  const name = `atrium-${spec.serviceId}`;
  try {
    if (existsSync('/sys/fs/cgroup/cgroup.controllers')) {
      const group = join('/sys/fs/cgroup', name);
      mkdirSync(group, { recursive: true });
      cgroupDirs.push(group);
      tryWrite('/sys/fs/cgroup/cgroup.subtree_control', '+memory +cpu');
      const memory = tryWrite(join(group, 'memory.max'), memoryBytes);
      const cpuFiles = { max: join(group, 'cpu.max') };
      const cpu = writeCpuLimit(cpuFiles, 'starting');
      if (!memory && !cpu) throw new Error('the cgroup v2 controllers are not delegated');
      return { procs: [join(group, 'cgroup.procs')], how: 'cgroup v2', cpu: cpu ? cpuFiles : null };
    }
    const memoryRoot = '/sys/fs/cgroup/memory';
    const cpuRoot = '/sys/fs/cgroup/cpu';
    if (existsSync(join(memoryRoot, 'cgroup.procs')) && existsSync(join(cpuRoot, 'cgroup.procs'))) {
      const memoryGroup = join(memoryRoot, name);
      const cpuGroup = join(cpuRoot, name);
      mkdirSync(memoryGroup, { recursive: true });
      cgroupDirs.push(memoryGroup);
      mkdirSync(cpuGroup, { recursive: true });
      cgroupDirs.push(cpuGroup);
      const memory = tryWrite(join(memoryGroup, 'memory.limit_in_bytes'), memoryBytes);
      const cpuFiles = {
        period: join(cpuGroup, 'cpu.cfs_period_us'),
        quota: join(cpuGroup, 'cpu.cfs_quota_us'),
      };
      const cpu = writeCpuLimit(cpuFiles, 'starting');
      if (!memory || !cpu) throw new Error('cannot set the cgroup v1 limits');
      return {
        procs: [join(memoryGroup, 'cgroup.procs'), join(cpuGroup, 'cgroup.procs')],
        how: 'cgroup v1',
        cpu: cpuFiles,
      };
    }
    throw new Error('no cgroup file system');
  } catch (error) {
    removeCgroups();
    return {
      procs: null,
      reason: error.code ? `cgroups are not writable here (${error.code})` : error.message,
    };
  }
}

/** Removes the service's cgroups, retrying briefly: a group empties a moment after its last exit. */
function removeCgroups() {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (const group of cgroupDirs.splice(0)) {
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        rmdirSync(group);
        break;
      } catch (error) {
        if (error.code === 'ENOENT') break;
        Atomics.wait(pause, 0, 0, 50);
      }
    }
  }
}

const cgroup = spec.limits.enforce ? prepareCgroup() : { procs: null, reason: 'not asked to enforce limits' };
saveState({
  limits: cgroup.procs
    ? { applied: true, how: cgroup.how, reason: null }
    : { applied: false, how: null, reason: cgroup.reason },
});

/** The cpu share over the period of `phase` (`starting` or `running`), where limits apply. */
function limitCpu(phase) {
  if (cgroup.cpu) writeCpuLimit(cgroup.cpu, phase);
}

// ---- the child ----

let child = null;
let stopping = false;
let everReady = false;
let restartTimes = [];
let readinessTimer = null;

killChildGroup = () => killGroup('SIGKILL');

function killGroup(signal) {
  if (!child?.pid) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // The group is already gone.
  }
}

/** Whether something accepts connections on the port (refused at once while nothing listens). */
function accepts(port) {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.setTimeout(1000);
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => (socket.destroy(), resolve(false)));
  });
}

/** Whether the health path answers with a 2xx or 3xx status. */
function answers(port, path) {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode >= 200 && res.statusCode < 400);
    });
    req.once('error', () => resolve(false));
    req.once('timeout', () => (req.destroy(), resolve(false)));
    req.end();
  });
}

/**
 * Whether the program is ready: its port accepts, and its health path (if any) answers. The port is
 * tried first because a bare connect costs about a third of an HTTP request, and most probes of a
 * starting program are refused.
 */
async function probe(health) {
  return (await accepts(health.port)) && (health.path === null || (await answers(health.port, health.path)));
}

/**
 * How long to wait before the next probe: 5 ms at first (most programs answer within tens of
 * milliseconds, and a probe of a port nobody listens on yet is refused at once, costing next to
 * nothing), then a twentieth of the time waited so far, up to 100 ms. So readiness is noticed
 * within 5 % (and 5 ms) of the moment it comes, and a slow start is not probed hundreds of times.
 */
const probeDelay = (waitedMs) => Math.min(100, Math.max(5, Math.round(waitedMs / 20)));

async function awaitReadiness(current) {
  const started = Date.now();
  const deadline = started + spec.readinessTimeoutMs;
  while (child === current && !stopping) {
    if (!spec.health || (await probe(spec.health))) {
      if (child !== current || stopping) return;
      everReady = true;
      limitCpu('running');
      saveState({ phase: 'running', ready: true, message: null, startedAt: state.startedAt ?? now() });
      event('running', spec.health ? `ready: ${spec.health.path ?? 'port'} answers` : 'running');
      return;
    }
    if (Date.now() > deadline) {
      const seconds = Math.round(spec.readinessTimeoutMs / 1000);
      event('unready', `not ready after ${seconds} s; stopping it`);
      readinessTimer = { timedOut: true };
      saveState({ message: `not ready after ${seconds} s` });
      killGroup('SIGTERM');
      setTimeout(() => killGroup('SIGKILL'), spec.stopGraceMs).unref();
      return;
    }
    await new Promise((r) => setTimeout(r, probeDelay(Date.now() - started)));
  }
}

function startChild() {
  const [command, ...args] = spec.command;
  readinessTimer = null;
  limitCpu('starting');
  const current = spawn(command, args, {
    cwd: spec.cwd,
    env: spec.env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = current;
  const out = lineSplitter('stdout');
  const err = lineSplitter('stderr');
  current.stdout.on('data', (chunk) => out.push(chunk));
  current.stderr.on('data', (chunk) => err.push(chunk));
  current.once('error', (error) => {
    writeLogLine('stderr', `cannot start ${command}: ${error.message}`);
    finish('failed', `cannot start ${command}: ${error.code ?? error.message}`, null, null);
  });
  current.once('spawn', () => {
    // It started now; moving it into its cgroup may then wait on the kernel (cgroup v1: some ms).
    const startedAt = now();
    for (const procs of cgroup.procs ?? []) tryWrite(procs, current.pid);
    saveState({
      phase: 'starting',
      ready: false,
      child: { pid: current.pid, startTime: startTimeOf(current.pid), startedAt },
      message: null,
    });
    event('started', `started process ${current.pid}`, startedAt);
    void awaitReadiness(current);
  });
  current.once('close', (code, signal) => {
    out.flush();
    err.flush();
    if (child !== current) return;
    child = null;
    onExit(code, signal);
  });
}

function describeExit(code, signal) {
  return signal ? `killed by ${signal}` : `exited with code ${code}`;
}

function onExit(code, signal) {
  const how = describeExit(code, signal);
  saveState({ exitCode: code, signal, ready: false, child: null });
  if (stopping) return finish('stopped', `stopped (${how})`, code, signal);
  if (readinessTimer?.timedOut) return finish('failed', state.message, code, signal);
  event('exited', how);
  if (!everReady) return finish('failed', `${how} before becoming ready`, code, signal);
  const now_ = Date.now();
  restartTimes = restartTimes.filter((t) => now_ - t < spec.restart.windowMs);
  if (restartTimes.length >= spec.restart.maxRestarts) {
    const minutes = Math.round(spec.restart.windowMs / 60000);
    return finish(
      'failed',
      `${how}; restarted ${restartTimes.length} times in ${minutes} min, giving up`,
      code,
      signal,
    );
  }
  const backoff = Math.min(
    spec.restart.maxBackoffMs,
    spec.restart.initialBackoffMs * 2 ** restartTimes.length,
  );
  restartTimes.push(now_);
  saveState({
    phase: 'starting',
    restarts: state.restarts + 1,
    message: `${how}; restarting in ${backoff} ms`,
  });
  event('restarting', `${how}; restarting in ${backoff} ms`);
  setTimeout(() => {
    if (!stopping) startChild();
  }, backoff);
}

let finished = false;

function finish(phase, message, code, signal) {
  if (finished) return;
  finished = true;
  saveState({
    phase,
    ready: false,
    child: null,
    message,
    exitCode: code ?? state.exitCode,
    signal: signal ?? state.signal,
  });
  event(phase, message);
  removeCgroups();
  closeSync(logFd);
  process.exit(0);
}

process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  // The program is told first: reporting can fail (the directory gone), stopping must not.
  if (child) {
    killGroup('SIGTERM');
    setTimeout(() => killGroup('SIGKILL'), spec.stopGraceMs).unref();
  }
  event('stopping', 'asked to stop');
  saveState({ phase: state.phase, message: 'stopping' });
  if (!child) return finish('stopped', 'stopped', null, null);
});
process.on('SIGINT', () => undefined);
process.on('SIGHUP', () => undefined);

event('starting', `starting ${spec.command.join(' ')}`);
startChild();
