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
import { z } from 'zod';
import type { BackendCapabilities } from '../types.js';

const label = z.string().regex(/^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/, 'a lower-case RFC 1123 label');

/**
 * A region's `backend:` section of type `kubernetes` (README, "Kubernetes regions"), as written in
 * the configuration, and the backend's settings it becomes: the one description of both.
 */
export const kubernetesConfigSchema = z
  .object({
    type: z.literal('kubernetes'),
    // null: in-cluster when Atrium runs in a pod, else KUBECONFIG or ~/.kube/config.
    kubeconfig: z.string().min(1).nullable().default(null),
    context: z.string().min(1).nullable().default(null),
    namespace_prefix: z
      .string()
      .regex(
        /^[a-z][a-z0-9-]{0,39}$/,
        'lower-case letters, digits and -, starting with a letter (40 at most)',
      )
      .default('atrium-'),
    // Services get an Ingress (host `<port>-<workload>.<domain>`) when set; null: the region's
    // `expose.domain`.
    expose_domain: z.string().min(1).nullable().default(null),
    ingress_class: z.string().min(1).nullable().default(null),
    // How the gateway and service functions reach a service's ports: through the API server's
    // service proxy (Atrium runs outside the cluster), or at the Services' cluster DNS names
    // (`in-cluster`: Atrium runs in a pod of the cluster).
    gateway: z.enum(['apiserver-proxy', 'in-cluster']).default('apiserver-proxy'),
    // Granted in every project namespace; `${project.id}` in a subject's name stands for the project.
    role_binding: z
      .object({
        cluster_role: z.string().min(1),
        subjects: z
          .array(
            z
              .object({
                kind: z.enum(['User', 'Group', 'ServiceAccount']),
                name: z.string().min(1),
                namespace: z.string().min(1).nullable().default(null),
              })
              .strict(),
          )
          .min(1),
      })
      .strict()
      .nullable()
      .default(null),
    // A ReadWriteMany PersistentVolumeClaim in each project namespace, whose sub-paths batch jobs
    // work in.
    work_volume_claim: label.nullable().default(null),
    // How often watched workloads are read again (besides their watches), to notice what vanished.
    reconcile_interval_ms: z.number().int().min(1000).default(30_000),
    // A workload whose container is not ready this long after it started is failed.
    readiness_timeout_ms: z.number().int().min(1000).default(300_000),
    // Restarts of a workload that was ready once before it is failed ("giving up").
    max_restarts: z.number().int().min(0).default(5),
    // The pods' termination grace period.
    stop_grace_seconds: z.number().int().min(0).default(30),
  })
  .strict()
  .transform((c) => ({
    type: c.type,
    kubeconfig: c.kubeconfig,
    context: c.context,
    settings: {
      namespacePrefix: c.namespace_prefix,
      exposeDomain: c.expose_domain,
      ingressClass: c.ingress_class,
      gateway: c.gateway,
      roleBinding: c.role_binding
        ? { clusterRole: c.role_binding.cluster_role, subjects: c.role_binding.subjects }
        : null,
      workVolumeClaim: c.work_volume_claim,
      reconcileIntervalMs: c.reconcile_interval_ms,
      readinessTimeoutMs: c.readiness_timeout_ms,
      maxRestarts: c.max_restarts,
      stopGraceSeconds: c.stop_grace_seconds,
    },
  }));

export type KubernetesConfig = z.output<typeof kubernetesConfigSchema>;
export type KubernetesSettings = KubernetesConfig['settings'];
export type RoleBindingSettings = NonNullable<KubernetesSettings['roleBinding']>;

export const defaultSettings: KubernetesSettings = kubernetesConfigSchema.parse({
  type: 'kubernetes',
}).settings;

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

export const kubernetesCapabilities: BackendCapabilities = {
  runs: 'image',
  logs: { follow: true, previous: true },
  endpoints: 'cluster-service',
};
