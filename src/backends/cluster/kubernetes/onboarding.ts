// A namespace per project, made on first use, with a ResourceQuota mirroring the project's quota
// (unless its admins manage that quota themselves) and, when the region says so, a RoleBinding.
import type { V1Namespace, V1ResourceQuota, V1RoleBinding } from '@kubernetes/client-node';
import { DomainError } from '../../../errors.js';
import type { WorkloadSpec } from '../types.js';
import { isAlreadyExists, orNull, retryOnConflict } from './errors.js';
import { annotationKeys, namespaceName, quotaName, roleBindingName } from './naming.js';
import { renderNamespace, renderQuota, renderRoleBinding } from './render.js';
import type { KubernetesClients, KubernetesSettings } from './settings.js';

export type ProjectQuota = NonNullable<WorkloadSpec['quota']>;

/** The value of the quota annotation that leaves a ResourceQuota to the cluster's admins. */
export const externallyManaged = 'external';

function sameEntries(a: Record<string, string> | undefined, b: Record<string, string>): boolean {
  const left = Object.entries(a ?? {}).sort();
  const right = Object.entries(b).sort();
  return JSON.stringify(left) === JSON.stringify(right);
}

export class Onboarding {
  /** Namespaces known to exist (with their RoleBinding), and the quota last mirrored into each. */
  private readonly ready = new Set<string>();
  private readonly mirrored = new Map<string, string>();

  constructor(
    private readonly clients: KubernetesClients,
    private readonly settings: KubernetesSettings,
  ) {}

  namespaceOf(projectId: string): string {
    return namespaceName(this.settings.namespacePrefix, projectId);
  }

  /** Makes the project's namespace ready for workloads; returns its name. */
  async ensure(projectId: string, quota: ProjectQuota | null): Promise<string> {
    const namespace = this.namespaceOf(projectId);
    if (!this.ready.has(namespace)) {
      await this.ensureNamespace(namespace, projectId);
      if (this.settings.roleBinding) await this.ensureRoleBinding(namespace, projectId);
      this.ready.add(namespace);
    }
    if (quota) {
      const key = JSON.stringify(quota);
      if (this.mirrored.get(namespace) !== key) {
        await this.mirrorQuota(namespace, projectId, quota);
        this.mirrored.set(namespace, key);
      }
    }
    return namespace;
  }

  /** Forgets what it knows (after the cluster changed behind its back). */
  forget(namespace: string): void {
    this.ready.delete(namespace);
    this.mirrored.delete(namespace);
  }

  private async ensureNamespace(namespace: string, projectId: string): Promise<void> {
    const { core } = this.clients;
    const existing = await orNull(core.readNamespace({ name: namespace }));
    if (existing) {
      checkOwner(existing, projectId);
      if (existing.status?.phase === 'Terminating') {
        throw new DomainError(
          'unavailable',
          `namespace ${namespace} is being deleted; try again in a moment`,
        );
      }
      return;
    }
    try {
      await core.createNamespace({ body: renderNamespace(namespace, projectId) });
    } catch (error) {
      // Another Atrium process made it meanwhile.
      if (!isAlreadyExists(error)) throw error;
    }
  }

  /** Creates, updates or (when the project has no limits) removes Atrium's quota; never an admin's. */
  async mirrorQuota(namespace: string, projectId: string, quota: ProjectQuota): Promise<void> {
    const { core } = this.clients;
    const desired = renderQuota(namespace, projectId, quota);
    const hard = desired.spec?.hard ?? {};
    await retryOnConflict(`resource quota ${namespace}/${quotaName}`, async () => {
      const existing = await orNull(core.readNamespacedResourceQuota({ name: quotaName, namespace }));
      if (existing?.metadata?.annotations?.[annotationKeys.quotaManagedBy] === externallyManaged) return;
      if (!existing) {
        if (Object.keys(hard).length === 0) return;
        // Made meanwhile (by another Atrium process, or an admin): a 409, and decided again.
        await core.createNamespacedResourceQuota({ namespace, body: desired });
        return;
      }
      if (Object.keys(hard).length === 0) {
        await core.deleteNamespacedResourceQuota({ name: quotaName, namespace });
        return;
      }
      if (sameEntries(existing.spec?.hard, hard)) return;
      const updated: V1ResourceQuota = {
        ...existing,
        metadata: {
          ...existing.metadata,
          labels: { ...existing.metadata?.labels, ...desired.metadata?.labels },
          annotations: { ...existing.metadata?.annotations, ...desired.metadata?.annotations },
        },
        spec: { ...existing.spec, hard },
      };
      await core.replaceNamespacedResourceQuota({ name: quotaName, namespace, body: updated });
    });
  }

  private async ensureRoleBinding(namespace: string, projectId: string): Promise<void> {
    const binding = this.settings.roleBinding;
    if (!binding) return;
    const { rbac } = this.clients;
    const desired = renderRoleBinding(namespace, projectId, binding);
    await retryOnConflict(`role binding ${namespace}/${roleBindingName}`, async () => {
      const existing = await orNull(rbac.readNamespacedRoleBinding({ name: roleBindingName, namespace }));
      if (!existing) {
        await rbac.createNamespacedRoleBinding({ namespace, body: desired });
        return;
      }
      if (JSON.stringify(existing.subjects ?? []) === JSON.stringify(desired.subjects)) return;
      if (existing.roleRef.name !== desired.roleRef.name) {
        // The role of a binding cannot change: it is made again.
        await rbac.deleteNamespacedRoleBinding({ name: roleBindingName, namespace });
        await rbac.createNamespacedRoleBinding({ namespace, body: desired });
        return;
      }
      const updated: V1RoleBinding = { ...existing, subjects: desired.subjects ?? [] };
      await rbac.replaceNamespacedRoleBinding({ name: roleBindingName, namespace, body: updated });
    });
  }
}

/** A namespace of that name that says it belongs to another project is not taken over. */
function checkOwner(namespace: V1Namespace, projectId: string): void {
  const owner = namespace.metadata?.annotations?.[annotationKeys.projectId];
  if (owner !== undefined && owner !== projectId) {
    throw new DomainError(
      'conflict',
      `namespace ${namespace.metadata?.name} belongs to another project; choose another namespace prefix`,
    );
  }
}
