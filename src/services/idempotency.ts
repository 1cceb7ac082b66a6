import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { DomainError } from '../errors.js';
import * as q from '../db/idempotency.js';
import type { StoredResponse } from '../db/idempotency.js';
import type { ChangeRecord } from '../db/with-change.js';
import { randomBase62 } from '../ids.js';

const retentionMs = 24 * 60 * 60_000;
/** How long a claim outlives its process: a retry after a crash may proceed this soon after. */
export const claimLeaseMs = 10_000;

export type IdempotencyDecision = { kind: 'proceed' } | { kind: 'replay'; response: StoredResponse };

/**
 * `Idempotency-Key` handling: the first request with a key runs; a repeat with the same request
 * replays its response; a repeat with a different request is refused (422); one that arrives while
 * the first still runs is refused (409) rather than run twice.
 *
 * A claim is leased to this process and renewed while its request runs. Should the process die,
 * the answer of a request that had created something was kept in the same transaction (see
 * `answerRecord`), and a retry replays it; a request that had changed nothing leaves a claim
 * whose lease runs out, and a retry then runs.
 */
export class IdempotencyService {
  /** This process, as the owner of its claims. */
  private readonly owner = `proc_${randomBase62(16)}`;
  private readonly held = new Set<string>();
  private renewal: NodeJS.Timeout | null = null;

  constructor(private readonly deps: { db: Knex; clock: Clock; leaseMs?: number }) {}

  private get leaseMs(): number {
    return this.deps.leaseMs ?? claimLeaseMs;
  }

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
      { owner: this.owner, until: iso(new Date(now.getTime() + this.leaseMs)) },
    );
    if (claim.outcome === 'claimed') {
      this.hold(userId, key);
      return { kind: 'proceed' };
    }
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

  /**
   * The row that keeps `response` as the answer to (user, key), to be written in the transaction
   * of the change it reports: a crash after that commit cannot lose it.
   */
  answerRecord(userId: string, key: string, response: StoredResponse): ChangeRecord {
    const expiresAt = iso(new Date(this.deps.clock().getTime() + retentionMs));
    return { table: q.answersTable, row: q.answerRow(userId, key, response, expiresAt) };
  }

  async complete(userId: string, key: string, response: StoredResponse): Promise<void> {
    try {
      await q.completeIdempotencyKey(this.deps.db, userId, key, response);
    } finally {
      this.release(userId, key);
    }
  }

  /** The request failed: forget the key so that the client may try again. */
  async abandon(userId: string, key: string): Promise<void> {
    try {
      await q.releaseIdempotencyKey(this.deps.db, userId, key);
    } finally {
      this.release(userId, key);
    }
  }

  purgeExpired(): Promise<number> {
    return q.deleteExpiredIdempotencyKeys(this.deps.db, iso(this.deps.clock()));
  }

  /** Stops renewing leases (on shutdown): what is still held runs out and may be retried. */
  close(): void {
    if (this.renewal) clearInterval(this.renewal);
    this.renewal = null;
    this.held.clear();
  }

  private hold(userId: string, key: string): void {
    this.held.add(`${userId}\u0000${key}`);
    if (this.renewal) return;
    // Renewed well before they run out, whatever the requests do meanwhile.
    this.renewal = setInterval(() => {
      const until = iso(new Date(this.deps.clock().getTime() + this.leaseMs));
      q.renewIdempotencyLeases(this.deps.db, this.owner, until).catch(() => undefined);
    }, this.leaseMs / 3);
    this.renewal.unref();
  }

  private release(userId: string, key: string): void {
    this.held.delete(`${userId}\u0000${key}`);
    if (this.held.size === 0 && this.renewal) {
      clearInterval(this.renewal);
      this.renewal = null;
    }
  }
}
