// Run-to-completion workloads on Kubernetes: a batch/v1 Job per attempt (no retries of its own:
// backoffLimit 0, the scheduler retries), killed at its deadline (activeDeadlineSeconds), its files
// in a ConfigMap at /app and its work directory a sub-path of the region's work volume at /work.
// Its outcome is read from the Job and the terminated state of its pod. A cancelled Job is deleted;
// a small ConfigMap records that it was cancelled, until the workload is removed.
import type { V1ConfigMap, V1Job, V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { BatchBackend, BatchStatus, BatchWorkloadSpec } from '../types.js';
import { stableReasons, toIso } from './describe.js';
import { guarded, ignoreNotFound, isAlreadyExists, orNull, translate } from './errors.js';
import { isMissingLog, podLogLines } from './logs.js';
import { annotationKeys, jobName, jobOutcomeConfigMapName, jobSelector, mainContainer } from './naming.js';
import { Onboarding } from './onboarding.js';
import { renderJob } from './render.js';
import {
  defaultSettings,
  kubernetesCapabilities,
  type KubernetesClients,
  type KubernetesSettings,
} from './settings.js';

export interface KubernetesBatchBackendOptions {
  clients: KubernetesClients;
  settings?: Partial<KubernetesSettings>;
  log: Logger;
}

interface Outcome {
  phase: 'failed';
  message: string;
  startedAt: string | null;
  finishedAt: string;
}

const imagePullFailures = new Set(['ImagePullBackOff', 'InvalidImageName', 'ErrImageNeverPull']);

function newest(pods: V1Pod[]): V1Pod | undefined {
  return [...pods].sort((a, b) =>
    (toIso(b.metadata?.creationTimestamp) ?? '').localeCompare(toIso(a.metadata?.creationTimestamp) ?? ''),
  )[0];
}

function mainState(pod: V1Pod | undefined) {
  const statuses = pod?.status?.containerStatuses ?? [];
  return (statuses.find((c) => c.name === mainContainer) ?? statuses[0])?.state;
}

function condition(job: V1Job, type: string) {
  return (job.status?.conditions ?? []).find((c) => c.type === type && c.status === 'True');
}

export class KubernetesBatchBackend implements BatchBackend {
  readonly type = 'kubernetes' as const;
  readonly capabilities = kubernetesCapabilities;
  readonly settings: KubernetesSettings;
  private readonly onboarding: Onboarding;
  private readonly namespaces = new Map<string, string>();

  constructor(private readonly options: KubernetesBatchBackendOptions) {
    this.settings = { ...defaultSettings, ...options.settings };
    this.onboarding = new Onboarding(options.clients, this.settings);
  }

  private guard<T>(what: string, work: () => Promise<T>): Promise<T> {
    return guarded(what, work, this.options.log);
  }

  private get clients(): KubernetesClients {
    return this.options.clients;
  }

  async start(spec: BatchWorkloadSpec): Promise<void> {
    await this.guard(`job ${spec.jobId}`, async () => {
      const namespace = this.onboarding.namespaceOf(spec.projectId);
      const rendered = renderJob(spec, namespace, this.settings, 'plain');
      await this.onboarding.ensure(spec.projectId, null);
      const { batch, core } = this.clients;
      if (rendered.files)
        await this.createOnce(core.createNamespacedConfigMap({ namespace, body: rendered.files }));
      // Created once: starting it again finds it there, and leaves it.
      await this.createOnce(batch.createNamespacedJob({ namespace, body: rendered.job }));
      this.namespaces.set(spec.jobId, namespace);
    });
  }

  private async createOnce(creation: Promise<unknown>): Promise<void> {
    try {
      await creation;
    } catch (error) {
      if (!isAlreadyExists(error)) throw error;
    }
  }

  /** The namespace of a job: known, or found by its label across the region's namespaces. */
  private async locate(jobId: string): Promise<string | null> {
    const known = this.namespaces.get(jobId);
    if (known) return known;
    const labelSelector = jobSelector(jobId);
    const { batch, core } = this.clients;
    const candidates = [
      ...(await batch.listJobForAllNamespaces({ labelSelector })).items,
      ...(await core.listConfigMapForAllNamespaces({ labelSelector })).items,
    ];
    const found = candidates
      .map((o) => o.metadata?.namespace ?? '')
      .find((ns) => ns.startsWith(this.settings.namespacePrefix));
    if (found) this.namespaces.set(jobId, found);
    return found ?? null;
  }

  private async readOutcome(namespace: string, jobId: string): Promise<Outcome | null> {
    const record = await orNull(
      this.clients.core.readNamespacedConfigMap({ name: jobOutcomeConfigMapName(jobId), namespace }),
    );
    const text = record?.metadata?.annotations?.[annotationKeys.outcome];
    return text ? (JSON.parse(text) as Outcome) : null;
  }

  private async podsOf(namespace: string, jobId: string): Promise<V1Pod[]> {
    return (await this.clients.core.listNamespacedPod({ namespace, labelSelector: jobSelector(jobId) }))
      .items;
  }

  async status(jobId: string): Promise<BatchStatus | null> {
    return this.guard(`job ${jobId}`, async () => {
      const namespace = await this.locate(jobId);
      if (!namespace) return null;
      const outcome = await this.readOutcome(namespace, jobId);
      if (outcome) return { jobId, exitCode: null, ...outcome };
      const job = await orNull(this.clients.batch.readNamespacedJob({ name: jobName(jobId), namespace }));
      if (!job) return null;
      return this.statusOf(jobId, job, newest(await this.podsOf(namespace, jobId)));
    });
  }

  private statusOf(jobId: string, job: V1Job, pod: V1Pod | undefined): BatchStatus {
    const state = mainState(pod);
    const terminated = state?.terminated;
    const startedAt = toIso(job.status?.startTime);
    const complete = condition(job, 'Complete');
    const failed = condition(job, 'Failed');
    const exitCode = terminated?.exitCode ?? null;
    if (complete) {
      return {
        jobId,
        phase: 'succeeded',
        exitCode: exitCode ?? 0,
        message: null,
        startedAt,
        finishedAt: toIso(job.status?.completionTime) ?? toIso(complete.lastTransitionTime),
      };
    }
    if (failed) {
      const message =
        failed.reason === 'DeadlineExceeded'
          ? `deadline exceeded: still running after ${job.spec?.activeDeadlineSeconds ?? '?'} s`
          : terminated
            ? `exited with code ${terminated.exitCode}`
            : (failed.message ?? failed.reason ?? 'failed');
      return {
        jobId,
        phase: 'failed',
        exitCode,
        message,
        startedAt,
        finishedAt: toIso(failed.lastTransitionTime),
      };
    }
    const waiting = state?.waiting;
    if (waiting?.reason && imagePullFailures.has(waiting.reason)) {
      const image = pod?.spec?.containers[0]?.image;
      return {
        jobId,
        phase: 'failed',
        exitCode: null,
        message: `${stableReasons.imagePull}: the image "${image}" cannot be pulled (${waiting.reason})`,
        startedAt,
        finishedAt: null,
      };
    }
    if (state?.running || terminated) {
      return { jobId, phase: 'running', exitCode: null, message: null, startedAt, finishedAt: null };
    }
    const scheduled = (pod?.status?.conditions ?? []).find((c) => c.type === 'PodScheduled');
    const message =
      scheduled?.status === 'False' && scheduled.reason === 'Unschedulable'
        ? `${stableReasons.unschedulable}: no node of the cluster can run it (${scheduled.message ?? 'no reason given'})`
        : null;
    return { jobId, phase: 'pending', exitCode: null, message, startedAt, finishedAt: null };
  }

  async *logs(
    jobId: string,
    options: { tail?: number; follow?: boolean; signal?: AbortSignal },
  ): AsyncIterable<string> {
    try {
      yield* this.logLines(jobId, options);
    } catch (error) {
      throw translate(error, `the logs of job ${jobId}`);
    }
  }

  private async *logLines(
    jobId: string,
    options: { tail?: number; follow?: boolean; signal?: AbortSignal },
  ): AsyncGenerator<string> {
    const namespace = await this.locate(jobId);
    if (!namespace) return;
    // Following a job that has not started yet waits for its container (as long as it may run).
    const deadline = Date.now() + 24 * 3600_000;
    for (let round = 0; round < 1_000_000 && Date.now() < deadline && !options.signal?.aborted; round++) {
      const pod = newest(await this.podsOf(namespace, jobId));
      const state = mainState(pod);
      if (pod && (state?.running || state?.terminated)) {
        const request = {
          namespace,
          pod: pod.metadata?.name ?? '',
          container: mainContainer,
          ...(options.tail ? { tail: options.tail } : {}),
          ...(options.follow ? { follow: true } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
        };
        try {
          for await (const line of podLogLines(this.clients.log, request)) yield `${line.text}\n`;
        } catch (error) {
          if (!isMissingLog(error)) throw error;
        }
        return;
      }
      const finished = !pod && (await this.status(jobId))?.phase !== 'pending';
      if (!options.follow || finished) return;
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async cancel(jobId: string): Promise<void> {
    await this.guard(`job ${jobId}`, async () => {
      const namespace = await this.locate(jobId);
      if (!namespace) return;
      const job = await orNull(this.clients.batch.readNamespacedJob({ name: jobName(jobId), namespace }));
      if (!job || condition(job, 'Complete') || condition(job, 'Failed')) return;
      const outcome: Outcome = {
        phase: 'failed',
        message: 'cancelled',
        startedAt: toIso(job.status?.startTime),
        finishedAt: new Date().toISOString(),
      };
      const record: V1ConfigMap = {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: {
          name: jobOutcomeConfigMapName(jobId),
          namespace,
          labels: { ...job.metadata?.labels },
          annotations: { [annotationKeys.jobId]: jobId, [annotationKeys.outcome]: JSON.stringify(outcome) },
        },
      };
      // Recorded first: once the Job is gone, this is what says how it ended.
      await this.createOnce(this.clients.core.createNamespacedConfigMap({ namespace, body: record }));
      // Background: the Job goes now, its pod is stopped (gracefully) by the garbage collector.
      await ignoreNotFound(
        this.clients.batch.deleteNamespacedJob({
          name: jobName(jobId),
          namespace,
          propagationPolicy: 'Background',
        }),
      );
    });
  }

  async remove(jobId: string): Promise<void> {
    await this.guard(`job ${jobId}`, async () => {
      const namespace = await this.locate(jobId);
      if (!namespace) return;
      const { batch, core } = this.clients;
      await ignoreNotFound(
        batch.deleteNamespacedJob({ name: jobName(jobId), namespace, propagationPolicy: 'Background' }),
      );
      const labelSelector = jobSelector(jobId);
      for (const map of (await core.listNamespacedConfigMap({ namespace, labelSelector })).items) {
        await ignoreNotFound(core.deleteNamespacedConfigMap({ name: map.metadata?.name ?? '', namespace }));
      }
      // A pod left behind (the Job deleted by someone who orphaned it) goes too.
      for (const pod of await this.podsOf(namespace, jobId)) {
        if (!pod.metadata?.deletionTimestamp) {
          await ignoreNotFound(core.deleteNamespacedPod({ name: pod.metadata?.name ?? '', namespace }));
        }
      }
      this.namespaces.delete(jobId);
    });
  }
}
