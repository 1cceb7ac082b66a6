import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  claimIdempotencyKey,
  completeIdempotencyKey,
  deleteExpiredIdempotencyKeys,
  releaseIdempotencyKey,
  type StoredResponse,
} from '../../src/db/idempotency.js';
import { testEngines } from '../fixtures/databases.js';
import { instant, openMigratedDatabase, uniqueId, type MigratedDatabase } from './builders.js';

const created: StoredResponse = {
  status: 201,
  headers: { location: '/api/v1/projects/p1', etag: '"1"' },
  body: '{"id":"p1"}',
};

describe.each(testEngines())('idempotency (%s)', (engine) => {
  let t: MigratedDatabase;

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
  });
  afterAll(() => t.close());

  /** Claims at `now` seconds a key that expires at `expires` seconds. */
  const claim = (userId: string, key: string, hash: string, now = 0, expires = 100) =>
    claimIdempotencyKey(t.knex, userId, key, hash, instant(now), instant(expires));

  describe('claimIdempotencyKey', () => {
    it('claims a new key', async () => {
      expect(await claim(uniqueId('usr'), 'k', 'hash-1')).toEqual({ outcome: 'claimed' });
    });

    it('reports a claimed key as in progress, with the hash of the first request', async () => {
      const user = uniqueId('usr');
      await claim(user, 'k', 'hash-1');
      expect(await claim(user, 'k', 'hash-2', 1)).toEqual({ outcome: 'in-progress', requestHash: 'hash-1' });
    });

    it('keeps keys of different users and different keys apart', async () => {
      const user = uniqueId('usr');
      const other = uniqueId('usr');
      await claim(user, 'k', 'hash-1');
      expect(await claim(other, 'k', 'hash-1')).toEqual({ outcome: 'claimed' });
      expect(await claim(user, 'k2', 'hash-1')).toEqual({ outcome: 'claimed' });
    });

    it('replaces a claim that has expired, whether pending or done', async () => {
      const user = uniqueId('usr');
      await claim(user, 'pending', 'hash-1', 0, 10);
      await claim(user, 'done', 'hash-1', 0, 10);
      await completeIdempotencyKey(t.knex, user, 'done', created);
      expect(await claim(user, 'pending', 'hash-2', 11, 50)).toEqual({ outcome: 'claimed' });
      expect(await claim(user, 'done', 'hash-2', 11, 50)).toEqual({ outcome: 'claimed' });
      expect(await claim(user, 'done', 'hash-3', 12, 50)).toEqual({
        outcome: 'in-progress',
        requestHash: 'hash-2',
      });
    });

    it('still holds a claim at the very instant it expires', async () => {
      const user = uniqueId('usr');
      await claim(user, 'k', 'hash-1', 0, 10);
      expect(await claim(user, 'k', 'hash-2', 10, 60)).toEqual({
        outcome: 'in-progress',
        requestHash: 'hash-1',
      });
    });

    it('gives exactly one of many simultaneous claims of one key', async () => {
      const user = uniqueId('usr');
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => claim(user, 'race', `hash-${i}`)),
      );
      const winners = results.flatMap((r, i) => (r.outcome === 'claimed' ? [`hash-${i}`] : []));
      expect(winners).toHaveLength(1);
      expect(results.filter((r) => r.outcome !== 'claimed')).toEqual(
        Array.from({ length: 19 }, () => ({ outcome: 'in-progress', requestHash: winners[0] })),
      );
    });

    it('gives exactly one of many simultaneous claims of an expired key', async () => {
      const user = uniqueId('usr');
      await claim(user, 'race', 'stale', 0, 10);
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => claim(user, 'race', `hash-${i}`, 20, 100)),
      );
      expect(results.filter((r) => r.outcome === 'claimed')).toHaveLength(1);
      expect(results.filter((r) => r.outcome === 'in-progress')).toHaveLength(19);
    });
  });

  describe('completeIdempotencyKey', () => {
    it('stores the response, which later claims replay', async () => {
      const user = uniqueId('usr');
      await claim(user, 'k', 'hash-1');
      await completeIdempotencyKey(t.knex, user, 'k', created);
      expect(await claim(user, 'k', 'hash-2', 1)).toEqual({
        outcome: 'done',
        requestHash: 'hash-1',
        response: created,
      });
    });

    it('keeps a response without a body', async () => {
      const user = uniqueId('usr');
      await claim(user, 'k', 'hash-1');
      await completeIdempotencyKey(t.knex, user, 'k', { status: 204, headers: {}, body: null });
      expect(await claim(user, 'k', 'hash-1', 1)).toMatchObject({
        outcome: 'done',
        response: { status: 204, headers: {}, body: null },
      });
    });
  });

  describe('releaseIdempotencyKey', () => {
    it('forgets a pending claim, so that the key can be claimed again', async () => {
      const user = uniqueId('usr');
      await claim(user, 'k', 'hash-1');
      await releaseIdempotencyKey(t.knex, user, 'k');
      expect(await claim(user, 'k', 'hash-2', 1)).toEqual({ outcome: 'claimed' });
    });

    it('keeps a completed claim', async () => {
      const user = uniqueId('usr');
      await claim(user, 'k', 'hash-1');
      await completeIdempotencyKey(t.knex, user, 'k', created);
      await releaseIdempotencyKey(t.knex, user, 'k');
      expect((await claim(user, 'k', 'hash-1', 1)).outcome).toBe('done');
    });
  });

  describe('deleteExpiredIdempotencyKeys', () => {
    it('deletes the expired keys only and says how many', async () => {
      const user = uniqueId('usr');
      // Every other claim in this file expires at 10 s or later.
      await claim(user, 'old-pending', 'h', 0, 1);
      await claim(user, 'old-done', 'h', 0, 2);
      await completeIdempotencyKey(t.knex, user, 'old-done', created);
      await claim(user, 'current', 'h', 0, 1_000);
      expect(await deleteExpiredIdempotencyKeys(t.knex, instant(5))).toBe(2);
      const left = (await t.knex('idempotency_keys').where({ user_id: user }).select('key')) as {
        key: string;
      }[];
      expect(left.map((k) => k.key)).toEqual(['current']);
    });
  });
});
