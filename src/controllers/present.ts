// Domain objects → API representations (components/schemas of the spec). The only place that knows
// both shapes; controllers call these and nothing else to build bodies.
import type { FileRecord } from '../services/files.js';
import {
  functionTimeoutMs,
  type ModuleFunction,
  type ModuleSourceStatus,
  type ApiToken,
  type User,
  type ProjectView,
  type ProjectMember,
  type Quota,
  type Catalog,
  type PackageDetail,
  type PackageSummary,
  type StoredPackageVersion,
  type AuditEvent,
  type OperationRecord,
  type ServiceSummary,
  type Page,
} from '../services/model.js';
import type { LoadedModuleView } from '../services/modules.js';
import type { PipelineRecord } from '../services/pipelines.js';
import type { JobView, RunView } from '../services/runs.js';
import type { components } from '../../generated/openapi.js';
import type { DryRun } from '../services/services.js';
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
  // Manifests stored before functions existed have none.
  functions: spec.functions ?? [],
  // Nor, before apps, an app: then the package is its app.
  app: spec.app ?? { name: spec.name, version: spec.version },
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

/** Where users reach an endpoint of a service (the gateway's URL where it reaches the service). */
export type EndpointUrl = (s: ServiceSummary, e: ServiceSummary['endpoints'][number]) => string;

export const presentService = (s: ServiceSummary, urlOf: EndpointUrl): Schemas['Service'] => ({
  id: s.id,
  project_id: s.projectId,
  region_id: s.regionId,
  name: s.name,
  catalog_id: s.catalogId,
  origin: s.origin,
  package: s.packageName,
  version: s.packageVersion,
  status: s.status,
  desired_state: s.desiredState,
  shared: s.shared,
  owner: { id: s.ownerUserId, username: s.ownerUsername, name: s.ownerName },
  resources: {
    cpu: formatCpu(s.resources.cpuMillis),
    memory: formatBytes(s.resources.memoryBytes),
    gpu: s.resources.gpu,
  },
  // Secrets are never returned: only their names.
  options: Object.fromEntries(Object.entries(s.options).filter(([name]) => !s.secretOptions.includes(name))),
  secret_options: s.secretOptions,
  tasks: s.tasks.map((t) => ({
    id: t.id,
    status: t.status,
    ready: t.ready,
    restarts: t.restarts,
    containers: t.containers.map((c) => ({
      name: c.name,
      ready: c.ready,
      state: c.state,
      reason: c.reason,
      exit_code: c.exitCode,
      started_at: c.startedAt,
    })),
  })),
  endpoints: s.endpoints.map((e) => ({ port: e.port, protocol: e.protocol, url: urlOf(s, e) })),
  message: s.message,
  exit_code: s.exitCode,
  log_tail: s.logTail,
  created_at: s.createdAt,
  updated_at: s.updatedAt,
  started_at: s.startedAt,
});

export const presentOperation = (op: OperationRecord): Schemas['Operation'] => ({
  id: op.id,
  kind: op.kind,
  project_id: op.projectId,
  target: op.target,
  status: op.status,
  done: op.status !== 'running',
  progress: op.progress,
  message: op.message,
  error: op.error as Schemas['Problem'] | null,
  result: op.result,
  created_by: op.userId,
  created_at: op.createdAt,
  updated_at: op.updatedAt,
  finished_at: op.finishedAt,
});

export const presentDryRun = (d: DryRun): Schemas['ServiceDryRun'] => ({
  service: {
    name: d.service.name,
    catalog_id: d.service.catalogId,
    package: d.service.packageName,
    version: d.service.version,
    options: d.service.options,
    secret_options: d.service.secretOptions,
    resources: d.service.resources,
    shared: d.service.shared,
    region_id: d.service.regionId,
  },
  run: d.run,
  quota: {
    delta: {
      cpu: formatCpu(d.quota.delta.cpuMillis),
      memory: formatBytes(d.quota.delta.memoryBytes),
      gpu: d.quota.delta.gpu,
      services: d.quota.delta.services,
    },
    usage: presentAmounts(d.quota.usage),
    limits: presentAmounts(d.quota.limits),
    admissible: d.quota.exceeded.length === 0,
    exceeded: d.quota.exceeded,
  },
});

export const presentFile = (file: FileRecord): Schemas['File'] => ({
  id: file.id,
  project_id: file.projectId,
  name: file.name,
  size: file.size,
  sha256: file.sha256,
  media_type: file.mediaType,
  tags: file.tags,
  kind: file.kind,
  parent_id: file.parentId,
  run_id: file.runId,
  job_id: file.jobId,
  created_by: file.createdBy,
  created_at: file.createdAt,
  updated_at: file.updatedAt,
});

export const presentModuleFunction = (moduleName: string, fn: ModuleFunction): Schemas['ModuleFunction'] => ({
  module: moduleName,
  name: fn.name,
  title: fn.title,
  description: fn.description,
  options_schema: fn.options,
  inputs: { media_types: fn.inputs.media_types, min: fn.inputs.min, max: fn.inputs.max },
  output: fn.output,
  resources: { cpu: fn.resources.cpu, memory: fn.resources.memory, gpu: fn.resources.gpu },
  timeout_seconds: Math.max(1, Math.round(functionTimeoutMs(fn) / 1000)),
  runs_on: [...(fn.run.local ? (['local'] as const) : []), ...(fn.run.cluster ? (['cluster'] as const) : [])],
});

export const presentModule = ({ stored, manifest }: LoadedModuleView): Schemas['Module'] => ({
  name: manifest.name,
  version: manifest.version,
  title: manifest.title,
  description: manifest.description,
  keywords: manifest.keywords,
  source_id: stored.sourceId,
  digest: stored.digest,
  loaded_at: stored.loadedAt,
  functions: manifest.functions.map((fn) => presentModuleFunction(manifest.name, fn)),
});

export const presentModuleSource = (source: ModuleSourceStatus): Schemas['ModuleSource'] => ({
  id: source.id,
  status: source.status,
  module_count: source.moduleCount,
  issues: source.issues,
  refreshed_at: source.refreshedAt,
});

export const presentPipeline = (p: PipelineRecord): Schemas['Pipeline'] => ({
  id: p.id,
  project_id: p.projectId,
  name: p.name,
  description: p.description,
  enabled: p.enabled,
  tasks: p.tasks,
  created_by: p.createdBy,
  created_at: p.createdAt,
  updated_at: p.updatedAt,
});

const presentJob = (view: JobView): Schemas['Job'] => ({
  id: view.job.id,
  run_id: view.job.runId ?? '',
  task_index: view.job.taskIndex ?? 0,
  module: '',
  function: '',
  options: {},
  status: view.job.status,
  attempts: view.job.attempts,
  max_attempts: view.job.maxAttempts,
  input_file_ids: view.inputFileIds,
  output_file_ids: view.outputFileIds,
  error: view.job.error,
  history: view.history.map((h) => ({
    status: h.status as Schemas['JobStatus'],
    at: h.at,
    message: h.message,
  })),
  created_at: view.job.createdAt,
  started_at: view.job.startedAt,
  finished_at: view.job.finishedAt,
});

export const presentRun = ({ run, inputFileIds, jobs }: RunView): Schemas['Run'] => ({
  id: run.id,
  project_id: run.projectId,
  pipeline_id: run.pipelineId,
  name: run.name,
  status: run.status,
  tasks: run.tasks,
  input_file_ids: inputFileIds,
  jobs: jobs.map((view) => {
    const task = run.tasks[view.job.taskIndex ?? 0];
    return {
      ...presentJob(view),
      module: task?.module ?? '',
      function: task?.function ?? '',
      options: task?.options ?? {},
    };
  }),
  operation_id: run.operationId,
  created_by: run.createdBy,
  created_at: run.createdAt,
  updated_at: run.updatedAt,
  finished_at: run.finishedAt,
});
