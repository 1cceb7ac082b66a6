// Run-to-completion workloads on this machine: each one a process group started through
// batch-runner.mjs, which enforces its deadline, records its exit status in a file, and kills it
// when the worker that started it dies (its stdin is a pipe from that worker).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot } from '../../../paths.js';
import { localCapabilities } from './settings.js';
import type { BatchBackend, BatchStatus, BatchWorkloadSpec } from '../types.js';

const runnerScript = join(repoRoot, 'src', 'backends', 'cluster', 'local', 'batch-runner.mjs');

interface StatusFile {
  startedAt: string;
  /** The workload's process (group leader). */
  pid?: number;
  /** The runner's own process, which records the workload's end before it exits. */
  runnerPid?: number;
  running?: boolean;
  finishedAt?: string;
  exitCode?: number | null;
  signal?: string | null;
  message?: string | null;
}

export class LocalBatchBackend implements BatchBackend {
  readonly type = 'local' as const;
  readonly capabilities = localCapabilities;
  private readonly children = new Map<string, ChildProcess>();

  constructor(private readonly options: { root: string; pollMs?: number }) {}

  private dir(jobId: string): string {
    if (!/^[A-Za-z0-9_.-]{1,100}$/.test(jobId)) throw new RangeError(`not a usable job id: ${jobId}`);
    return join(this.options.root, jobId);
  }

  logPath(jobId: string): string {
    return join(this.dir(jobId), 'log');
  }

  async start(spec: BatchWorkloadSpec): Promise<void> {
    const local = spec.run.local;
    if (!local) throw new RangeError(`batch workload ${spec.jobId} has no local run spec`);
    const dir = this.dir(spec.jobId);
    if (existsSync(join(dir, 'status.json')) || this.children.has(spec.jobId)) return;
    await mkdir(dir, { recursive: true });
    const child = spawn(
      process.execPath,
      [runnerScript, dir, String(spec.timeoutMs), '--', ...local.command],
      {
        cwd: local.cwd,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: local.cwd, ...local.env },
        stdio: ['pipe', 'ignore', 'ignore'],
      },
    );
    // The pipe is the death signal: it stays open as long as this process lives.
    child.stdin?.on('error', () => undefined);
    this.children.set(spec.jobId, child);
    child.on('exit', () => this.children.delete(spec.jobId));
    await this.waitFor(spec.jobId, (s) => s !== null, 10_000);
  }

  private async readStatus(jobId: string): Promise<StatusFile | null> {
    try {
      return JSON.parse(await readFile(join(this.dir(jobId), 'status.json'), 'utf8')) as StatusFile;
    } catch {
      return null;
    }
  }

  async status(jobId: string): Promise<BatchStatus | null> {
    let file = await this.readStatus(jobId);
    if (!file) {
      return this.children.has(jobId)
        ? { jobId, phase: 'pending', exitCode: null, message: null, startedAt: null, finishedAt: null }
        : null;
    }
    if (file.running && !file.finishedAt && !this.running(jobId, file)) {
      // Everything is gone. The runner may have recorded the end and exited since the file was
      // read: what the file says now is the truth, and only a runner that died silently lost it.
      file = (await this.readStatus(jobId)) ?? file;
    }
    if (file.running && !file.finishedAt) {
      // The runner died without recording an end (killed with its worker): the workload is gone too.
      if (this.running(jobId, file)) {
        return {
          jobId,
          phase: 'running',
          exitCode: null,
          message: null,
          startedAt: file.startedAt,
          finishedAt: null,
        };
      }
      return {
        jobId,
        phase: 'failed',
        exitCode: null,
        message: 'lost: its runner stopped without recording an exit',
        startedAt: file.startedAt,
        finishedAt: null,
      };
    }
    const succeeded = file.exitCode === 0 && !file.message;
    return {
      jobId,
      phase: succeeded ? 'succeeded' : 'failed',
      exitCode: file.exitCode ?? null,
      message: file.message ?? null,
      startedAt: file.startedAt,
      finishedAt: file.finishedAt ?? null,
    };
  }

  /** Whether anything of a workload that has not recorded its end still runs. */
  private running(jobId: string, file: StatusFile): boolean {
    return (
      this.children.has(jobId) ||
      (file.pid !== undefined && isAlive(file.pid)) ||
      (file.runnerPid !== undefined && isAlive(file.runnerPid))
    );
  }

  private async waitFor(
    jobId: string,
    done: (status: BatchStatus | null) => boolean,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<BatchStatus | null> {
    const deadline = Date.now() + timeoutMs;
    let status = await this.status(jobId);
    for (let i = 0; i < 1_000_000 && !done(status) && Date.now() < deadline && !signal?.aborted; i++) {
      await sleep(this.options.pollMs ?? 50);
      status = await this.status(jobId);
    }
    return status;
  }

  /** Resolves with the final status once the workload ended (or when `signal` aborts). */
  async wait(jobId: string, signal?: AbortSignal): Promise<BatchStatus | null> {
    return this.waitFor(
      jobId,
      (s) => s === null || s.phase === 'succeeded' || s.phase === 'failed',
      Number.MAX_SAFE_INTEGER,
      signal,
    );
  }

  async *logs(
    jobId: string,
    options: { tail?: number; follow?: boolean; signal?: AbortSignal },
  ): AsyncIterable<string> {
    const path = this.logPath(jobId);
    let offset = 0;
    if (options.tail !== undefined) {
      const text = await readFile(path, 'utf8').catch(() => '');
      const lines = text.split('\n');
      if (lines[lines.length - 1] === '') lines.pop();
      const kept = lines.slice(-options.tail);
      if (kept.length > 0) yield `${kept.join('\n')}\n`;
      offset = Buffer.byteLength(text);
    }
    for (let i = 0; i < 10_000_000; i++) {
      const chunk = await readFrom(path, offset);
      if (chunk.length > 0) {
        offset += chunk.length;
        yield chunk.toString('utf8');
        continue;
      }
      if (!options.follow || options.signal?.aborted) return;
      const status = await this.status(jobId);
      if (!status || status.phase === 'succeeded' || status.phase === 'failed') {
        const rest = await readFrom(path, offset);
        if (rest.length > 0) yield rest.toString('utf8');
        return;
      }
      await sleep(this.options.pollMs ?? 100, undefined, { signal: options.signal }).catch(() => undefined);
    }
  }

  async cancel(jobId: string): Promise<void> {
    const child = this.children.get(jobId);
    if (child?.pid) {
      try {
        process.kill(child.pid, 'SIGTERM');
      } catch {
        // Already gone.
      }
      await this.wait(jobId, AbortSignal.timeout(10_000));
      return;
    }
    const file = await this.readStatus(jobId);
    if (file?.pid && !file.finishedAt) {
      try {
        process.kill(-file.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }

  async remove(jobId: string): Promise<void> {
    await rm(this.dir(jobId), { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readFrom(path: string, offset: number): Promise<Buffer> {
  const size = (await stat(path).catch(() => null))?.size ?? 0;
  if (size <= offset) return Buffer.alloc(0);
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(Math.min(size - offset, 1024 * 1024));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}
