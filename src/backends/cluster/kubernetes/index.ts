// Kubernetes as a kind of region backend (see ../registry.ts): services are Deployments in a
// namespace per project, batch work runs as Jobs; one set of API clients per region serves both.
import type { BackendKind } from '../registry.js';
import { KubernetesBackend } from './backend.js';
import { KubernetesBatchBackend } from './batch.js';
import { createClients, kubernetesCapabilities, kubernetesConfigSchema, loadKubeConfig } from './settings.js';

export { KubernetesBackend } from './backend.js';
export { KubernetesBatchBackend } from './batch.js';
export { stableReasons } from './describe.js';
export { externallyManaged } from './onboarding.js';
export type { KubernetesConfig, KubernetesSettings, RoleBindingSettings } from './settings.js';

export const kubernetesKind: BackendKind<typeof kubernetesConfigSchema> = {
  configSchema: kubernetesConfigSchema,
  capabilities: kubernetesCapabilities,
  create(config, { exposeDomain, log }) {
    const clients = createClients(loadKubeConfig(config.kubeconfig, config.context));
    // The region's expose domain serves when the backend names none.
    const settings = { ...config.settings, exposeDomain: config.settings.exposeDomain ?? exposeDomain };
    return {
      services: new KubernetesBackend({ clients, settings, log }),
      batch: new KubernetesBatchBackend({ clients, settings, log }),
    };
  },
};
