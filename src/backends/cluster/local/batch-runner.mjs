// The runner of the local batch backend (batch.ts): one long-lived process per backend, started
// with its first workload and kept warm for the next. It starts each workload as a process group
// of its own, its stdout and stderr appended to <dir>/log; enforces its deadline; records its start
// and its exit in <dir>/status.json, written atomically, that every backend reads; and kills every
// workload it started when the process that started it goes away (the IPC channel closes, even when
// that process is SIGKILLed) or when it is told to stop (SIGTERM, SIGINT).
//
// It runs only Atrium's code. Users' code runs in the workloads, each a fresh process with only the
// environment its task was given: nothing of one task is ever in the process of another.
//
//   node batch-runner.mjs   (spawned with an IPC channel; cwd and env are not the workloads')
//   in:  {type: 'start', jobId, dir, timeoutMs, command, cwd, env}  ·  {type: 'cancel', jobId}
//   out: {type: 'started', jobId, pid, startedAt}  ·  {type: 'ended', jobId}   (after the record)
import { spawn } from 'node:child_process';
import { closeSync, openSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

if (!process.send) {
  process.stderr.write('batch-runner.mjs is started by the local batch backend, with an IPC channel\n');
  process.exit(2);
}

const killGraceMs = 2000;
// When stopping: how long the workloads get to end (and their ends to be recorded) after SIGKILL.
const exitAfterMs = killGraceMs + 3000;

/** The workloads that run, by job id. */
const workloads = new Map();
let stopping = false;

/** Writes the status file; false when it cannot (its directory was removed meanwhile, the disk is full). */
function record(dir, status) {
  const file = join(dir, 'status.json');
  try {
    writeFileSync(`${file}.tmp`, JSON.stringify(status));
    renameSync(`${file}.tmp`, file);
    return true;
  } catch {
    return false;
  }
}

function tell(message) {
  // A parent that went away is told nothing; the records on disk are what counts.
  if (process.connected) process.send(message, undefined, undefined, () => undefined);
}

function signalGroup(pid, name) {
  try {
    process.kill(-pid, name);
  } catch {
    // The group is gone already.
  }
}

/** SIGTERM to the workload's group, SIGKILL after a grace; the first reason given is recorded. */
function stopWorkload(workload, why) {
  workload.reason ??= why;
  if (workload.killTimer) return;
  signalGroup(workload.child.pid, 'SIGTERM');
  workload.killTimer = setTimeout(() => signalGroup(workload.child.pid, 'SIGKILL'), killGraceMs);
}

function start({ jobId, dir, timeoutMs, command, cwd, env }) {
  if (workloads.has(jobId)) return;
  const startedAt = new Date().toISOString();
  const cannotStart = (error) => {
    record(dir, {
      startedAt,
      finishedAt: new Date().toISOString(),
      exitCode: null,
      signal: null,
      message: `cannot start: ${error.message}`,
    });
    tell({ type: 'ended', jobId });
  };
  if (stopping) {
    cannotStart(new Error('its runner is stopping'));
    return;
  }
  let child;
  try {
    const log = openSync(join(dir, 'log'), 'a');
    try {
      child = spawn(command[0], command.slice(1), { cwd, env, stdio: ['ignore', log, log], detached: true });
    } finally {
      closeSync(log);
    }
  } catch (error) {
    cannotStart(error);
    return;
  }
  if (child.pid === undefined) {
    child.once('error', cannotStart);
    return;
  }
  // Nothing a workload does may take the runner (and with it the other workloads) down.
  child.on('error', () => undefined);
  const workload = { child, dir, reason: null, killTimer: null, deadline: null };
  workloads.set(jobId, workload);
  // The runner's pid too: while it lives, the workload's end is not recorded yet but will be.
  record(dir, { startedAt, pid: child.pid, runnerPid: process.pid, running: true });
  workload.deadline = setTimeout(
    () => stopWorkload(workload, `deadline exceeded (${timeoutMs} ms)`),
    timeoutMs,
  );
  child.on('exit', (code, signalName) => {
    clearTimeout(workload.deadline);
    clearTimeout(workload.killTimer);
    const message =
      workload.reason ??
      (code === 0 ? null : code !== null ? `exited with code ${code}` : `killed by ${signalName}`);
    record(dir, {
      startedAt,
      finishedAt: new Date().toISOString(),
      exitCode: code,
      signal: signalName,
      message,
    });
    // Whatever the workload left behind in its group goes too.
    signalGroup(child.pid, 'SIGKILL');
    workloads.delete(jobId);
    tell({ type: 'ended', jobId });
    if (stopping && workloads.size === 0) process.exit(0);
  });
  tell({ type: 'started', jobId, pid: child.pid, startedAt });
}

/** Stops every workload (recording `why` as its end) and exits once their ends are recorded. */
function stopAll(why) {
  if (stopping) return;
  stopping = true;
  if (workloads.size === 0) process.exit(0);
  for (const workload of workloads.values()) stopWorkload(workload, why);
  setTimeout(() => process.exit(0), exitAfterMs).unref();
}

process.on('message', (message) => {
  if (message?.type === 'start') start(message);
  else if (message?.type === 'cancel') {
    const workload = workloads.get(message.jobId);
    if (workload) stopWorkload(workload, 'cancelled');
  }
});
process.on('disconnect', () => stopAll('its worker went away'));
process.on('SIGTERM', () => stopAll('its runner was stopped'));
process.on('SIGINT', () => stopAll('its runner was stopped'));
