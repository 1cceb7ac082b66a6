import type { Knex } from 'knex';
import type { ClusterRunSpec, LocalRunSpec, ServiceFunctionSpec } from '../backends/catalog/manifest.js';
import type { TaskStatus, WorkloadStatus } from '../backends/cluster/types.js';
import { keysetPage, keysetUnionPage, type Page, type PageRequest } from './pagination.js';
import { isPostgres, parseJson, toNumber } from './database.js';

export interface RunSpecs {
  local: LocalRunSpec | null;
  cluster: ClusterRunSpec | null;
}

export type ServiceStatus =
  'pending' | 'starting' | 'running' | 'suspending' | 'suspended' | 'failed' | 'lost' | 'deleting';
export type DesiredState = 'running' | 'suspended' | 'deleted';

/** Tasks and endpoints are stored as the backend reported them. */
export type TaskState = TaskStatus;
export type Endpoint = WorkloadStatus['endpoints'][number];

export interface ServiceResources {
  cpuMillis: number;
  memoryBytes: number;
  gpu: number;
}

/** A service as its list shows it. */
export type ServiceSummary = Omit<ServiceRecord, 'runSpec' | 'sourceDir' | 'functions' | 'external' | 'app'>;

/** Where a service comes from: launched from a catalog, or registered (an external backend). */
export type ServiceOrigin = 'catalog' | 'external';

/** What an external backend was registered with. */
export interface ExternalSpec {
  /** Its ports: a name and the URL Atrium reaches it at (checked against the egress policy). */
  locations: { name: string; url: string }[];
  /** The path its heartbeat pings, on its first location. */
  healthPath: string;
  metadata: Record<string, unknown>;
}

export interface ServiceRecord {
  id: string;
  projectId: string;
  regionId: string;
  name: string;
  catalogId: string;
  packageName: string;
  packageVersion: string;
  ownerUserId: string;
  ownerUsername: string;
  ownerName: string | null;
  shared: boolean;
  options: Record<string, unknown>;
  secretOptions: string[];
  runSpec: RunSpecs;
  sourceDir: string;
  /** The functions of the package version it was launched from. */
  functions: ServiceFunctionSpec[];
  /** The app its package version named, for plugin drivers (null: the package itself). */
  app: { name: string; version: string } | null;
  origin: ServiceOrigin;
  /** What an external backend was registered with; null for launched services. */
  external: ExternalSpec | null;
  resources: ServiceResources;
  status: ServiceStatus;
  desiredState: DesiredState;
  holdsSlot: boolean;
  holdsCompute: boolean;
  message: string | null;
  exitCode: number | null;
  logTail: string[];
  tasks: TaskState[];
  endpoints: Endpoint[];
  backendSeq: number;
  generation: number;
  version: number;
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
}

interface ServiceRow {
  id: string;
  project_id: string;
  region_id: string;
  name: string;
  catalog_id: string;
  package_name: string;
  package_version: string;
  owner_user_id: string;
  owner_username: string;
  owner_name: string | null;
  shared: boolean | number;
  options: string;
  secret_options: string;
  run_spec: string;
  source_dir: string;
  functions: string;
  app_name: string | null;
  app_version: string | null;
  origin: ServiceOrigin;
  external: string | null;
  cpu_millis: number | string;
  memory_bytes: number | string;
  gpu: number | string;
  status: ServiceStatus;
  desired_state: DesiredState;
  holds_slot: boolean | number;
  holds_compute: boolean | number;
  message: string | null;
  exit_code: number | string | null;
  log_tail: string;
  tasks: string;
  endpoints: string;
  backend_seq: number | string;
  generation: number | string;
  version: number | string;
  created_at: string;
  updated_at: string;
  started_at: string | null;
}

function serviceFromRow(row: ServiceRow): ServiceRecord {
  return {
    ...summaryFromRow(row),
    runSpec: parseJson<RunSpecs>(row.run_spec),
    sourceDir: row.source_dir,
    functions: parseJson<ServiceFunctionSpec[]>(row.functions ?? '[]'),
    app:
      row.app_name === null || row.app_version === null
        ? null
        : { name: row.app_name, version: row.app_version },
    external: row.external === null ? null : parseJson<ExternalSpec>(row.external),
  };
}

/** A service row as a list selects it: without its run spec and source directory. */
function summaryFromRow(
  row: Omit<ServiceRow, 'run_spec' | 'source_dir' | 'functions' | 'external' | 'app_name' | 'app_version'>,
): ServiceSummary {
  return {
    id: row.id,
    projectId: row.project_id,
    regionId: row.region_id,
    name: row.name,
    catalogId: row.catalog_id,
    packageName: row.package_name,
    packageVersion: row.package_version,
    origin: row.origin,
    ownerUserId: row.owner_user_id,
    ownerUsername: row.owner_username,
    ownerName: row.owner_name,
    shared: Boolean(row.shared),
    options: parseJson<Record<string, unknown>>(row.options),
    secretOptions: parseJson<string[]>(row.secret_options),
    resources: {
      cpuMillis: toNumber(row.cpu_millis),
      memoryBytes: toNumber(row.memory_bytes),
      gpu: toNumber(row.gpu),
    },
    status: row.status,
    desiredState: row.desired_state,
    holdsSlot: Boolean(row.holds_slot),
    holdsCompute: Boolean(row.holds_compute),
    message: row.message,
    exitCode: row.exit_code === null ? null : toNumber(row.exit_code),
    logTail: parseJson<string[]>(row.log_tail),
    tasks: parseJson<TaskState[]>(row.tasks),
    endpoints: parseJson<Endpoint[]>(row.endpoints),
    backendSeq: toNumber(row.backend_seq),
    generation: toNumber(row.generation),
    version: toNumber(row.version),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    startedAt: row.started_at,
  };
}

function servicesQuery(db: Knex) {
  return db('services as s')
    .join('users as u', 'u.id', 's.owner_user_id')
    .select('s.*', 'u.username as owner_username', 'u.name as owner_name');
}

/** What a page of services shows: every column but the run spec (the largest) and source directory. */
const summaryColumns = [
  'id',
  'project_id',
  'region_id',
  'name',
  'catalog_id',
  'package_name',
  'package_version',
  'origin',
  'owner_user_id',
  'shared',
  'options',
  'secret_options',
  'cpu_millis',
  'memory_bytes',
  'gpu',
  'status',
  'desired_state',
  'holds_slot',
  'holds_compute',
  'message',
  'exit_code',
  'log_tail',
  'tasks',
  'endpoints',
  'backend_seq',
  'generation',
  'version',
  'created_at',
  'updated_at',
  'started_at',
] as const;
const summaryJsonColumns = new Set<string>(['options', 'secret_options', 'log_tail', 'tasks', 'endpoints']);

type SummaryColumns = Parameters<typeof summaryFromRow>[0];
/**
 * A row of a page of services: its columns, or (SQLite) the same columns as one JSON object, with
 * the sort key beside it for the cursor.
 */
type SummaryRow = SummaryColumns | { summary: string; created_at: string; id: string };

// node-sqlite3 makes a JavaScript object of a row property by property, at a cost per column that
// a page's thirty-odd columns multiply: SQLite writes them as one JSON text per row instead, which
// one JSON.parse decodes (the JSON columns nested as values, not strings to parse again): a page's
// query costs about a quarter less CPU so (README, "Performance"). On PostgreSQL the columns are
// as cheap to read as the JSON would be (measured), so they stay columns.
const summaryObject = `json_object(${[
  ...summaryColumns.map(
    (column) => `'${column}', ${summaryJsonColumns.has(column) ? `json(s.${column})` : `s.${column}`}`,
  ),
  "'owner_username', u.username",
  "'owner_name', u.name",
].join(', ')})`;

function summariesQuery(db: Knex) {
  const query = db('services as s').join('users as u', 'u.id', 's.owner_user_id');
  return isPostgres(db)
    ? query.select(
        ...summaryColumns.map((column) => `s.${column}`),
        'u.username as owner_username',
        'u.name as owner_name',
      )
    : query.select(db.raw(`${summaryObject} as summary`), 's.created_at', 's.id');
}

const summaryOf = (row: SummaryRow): ServiceSummary =>
  summaryFromRow('summary' in row ? (JSON.parse(row.summary) as SummaryColumns) : row);

export type NewService = Omit<
  ServiceRecord,
  'ownerUsername' | 'ownerName' | 'version' | 'backendSeq' | 'generation' | 'app'
> &
  Partial<Pick<ServiceRecord, 'app'>>;

export async function insertService(trx: Knex.Transaction, s: NewService): Promise<void> {
  await trx('services').insert({
    id: s.id,
    project_id: s.projectId,
    region_id: s.regionId,
    name: s.name,
    catalog_id: s.catalogId,
    package_name: s.packageName,
    package_version: s.packageVersion,
    owner_user_id: s.ownerUserId,
    shared: s.shared,
    options: JSON.stringify(s.options),
    secret_options: JSON.stringify(s.secretOptions),
    run_spec: JSON.stringify(s.runSpec),
    source_dir: s.sourceDir,
    functions: JSON.stringify(s.functions),
    app_name: s.app?.name ?? null,
    app_version: s.app?.version ?? null,
    origin: s.origin,
    external: s.external === null ? null : JSON.stringify(s.external),
    cpu_millis: s.resources.cpuMillis,
    memory_bytes: s.resources.memoryBytes,
    gpu: s.resources.gpu,
    status: s.status,
    desired_state: s.desiredState,
    holds_slot: s.holdsSlot,
    holds_compute: s.holdsCompute,
    message: s.message,
    exit_code: s.exitCode,
    log_tail: JSON.stringify(s.logTail),
    tasks: JSON.stringify(s.tasks),
    endpoints: JSON.stringify(s.endpoints),
    created_at: s.createdAt,
    updated_at: s.updatedAt,
    started_at: s.startedAt,
  });
}

export async function findService(db: Knex, id: string): Promise<ServiceRecord | null> {
  const row = await servicesQuery(db).where('s.id', id).first();
  return row ? serviceFromRow(row as ServiceRow) : null;
}

/** Locks the service row until the transaction ends (PostgreSQL; SQLite transactions are serial). */
export async function lockService(trx: Knex.Transaction, id: string): Promise<void> {
  if (isPostgres(trx)) await trx('services').where({ id }).forUpdate().first('id');
}

export interface ServiceFilter {
  /** Only services this user may see (theirs and shared ones); all of them when null. */
  visibleTo: string | null;
  statuses?: ServiceStatus[] | undefined;
  packageName?: string | undefined;
}

export async function listProjectServices(
  db: Knex,
  projectId: string,
  filter: ServiceFilter,
  page: PageRequest,
): Promise<Page<ServiceSummary>> {
  const filtered = () => {
    const query = summariesQuery(db).where('s.project_id', projectId);
    if (filter.statuses?.length) query.whereIn('s.status', filter.statuses);
    if (filter.packageName) query.where('s.package_name', filter.packageName);
    return query;
  };
  const options = {
    list: `services:${JSON.stringify([projectId, filter.visibleTo, filter.statuses ?? [], filter.packageName ?? null])}`,
    keys: ['s.created_at', 's.id'],
    direction: 'desc' as const,
    keyOf: (row: SummaryRow) => [row.created_at, row.id],
    map: summaryOf,
  };
  if (filter.visibleTo === null) return keysetPage<SummaryRow, ServiceSummary>(filtered(), page, options);
  // Theirs, and the shared ones: two index range scans merged, not an OR filtered after one scan.
  return keysetUnionPage<SummaryRow, ServiceSummary>(
    db,
    [filtered().where('s.owner_user_id', filter.visibleTo), filtered().where('s.shared', true)],
    page,
    { ...options, idOf: (row) => row.id },
  );
}

/** The services a bulk delete takes: those matching the filter that the user may change. */
export async function findServicesToDelete(
  db: Knex,
  projectId: string,
  filter: ServiceFilter,
  max: number,
): Promise<ServiceRecord[]> {
  const query = servicesQuery(db).where('s.project_id', projectId).whereNot('s.desired_state', 'deleted');
  if (filter.visibleTo !== null) query.where('s.owner_user_id', filter.visibleTo);
  if (filter.statuses?.length) query.whereIn('s.status', filter.statuses);
  if (filter.packageName) query.where('s.package_name', filter.packageName);
  return ((await query.orderBy('s.created_at').limit(max)) as ServiceRow[]).map(serviceFromRow);
}

/** Every service of a region that is not gone for good: what a backend must account for at start. */
export async function listRegionServices(db: Knex, regionId: string): Promise<ServiceRecord[]> {
  return (
    (await servicesQuery(db)
      .where({ 's.region_id': regionId, 's.origin': 'catalog' })
      .orderBy('s.created_at')) as ServiceRow[]
  ).map(serviceFromRow);
}

export interface ServiceChanges {
  name?: string;
  shared?: boolean;
  status?: ServiceStatus;
  desiredState?: DesiredState;
  holdsSlot?: boolean;
  holdsCompute?: boolean;
  message?: string | null;
  exitCode?: number | null;
  logTail?: string[];
  tasks?: TaskState[];
  endpoints?: Endpoint[];
  startedAt?: string | null;
  backendSeq?: number;
  generation?: number;
}

const columns: Record<keyof ServiceChanges, string> = {
  name: 'name',
  shared: 'shared',
  status: 'status',
  desiredState: 'desired_state',
  holdsSlot: 'holds_slot',
  holdsCompute: 'holds_compute',
  message: 'message',
  exitCode: 'exit_code',
  logTail: 'log_tail',
  tasks: 'tasks',
  endpoints: 'endpoints',
  startedAt: 'started_at',
  backendSeq: 'backend_seq',
  generation: 'generation',
};
const jsonColumns = new Set<keyof ServiceChanges>(['logTail', 'tasks', 'endpoints']);

/** Applies changes and bumps the version; with expectedVersion, only if it still matches. */
export async function updateService(
  db: Knex,
  id: string,
  changes: ServiceChanges,
  at: string,
  expectedVersion: number | null = null,
): Promise<boolean> {
  const update: Record<string, unknown> = { updated_at: at, version: db.raw('version + 1') };
  for (const [key, value] of Object.entries(changes) as [keyof ServiceChanges, unknown][]) {
    if (value === undefined) continue;
    update[columns[key]] = jsonColumns.has(key) ? JSON.stringify(value) : value;
  }
  const query = db('services').where({ id });
  if (expectedVersion !== null) query.where({ version: expectedVersion });
  return (await query.update(update)) > 0;
}

export async function deleteServiceRow(db: Knex, id: string): Promise<void> {
  await db('services').where({ id }).delete();
}
