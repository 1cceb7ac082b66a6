import type { Knex } from 'knex';
import { parseJson, toNumber } from './database.js';

// The durable event logs of services and operations: numbered per owner, so that a reader resumes
// exactly after the last event it saw (Last-Event-ID), across restarts.

export interface StoredEvent {
  seq: number;
  at: string;
  type: string;
  message: string;
  data: Record<string, unknown>;
}

/**
 * Appends an event with the next sequence number of its owner (a service or an operation), in the
 * caller's transaction: the counter row is updated first, which also serialises concurrent writers.
 */
export async function appendEvent(
  trx: Knex.Transaction,
  owner: 'service' | 'operation',
  ownerId: string,
  event: Omit<StoredEvent, 'seq'>,
): Promise<number> {
  const table = owner === 'service' ? 'services' : 'operations';
  await trx(table).where({ id: ownerId }).increment('event_seq', 1);
  const row = await trx(table).where({ id: ownerId }).first('event_seq');
  if (!row) throw new Error(`no ${owner} ${ownerId} to record an event of`);
  const seq = toNumber(row.event_seq);
  await trx(owner === 'service' ? 'service_events' : 'operation_events').insert({
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
  owner: 'service' | 'operation',
  ownerId: string,
  afterSeq: number,
  limit: number,
): Promise<StoredEvent[]> {
  const rows = await db(owner === 'service' ? 'service_events' : 'operation_events')
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
