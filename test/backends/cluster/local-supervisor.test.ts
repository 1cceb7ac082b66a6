// The supervisor script as a spare: started ahead of need with an IPC channel, it waits to be given a
// service directory; given one, it acknowledges, lets go of the channel and supervises like any
// other (outliving whoever started it); never given one, it ends with its channel.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import { isAlive } from '../../../src/backends/cluster/local/backend.js';
import { repoRoot } from '../../../src/paths.js';

const supervisorScript = join(repoRoot, 'src', 'backends', 'cluster', 'local', 'supervisor.mjs');
const probeScript = join(repoRoot, 'test', 'fixtures', 'packages', 'probe', 'probe.mjs');
const root = mkdtempSync(join(tmpdir(), 'atrium-supervisor-'));

function startSpare(): ChildProcess {
  return spawn(process.execPath, [supervisorScript, '--spare'], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
  });
}

const exited = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
    else child.once('exit', (code) => resolve(code));
  });

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** A service directory with a spec.json that runs the probe package (no limits). */
async function serviceDir(name: string): Promise<string> {
  const dir = join(root, name);
  mkdirSync(join(dir, 'work'), { recursive: true });
  const port = await freePort();
  writeFileSync(
    join(dir, 'spec.json'),
    JSON.stringify({
      serviceId: name,
      generation: 1,
      command: [process.execPath, probeScript],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PORT: String(port), MODE: 'serve' },
      cwd: join(dir, 'work'),
      ports: [{ name: 'http', protocol: 'http', port }],
      health: { port, path: '/healthz' },
      readinessTimeoutMs: 10_000,
      stopGraceMs: 1000,
      restart: { maxRestarts: 0, windowMs: 60_000, initialBackoffMs: 100, maxBackoffMs: 100 },
      log: { file: join(dir, 'logs', 'main.log'), maxBytes: 1024 * 1024 },
      limits: { enforce: false, memoryBytes: 0, cpuMillis: 0 },
    }),
  );
  return dir;
}

async function until(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('a spare supervisor', () => {
  it('ends when its channel closes before it is given a service', async () => {
    const spare = startSpare();
    spare.disconnect();
    expect(await exited(spare)).toBe(0);
  });

  it('acknowledges the directory it is given, lets go of the channel, and supervises it from there', async () => {
    const dir = await serviceDir('given');
    const spare = startSpare();
    const answer = new Promise((resolve) => spare.once('message', resolve));
    spare.send({ dir });
    expect(await answer).toEqual({ accepted: dir });
    await until(() => !spare.connected, 'the spare to let go of its channel');
    const state = () =>
      existsSync(join(dir, 'state.json'))
        ? (JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as {
            phase: string;
            supervisor: { pid: number; startTime: string | null };
          })
        : null;
    await until(() => state()?.phase === 'running', 'the service to be running');
    expect(state()?.supervisor.pid).toBe(spare.pid);
    process.kill(spare.pid as number, 'SIGTERM');
    await until(() => state()?.phase === 'stopped', 'the service to be stopped');
    await exited(spare);
    const { supervisor } = state() ?? { supervisor: { pid: 0, startTime: null } };
    expect(isAlive(supervisor.pid, supervisor.startTime)).toBe(false);
  });
});

describe('a supervisor whose directory is gone', () => {
  it('stops its program on SIGTERM, even though it can no longer report', async () => {
    const dir = await serviceDir('vanishing');
    const supervisor = spawn(process.execPath, [supervisorScript, dir], {
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    const done = exited(supervisor);
    const stateFile = join(dir, 'state.json');
    const state = () =>
      existsSync(stateFile)
        ? (JSON.parse(readFileSync(stateFile, 'utf8')) as {
            ready: boolean;
            child: { pid: number; startTime: string | null } | null;
          })
        : null;
    await until(() => state()?.ready === true, 'the program to be ready');
    const { pid, startTime } = state()?.child as { pid: number; startTime: string | null };
    expect(isAlive(pid, startTime)).toBe(true);
    rmSync(dir, { recursive: true, force: true });
    supervisor.kill('SIGTERM');
    await done;
    await until(() => !isAlive(pid, startTime), 'the program to be stopped', 30_000);
  }, 60_000);
});
