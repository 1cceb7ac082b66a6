import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Database } from '../db/database.js';
import { DirectoryCatalogSource } from '../backends/catalog/directory-source.js';
import { createRegionBackend } from '../backends/cluster/registry.js';
import { noopHandler } from '../backends/scheduler/noop.js';
import { Scheduler } from '../backends/scheduler/scheduler.js';
import type { BatchBackend, ClusterBackend } from '../backends/cluster/types.js';
import { Authenticator } from './authenticator.js';
import { OidcVerifier } from '../auth/oidc.js';
import { ContentStore } from '../backends/files/store.js';
import { AuditService } from './audit.js';
import { ExternalBackendService } from './backends.js';
import { EgressGuard } from '../backends/egress.js';
import { FileService } from './files.js';
import { ModuleService } from './modules.js';
import { PipelineService } from './pipelines.js';
import { RunService } from './runs.js';
import { RunTasks, runTaskKind } from './run-tasks.js';
import { BenchmarkService } from './benchmarks.js';
import { BenchmarkJobs, benchmarkRunKind } from './benchmark-jobs.js';
import { loadBenchmarkDefinitions, type BenchmarkDefinitions } from '../backends/benchmark/builtin.js';
import { CatalogService } from './catalogs.js';
import { DriverService } from './drivers.js';
import { FunctionService, serviceCallKind } from './functions.js';
import { GatewayService } from './gateway.js';
import { IdempotencyService } from './idempotency.js';
import { Notifier } from '../notifier.js';
import { OperationService } from './operations.js';
import type { OperationRecord } from '../db/operations.js';
import type { Principal } from './principal.js';
import { PlatformService, type BuildInfo } from './platform.js';
import { ProjectService } from './projects.js';
import { QuotaService } from './quotas.js';
import { RegionService } from './regions.js';
import { ServiceReconciler } from './service-reconciler.js';
import { ServiceManager } from './services.js';
import { CredentialCache, TokenService } from './tokens.js';
import { UserService } from './users.js';

export interface Services {
  audit: AuditService;
  /** External backends: services Atrium did not launch, registered by URL. */
  backends: ExternalBackendService;
  benchmarks: BenchmarkService;
  authenticator: Authenticator;
  catalogs: CatalogService;
  /** Native drivers and registered plugins, and the plugins' health checks. */
  drivers: DriverService;
  files: FileService;
  /** The functions services offer, and their calls (sync, or queued as jobs). */
  functions: FunctionService;
  /** Who may reach which port of a service through the gateway, and where it is. */
  gateway: GatewayService;
  idempotency: IdempotencyService;
  modules: ModuleService;
  pipelines: PipelineService;
  runs: RunService;
  notifier: Notifier;
  operations: OperationService;
  platform: PlatformService;
  projects: ProjectService;
  quotas: QuotaService;
  regions: RegionService;
  /** Converges services towards their desired state on their region's backend. */
  serviceReconciler: ServiceReconciler;
  /** Launching services and everything users do with them. */
  serviceManager: ServiceManager;
  /** The durable job queue (its workers run in the API process or in `atrium worker`). */
  scheduler: Scheduler;
  tokens: TokenService;
  users: UserService;
}

export interface ServiceDeps {
  config: Config;
  database: Database;
  clock: Clock;
  log: Logger;
  build: BuildInfo;
}

/** Wires every service to its dependencies; the one place that knows the whole graph. */
export function createServices({ config, database, clock, log, build }: ServiceDeps): Services {
  const db = database.knex;
  const regional = createRegionBackends(config, log);
  const regions = new RegionService(config.regions);
  const projects = new ProjectService({ db, clock, regions, readRoleTtlMs: config.cache.readRolesMs });
  const credentials = new CredentialCache(config.cache.credentialsMs);
  const users = new UserService({
    db,
    clock,
    projects,
    adminGroups: config.auth.oidc?.adminGroups ?? [],
    onUserChanged: () => credentials.clear(),
  });
  const tokens = new TokenService({ db, clock, cache: credentials });
  const oidc = config.auth.oidc ? new OidcVerifier(config.auth.oidc) : null;
  const catalogs = new CatalogService({
    db,
    engine: database.engine,
    clock,
    log,
    catalogs: config.catalogs,
    openSource: (catalog) => new DirectoryCatalogSource(catalog.path),
    pageCacheTtlMs: config.cache.catalogPagesMs,
  });
  const notifier = new Notifier();
  const operations = new OperationService({ db, clock, notifier });
  const { maxAttempts, leaseMs, backoffMs, maxBackoffMs } = config.scheduler;
  const scheduler = new Scheduler({
    db,
    clock,
    log,
    notifier,
    options: { maxAttempts, leaseMs, backoffMs, maxBackoffMs },
  });
  scheduler.register('noop', noopHandler);
  const serviceReconciler = new ServiceReconciler({
    db,
    clock,
    log,
    backends: regional.services,
    operations,
    notifier,
  });
  const files = new FileService({
    db,
    clock,
    projects,
    store: new ContentStore(join(config.dataDir, 'files')),
    maxUploadBytes: config.files.maxUploadBytes,
  });
  const modules = new ModuleService({ db, clock, log, sources: config.modules });
  const pipelines = new PipelineService({ db, clock, projects, modules });
  const runs = new RunService({
    db,
    clock,
    dataDir: config.dataDir,
    projects,
    pipelines,
    modules,
    files,
    operations,
    scheduler,
    notifier,
    batches: regional.batches,
  });
  const runTasks = new RunTasks({
    db,
    dataDir: config.dataDir,
    modules,
    files,
    operations,
    notifier,
    batches: regional.batches,
  });
  scheduler.register(runTaskKind, runTasks.handler());
  operations.cancelWith('run-pipeline', async (principal, op) => {
    if (op.projectId && op.target) await runs.cancel(principal, op.projectId, op.target.id);
  });
  let definitions: BenchmarkDefinitions | null = null;
  const benchmarks = new BenchmarkService({
    db,
    clock,
    // Read on first use: the built-in QPIs and plans are validated files of the repository.
    definitions: () => (definitions ??= loadBenchmarkDefinitions()),
    projects,
    operations,
    scheduler,
    batches: regional.batches,
    clusterImage: config.benchmarks.clusterImage,
  });
  const benchmarkJobs = new BenchmarkJobs({
    db,
    clock,
    log,
    dataDir: config.dataDir,
    operations,
    batches: regional.batches,
    clusterImage: config.benchmarks.clusterImage,
  });
  scheduler.register(benchmarkRunKind, benchmarkJobs.handler());
  operations.cancelWith('run-benchmark', async (principal, op) => {
    if (op.projectId && op.target) await benchmarks.cancelRun(principal, op.projectId, op.target.id);
  });
  const serviceManager = new ServiceManager({
    db,
    clock,
    log,
    projects,
    catalogs,
    operations,
    reconciler: serviceReconciler,
    notifier,
  });
  // An operation is seen by whoever may see what it acts on (besides its starter and admins).
  operations.seeWith('service', async (principal, op) =>
    Boolean(op.projectId && op.target && (await serviceManager.get(principal, op.projectId, op.target.id))),
  );
  const projectMembers = async (principal: Principal, op: OperationRecord) =>
    Boolean(op.projectId && (await projects.access(principal, op.projectId, 'viewer')));
  operations.seeWith('project', projectMembers);
  operations.seeWith('run', projectMembers);
  operations.seeWith('benchmark-run', projectMembers);
  const authenticator = new Authenticator({ tokens, users, oidc });
  // Where Atrium may connect on users' behalf (external backends' URLs).
  const egress = new EgressGuard(config.functions.externalBackends);
  const gateway = new GatewayService({
    db,
    authenticator,
    serviceManager,
    reconciler: serviceReconciler,
    egress,
    domains: new Map(config.regions.flatMap((r) => (r.gateway ? [[r.id, r.gateway.domain] as const] : []))),
  });
  const drivers = new DriverService({ db, clock, log, settings: config.functions });
  const functions = new FunctionService({
    db,
    clock,
    log,
    notifier,
    scheduler,
    serviceManager,
    gateway,
    drivers,
    fileContent: (projectId, fileId, maxBytes) => files.content(projectId, fileId, maxBytes),
    settings: config.functions,
  });
  scheduler.register(serviceCallKind, functions.handler());
  return {
    audit: new AuditService({ db, clock, log }),
    backends: new ExternalBackendService({ db, clock, projects, notifier, egress, probeTimeoutMs: 3000 }),
    benchmarks,
    authenticator,
    catalogs,
    drivers,
    files,
    functions,
    gateway,
    idempotency: new IdempotencyService({ db, clock }),
    modules,
    pipelines,
    runs,
    notifier,
    operations,
    platform: new PlatformService({ config, build }),
    projects,
    quotas: new QuotaService({ db, clock, projects }),
    regions,
    serviceReconciler,
    serviceManager,
    scheduler,
    tokens,
    users,
  };
}

/** The backends of each region, from the configuration (the kinds: backends/cluster/registry.ts). */
export function createRegionBackends(
  config: Config,
  log: Logger,
): { services: Map<string, ClusterBackend>; batches: Map<string, BatchBackend> } {
  const services = new Map<string, ClusterBackend>();
  const batches = new Map<string, BatchBackend>();
  for (const region of config.regions) {
    const backends = createRegionBackend(region.backend, {
      regionId: region.id,
      exposeDomain: region.expose?.domain ?? null,
      dataDir: config.dataDir,
      localRuntime: config.localRuntime,
      log,
    });
    services.set(region.id, backends.services);
    batches.set(region.id, backends.batch);
  }
  return { services, batches };
}
