import type { Knex } from 'knex';
import { keysetPage, type Page, type PageRequest } from './pagination.js';
import { toNumber } from './database.js';

export interface AuditEvent {
  id: string;
  at: string;
  requestId: string;
  userId: string | null;
  operationId: string;
  method: string;
  path: string;
  status: number;
  projectId: string | null;
  ip: string;
}

export interface AuditRow {
  id: string;
  at: string;
  request_id: string;
  user_id: string | null;
  operation_id: string;
  method: string;
  path: string;
  status: number | string;
  project_id: string | null;
  ip: string;
}

export const auditTable = 'audit_events';

/** The row of an audit event, as stored. */
export function auditRow(event: AuditEvent): AuditRow {
  return {
    id: event.id,
    at: event.at,
    request_id: event.requestId,
    user_id: event.userId,
    operation_id: event.operationId,
    method: event.method,
    path: event.path,
    status: event.status,
    project_id: event.projectId,
    ip: event.ip,
  };
}

export async function insertAuditEvent(db: Knex, event: AuditEvent): Promise<void> {
  await db(auditTable).insert(auditRow(event));
}

/** Records the status a request ended with, once known (its record was written with its change). */
export async function updateAuditStatus(db: Knex, id: string, status: number): Promise<void> {
  await db(auditTable).where({ id }).update({ status });
}

export interface AuditFilter {
  userId?: string | undefined;
  projectId?: string | undefined;
  operationId?: string | undefined;
}

export async function listAuditEvents(
  db: Knex,
  filter: AuditFilter,
  page: PageRequest,
): Promise<Page<AuditEvent>> {
  const query = db<AuditRow>('audit_events').select('*');
  if (filter.userId) query.where({ user_id: filter.userId });
  if (filter.projectId) query.where({ project_id: filter.projectId });
  if (filter.operationId) query.where({ operation_id: filter.operationId });
  return keysetPage<AuditRow, AuditEvent>(query, page, {
    list: `audit-events:${JSON.stringify([filter.userId ?? null, filter.projectId ?? null, filter.operationId ?? null])}`,
    keys: ['at', 'id'],
    direction: 'desc',
    keyOf: (row) => [row.at, row.id],
    map: (row) => ({
      id: row.id,
      at: row.at,
      requestId: row.request_id,
      userId: row.user_id,
      operationId: row.operation_id,
      method: row.method,
      path: row.path,
      status: toNumber(row.status),
      projectId: row.project_id,
      ip: row.ip,
    }),
  });
}
