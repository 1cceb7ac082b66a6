// What a Kubernetes region is configured with, and the API clients made from its kubeconfig.
import {
  AppsV1Api,
  BatchV1Api,
  CoreV1Api,
  KubeConfig,
  Log,
  NetworkingV1Api,
  RbacAuthorizationV1Api,
  Watch,
} from '@kubernetes/client-node';

export interface RoleBindingSettings {
  /** The ClusterRole granted in each project namespace (for example `edit`). */
  clusterRole: string;
  /** Who gets it; `${project.id}` in a name stands for the project. */
  subjects: { kind: 'User' | 'Group' | 'ServiceAccount'; name: string; namespace: string | null }[];
}

export interface KubernetesSettings {
  namespacePrefix: string;
  /** Services get an Ingress (host `<port>-<workload>.<domain>`) when set. */
  exposeDomain: string | null;
  ingressClass: string | null;
  roleBinding: RoleBindingSettings | null;
  /** The ReadWriteMany claim, in every project namespace, whose sub-paths batch jobs work in. */
  workVolumeClaim: string | null;
  /** How often watched workloads are read again (besides their watches), to notice what vanished. */
  reconcileIntervalMs: number;
  /** A workload whose container is not ready this long after it started is failed. */
  readinessTimeoutMs: number;
  /** Restarts of a workload that was ready once before it is failed ("giving up"). */
  maxRestarts: number;
  /** The pods' termination grace period. */
  stopGraceSeconds: number;
}

export const defaultSettings: KubernetesSettings = {
  namespacePrefix: 'atrium-',
  exposeDomain: null,
  ingressClass: null,
  roleBinding: null,
  workVolumeClaim: null,
  reconcileIntervalMs: 30_000,
  readinessTimeoutMs: 300_000,
  maxRestarts: 5,
  stopGraceSeconds: 30,
};

/**
 * The kubeconfig of a region: a file, or (null) the in-cluster service account when Atrium runs in
 * a pod, else the default loading rules (KUBECONFIG, ~/.kube/config).
 */
export function loadKubeConfig(kubeconfig: string | null, context: string | null): KubeConfig {
  const config = new KubeConfig();
  if (kubeconfig !== null) config.loadFromFile(kubeconfig);
  else config.loadFromDefault();
  if (context !== null) config.setCurrentContext(context);
  if (!config.getCurrentCluster()) {
    throw new Error(
      `no Kubernetes cluster in ${kubeconfig ?? 'the default kubeconfig'}${context ? ` (context ${context})` : ''}`,
    );
  }
  return config;
}

export interface KubernetesClients {
  config: KubeConfig;
  core: CoreV1Api;
  apps: AppsV1Api;
  batch: BatchV1Api;
  networking: NetworkingV1Api;
  rbac: RbacAuthorizationV1Api;
  watch: Watch;
  log: Log;
}

export function createClients(config: KubeConfig): KubernetesClients {
  return {
    config,
    core: config.makeApiClient(CoreV1Api),
    apps: config.makeApiClient(AppsV1Api),
    batch: config.makeApiClient(BatchV1Api),
    networking: config.makeApiClient(NetworkingV1Api),
    rbac: config.makeApiClient(RbacAuthorizationV1Api),
    watch: new Watch(config),
    log: new Log(config),
  };
}
