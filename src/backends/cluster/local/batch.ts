// Run-to-completion workloads on this machine: each one a single process (a process group of its
// own), started by the backend's runner (batch-runner.mjs). The runner is one small process per
// backend, started with the first workload and kept for the next: it enforces deadlines, records
// each workload's exit status in a file, and kills the workloads when the process that started
// them dies (its IPC channel from that process closes). Only the runner is kept warm: it runs
// Atrium's code alone, and every workload is a fresh process that holds nothing of another task.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot } from '../../../paths.js';
import { localCapabilities } from './settings.js';
import type { BatchBackend, BatchStatus, BatchWorkloadSpec } from '../types.js';

const runnerScript = join(repoRoot, 'src', 'backends', 'cluster', 'local', 'batch-runner.mjs');

/** How long a start waits for the runner to answer. */
const startTimeoutMs = 10_000;

interface StatusFile {
  startedAt: string;
  /** The workload's process (group leader). */
  pid?: number;
  /** The runner that started it, which records the workload's end before it says so. */
  runnerPid?: number;
  running?: boolean;
  finishedAt?: string;
  exitCode?: number | null;
  signal?: string | null;
  message?: string | null;
}

/** What the runner says (batch-runner.mjs). */
type RunnerMessage =
  { type: 'started'; jobId: string; pid: number; startedAt: string } | { type: 'ended'; jobId: string };

/** A workload this backend's runner started and has not yet said ended. */
interface OwnWorkload {
  pid: number;
  startedAt: string;
}

/** A start the runner has not answered yet. */
interface PendingStart {
  done: Promise<void>;
  settle: () => void;
}

export class LocalBatchBackend implements BatchBackend {
  readonly type = 'local' as const;
  readonly capabilities = localCapabilities;
  private runner: ChildProcess | null = null;
  private readonly starting = new Map<string, PendingStart>();
  private readonly own = new Map<string, OwnWorkload>();

  constructor(private readonly options: { root: string; pollMs?: number }) {}

  private dir(jobId: string): string {
    if (!/^[A-Za-z0-9_.-]{1,100}$/.test(jobId)) throw new RangeError(`not a usable job id: ${jobId}`);
    return join(this.options.root, jobId);
  }

  logPath(jobId: string): string {
    return join(this.dir(jobId), 'log');
  }

  /** The runner, started if there is none (or the last one ended). */
  private async startedRunner(): Promise<ChildProcess> {
    if (this.runner) return this.runner;
    await mkdir(this.options.root, { recursive: true });
    // Its own process group: a signal to this process's group (Ctrl-C, a service manager's stop)
    // reaches this process, whose workers let their jobs finish first; the runner follows it out.
    const runner = spawn(process.execPath, [runnerScript], {
      cwd: this.options.root,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      detached: true,
    });
    this.runner = runner;
    runner.on('message', (message: RunnerMessage) => this.onRunnerMessage(message));
    runner.on('error', () => this.onRunnerGone(runner));
    runner.on('exit', () => this.onRunnerGone(runner));
    // The runner never keeps this process alive; a workload being waited for does.
    runner.unref();
    runner.channel?.unref();
    return runner;
  }

  private onRunnerMessage(message: RunnerMessage): void {
    if (message.type === 'started') {
      this.own.set(message.jobId, { pid: message.pid, startedAt: message.startedAt });
    } else {
      this.own.delete(message.jobId);
    }
    this.starting.get(message.jobId)?.settle();
  }

  /**
   * The runner died (it should not): its workloads go too, as when this process dies. Their ends
   * were not recorded, so every backend reports them lost; the next start starts a new runner.
   */
  private onRunnerGone(runner: ChildProcess): void {
    if (this.runner !== runner) return;
    this.runner = null;
    for (const [jobId, { pid }] of this.own) {
      // One whose end the runner recorded before it died has no group left to kill (and its pid
      // may be another's by now).
      if (!recordedEnd(join(this.dir(jobId), 'status.json'))) killGroup(pid);
    }
    this.own.clear();
    for (const pending of this.starting.values()) pending.settle();
  }

  async start(spec: BatchWorkloadSpec): Promise<void> {
    const local = spec.run.local;
    if (!local) throw new RangeError(`batch workload ${spec.jobId} has no local run spec`);
    const dir = this.dir(spec.jobId);
    const pending = this.starting.get(spec.jobId);
    if (pending) return pending.done;
    if (this.own.has(spec.jobId) || existsSync(join(dir, 'status.json'))) return;
    let settle = () => undefined as void;
    const done = new Promise<void>((resolve) => (settle = resolve));
    this.starting.set(spec.jobId, { done, settle });
    const timer = setTimeout(settle, startTimeoutMs);
    try {
      await mkdir(dir, { recursive: true });
      const runner = await this.startedRunner();
      runner.send({
        type: 'start',
        jobId: spec.jobId,
        dir,
        timeoutMs: spec.timeoutMs,
        command: local.command,
        cwd: local.cwd,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: local.cwd, ...local.env },
      });
      await done;
    } finally {
      clearTimeout(timer);
      this.starting.delete(spec.jobId);
      settle();
    }
  }

  private async readStatus(jobId: string): Promise<StatusFile | null> {
    try {
      return JSON.parse(await readFile(join(this.dir(jobId), 'status.json'), 'utf8')) as StatusFile;
    } catch {
      return null;
    }
  }

  async status(jobId: string): Promise<BatchStatus | null> {
    // What this backend's runner runs is known without reading its file: it says when one ends,
    // after recording the end, so from then on the file is the truth.
    const own = this.own.get(jobId);
    if (own) return runningStatus(jobId, own.startedAt);
    let file = await this.readStatus(jobId);
    if (!file) {
      return this.starting.has(jobId)
        ? { jobId, phase: 'pending', exitCode: null, message: null, startedAt: null, finishedAt: null }
        : null;
    }
    if (file.running && !file.finishedAt && !this.running(jobId, file)) {
      // Everything is gone. The runner may have recorded the end since the file was read: what
      // the file says now is the truth, and only a runner that died silently lost it.
      file = (await this.readStatus(jobId)) ?? file;
    }
    if (file.running && !file.finishedAt) {
      // The runner died without recording an end (killed with its worker): the workload is gone too.
      if (this.running(jobId, file)) return runningStatus(jobId, file.startedAt);
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
      this.own.has(jobId) ||
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
    await this.starting.get(jobId)?.done;
    if (this.own.has(jobId) && this.runner?.connected) {
      // The runner stops it and records it cancelled.
      this.runner.send({ type: 'cancel', jobId });
      await this.wait(jobId, AbortSignal.timeout(10_000));
      return;
    }
    const file = await this.readStatus(jobId);
    if (file?.pid && !file.finishedAt) killGroup(file.pid);
  }

  async remove(jobId: string): Promise<void> {
    await rm(this.dir(jobId), { recursive: true, force: true });
  }
}

function runningStatus(jobId: string, startedAt: string): BatchStatus {
  return { jobId, phase: 'running', exitCode: null, message: null, startedAt, finishedAt: null };
}

function recordedEnd(statusPath: string): boolean {
  try {
    return (JSON.parse(readFileSync(statusPath, 'utf8')) as StatusFile).finishedAt !== undefined;
  } catch {
    return false;
  }
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // Already gone.
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
