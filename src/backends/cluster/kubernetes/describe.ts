// What a service's objects say about it: its status (pure functions of a Deployment and its pods),
// and the failures a user can act on, each with a stable reason at the start of its message:
//
//   image-pull-failed:  the image cannot be pulled (ImagePullBackOff, InvalidImageName, …)
//   unschedulable:      no node can run its pod (PodScheduled=False, reason Unschedulable)
//   crash-loop:         it keeps exiting after it was ready (CrashLoopBackOff), until Atrium gives up
//   quota-exceeded:     the namespace's ResourceQuota refuses its pod
//
// Failures Atrium decides itself read as on the local runtime: "exited with code N before becoming
// ready", "not ready after N s".
import type { V1ContainerStatus, V1Deployment, V1Pod } from '@kubernetes/client-node';
import type { ContainerStatus, TaskStatus, WorkloadPhase, WorkloadStatus } from '../types.js';
import { parseQuotaRefusal } from './errors.js';
import { annotationKeys, mainContainer } from './naming.js';
import type { Endpoint } from './render.js';

export const stableReasons = {
  imagePull: 'image-pull-failed',
  unschedulable: 'unschedulable',
  crashLoop: 'crash-loop',
  quota: 'quota-exceeded',
} as const;

const imagePullFailures = new Set(['ImagePullBackOff', 'InvalidImageName', 'ErrImageNeverPull']);
const imagePullTrouble = new Set([...imagePullFailures, 'ErrImagePull']);
/** Waiting reasons that are a normal part of starting. */
const startingReasons = new Set(['ContainerCreating', 'PodInitializing']);

/** What a workload was when Atrium scaled it to zero (kept on its Deployment). */
export interface ParkedRecord {
  phase: 'stopped' | 'failed';
  message: string;
  exitCode: number | null;
  at: string;
  logTail: string[];
  tasks: TaskStatus[];
}

export interface Observation {
  deployment: V1Deployment;
  pods: V1Pod[];
}

/** Times arrive as Dates from the typed API and as strings from watches. */
export function toIso(value: unknown): string | null {
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (typeof value === 'string' && value) {
    const time = Date.parse(value);
    return Number.isNaN(time) ? null : new Date(time).toISOString();
  }
  return null;
}

function toMs(value: unknown): number | null {
  const iso = toIso(value);
  return iso === null ? null : Date.parse(iso);
}

export function parkedRecord(deployment: V1Deployment): ParkedRecord | null {
  const text = deployment.metadata?.annotations?.[annotationKeys.parked];
  if (!text) return null;
  try {
    return JSON.parse(text) as ParkedRecord;
  } catch {
    return null;
  }
}

/** Whether the Deployment is scaled to zero by Atrium (stopped or failed). */
export function isParked(deployment: V1Deployment): boolean {
  return parkedRecord(deployment) !== null && (deployment.spec?.replicas ?? 1) === 0;
}

export function generationOf(deployment: V1Deployment): number | null {
  const value = Number(deployment.metadata?.annotations?.[annotationKeys.generation]);
  return Number.isInteger(value) ? value : null;
}

function endpointsOf(deployment: V1Deployment): Endpoint[] {
  try {
    return JSON.parse(deployment.metadata?.annotations?.[annotationKeys.endpoints] ?? '[]') as Endpoint[];
  } catch {
    return [];
  }
}

const isDeleting = (pod: V1Pod) => Boolean(pod.metadata?.deletionTimestamp);

export function isPodReady(pod: V1Pod): boolean {
  return (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

function mainStatus(pod: V1Pod): V1ContainerStatus | undefined {
  const statuses = pod.status?.containerStatuses ?? [];
  return statuses.find((c) => c.name === mainContainer) ?? statuses[0];
}

function podCondition(pod: V1Pod, type: string) {
  return (pod.status?.conditions ?? []).find((c) => c.type === type);
}

function containerOf(status: V1ContainerStatus | undefined, name: string, pod: V1Pod): ContainerStatus {
  const state = status?.state;
  if (state?.running) {
    return {
      name,
      ready: status?.ready ?? false,
      state: 'running',
      reason: null,
      exitCode: null,
      startedAt: toIso(state.running.startedAt),
    };
  }
  if (state?.terminated) {
    return {
      name,
      ready: false,
      state: 'terminated',
      reason: state.terminated.reason ?? `exited with code ${state.terminated.exitCode}`,
      exitCode: state.terminated.exitCode,
      startedAt: toIso(state.terminated.startedAt),
    };
  }
  const scheduled = podCondition(pod, 'PodScheduled');
  return {
    name,
    ready: false,
    state: 'waiting',
    reason:
      state?.waiting?.reason ??
      (scheduled?.status === 'False' ? (scheduled.reason ?? 'Unscheduled') : 'ContainerCreating'),
    exitCode: status?.lastState?.terminated?.exitCode ?? null,
    startedAt: null,
  };
}

export function taskOf(pod: V1Pod): TaskStatus {
  const names = (pod.spec?.containers ?? []).map((c) => c.name);
  const statuses = pod.status?.containerStatuses ?? [];
  const containers = (names.length > 0 ? names : statuses.map((s) => s.name)).map((name) =>
    containerOf(
      statuses.find((s) => s.name === name),
      name,
      pod,
    ),
  );
  const main = containers.find((c) => c.name === mainContainer) ?? containers[0];
  return {
    id: pod.metadata?.name ?? '',
    status: main?.state ?? 'waiting',
    ready: isPodReady(pod),
    restarts: statuses.reduce((sum, s) => sum + (s.restartCount ?? 0), 0),
    containers,
  };
}

/** A task as it is once stopped: nothing of it runs any more. */
export function stoppedTask(task: TaskStatus, reason: string): TaskStatus {
  return {
    ...task,
    status: 'terminated',
    ready: false,
    containers: task.containers.map((c) => ({
      ...c,
      ready: false,
      state: 'terminated',
      // What kept it from running (ImagePullBackOff, say) stays told.
      reason: c.state === 'running' ? reason : (c.reason ?? reason),
    })),
  };
}

/** Newest first, so that the pod of the current rollout is looked at first. */
function byAge(pods: V1Pod[]): V1Pod[] {
  return [...pods].sort(
    (a, b) => (toMs(b.metadata?.creationTimestamp) ?? 0) - (toMs(a.metadata?.creationTimestamp) ?? 0),
  );
}

/** The exit of the main container last seen (running now, or in back-off after it). */
export function lastExit(pod: V1Pod): { code: number; at: string | null } | null {
  const status = mainStatus(pod);
  const terminated = status?.state?.terminated ?? status?.lastState?.terminated;
  return terminated ? { code: terminated.exitCode, at: toIso(terminated.finishedAt) } : null;
}

/** Whether the main container is down now (exited, or waiting to be started again). */
function isDown(pod: V1Pod): boolean {
  const status = mainStatus(pod);
  return Boolean(status?.state?.terminated || (status?.state?.waiting && status.lastState?.terminated));
}

export function restartsOf(pods: V1Pod[]): number {
  return pods.filter((p) => !isDeleting(p)).reduce((sum, pod) => sum + taskOf(pod).restarts, 0);
}

function quotaRefusal(deployment: V1Deployment): string | null {
  const failure = (deployment.status?.conditions ?? []).find(
    (c) => c.type === 'ReplicaFailure' && c.status === 'True',
  );
  const refusal = failure?.message ? parseQuotaRefusal(failure.message) : null;
  if (!refusal) return null;
  const what = refusal.resources.map(
    (r) => `${r.resource} ${r.requested} requested, ${r.used} used of ${r.limited}`,
  );
  return `${stableReasons.quota}: the cluster quota "${refusal.quota}" has no room for its pod (${what.join('; ')})`;
}

function unschedulable(pod: V1Pod): string | null {
  const scheduled = podCondition(pod, 'PodScheduled');
  if (scheduled?.status !== 'False' || scheduled.reason !== 'Unschedulable') return null;
  return `${stableReasons.unschedulable}: no node of the cluster can run it (${scheduled.message ?? 'no reason given'})`;
}

function imagePullProblem(pod: V1Pod, failuresOnly: boolean): string | null {
  const status = mainStatus(pod);
  const waiting = status?.state?.waiting;
  if (!waiting?.reason || !(failuresOnly ? imagePullFailures : imagePullTrouble).has(waiting.reason))
    return null;
  const image = pod.spec?.containers.find((c) => c.name === status?.name)?.image ?? status?.image;
  return `${stableReasons.imagePull}: the image "${image}" cannot be pulled (${waiting.reason}${waiting.message ? `: ${waiting.message}` : ''})`;
}

function describeExit(code: number): string {
  return `exited with code ${code}`;
}

/** Why a starting workload is not running yet, when something is in its way. */
export function progressMessage(observation: Observation, maxRestarts: number): string | null {
  const quota = quotaRefusal(observation.deployment);
  if (quota) return quota;
  for (const pod of byAge(observation.pods.filter((p) => !isDeleting(p)))) {
    const problem = unschedulable(pod) ?? imagePullProblem(pod, false);
    if (problem) return problem;
    const waiting = mainStatus(pod)?.state?.waiting;
    if (waiting?.reason === 'CrashLoopBackOff') {
      const exit = lastExit(pod);
      const restarts = taskOf(pod).restarts;
      return `${stableReasons.crashLoop}: ${exit ? describeExit(exit.code) : 'exited'}; restarting (${restarts + 1} of ${maxRestarts})`;
    }
    if (waiting?.reason && !startingReasons.has(waiting.reason)) {
      return `${waiting.reason}${waiting.message ? `: ${waiting.message}` : ''}`;
    }
  }
  return null;
}

export interface VerdictContext {
  now: number;
  readinessTimeoutMs: number;
  maxRestarts: number;
  /** Whether a pod was seen ready; null when it was not watched from its start (so cannot tell). */
  everReady(pod: V1Pod): boolean | null;
}

export interface Failure {
  message: string;
  exitCode: number | null;
  /** The cluster refused its pods (its quota): nothing of the launch is to remain. */
  refused?: boolean;
}

/** Whether a workload that runs (not parked) has failed for good, and why. */
export function verdict(observation: Observation, context: VerdictContext): Failure | null {
  const quota = quotaRefusal(observation.deployment);
  if (quota) return { message: quota, exitCode: null, refused: true };
  const seconds = Math.round(context.readinessTimeoutMs / 1000);
  for (const pod of observation.pods.filter((p) => !isDeleting(p))) {
    const pull = imagePullProblem(pod, true);
    if (pull) return { message: pull, exitCode: null };
    const created = toMs(pod.metadata?.creationTimestamp) ?? context.now;
    const stuck = unschedulable(pod);
    if (stuck && context.now - created > context.readinessTimeoutMs)
      return { message: stuck, exitCode: null };
    const exit = lastExit(pod);
    if (exit && isDown(pod)) {
      if (context.everReady(pod) === false) {
        return { message: `${describeExit(exit.code)} before becoming ready`, exitCode: exit.code };
      }
      const restarts = taskOf(pod).restarts;
      if (restarts >= context.maxRestarts) {
        return {
          message: `${stableReasons.crashLoop}: ${describeExit(exit.code)}; restarted ${restarts} times, giving up`,
          exitCode: exit.code,
        };
      }
    }
    const running = mainStatus(pod)?.state?.running;
    const started = toMs(running?.startedAt);
    if (
      running &&
      started !== null &&
      !isPodReady(pod) &&
      context.now - started > context.readinessTimeoutMs
    ) {
      // Ready since this container started (and unready again) is not a failure to start.
      const readySince = podCondition(pod, 'Ready');
      const becameReady =
        readySince?.status === 'False' && (toMs(readySince.lastTransitionTime) ?? 0) > started;
      if (!becameReady)
        return { message: `not ready after ${seconds} s`, exitCode: lastExit(pod)?.code ?? null };
    }
  }
  return null;
}

/** When a starting workload is due to be judged again (its readiness deadline), if it has one. */
export function nextDeadline(observation: Observation, readinessTimeoutMs: number): number | null {
  let next: number | null = null;
  for (const pod of observation.pods.filter((p) => !isDeleting(p) && !isPodReady(p))) {
    const running = mainStatus(pod)?.state?.running;
    const from =
      toMs(running?.startedAt) ?? (unschedulable(pod) ? toMs(pod.metadata?.creationTimestamp) : null);
    if (from === null) continue;
    const due = from + readinessTimeoutMs + 50;
    next = next === null ? due : Math.min(next, due);
  }
  return next;
}

export function lostStatus(serviceId: string, generation: number | null, message: string): WorkloadStatus {
  return {
    serviceId,
    generation,
    phase: 'lost',
    message,
    exitCode: null,
    logTail: [],
    tasks: [],
    endpoints: [],
    startedAt: null,
  };
}

/** The status of a service from its Deployment and pods. */
export function describeWorkload(
  serviceId: string,
  observation: Observation,
  maxRestarts: number,
): WorkloadStatus {
  const { deployment, pods } = observation;
  const generation = generationOf(deployment);
  const parked = parkedRecord(deployment);
  const replicas = deployment.spec?.replicas ?? 1;
  const base = { serviceId, generation, logTail: [] as string[] };
  if (replicas === 0 && pods.length === 0) {
    if (parked) {
      return {
        ...base,
        phase: parked.phase,
        message: parked.message,
        exitCode: parked.exitCode,
        logTail: parked.phase === 'failed' ? parked.logTail : [],
        tasks: parked.tasks,
        endpoints: [],
        startedAt: null,
      };
    }
    return {
      ...base,
      phase: 'stopped',
      message: 'scaled to zero outside Atrium',
      exitCode: null,
      tasks: [],
      endpoints: [],
      startedAt: null,
    };
  }
  const ordered = byAge(pods);
  const live = ordered.filter((p) => !isDeleting(p));
  const ready = live.some(isPodReady);
  const phase: WorkloadPhase = ready ? 'running' : 'starting';
  const current = live[0] ?? ordered[0];
  const exit = current ? lastExit(current) : null;
  return {
    ...base,
    phase,
    message: replicas === 0 ? 'stopping' : ready ? null : progressMessage(observation, maxRestarts),
    exitCode: exit?.code ?? null,
    tasks: ordered.map(taskOf),
    endpoints: endpointsOf(deployment),
    startedAt: toIso(current?.status?.startTime),
  };
}
