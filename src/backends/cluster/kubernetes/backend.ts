// The `kubernetes` cluster backend: a service is a Deployment (one replica), a Service per port, an
// Ingress when the region exposes services, a Secret for its secret options and a ConfigMap for its
// files, in its project's namespace. Suspension scales the Deployment to zero, keeping a record of
// what it was and its last logs; failures Atrium decides (never ready, crashing over and over, an
// image that cannot be pulled) do the same. Pods, Deployments and Events are watched per namespace;
// every watched workload is read again periodically, so that one deleted behind Atrium's back is
// reported lost (and a port Service deleted behind its back is created again). Each event carries
// the cluster's resourceVersion as its number (etcd's revision, increasing across objects), so
// that a restart replays only what its owner has not seen.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type {
  CoreV1Event,
  V1ConfigMap,
  V1Deployment,
  V1Ingress,
  V1ObjectMeta,
  V1Pod,
  V1Secret,
  V1Service,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { DomainError } from '../../../errors.js';
import type {
  ClusterBackend,
  LogOptions,
  PortReach,
  ReachRequest,
  ReconcileReport,
  RenderedWorkload,
  WorkloadEvent,
  WorkloadPhase,
  WorkloadSpec,
  WorkloadStatus,
} from '../types.js';
import {
  describeWorkload,
  generationOf,
  isParked,
  isPodReady,
  lastExit,
  lostStatus,
  nextDeadline,
  restartsOf,
  stoppedTask,
  taskOf,
  toIso,
  verdict,
  type Observation,
  type ParkedRecord,
} from './describe.js';
import {
  apiError,
  guarded,
  ignoreNotFound,
  isMissingNamespace,
  orNull,
  parseQuotaRefusal,
  quotaExceeded,
  retryOnConflict,
  translate,
} from './errors.js';
import { annotationKeys, labelKeys, portServiceName, serviceSelector, workloadName } from './naming.js';
import { NamespaceWatch, sequenceOf } from './namespace-watch.js';
import { Onboarding } from './onboarding.js';
import {
  objectsOf,
  portServiceOf,
  renderNamespace,
  renderQuota,
  renderRoleBinding,
  renderService,
  type PackageFiles,
} from './render.js';
import { ServiceReach } from './reach.js';
import { captureLogs, renderLogSnapshot, serviceLogLines } from './service-logs.js';
import {
  defaultSettings,
  kubernetesCapabilities,
  type KubernetesClients,
  type KubernetesSettings,
} from './settings.js';
import type { WatchedObject } from './watch.js';

export interface KubernetesBackendOptions {
  clients: KubernetesClients;
  settings?: Partial<KubernetesSettings>;
  log: Logger;
}

/** What the backend follows of one workload. */
interface Tracked {
  serviceId: string;
  namespace: string;
  name: string;
  /** The number of the last event told (see the header). */
  lastSeq: number;
  lastPhase: WorkloadPhase | null;
  lastExitAt: string | null;
  lastStatus: WorkloadStatus | null;
  /** Pods seen ready, by uid; and since when the workload is watched (to tell "never ready"). */
  readyPods: Set<string>;
  since: number;
  /**
   * Adopted after a restart: cluster events up to its owner's last number are not told again,
   * nor is its phase, unless something changed since.
   */
  adopted: boolean;
  replayFloor: number;
  deadline: NodeJS.Timeout | null;
  /** Set while Atrium itself removes it, so that its disappearance is not taken for a loss. */
  deleting: boolean;
  /** Whether its Deployment was seen (one being created is not lost yet). */
  seen: boolean;
}

const logTailLines = 20;

function serviceIdOf(
  object: WatchedObject & {
    metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  },
): string | null {
  return (
    object.metadata?.annotations?.[annotationKeys.serviceId] ??
    object.metadata?.labels?.[labelKeys.service] ??
    null
  );
}

const defaultMessages: Record<WorkloadPhase, string> = {
  starting: 'starting',
  running: 'ready',
  failed: 'failed',
  stopped: 'stopped',
  lost: 'lost',
};

export class KubernetesBackend implements ClusterBackend {
  readonly type = 'kubernetes' as const;
  readonly capabilities = kubernetesCapabilities;
  readonly settings: KubernetesSettings;
  private readonly onboarding: Onboarding;
  private readonly ports: ServiceReach;
  private readonly listeners: ((event: WorkloadEvent) => void)[] = [];
  private readonly tracked = new Map<string, Tracked>();
  /** Workloads found gone while watched, until they are deleted or started again. */
  private readonly lost = new Map<string, WorkloadStatus>();
  /** Launches the cluster refused: ended, and nothing of them left there. */
  private readonly ended = new Map<string, WorkloadStatus>();
  /** Where each service lives, once found. */
  private readonly namespaces = new Map<string, string>();
  private readonly watches = new Map<string, NamespaceWatch>();
  private readonly chains = new Map<string, Promise<void>>();
  private readonly queued = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly options: KubernetesBackendOptions) {
    this.settings = { ...defaultSettings, ...options.settings };
    this.onboarding = new Onboarding(options.clients, this.settings);
    this.ports = new ServiceReach(options.clients, this.settings, options.log);
  }

  reach(request: ReachRequest): Promise<PortReach> {
    return this.ports.reach(request);
  }

  private guard<T>(what: string, work: () => Promise<T>): Promise<T> {
    return guarded(what, work, this.options.log);
  }

  private get clients(): KubernetesClients {
    return this.options.clients;
  }

  // ---- Rendering ----

  private packageFiles(spec: WorkloadSpec): PackageFiles {
    const files: PackageFiles = {};
    for (const name of spec.run.cluster?.files ?? []) {
      try {
        files[name] = readFileSync(join(spec.package.sourceDir, name));
      } catch {
        throw new DomainError('unprocessable', `the package has no file "${name}" to mount`);
      }
    }
    return files;
  }

  render(spec: WorkloadSpec): RenderedWorkload {
    const namespace = this.onboarding.namespaceOf(spec.projectId);
    const rendered = renderService(spec, namespace, this.settings, this.packageFiles(spec), 'masked');
    const onboarding: object[] = [renderNamespace(namespace, spec.projectId)];
    if (spec.quota) onboarding.push(renderQuota(namespace, spec.projectId, spec.quota));
    if (this.settings.roleBinding)
      onboarding.push(renderRoleBinding(namespace, spec.projectId, this.settings.roleBinding));
    return {
      backend: 'kubernetes',
      spec: {
        namespace,
        // Made on the project's first launch (the quota is kept in step at every launch).
        onboarding,
        objects: objectsOf(rendered),
        endpoints: rendered.endpoints,
      },
    };
  }

  // ---- Applying ----

  async apply(spec: WorkloadSpec): Promise<void> {
    await this.guard(`service ${spec.serviceId}`, async () => {
      try {
        await this.applyIn(spec);
      } catch (error) {
        if (!isMissingNamespace(error)) throw error;
        // The project's namespace went behind Atrium's back: it is made again (with its quota),
        // the start taken again once, and the service told why.
        const namespace = this.onboarding.namespaceOf(spec.projectId);
        this.options.log.warn(
          { namespace, serviceId: spec.serviceId },
          'kubernetes: project namespace was gone; making it again',
        );
        this.onboarding.forget(namespace);
        await this.applyIn(spec);
        const tracked = this.tracked.get(spec.serviceId);
        const status = await this.status(spec.serviceId);
        if (tracked && status) {
          this.tell(
            tracked,
            'namespace-recreated',
            `the project's namespace ${namespace} was gone (deleted outside Atrium); it was made again, with its quota`,
            null,
            status,
          );
        }
      }
    });
  }

  private async applyIn(spec: WorkloadSpec): Promise<void> {
    const namespace = this.onboarding.namespaceOf(spec.projectId);
    const rendered = renderService(spec, namespace, this.settings, this.packageFiles(spec), 'plain');
    await this.onboarding.ensure(spec.projectId, spec.quota ?? null);
    const { apps } = this.clients;
    const name = rendered.deployment.metadata?.name ?? workloadName(spec.serviceId);
    const existing = await orNull(apps.readNamespacedDeployment({ name, namespace }));
    // Running already, as this generation: adopted as it is (never started twice).
    const adopt = existing !== null && !isParked(existing) && generationOf(existing) === spec.generation;
    // A new start forgets how the last one ended (before anything of it can end this one).
    this.lost.delete(spec.serviceId);
    this.ended.delete(spec.serviceId);
    // Watching first, so that every event of this start is seen.
    const tracked = this.track(spec.serviceId, namespace, null);
    if (!adopt) tracked.since = Date.now();
    await this.watchesReady(namespace);
    if (!adopt) await this.admitPod(rendered.deployment);
    if (rendered.secret) await this.upsertSecret(rendered.secret);
    if (rendered.files) await this.upsertConfigMap(rendered.files);
    if (!adopt) await this.upsertDeployment(rendered.deployment);
    for (const service of rendered.services) await this.upsertService(service);
    if (rendered.ingress) await this.upsertIngress(rendered.ingress);
    if (this.ended.has(spec.serviceId)) {
      // The cluster refused its pods while the rest was still being created: what was created
      // after the refusal removed everything goes too, and the refusal stands.
      await this.removeObjects(namespace, spec.serviceId);
      return;
    }
    this.namespaces.set(spec.serviceId, namespace);
    await this.refresh(spec.serviceId);
  }

  /**
   * Asks the API server whether the pod could be created (a dry run, which quota admission
   * answers), so that a launch over the namespace's quota is refused now, not left pending.
   */
  private async admitPod(deployment: V1Deployment): Promise<void> {
    const template = deployment.spec?.template;
    const namespace = deployment.metadata?.namespace ?? '';
    try {
      await this.clients.core.createNamespacedPod({
        namespace,
        dryRun: 'All',
        body: {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { ...template?.metadata, generateName: `${deployment.metadata?.name}-` },
          spec: template?.spec ?? { containers: [] },
        },
      });
    } catch (error) {
      const api = apiError(error);
      if (api?.code !== 403) throw error;
      const refusal = parseQuotaRefusal(api.status.message ?? '');
      if (refusal) throw quotaExceeded(refusal);
      throw new DomainError(
        'unprocessable',
        `the cluster refuses the pods of this service: ${api.status.message ?? 'forbidden'}`,
      );
    }
  }

  private async upsertDeployment(desired: V1Deployment): Promise<void> {
    const { apps } = this.clients;
    const name = desired.metadata?.name ?? '';
    const namespace = desired.metadata?.namespace ?? '';
    await retryOnConflict(`deployment ${namespace}/${name}`, async () => {
      const existing = await orNull(apps.readNamespacedDeployment({ name, namespace }));
      if (!existing) {
        await apps.createNamespacedDeployment({ namespace, body: desired });
        return;
      }
      // Replaced whole (its parked record goes), keeping what identifies this version of it.
      await apps.replaceNamespacedDeployment({
        name,
        namespace,
        body: {
          ...desired,
          metadata: { ...desired.metadata, resourceVersion: existing.metadata?.resourceVersion },
        },
      });
    });
  }

  /** Creates an object, or replaces what is there (read again when someone wrote meanwhile). */
  private async upsert<T extends { metadata?: V1ObjectMeta }>(
    what: string,
    desired: T,
    api: { read(): Promise<T>; create(body: T): Promise<T>; replace(body: T): Promise<T> },
    keep: (existing: T, body: T) => T = (_existing, body) => body,
  ): Promise<void> {
    await retryOnConflict(what, async () => {
      const existing = await orNull(api.read());
      // Made meanwhile: a 409, and replaced on the next round.
      if (!existing) await api.create(desired);
      else {
        const body = {
          ...desired,
          metadata: { ...desired.metadata, resourceVersion: existing.metadata?.resourceVersion },
        };
        await api.replace(keep(existing, body));
      }
    });
  }

  private async upsertSecret(secret: V1Secret): Promise<void> {
    const { name = '', namespace = '' } = secret.metadata ?? {};
    const { core } = this.clients;
    await this.upsert(`secret ${namespace}/${name}`, secret, {
      read: () => core.readNamespacedSecret({ name, namespace }),
      create: (body) => core.createNamespacedSecret({ namespace, body }),
      replace: (body) => core.replaceNamespacedSecret({ name, namespace, body }),
    });
  }

  private async upsertConfigMap(configMap: V1ConfigMap): Promise<void> {
    const { name = '', namespace = '' } = configMap.metadata ?? {};
    const { core } = this.clients;
    await this.upsert(`config map ${namespace}/${name}`, configMap, {
      read: () => core.readNamespacedConfigMap({ name, namespace }),
      create: (body) => core.createNamespacedConfigMap({ namespace, body }),
      replace: (body) => core.replaceNamespacedConfigMap({ name, namespace, body }),
    });
  }

  private async upsertService(service: V1Service): Promise<void> {
    const { name = '', namespace = '' } = service.metadata ?? {};
    const { core } = this.clients;
    await this.upsert(
      `service ${namespace}/${name}`,
      service,
      {
        read: () => core.readNamespacedService({ name, namespace }),
        create: (body) => core.createNamespacedService({ namespace, body }),
        replace: (body) => core.replaceNamespacedService({ name, namespace, body }),
      },
      // A Service keeps the address (and address families) it was given.
      (existing, body) => ({ ...body, spec: { ...existing.spec, ...body.spec } }),
    );
  }

  private async upsertIngress(ingress: V1Ingress): Promise<void> {
    const { name = '', namespace = '' } = ingress.metadata ?? {};
    const { networking } = this.clients;
    await this.upsert(`ingress ${namespace}/${name}`, ingress, {
      read: () => networking.readNamespacedIngress({ name, namespace }),
      create: (body) => networking.createNamespacedIngress({ namespace, body }),
      replace: (body) => networking.replaceNamespacedIngress({ name, namespace, body }),
    });
  }

  // ---- Stopping and deleting ----

  async stop(serviceId: string): Promise<void> {
    await this.guard(`service ${serviceId}`, async () => {
      const namespace = await this.locate(serviceId);
      if (!namespace) return;
      const deployment = await orNull(
        this.clients.apps.readNamespacedDeployment({ name: workloadName(serviceId), namespace }),
      );
      if (!deployment) return;
      const tracked = this.track(serviceId, namespace, null);
      if (!isParked(deployment)) {
        await this.serially(serviceId, async () => {
          const observation = await this.observe(tracked);
          if (observation && !isParked(observation.deployment))
            await this.park(tracked, observation, 'stopped', 'stopped', null);
        });
      }
      await this.waitForPodsGone(namespace, serviceId);
      await this.refresh(serviceId);
    });
  }

  async delete(serviceId: string): Promise<void> {
    await this.guard(`service ${serviceId}`, async () => {
      const namespace = await this.locate(serviceId);
      const tracked = this.tracked.get(serviceId);
      if (tracked) tracked.deleting = true;
      if (namespace) {
        await this.removeObjects(namespace, serviceId);
        await this.waitForPodsGone(namespace, serviceId);
      }
      this.untrack(serviceId);
      this.lost.delete(serviceId);
      this.ended.delete(serviceId);
      this.namespaces.delete(serviceId);
    });
  }

  /** Removes every object labelled with the service; the pods go with their Deployment. */
  private async removeObjects(namespace: string, serviceId: string): Promise<void> {
    const { apps, core, networking } = this.clients;
    const labelSelector = serviceSelector(serviceId);
    const background = { propagationPolicy: 'Background' };
    for (const d of (await apps.listNamespacedDeployment({ namespace, labelSelector })).items) {
      await ignoreNotFound(
        apps.deleteNamespacedDeployment({ name: d.metadata?.name ?? '', namespace, ...background }),
      );
    }
    for (const i of (await networking.listNamespacedIngress({ namespace, labelSelector })).items) {
      await ignoreNotFound(networking.deleteNamespacedIngress({ name: i.metadata?.name ?? '', namespace }));
    }
    for (const s of (await core.listNamespacedService({ namespace, labelSelector })).items) {
      await ignoreNotFound(core.deleteNamespacedService({ name: s.metadata?.name ?? '', namespace }));
    }
    for (const s of (await core.listNamespacedSecret({ namespace, labelSelector })).items) {
      await ignoreNotFound(core.deleteNamespacedSecret({ name: s.metadata?.name ?? '', namespace }));
    }
    for (const c of (await core.listNamespacedConfigMap({ namespace, labelSelector })).items) {
      await ignoreNotFound(core.deleteNamespacedConfigMap({ name: c.metadata?.name ?? '', namespace }));
    }
  }

  /** Deletes pods of the service that outlived their Deployment (orphaned, or not yet collected). */
  private async removePods(namespace: string, serviceId: string): Promise<void> {
    const { core } = this.clients;
    const pods = await core.listNamespacedPod({ namespace, labelSelector: serviceSelector(serviceId) });
    for (const pod of pods.items) {
      if (pod.metadata?.deletionTimestamp) continue;
      await ignoreNotFound(core.deleteNamespacedPod({ name: pod.metadata?.name ?? '', namespace }));
    }
  }

  private async waitForPodsGone(namespace: string, serviceId: string): Promise<void> {
    const deadline = Date.now() + this.settings.stopGraceSeconds * 1000 + 15_000;
    for (let round = 0; round < 10_000 && Date.now() < deadline; round++) {
      const pods = await this.clients.core.listNamespacedPod({
        namespace,
        labelSelector: serviceSelector(serviceId),
      });
      if (pods.items.length === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    this.options.log.warn({ serviceId, namespace }, 'kubernetes: pods still there after their grace period');
  }

  /**
   * Scales a workload to zero, recording why and what it was (its tasks, exit code, last logs),
   * since its pods, and their logs, go.
   */
  private async park(
    tracked: Tracked,
    observation: Observation,
    phase: 'stopped' | 'failed',
    message: string,
    exitCode: number | null,
  ): Promise<void> {
    const { namespace, serviceId } = tracked;
    const lines = await captureLogs(this.clients.log, namespace, observation.pods);
    await this.upsertConfigMap(renderLogSnapshot(namespace, serviceId, observation.deployment, lines));
    const record: ParkedRecord = {
      phase,
      message,
      exitCode,
      at: new Date().toISOString(),
      logTail: lines.slice(-logTailLines).map((l) => l.text),
      tasks: observation.pods.map((pod) => stoppedTask(taskOf(pod), phase)),
    };
    const { apps } = this.clients;
    await retryOnConflict(`deployment ${namespace}/${tracked.name}`, async () => {
      const current = await apps.readNamespacedDeployment({ name: tracked.name, namespace });
      await apps.replaceNamespacedDeployment({
        name: tracked.name,
        namespace,
        body: {
          ...current,
          metadata: {
            ...current.metadata,
            annotations: {
              ...current.metadata?.annotations,
              [annotationKeys.parked]: JSON.stringify(record),
            },
          },
          spec: current.spec ? { ...current.spec, replicas: 0 } : undefined,
        },
      });
    });
  }

  // ---- Status ----

  async status(serviceId: string): Promise<WorkloadStatus | null> {
    return this.guard(`service ${serviceId}`, async () => {
      const ended = this.lost.get(serviceId) ?? this.ended.get(serviceId);
      if (ended) return ended;
      const namespace = await this.locate(serviceId);
      if (!namespace) return null;
      const observation = await this.observeIn(namespace, serviceId);
      if (!observation) return this.leftoverStatus(namespace, serviceId);
      return describeWorkload(serviceId, observation, this.settings.maxRestarts);
    });
  }

  /** A service whose Deployment is gone while other objects of it remain was deleted behind our back. */
  private async leftoverStatus(namespace: string, serviceId: string): Promise<WorkloadStatus | null> {
    const services = await this.clients.core.listNamespacedService({
      namespace,
      labelSelector: serviceSelector(serviceId),
    });
    return services.items.length === 0 ? null : lostStatus(serviceId, null, lostMessage);
  }

  private async observe(tracked: Tracked): Promise<Observation | null> {
    return this.observeIn(tracked.namespace, tracked.serviceId);
  }

  private async observeIn(namespace: string, serviceId: string): Promise<Observation | null> {
    const { apps, core } = this.clients;
    const deployment = await orNull(
      apps.readNamespacedDeployment({ name: workloadName(serviceId), namespace }),
    );
    if (!deployment) return null;
    const pods = await core.listNamespacedPod({ namespace, labelSelector: serviceSelector(serviceId) });
    return { deployment, pods: pods.items };
  }

  /** The namespace of a service: known, or found by its label across the region's namespaces. */
  private async locate(serviceId: string): Promise<string | null> {
    const known = this.namespaces.get(serviceId);
    if (known) return known;
    const labelSelector = serviceSelector(serviceId);
    const { apps, core } = this.clients;
    const lists = [
      () => apps.listDeploymentForAllNamespaces({ labelSelector }),
      () => core.listServiceForAllNamespaces({ labelSelector }),
      () => core.listConfigMapForAllNamespaces({ labelSelector }),
    ];
    for (const list of lists) {
      const found = (await list()).items
        .map((item) => item.metadata?.namespace ?? '')
        .find((ns) => ns.startsWith(this.settings.namespacePrefix));
      if (found) {
        this.namespaces.set(serviceId, found);
        return found;
      }
    }
    return null;
  }

  // ---- Logs ----

  async *logs(serviceId: string, options: LogOptions): AsyncIterable<string> {
    try {
      const namespace = await this.locate(serviceId);
      if (namespace) yield* serviceLogLines(this.clients, namespace, serviceId, options);
    } catch (error) {
      throw translate(error, `the logs of service ${serviceId}`);
    }
  }

  // ---- Events and watching ----

  onEvent(listener: (event: WorkloadEvent) => void): void {
    this.listeners.push(listener);
  }

  private emit(event: WorkloadEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.options.log.error({ err, serviceId: event.serviceId }, 'kubernetes: event listener failed');
      }
    }
  }

  /** Tells an event, numbered after every earlier one of the workload. */
  private tell(
    tracked: Tracked,
    type: string,
    message: string,
    seq: number | null,
    status: WorkloadStatus,
    at?: string,
  ): void {
    const number = seq === null ? null : Math.max(seq, tracked.lastSeq);
    if (number !== null) tracked.lastSeq = number;
    this.emit({
      serviceId: tracked.serviceId,
      at: at ?? new Date().toISOString(),
      type,
      message,
      sourceSeq: number,
      status,
    });
  }

  private track(serviceId: string, namespace: string, afterSeq: number | null): Tracked {
    let tracked = this.tracked.get(serviceId);
    if (!tracked) {
      tracked = {
        serviceId,
        namespace,
        name: workloadName(serviceId),
        lastSeq: afterSeq ?? 0,
        lastPhase: null,
        lastExitAt: null,
        lastStatus: null,
        readyPods: new Set(),
        since: Date.now(),
        adopted: afterSeq !== null,
        replayFloor: afterSeq ?? 0,
        deadline: null,
        deleting: false,
        seen: false,
      };
      this.tracked.set(serviceId, tracked);
    } else {
      tracked.deleting = false;
    }
    this.watchNamespace(namespace);
    this.startTimer();
    return tracked;
  }

  /** Waits (a little at most) for a namespace's watches to have listed what is there. */
  private async watchesReady(namespace: string): Promise<void> {
    const ready = this.watches.get(namespace)?.ready;
    if (!ready) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([ready, new Promise((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
  }

  private untrack(serviceId: string): void {
    const tracked = this.tracked.get(serviceId);
    if (!tracked) return;
    if (tracked.deadline) clearTimeout(tracked.deadline);
    this.tracked.delete(serviceId);
    if (![...this.tracked.values()].some((t) => t.namespace === tracked.namespace)) {
      this.watches.get(tracked.namespace)?.stop();
      this.watches.delete(tracked.namespace);
    }
  }

  private startTimer(): void {
    if (this.timer || this.closed) return;
    let round = 0;
    this.timer = setInterval(() => {
      // Stopped and failed workloads change only when told to (or deleted, which their watch
      // says): they are read again less often.
      round++;
      for (const tracked of this.tracked.values()) {
        const idle = tracked.lastPhase === 'stopped' || tracked.lastPhase === 'failed';
        if (!idle || round % 10 === 0) void this.refresh(tracked.serviceId);
      }
    }, this.settings.reconcileIntervalMs);
    this.timer.unref();
  }

  private watchNamespace(namespace: string): void {
    if (this.watches.has(namespace) || this.closed) return;
    const onObject = (object: V1Pod | V1Deployment) => {
      const serviceId = serviceIdOf(object);
      if (serviceId && this.tracked.has(serviceId)) void this.refresh(serviceId);
    };
    const watch = new NamespaceWatch(this.clients, namespace, this.options.log, {
      onPodsListed: () => {
        for (const t of this.tracked.values()) if (t.namespace === namespace) void this.refresh(t.serviceId);
      },
      onPod: (pod) => {
        const tracked = this.tracked.get(serviceIdOf(pod) ?? '');
        if (tracked && isPodReady(pod) && pod.metadata?.uid) tracked.readyPods.add(pod.metadata.uid);
        onObject(pod);
      },
      onDeployment: onObject,
      onClusterEvent: (event, after) => this.onClusterEvent(event, after),
    });
    this.watches.set(namespace, watch);
  }

  /**
   * A Kubernetes Event about one of a watched workload's objects, told as one of its events.
   * `after`: the number up to which events were told already; null for what happened before the
   * watch (told to adopted workloads only).
   */
  private onClusterEvent(event: CoreV1Event, after: number | null): void {
    const involved = event.involvedObject?.name ?? '';
    const seq = sequenceOf(event.metadata?.resourceVersion);
    for (const tracked of this.tracked.values()) {
      if (tracked.namespace !== event.metadata?.namespace) continue;
      if (involved !== tracked.name && !involved.startsWith(`${tracked.name}-`)) continue;
      if (after === null && !tracked.adopted) return;
      const floor = Math.max(after ?? 0, tracked.replayFloor);
      if (seq !== null && seq <= floor) return;
      void this.serially(tracked.serviceId, async () => {
        if (!tracked.lastStatus) await this.refreshNow(tracked.serviceId);
        const status = tracked.lastStatus;
        if (!status || !this.tracked.has(tracked.serviceId)) return;
        this.tell(
          tracked,
          `kubernetes.${event.reason ?? 'Event'}`,
          `${event.involvedObject?.kind ?? 'object'} ${involved}: ${event.message ?? ''}`.trim(),
          seq,
          status,
          // Core v1 events have timestamps; the scheduler's (events.k8s.io) an eventTime, and a
          // series once they repeat.
          toIso(event.series?.lastObservedTime) ??
            toIso(event.lastTimestamp) ??
            toIso(event.eventTime) ??
            toIso(event.firstTimestamp) ??
            undefined,
        );
      });
      return;
    }
  }

  /** Runs work on a workload after whatever runs on it already (its events stay in order). */
  private serially(serviceId: string, work: () => Promise<void>): Promise<void> {
    const next = (this.chains.get(serviceId) ?? Promise.resolve()).then(work);
    const settled = next.catch((err: unknown) =>
      this.options.log.error({ err, serviceId }, 'kubernetes: refresh failed'),
    );
    this.chains.set(serviceId, settled);
    void settled.then(() => {
      if (this.chains.get(serviceId) === settled) this.chains.delete(serviceId);
    });
    return next;
  }

  /** Reads a workload again soon; asking again before that read has begun asks for nothing more. */
  private refresh(serviceId: string): Promise<void> {
    const queued = this.queued.get(serviceId);
    if (queued) return queued;
    const next = this.serially(serviceId, () => {
      this.queued.delete(serviceId);
      return this.refreshNow(serviceId);
    }).catch(() => undefined);
    this.queued.set(serviceId, next);
    return next;
  }

  /** Reads a workload again: decides whether it failed, and tells what changed. */
  private async refreshNow(serviceId: string): Promise<void> {
    const tracked = this.tracked.get(serviceId);
    if (!tracked || this.closed) return;
    let observation = await this.observe(tracked);
    if (!observation) {
      if (tracked.seen && !tracked.deleting) await this.markLost(tracked);
      return;
    }
    tracked.seen = true;
    for (const pod of observation.pods)
      if (isPodReady(pod) && pod.metadata?.uid) tracked.readyPods.add(pod.metadata.uid);
    if (!isParked(observation.deployment)) {
      const failure = verdict(observation, {
        now: Date.now(),
        readinessTimeoutMs: this.settings.readinessTimeoutMs,
        maxRestarts: this.settings.maxRestarts,
        everReady: (pod) => this.everReady(tracked, pod),
      });
      // A launch the cluster refused leaves nothing; a service that ran is parked, with its log.
      if (failure?.refused && tracked.readyPods.size === 0)
        return this.refuse(tracked, observation, failure.message);
      if (failure) {
        await this.park(tracked, observation, 'failed', failure.message, failure.exitCode);
        observation = (await this.observe(tracked)) ?? observation;
      }
    }
    const status = describeWorkload(serviceId, observation, this.settings.maxRestarts);
    const seq = Math.max(
      0,
      ...[observation.deployment, ...observation.pods].map(
        (o) => sequenceOf(o.metadata?.resourceVersion) ?? 0,
      ),
    );
    const exitAt =
      observation.pods
        .map((pod) => lastExit(pod)?.at ?? null)
        .filter((at): at is string => at !== null)
        .sort()
        .pop() ?? null;
    // Adopted, and nothing changed since its owner heard last: nothing to tell.
    const quiet = tracked.adopted && tracked.lastPhase === null && seq <= tracked.replayFloor;
    const exited = exitAt !== null && exitAt !== tracked.lastExitAt;
    if (!quiet) {
      if (
        exited &&
        status.phase === 'starting' &&
        tracked.lastPhase !== null &&
        !isParked(observation.deployment)
      ) {
        const restarts = restartsOf(observation.pods);
        this.tell(
          tracked,
          'restarting',
          status.message ?? `restarting (${restarts} restarts so far)`,
          seq,
          status,
        );
      } else if (status.phase !== tracked.lastPhase) {
        this.tell(tracked, status.phase, status.message ?? defaultMessages[status.phase], seq, status);
      }
    }
    tracked.lastPhase = status.phase;
    tracked.lastExitAt = exitAt;
    tracked.lastStatus = status;
    this.scheduleDeadline(tracked, observation);
  }

  private everReady(tracked: Tracked, pod: V1Pod): boolean | null {
    const uid = pod.metadata?.uid ?? '';
    if (tracked.readyPods.has(uid)) return true;
    const created = Date.parse(toIso(pod.metadata?.creationTimestamp) ?? '');
    // Creation times have whole seconds: made in the second watching began counts as watched.
    return Number.isFinite(created) && created >= Math.floor(tracked.since / 1000) * 1000 ? false : null;
  }

  private scheduleDeadline(tracked: Tracked, observation: Observation): void {
    if (tracked.deadline) clearTimeout(tracked.deadline);
    tracked.deadline = null;
    if (isParked(observation.deployment)) return;
    const due = nextDeadline(observation, this.settings.readinessTimeoutMs);
    if (due === null) return;
    tracked.deadline = setTimeout(() => void this.refresh(tracked.serviceId), Math.max(10, due - Date.now()));
    tracked.deadline.unref();
  }

  /**
   * The cluster refused the launch's pods (its quota has no room): nothing of the launch remains,
   * not even its files, and it is told failed with the refusal.
   */
  private async refuse(tracked: Tracked, observation: Observation, message: string): Promise<void> {
    const status: WorkloadStatus = {
      ...describeWorkload(tracked.serviceId, observation, this.settings.maxRestarts),
      phase: 'failed',
      message,
      tasks: [],
      endpoints: [],
    };
    this.ended.set(tracked.serviceId, status);
    this.untrack(tracked.serviceId);
    await this.removeObjects(tracked.namespace, tracked.serviceId);
    this.tell(tracked, 'failed', message, null, status);
  }

  private async markLost(tracked: Tracked): Promise<void> {
    const status = lostStatus(tracked.serviceId, tracked.lastStatus?.generation ?? null, lostMessage);
    this.lost.set(tracked.serviceId, status);
    this.untrack(tracked.serviceId);
    this.tell(tracked, 'lost', lostMessage, null, status);
    // What it left running is stopped: nothing of a lost workload runs on.
    await this.removePods(tracked.namespace, tracked.serviceId);
  }

  // ---- Reconciling ----

  async reconcile(
    known: { serviceId: string; shouldRun: boolean; afterSeq?: number }[],
  ): Promise<ReconcileReport> {
    return this.guard('reconciling services', async () => {
      const report: ReconcileReport = { adopted: [], lost: [], removed: [] };
      const found = await this.findAll();
      const byId = new Map(known.map((k) => [k.serviceId, k]));
      for (const [serviceId, { namespace, deployment }] of found) {
        const entry = byId.get(serviceId);
        if (!entry) {
          await this.removeObjects(namespace, serviceId);
          await this.removePods(namespace, serviceId);
          await this.waitForPodsGone(namespace, serviceId);
          report.removed.push(serviceId);
          continue;
        }
        this.namespaces.set(serviceId, namespace);
        if (!deployment) {
          // Its Deployment was deleted behind our back: reported, and whatever it left stopped.
          await this.removePods(namespace, serviceId);
          await this.waitForPodsGone(namespace, serviceId);
          this.lost.set(serviceId, lostStatus(serviceId, null, lostMessage));
          report.lost.push(serviceId);
          continue;
        }
        if (!entry.shouldRun) {
          if (!isParked(deployment)) await this.stop(serviceId);
          continue;
        }
        const tracked = this.track(serviceId, namespace, entry.afterSeq ?? 0);
        await this.watchesReady(namespace);
        if (!isParked(deployment)) report.adopted.push(serviceId);
        await this.refresh(serviceId);
        await this.restoreMissingServices(tracked, deployment);
      }
      // Services that should run but have nothing left in the cluster at all: gone behind our back.
      for (const entry of known) {
        if (found.has(entry.serviceId) || !entry.shouldRun) continue;
        this.lost.set(entry.serviceId, lostStatus(entry.serviceId, null, vanishedMessage));
        report.lost.push(entry.serviceId);
      }
      return report;
    });
  }

  /**
   * Creates again each Service (one per container port) deleted outside Atrium, as it was
   * rendered (from the Deployment, which carries what it is made of), and tells it as an event of
   * the workload.
   */
  private async restoreMissingServices(tracked: Tracked, deployment: V1Deployment): Promise<void> {
    const ports = (deployment.spec?.template.spec?.containers ?? []).flatMap((c) =>
      (c.ports ?? []).flatMap((p) => (p.name ? [p.name] : [])),
    );
    if (ports.length === 0) return;
    const present = new Set(
      (
        await this.clients.core.listNamespacedService({
          namespace: tracked.namespace,
          labelSelector: serviceSelector(tracked.serviceId),
        })
      ).items.map((service) => service.metadata?.name ?? ''),
    );
    const missing = ports.filter((port) => !present.has(portServiceName(tracked.serviceId, port)));
    const restored: string[] = [];
    for (const port of missing) {
      const service = portServiceOf(deployment, port);
      if (!service) continue;
      await this.upsertService(service);
      restored.push(port);
    }
    if (restored.length === 0 || !tracked.lastStatus) return;
    const s = restored.length === 1 ? '' : 's';
    this.tell(
      tracked,
      'objects-restored',
      `the Service${s} of port${s} ${restored.join(', ')} ${restored.length === 1 ? 'was' : 'were'} deleted outside Atrium, and created again`,
      null,
      tracked.lastStatus,
    );
  }

  /** Every service with objects in the region's namespaces, with its Deployment if it has one. */
  private async findAll(): Promise<Map<string, { namespace: string; deployment: V1Deployment | null }>> {
    const labelSelector = labelKeys.service;
    const { apps, core } = this.clients;
    const found = new Map<string, { namespace: string; deployment: V1Deployment | null }>();
    const mine = (namespace: string | undefined) =>
      (namespace ?? '').startsWith(this.settings.namespacePrefix);
    for (const deployment of (await apps.listDeploymentForAllNamespaces({ labelSelector })).items) {
      const serviceId = serviceIdOf(deployment);
      if (serviceId && mine(deployment.metadata?.namespace)) {
        found.set(serviceId, { namespace: deployment.metadata?.namespace ?? '', deployment });
      }
    }
    const leftovers = [
      ...(await core.listServiceForAllNamespaces({ labelSelector })).items,
      ...(await core.listConfigMapForAllNamespaces({ labelSelector })).items,
      ...(await core.listSecretForAllNamespaces({ labelSelector })).items,
    ];
    for (const object of leftovers) {
      const serviceId = serviceIdOf(object);
      if (serviceId && !found.has(serviceId) && mine(object.metadata?.namespace)) {
        found.set(serviceId, { namespace: object.metadata?.namespace ?? '', deployment: null });
      }
    }
    return found;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const tracked of this.tracked.values()) if (tracked.deadline) clearTimeout(tracked.deadline);
    for (const watch of this.watches.values()) watch.stop();
    this.watches.clear();
    this.ports.close();
    await Promise.all([...this.chains.values()]);
  }
}

const lostMessage = 'its Deployment was deleted outside Atrium; whatever it left running was stopped';
const vanishedMessage = 'everything it had in the cluster was deleted outside Atrium';
