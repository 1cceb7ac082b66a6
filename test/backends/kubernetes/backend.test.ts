// The Kubernetes backend against the fake API server: onboarding (namespaces, quotas, role
// bindings), errors translated at the boundary, the stable reasons of failures, and events.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ApiException } from '@kubernetes/client-node';
import { KubernetesBackend } from '../../../src/backends/cluster/kubernetes/backend.js';
import { retryOnConflict, translate } from '../../../src/backends/cluster/kubernetes/errors.js';
import {
  createClients,
  loadKubeConfig,
  type KubernetesSettings,
} from '../../../src/backends/cluster/kubernetes/settings.js';
import type { WorkloadEvent, WorkloadSpec, WorkloadStatus } from '../../../src/backends/cluster/types.js';
import { DomainError } from '../../../src/errors.js';
import { createLogger } from '../../../src/log.js';
import { probeSpec, waitForStatus } from '../../conformance/cluster-backend.js';
import { FakeKube, type KubeObject } from '../../fixtures/fake-kube/index.js';

const settings: Partial<KubernetesSettings> = {
  namespacePrefix: 'atrium-',
  reconcileIntervalMs: 200,
  readinessTimeoutMs: 1500,
  maxRestarts: 2,
  stopGraceSeconds: 1,
  roleBinding: {
    clusterRole: 'edit',
    subjects: [{ kind: 'Group', name: 'atrium:${project.id}', namespace: null }],
  },
};

const quota = { cpuMillis: 300, memoryBytes: 1024 ** 3, gpu: 0, services: 2 };

/** Polls `check` (bounded) until it returns something; returns it. */
async function waitFor<T>(check: () => Promise<T | null> | T | null, timeoutMs = 25_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    const found = await check();
    if (found !== null) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing came in ${timeoutMs} ms`);
}

async function refusal(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  if (!(error instanceof DomainError)) throw new Error(`expected a DomainError, got ${String(error)}`);
  return error;
}

describe('the Kubernetes backend', () => {
  let fake: FakeKube;
  let backend: KubernetesBackend;
  const events: WorkloadEvent[] = [];
  const started: string[] = [];

  const launch = async (spec: WorkloadSpec) => {
    started.push(spec.serviceId);
    await backend.apply(spec);
    return spec;
  };
  const inProject = (projectId: string, options: Record<string, unknown> = {}): WorkloadSpec => ({
    ...probeSpec(options),
    projectId,
    quota,
  });
  const objects = (plural: string, serviceId: string): KubeObject[] =>
    fake.objects(plural, undefined, `atrium.dev/service=${serviceId}`);

  beforeAll(async () => {
    fake = await FakeKube.start({
      images: {
        'registry.example.org/missing:1': { kind: 'pull-error' },
        'registry.example.org/huge:1': { kind: 'unschedulable' },
      },
    });
    backend = new KubernetesBackend({
      clients: createClients(loadKubeConfig(fake.kubeconfigPath, null)),
      settings,
      log: createLogger('silent'),
    });
    backend.onEvent((event) => events.push(event));
  });
  afterAll(async () => {
    for (const id of started) await backend.delete(id).catch(() => undefined);
    await backend.close();
    await fake.close();
  });

  describe('onboarding', () => {
    it('creates the project namespace on first use, labelled and annotated with the project', async () => {
      await launch(inProject('team-a'));
      const [namespace] = fake.objects('namespaces').filter((n) => n.metadata.name === 'atrium-team-a');
      expect(namespace?.metadata.labels).toMatchObject({
        'app.kubernetes.io/managed-by': 'atrium',
        'atrium.dev/project': 'team-a',
      });
      expect(namespace?.metadata.annotations).toMatchObject({ 'atrium.dev/project-id': 'team-a' });
      const [binding] = fake.objects('rolebindings', 'atrium-team-a');
      expect(binding).toMatchObject({
        roleRef: { kind: 'ClusterRole', name: 'edit' },
        subjects: [{ kind: 'Group', name: 'atrium:team-a' }],
      });
    });

    it('mirrors the compute of the project quota into a ResourceQuota, and follows it when it changes', async () => {
      // Not the number of services: the cluster would count the parked Deployments of failed
      // services, which Atrium does not.
      const [mirrored] = fake.objects('resourcequotas', 'atrium-team-a');
      expect(mirrored?.spec).toEqual({
        hard: {
          'requests.cpu': '300m',
          'limits.cpu': '300m',
          'requests.memory': '1Gi',
          'limits.memory': '1Gi',
          'requests.nvidia.com/gpu': '0',
        },
      });
      await launch({ ...inProject('team-a'), quota: { ...quota, cpuMillis: 2000, services: 5 } });
      const [updated] = fake.objects('resourcequotas', 'atrium-team-a');
      expect(updated?.spec).toEqual({
        hard: expect.objectContaining({ 'requests.cpu': '2', 'limits.cpu': '2' }),
      });
      expect(Object.keys((updated?.spec as { hard?: object } | undefined)?.hard ?? {})).not.toContain(
        'count/deployments.apps',
      );
    });

    it('leaves alone a quota its admins manage outside Atrium', async () => {
      fake.api.create('namespaces', undefined, {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: 'atrium-team-b', uid: '', resourceVersion: '', creationTimestamp: '' },
      });
      const hard = { 'requests.cpu': '8', 'requests.memory': '16Gi' };
      fake.api.create('resourcequotas', 'atrium-team-b', {
        apiVersion: 'v1',
        kind: 'ResourceQuota',
        metadata: {
          name: 'atrium-quota',
          uid: '',
          resourceVersion: '',
          creationTimestamp: '',
          annotations: { 'atrium.dev/managed-by': 'external' },
        },
        spec: { hard },
      });
      await launch(inProject('team-b'));
      const [kept] = fake.objects('resourcequotas', 'atrium-team-b');
      expect(kept?.spec).toEqual({ hard });
    });
  });

  describe('errors at the boundary', () => {
    it('refuses a launch over the namespace quota with quota-exceeded naming the resource, creating nothing', async () => {
      const spec = {
        ...inProject('team-c'),
        resources: { cpuMillis: 400, memoryBytes: 128 * 1024 ** 2, gpu: 0 },
      };
      const error = await refusal(launch(spec));
      expect(error.kind).toBe('quota-exceeded');
      expect(error.detail).toMatch(/requests\.cpu: 400m requested, 0 used of 300m/);
      expect(error.extensions).toMatchObject({ quota: 'atrium-quota' });
      expect(objects('deployments', spec.serviceId)).toEqual([]);
      expect(await backend.status(spec.serviceId)).toBeNull();
    });

    it('leaves nothing of a launch whose pods the cluster quota refused after admitting it', async () => {
      // Both are admitted (neither pod exists yet when the other asks); the cluster then has room
      // for one pod only, and the other launch is refused by its ReplicaSet.
      const tight = { ...quota, cpuMillis: 150 };
      const [a, b] = [inProject('team-q'), inProject('team-q')].map((spec) => ({ ...spec, quota: tight }));
      await Promise.all([launch(a as WorkloadSpec), launch(b as WorkloadSpec)]);
      const ended = await Promise.all(
        [a, b].map((spec) =>
          waitForStatus(
            backend,
            (spec as WorkloadSpec).serviceId,
            (s) => s?.phase === 'running' || s?.phase === 'failed',
            25_000,
          ),
        ),
      );
      const refused = ended.find((s) => s?.phase === 'failed');
      expect(ended.map((s) => s?.phase).sort()).toEqual(['failed', 'running']);
      expect(refused?.message).toMatch(
        /^quota-exceeded: the cluster quota "atrium-quota" has no room for its pod/,
      );
      for (const plural of ['deployments', 'replicasets', 'secrets', 'configmaps', 'services', 'pods']) {
        expect([plural, objects(plural, refused?.serviceId ?? '')]).toEqual([plural, []]);
      }
    });

    it('keeps a refusal that comes while the launch is still creating its objects, and leaves nothing', async () => {
      // Both launches are admitted and create their Deployments; the cluster refuses the second's
      // pod while that launch is still creating its port Service (held here until then).
      const tight = { ...quota, cpuMillis: 150 };
      const [a, b] = [inProject('team-r'), inProject('team-r')].map((spec) => ({ ...spec, quota: tight }));
      const deployments = fake.hold('deployments');
      const services = fake.hold('services');
      const launches = [launch(a as WorkloadSpec), launch(b as WorkloadSpec)];
      for (let i = 0; i < 2400 && deployments.waiting() < 2; i++) await new Promise((r) => setTimeout(r, 25));
      expect(deployments.waiting()).toBe(2);
      deployments.release();
      const refusedId = await waitFor(async () => {
        const refused = fake
          .objects('deployments', undefined)
          .find((d) =>
            ((d.status as { conditions?: { type: string }[] } | undefined)?.conditions ?? []).some(
              (c) => c.type === 'ReplicaFailure',
            ),
          );
        return refused?.metadata.labels?.['atrium.dev/service'] ?? null;
      });
      // The backend has seen the refusal (and removed the launch) before its Service is created.
      await waitForStatus(backend, refusedId, (s) => s?.phase === 'failed', 25_000);
      services.release();
      await Promise.all(launches);
      const status = await backend.status(refusedId);
      expect(status?.phase).toBe('failed');
      expect(status?.message).toMatch(/^quota-exceeded: /);
      for (const plural of ['deployments', 'replicasets', 'secrets', 'configmaps', 'services', 'pods']) {
        expect([plural, objects(plural, refusedId)]).toEqual([plural, []]);
      }
    });

    it('counts in the cluster what Atrium counts: a failed service, parked, leaves room for the next', async () => {
      // Atrium gives a failed service's slot back; its Deployment stays, parked at zero replicas,
      // and the cluster must not count it against the project's limit of services.
      const limited = { ...quota, services: 1 };
      const crashed = await launch({ ...inProject('team-d', { mode: 'crash' }), quota: limited });
      await waitForStatus(backend, crashed.serviceId, (s) => s?.phase === 'failed', 60_000);
      const next = await launch({ ...inProject('team-d'), quota: limited });
      await waitForStatus(backend, next.serviceId, (s) => s?.phase === 'running', 60_000);
    });

    it('reads again and retries an update that lost a race (409), a bounded number of times', async () => {
      const spec = await launch(inProject('team-e'));
      await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      const puts = () =>
        fake.requests.filter((r) => r.method === 'PUT' && r.path.includes('/deployments/')).length;
      const before = puts();
      fake.interfere('deployments', 2);
      await backend.stop(spec.serviceId);
      expect(puts() - before).toBe(3);
      expect((await backend.status(spec.serviceId))?.phase).toBe('stopped');

      fake.interfere('deployments', 100);
      const error = await refusal(backend.apply(spec));
      expect(error.kind).toBe('conflict');
      fake.interfere('deployments', 0);
    });

    it('translates what the API server answers into problem kinds, never passing an ApiException on', async () => {
      const status = (code: number, reason: string, message: string) =>
        new ApiException(code, 'x', JSON.stringify({ kind: 'Status', code, reason, message }), {});
      expect(translate(status(404, 'NotFound', 'deployments.apps "x" not found'), 'deployment x').kind).toBe(
        'not-found',
      );
      const quotaError = translate(
        status(
          403,
          'Forbidden',
          'pods "p" is forbidden: exceeded quota: q1, requested: limits.memory=2Gi,requests.memory=2Gi, used: limits.memory=0,requests.memory=0, limited: limits.memory=1Gi,requests.memory=1Gi',
        ),
        'pod p',
      );
      expect(quotaError.kind).toBe('quota-exceeded');
      expect(quotaError.detail).toContain('limits.memory: 2Gi requested, 0 used of 1Gi');
      expect(translate(status(403, 'Forbidden', 'no RBAC'), 'x').kind).toBe('internal');
      expect(translate(status(422, 'Invalid', 'bad name'), 'x').kind).toBe('unprocessable');
      expect(translate(status(500, 'InternalError', 'etcd'), 'x').kind).toBe('unavailable');
      let calls = 0;
      const retried = await retryOnConflict('x', async () => {
        calls++;
        if (calls < 3) throw status(409, 'Conflict', 'modified');
        return 'done';
      });
      expect([retried, calls]).toEqual(['done', 3]);
    });

    it('answers 404s as absence: no status, nothing to stop or delete, no such task', async () => {
      expect(await backend.status('svc_DoesNotExist000000')).toBeNull();
      await backend.stop('svc_DoesNotExist000000');
      await backend.delete('svc_DoesNotExist000000');
      const spec = await launch(inProject('team-f'));
      await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      const lines = async (options: { task?: string; container?: string }) => {
        for await (const line of backend.logs(spec.serviceId, options)) void line;
      };
      expect((await refusal(lines({ task: 'no-such-pod' }))).kind).toBe('not-found');
      expect((await refusal(lines({ container: 'sidecar' }))).kind).toBe('not-found');
    });

    it('says the API server cannot be reached, as unavailable', async () => {
      const unreachable = loadKubeConfig(fake.kubeconfigPath, null);
      unreachable.clusters = unreachable.clusters.map((c) => ({ ...c, server: 'http://127.0.0.1:9' }));
      const offline = new KubernetesBackend({
        clients: createClients(unreachable),
        settings,
        log: createLogger('silent'),
      });
      expect((await refusal(offline.apply(inProject('team-g')))).kind).toBe('unavailable');
      expect((await refusal(offline.status('svc_Whatever00000000000'))).kind).toBe('unavailable');
      await offline.close();
    });
  });

  describe('stable reasons', () => {
    const withImage = (image: string): WorkloadSpec => {
      const spec = inProject(`team-h${started.length}`);
      const cluster = spec.run.cluster;
      if (!cluster) throw new Error('no cluster run spec');
      return { ...spec, run: { local: null, cluster: { ...cluster, image } } };
    };

    it('fails a workload whose image cannot be pulled as image-pull-failed, at once', async () => {
      const spec = await launch(withImage('registry.example.org/missing:1'));
      const status = await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'failed', 60_000);
      expect(status?.message).toMatch(
        /^image-pull-failed: the image "registry\.example\.org\/missing:1" cannot be pulled \(ImagePullBackOff/,
      );
      expect(status?.tasks[0]?.containers[0]?.reason).toBe('ImagePullBackOff');
    });

    it('says a workload no node can run is unschedulable, then fails it so', async () => {
      const spec = await launch(withImage('registry.example.org/huge:1'));
      // Its pod has no node: the API server answers its log with 204 (no content), an empty log.
      await waitForStatus(backend, spec.serviceId, (s) => Boolean(s?.message));
      const lines: string[] = [];
      for await (const line of backend.logs(spec.serviceId, {})) lines.push(line);
      expect(lines).toEqual([]);
      // Every status on the way says why it waits; how many are seen before the readiness
      // timeout depends on the machine's speed, so only what each says is asserted.
      const seen: WorkloadStatus[] = [];
      const failed = await waitForStatus(
        backend,
        spec.serviceId,
        (s) => {
          if (s?.message) seen.push(s);
          return s?.phase === 'failed';
        },
        60_000,
      );
      expect(failed?.message).toMatch(
        /^unschedulable: no node of the cluster can run it \(0\/1 nodes are available/,
      );
      for (const status of seen.filter((s) => s.phase !== 'failed')) {
        expect([status.phase, status.message]).toEqual([
          'starting',
          expect.stringMatching(/^unschedulable: /),
        ]);
      }
      // The scheduler's event (events.k8s.io: an eventTime, no timestamps) is told with its time.
      const told = events.find(
        (e) => e.serviceId === spec.serviceId && e.type === 'kubernetes.FailedScheduling',
      );
      expect(told?.message).toMatch(/0\/1 nodes are available: 1 Insufficient cpu\./);
      expect(Number.isFinite(Date.parse(told?.at ?? ''))).toBe(true);
    });

    it('suspends a workload whose kubelet cannot be reached (its log a 500), keeping what it can', async () => {
      const spec = await launch(inProject('team-u'));
      await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      fake.kubeletReachable(false);
      try {
        const error = await (async () => {
          try {
            for await (const line of backend.logs(spec.serviceId, {})) void line;
            return null;
          } catch (e) {
            return e as DomainError;
          }
        })();
        expect(error?.kind).toBe('unavailable');
        await backend.stop(spec.serviceId);
        expect((await backend.status(spec.serviceId))?.phase).toBe('stopped');
      } finally {
        fake.kubeletReachable(true);
      }
    });

    it('says a workload that keeps crashing is in a crash loop, then gives up', async () => {
      const spec = await launch({
        ...inProject('team-k', { mode: 'crash-later', crash_after_ms: 300, exit_code: 5 }),
      });
      const seen: WorkloadStatus[] = [];
      const failed = await waitForStatus(
        backend,
        spec.serviceId,
        (s) => {
          if (s?.message) seen.push(s);
          return s?.phase === 'failed';
        },
        60_000,
      );
      // It gives up once it has seen at least maxRestarts (2) restarts: on a slow machine it may see
      // the workload only after one more.
      const [, restarts] =
        /^crash-loop: exited with code 5; restarted (\d+) times, giving up/.exec(failed?.message ?? '') ?? [];
      expect(Number(restarts)).toBeGreaterThanOrEqual(2);
      expect(failed?.exitCode).toBe(5);
      for (const status of seen.filter(
        (s) => s.phase !== 'failed' && /^crash-loop: /.test(s.message ?? ''),
      )) {
        expect([status.phase, status.message]).toEqual([
          'starting',
          expect.stringMatching(/exited with code 5; restarting/),
        ]);
      }
    }, 90_000);
  });

  describe('events', () => {
    it("tells the cluster's events about a workload's own objects only, in order", async () => {
      const first = await launch(inProject('team-i'));
      const second = await launch(inProject('team-i'));
      await waitForStatus(backend, first.serviceId, (s) => s?.phase === 'running');
      await waitForStatus(backend, second.serviceId, (s) => s?.phase === 'running');
      const deadline = Date.now() + 5000;
      const mine = () => events.filter((e) => e.serviceId === first.serviceId);
      while (Date.now() < deadline && !mine().some((e) => e.type === 'kubernetes.Started')) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const told = mine().filter((e) => e.type.startsWith('kubernetes.'));
      expect(told.map((e) => e.type)).toEqual(
        expect.arrayContaining(['kubernetes.Scheduled', 'kubernetes.Started']),
      );
      const secondPod = objects('pods', second.serviceId)[0]?.metadata.name ?? '(none)';
      expect(told.some((e) => e.message.includes(secondPod))).toBe(false);
      const seqs = mine()
        .map((e) => e.sourceSeq)
        .filter((s): s is number => s !== null);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    });

    it('reports a workload whose Deployment was deleted behind its back as lost, and stops what it left', async () => {
      const spec = await launch(inProject('team-j'));
      await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      const [deployment] = objects('deployments', spec.serviceId);
      // Orphaned: its pod would run on unless the backend stops it.
      fake.api.delete('deployments', 'atrium-team-j', deployment?.metadata.name ?? '', {
        propagationPolicy: 'Orphan',
      });
      const lost = await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'lost', 5000);
      expect(lost?.message).toMatch(/deleted outside Atrium/);
      expect(events.some((e) => e.serviceId === spec.serviceId && e.type === 'lost')).toBe(true);
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && objects('pods', spec.serviceId).length > 0)
        await new Promise((r) => setTimeout(r, 50));
      expect(objects('pods', spec.serviceId)).toEqual([]);
    });
  });

  describe('reconcile', () => {
    it('reports a service whose every object was deleted behind its back as lost', async () => {
      const spec = await launch(inProject('team-k'));
      await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      for (const plural of ['deployments', 'services', 'configmaps', 'secrets']) {
        for (const object of objects(plural, spec.serviceId)) {
          fake.api.delete(plural, 'atrium-team-k', object.metadata.name, { propagationPolicy: 'Background' });
        }
      }
      const report = await backend.reconcile([{ serviceId: spec.serviceId, shouldRun: true }]);
      expect(report.lost).toContain(spec.serviceId);
      expect((await backend.status(spec.serviceId))?.phase).toBe('lost');
    });

    it('creates a port Service deleted behind its back again, as it was rendered, and tells so', async () => {
      const spec = await launch(inProject('team-l'));
      await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      const [service] = objects('services', spec.serviceId);
      expect(service).toBeDefined();
      const name = service?.metadata.name ?? '';
      fake.api.delete('services', 'atrium-team-l', name);
      expect(objects('services', spec.serviceId)).toEqual([]);
      const report = await backend.reconcile([{ serviceId: spec.serviceId, shouldRun: true }]);
      expect(report.adopted).toContain(spec.serviceId);
      const [again] = objects('services', spec.serviceId);
      const made = (object: typeof service) => ({
        name: object?.metadata.name,
        labels: object?.metadata.labels,
        annotations: object?.metadata.annotations,
        spec: {
          ...(object as { spec?: object } | undefined)?.spec,
          clusterIP: undefined,
          clusterIPs: undefined,
        },
      });
      expect(again?.metadata.uid).not.toBe(service?.metadata.uid);
      expect(made(again)).toEqual(made(service));
      const restored = events.find((e) => e.serviceId === spec.serviceId && e.type === 'objects-restored');
      expect(restored?.message).toMatch(/Service of port http was deleted outside Atrium, and created again/);
    });
  });
});
