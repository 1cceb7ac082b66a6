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

/**
 * Claims (user, key) for a request, atomically: the first caller gets `claimed`; later callers see
 * the first request in progress or its stored response. Expired claims are replaced.
 */
export async function claimIdempotencyKey(
  db: Knex,
  userId: string,
  key: string,
  requestHash: string,
  now: string,
  expiresAt: string,
): Promise<ClaimResult> {
  await db('idempotency_keys').where({ user_id: userId, key }).where('expires_at', '<', now).delete();
  try {
    await db('idempotency_keys').insert({
      user_id: userId,
      key,
      request_hash: requestHash,
      state: 'pending',
      expires_at: expiresAt,
    });
    return { outcome: 'claimed' };
  } catch (error) {
    if (!isUniqueViolation(error)) throw error;
  }
  const row = await db('idempotency_keys').where({ user_id: userId, key }).first();
  if (!row || row.state !== 'done')
    return { outcome: 'in-progress', requestHash: row?.request_hash ?? requestHash };
  return {
    outcome: 'done',
    requestHash: row.request_hash,
    response: {
      status: toNullableNumber(row.status) ?? 200,
      headers: JSON.parse(row.headers ?? '{}'),
      body: row.body,
    },
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
  return db('idempotency_keys').where('expires_at', '<', now).delete();
}
