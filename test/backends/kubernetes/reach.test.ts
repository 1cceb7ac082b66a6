// How the Kubernetes backend says a service's port is reached (ClusterBackend.reach): through the
// API server's service proxy with the kubeconfig's credentials (Atrium outside the cluster), or at
// the Service's cluster DNS name (`gateway: in-cluster`). Against the fake API server.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { KubernetesBackend } from '../../../src/backends/cluster/kubernetes/backend.js';
import { namespaceName, portServiceName } from '../../../src/backends/cluster/kubernetes/naming.js';
import { proxyRefusal } from '../../../src/backends/cluster/kubernetes/reach.js';
import { createClients, loadKubeConfig } from '../../../src/backends/cluster/kubernetes/settings.js';
import { createLogger } from '../../../src/log.js';
import { probeSpec, waitForStatus } from '../../conformance/cluster-backend.js';
import { FakeKube } from '../../fixtures/fake-kube/index.js';

describe('KubernetesBackend.reach', () => {
  let fake: FakeKube;
  const backends: KubernetesBackend[] = [];
  const backendWith = (gateway: 'apiserver-proxy' | 'in-cluster') => {
    const backend = new KubernetesBackend({
      clients: createClients(loadKubeConfig(fake.kubeconfigPath, null)),
      settings: { namespacePrefix: 'atrium-', gateway, reconcileIntervalMs: 200 },
      log: createLogger('silent'),
    });
    backends.push(backend);
    return backend;
  };

  beforeAll(async () => {
    fake = await FakeKube.start();
  });
  afterAll(async () => {
    for (const backend of backends) await backend.close();
    await fake.close();
  });

  it('reaches a port through the API server’s service proxy, with the kubeconfig’s token', async () => {
    const reach = await backendWith('apiserver-proxy').reach({
      serviceId: 'svc_Reach0000000000000001',
      projectId: 'lab',
      port: 'http',
      endpointUrl: 'http://ignored.example:8080',
    });
    const name = portServiceName('svc_Reach0000000000000001', 'http');
    expect(reach.url).toBe(
      `${fake.url}/api/v1/namespaces/${namespaceName('atrium-', 'lab')}/services/${name}:http/proxy`,
    );
    expect(reach.headers.authorization).toMatch(/^Bearer fake-/);
    expect(reach.targetHost).toBe(true);
    expect(reach.agent).toBeDefined();
    expect(reach.dispatcher).toBeDefined();
  });

  it('reaches a port at its Service’s cluster DNS name when Atrium runs in the cluster', async () => {
    const backend = backendWith('in-cluster');
    const spec = probeSpec();
    await backend.apply(spec);
    await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
    const reach = await backend.reach({
      serviceId: spec.serviceId,
      projectId: spec.projectId,
      port: 'http',
      endpointUrl: '',
    });
    const namespace = namespaceName('atrium-', spec.projectId);
    const port = spec.run.cluster?.ports.find((p) => p.name === 'http')?.container_port;
    expect(reach).toEqual({
      url: `http://${portServiceName(spec.serviceId, 'http')}.${namespace}.svc:${port}`,
      headers: {},
      targetHost: false,
    });
    await backend.delete(spec.serviceId);
  });

  it('tells the API server’s own refusals (a Status) from the service’s answers, and keeps their words', () => {
    const status = (code: number) => ({
      kind: 'Status',
      apiVersion: 'v1',
      status: 'Failure',
      message: 'services "x" is forbidden: User "system:serviceaccount:atrium:atrium" cannot get…',
      code,
    });
    expect(proxyRefusal(503, status(503))).toMatchObject({
      kind: 'unavailable',
      headers: { 'Retry-After': '2' },
    });
    expect(proxyRefusal(403, status(403))).toMatchObject({ kind: 'bad-gateway' });
    expect(proxyRefusal(403, status(403))?.detail).not.toContain('serviceaccount');
    expect(proxyRefusal(404, status(404))).toMatchObject({ kind: 'bad-gateway' });
    expect(proxyRefusal(502, status(502))).toMatchObject({ kind: 'bad-gateway' });
    expect(proxyRefusal(503, { error: 'the service’s own' })).toBeNull();
    expect(proxyRefusal(404, null)).toBeNull();
  });
});
