// The cluster backend conformance suite against a real Kubernetes cluster (kind, minikube, k3s…),
// run by `make test-k8s`. Skipped unless ATRIUM_TEST_KUBECONFIG names a kubeconfig: a KUBECONFIG
// set for other reasons never sends the default `make test` to a cluster.
//
// It makes namespaces `atrium-t<random>-…` (deleted at the end), pulls node:20-alpine, and checks
// that a launch over a project's quota is refused with quota-exceeded.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { KubernetesBackend } from '../../src/backends/cluster/kubernetes/backend.js';
import {
  createClients,
  loadKubeConfig,
  type KubernetesClients,
} from '../../src/backends/cluster/kubernetes/settings.js';
import { DomainError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { describeClusterBackend, probeSpec, waitForStatus, type BackendHarness } from './cluster-backend.js';

const kubeconfig = process.env.ATRIUM_TEST_KUBECONFIG ?? '';
const context = process.env.ATRIUM_TEST_KUBE_CONTEXT ?? null;

const describeWithCluster = kubeconfig ? describe : describe.skip;
const prefix = `atrium-t${randomBytes(3).toString('hex')}-`;
const settings = {
  namespacePrefix: prefix,
  reconcileIntervalMs: 2000,
  readinessTimeoutMs: 10_000,
  // A real kubelet backs off 10 s, then 20 s… before restarting: one restart fits in a test.
  maxRestarts: 1,
  stopGraceSeconds: 2,
};
const log = createLogger('warn');
const serviceLabel = (serviceId: string) => `atrium.dev/service=${serviceId}`;

if (kubeconfig) jest.setTimeout(180_000);

function clients(): KubernetesClients {
  return createClients(loadKubeConfig(kubeconfig, context));
}

async function removeNamespaces(admin: KubernetesClients): Promise<void> {
  for (const namespace of (await admin.core.listNamespace()).items) {
    const name = namespace.metadata?.name ?? '';
    if (name.startsWith(prefix)) await admin.core.deleteNamespace({ name }).catch(() => undefined);
  }
}

async function realHarness(): Promise<BackendHarness> {
  const admin = clients();
  // The image is pulled once, before the suite's timings start.
  const warmUp = new KubernetesBackend({ clients: clients(), settings, log });
  const spec = probeSpec();
  await warmUp.apply(spec);
  await waitForStatus(warmUp, spec.serviceId, (s) => s?.phase === 'running', 170_000);
  await warmUp.delete(spec.serviceId);
  await warmUp.close();
  return {
    create: () => new KubernetesBackend({ clients: clients(), settings, log }),
    reachable: false,
    async sabotage(serviceId) {
      const list = await admin.apps.listDeploymentForAllNamespaces({
        labelSelector: serviceLabel(serviceId),
      });
      for (const deployment of list.items) {
        await admin.apps.deleteNamespacedDeployment({
          name: deployment.metadata?.name ?? '',
          namespace: deployment.metadata?.namespace ?? '',
          propagationPolicy: 'Background',
        });
      }
    },
    async isGone(serviceId) {
      const pods = await admin.core.listPodForAllNamespaces({ labelSelector: serviceLabel(serviceId) });
      return pods.items.length === 0;
    },
    cleanup: () => removeNamespaces(admin),
  };
}

if (kubeconfig) describeClusterBackend('kubernetes (real cluster)', realHarness);

describeWithCluster('kubernetes (real cluster): onboarding and quotas', () => {
  const admin = kubeconfig ? clients() : null;
  let backend: KubernetesBackend;
  const quota = { cpuMillis: 150, memoryBytes: 512 * 1024 * 1024, gpu: null, services: 2 };

  beforeAll(() => {
    backend = new KubernetesBackend({ clients: clients(), settings, log });
  });
  afterAll(async () => {
    await backend.close();
    if (admin) await removeNamespaces(admin);
  });

  it('creates the project namespace and its quota, and runs a workload within it', async () => {
    const spec = { ...probeSpec(), projectId: 'quota-check', quota };
    await backend.apply(spec);
    const namespace = `${prefix}quota-check`;
    const ns = await admin?.core.readNamespace({ name: namespace });
    expect(ns?.metadata?.labels).toMatchObject({ 'atrium.dev/project': 'quota-check' });
    const resourceQuota = await admin?.core.readNamespacedResourceQuota({ name: 'atrium-quota', namespace });
    expect(resourceQuota?.spec?.hard).toMatchObject({
      'requests.cpu': '150m',
      'count/deployments.apps': '2',
    });
    await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running', 120_000);
  });

  it('refuses a launch over the quota with quota-exceeded, creating nothing', async () => {
    const spec = { ...probeSpec(), projectId: 'quota-check', quota };
    const refusal = await backend.apply(spec).then(
      () => null,
      (error: unknown) => error,
    );
    expect(refusal).toBeInstanceOf(DomainError);
    expect((refusal as DomainError).kind).toBe('quota-exceeded');
    expect((refusal as DomainError).detail).toMatch(/requests\.cpu/);
    expect(await backend.status(spec.serviceId)).toBeNull();
  });
});
