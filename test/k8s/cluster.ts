// The real cluster of `make test-k8s` (scripts/test-k8s.sh starts ../shared/k8s's control plane, or
// uses the cluster of ATRIUM_TEST_KUBECONFIG), with a node agent of the test's own that runs its
// pods, and the helpers the real-cluster tests share.
import { randomBytes } from 'node:crypto';
import { KubernetesBackend } from '../../src/backends/cluster/kubernetes/backend.js';
import {
  createClients,
  loadKubeConfig,
  type KubernetesClients,
  type KubernetesSettings,
} from '../../src/backends/cluster/kubernetes/settings.js';
import { createLogger } from '../../src/log.js';
import { NodeAgent, type NodeAgentOptions } from '../fixtures/node-agent/index.js';
import { KubeRest } from '../fixtures/node-agent/rest.js';

export function kubeconfigPath(): string {
  const path = process.env.ATRIUM_TEST_KUBECONFIG;
  if (!path) {
    throw new Error(
      'ATRIUM_TEST_KUBECONFIG is not set: run these tests with `make test-k8s`, which starts a cluster (../shared/k8s) or uses the one of KUBECONFIG',
    );
  }
  return path;
}

/** A namespace prefix of this test file's own, so that files never see each other's objects. */
export const testPrefix = () => `atrium-t${randomBytes(3).toString('hex')}-`;

export interface RealCluster {
  kubeconfig: string;
  agent: NodeAgent;
  rest: KubeRest;
  admin: KubernetesClients;
  prefix: string;
  clients(): KubernetesClients;
  backend(settings?: Partial<KubernetesSettings>): KubernetesBackend;
  /** Removes every namespace of the prefix, and stops the node agent. */
  close(): Promise<void>;
}

export const realSettings = (prefix: string): Partial<KubernetesSettings> => ({
  namespacePrefix: prefix,
  reconcileIntervalMs: 500,
  readinessTimeoutMs: 15_000,
  maxRestarts: 1,
  stopGraceSeconds: 2,
});

export async function realCluster(options: Partial<NodeAgentOptions> = {}): Promise<RealCluster> {
  const kubeconfig = kubeconfigPath();
  const prefix = testPrefix();
  const agent = await NodeAgent.start({ kubeconfig, ...options });
  const rest = await KubeRest.fromKubeconfig(kubeconfig);
  const clients = () => createClients(loadKubeConfig(kubeconfig, null));
  const admin = clients();
  const backends: KubernetesBackend[] = [];
  return {
    kubeconfig,
    agent,
    rest,
    admin,
    prefix,
    clients,
    backend(settings = {}) {
      const backend = new KubernetesBackend({
        clients: clients(),
        settings: { ...realSettings(prefix), ...settings },
        log: createLogger(process.env.ATRIUM_TEST_K8S_LOG ?? 'silent'),
      });
      backends.push(backend);
      return backend;
    },
    async close() {
      for (const backend of backends) await backend.close().catch(() => undefined);
      await removeNamespaces(admin, prefix);
      await agent.close();
      rest.close();
    },
  };
}

export async function removeNamespaces(admin: KubernetesClients, prefix: string): Promise<void> {
  for (const namespace of (await admin.core.listNamespace()).items) {
    const name = namespace.metadata?.name ?? '';
    if (name.startsWith(prefix)) await admin.core.deleteNamespace({ name }).catch(() => undefined);
  }
}

/** Waits (polling, bounded) until `check` returns something truthy; returns it. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T>,
  timeoutMs = 60_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (let i = 0; i < 100_000 && Date.now() < deadline; i++) {
    last = await check();
    if (last) return last as NonNullable<T>;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} did not happen in ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}
