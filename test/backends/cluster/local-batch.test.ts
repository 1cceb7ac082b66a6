// The local batch backend with real processes: exit status, logs, deadline, cancellation, the
// death pipe (a workload never outlives the process that started it), one process per workload
// under one warm runner, and what happens when that runner dies.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from '@jest/globals';
import { LocalBatchBackend } from '../../../src/backends/cluster/local/batch.js';
import type { BatchWorkloadSpec } from '../../../src/backends/cluster/types.js';
import { repoRoot } from '../../../src/paths.js';

const root = mkdtempSync(join(tmpdir(), 'atrium-batch-'));
const work = mkdtempSync(join(tmpdir(), 'atrium-batch-work-'));
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

let n = 0;
function spec(script: string, timeoutMs = 20_000): BatchWorkloadSpec {
  n += 1;
  return {
    jobId: `job_test${n}`,
    projectId: 'p',
    run: {
      local: { command: [process.execPath, '-e', script], cwd: work, env: { GREETING: 'hi' } },
      cluster: null,
    },
    resources: { cpuMillis: 100, memoryBytes: 64 * 1024 * 1024, gpu: 0 },
    timeoutMs,
    labels: {},
  };
}

/** What /proc says of a process: its parent's pid. */
function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

function statusFile(jobId: string): { pid: number; runnerPid: number } {
  return JSON.parse(readFileSync(join(root, jobId, 'status.json'), 'utf8')) as {
    pid: number;
    runnerPid: number;
  };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1200 && !condition(); i++) await sleep(50);
  if (!condition()) throw new Error(`timed out waiting for ${what}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function collect(iterable: AsyncIterable<string>): Promise<string> {
  let text = '';
  for await (const chunk of iterable) text += chunk;
  return text;
}

describe('LocalBatchBackend', () => {
  const backend = new LocalBatchBackend({ root, pollMs: 20 });

  it('runs a workload to success, with its environment, and keeps its output as logs', async () => {
    const s = spec('console.log(process.env.GREETING, process.cwd()); console.error("to stderr")');
    await backend.start(s);
    const status = await backend.wait(s.jobId);
    expect(status).toMatchObject({ phase: 'succeeded', exitCode: 0, message: null });
    const log = await collect(backend.logs(s.jobId, {}));
    expect(log).toContain(`hi ${work}`);
    expect(log).toContain('to stderr');
    expect(await collect(backend.logs(s.jobId, { tail: 1 }))).toBe('to stderr\n');
  });

  it('reports a failure with its exit code', async () => {
    const s = spec('process.exit(3)');
    await backend.start(s);
    expect(await backend.wait(s.jobId)).toMatchObject({
      phase: 'failed',
      exitCode: 3,
      message: 'exited with code 3',
    });
  });

  it('never starts a workload twice', async () => {
    const s = spec('require("fs").appendFileSync("twice.txt", "x")');
    await backend.start(s);
    await backend.wait(s.jobId);
    await backend.start(s);
    await backend.wait(s.jobId);
    expect(readFileSync(join(work, 'twice.txt'), 'utf8')).toBe('x');
  });

  it('kills a workload past its deadline', async () => {
    const s = spec('setInterval(() => {}, 1000)', 300);
    await backend.start(s);
    const status = await backend.wait(s.jobId);
    expect(status?.phase).toBe('failed');
    expect(status?.message).toMatch(/deadline exceeded/);
  });

  it('cancels a running workload and follows its log until it ends', async () => {
    const s = spec('console.log("started"); setInterval(() => console.log("tick"), 50)');
    await backend.start(s);
    // Followed from the start; cancelled once the log shows it running (however slow the machine).
    let seen = '';
    const followed = (async () => {
      for await (const chunk of backend.logs(s.jobId, { follow: true })) seen += chunk;
      return seen;
    })();
    for (let i = 0; i < 600 && !seen.includes('tick\n'); i++) await sleep(50);
    await backend.cancel(s.jobId);
    const status = await backend.status(s.jobId);
    expect(status).toMatchObject({ phase: 'failed', message: 'cancelled' });
    expect(await followed).toMatch(/^started\ntick\n/);
    await backend.remove(s.jobId);
    expect(await backend.status(s.jobId)).toBeNull();
  });

  it('kills the workload when the process that started it dies (death pipe)', async () => {
    // A separate node process starts a workload through the backend, then is SIGKILLed.
    const pidFile = join(work, 'orphan.pid');
    const starter = `
      import { LocalBatchBackend } from ${JSON.stringify(join(repoRoot, 'dist', 'src', 'backends', 'cluster', 'local', 'batch.js'))};
      const b = new LocalBatchBackend({ root: ${JSON.stringify(root)} });
      await b.start({ jobId: 'job_orphan', projectId: 'p', timeoutMs: 60000, labels: {}, resources: { cpuMillis: 1, memoryBytes: 1, gpu: 0 },
        run: { cluster: null, local: { command: [process.execPath, '-e', 'require("fs").writeFileSync(${JSON.stringify(pidFile)}, String(process.pid)); setInterval(() => {}, 1000)'], cwd: ${JSON.stringify(work)}, env: {} } } });
      setInterval(() => {}, 1000);
    `;
    const proc = spawn(process.execPath, ['--input-type=module', '-e', starter], { stdio: 'ignore' });
    let pid = 0;
    for (let i = 0; i < 1200 && !pid; i++) {
      await sleep(50);
      try {
        pid = Number(readFileSync(pidFile, 'utf8'));
      } catch {
        // Not yet.
      }
    }
    expect(pid).toBeGreaterThan(0);
    expect(isAlive(pid)).toBe(true);
    proc.kill('SIGKILL');
    for (let i = 0; i < 1200 && isAlive(pid); i++) await sleep(50);
    expect(isAlive(pid)).toBe(false);
    expect((await backend.status('job_orphan'))?.phase).toBe('failed');
  });

  it('never reports a workload that exited cleanly as lost, however its end is polled', async () => {
    // A runner records the exit and then exits itself; a poll that read the file just before and
    // looked for the processes just after must read the file again, not call the workload lost.
    // Polled tightly both here (which started them) and by a backend of another process.
    const elsewhere = new LocalBatchBackend({ root, pollMs: 1 });
    const specs = Array.from({ length: 40 }, () => spec('process.exit(0)'));
    const endings = await Promise.all(
      specs.map(async (s) => {
        await backend.start(s);
        const seen: string[] = []; // every failure reported on the way
        for (let i = 0; i < 20_000; i++) {
          const [here, there] = await Promise.all([backend.status(s.jobId), elsewhere.status(s.jobId)]);
          for (const status of [here, there]) {
            if (status?.phase === 'failed') seen.push(`${status.phase}: ${status.message}`);
          }
          if (here?.phase === 'succeeded' && there?.phase === 'succeeded') break;
        }
        return seen;
      }),
    );
    expect(endings.flat()).toEqual([]);
  }, 120_000);

  it('starts each workload as one process, a child of one runner kept for the next', async () => {
    const specs = [spec('setInterval(() => {}, 1000)'), spec('setInterval(() => {}, 1000)')];
    for (const s of specs) await backend.start(s);
    const [first, second] = specs.map((s) => statusFile(s.jobId));
    expect(first?.runnerPid).toBe(second?.runnerPid);
    for (const file of [first, second]) expect(parentOf(file?.pid as number)).toBe(file?.runnerPid);
    for (const s of specs) await backend.cancel(s.jobId);
    expect(isAlive(first?.runnerPid as number)).toBe(true);
  });

  it('gives a workload only the environment of its spec, nothing of the process that started it', async () => {
    const s = spec('console.log(JSON.stringify(Object.keys(process.env).sort()))');
    await backend.start(s);
    expect(await backend.wait(s.jobId)).toMatchObject({ phase: 'succeeded' });
    const keys = JSON.parse(await collect(backend.logs(s.jobId, {}))) as string[];
    // The test runner's own variables (JEST_WORKER_ID and the like) stay out.
    expect(keys).toEqual(['GREETING', 'HOME', 'LANG', 'PATH']);
  });

  it('keeps running the other workloads when one of them has its directory removed under it', async () => {
    const long = spec('console.log("up"); setTimeout(() => console.log("done"), 1500)');
    const removed = spec('setTimeout(() => {}, 300)');
    await backend.start(long);
    await backend.start(removed);
    await backend.remove(removed.jobId);
    expect(await backend.wait(long.jobId)).toMatchObject({ phase: 'succeeded' });
    expect(await collect(backend.logs(long.jobId, {}))).toBe('up\ndone\n');
  });

  it('kills the workloads of a runner that dies and reports them lost; the next start gets a new runner', async () => {
    const s = spec('setInterval(() => {}, 1000)');
    await backend.start(s);
    const { pid, runnerPid } = statusFile(s.jobId);
    process.kill(runnerPid, 'SIGKILL');
    await until(() => !isAlive(pid), 'the workload to be killed');
    expect(await backend.wait(s.jobId)).toMatchObject({
      phase: 'failed',
      message: 'lost: its runner stopped without recording an exit',
    });
    const next = spec('process.exit(0)');
    await backend.start(next);
    expect(await backend.wait(next.jobId)).toMatchObject({ phase: 'succeeded' });
    expect(statusFile(next.jobId).runnerPid).not.toBe(runnerPid);
  });
});
