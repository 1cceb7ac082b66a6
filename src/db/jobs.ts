// The scheduler's job queue, in the database. Every write of a claimed job is fenced by its lease
// token: a worker whose lease expired (and was given to another) can change nothing any more. The
// hot path (enqueue, claim, finish, renew) costs a statement or two, whatever the batch: a job's
// history events are numbered by the same UPDATE that changes it (`numberEvent`), and a batch of
// claims, completions or renewals is one statement.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
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
  /** How many jobs of the same concurrency key may run at once. */
  concurrencyLimit: number;
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
  concurrency_limit: number | string;
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
  event_seq: number | string;
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
    concurrencyLimit: toNumber(row.concurrency_limit),
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
  concurrencyLimit: number;
  maxAttempts: number;
  runAfter: string;
  createdAt: string;
}

/** The first event of a new job's history (number 1), written with it. */
export interface FirstJobEvent {
  at: string;
  type: string;
  message: string;
  data: Record<string, unknown>;
}

/**
 * Inserts a job and the first event of its history in one statement, and returns the job as
 * stored: on PostgreSQL a data-modifying CTE, on SQLite an insert into the view `job_enqueues`,
 * whose trigger makes the two inserts (migration 008_jobs_enqueue).
 */
export async function insertJob(
  trx: Knex.Transaction,
  job: NewJob,
  first: FirstJobEvent,
): Promise<JobRecord> {
  const columns = {
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
    concurrency_limit: job.concurrencyLimit,
    max_attempts: job.maxAttempts,
    run_after: job.runAfter,
    event_seq: 1,
    created_at: job.createdAt,
    updated_at: job.createdAt,
  };
  const event = { at: first.at, type: first.type, message: first.message, data: JSON.stringify(first.data) };
  if (isPostgres(trx)) {
    await trx
      .with('j', (w) => w.insert(columns).into('jobs').returning('id'))
      .insert(
        trx
          .from('j')
          .select(
            'j.id',
            trx.raw('1'),
            trx.raw('?', [event.at]),
            trx.raw('?', [event.type]),
            trx.raw('?', [event.message]),
            trx.raw('?', [event.data]),
          ),
      )
      .into(trx.raw('job_events (job_id, seq, at, type, message, data)'));
  } else {
    await trx('job_enqueues').insert({
      ...columns,
      event_at: event.at,
      event_type: event.type,
      event_message: event.message,
      event_data: event.data,
    });
  }
  return jobFromRow({
    ...columns,
    attempts: 0,
    lease_token: null,
    lease_owner: null,
    lease_expires_at: null,
    holds_slot: false,
    cancel_requested: false,
    error: null,
    result: null,
    started_at: null,
    finished_at: null,
  });
}

export interface JobEvent {
  jobId: string;
  /** The number its job's UPDATE gave it (`numberEvent`). */
  seq: number;
  at: string;
  type: string;
  message: string;
  data: Record<string, unknown>;
}

/** Writes history events of jobs, numbered already, in one statement. */
export async function insertJobEvents(trx: Knex.Transaction, events: JobEvent[]): Promise<void> {
  if (events.length === 0) return;
  await trx('job_events').insert(
    events.map((e) => ({
      job_id: e.jobId,
      seq: e.seq,
      at: e.at,
      type: e.type,
      message: e.message,
      data: JSON.stringify(e.data),
    })),
  );
}

export async function findJob(db: Knex, id: string): Promise<JobRecord | null> {
  const row = await db<JobRow>('jobs').where({ id }).first();
  return row ? jobFromRow(row) : null;
}

export interface ClaimCandidate {
  id: string;
  projectId: string | null;
  concurrencyKey: string | null;
  concurrencyLimit: number;
}

/**
 * The most urgent queued jobs of the given kinds that may run now (not waiting on a backoff, fewer
 * jobs of their concurrency key running than its limit, their project under its concurrent-job limit), at
 * most `limit`. On PostgreSQL the rows are locked for the transaction and concurrent claimers skip
 * them; on SQLite the transaction holds the write lock from its start (BEGIN IMMEDIATE), so no
 * other claimer can see them before it ends.
 */
export async function claimableJobs(
  trx: Knex.Transaction,
  claim: { kinds: string[]; now: string; limit: number },
): Promise<ClaimCandidate[]> {
  const query = trx('jobs as j')
    .select('j.id', 'j.project_id', 'j.concurrency_key', 'j.concurrency_limit')
    .where('j.status', 'queued')
    .where('j.run_after', '<=', claim.now)
    .whereIn('j.kind', claim.kinds)
    .where((w) =>
      w
        .whereNull('j.concurrency_key')
        .orWhereRaw(
          '(select count(*) from job_locks l where l.lock_group = j.concurrency_key) < j.concurrency_limit',
        ),
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
    .limit(claim.limit);
  if (isPostgres(trx)) query.forUpdate().skipLocked();
  const rows = (await query) as {
    id: string;
    project_id: string | null;
    concurrency_key: string | null;
    concurrency_limit: number | string;
  }[];
  return rows.map((r) => ({
    id: r.id,
    projectId: r.project_id,
    concurrencyKey: r.concurrency_key,
    concurrencyLimit: toNumber(r.concurrency_limit),
  }));
}

/** A job as an UPDATE left it, with the number it gave the event that records the change. */
export interface ChangedJob {
  job: JobRecord;
  eventSeq: number;
}

/**
 * Leases queued jobs (chosen by claimableJobs, in this transaction) to a worker under one token,
 * in one statement: running, one more attempt, a history event numbered. Those with a project
 * hold one of its slots (the caller took them). Returned in the order of `ids`.
 */
export async function leaseJobs(
  trx: Knex.Transaction,
  ids: string[],
  lease: { token: string; owner: string; now: string; expiresAt: string },
): Promise<ChangedJob[]> {
  if (ids.length === 0) return [];
  const rows = (await trx('jobs')
    .whereIn('id', ids)
    .where('status', 'queued')
    .update({
      status: 'running',
      attempts: trx.raw('attempts + 1'),
      lease_token: lease.token,
      lease_owner: lease.owner,
      lease_expires_at: lease.expiresAt,
      holds_slot: trx.raw('project_id is not null'),
      started_at: trx.raw('coalesce(started_at, ?)', [lease.now]),
      event_seq: trx.raw('event_seq + 1'),
      updated_at: lease.now,
    })
    .returning('*')) as JobRow[];
  const byId = new Map(rows.map((r) => [r.id, r]));
  return ids.flatMap((id) => {
    const row = byId.get(id);
    return row ? [{ job: jobFromRow(row), eventSeq: toNumber(row.event_seq) }] : [];
  });
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

/** Gives back `count` of the project's concurrent-job slots. */
export async function giveJobSlot(
  trx: Knex.Transaction,
  projectId: string,
  now: string,
  count = 1,
): Promise<void> {
  await trx('project_quotas')
    .where({ project_id: projectId })
    .update({ used_concurrent_jobs: trx.raw('used_concurrent_jobs - ?', [count]), updated_at: now });
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
  /** Numbers one more history event of the job (updateLeasedJob returns the number). */
  numberEvent?: boolean;
}

function changesToRow(knex: Knex, changes: JobChanges, now: string): Record<string, unknown> {
  const row: Record<string, unknown> = { updated_at: now };
  if (changes.uncountAttempt) row.attempts = knex.raw('attempts - 1');
  if (changes.numberEvent) row.event_seq = knex.raw('event_seq + 1');
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
 * Changes a running job only if `token` still holds its lease, in one statement; returns the job as
 * the change left it (or null: the lease is lost, the change not made).
 */
export async function updateLeasedJob(
  trx: Knex.Transaction,
  id: string,
  token: string,
  changes: JobChanges,
  now: string,
): Promise<ChangedJob | null> {
  const rows = (await trx('jobs')
    .where({ id, lease_token: token, status: 'running' })
    .update(changesToRow(trx, changes, now))
    .returning('*')) as JobRow[];
  return rows[0] ? { job: jobFromRow(rows[0]), eventSeq: toNumber(rows[0].event_seq) } : null;
}

/**
 * Records jobs finished with their results, each only if its token still holds its lease, in one
 * statement: the lease and the slot given back, a history event numbered. Returns the number of
 * the event of each job that was changed; the others' leases were lost.
 */
export async function finishLeasedJobs(
  trx: Knex.Transaction,
  finished: { id: string; token: string; result: Record<string, unknown> }[],
  now: string,
): Promise<Map<string, number>> {
  if (finished.length === 0) return new Map();
  const results = trx.raw(
    `case id ${finished.map(() => 'when ? then ?').join(' ')} end`,
    finished.flatMap((f) => [f.id, JSON.stringify(f.result)]),
  );
  const rows = (await trx('jobs')
    .where('status', 'running')
    .where((w) => {
      for (const f of finished) w.orWhere((one) => one.where({ id: f.id, lease_token: f.token }));
    })
    .update({
      ...changesToRow(
        trx,
        {
          status: 'finished',
          error: null,
          finishedAt: now,
          releaseLease: true,
          holdsSlot: false,
          numberEvent: true,
        },
        now,
      ),
      result: results,
    })
    .returning(['id', 'event_seq'])) as { id: string; event_seq: number | string }[];
  return new Map(rows.map((r) => [r.id, toNumber(r.event_seq)]));
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

/**
 * Extends the leases of a worker's running jobs in one statement, each only while its token holds
 * it; returns the jobs still held, with whether cancellation was asked for (a job missing from the
 * answer lost its lease).
 */
export async function extendLeases(
  db: Knex,
  held: { id: string; token: string }[],
  expiresAt: string,
  now: string,
): Promise<Map<string, { cancelRequested: boolean }>> {
  if (held.length === 0) return new Map();
  const rows = (await db('jobs')
    .where('status', 'running')
    .whereIn(
      'id',
      held.map((h) => h.id),
    )
    .whereIn('lease_token', [...new Set(held.map((h) => h.token))])
    .update({ lease_expires_at: expiresAt, updated_at: now })
    .returning(['id', 'cancel_requested'])) as { id: string; cancel_requested: boolean | number }[];
  return new Map(rows.map((r) => [r.id, { cancelRequested: Boolean(r.cancel_requested) }]));
}

/** The jobs that depend on any of these, in the given statuses. */
export async function dependentsOf(
  trx: Knex.Transaction,
  ids: string | string[],
  statuses: JobStatus[],
): Promise<JobRecord[]> {
  const rows = (await trx<JobRow>('jobs')
    .whereIn('depends_on', typeof ids === 'string' ? [ids] : ids)
    .whereIn('status', statuses)
    .orderBy('id')) as JobRow[];
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

/**
 * Takes one of the locks of a job's concurrency key (`limit` of them); false when other jobs hold
 * them all.
 */
export async function takeJobLock(
  trx: Knex.Transaction,
  lock: { key: string; limit: number },
  jobId: string,
  now: string,
): Promise<boolean> {
  // One row per running job of the key, in a slot of its own: the primary key makes the count
  // exact when claimers race (PostgreSQL waits for the other's insert, then skips the slot).
  const slotKey = (slot: number) => (lock.limit <= 1 ? lock.key : `${lock.key}#${slot}`);
  const taken =
    lock.limit <= 1
      ? new Set<string>()
      : new Set(
          ((await trx('job_locks').where({ lock_group: lock.key }).select('key')) as { key: string }[]).map(
            (r) => r.key,
          ),
        );
  for (let slot = 0; slot < Math.max(1, lock.limit); slot++) {
    if (taken.has(slotKey(slot))) continue;
    const inserted = (await trx('job_locks')
      .insert({
        key: slotKey(slot),
        lock_group: lock.key,
        job_id: jobId,
        taken_at: now,
      })
      .onConflict('key')
      .ignore()
      .returning('key')) as unknown[];
    if (inserted.length > 0) return true;
  }
  return false;
}

export async function giveJobLocks(trx: Knex.Transaction, jobIds: string | string[]): Promise<void> {
  await trx('job_locks')
    .whereIn('job_id', typeof jobIds === 'string' ? [jobIds] : jobIds)
    .delete();
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

/** What the scheduler of one process tells the workers of the others (PostgreSQL's NOTIFY). */
export interface JobNotices {
  /** Some job became queued. */
  queued(): void;
  /** A running job was asked to stop. */
  cancelRequested(jobId: string): void;
}

interface ListeningConnection {
  query(sql: string): Promise<unknown>;
  on(event: 'notification', listener: (message: { channel: string; payload?: string }) => void): void;
  on(event: 'error', listener: (error: Error) => void): void;
  on(event: 'end', listener: () => void): void;
}

interface RawConnections {
  acquireRawConnection(): Promise<ListeningConnection>;
  destroyRawConnection(connection: ListeningConnection): Promise<void>;
}

const queuedChannel = 'atrium_jobs';
const cancelChannel = 'atrium_job_cancel';

/** Whether the database carries job notices that a process sends (PostgreSQL; not SQLite). */
export function carriesJobNotices(db: Knex): boolean {
  return isPostgres(db);
}

/**
 * Tells every listening process that jobs were queued, or that a running job was asked to stop,
 * in a statement of its own after the change committed: a NOTIFY inside the change's transaction
 * would take PostgreSQL's global notify lock through its commit, serialising every enqueue.
 */
export async function announceJobNotice(
  db: Knex,
  notice: { queued: true } | { cancelRequested: string },
): Promise<void> {
  if (!isPostgres(db)) return;
  const [channel, payload] =
    'queued' in notice ? [queuedChannel, ''] : [cancelChannel, notice.cancelRequested];
  await db.raw('select pg_notify(?, ?)', [channel, payload]);
}

/**
 * Hears the job notices of every process until the function it returns is called. On PostgreSQL,
 * their NOTIFY (announceJobNotice) on a connection of its own (outside the pool), connecting again
 * after a loss with a growing delay; `queued` is called on each (re)connect too, for what was
 * queued while nobody listened. SQLite has no channel between processes: see watchDataVersion.
 */
export function listenForJobNotices(db: Knex, notices: JobNotices, log: Logger): () => Promise<void> {
  if (!isPostgres(db)) return watchDataVersion(db, notices, log);
  const client = db.client as unknown as RawConnections;
  let stopped = false;
  let current: ListeningConnection | null = null;
  let retry: NodeJS.Timeout | undefined;
  let delayMs = 100;
  const reconnect = () => {
    if (stopped) return;
    retry = setTimeout(() => void connect(), delayMs);
    retry.unref();
    delayMs = Math.min(delayMs * 2, 5000);
  };
  const lost = (connection: ListeningConnection, err?: Error) => {
    if (current !== connection) return;
    current = null;
    log.warn({ err }, 'listening for job notices: connection lost');
    void client.destroyRawConnection(connection).catch(() => undefined);
    reconnect();
  };
  const connect = async () => {
    let connection: ListeningConnection | null = null;
    try {
      connection = await client.acquireRawConnection();
      if (stopped) {
        await client.destroyRawConnection(connection);
        return;
      }
      const listening = connection;
      current = listening;
      listening.on('notification', (message) => {
        if (message.channel === queuedChannel) notices.queued();
        else if (message.channel === cancelChannel && message.payload)
          notices.cancelRequested(message.payload);
      });
      listening.on('error', (err) => lost(listening, err));
      listening.on('end', () => lost(listening));
      await listening.query(`LISTEN ${queuedChannel}; LISTEN ${cancelChannel}`);
      delayMs = 100;
      notices.queued();
    } catch (err) {
      if (stopped) return;
      if (connection && current === connection) {
        lost(connection, err as Error);
      } else {
        log.warn({ err }, 'listening for job notices: cannot connect');
        reconnect();
      }
    }
  };
  void connect();
  return async () => {
    stopped = true;
    clearTimeout(retry);
    const connection = current;
    current = null;
    if (connection) await client.destroyRawConnection(connection).catch(() => undefined);
  };
}

/** How often SQLite's data_version is read: soon after a change, less often while none comes. */
const dataVersionPollMs = { least: 2, most: 50 };

/**
 * On SQLite, `queued` whenever another connection (another process: an API enqueueing, another
 * worker ending a job) committed a change since the last look, as `PRAGMA data_version` tells: a
 * read of a counter, which takes no lock and writes nothing, so a worker process can look every
 * few milliseconds where a claim would take the write lock. The looks slow down while nothing
 * changes. A cancellation cannot be told from other changes: a running job hears of one at its
 * next heartbeat.
 */
function watchDataVersion(db: Knex, notices: JobNotices, log: Logger): () => Promise<void> {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let looking: Promise<void> = Promise.resolve();
  let last: number | null = null;
  let delayMs = dataVersionPollMs.least;
  const look = async () => {
    try {
      const rows = (await db.raw('pragma data_version')) as { data_version: number }[];
      const version = toNumber(rows[0]?.data_version);
      if (last !== null && version !== last) {
        notices.queued();
        delayMs = dataVersionPollMs.least;
      } else {
        delayMs = Math.min(delayMs * 2, dataVersionPollMs.most);
      }
      last = version;
    } catch (err) {
      log.warn({ err }, 'watching for job changes failed');
      delayMs = dataVersionPollMs.most;
    }
    if (stopped) return;
    timer = setTimeout(() => (looking = look()), delayMs);
    timer.unref();
  };
  looking = look();
  return async () => {
    stopped = true;
    clearTimeout(timer);
    await looking;
  };
}
