import type { Knex } from 'knex';
import { parseJson } from './database.js';
import { keysetPage, type Page, type PageRequest } from './pagination.js';

// Calls of service functions: one row per call, synchronous or queued (then run by a scheduler
// job), with its input, and its result or problem once it ended; kept until `expires_at`.

export type CallStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface CallRecord {
  id: string;
  serviceId: string;
  projectId: string;
  function: string;
  input: unknown;
  status: CallStatus;
  sync: boolean;
  result: unknown;
  error: Record<string, unknown> | null;
  jobId: string | null;
  cacheKey: string | null;
  userId: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  expiresAt: string | null;
}

interface CallRow {
  id: string;
  service_id: string;
  project_id: string;
  function: string;
  input: string;
  status: CallStatus;
  sync: boolean | number;
  result: string | null;
  error: string | null;
  job_id: string | null;
  cache_key: string | null;
  user_id: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  expires_at: string | null;
}

const fromRow = (r: CallRow): CallRecord => ({
  id: r.id,
  serviceId: r.service_id,
  projectId: r.project_id,
  function: r.function,
  input: parseJson<unknown>(r.input),
  status: r.status,
  sync: Boolean(r.sync),
  result: r.result === null ? null : parseJson<unknown>(r.result),
  error: r.error === null ? null : parseJson<Record<string, unknown>>(r.error),
  jobId: r.job_id,
  cacheKey: r.cache_key,
  userId: r.user_id,
  createdAt: r.created_at,
  startedAt: r.started_at,
  finishedAt: r.finished_at,
  expiresAt: r.expires_at,
});

export async function insertCall(db: Knex, call: CallRecord): Promise<void> {
  await db('service_calls').insert({
    id: call.id,
    service_id: call.serviceId,
    project_id: call.projectId,
    function: call.function,
    input: JSON.stringify(call.input),
    status: call.status,
    sync: call.sync,
    result: call.result === null ? null : JSON.stringify(call.result),
    error: call.error === null ? null : JSON.stringify(call.error),
    job_id: call.jobId,
    cache_key: call.cacheKey,
    user_id: call.userId,
    created_at: call.createdAt,
    started_at: call.startedAt,
    finished_at: call.finishedAt,
    expires_at: call.expiresAt,
  });
}

export async function findCall(db: Knex, id: string): Promise<CallRecord | null> {
  const row = (await db('service_calls').where({ id }).first()) as CallRow | undefined;
  return row ? fromRow(row) : null;
}

/** A call that has begun (only a queued one can begin; false when it is no longer queued). */
export async function startCall(db: Knex, id: string, at: string): Promise<boolean> {
  return (
    (await db('service_calls')
      .where({ id, status: 'queued' })
      .update({ status: 'running', started_at: at })) > 0
  );
}

/** Ends a call that has not ended yet; false when it had (a cancellation came first, say). */
export async function finishCall(
  db: Knex,
  id: string,
  outcome: {
    status: 'succeeded' | 'failed' | 'cancelled';
    result?: unknown;
    error?: Record<string, unknown> | null;
  },
  at: string,
  expiresAt: string,
): Promise<boolean> {
  const changed = await db('service_calls')
    .where({ id })
    .whereIn('status', ['queued', 'running'])
    .update({
      status: outcome.status,
      result: outcome.result === undefined || outcome.result === null ? null : JSON.stringify(outcome.result),
      error: outcome.error
        ? JSON.stringify(outcome.error)
        : outcome.status === 'succeeded'
          ? null
          : undefined,
      finished_at: at,
      expires_at: expiresAt,
    });
  return changed > 0;
}

/** The problem of a failed attempt, kept on the call (it ends with it unless an attempt succeeds). */
export async function noteCallProblem(db: Knex, id: string, problem: Record<string, unknown>): Promise<void> {
  await db('service_calls')
    .where({ id })
    .update({ error: JSON.stringify(problem) });
}

export async function setCallJob(trx: Knex.Transaction, id: string, jobId: string): Promise<void> {
  await trx('service_calls').where({ id }).update({ job_id: jobId });
}

/** A service's calls, newest first. */
export function listCalls(db: Knex, serviceId: string, page: PageRequest): Promise<Page<CallRecord>> {
  return keysetPage<CallRow, CallRecord>(db('service_calls').where({ service_id: serviceId }), page, {
    list: `service-calls:${serviceId}`,
    keys: ['created_at', 'id'],
    direction: 'desc',
    keyOf: (row) => [row.created_at, row.id],
    map: fromRow,
  });
}

/** How many calls of the service are queued ahead of this one (0: it is next). */
export async function positionInQueue(db: Knex, call: CallRecord): Promise<number> {
  const row = await db('service_calls')
    .where({ service_id: call.serviceId, status: 'queued' })
    .andWhere((q) =>
      q
        .where('created_at', '<', call.createdAt)
        .orWhere((same) => same.where('created_at', call.createdAt).andWhere('id', '<', call.id)),
    )
    .count({ n: '*' })
    .first();
  return Number((row as { n: number | string } | undefined)?.n ?? 0);
}

/** The newest result of the same function and input, finished after `since` (a cache hit). */
export async function cachedCall(
  db: Knex,
  serviceId: string,
  fn: string,
  cacheKey: string,
  since: string,
): Promise<CallRecord | null> {
  const row = (await db('service_calls')
    .where({ service_id: serviceId, function: fn, cache_key: cacheKey, status: 'succeeded' })
    .where('finished_at', '>', since)
    .orderBy('finished_at', 'desc')
    .first()) as CallRow | undefined;
  return row ? fromRow(row) : null;
}

/** Removes the calls whose results have expired. */
export async function purgeExpiredCalls(db: Knex, now: string): Promise<number> {
  return db('service_calls').whereNotNull('expires_at').where('expires_at', '<', now).delete();
}
