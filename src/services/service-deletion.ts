// Deleting services: one (an operation that follows it), or many matching a filter (one
// operation for all). Each is marked under its row lock; the reconciler removes what it ran.
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { appendEvent } from '../db/events.js';
import type { OperationRecord } from '../db/operations.js';
import * as q from '../db/services.js';
import type { ServiceRecord } from '../db/services.js';
import { topics, type Notifier } from '../notifier.js';
import type { OperationService } from './operations.js';
import type { Principal } from './principal.js';
import type { ServiceReconciler } from './service-reconciler.js';

interface DeletionDeps {
  db: Knex;
  clock: Clock;
  operations: OperationService;
  reconciler: ServiceReconciler;
  notifier: Notifier;
}

/** Sets a service on its way out, under its row lock; the reconciler does the rest. */
export async function markForDeletion(
  trx: Knex.Transaction,
  serviceId: string,
  message: string,
  at: string,
): Promise<void> {
  await q.lockService(trx, serviceId);
  await q.updateService(trx, serviceId, { desiredState: 'deleted', status: 'deleting' }, at);
  await appendEvent(trx, 'service', serviceId, { at, type: 'deleting', message, data: {} });
}

/** Marks a service for deletion (once) and returns the operation that follows it. */
export async function markDeleted(
  deps: DeletionDeps,
  principal: Principal,
  service: ServiceRecord,
): Promise<OperationRecord> {
  const { db, clock, operations, reconciler, notifier } = deps;
  const existing = (await operations.running(service.id)).find((op) => op.kind === 'delete-service');
  if (existing) {
    // Asked again: make sure it is being worked on (a failed step may be waiting for its retry).
    reconciler.converge(service.id);
    return existing;
  }
  const now = iso(clock());
  const operation = await db.transaction(async (trx) => {
    await markForDeletion(trx, service.id, 'deletion requested', now);
    return operations.create(trx, {
      kind: 'delete-service',
      projectId: service.projectId,
      target: { type: 'service', id: service.id },
      userId: principal.user.id,
      message: `deleting ${service.name}`,
    });
  });
  notifier.notify(topics.service(service.id));
  reconciler.converge(service.id);
  return operation;
}

/** Deletes the matching services (those the principal may delete), as one operation. */
export async function deleteServices(
  deps: DeletionDeps,
  principal: Principal,
  projectId: string,
  filter: Parameters<typeof q.findServicesToDelete>[2],
): Promise<OperationRecord> {
  const { db, clock, operations, reconciler, notifier } = deps;
  const targets = await q.findServicesToDelete(db, projectId, filter, 1000);
  const now = iso(clock());
  const operation = await db.transaction(async (trx) => {
    for (const service of targets) await markForDeletion(trx, service.id, 'deletion requested (bulk)', now);
    return operations.create(trx, {
      kind: 'delete-services',
      projectId,
      target: { type: 'project', id: projectId },
      userId: principal.user.id,
      message: `deleting ${targets.length} services`,
    });
  });
  const ids = targets.map((s) => s.id);
  if (ids.length === 0) {
    await operations.finish(operation.id, {
      status: 'succeeded',
      message: 'no service to delete',
      result: { pending: [], done: [] },
    });
  } else {
    await operations.setResult(operation.id, { pending: ids, done: [] });
  }
  for (const id of ids) {
    notifier.notify(topics.service(id));
    reconciler.converge(id);
  }
  return (await operations.find(operation.id)) as OperationRecord;
}
