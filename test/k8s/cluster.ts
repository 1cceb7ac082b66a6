// The real cluster of `make test-k8s` (scripts/test-k8s.sh starts ../shared/k8s's control plane, or
// uses the cluster of ATRIUM_TEST_KUBECONFIG), with a node agent of the test's own that runs its
// pods, and the helpers the real-cluster tests share.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig, type V1ClusterRole } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { KubernetesBackend } from '../../src/backends/cluster/kubernetes/backend.js';
import {
  createClients,
  loadKubeConfig,
  type KubernetesClients,
  type KubernetesSettings,
} from '../../src/backends/cluster/kubernetes/settings.js';
import { createLogger } from '../../src/log.js';
import { repoRoot } from '../../src/paths.js';
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

/**
 * A kubeconfig of a ServiceAccount that holds exactly the ClusterRole the README gives Atrium
 * (its "Pointing a region at a cluster" block), so that tests prove those permissions suffice.
 * `bindable` replaces the ClusterRole the `bind` rule names. Removed by the returned function.
 */
export async function readmeIdentity(
  cluster: RealCluster,
  bindable: string,
): Promise<{ kubeconfig: string; remove: () => Promise<void> }> {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const block = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)]
    .map((m) => m[1] ?? '')
    .find((text) => /^kind: ClusterRole$/m.test(text));
  if (!block) throw new Error('README.md has no ClusterRole block');
  const role = parseYaml(block) as V1ClusterRole;
  const name = `${cluster.prefix}atrium`;
  const namespace = `${cluster.prefix}identity`;
  role.metadata = { name };
  for (const rule of role.rules ?? []) {
    if (rule.verbs.includes('bind')) rule.resourceNames = [bindable];
  }
  await cluster.admin.core.createNamespace({ body: { metadata: { name: namespace } } });
  await cluster.admin.core.createNamespacedServiceAccount({
    namespace,
    body: { metadata: { name: 'atrium' } },
  });
  await cluster.admin.rbac.createClusterRole({ body: role });
  await cluster.admin.rbac.createClusterRoleBinding({
    body: {
      metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
      subjects: [{ kind: 'ServiceAccount', name: 'atrium', namespace }],
    },
  });
  // The controller-manager's token controller gives the account its token Secret.
  const token = await eventually('the service account token', async () => {
    const secrets = await cluster.admin.core.listNamespacedSecret({ namespace });
    const secret = secrets.items.find(
      (s) =>
        s.type === 'kubernetes.io/service-account-token' &&
        s.metadata?.annotations?.['kubernetes.io/service-account.name'] === 'atrium',
    );
    const data = secret?.data?.token;
    return data ? Buffer.from(data, 'base64').toString('utf8') : null;
  });
  const admin = new KubeConfig();
  admin.loadFromFile(cluster.kubeconfig);
  const server = admin.getCurrentCluster();
  if (!server) throw new Error(`${cluster.kubeconfig} names no cluster`);
  const dir = mkdtempSync(join(tmpdir(), 'atrium-k8s-identity-'));
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        {
          name: 'cluster',
          cluster: {
            server: server.server,
            ...(server.caData ? { 'certificate-authority-data': server.caData } : {}),
            ...(server.caFile ? { 'certificate-authority': server.caFile } : {}),
            ...(server.skipTLSVerify ? { 'insecure-skip-tls-verify': true } : {}),
          },
        },
      ],
      users: [{ name: 'atrium', user: { token } }],
      contexts: [{ name: 'atrium', context: { cluster: 'cluster', user: 'atrium' } }],
      'current-context': 'atrium',
    }),
    { mode: 0o600 },
  );
  return {
    kubeconfig,
    async remove() {
      await cluster.admin.rbac.deleteClusterRoleBinding({ name }).catch(() => undefined);
      await cluster.admin.rbac.deleteClusterRole({ name }).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
