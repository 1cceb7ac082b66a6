import type { Knex } from 'knex';
import { keysetPage, type Page, type PageRequest } from './pagination.js';
import { isPostgres, parseJson, toNumber } from './database.js';

export type OperationKind =
  | 'launch-service'
  | 'delete-service'
  | 'suspend-service'
  | 'resume-service'
  | 'delete-services'
  | 'run-pipeline'
  | 'run-benchmark';
export type OperationStatus = 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface OperationRecord {
  id: string;
  kind: OperationKind;
  projectId: string | null;
  target: { type: 'service' | 'project' | 'run' | 'benchmark-run'; id: string } | null;
  userId: string;
  status: OperationStatus;
  progress: number;
  message: string | null;
  error: Record<string, unknown> | null;
  result: Record<string, unknown> | null;
  cancelRequested: boolean;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
}

interface OperationRow {
  id: string;
  kind: OperationKind;
  project_id: string | null;
  target_type: 'service' | 'project' | 'run' | 'benchmark-run' | null;
  target_id: string | null;
  user_id: string;
  status: OperationStatus;
  progress: number | string;
  message: string | null;
  error: string | null;
  result: string | null;
  cancel_requested: boolean | number;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

function operationFromRow(row: OperationRow): OperationRecord {
  return {
    id: row.id,
    kind: row.kind,
    projectId: row.project_id,
    target: row.target_type && row.target_id ? { type: row.target_type, id: row.target_id } : null,
    userId: row.user_id,
    status: row.status,
    progress: toNumber(row.progress),
    message: row.message,
    error: row.error === null ? null : parseJson<Record<string, unknown>>(row.error),
    result: row.result === null ? null : parseJson<Record<string, unknown>>(row.result),
    cancelRequested: Boolean(row.cancel_requested),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    finishedAt: row.finished_at,
  };
}

export async function insertOperation(db: Knex, op: OperationRecord): Promise<void> {
  await db('operations').insert({
    id: op.id,
    kind: op.kind,
    project_id: op.projectId,
    target_type: op.target?.type ?? null,
    target_id: op.target?.id ?? null,
    user_id: op.userId,
    status: op.status,
    progress: op.progress,
    message: op.message,
    error: op.error === null ? null : JSON.stringify(op.error),
    result: op.result === null ? null : JSON.stringify(op.result),
    cancel_requested: op.cancelRequested,
    created_at: op.createdAt,
    updated_at: op.updatedAt,
    finished_at: op.finishedAt,
  });
}

export async function findOperation(db: Knex, id: string): Promise<OperationRecord | null> {
  const row = await db<OperationRow>('operations').where({ id }).first();
  return row ? operationFromRow(row) : null;
}

/** The operation, locked until the transaction ends (PostgreSQL; SQLite transactions are serial). */
export async function findOperationForUpdate(
  trx: Knex.Transaction,
  id: string,
): Promise<OperationRecord | null> {
  const query = trx<OperationRow>('operations').where({ id });
  if (isPostgres(trx)) query.forUpdate();
  const row = await query.first();
  return row ? operationFromRow(row) : null;
}

/** The running operations acting on a target, oldest first. */
export async function findRunningOperations(db: Knex, targetId: string): Promise<OperationRecord[]> {
  const rows = await db<OperationRow>('operations')
    .where({ target_id: targetId, status: 'running' })
    .orderBy('created_at');
  return rows.map(operationFromRow);
}

export interface OperationChanges {
  status?: OperationStatus;
  progress?: number;
  message?: string | null;
  error?: Record<string, unknown> | null;
  result?: Record<string, unknown> | null;
  cancelRequested?: boolean;
  finishedAt?: string | null;
}

/** Applies changes to a running operation; a finished one never changes again (returns false). */
export async function updateRunningOperation(
  db: Knex,
  id: string,
  changes: OperationChanges,
  at: string,
): Promise<boolean> {
  const update: Record<string, unknown> = { updated_at: at };
  if (changes.status !== undefined) update.status = changes.status;
  if (changes.progress !== undefined) update.progress = changes.progress;
  if (changes.message !== undefined) update.message = changes.message;
  if (changes.error !== undefined)
    update.error = changes.error === null ? null : JSON.stringify(changes.error);
  if (changes.result !== undefined)
    update.result = changes.result === null ? null : JSON.stringify(changes.result);
  if (changes.cancelRequested !== undefined) update.cancel_requested = changes.cancelRequested;
  if (changes.finishedAt !== undefined) update.finished_at = changes.finishedAt;
  return (await db('operations').where({ id, status: 'running' }).update(update)) > 0;
}

export interface OperationFilter {
  /** Operations of this user; everyone's when null. */
  userId: string | null;
  projectId?: string | undefined;
  status?: OperationStatus | undefined;
}

export async function listOperations(
  db: Knex,
  filter: OperationFilter,
  page: PageRequest,
): Promise<Page<OperationRecord>> {
  const query = db<OperationRow>('operations').select('*');
  if (filter.userId !== null) query.where({ user_id: filter.userId });
  if (filter.projectId) query.where({ project_id: filter.projectId });
  if (filter.status) query.where({ status: filter.status });
  return keysetPage<OperationRow, OperationRecord>(query, page, {
    list: `operations:${JSON.stringify([filter.userId, filter.projectId ?? null, filter.status ?? null])}`,
    keys: ['created_at', 'id'],
    direction: 'desc',
    keyOf: (row) => [row.created_at, row.id],
    map: operationFromRow,
  });
}
