// The cluster backend: where services run. One interface, one implementation per kind of backend
// (registry.ts: the local process runtime, Kubernetes), proven by the same conformance suite
// (test/conformance/).
import type { Agent as HttpAgent } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import type { DomainError } from '../../errors.js';
import type { ClusterRunSpec, LocalRunSpec } from '../catalog/manifest.js';
import type { BackendType } from './registry.js';

/** Everything a backend needs to run one service. Options are validated, defaults applied. */
export interface WorkloadSpec {
  serviceId: string;
  /** Which start of the service this is; what the backend reports is stamped with it. */
  generation: number;
  serviceName: string;
  projectId: string;
  package: { catalogId: string; name: string; version: string; sourceDir: string };
  run: { local: LocalRunSpec | null; cluster: ClusterRunSpec | null };
  options: Record<string, unknown>;
  /** Names of the options whose values are secrets (never logged, never rendered in plain text). */
  secretOptions: string[];
  resources: { cpuMillis: number; memoryBytes: number; gpu: number };
  /**
   * The project's quota limits (null: unlimited), for backends that mirror them (Kubernetes: a
   * ResourceQuota in the project's namespace). Absent or null: the backend leaves its quota alone.
   */
  quota?: {
    cpuMillis: number | null;
    memoryBytes: number | null;
    gpu: number | null;
    services: number | null;
  } | null;
}

export type WorkloadPhase = 'starting' | 'running' | 'failed' | 'stopped' | 'lost';

export interface ContainerStatus {
  name: string;
  ready: boolean;
  state: 'waiting' | 'running' | 'terminated';
  reason: string | null;
  exitCode: number | null;
  startedAt: string | null;
}

export interface TaskStatus {
  id: string;
  status: 'waiting' | 'running' | 'terminated';
  ready: boolean;
  restarts: number;
  containers: ContainerStatus[];
}

/** What a backend knows of a workload now. */
export interface WorkloadStatus {
  serviceId: string;
  /** The start it describes (see WorkloadSpec.generation); null when the backend cannot tell. */
  generation: number | null;
  phase: WorkloadPhase;
  /** Why it is in this phase, for people (for example "exited with code 1"). */
  message: string | null;
  /** The exit code of the last process exit, when known. */
  exitCode: number | null;
  /** The last lines of its log, when it failed. */
  logTail: string[];
  tasks: TaskStatus[];
  endpoints: { port: string; protocol: 'http' | 'tcp'; url: string }[];
  startedAt: string | null;
}

/** Something that happened to a workload, reported as it happens (and replayed after a restart). */
export interface WorkloadEvent {
  serviceId: string;
  at: string;
  type: string;
  message: string;
  /**
   * The backend's own number for the event, increasing per workload; its owner records the last it
   * saw and hands it back to `reconcile`, so that events are neither lost nor repeated across a
   * restart. Null for events the backend infers (a workload found lost).
   */
  sourceSeq: number | null;
  /** The status after the event. */
  status: WorkloadStatus;
}

export interface LogOptions {
  task?: string | undefined;
  container?: string | undefined;
  tail?: number | undefined;
  since?: Date | undefined;
  timestamps?: boolean | undefined;
  follow?: boolean | undefined;
  /** Ends a followed stream (client gone, server stopping). */
  signal?: AbortSignal | undefined;
}

/** What a dry run shows: the backend's own rendering of the workload, secrets masked. */
export interface RenderedWorkload {
  backend: BackendType;
  spec: Record<string, unknown>;
}

export interface ReconcileReport {
  /** Workloads found alive and watched again. */
  adopted: string[];
  /** Workloads that should exist but are gone (their processes were stopped if any remained). */
  lost: string[];
  /** Leftovers of services Atrium no longer knows, removed. */
  removed: string[];
}

/** What a kind of backend can do; services decide by these, never by the kind's name. */
export interface BackendCapabilities {
  /** What its workloads are: processes of this machine (`run.local`) or images (`run.cluster`). */
  runs: 'process' | 'image';
  /** Its logs can be followed; a restarted container's previous log can be read. */
  logs: { follow: boolean; previous: boolean };
  /** Where its endpoints are: loopback ports of this machine, or Services of the cluster. */
  endpoints: 'loopback' | 'cluster-service';
}

/** Which port of which workload Atrium wants to reach (the gateway, a service function's driver). */
export interface ReachRequest {
  serviceId: string;
  projectId: string;
  /** The port's name. */
  port: string;
  /** The port's endpoint as the backend last reported it (`WorkloadStatus.endpoints[].url`). */
  endpointUrl: string;
}

/**
 * How Atrium sends HTTP to one port of a workload: a base URL and what every request to it needs,
 * for node:http(s) clients (http-proxy-3: `agent`) and fetch (`dispatcher`) alike. A registered URL
 * is one too (`{ url, headers: {} }`).
 */
export interface PortReach {
  /** The port's root: a request's path and query are appended to its path. */
  url: string;
  /**
   * Headers every request carries: the backend's own credentials (the API server's bearer token),
   * taken off by whatever is in between (the API server) before the service. They override the
   * client's headers of the same name, and are never shown to clients.
   */
  headers: Record<string, string>;
  /**
   * Whether requests say the target's host (an API server in between, whose TLS name it is) rather
   * than the client's (the service sees the host its users called).
   */
  targetHost: boolean;
  /** TLS settings and connection reuse for node:http(s) requests; undefined: the caller's own. */
  agent?: HttpAgent | undefined;
  /** The same for fetch, as its `dispatcher`; undefined: fetch's default. */
  dispatcher?: Dispatcher | undefined;
  /**
   * For a way in that answers errors of its own (an API server's service proxy): the problem an
   * error answer (status, small JSON body) stands for when it is the way in's, not the service's;
   * null for the service's own answer, passed on as it is.
   */
  refusal?: ((status: number, body: unknown) => DomainError | null) | undefined;
}

export interface ClusterBackend {
  /** The kind's name (the region's `backend.type`), for people and diagnostics only. */
  readonly type: BackendType;
  readonly capabilities: BackendCapabilities;
  /** Checks the spec can run here and renders what would be created, creating nothing. */
  render(spec: WorkloadSpec): RenderedWorkload;
  /** Starts the workload, or adopts it if it already runs (never starts it twice). */
  apply(spec: WorkloadSpec): Promise<void>;
  /** Stops it (suspension): nothing runs, its settings and logs stay. */
  stop(serviceId: string): Promise<void>;
  /** Stops it and removes everything it had. */
  delete(serviceId: string): Promise<void>;
  status(serviceId: string): Promise<WorkloadStatus | null>;
  logs(serviceId: string, options: LogOptions): AsyncIterable<string>;
  /**
   * How Atrium reaches an http port of a running workload (the gateway proxies to it, drivers call
   * it): its loopback address on the local runtime; on Kubernetes the port's Service, through the
   * API server's service proxy or (Atrium running in the cluster) at its cluster DNS name.
   */
  reach(request: ReachRequest): Promise<PortReach>;
  /** Registers the listener of every workload event. */
  onEvent(listener: (event: WorkloadEvent) => void): void;
  /**
   * After a restart: adopts the workloads of the given services that still run, reports the
   * others lost, and removes what belongs to no service in the list.
   */
  reconcile(known: { serviceId: string; shouldRun: boolean; afterSeq?: number }[]): Promise<ReconcileReport>;
  /** Stops watching (workloads keep running). */
  close(): Promise<void>;
}

// ---- Run-to-completion workloads (pipeline jobs, benchmark runs) ----

/** A workload that runs once to completion: a process on the local runtime, a Job on Kubernetes. */
export interface BatchWorkloadSpec {
  /** Unique per attempt; names what the backend creates. */
  jobId: string;
  projectId: string;
  run: {
    /** For the local runtime: an argv (never a shell), its working directory and environment. */
    local: { command: string[]; cwd: string; env: Record<string, string> } | null;
    /**
     * For clusters: an image; `files` (name → content) are mounted read-only at /app. The work
     * directory (inputs in, outputs out) is `workSubPath` of the region's shared work volume
     * (a ReadWriteMany claim Atrium also mounts), mounted read-write at /work.
     */
    cluster: {
      image: string;
      command: string[] | null;
      args: string[] | null;
      env: Record<string, string>;
      files: Record<string, string>;
      workSubPath: string | null;
    } | null;
  };
  resources: { cpuMillis: number; memoryBytes: number; gpu: number };
  /** Killed and failed after this long. */
  timeoutMs: number;
  /** Recorded on what the backend creates (for example the scheduler job and the run it belongs to). */
  labels: Record<string, string>;
}

export interface BatchStatus {
  jobId: string;
  phase: 'pending' | 'running' | 'succeeded' | 'failed';
  exitCode: number | null;
  /** Why it failed, for people (for example "exited with code 2" or "deadline exceeded"). */
  message: string | null;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface BatchBackend {
  readonly type: BackendType;
  /** `runs` says which contract its workloads use: `run.local` (a process) or `run.cluster` (an image). */
  readonly capabilities: BackendCapabilities;
  /** Starts the workload; starting one that exists already does nothing (never twice). */
  start(spec: BatchWorkloadSpec): Promise<void>;
  status(jobId: string): Promise<BatchStatus | null>;
  logs(
    jobId: string,
    options: { tail?: number; follow?: boolean; signal?: AbortSignal },
  ): AsyncIterable<string>;
  /** Stops it if it runs; its status becomes failed ("cancelled"). */
  cancel(jobId: string): Promise<void>;
  /** Removes everything it had (after its outcome was recorded). */
  remove(jobId: string): Promise<void>;
}

/** Polls a batch workload until it ends (or `signal` aborts); returns its last status. */
export async function waitForBatch(
  backend: BatchBackend,
  jobId: string,
  signal: AbortSignal,
): Promise<BatchStatus | null> {
  let status = await backend.status(jobId);
  for (let i = 0; i < 10_000_000 && !signal.aborted; i++) {
    if (!status || status.phase === 'succeeded' || status.phase === 'failed') return status;
    // Quick at first (short jobs), then gentler.
    await sleep(i < 20 ? 50 : 250, undefined, { signal }).catch(() => undefined);
    status = await backend.status(jobId);
  }
  return status;
}

/** The last lines a batch workload wrote, for an error report. */
export async function batchLogTail(backend: BatchBackend, jobId: string, lines = 20): Promise<string[]> {
  const tail: string[] = [];
  for await (const chunk of backend.logs(jobId, { tail: lines }))
    tail.push(...chunk.split('\n').filter(Boolean));
  return tail;
}
