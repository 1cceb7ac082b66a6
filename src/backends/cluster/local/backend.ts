// The `local` runtime: every service is a real process on this machine, run by its own supervisor
// (supervisor.mjs) in a directory under the data dir. The supervisor outlives the API; after a
// restart its workloads are adopted again (pid and start time checked) or reported lost.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, watch as watchDir, type FSWatcher } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { localCapabilities } from './settings.js';
import { optionText, renderTemplate } from '../templates.js';
import type { Logger } from 'pino';
import { DomainError } from '../../../errors.js';
import { repoRoot } from '../../../paths.js';
import type {
  ClusterBackend,
  WorkloadPhase,
  LogOptions,
  PortReach,
  ReachRequest,
  ReconcileReport,
  RenderedWorkload,
  WorkloadEvent,
  WorkloadSpec,
  WorkloadStatus,
} from '../types.js';

// Plain JavaScript, not compiled: the same file runs from src/ (tests) and from dist/.
const supervisorScript = join(repoRoot, 'src', 'backends', 'cluster', 'local', 'supervisor.mjs');
const masked = '********';
// How long a spare supervisor may take to acknowledge its service before it is killed and a
// supervisor is started afresh instead: generous, since both must never run.
const spareAnswerMs = 10_000;
const spareDelayMs = 100;

export interface LocalBackendOptions {
  /** Where service directories live (the data dir's `services/`). */
  root: string;
  log: Logger;
  readinessTimeoutMs?: number;
  stopGraceMs?: number;
  logMaxBytes?: number;
  restart?: { maxRestarts: number; windowMs: number; initialBackoffMs: number; maxBackoffMs: number };
  /** Apply memory and cpu limits through cgroups when the machine allows it (default true). */
  enforceLimits?: boolean;
  /** How often supervisors' state and events are read. */
  pollMs?: number;
}

/** What the supervisor writes to state.json. */
interface SupervisorState {
  generation: number;
  supervisor: { pid: number; startTime: string | null };
  phase: 'starting' | 'running' | 'failed' | 'stopped';
  ready: boolean;
  child: { pid: number; startTime: string | null; startedAt: string } | null;
  restarts: number;
  exitCode: number | null;
  signal: string | null;
  message: string | null;
  limits: { applied: boolean; how: string | null; reason: string | null };
  startedAt: string | null;
  updatedAt: string;
}

interface SupervisorSpec {
  serviceId: string;
  generation: number;
  command: string[];
  env: Record<string, string>;
  cwd: string;
  ports: { name: string; protocol: 'http' | 'tcp'; port: number }[];
  health: { port: number; path: string | null } | null;
  readinessTimeoutMs: number;
  stopGraceMs: number;
  restart: { maxRestarts: number; windowMs: number; initialBackoffMs: number; maxBackoffMs: number };
  log: { file: string; maxBytes: number };
  limits: { enforce: boolean; memoryBytes: number; cpuMillis: number };
}

/** The start time of a process (clock ticks since boot, Linux), to tell a pid from its reuse. */
function startTimeOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether the process that was `pid`, started at `startTime`, still runs (and is not a zombie). */
export function isAlive(pid: number, startTime: string | null): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  if (!existsSync('/proc')) return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return false;
  } catch {
    return false;
  }
  return startTime === null || startTimeOf(pid) === startTime;
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/**
 * Removes the cgroups a supervisor made for a service. It does so itself when it ends normally; this
 * covers supervisors that were killed. Fails quietly where there are none (or none are allowed).
 */
async function removeCgroups(serviceId: string): Promise<void> {
  const name = `atrium-${serviceId}`;
  for (const dir of [
    `/sys/fs/cgroup/${name}`,
    `/sys/fs/cgroup/memory/${name}`,
    `/sys/fs/cgroup/cpu/${name}`,
  ]) {
    for (let attempt = 0; attempt < 20; attempt++) {
      const code = await rmdir(dir).then(
        () => 'ok',
        (error: NodeJS.ErrnoException) => error.code,
      );
      if (code !== 'EBUSY') break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** The phase a supervisor's event marks; events that mark none (`stopping`) keep the previous. */
const impliedPhase: Record<string, WorkloadPhase | undefined> = {
  starting: 'starting',
  started: 'starting',
  unready: 'starting',
  exited: 'starting',
  restarting: 'starting',
  running: 'running',
  failed: 'failed',
  stopped: 'stopped',
  lost: 'lost',
};

/** The status as of an event: its phase, the current details where they still hold. */
function asOf(
  current: WorkloadStatus,
  phase: WorkloadPhase,
  event: { type: string; message: string },
): WorkloadStatus {
  const ready = phase === 'running';
  const ended = phase === 'failed' || phase === 'stopped' || phase === 'lost';
  return {
    ...current,
    phase,
    message: ended
      ? current.message
      : event.type === 'restarting' || event.type === 'unready'
        ? event.message
        : null,
    logTail: phase === 'failed' ? current.logTail : [],
    tasks: current.tasks.map((t) => ({
      ...t,
      ready,
      containers: t.containers.map((c) => ({ ...c, ready })),
    })),
    endpoints: ended ? [] : current.endpoints,
  };
}

/** A free port on the loopback interface, as the kernel hands it out. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

export class LocalBackend implements ClusterBackend {
  readonly type = 'local' as const;
  readonly capabilities = localCapabilities;
  private readonly listeners: ((event: WorkloadEvent) => void)[] = [];
  private readonly watched = new Map<
    string,
    {
      eventsOffset: number;
      lastSeq: number;
      lastPhase: string | null;
      supervisorPid: number | null;
      /** Wakes polling as soon as the supervisor writes (the interval stays, as a fallback). */
      watcher: FSWatcher | null;
      /** A spare supervisor is to be started once this workload is past starting. */
      replaceSpare: boolean;
    }
  >();
  /**
   * A supervisor started ahead of need, idle until a launch hands it a service directory: a launch
   * then does not wait for Node.js to start. Started after the first launch, and again each time
   * the launch that took it is past starting (not during it, which it would slow); killed on close.
   */
  private spare: ChildProcess | null = null;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;
  private polling = false;
  private readonly polls = new Map<string, Promise<void>>();
  private pollAgain = false;
  private readonly settings: Required<Omit<LocalBackendOptions, 'root' | 'log'>>;

  constructor(private readonly options: LocalBackendOptions) {
    this.settings = {
      readinessTimeoutMs: options.readinessTimeoutMs ?? 30_000,
      stopGraceMs: options.stopGraceMs ?? 10_000,
      logMaxBytes: options.logMaxBytes ?? 5 * 1024 * 1024,
      restart: options.restart ?? {
        maxRestarts: 5,
        windowMs: 10 * 60_000,
        initialBackoffMs: 1000,
        maxBackoffMs: 30_000,
      },
      enforceLimits: options.enforceLimits ?? true,
      pollMs: options.pollMs ?? 200,
    };
  }

  private dir(serviceId: string): string {
    return join(this.options.root, serviceId);
  }

  /** The argv, working directory and environment of a workload, with the given port numbers. */
  private commandLine(spec: WorkloadSpec, ports: Record<string, string>, secrets: 'plain' | 'masked') {
    const run = spec.run.local;
    if (!run) {
      throw new DomainError(
        'unprocessable',
        `${spec.package.name} ${spec.package.version} has no run spec for the local runtime`,
      );
    }
    const values: Record<string, string> = {
      'service.id': spec.serviceId,
      'service.name': spec.serviceName,
      'project.id': spec.projectId,
      'package.dir': spec.package.sourceDir,
    };
    for (const [name, port] of Object.entries(ports)) values[`ports.${name}`] = port;
    for (const [name, value] of Object.entries(spec.options)) {
      values[`options.${name}`] =
        secrets === 'masked' && spec.secretOptions.includes(name) ? masked : optionText(value);
    }
    const [program = '', ...args] = run.command.map((part) => renderTemplate(part, values));
    // `node` means the Node.js that runs Atrium, whatever PATH says.
    const command = [program === 'node' ? process.execPath : program, ...args];
    const env: Record<string, string> = {};
    for (const [name, value] of Object.entries(run.env)) env[name] = renderTemplate(value, values);
    return { command, env };
  }

  render(spec: WorkloadSpec): RenderedWorkload {
    const run = spec.run.local;
    const ports = Object.fromEntries(
      (run?.ports ?? []).map((p) => [p.name, '(a free port, chosen at start)']),
    );
    const { command, env } = this.commandLine(spec, ports, 'masked');
    return {
      backend: 'local',
      spec: {
        command,
        env,
        working_directory: join(this.dir(spec.serviceId), 'work'),
        ports: run?.ports.map((p) => ({ name: p.name, protocol: p.protocol })) ?? [],
        health: run?.health ?? null,
        limits: { cpu_millis: spec.resources.cpuMillis, memory_bytes: spec.resources.memoryBytes },
      },
    };
  }

  async apply(spec: WorkloadSpec): Promise<void> {
    const dir = this.dir(spec.serviceId);
    // Never two supervisors for one service: the one recorded at spawn, or in its state, is adopted.
    const [state, recorded] = await Promise.all([
      this.readState(spec.serviceId),
      this.readSupervisor(spec.serviceId),
    ]);
    const known = [state?.supervisor, recorded];
    const alive = known.find((p) => p && isAlive(p.pid, p.startTime));
    if (alive) {
      this.watch(spec.serviceId, 0, alive.pid);
      return;
    }
    const run = spec.run.local;
    if (!run) this.commandLine(spec, {}, 'masked');
    const portNumbers: { name: string; protocol: 'http' | 'tcp'; port: number }[] = [];
    for (const p of run?.ports ?? [])
      portNumbers.push({ name: p.name, protocol: p.protocol, port: await freePort() });
    const { command, env } = this.commandLine(
      spec,
      Object.fromEntries(portNumbers.map((p) => [p.name, String(p.port)])),
      'plain',
    );
    const work = join(dir, 'work');
    await Promise.all([mkdir(work, { recursive: true }), mkdir(join(dir, 'logs'), { recursive: true })]);
    const health = run?.health ? portNumbers.find((p) => p.name === run.health?.port) : undefined;
    const supervisorSpec: SupervisorSpec = {
      serviceId: spec.serviceId,
      generation: spec.generation,
      command,
      // A clean environment: the service sees its own variables, never Atrium's (database URL, tokens).
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: work, LANG: 'C.UTF-8', ...env },
      cwd: work,
      ports: portNumbers,
      health: health ? { port: health.port, path: run?.health?.path ?? null } : null,
      readinessTimeoutMs: this.settings.readinessTimeoutMs,
      stopGraceMs: this.settings.stopGraceMs,
      restart: this.settings.restart,
      log: { file: join(dir, 'logs', 'main.log'), maxBytes: this.settings.logMaxBytes },
      limits: {
        enforce: this.settings.enforceLimits,
        memoryBytes: spec.resources.memoryBytes,
        cpuMillis: spec.resources.cpuMillis,
      },
    };
    const [eventsBefore] = await Promise.all([
      this.eventsEnd(spec.serviceId),
      rm(join(dir, 'state.json'), { force: true }),
      writeFile(join(dir, 'spec.json'), JSON.stringify(supervisorSpec), { mode: 0o600 }),
    ]);
    const pid = (await this.handToSpare(spec.serviceId)) ?? (await this.startSupervisor(dir));
    if (pid !== null) {
      await writeFile(join(dir, 'supervisor.json'), JSON.stringify({ pid, startTime: startTimeOf(pid) }));
    }
    // Follow this run's events only: earlier runs' were told when they happened.
    this.unwatch(spec.serviceId);
    this.watch(spec.serviceId, eventsBefore.lastSeq, pid, eventsBefore.offset);
    const watched = this.watched.get(spec.serviceId);
    if (watched) watched.replaceSpare = true;
  }

  /** Starts a supervisor for the service directory `dir`; its pid. */
  private async startSupervisor(dir: string): Promise<number | null> {
    const output = await open(join(dir, 'supervisor.log'), 'a');
    try {
      const supervisor = spawn(process.execPath, [supervisorScript, dir], {
        detached: true,
        stdio: ['ignore', output.fd, output.fd],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      });
      supervisor.unref();
      await new Promise<void>((resolve, reject) => {
        supervisor.once('spawn', resolve);
        supervisor.once('error', reject);
      });
      return supervisor.pid ?? null;
    } finally {
      await output.close();
    }
  }

  /** Starts a spare supervisor, unless there is one (or the backend is closed). */
  private startSpare(): void {
    if (this.spare || this.closed) return;
    const spare = spawn(process.execPath, [supervisorScript, '--spare'], {
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    spare.once('error', (err) => this.options.log.warn({ err }, 'local runtime: no spare supervisor'));
    spare.once('exit', () => {
      if (this.spare === spare) this.spare = null;
    });
    // Neither the process nor its channel keeps the API running.
    spare.unref();
    spare.channel?.unref();
    this.spare = spare;
  }

  /**
   * Hands the service's directory to the spare supervisor, if there is one; its pid once it has
   * acknowledged, or null (no spare, or it did not answer: then it is killed, and with it whatever
   * it may have started).
   */
  private async handToSpare(serviceId: string): Promise<number | null> {
    const spare = this.spare;
    this.spare = null;
    if (!spare) return null;
    const ended = () => spare.exitCode !== null || spare.signalCode !== null;
    if (!spare.pid || !spare.connected || ended()) {
      if (!ended()) spare.kill('SIGKILL');
      return null;
    }
    const pid = spare.pid;
    const dir = this.dir(serviceId);
    spare.channel?.ref();
    const accepted = await new Promise<boolean>((resolve) => {
      const done = (answer: boolean) => {
        clearTimeout(timer);
        spare.off('message', onMessage);
        spare.off('exit', onEnd);
        spare.off('disconnect', onEnd);
        resolve(answer);
      };
      const onMessage = (message: unknown) =>
        done((message as { accepted?: unknown } | null)?.accepted === dir);
      const onEnd = () => done(false);
      const timer = setTimeout(onEnd, spareAnswerMs);
      spare.on('message', onMessage);
      spare.once('exit', onEnd);
      spare.once('disconnect', onEnd);
      spare.send({ dir }, (error) => {
        if (error) onEnd();
      });
    });
    spare.channel?.unref();
    if (accepted) return pid;
    this.options.log.warn({ dir }, 'local runtime: the spare supervisor did not answer; starting one afresh');
    killGroup(pid, 'SIGKILL');
    if (!ended()) {
      await new Promise((resolve) => {
        spare.once('exit', resolve);
        setTimeout(resolve, 5000).unref();
      });
    }
    const child = (await this.readState(serviceId))?.child;
    if (child && isAlive(child.pid, child.startTime)) killGroup(child.pid, 'SIGKILL');
    return null;
  }

  async stop(serviceId: string): Promise<void> {
    // The supervisor as it recorded itself, and as recorded when it was spawned (it may not have
    // written its state yet): stop whichever runs.
    const state = await this.readState(serviceId);
    const supervisors = [state?.supervisor, await this.readSupervisor(serviceId)].filter(
      (p): p is { pid: number; startTime: string | null } => Boolean(p),
    );
    for (const { pid, startTime } of supervisors) {
      if (!isAlive(pid, startTime)) continue;
      process.kill(pid, 'SIGTERM');
      const deadline = Date.now() + this.settings.stopGraceMs + 5000;
      while (isAlive(pid, startTime) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (isAlive(pid, startTime)) killGroup(pid, 'SIGKILL');
    }
    // Whatever the supervisor could not stop (it was killed, or hung) is stopped here.
    const after = await this.readState(serviceId);
    const child = after?.child ?? state?.child;
    if (child && isAlive(child.pid, child.startTime)) {
      killGroup(child.pid, 'SIGTERM');
      const deadline = Date.now() + this.settings.stopGraceMs;
      while (isAlive(child.pid, child.startTime) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      killGroup(child.pid, 'SIGKILL');
    }
    await removeCgroups(serviceId);
    await this.poll(serviceId);
  }

  async delete(serviceId: string): Promise<void> {
    await this.stop(serviceId);
    this.unwatch(serviceId);
    await rm(this.dir(serviceId), { recursive: true, force: true });
  }

  /** Its ports listen on this machine's loopback: the address it reported is the way in. */
  reach(request: ReachRequest): Promise<PortReach> {
    return Promise.resolve({ url: request.endpointUrl, headers: {}, targetHost: false });
  }

  async status(serviceId: string): Promise<WorkloadStatus | null> {
    const state = await this.readState(serviceId);
    if (!state) return null;
    return this.statusOf(serviceId, state);
  }

  private async readState(serviceId: string): Promise<SupervisorState | null> {
    try {
      return JSON.parse(await readFile(join(this.dir(serviceId), 'state.json'), 'utf8')) as SupervisorState;
    } catch {
      return null;
    }
  }

  /** The supervisor as recorded when it was spawned (before it writes its own state). */
  private async readSupervisor(serviceId: string): Promise<{ pid: number; startTime: string | null } | null> {
    try {
      return JSON.parse(await readFile(join(this.dir(serviceId), 'supervisor.json'), 'utf8')) as {
        pid: number;
        startTime: string | null;
      };
    } catch {
      return null;
    }
  }

  /** Where the events file ends now: its length and the number of its last event. */
  private async eventsEnd(serviceId: string): Promise<{ offset: number; lastSeq: number }> {
    const text = await readFile(join(this.dir(serviceId), 'events.jsonl'), 'utf8').catch(() => '');
    const lines = text.trim().split('\n').filter(Boolean);
    const last = lines.length > 0 ? (JSON.parse(lines[lines.length - 1] as string) as { seq: number }) : null;
    return { offset: text.length, lastSeq: last?.seq ?? 0 };
  }

  private async readSpec(serviceId: string): Promise<SupervisorSpec | null> {
    try {
      return JSON.parse(await readFile(join(this.dir(serviceId), 'spec.json'), 'utf8')) as SupervisorSpec;
    } catch {
      return null;
    }
  }

  private async statusOf(serviceId: string, read: SupervisorState): Promise<WorkloadStatus> {
    const spec = await this.readSpec(serviceId);
    let state = read;
    const ended = (s: SupervisorState) => s.phase === 'failed' || s.phase === 'stopped';
    // A supervisor saves its last state, then exits: one read just before that and found dead just
    // after has ended, not vanished. Its state is read again (once: a supervisor that did vanish
    // left the same state).
    if (!ended(state) && !isAlive(state.supervisor.pid, state.supervisor.startTime)) {
      state = (await this.readState(serviceId)) ?? state;
    }
    const terminal = ended(state);
    const supervisorAlive = isAlive(state.supervisor.pid, state.supervisor.startTime);
    const phase = !terminal && !supervisorAlive ? 'lost' : state.phase;
    const running = phase === 'running' || phase === 'starting';
    const exited = state.exitCode !== null || state.signal !== null;
    return {
      serviceId,
      generation: state.generation ?? null,
      phase,
      message:
        phase === 'lost'
          ? 'its supervisor vanished (the machine restarted, or it was killed); its processes were stopped'
          : state.message,
      exitCode: state.exitCode,
      logTail: phase === 'failed' ? await this.tail(serviceId, 20) : [],
      tasks: [
        {
          id: 'main',
          status: state.child ? 'running' : exited || terminal ? 'terminated' : 'waiting',
          ready: state.ready,
          restarts: state.restarts,
          containers: [
            {
              name: 'main',
              ready: state.ready,
              state: state.child ? 'running' : exited || terminal ? 'terminated' : 'waiting',
              reason: state.child
                ? null
                : state.signal
                  ? `killed by ${state.signal}`
                  : exited
                    ? `exited with code ${state.exitCode}`
                    : null,
              exitCode: state.child ? null : state.exitCode,
              startedAt: state.child?.startedAt ?? null,
            },
          ],
        },
      ],
      endpoints: running
        ? (spec?.ports ?? []).map((p) => ({
            port: p.name,
            protocol: p.protocol,
            url: `${p.protocol === 'http' ? 'http' : 'tcp'}://127.0.0.1:${p.port}`,
          }))
        : [],
      startedAt: state.startedAt,
    };
  }

  private async tail(serviceId: string, lines: number): Promise<string[]> {
    const collected: string[] = [];
    for await (const line of this.logs(serviceId, { tail: lines })) collected.push(line.replace(/\n$/, ''));
    return collected;
  }

  async *logs(serviceId: string, options: LogOptions): AsyncIterable<string> {
    const file = join(this.dir(serviceId), 'logs', 'main.log');
    const since = options.since?.toISOString();
    const format = (line: string): string | null => {
      const first = line.indexOf(' ');
      const second = line.indexOf(' ', first + 1);
      if (first < 0 || second < 0) return null;
      const at = line.slice(0, first);
      if (since && at < since) return null;
      return `${options.timestamps ? `${at} ` : ''}${line.slice(second + 1)}\n`;
    };
    const lines: string[] = [];
    // Following continues from exactly what was read, so no line written meanwhile is skipped.
    let position = 0;
    for (const path of [`${file}.1`, file]) {
      const content = await readFile(path).catch(() => Buffer.alloc(0));
      if (path === file) position = content.length;
      for (const line of content.toString('utf8').split('\n')) {
        const formatted = line ? format(line) : null;
        if (formatted !== null) lines.push(formatted);
      }
    }
    yield* options.tail ? lines.slice(-options.tail) : lines;
    if (!options.follow) return;
    let pending = '';
    for (let round = 0; round < 24 * 3600 * 4 && !options.signal?.aborted; round++) {
      await new Promise((r) => setTimeout(r, 250));
      const size = await stat(file)
        .then((s) => s.size)
        .catch(() => 0);
      if (size < position) position = 0;
      if (size > position) {
        const handle = await open(file, 'r');
        try {
          const buffer = Buffer.alloc(size - position);
          await handle.read(buffer, 0, buffer.length, position);
          position = size;
          pending += buffer.toString('utf8');
        } finally {
          await handle.close();
        }
        const complete = pending.split('\n');
        pending = complete.pop() ?? '';
        for (const line of complete) {
          const formatted = line ? format(line) : null;
          if (formatted !== null) yield formatted;
        }
      }
      const state = await this.readState(serviceId);
      if (!state || ((state.phase === 'failed' || state.phase === 'stopped') && size === position)) return;
    }
  }

  onEvent(listener: (event: WorkloadEvent) => void): void {
    this.listeners.push(listener);
  }

  /** Starts following a workload's events from `afterSeq` (the last one its owner recorded). */
  watch(serviceId: string, afterSeq = 0, supervisorPid: number | null = null, eventsOffset = 0): void {
    const current = this.watched.get(serviceId);
    if (current) {
      current.supervisorPid = supervisorPid ?? current.supervisorPid;
    } else {
      let watcher: FSWatcher | null = null;
      try {
        watcher = watchDir(this.dir(serviceId), () => void this.pollAll());
        watcher.on('error', () => watcher?.close());
        watcher.unref();
      } catch {
        // No file notifications here (or the directory is gone): the interval polls.
      }
      this.watched.set(serviceId, {
        eventsOffset,
        lastSeq: afterSeq,
        lastPhase: null,
        supervisorPid,
        watcher,
        replaceSpare: false,
      });
    }
    this.timer ??= setInterval(() => void this.pollAll(), this.settings.pollMs);
    this.timer.unref();
  }

  private unwatch(serviceId: string): void {
    this.watched.get(serviceId)?.watcher?.close();
    this.watched.delete(serviceId);
  }

  /** Polls every watched workload; a wake-up that comes during a round gets a round of its own. */
  private async pollAll(): Promise<void> {
    if (this.polling) {
      this.pollAgain = true;
      return;
    }
    this.polling = true;
    try {
      for (let round = 0; round < 10; round++) {
        this.pollAgain = false;
        for (const serviceId of [...this.watched.keys()]) await this.poll(serviceId);
        if (!this.pollAgain) break;
      }
    } catch (err) {
      this.options.log.error({ err }, 'local runtime: polling failed');
    } finally {
      this.polling = false;
    }
  }

  /**
   * Reads a workload's new events and state, and tells the listeners. Polls of one workload never
   * overlap (each waits for the previous), so its events are told once and in order.
   */
  private poll(serviceId: string): Promise<void> {
    const next = (this.polls.get(serviceId) ?? Promise.resolve()).then(() => this.pollNow(serviceId));
    const settled = next.catch((err: unknown) =>
      this.options.log.error({ err, serviceId }, 'local runtime: poll failed'),
    );
    this.polls.set(serviceId, settled);
    void settled.then(() => {
      if (this.polls.get(serviceId) === settled) this.polls.delete(serviceId);
    });
    return settled;
  }

  private async pollNow(serviceId: string): Promise<void> {
    const watch = this.watched.get(serviceId);
    if (!watch) return;
    // Events first, then the state: the state read is then at least as recent as every event
    // (the supervisor saves its state before it writes the event that tells of it).
    const text = await readFile(join(this.dir(serviceId), 'events.jsonl'), 'utf8').catch(() => '');
    const state = await this.readState(serviceId);
    if (!state) {
      // A supervisor that died before saying anything (it could not even start): report it failed.
      if (watch.supervisorPid !== null && !isAlive(watch.supervisorPid, null))
        await this.supervisorFailed(serviceId);
      return;
    }
    const fresh: { seq: number; at: string; type: string; message: string }[] = [];
    if (text.length > watch.eventsOffset) {
      const chunk = text.slice(watch.eventsOffset);
      const end = chunk.lastIndexOf('\n') + 1;
      watch.eventsOffset += end;
      for (const line of chunk.slice(0, end).split('\n')) {
        if (!line) continue;
        const parsed = JSON.parse(line) as { seq: number; at: string; type: string; message: string };
        if (parsed.seq > watch.lastSeq) fresh.push(parsed);
      }
    }
    const status = await this.statusOf(serviceId, state);
    if (status.phase === 'lost' && watch.lastPhase !== 'lost') {
      // The supervisor is gone without saying so: stop what it left running, say it once.
      if (state.child && isAlive(state.child.pid, state.child.startTime))
        killGroup(state.child.pid, 'SIGKILL');
      fresh.push({ seq: -1, at: new Date().toISOString(), type: 'lost', message: status.message ?? 'lost' });
    }
    // Each event carries the phase it marks (what the workload was when it happened), not merely
    // the state as read now, which may be several events further.
    let phase = (watch.lastPhase as WorkloadPhase | null) ?? 'starting';
    for (const e of fresh) {
      phase = impliedPhase[e.type] ?? phase;
      watch.lastSeq = Math.max(watch.lastSeq, e.seq);
      this.emit({
        serviceId,
        at: e.at,
        type: e.type,
        message: e.message,
        sourceSeq: e.seq < 0 ? null : e.seq,
        status: asOf(status, phase, e),
      });
    }
    watch.lastPhase = fresh.length > 0 ? phase : status.phase;
    if (watch.replaceSpare && watch.lastPhase !== 'starting') {
      watch.replaceSpare = false;
      // A moment later: forking now would hold up recording this very launch as running.
      setTimeout(() => this.startSpare(), spareDelayMs).unref();
    }
    if (status.phase === 'failed' || status.phase === 'stopped' || status.phase === 'lost') {
      if (!isAlive(state.supervisor.pid, state.supervisor.startTime)) {
        // The state was read after the events: the supervisor may have written its last events
        // (the one telling of this very state) in between. Tell them at the next poll first.
        const after = await readFile(join(this.dir(serviceId), 'events.jsonl'), 'utf8').catch(() => '');
        if (after.length > watch.eventsOffset) return;
        this.unwatch(serviceId);
        await removeCgroups(serviceId);
      }
    }
  }

  private async supervisorFailed(serviceId: string): Promise<void> {
    this.unwatch(serviceId);
    const output = await readFile(join(this.dir(serviceId), 'supervisor.log'), 'utf8').catch(() => '');
    const logTail = output.trim().split('\n').slice(-20);
    const message =
      'the local runtime could not start this service (its supervisor failed; see the log tail)';
    this.options.log.error({ serviceId, output: logTail }, 'local runtime: supervisor failed at start');
    this.emit({
      serviceId,
      at: new Date().toISOString(),
      type: 'failed',
      message,
      sourceSeq: null,
      status: {
        serviceId,
        generation: (await this.readSpec(serviceId))?.generation ?? null,
        phase: 'failed',
        message,
        exitCode: null,
        logTail,
        tasks: [],
        endpoints: [],
        startedAt: null,
      },
    });
  }

  private emit(event: WorkloadEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.options.log.error({ err, serviceId: event.serviceId }, 'local runtime: event listener failed');
      }
    }
  }

  async reconcile(
    known: { serviceId: string; shouldRun: boolean; afterSeq?: number }[],
  ): Promise<ReconcileReport> {
    const report: ReconcileReport = { adopted: [], lost: [], removed: [] };
    const byId = new Map(known.map((k) => [k.serviceId, k]));
    const dirs = await readdir(this.options.root).catch(() => [] as string[]);
    for (const serviceId of dirs) {
      const entry = byId.get(serviceId);
      const state = await this.readState(serviceId);
      const supervisorAlive = state ? isAlive(state.supervisor.pid, state.supervisor.startTime) : false;
      if (!entry) {
        // No service owns this any more: stop whatever runs and remove it.
        if (state) {
          if (supervisorAlive) killGroup(state.supervisor.pid, 'SIGKILL');
          if (state.child && isAlive(state.child.pid, state.child.startTime))
            killGroup(state.child.pid, 'SIGKILL');
        }
        await removeCgroups(serviceId);
        await rm(this.dir(serviceId), { recursive: true, force: true });
        report.removed.push(serviceId);
        continue;
      }
      if (!state) continue;
      if (supervisorAlive && entry.shouldRun) {
        this.watch(serviceId, entry.afterSeq ?? 0);
        report.adopted.push(serviceId);
        continue;
      }
      if (supervisorAlive && !entry.shouldRun) {
        await this.stop(serviceId);
        continue;
      }
      // The supervisor is gone: whatever it says last is the truth if it said it ended; otherwise lost.
      this.watch(serviceId, entry.afterSeq ?? 0);
      if (state.phase !== 'failed' && state.phase !== 'stopped') report.lost.push(serviceId);
      await this.poll(serviceId);
    }
    return report;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.spare?.kill('SIGKILL');
    this.spare = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const serviceId of [...this.watched.keys()]) this.unwatch(serviceId);
  }
}
