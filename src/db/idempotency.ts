import type { Knex } from 'knex';
import { isUniqueViolation, toNullableNumber } from './database.js';

export interface StoredResponse {
  status: number;
  headers: Record<string, string>;
  body: string | null;
}

export type ClaimResult =
  | { outcome: 'claimed' }
  | { outcome: 'in-progress'; requestHash: string }
  | { outcome: 'done'; requestHash: string; response: StoredResponse };

/** The process holding a claim, and until when it holds it unless it renews it. */
export interface ClaimLease {
  owner: string;
  until: string;
}

export const answersTable = 'idempotency_answers';

/**
 * Claims (user, key) for a request, atomically: the first caller gets `claimed`; later callers see
 * the first request in progress or its stored response. Expired claims are replaced, and so is a
 * pending claim whose lease ran out (its process died before it changed anything: an answer kept
 * with a change would have been found) when the same request asks again.
 */
export async function claimIdempotencyKey(
  db: Knex,
  userId: string,
  key: string,
  requestHash: string,
  now: string,
  expiresAt: string,
  lease: ClaimLease | null = null,
): Promise<ClaimResult> {
  await db('idempotency_keys').where({ user_id: userId, key }).where('expires_at', '<', now).delete();
  await db(answersTable).where({ user_id: userId, key }).where('expires_at', '<', now).delete();
  try {
    await db('idempotency_keys').insert({
      user_id: userId,
      key,
      request_hash: requestHash,
      state: 'pending',
      expires_at: expiresAt,
      owner: lease?.owner ?? null,
      lease_until: lease?.until ?? null,
    });
    return { outcome: 'claimed' };
  } catch (error) {
    if (!isUniqueViolation(error)) throw error;
  }
  const [row, answer] = await Promise.all([
    db('idempotency_keys').where({ user_id: userId, key }).first(),
    db(answersTable).where({ user_id: userId, key }).first(),
  ]);
  // The answer as sent, once recorded; else the one kept with the change (the process died first).
  if (row?.state === 'done') {
    return { outcome: 'done', requestHash: row.request_hash, response: storedResponse(row) };
  }
  if (answer && row) {
    return { outcome: 'done', requestHash: row.request_hash, response: storedResponse(answer) };
  }
  if (row && lease && row.lease_until !== null && row.lease_until < now && row.request_hash === requestHash) {
    const taken = await db('idempotency_keys')
      .where({ user_id: userId, key, state: 'pending', lease_until: row.lease_until })
      .update({ owner: lease.owner, lease_until: lease.until });
    if (taken === 1) return { outcome: 'claimed' };
  }
  return { outcome: 'in-progress', requestHash: row?.request_hash ?? requestHash };
}

function storedResponse(row: {
  status: unknown;
  headers: string | null;
  body: string | null;
}): StoredResponse {
  return {
    status: toNullableNumber(row.status) ?? 200,
    headers: JSON.parse(row.headers ?? '{}'),
    body: row.body,
  };
}

/** Extends the leases of the claims `owner` still holds (its requests still run). */
export async function renewIdempotencyLeases(db: Knex, owner: string, until: string): Promise<void> {
  await db('idempotency_keys').where({ owner, state: 'pending' }).update({ lease_until: until });
}

/** The row that keeps a request's answer, written in the transaction of what it created. */
export function answerRow(userId: string, key: string, response: StoredResponse, expiresAt: string): object {
  return {
    user_id: userId,
    key,
    status: response.status,
    headers: JSON.stringify(response.headers),
    body: response.body,
    expires_at: expiresAt,
  };
}

export async function completeIdempotencyKey(
  db: Knex,
  userId: string,
  key: string,
  response: StoredResponse,
): Promise<void> {
  await db('idempotency_keys')
    .where({ user_id: userId, key })
    .update({
      state: 'done',
      status: response.status,
      headers: JSON.stringify(response.headers),
      body: response.body,
    });
}

export async function releaseIdempotencyKey(db: Knex, userId: string, key: string): Promise<void> {
  await db('idempotency_keys').where({ user_id: userId, key, state: 'pending' }).delete();
}

export async function deleteExpiredIdempotencyKeys(db: Knex, now: string): Promise<number> {
  await db(answersTable).where('expires_at', '<', now).delete();
  return db('idempotency_keys').where('expires_at', '<', now).delete();
}
