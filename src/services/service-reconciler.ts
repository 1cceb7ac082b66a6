// Converges every service towards its desired state (running, suspended, deleted) on its region's
// backend, records what the backend reports (status, events), releases quota as services stop, and
// ends the operations that wait on them. One chain of work per service, so that a service's changes
// are applied in order. Started once per API process; after a restart it picks everything up again.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { findQuota } from '../db/quotas.js';
import { appendEvent } from '../db/events.js';
import * as q from '../db/services.js';
import type { ServiceRecord, ServiceStatus } from '../db/services.js';
import { DomainError } from '../errors.js';
import type {
  ClusterBackend,
  WorkloadEvent,
  WorkloadSpec,
  WorkloadStatus,
} from '../backends/cluster/types.js';
import { topics, type Notifier } from '../notifier.js';
import { operationProblem, type OperationService } from './operations.js';
import { giveBack, holds } from './service-quota.js';

export interface ServiceReconcilerDeps {
  db: Knex;
  clock: Clock;
  log: Logger;
  /** The backend of each region that has one. */
  backends: ReadonlyMap<string, ClusterBackend>;
  operations: OperationService;
  notifier: Notifier;
}

/** Whether applying `changes` would alter any recorded field of the service. */
function changesSomething(service: ServiceRecord, changes: q.ServiceChanges): boolean {
  return (Object.entries(changes) as [keyof q.ServiceChanges, unknown][]).some(
    ([key, value]) => value !== undefined && JSON.stringify(value) !== JSON.stringify(service[key]),
  );
}

export function workloadSpecOf(service: ServiceRecord): WorkloadSpec {
  return {
    serviceId: service.id,
    generation: service.generation,
    serviceName: service.name,
    projectId: service.projectId,
    package: {
      catalogId: service.catalogId,
      name: service.packageName,
      version: service.packageVersion,
      sourceDir: service.sourceDir,
    },
    run: service.runSpec,
    options: service.options,
    secretOptions: service.secretOptions,
    resources: service.resources,
  };
}

export class ServiceReconciler {
  private readonly chains = new Map<string, Promise<void>>();
  /** Consecutive failed steps per service, and the timers of their retries. */
  private readonly failures = new Map<string, number>();
  private readonly retries = new Set<NodeJS.Timeout>();
  private started = false;
  private closed = false;

  constructor(private readonly deps: ServiceReconcilerDeps) {}

  backendOf(regionId: string): ClusterBackend | undefined {
    return this.deps.backends.get(regionId);
  }

  /** Listens to every backend, adopts or reports what runs, and resumes unfinished work. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const { db, backends, log } = this.deps;
    for (const [regionId, backend] of backends) {
      backend.onEvent((event) => this.enqueue(event.serviceId, () => this.record(event)));
      const services = await q.listRegionServices(db, regionId);
      const report = await backend.reconcile(
        services.map((s) => ({
          serviceId: s.id,
          shouldRun: s.desiredState === 'running' && s.status !== 'failed' && s.status !== 'lost',
          afterSeq: s.backendSeq,
        })),
      );
      log.info({ region: regionId, ...report }, 'services reconciled');
      for (const serviceId of report.adopted) {
        await this.note(serviceId, 'adopted', 'still running after a restart of Atrium; watched again');
      }
      for (const service of services) this.converge(service.id);
    }
  }

  /** Records an event that changes nothing else. */
  private async note(serviceId: string, type: string, message: string): Promise<void> {
    await this.deps.db.transaction((trx) =>
      appendEvent(trx, 'service', serviceId, { at: iso(this.deps.clock()), type, message, data: {} }),
    );
    this.deps.notifier.notify(topics.service(serviceId));
  }

  /** Stops taking work, finishes what is queued; workloads keep running. */
  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.retries) clearTimeout(timer);
    this.retries.clear();
    for (let round = 0; round < 100 && this.chains.size > 0; round++)
      await Promise.all([...this.chains.values()]);
    for (const backend of this.deps.backends.values()) await backend.close();
  }

  /** Waits for the work queued on a service (tests, shutdown). */
  async settled(serviceId: string): Promise<void> {
    await this.chains.get(serviceId);
  }

  /** Queues a step towards the desired state; a step that fails is tried again, backing off. */
  converge(serviceId: string): void {
    this.enqueue(serviceId, async () => {
      try {
        await this.step(serviceId);
        this.failures.delete(serviceId);
      } catch (error) {
        const failures = (this.failures.get(serviceId) ?? 0) + 1;
        this.failures.set(serviceId, failures);
        if (failures <= 8 && !this.closed) {
          const timer = setTimeout(
            () => {
              this.retries.delete(timer);
              this.converge(serviceId);
            },
            Math.min(30_000, 250 * 2 ** failures),
          );
          timer.unref();
          this.retries.add(timer);
        }
        throw error;
      }
    });
  }

  private enqueue(serviceId: string, work: () => Promise<void>): void {
    if (this.closed) return;
    const previous = this.chains.get(serviceId) ?? Promise.resolve();
    const next = previous
      .then(work)
      .catch((err: unknown) => this.deps.log.error({ err, serviceId }, 'service reconciler: step failed'))
      .finally(() => {
        if (this.chains.get(serviceId) === next) this.chains.delete(serviceId);
      });
    this.chains.set(serviceId, next);
  }

  /** One step towards the desired state. */
  private async step(serviceId: string): Promise<void> {
    const service = await q.findService(this.deps.db, serviceId);
    if (!service) return;
    // An external backend runs elsewhere: deleting it forgets it; there is nothing else to do.
    if (service.origin === 'external') {
      if (service.desiredState === 'deleted') await this.remove(service);
      return;
    }
    const backend = this.backendOf(service.regionId);
    // A step whose decision went stale (the service changed meanwhile) is taken again, afresh.
    const again = (applied: boolean) => {
      if (!applied) this.converge(serviceId);
    };
    if (!backend) {
      again(
        await this.settle(service, 'failed', {
          message: `region ${service.regionId} has no backend that can run services`,
          event: { type: 'failed', message: 'no backend for this region' },
        }),
      );
      return;
    }
    switch (service.desiredState) {
      case 'running':
        // Pending: start it. Starting with nothing there: the start was interrupted (a crash
        // between recording it and running it); start it again (apply never starts one twice).
        if (
          service.status === 'pending' ||
          (service.status === 'starting' && (await backend.status(serviceId)) === null)
        ) {
          again(await this.startWorkload(service, backend));
        }
        return;
      case 'suspended':
        if (['pending', 'starting', 'running', 'suspending'].includes(service.status)) {
          if (
            !(await this.setStatus(service, 'suspending', { type: 'suspending', message: 'stopping it' }))
          ) {
            return again(false);
          }
          await backend.stop(serviceId);
          // Behind the events the stop produced (already queued), so that they come first.
          this.enqueue(serviceId, () => this.finishSuspension(serviceId));
        }
        return;
      case 'deleted':
        await backend.delete(serviceId);
        await this.remove(service);
        return;
    }
  }

  /**
   * Starts the service's workload: a new generation for a fresh start (from pending), the same one
   * when picking up a start that was interrupted (its workload, if any, is that generation's).
   */
  private async startWorkload(service: ServiceRecord, backend: ClusterBackend): Promise<boolean> {
    const generation = service.status === 'pending' ? service.generation + 1 : service.generation;
    const started = await this.settle(service, 'starting', {
      generation,
      event: { type: 'starting', message: `starting ${service.packageName} ${service.packageVersion}` },
    });
    if (!started) return false;
    await this.progressOperations(service.id, 40, 'starting');
    try {
      const quota = await findQuota(this.deps.db, service.projectId);
      await backend.apply({
        ...workloadSpecOf(service),
        generation,
        quota: quota
          ? {
              cpuMillis: quota.limits.cpuMillis,
              memoryBytes: quota.limits.memoryBytes,
              gpu: quota.limits.gpu,
              services: quota.limits.services,
            }
          : null,
      });
    } catch (error) {
      // A refusal by the cluster's own quota keeps its problem type; anything else failed the start.
      const message =
        error instanceof DomainError && error.kind === 'quota-exceeded'
          ? `quota-exceeded: ${error.detail}`
          : `could not start: ${(error as Error).message}`;
      this.deps.log.warn({ err: error, serviceId: service.id }, 'service could not start');
      const current = await q.findService(this.deps.db, service.id);
      if (current) return this.settle(current, 'failed', { message, event: { type: 'failed', message } });
    }
    return true;
  }

  /** The workload is stopped: the service is suspended (unless its events said so already). */
  private async finishSuspension(serviceId: string): Promise<void> {
    const service = await q.findService(this.deps.db, serviceId);
    if (service?.desiredState !== 'suspended') return;
    // Its stop events may have settled it already; the suspension still ends with its own event.
    if (service.status === 'suspended') return this.note(serviceId, 'suspended', 'suspended');
    const applied = await this.settle(service, 'suspended', {
      event: { type: 'suspended', message: 'suspended' },
      tasks: [],
      endpoints: [],
    });
    if (!applied) this.converge(serviceId);
  }

  /** Records an event of a backend and moves the service's status accordingly. */
  private async record(event: WorkloadEvent, attempt = 0): Promise<void> {
    const service = await q.findService(this.deps.db, event.serviceId);
    // Deleting: the deletion decides. Pending: its next run has not started yet, so whatever the
    // backend says now is about an earlier one (a late "stopped" after a suspension, say).
    if (!service || service.desiredState === 'deleted' || service.status === 'pending') return;
    // The workload as of the event (events come in order, each with the phase it marks), so that
    // the service's status and its event log move together.
    const observed = event.status;
    // Events of an earlier run (before a suspension, say) do not concern this one.
    if (observed.generation !== null && observed.generation !== service.generation) return;
    const next = this.statusFor(service, observed);
    // A transition is recorded once. A service that ended lost or failed stays so until someone
    // acts on it; the backend finding it so again (at each start of Atrium) is no new event.
    if (next === service.status && (next === 'lost' || next === 'failed')) return;
    const changes: q.ServiceChanges = {
      tasks: observed.tasks,
      endpoints: observed.endpoints,
      message: observed.message,
      exitCode: observed.exitCode,
      logTail: observed.logTail,
      startedAt: observed.startedAt,
    };
    if (event.sourceSeq !== null) changes.backendSeq = Math.max(service.backendSeq, event.sourceSeq);
    const applied = await this.settle(service, next, {
      ...changes,
      event: { type: event.type, message: event.message, at: event.at, data: { phase: observed.phase } },
    });
    // The service changed meanwhile: decide again on what it is now (a few times at most).
    if (!applied && attempt < 5) await this.record(event, attempt + 1);
  }

  private statusFor(service: ServiceRecord, observed: WorkloadStatus): ServiceStatus {
    if (service.desiredState === 'suspended') {
      return observed.phase === 'starting' || observed.phase === 'running' ? 'suspending' : 'suspended';
    }
    switch (observed.phase) {
      case 'starting':
        return 'starting';
      case 'running':
        return 'running';
      case 'lost':
        return 'lost';
      case 'failed':
      case 'stopped':
        return 'failed';
    }
  }

  private setStatus(service: ServiceRecord, status: ServiceStatus, event: { type: string; message: string }) {
    return this.settle(service, status, { event });
  }

  /**
   * Moves a service to a status in one transaction: its fields, the quota it holds in that status
   * (releases only: admissions happen where a user asks for them), and an event. Then ends the
   * operations that were waiting for this status. The decision was made on `service` as read
   * before; if the row has changed since (the API took a request meanwhile), nothing is applied
   * and false is returned, for the caller to decide again on what is there now.
   */
  private async settle(
    service: ServiceRecord,
    status: ServiceStatus,
    changes: q.ServiceChanges & {
      event: { type: string; message: string; at?: string; data?: Record<string, unknown> };
    },
  ): Promise<boolean> {
    const { db, clock, notifier } = this.deps;
    const { event, ...fields } = changes;
    const at = iso(clock());
    const wanted = holds[status] ?? { slot: service.holdsSlot, compute: service.holdsCompute };
    const release = {
      slot: service.holdsSlot && !wanted.slot,
      compute: service.holdsCompute && !wanted.compute,
    };
    const applied = await db.transaction(async (trx) => {
      await q.lockService(trx, service.id);
      const current = await q.findService(trx, service.id);
      if (!current || current.version !== service.version) return false;
      await giveBack(trx, service, release, at);
      const update: q.ServiceChanges = {
        ...fields,
        status,
        holdsSlot: service.holdsSlot && !release.slot,
        holdsCompute: service.holdsCompute && !release.compute,
      };
      // The version (and so the ETag) moves only when the representation does: an event that
      // repeats what is recorded is still logged, but changes nothing else.
      if (changesSomething(service, update)) await q.updateService(trx, service.id, update, at);
      await appendEvent(trx, 'service', service.id, {
        at: event.at ?? at,
        type: event.type,
        message: event.message,
        data: { status, ...(event.data ?? {}) },
      });
      return true;
    });
    if (!applied) return false;
    notifier.notify(topics.service(service.id));
    await this.endOperations(service, status, fields);
    return true;
  }

  private async progressOperations(serviceId: string, progress: number, message: string): Promise<void> {
    for (const op of await this.deps.operations.running(serviceId)) {
      await this.deps.operations.progress(op.id, progress, message);
    }
  }

  /** Ends the operations whose goal the service reached (or can no longer reach). */
  private async endOperations(
    service: ServiceRecord,
    status: ServiceStatus,
    fields: q.ServiceChanges,
  ): Promise<void> {
    const { operations } = this.deps;
    for (const op of await operations.running(service.id)) {
      const starting = op.kind === 'launch-service' || op.kind === 'resume-service';
      if (starting && status === 'running') {
        await operations.finish(op.id, {
          status: 'succeeded',
          message: `${service.name} is running`,
          result: { service_id: service.id },
        });
      } else if (starting && (status === 'failed' || status === 'lost')) {
        const detail =
          fields.message ?? (status === 'lost' ? 'the service was lost' : 'the service failed to start');
        await operations.finish(op.id, {
          status: 'failed',
          message: detail,
          error: operationProblem(
            detail.startsWith('quota-exceeded:') ? 'quota-exceeded' : 'launch-failed',
            detail,
            {
              service_id: service.id,
              exit_code: fields.exitCode ?? null,
              log_tail: fields.logTail ?? [],
            },
          ),
        });
      } else if (op.kind === 'suspend-service' && status === 'suspended') {
        await operations.finish(op.id, {
          status: 'succeeded',
          message: `${service.name} is suspended`,
          result: { service_id: service.id },
        });
      }
    }
  }

  /** The service is gone from its backend: give back what it held, remove it, end its operations. */
  private async remove(service: ServiceRecord): Promise<void> {
    const { db, clock, notifier, operations } = this.deps;
    const at = iso(clock());
    await db.transaction(async (trx) => {
      await q.lockService(trx, service.id);
      const current = await q.findService(trx, service.id);
      if (!current) return;
      await giveBack(trx, current, { slot: current.holdsSlot, compute: current.holdsCompute }, at);
      // The last event: its followers read it after the row is gone (the events outlive it).
      await appendEvent(trx, 'service', service.id, {
        at,
        type: 'deleted',
        message: `${current.name} was deleted`,
        data: {},
      });
      await q.deleteServiceRow(trx, service.id);
    });
    notifier.notify(topics.service(service.id));
    for (const op of await operations.running(service.id)) {
      if (op.kind === 'launch-service' || op.kind === 'resume-service') {
        await operations.finish(op.id, {
          status: 'cancelled',
          message: 'cancelled: the service was removed',
          error: operationProblem('cancelled', 'the launch was cancelled and the service removed', {
            service_id: service.id,
          }),
        });
      } else {
        await operations.finish(op.id, {
          status: 'succeeded',
          message: `${service.name} was deleted`,
          result: { service_id: service.id },
        });
      }
    }
    await this.onRemovedFromBulk(service);
  }

  /** A bulk deletion ends when the last of its services is gone. */
  private async onRemovedFromBulk(service: ServiceRecord): Promise<void> {
    for (const op of await this.deps.operations.running(service.projectId)) {
      if (op.kind === 'delete-services') await this.deps.operations.bulkItemDone(op.id, service.id);
    }
  }
}
