// Runs one batch workload for the local batch backend and dies with its parent: the worker that
// started it holds our stdin open; when that worker goes (even by SIGKILL) stdin ends, and we kill
// the workload's whole process group. Also enforces the deadline, and records the exit status in
// a file, written atomically, that the backend reads.
//   node batch-runner.mjs <dir> <timeoutMs> -- <command…>   (cwd and env are the workload's)
import { spawn } from 'node:child_process';
import { closeSync, openSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [dir, timeoutArg, separator, ...command] = process.argv.slice(2);
if (!dir || separator !== '--' || command.length === 0) {
  process.stderr.write('usage: batch-runner.mjs <dir> <timeoutMs> -- <command…>\n');
  process.exit(2);
}
const timeoutMs = Number(timeoutArg);
const log = openSync(join(dir, 'log'), 'a');
const startedAt = new Date().toISOString();
const child = spawn(command[0], command.slice(1), {
  stdio: ['ignore', log, log],
  detached: true,
});
closeSync(log);

let reason = null;
const killGroup = (why) => {
  reason ??= why;
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {
    // The group is gone already.
  }
  setTimeout(() => {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // The group is gone already.
    }
  }, 2000).unref();
};

function record(status) {
  const file = join(dir, 'status.json');
  writeFileSync(`${file}.tmp`, JSON.stringify(status));
  renameSync(`${file}.tmp`, file);
}

child.on('error', (error) => {
  record({
    startedAt,
    finishedAt: new Date().toISOString(),
    exitCode: null,
    signal: null,
    message: `cannot start: ${error.message}`,
  });
  process.exit(0);
});
// Our own pid too: while we live, the workload's end is not recorded yet but will be.
record({ startedAt, pid: child.pid, runnerPid: process.pid, running: true });

const deadline = setTimeout(() => killGroup(`deadline exceeded (${timeoutMs} ms)`), timeoutMs);
process.stdin.on('end', () => killGroup('its worker went away'));
process.stdin.on('error', () => killGroup('its worker went away'));
process.stdin.resume();
process.on('SIGTERM', () => killGroup('cancelled'));

child.on('exit', (code, signal) => {
  clearTimeout(deadline);
  const message =
    reason ?? (code === 0 ? null : code !== null ? `exited with code ${code}` : `killed by ${signal}`);
  record({ startedAt, finishedAt: new Date().toISOString(), exitCode: code, signal, message });
  // Whatever the workload left behind in its group goes too.
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // The group is gone already.
  }
  process.exit(0);
});
