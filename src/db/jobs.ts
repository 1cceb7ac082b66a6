// The scheduler's job queue, in the database. Every write of a claimed job is fenced by its lease
// token: a worker whose lease expired (and was given to another) can change nothing any more.
import type { Knex } from 'knex';
import { isPostgres, parseJson, toNumber } from './database.js';

export type JobStatus = 'pending' | 'queued' | 'running' | 'finished' | 'failed' | 'cancelled';

export interface JobRecord {
  id: string;
  kind: string;
  projectId: string | null;
  runId: string | null;
  taskIndex: number | null;
  payload: Record<string, unknown>;
  priority: number;
  status: JobStatus;
  dependsOn: string | null;
  concurrencyKey: string | null;
  attempts: number;
  maxAttempts: number;
  runAfter: string;
  leaseOwner: string | null;
  leaseExpiresAt: string | null;
  holdsSlot: boolean;
  cancelRequested: boolean;
  error: Record<string, unknown> | null;
  result: Record<string, unknown> | null;
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

interface JobRow {
  id: string;
  kind: string;
  project_id: string | null;
  run_id: string | null;
  task_index: number | string | null;
  payload: string;
  priority: number | string;
  status: JobStatus;
  depends_on: string | null;
  concurrency_key: string | null;
  attempts: number | string;
  max_attempts: number | string;
  run_after: string;
  lease_token: string | null;
  lease_owner: string | null;
  lease_expires_at: string | null;
  holds_slot: boolean | number;
  cancel_requested: boolean | number;
  error: string | null;
  result: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export function jobFromRow(row: JobRow): JobRecord {
  return {
    id: row.id,
    kind: row.kind,
    projectId: row.project_id,
    runId: row.run_id,
    taskIndex: row.task_index === null ? null : toNumber(row.task_index),
    payload: parseJson<Record<string, unknown>>(row.payload),
    priority: toNumber(row.priority),
    status: row.status,
    dependsOn: row.depends_on,
    concurrencyKey: row.concurrency_key,
    attempts: toNumber(row.attempts),
    maxAttempts: toNumber(row.max_attempts),
    runAfter: row.run_after,
    leaseOwner: row.lease_owner,
    leaseExpiresAt: row.lease_expires_at,
    holdsSlot: Boolean(row.holds_slot),
    cancelRequested: Boolean(row.cancel_requested),
    error: row.error === null ? null : parseJson<Record<string, unknown>>(row.error),
    result: row.result === null ? null : parseJson<Record<string, unknown>>(row.result),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
  };
}

export interface NewJob {
  id: string;
  kind: string;
  projectId: string | null;
  runId: string | null;
  taskIndex: number | null;
  payload: Record<string, unknown>;
  priority: number;
  status: 'pending' | 'queued';
  dependsOn: string | null;
  concurrencyKey: string | null;
  maxAttempts: number;
  runAfter: string;
  createdAt: string;
}

export async function insertJob(trx: Knex.Transaction, job: NewJob): Promise<void> {
  await trx('jobs').insert({
    id: job.id,
    kind: job.kind,
    project_id: job.projectId,
    run_id: job.runId,
    task_index: job.taskIndex,
    payload: JSON.stringify(job.payload),
    priority: job.priority,
    status: job.status,
    depends_on: job.dependsOn,
    concurrency_key: job.concurrencyKey,
    max_attempts: job.maxAttempts,
    run_after: job.runAfter,
    created_at: job.createdAt,
    updated_at: job.createdAt,
  });
}

export async function findJob(db: Knex, id: string): Promise<JobRecord | null> {
  const row = await db<JobRow>('jobs').where({ id }).first();
  return row ? jobFromRow(row) : null;
}

/**
 * Claims the most urgent queued job of the given kinds that may run now (not waiting on a backoff,
 * its project under its concurrent-job limit), in one statement: on SQLite its first action is a
 * write, so concurrent claimers (other processes) queue on the write lock instead of racing; on
 * PostgreSQL concurrent claimers skip each other's locked rows.
 */
export async function claimJob(
  trx: Knex.Transaction,
  claim: { kinds: string[]; token: string; owner: string; now: string; leaseExpiresAt: string },
): Promise<JobRecord | null> {
  const candidate = trx('jobs as j')
    .select('j.id')
    .where('j.status', 'queued')
    .where('j.run_after', '<=', claim.now)
    .whereIn('j.kind', claim.kinds)
    // One job at a time per concurrency key: none whose key another running job holds.
    .where((w) =>
      w
        .whereNull('j.concurrency_key')
        .orWhereNotExists(trx('job_locks as l').select(trx.raw('1')).whereRaw('l.key = j.concurrency_key')),
    )
    .where((w) =>
      w
        .whereNull('j.project_id')
        .orWhereNotExists(
          trx('project_quotas as q')
            .select(trx.raw('1'))
            .whereRaw('q.project_id = j.project_id')
            .whereNotNull('q.limit_concurrent_jobs')
            .whereRaw('q.used_concurrent_jobs >= q.limit_concurrent_jobs'),
        ),
    )
    .orderBy([
      { column: 'j.priority', order: 'desc' },
      { column: 'j.created_at', order: 'asc' },
      { column: 'j.id', order: 'asc' },
    ])
    .limit(1);
  if (isPostgres(trx)) candidate.forUpdate().skipLocked();
  const rows = (await trx('jobs')
    .where('id', candidate)
    .where('status', 'queued')
    .update({
      status: 'running',
      attempts: trx.raw('attempts + 1'),
      lease_token: claim.token,
      lease_owner: claim.owner,
      lease_expires_at: claim.leaseExpiresAt,
      started_at: trx.raw('coalesce(started_at, ?)', [claim.now]),
      updated_at: claim.now,
    })
    .returning('*')) as JobRow[];
  return rows[0] ? jobFromRow(rows[0]) : null;
}

/** Takes one of the project's concurrent-job slots, if the limit leaves one. */
export async function takeJobSlot(trx: Knex.Transaction, projectId: string, now: string): Promise<boolean> {
  const updated = await trx('project_quotas')
    .where({ project_id: projectId })
    .where((w) =>
      w.whereNull('limit_concurrent_jobs').orWhereRaw('used_concurrent_jobs + 1 <= limit_concurrent_jobs'),
    )
    .update({ used_concurrent_jobs: trx.raw('used_concurrent_jobs + 1'), updated_at: now });
  return updated > 0;
}

export async function giveJobSlot(trx: Knex.Transaction, projectId: string, now: string): Promise<void> {
  await trx('project_quotas')
    .where({ project_id: projectId })
    .update({ used_concurrent_jobs: trx.raw('used_concurrent_jobs - 1'), updated_at: now });
}

export interface JobChanges {
  status?: JobStatus;
  runAfter?: string;
  leaseExpiresAt?: string | null;
  holdsSlot?: boolean;
  cancelRequested?: boolean;
  attempts?: number;
  error?: Record<string, unknown> | null;
  result?: Record<string, unknown> | null;
  finishedAt?: string | null;
  releaseLease?: boolean;
  /** The attempt in progress is not counted (it was given back, not tried). */
  uncountAttempt?: boolean;
}

function changesToRow(knex: Knex, changes: JobChanges, now: string): Record<string, unknown> {
  const row: Record<string, unknown> = { updated_at: now };
  if (changes.uncountAttempt) row.attempts = knex.raw('attempts - 1');
  if (changes.status !== undefined) row.status = changes.status;
  if (changes.runAfter !== undefined) row.run_after = changes.runAfter;
  if (changes.leaseExpiresAt !== undefined) row.lease_expires_at = changes.leaseExpiresAt;
  if (changes.holdsSlot !== undefined) row.holds_slot = changes.holdsSlot;
  if (changes.cancelRequested !== undefined) row.cancel_requested = changes.cancelRequested;
  if (changes.attempts !== undefined) row.attempts = changes.attempts;
  if (changes.error !== undefined) row.error = changes.error === null ? null : JSON.stringify(changes.error);
  if (changes.result !== undefined)
    row.result = changes.result === null ? null : JSON.stringify(changes.result);
  if (changes.finishedAt !== undefined) row.finished_at = changes.finishedAt;
  if (changes.releaseLease)
    Object.assign(row, { lease_token: null, lease_owner: null, lease_expires_at: null });
  return row;
}

/**
 * Changes a running job only if `token` still holds its lease; returns the job as it was before
 * (or null: the lease is lost, the change not made).
 */
export async function updateLeasedJob(
  trx: Knex.Transaction,
  id: string,
  token: string,
  changes: JobChanges,
  now: string,
): Promise<JobRecord | null> {
  const before = await trx<JobRow>('jobs').where({ id, lease_token: token, status: 'running' }).first();
  if (!before) return null;
  const updated = await trx('jobs')
    .where({ id, lease_token: token, status: 'running' })
    .update(changesToRow(trx, changes, now));
  return updated > 0 ? jobFromRow(before) : null;
}

/** Changes a job in one of the given statuses; returns it as it was before, or null. */
export async function updateJobIn(
  trx: Knex.Transaction,
  id: string,
  statuses: JobStatus[],
  changes: JobChanges,
  now: string,
): Promise<JobRecord | null> {
  const before = await trx<JobRow>('jobs').where({ id }).whereIn('status', statuses).first();
  if (!before) return null;
  const updated = await trx('jobs')
    .where({ id })
    .whereIn('status', statuses)
    .update(changesToRow(trx, changes, now));
  return updated > 0 ? jobFromRow(before) : null;
}

/** Extends a lease; null when it is lost, else whether cancellation was asked for. */
export async function extendLease(
  db: Knex,
  id: string,
  token: string,
  expiresAt: string,
  now: string,
): Promise<{ cancelRequested: boolean } | null> {
  const rows = (await db('jobs')
    .where({ id, lease_token: token, status: 'running' })
    .update({ lease_expires_at: expiresAt, updated_at: now })
    .returning(['cancel_requested'])) as { cancel_requested: boolean | number }[];
  return rows[0] ? { cancelRequested: Boolean(rows[0].cancel_requested) } : null;
}

/** The jobs that depend on this one, in the given statuses. */
export async function dependentsOf(
  trx: Knex.Transaction,
  id: string,
  statuses: JobStatus[],
): Promise<JobRecord[]> {
  const rows = (await trx<JobRow>('jobs').where({ depends_on: id }).whereIn('status', statuses)) as JobRow[];
  return rows.map(jobFromRow);
}

/**
 * Changes a running job whose lease ran out before `now` (its worker is gone or stuck); returns it
 * as it was, or null when it was renewed or ended meanwhile.
 */
export async function updateExpiredJob(
  trx: Knex.Transaction,
  id: string,
  changes: JobChanges,
  now: string,
): Promise<JobRecord | null> {
  const expired = (q: Knex.QueryBuilder) =>
    q.where({ id, status: 'running' }).where('lease_expires_at', '<', now);
  const before = (await expired(trx('jobs')).first()) as JobRow | undefined;
  if (!before) return null;
  const updated = await expired(trx('jobs')).update(changesToRow(trx, changes, now));
  return updated > 0 ? jobFromRow(before) : null;
}

/** Running jobs whose lease ran out: their worker is gone (or stuck). */
export async function expiredJobs(db: Knex, now: string, limit: number): Promise<JobRecord[]> {
  const rows = await db<JobRow>('jobs')
    .where('status', 'running')
    .where('lease_expires_at', '<', now)
    .orderBy('lease_expires_at')
    .limit(limit);
  return (rows as JobRow[]).map(jobFromRow);
}

export async function jobsOfRun(db: Knex, runId: string): Promise<JobRecord[]> {
  return ((await db<JobRow>('jobs').where({ run_id: runId }).orderBy('task_index')) as JobRow[]).map(
    jobFromRow,
  );
}

/** Takes the lock of a job's concurrency key; false when another job holds it. */
export async function takeJobLock(
  trx: Knex.Transaction,
  key: string,
  jobId: string,
  now: string,
): Promise<boolean> {
  const inserted = (await trx('job_locks')
    .insert({ key, job_id: jobId, taken_at: now })
    .onConflict('key')
    .ignore()
    .returning('key')) as unknown[];
  return inserted.length > 0;
}

export async function giveJobLocks(trx: Knex.Transaction, jobId: string): Promise<void> {
  await trx('job_locks').where({ job_id: jobId }).delete();
}

/**
 * How many times a job was started, over every retry of its run (attempts start again from 0 when
 * a run is retried): numbers its executions, so each keeps its own log and work directory.
 */
export async function countExecutions(db: Knex, jobId: string): Promise<number> {
  const row = (await db('job_events').where({ job_id: jobId, type: 'running' }).count({ n: '*' }).first()) as
    { n: number | string } | undefined;
  return Number(row?.n ?? 0);
}
