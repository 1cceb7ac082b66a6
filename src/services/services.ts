// Services: launching catalog packages into projects, and everything users do with them. The rules
// live here (who may see and change what, options validation, quota admission); the reconciler
// (service-reconciler.ts) makes the backends do it.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { conflict, DomainError, forbidden, notFound, unprocessable } from '../errors.js';
import { appendEvent, listEvents, purgeOrphanServiceEvents } from '../db/events.js';
import type { Page, PageRequest } from '../db/pagination.js';
import { adjustQuotaUsage, findQuota, type UsageDelta } from '../db/quotas.js';
import * as q from '../db/services.js';
import type { ServiceRecord, ServiceStatus, ServiceSummary } from '../db/services.js';
import type { OperationRecord } from '../db/operations.js';
import type { StoredPackageVersion } from '../db/catalogs.js';
import type { LogOptions, RenderedWorkload, WorkloadSpec } from '../backends/cluster/types.js';
import { newId } from '../ids.js';
import { parseBytes, parseCpu } from '../quantities.js';
import type { CatalogService } from './catalogs.js';
import { checkIfMatch, etagFor } from './etag.js';
import { followEvents, type EventFeed } from './event-feed.js';
import { topics, type Notifier } from '../notifier.js';
import type { OperationService } from './operations.js';
import type { Principal } from './principal.js';
import type { ProjectService } from './projects.js';
import { OptionsValidator, secretOptionsOf } from './package-options.js';
import { deleteServices, markDeleted } from './service-deletion.js';
import { exceededResources, quotaExceeded } from './service-quota.js';
import { workloadSpecOf, type ServiceReconciler } from './service-reconciler.js';

export function serviceEtag(service: { version: number; updatedAt: string }): string {
  return etagFor(service.version, service.updatedAt);
}

export interface LaunchRequest {
  catalogId: string;
  packageName: string;
  version?: string | undefined;
  name?: string | undefined;
  options?: Record<string, unknown> | undefined;
  shared?: boolean | undefined;
}

export interface DryRun {
  service: {
    name: string;
    catalogId: string;
    packageName: string;
    version: string;
    options: Record<string, unknown>;
    secretOptions: string[];
    resources: { cpu: string; memory: string; gpu: number };
    shared: boolean;
    regionId: string;
  };
  run: RenderedWorkload;
  quota: {
    delta: UsageDelta;
    usage: NonNullable<Awaited<ReturnType<typeof findQuota>>>['usage'];
    limits: NonNullable<Awaited<ReturnType<typeof findQuota>>>['limits'];
    exceeded: string[];
  };
}

export interface ServiceManagerDeps {
  db: Knex;
  clock: Clock;
  log: Logger;
  projects: ProjectService;
  catalogs: CatalogService;
  operations: OperationService;
  reconciler: ServiceReconciler;
  notifier: Notifier;
}

/** How long the events of a deleted service stay, for the followers of its event stream. */
const deletedEventsKeptMs = 60 * 60_000;

export class ServiceManager {
  private readonly validator = new OptionsValidator();

  constructor(private readonly deps: ServiceManagerDeps) {}

  /** A service the principal may see (read) or change (write); 404 for one they cannot see. */
  private async access(
    principal: Principal,
    projectId: string,
    serviceId: string,
    mode: 'read' | 'write',
  ): Promise<{ service: ServiceRecord }> {
    // Reads may decide on a role cached for a moment; writes read it afresh.
    const role =
      mode === 'read'
        ? await this.deps.projects.readable(principal, projectId)
        : (await this.deps.projects.access(principal, projectId, 'viewer')).role;
    const service = await q.findService(this.deps.db, serviceId);
    const admin = principal.user.admin;
    const mine = service?.ownerUserId === principal.user.id;
    if (
      !service ||
      service.projectId !== projectId ||
      !(admin || role === 'owner' || mine || service.shared)
    ) {
      throw notFound('service', serviceId);
    }
    if (mode === 'write' && !(admin || role === 'owner' || (mine && role !== 'viewer'))) {
      throw forbidden('only the service owner, the project owners and administrators may change a service');
    }
    return { service };
  }

  private backendFor(regionId: string) {
    const backend = this.deps.reconciler.backendOf(regionId);
    if (!backend)
      throw new DomainError('unavailable', `region ${regionId} has no backend that can run services yet`);
    return backend;
  }

  async launch(
    principal: Principal,
    projectId: string,
    request: LaunchRequest,
    { dryRun }: { dryRun: boolean },
  ): Promise<{ dryRun: DryRun } | { operation: OperationRecord }> {
    const { db, clock, catalogs, operations, reconciler } = this.deps;
    const project = await this.deps.projects.access(principal, projectId, 'member');
    let version: StoredPackageVersion;
    try {
      version = await catalogs.getPackageVersion(
        request.catalogId,
        request.packageName,
        request.version ?? 'latest',
      );
    } catch (error) {
      if (!(error instanceof DomainError && error.kind === 'not-found')) throw error;
      // Not there yet, or not at all: right after a start, catalogs may still be loading.
      if (!catalogs.isLoaded()) {
        throw new DomainError(
          'unavailable',
          'the catalogs are still loading; try again in a moment',
          {},
          { 'Retry-After': '2' },
        );
      }
      throw unprocessable(error.detail);
    }
    const options = this.validator.validate(version, request.options ?? {});
    const secretOptions = secretOptionsOf(version, options);
    const resources = {
      cpuMillis: parseCpu(version.spec.resources.cpu),
      memoryBytes: parseBytes(version.spec.resources.memory),
      gpu: version.spec.resources.gpu,
    };
    const serviceId = newId('svc');
    const name = request.name ?? version.spec.name;
    const spec: WorkloadSpec = {
      serviceId,
      generation: 1,
      serviceName: name,
      projectId,
      package: {
        catalogId: version.catalogId,
        name: version.spec.name,
        version: version.spec.version,
        sourceDir: version.sourceDir,
      },
      run: version.spec.run,
      options,
      secretOptions,
      resources,
    };
    const rendered = this.backendFor(project.regionId).render(spec);
    const delta: UsageDelta = { services: 1, ...resources };

    if (dryRun) {
      const quota = await findQuota(db, projectId);
      if (!quota) throw notFound('project', projectId);
      const exceeded = exceededResources(quota, delta);
      return {
        dryRun: {
          service: {
            name,
            catalogId: version.catalogId,
            packageName: version.spec.name,
            version: version.spec.version,
            options: this.publicOptions(options, secretOptions),
            secretOptions,
            resources: version.spec.resources,
            shared: request.shared ?? false,
            regionId: project.regionId,
          },
          run: rendered,
          quota: {
            delta,
            usage: quota.usage,
            limits: quota.limits,
            exceeded,
          },
        },
      };
    }

    const now = iso(clock());
    const operation = await db.transaction(async (trx) => {
      if (!(await adjustQuotaUsage(trx, projectId, delta, now)))
        throw await quotaExceeded(trx, projectId, delta);
      await q.insertService(trx, {
        id: serviceId,
        projectId,
        regionId: project.regionId,
        name,
        catalogId: version.catalogId,
        packageName: version.spec.name,
        packageVersion: version.spec.version,
        ownerUserId: principal.user.id,
        shared: request.shared ?? false,
        options,
        secretOptions,
        runSpec: version.spec.run,
        sourceDir: version.sourceDir,
        functions: version.spec.functions ?? [],
        // Versions stored before manifests named their app have none: then the package is the app.
        app: version.spec.app ?? null,
        origin: 'catalog',
        external: null,
        resources,
        status: 'pending',
        desiredState: 'running',
        holdsSlot: true,
        holdsCompute: true,
        message: null,
        exitCode: null,
        logTail: [],
        tasks: [],
        endpoints: [],
        createdAt: now,
        updatedAt: now,
        startedAt: null,
      });
      await appendEvent(trx, 'service', serviceId, {
        at: now,
        type: 'admitted',
        message: `admitted by the quota of ${projectId}: ${version.spec.resources.cpu} cpu, ${version.spec.resources.memory} memory`,
        data: { status: 'pending' },
      });
      return operations.create(trx, {
        kind: 'launch-service',
        projectId,
        target: { type: 'service', id: serviceId },
        userId: principal.user.id,
        message: `launching ${version.spec.name} ${version.spec.version} as ${name}`,
      });
    });
    reconciler.converge(serviceId);
    return { operation };
  }

  /** The options as shown: secret values left out. */
  publicOptions(options: Record<string, unknown>, secretOptions: string[]): Record<string, unknown> {
    return Object.fromEntries(Object.entries(options).filter(([name]) => !secretOptions.includes(name)));
  }

  async list(
    principal: Principal,
    projectId: string,
    filter: { statuses?: ServiceStatus[] | undefined; packageName?: string | undefined },
    page: PageRequest,
  ): Promise<Page<ServiceSummary>> {
    const role = await this.deps.projects.readable(principal, projectId);
    const seesAll = principal.user.admin || role === 'owner';
    return q.listProjectServices(
      this.deps.db,
      projectId,
      { ...filter, visibleTo: seesAll ? null : principal.user.id },
      page,
    );
  }

  async get(principal: Principal, projectId: string, serviceId: string): Promise<ServiceRecord> {
    return (await this.access(principal, projectId, serviceId, 'read')).service;
  }

  /** 403 unless the principal may change the service (404 if they may not see it). */
  async checkWrite(principal: Principal, projectId: string, serviceId: string): Promise<void> {
    await this.access(principal, projectId, serviceId, 'write');
  }

  /** Renames and shares at once; suspending and resuming are operations. */
  async update(
    principal: Principal,
    projectId: string,
    serviceId: string,
    changes: { name?: string | undefined; shared?: boolean | undefined; suspended?: boolean | undefined },
    ifMatch: string | undefined,
  ): Promise<{ service: ServiceRecord } | { operation: OperationRecord }> {
    const { db, clock, operations, reconciler, notifier } = this.deps;
    await this.access(principal, projectId, serviceId, 'write');
    const now = iso(clock());
    // Decided on the service as it is under the row lock: its status moves on its own (the
    // backend reports), so only If-Match (when given) may refuse a change for that.
    const operation = await db.transaction(async (trx) => {
      await q.lockService(trx, serviceId);
      const service = await q.findService(trx, serviceId);
      if (!service) throw notFound('service', serviceId);
      checkIfMatch(ifMatch, serviceEtag(service), `service ${serviceId}`);
      if (service.desiredState === 'deleted') throw conflict(`service ${serviceId} is being deleted`);
      if (service.origin === 'external' && changes.suspended === true) {
        throw conflict(
          `${service.name} is an external backend: Atrium does not run it, so cannot suspend it`,
        );
      }
      const suspend = changes.suspended === true && service.desiredState === 'running';
      const resume =
        changes.suspended === false &&
        (service.desiredState === 'suspended' || service.status === 'failed' || service.status === 'lost');
      if (suspend && !['pending', 'starting', 'running'].includes(service.status)) {
        throw conflict(`service ${serviceId} is ${service.status}; only a running service can be suspended`);
      }
      const fields: q.ServiceChanges = {};
      if (changes.name !== undefined) fields.name = changes.name;
      if (changes.shared !== undefined) fields.shared = changes.shared;
      if (suspend) fields.desiredState = 'suspended';
      if (resume) {
        const want: UsageDelta = {
          services: service.holdsSlot ? 0 : 1,
          cpuMillis: service.resources.cpuMillis,
          memoryBytes: service.resources.memoryBytes,
          gpu: service.resources.gpu,
        };
        if (!(await adjustQuotaUsage(trx, projectId, want, now)))
          throw await quotaExceeded(trx, projectId, want);
        Object.assign(fields, {
          desiredState: 'running',
          status: 'pending',
          holdsSlot: true,
          holdsCompute: true,
          message: null,
        });
      }
      await q.updateService(trx, serviceId, fields, now);
      if (!suspend && !resume) return null;
      await appendEvent(trx, 'service', serviceId, {
        at: now,
        type: suspend ? 'suspend-requested' : 'resume-requested',
        message: suspend ? 'suspension requested' : 'resumption requested; resources admitted',
        data: {},
      });
      return operations.create(trx, {
        kind: suspend ? 'suspend-service' : 'resume-service',
        projectId,
        target: { type: 'service', id: serviceId },
        userId: principal.user.id,
        message: suspend ? `suspending ${service.name}` : `resuming ${service.name}`,
      });
    });
    notifier.notify(topics.service(serviceId));
    if (operation) {
      reconciler.converge(serviceId);
      return { operation };
    }
    return { service: (await q.findService(db, serviceId)) as ServiceRecord };
  }

  async delete(
    principal: Principal,
    projectId: string,
    serviceId: string,
    ifMatch: string | undefined,
  ): Promise<OperationRecord> {
    const { service } = await this.access(principal, projectId, serviceId, 'write');
    checkIfMatch(ifMatch, serviceEtag(service), `service ${serviceId}`);
    return markDeleted(this.deps, principal, service);
  }

  /** Deletes every matching service the principal may delete, as one operation. */
  async deleteMany(
    principal: Principal,
    projectId: string,
    filter: { statuses?: ServiceStatus[] | undefined; packageName?: string | undefined },
  ): Promise<OperationRecord> {
    const project = await this.deps.projects.access(principal, projectId, 'member');
    const seesAll = principal.user.admin || project.role === 'owner';
    return deleteServices(this.deps, principal, projectId, {
      ...filter,
      visibleTo: seesAll ? null : principal.user.id,
    });
  }

  /** Cancels a running operation: a launch is abandoned (its service removed); runs are cancelled. */
  async cancel(principal: Principal, operationId: string): Promise<OperationRecord> {
    const op = await this.deps.operations.requestCancel(principal, operationId);
    const service = op.target?.type === 'service' ? await q.findService(this.deps.db, op.target.id) : null;
    if (service) await markDeleted(this.deps, principal, service);
    return op;
  }

  async *logs(
    principal: Principal,
    projectId: string,
    serviceId: string,
    options: LogOptions,
  ): AsyncIterable<string> {
    const { service } = await this.access(principal, projectId, serviceId, 'read');
    // An external backend's log is where it runs, not here.
    if (service.origin === 'external') return;
    const backend = this.backendFor(service.regionId);
    const tasks = new Set(service.tasks.map((t) => t.id).concat(['main']));
    if (options.task && !tasks.has(options.task)) throw notFound('task', options.task);
    const containers = new Set(
      service.tasks.flatMap((t) => t.containers.map((c) => c.name)).concat(['main']),
    );
    if (options.container && !containers.has(options.container))
      throw notFound('container', options.container);
    yield* backend.logs(serviceId, options);
  }

  /**
   * The service's stored events after `afterSeq`, then (when following) new ones as they come.
   * Ends when the client goes away, or with the service's `deleted` event.
   */
  async *events(
    principal: Principal,
    projectId: string,
    serviceId: string,
    options: { afterSeq: number; follow: boolean; signal: AbortSignal },
  ): EventFeed {
    await this.access(principal, projectId, serviceId, 'read');
    yield* followEvents(
      {
        read: (after) => listEvents(this.deps.db, 'service', serviceId, after, 100),
        ended: async () => (await q.findService(this.deps.db, serviceId)) === null,
        final: (event) => event.type === 'deleted',
        topic: topics.service(serviceId),
        notifier: this.deps.notifier,
      },
      options,
    );
  }

  /** Removes the events of services deleted more than an hour ago (kept for their followers). */
  purgeDeletedEvents(): Promise<number> {
    return purgeOrphanServiceEvents(
      this.deps.db,
      iso(new Date(this.deps.clock().getTime() - deletedEventsKeptMs)),
    );
  }

  /** The workload a service runs, as its backend renders it (for the API's dry runs and tests). */
  workloadOf(service: ServiceRecord): WorkloadSpec {
    return workloadSpecOf(service);
  }
}
