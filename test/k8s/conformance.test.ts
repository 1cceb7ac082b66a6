// The cluster backend conformance suite (the one the local runtime and the fake API server pass)
// against a real kube-apiserver, controller-manager and scheduler, whose pods the test's node agent
// runs as local processes.
import { jest } from '@jest/globals';
import { describeClusterBackend, type BackendHarness } from '../conformance/cluster-backend.js';
import { realCluster } from './cluster.js';

jest.setTimeout(120_000);

const serviceLabel = (serviceId: string) => `atrium.dev/service=${serviceId}`;

async function realHarness(): Promise<BackendHarness> {
  const cluster = await realCluster();
  return {
    create: () => cluster.backend(),
    reachable: false,
    async sabotage(serviceId) {
      const list = await cluster.admin.apps.listDeploymentForAllNamespaces({
        labelSelector: serviceLabel(serviceId),
      });
      for (const deployment of list.items) {
        await cluster.admin.apps.deleteNamespacedDeployment({
          name: deployment.metadata?.name ?? '',
          namespace: deployment.metadata?.namespace ?? '',
          propagationPolicy: 'Background',
        });
      }
    },
    async isGone(serviceId) {
      const pods = await cluster.admin.core.listPodForAllNamespaces({
        labelSelector: serviceLabel(serviceId),
      });
      return pods.items.length === 0;
    },
    cleanup: () => cluster.close(),
  };
}

describeClusterBackend('kubernetes (real API server, node agent)', realHarness);
