// What the real API server does that the fake was kinder about, through the Kubernetes backend: a
// pod no node takes (its log a 204, the scheduler's events.k8s.io events, failed at the readiness
// timeout), a kubelet out of reach (its log a 500), a namespace deleted outside Atrium, the
// cluster's quota (refusals leave nothing; parked services are not counted), an image that cannot
// be pulled.
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import type { KubernetesBackend } from '../../src/backends/cluster/kubernetes/backend.js';
import { namespaceName } from '../../src/backends/cluster/kubernetes/naming.js';
import type { WorkloadEvent, WorkloadSpec } from '../../src/backends/cluster/types.js';
import { DomainError } from '../../src/errors.js';
import { probeSpec, waitForStatus } from '../conformance/cluster-backend.js';
import { eventually, realCluster, type RealCluster } from './cluster.js';

jest.setTimeout(180_000);

const serviceLabel = (serviceId: string) => `atrium.dev/service=${serviceId}`;

describe('the Kubernetes backend against a real API server', () => {
  let cluster: RealCluster;
  let backend: KubernetesBackend;
  const events: WorkloadEvent[] = [];

  beforeAll(async () => {
    cluster = await realCluster();
    backend = cluster.backend();
    backend.onEvent((event) => events.push(event));
  });
  afterAll(() => cluster?.close());

  const inProject = (projectId: string, options: Record<string, unknown> = {}): WorkloadSpec => ({
    ...probeSpec(options),
    projectId,
  });
  const namespaceOf = (projectId: string) => namespaceName(cluster.prefix, projectId);

  /** Every object of the service that is left in its namespace (or anywhere). */
  async function objectsOf(serviceId: string): Promise<string[]> {
    const labelSelector = serviceLabel(serviceId);
    const { apps, core } = cluster.admin;
    return [
      ...(await apps.listDeploymentForAllNamespaces({ labelSelector })).items.map(
        (o) => `deployment ${o.metadata?.name}`,
      ),
      ...(await core.listServiceForAllNamespaces({ labelSelector })).items.map(
        (o) => `service ${o.metadata?.name}`,
      ),
      ...(await core.listSecretForAllNamespaces({ labelSelector })).items.map(
        (o) => `secret ${o.metadata?.name}`,
      ),
      ...(await core.listConfigMapForAllNamespaces({ labelSelector })).items.map(
        (o) => `configmap ${o.metadata?.name}`,
      ),
      ...(await core.listPodForAllNamespaces({ labelSelector })).items.map((o) => `pod ${o.metadata?.name}`),
    ];
  }

  const refusal = (work: Promise<unknown>) =>
    work.then(
      () => {
        throw new Error('expected a refusal');
      },
      (error: unknown) => error as DomainError,
    );

  describe('a pod no node can take', () => {
    const taint = 'atrium.dev/test-unschedulable';
    beforeAll(() => cluster.agent.taint(taint));
    afterAll(() => cluster.agent.untaint(taint));

    it('has an empty log (the API server answers 204), suspends, and fails as unschedulable at the readiness timeout', async () => {
      const suspended = inProject('nowhere');
      await backend.apply(suspended);
      const failing = inProject('nowhere');
      await backend.apply(failing);
      const lines: string[] = [];
      for await (const line of backend.logs(suspended.serviceId, {})) lines.push(line);
      expect(lines).toEqual([]);

      await backend.stop(suspended.serviceId);
      expect((await backend.status(suspended.serviceId))?.phase).toBe('stopped');
      const [deployment] = (
        await cluster.admin.apps.listDeploymentForAllNamespaces({
          labelSelector: serviceLabel(suspended.serviceId),
        })
      ).items;
      expect(deployment?.spec?.replicas).toBe(0);

      const failed = await waitForStatus(backend, failing.serviceId, (s) => s?.phase === 'failed', 120_000);
      expect(failed?.message).toMatch(
        /^unschedulable: no node of the cluster can run it \(0\/1 nodes are available: 1 node\(s\) had taint/,
      );
      // The scheduler's own event (events.k8s.io: eventTime and series, no lastTimestamp) is told too.
      const told = events.filter(
        (e) => e.serviceId === failing.serviceId && e.type === 'kubernetes.FailedScheduling',
      );
      expect(told[0]?.message).toMatch(/0\/1 nodes are available/);
      expect(Number.isFinite(Date.parse(told[0]?.at ?? ''))).toBe(true);
    });
  });

  it('suspends a service whose kubelet cannot be reached (its log a 500), keeping what it can', async () => {
    const spec = inProject('offline-kubelet');
    await backend.apply(spec);
    await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running', 60_000);
    await cluster.agent.kubeletApi(false);
    try {
      const error = await (async () => {
        try {
          for await (const _line of backend.logs(spec.serviceId, {})) void _line;
          return null;
        } catch (e) {
          return e as DomainError;
        }
      })();
      expect(error).toBeInstanceOf(DomainError);
      expect(error?.kind).toBe('unavailable');
      await backend.stop(spec.serviceId);
      expect((await backend.status(spec.serviceId))?.phase).toBe('stopped');
    } finally {
      await cluster.agent.kubeletApi(true);
    }
  });

  it('makes a project namespace deleted outside Atrium again, with its quota, and says so', async () => {
    const quota = { cpuMillis: 1000, memoryBytes: 1024 ** 3, gpu: null, services: 5 };
    const first = { ...inProject('gone-ns'), quota };
    await backend.apply(first);
    await waitForStatus(backend, first.serviceId, (s) => s?.phase === 'running', 60_000);
    const namespace = namespaceOf('gone-ns');
    await cluster.admin.core.deleteNamespace({ name: namespace });
    await eventually(
      'the namespace to be gone',
      async () =>
        cluster.admin.core.readNamespace({ name: namespace }).then(
          () => false,
          () => true,
        ),
      120_000,
    );

    const second = { ...inProject('gone-ns'), quota };
    await backend.apply(second);
    await waitForStatus(backend, second.serviceId, (s) => s?.phase === 'running', 60_000);
    const resourceQuota = await cluster.admin.core.readNamespacedResourceQuota({
      name: 'atrium-quota',
      namespace,
    });
    expect(resourceQuota.spec?.hard).toMatchObject({ 'requests.cpu': '1' });
    expect(events.some((e) => e.serviceId === second.serviceId && e.type === 'namespace-recreated')).toBe(
      true,
    );
  });

  it('refuses a launch the cluster quota has no room for with quota-exceeded, leaving nothing of it', async () => {
    const namespace = namespaceOf('tight');
    const quota = { cpuMillis: 150, memoryBytes: 1024 ** 3, gpu: null, services: 5 };
    const first = { ...inProject('tight'), quota };
    await backend.apply(first);
    await waitForStatus(backend, first.serviceId, (s) => s?.phase === 'running', 60_000);
    const second = { ...inProject('tight'), quota };
    const error = await refusal(backend.apply(second));
    expect(error.kind).toBe('quota-exceeded');
    expect(error.detail).toMatch(/requests\.cpu/);
    expect(await objectsOf(second.serviceId)).toEqual([]);
    expect(await backend.status(second.serviceId)).toBeNull();
    expect(
      (await cluster.admin.core.listNamespacedConfigMap({ namespace })).items.map((c) => c.metadata?.name),
    ).not.toContain(expect.stringContaining(second.serviceId.toLowerCase().replace('_', '-')));
  });

  it('counts in the cluster what Atrium counts: a failed service, parked, leaves room for the next', async () => {
    const quota = { cpuMillis: 1000, memoryBytes: 1024 ** 3, gpu: null, services: 1 };
    const crashed = { ...inProject('one-slot', { mode: 'crash' }), quota };
    await backend.apply(crashed);
    await waitForStatus(backend, crashed.serviceId, (s) => s?.phase === 'failed', 60_000);
    const next = { ...inProject('one-slot'), quota };
    await backend.apply(next);
    await waitForStatus(backend, next.serviceId, (s) => s?.phase === 'running', 60_000);
  });

  it('fails a workload whose image cannot be pulled as image-pull-failed', async () => {
    const spec = inProject('no-image');
    const cluster0 = spec.run.cluster;
    if (!cluster0) throw new Error('no cluster run spec');
    const missing = {
      ...spec,
      run: { local: null, cluster: { ...cluster0, image: 'registry.example.org/missing:1' } },
    };
    await backend.apply(missing);
    const failed = await waitForStatus(backend, missing.serviceId, (s) => s?.phase === 'failed', 60_000);
    expect(failed?.message).toMatch(/^image-pull-failed: /);
  });
});
