import type { Knex } from 'knex';
import { parseJson, toNumber } from './database.js';

// The durable event logs of services, operations, jobs and runs: numbered per owner, so that a
// reader resumes exactly after the last event it saw (Last-Event-ID), across restarts.

export interface StoredEvent {
  seq: number;
  at: string;
  type: string;
  message: string;
  data: Record<string, unknown>;
}

export type EventOwner = 'service' | 'operation' | 'job' | 'run';

const tables: Record<EventOwner, { owners: string; events: string }> = {
  service: { owners: 'services', events: 'service_events' },
  operation: { owners: 'operations', events: 'operation_events' },
  job: { owners: 'jobs', events: 'job_events' },
  run: { owners: 'runs', events: 'run_events' },
};

/**
 * Appends an event with the next sequence number of its owner, in the caller's transaction: the
 * counter row is updated first, which also serialises concurrent writers.
 */
export async function appendEvent(
  trx: Knex.Transaction,
  owner: EventOwner,
  ownerId: string,
  event: Omit<StoredEvent, 'seq'>,
): Promise<number> {
  const { owners, events } = tables[owner];
  await trx(owners).where({ id: ownerId }).increment('event_seq', 1);
  const row = await trx(owners).where({ id: ownerId }).first('event_seq');
  if (!row) throw new Error(`no ${owner} ${ownerId} to record an event of`);
  const seq = toNumber(row.event_seq);
  await trx(events).insert({
    [`${owner}_id`]: ownerId,
    seq,
    at: event.at,
    type: event.type,
    message: event.message,
    data: JSON.stringify(event.data),
  });
  return seq;
}

export async function listEvents(
  db: Knex,
  owner: EventOwner,
  ownerId: string,
  afterSeq: number,
  limit: number,
): Promise<StoredEvent[]> {
  const rows = await db(tables[owner].events)
    .where({ [`${owner}_id`]: ownerId })
    .where('seq', '>', afterSeq)
    .orderBy('seq')
    .limit(limit)
    .select('seq', 'at', 'type', 'message', 'data');
  return rows.map((r: { seq: number | string; at: string; type: string; message: string; data: string }) => ({
    seq: toNumber(r.seq),
    at: r.at,
    type: r.type,
    message: r.message,
    data: parseJson<Record<string, unknown>>(r.data),
  }));
}

/**
 * Removes the events of services deleted before `before` (their rows are gone; the events stay a
 * while so that a follower reads the last ones). Returns how many were removed.
 */
export async function purgeOrphanServiceEvents(db: Knex, before: string): Promise<number> {
  const gone = db('service_events as e')
    .whereNotExists(db('services as s').whereRaw('s.id = e.service_id'))
    .groupBy('e.service_id')
    .havingRaw('max(e.at) < ?', [before])
    .select('e.service_id');
  return db('service_events').whereIn('service_id', gone).delete();
}
