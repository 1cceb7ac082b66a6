// The gateway and calls conformance suite (the one the local runtime and the fake API server pass)
// against a real kube-apiserver: Atrium, outside the cluster, reaches the echo service through the
// API server's service proxy (HTTP, SSE, WebSocket upgrades), as a ServiceAccount holding exactly
// the README's ClusterRole (so `services/proxy` is proven enough), and the node agent runs the pods.
import { jest } from '@jest/globals';
import { describeGateway } from '../conformance/gateway.js';
import { testEngines } from '../fixtures/databases.js';
import { readmeIdentity, realCluster } from './cluster.js';

jest.setTimeout(180_000);

describeGateway('kubernetes (real API server, node agent)', testEngines(), async () => {
  const cluster = await realCluster();
  const identity = await readmeIdentity(cluster, 'edit');
  return {
    config: {
      regions: [
        {
          id: 'cluster',
          name: 'Test cluster',
          backend: {
            type: 'kubernetes',
            kubeconfig: identity.kubeconfig,
            namespace_prefix: cluster.prefix,
            readiness_timeout_ms: 15_000,
            reconcile_interval_ms: 1000,
            stop_grace_seconds: 2,
          },
        },
      ],
    },
    waitSeconds: 60,
    async cleanup() {
      await identity.remove();
      await cluster.close();
    },
  };
});
