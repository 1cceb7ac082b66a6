// Domain objects → API representations (components/schemas of the spec). The only place that knows
// both shapes; controllers call these and nothing else to build bodies.
import type { components } from '../../generated/openapi.js';
import type { ApiToken } from '../db/tokens.js';
import type { User } from '../db/users.js';
import type { ProjectMember, ProjectView, Quota } from '../db/projects.js';
import type { Catalog, PackageDetail, PackageSummary, StoredPackageVersion } from '../db/catalogs.js';
import type { AuditEvent } from '../db/audit.js';
import type { Page } from '../db/pagination.js';
import type { RegionConfig } from '../config.js';
import { formatBytes, formatCpu } from '../quantities.js';

type Schemas = components['schemas'];

export function page<T, R>(
  result: Page<T>,
  present: (item: T) => R,
): { items: R[]; next_cursor: string | null } {
  return { items: result.items.map(present), next_cursor: result.nextCursor };
}

export const presentUser = (user: User): Schemas['User'] => ({
  id: user.id,
  username: user.username,
  name: user.name,
  email: user.email,
  groups: user.groups,
  admin: user.admin,
  created_at: user.createdAt,
  last_seen_at: user.lastSeenAt,
});

export const presentToken = (token: ApiToken): Schemas['Token'] => ({
  id: token.id,
  name: token.name,
  prefix: token.prefix,
  scopes: token.scopes,
  created_at: token.createdAt,
  expires_at: token.expiresAt,
  last_used_at: token.lastUsedAt,
  revoked_at: token.revokedAt,
});

export const presentProject = (project: ProjectView): Schemas['Project'] => ({
  id: project.id,
  name: project.name,
  description: project.description,
  kind: project.kind,
  region_id: project.regionId,
  role: project.role,
  created_at: project.createdAt,
  updated_at: project.updatedAt,
});

export const presentMember = (member: ProjectMember): Schemas['ProjectMember'] => ({
  user: { id: member.userId, username: member.username, name: member.name },
  role: member.role,
  added_at: member.addedAt,
});

type Amounts = {
  cpuMillis: number | null;
  memoryBytes: number | null;
  gpu: number | null;
  services: number | null;
  concurrentJobs: number | null;
  storageBytes: number | null;
};

const presentAmounts = (a: Amounts): Schemas['QuotaValues'] => ({
  cpu: a.cpuMillis === null ? null : formatCpu(a.cpuMillis),
  memory: a.memoryBytes === null ? null : formatBytes(a.memoryBytes),
  gpu: a.gpu,
  services: a.services,
  concurrent_jobs: a.concurrentJobs,
  storage: a.storageBytes === null ? null : formatBytes(a.storageBytes),
});

export const presentQuota = (quota: Quota): Schemas['Quota'] => ({
  project_id: quota.projectId,
  limits: presentAmounts(quota.limits),
  usage: presentAmounts(quota.usage),
  updated_at: quota.updatedAt,
});

export const presentRegion = (region: RegionConfig): Schemas['Region'] => ({
  id: region.id,
  name: region.name,
  description: region.description,
  location: region.location,
  backend: { type: region.backend.type },
  quotas: { default: region.quotas.default },
  expose: region.expose,
});

export const presentCatalog = (catalog: Catalog): Schemas['Catalog'] => ({
  id: catalog.id,
  name: catalog.name,
  description: catalog.description,
  maintainer: catalog.maintainer,
  status: catalog.status,
  package_count: catalog.packageCount,
  refreshed_at: catalog.refreshedAt,
  issues: catalog.issues,
});

export const presentPackageSummary = (p: PackageSummary): Schemas['PackageSummary'] => ({
  catalog_id: p.catalogId,
  name: p.name,
  title: p.title,
  description: p.description,
  icon: p.icon,
  keywords: p.keywords,
  latest_version: p.latestVersion,
});

export const presentPackage = (p: PackageDetail): Schemas['Package'] => ({
  ...presentPackageSummary(p),
  home: p.home,
  versions: p.versions,
});

export const presentPackageVersion = ({
  catalogId,
  spec,
}: StoredPackageVersion): Schemas['PackageVersion'] => ({
  catalog_id: catalogId,
  package_name: spec.name,
  version: spec.version,
  title: spec.title,
  description: spec.description,
  icon: spec.icon,
  keywords: spec.keywords,
  options_schema: spec.options_schema,
  defaults: spec.defaults,
  resources: spec.resources,
  run: spec.run,
});

export const presentAuditEvent = (e: AuditEvent): Schemas['AuditEvent'] => ({
  id: e.id,
  at: e.at,
  request_id: e.requestId,
  user_id: e.userId,
  operation_id: e.operationId,
  method: e.method,
  path: e.path,
  status: e.status,
  project_id: e.projectId,
  ip: e.ip,
});
