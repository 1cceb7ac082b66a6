import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { DomainError } from '../errors.js';
import * as q from '../db/idempotency.js';
import type { StoredResponse } from '../db/idempotency.js';

const retentionMs = 24 * 60 * 60_000;

export type IdempotencyDecision = { kind: 'proceed' } | { kind: 'replay'; response: StoredResponse };

/**
 * `Idempotency-Key` handling: the first request with a key runs; a repeat with the same request
 * replays its response; a repeat with a different request is refused (422); one that arrives while
 * the first still runs is refused (409) rather than run twice.
 */
export class IdempotencyService {
  constructor(private readonly deps: { db: Knex; clock: Clock }) {}

  static fingerprint(operationId: string, path: string, body: unknown): string {
    return createHash('sha256')
      .update(JSON.stringify([operationId, path, body ?? null]))
      .digest('hex');
  }

  async begin(userId: string, key: string, fingerprint: string): Promise<IdempotencyDecision> {
    const now = this.deps.clock();
    const claim = await q.claimIdempotencyKey(
      this.deps.db,
      userId,
      key,
      fingerprint,
      iso(now),
      iso(new Date(now.getTime() + retentionMs)),
    );
    if (claim.outcome === 'claimed') return { kind: 'proceed' };
    if (claim.requestHash !== fingerprint) {
      throw new DomainError('idempotency-key-reuse', 'this Idempotency-Key was used for a different request');
    }
    if (claim.outcome === 'in-progress') {
      throw new DomainError(
        'idempotency-in-progress',
        'a request with this Idempotency-Key is still being processed',
        {},
        { 'Retry-After': '1' },
      );
    }
    return { kind: 'replay', response: claim.response };
  }

  complete(userId: string, key: string, response: StoredResponse): Promise<void> {
    return q.completeIdempotencyKey(this.deps.db, userId, key, response);
  }

  /** The request failed: forget the key so that the client may try again. */
  abandon(userId: string, key: string): Promise<void> {
    return q.releaseIdempotencyKey(this.deps.db, userId, key);
  }

  purgeExpired(): Promise<number> {
    return q.deleteExpiredIdempotencyKeys(this.deps.db, iso(this.deps.clock()));
  }
}
