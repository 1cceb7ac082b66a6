// The Kubernetes backend of a region: what createRegionBackends (src/services/index.ts) builds for a
// region configured with `backend: {type: kubernetes, …}`.
import type { Logger } from 'pino';
import { KubernetesBackend } from './backend.js';
import { KubernetesBatchBackend } from './batch.js';
import {
  createClients,
  loadKubeConfig,
  type KubernetesSettings,
  type RoleBindingSettings,
} from './settings.js';

export { KubernetesBackend } from './backend.js';
export { KubernetesBatchBackend } from './batch.js';
export { stableReasons } from './describe.js';
export { externallyManaged } from './onboarding.js';
export type { KubernetesSettings, RoleBindingSettings } from './settings.js';

/** A region's `backend` section when its type is `kubernetes` (see src/config.ts). */
export interface KubernetesRegionBackend {
  type: 'kubernetes';
  kubeconfig: string | null;
  context: string | null;
  namespace_prefix: string;
  expose_domain: string | null;
  ingress_class: string | null;
  role_binding: {
    cluster_role: string;
    subjects: { kind: 'User' | 'Group' | 'ServiceAccount'; name: string; namespace: string | null }[];
  } | null;
  work_volume_claim: string | null;
  reconcile_interval_ms: number;
  readiness_timeout_ms: number;
  max_restarts: number;
  stop_grace_seconds: number;
}

export function settingsOf(config: KubernetesRegionBackend, exposeDomain: string | null): KubernetesSettings {
  const roleBinding: RoleBindingSettings | null = config.role_binding
    ? { clusterRole: config.role_binding.cluster_role, subjects: config.role_binding.subjects }
    : null;
  return {
    namespacePrefix: config.namespace_prefix,
    exposeDomain: config.expose_domain ?? exposeDomain,
    ingressClass: config.ingress_class,
    roleBinding,
    workVolumeClaim: config.work_volume_claim,
    reconcileIntervalMs: config.reconcile_interval_ms,
    readinessTimeoutMs: config.readiness_timeout_ms,
    maxRestarts: config.max_restarts,
    stopGraceSeconds: config.stop_grace_seconds,
  };
}

/**
 * The service and batch backends of a Kubernetes region, sharing one set of API clients.
 * `regionExposeDomain`: the region's `expose.domain`, used when the backend names none.
 */
export function createKubernetesBackends(
  config: KubernetesRegionBackend,
  regionExposeDomain: string | null,
  log: Logger,
): { services: KubernetesBackend; batch: KubernetesBatchBackend } {
  const clients = createClients(loadKubeConfig(config.kubeconfig, config.context));
  const settings = settingsOf(config, regionExposeDomain);
  return {
    services: new KubernetesBackend({ clients, settings, log }),
    batch: new KubernetesBatchBackend({ clients, settings, log }),
  };
}
