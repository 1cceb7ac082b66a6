// The cluster backend conformance suite, run by the Kubernetes backend against the fake API server
// (test/fixtures/fake-kube), whose kubelet runs the probe package as real local processes.
import { KubernetesBackend } from '../../src/backends/cluster/kubernetes/backend.js';
import { createClients, loadKubeConfig } from '../../src/backends/cluster/kubernetes/settings.js';
import { createLogger } from '../../src/log.js';
import { FakeKube } from '../fixtures/fake-kube/index.js';
import { describeClusterBackend, type BackendHarness } from './cluster-backend.js';

const serviceLabel = (serviceId: string) => `atrium.dev/service=${serviceId}`;

async function fakeHarness(): Promise<BackendHarness> {
  const fake = await FakeKube.start();
  const settings = {
    namespacePrefix: 'atrium-',
    reconcileIntervalMs: 200,
    readinessTimeoutMs: 3000,
    maxRestarts: 2,
    stopGraceSeconds: 1,
  };
  const clients = () => createClients(loadKubeConfig(fake.kubeconfigPath, null));
  const admin = clients();
  return {
    create: () => new KubernetesBackend({ clients: clients(), settings, log: createLogger('silent') }),
    // Services are reachable inside the cluster only.
    reachable: false,
    async sabotage(serviceId) {
      const [deployment] = fake.objects('deployments', undefined, serviceLabel(serviceId));
      if (!deployment) throw new Error(`no deployment for ${serviceId}`);
      await admin.apps.deleteNamespacedDeployment({
        name: deployment.metadata.name,
        namespace: deployment.metadata.namespace ?? '',
        propagationPolicy: 'Background',
      });
    },
    async isGone(serviceId) {
      return fake.pods(serviceLabel(serviceId)).length === 0;
    },
    cleanup: () => fake.close(),
  };
}

describeClusterBackend('kubernetes (fake API server)', fakeHarness);
