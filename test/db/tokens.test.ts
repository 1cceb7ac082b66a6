import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { isUniqueViolation } from '../../src/db/database.js';
import {
  findTokenBySecretHash,
  findUserToken,
  hasTokenWithHash,
  insertToken,
  listUserTokens,
  revokeUserToken,
  touchToken,
  type ApiToken,
} from '../../src/db/tokens.js';
import { testEngines } from '../fixtures/databases.js';
import {
  aToken,
  expectInvalidCursor,
  instant,
  openMigratedDatabase,
  rejectionOf,
  storedUser,
  uniqueId,
  type MigratedDatabase,
} from './builders.js';

describe.each(testEngines())('tokens (%s)', (engine) => {
  let t: MigratedDatabase;

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
  });
  afterAll(() => t.close());

  async function storedToken(userId: string, overrides: Partial<ApiToken> = {}) {
    const token = aToken(userId, overrides);
    const secretHash = uniqueId('hash');
    await insertToken(t.knex, token, secretHash);
    return { token, secretHash };
  }

  describe('insertToken', () => {
    it('stores every field, read back unchanged', async () => {
      const user = await storedUser(t.knex);
      const { token } = await storedToken(user.id, {
        name: 'ci',
        scopes: ['read'],
        createdAt: instant(1),
        expiresAt: instant(2),
        lastUsedAt: instant(3),
        revokedAt: instant(4),
      });
      expect(await findUserToken(t.knex, user.id, token.id)).toEqual(token);
    });

    it('refuses a second token with the same secret hash', async () => {
      const user = await storedUser(t.knex);
      const { secretHash } = await storedToken(user.id);
      const error = await rejectionOf(insertToken(t.knex, aToken(user.id), secretHash));
      expect(isUniqueViolation(error)).toBe(true);
    });

    it('refuses a token of a user who does not exist', async () => {
      const error = await rejectionOf(insertToken(t.knex, aToken('usr_ghost'), uniqueId('hash')));
      expect(isUniqueViolation(error)).toBe(false);
    });
  });

  describe('findTokenBySecretHash', () => {
    it('returns the token and its user, each with its own name and times', async () => {
      const user = await storedUser(t.knex, {
        name: 'Ada',
        email: 'ada@example.org',
        groups: ['lab'],
        admin: true,
        createdAt: instant(100),
        updatedAt: instant(200),
        lastSeenAt: instant(300),
      });
      const { token, secretHash } = await storedToken(user.id, { name: 'laptop', createdAt: instant(400) });
      expect(await findTokenBySecretHash(t.knex, secretHash)).toEqual({ token, user });
    });

    it('returns revoked and expired tokens too, leaving the judgement to the caller', async () => {
      const user = await storedUser(t.knex);
      const { token, secretHash } = await storedToken(user.id, {
        expiresAt: instant(1),
        revokedAt: instant(2),
      });
      expect((await findTokenBySecretHash(t.knex, secretHash))?.token).toEqual(token);
    });

    it('returns null for an unknown hash', async () => {
      expect(await findTokenBySecretHash(t.knex, 'no-such-hash')).toBeNull();
    });
  });

  describe('findUserToken', () => {
    it("returns null for another user's token and for an unknown id", async () => {
      const owner = await storedUser(t.knex);
      const other = await storedUser(t.knex);
      const { token } = await storedToken(owner.id);
      expect(await findUserToken(t.knex, other.id, token.id)).toBeNull();
      expect(await findUserToken(t.knex, owner.id, 'tok_unknown')).toBeNull();
    });
  });

  describe('listUserTokens', () => {
    it("lists only the user's tokens, newest first, ties broken by id, a page at a time", async () => {
      const user = await storedUser(t.knex);
      const other = await storedUser(t.knex);
      await storedToken(other.id, { createdAt: instant(5) });
      const made = [
        await storedToken(user.id, { id: 'tok_b', createdAt: instant(1) }),
        await storedToken(user.id, { id: 'tok_a', createdAt: instant(3) }),
        await storedToken(user.id, { id: 'tok_c', createdAt: instant(3) }),
        await storedToken(user.id, { id: 'tok_d', createdAt: instant(2) }),
        await storedToken(user.id, { id: 'tok_e', createdAt: instant(3) }),
      ];
      const first = await listUserTokens(t.knex, user.id, { limit: 2 });
      const second = await listUserTokens(t.knex, user.id, {
        limit: 2,
        cursor: first.nextCursor ?? undefined,
      });
      const third = await listUserTokens(t.knex, user.id, {
        limit: 2,
        cursor: second.nextCursor ?? undefined,
      });
      expect([first, second, third].map((p) => p.items.map((tok) => tok.id))).toEqual([
        ['tok_e', 'tok_c'],
        ['tok_a', 'tok_d'],
        ['tok_b'],
      ]);
      expect(third.nextCursor).toBeNull();
      expect(first.items[0]).toEqual(made[4]?.token);
    });

    it('returns an empty page for a user without tokens', async () => {
      const user = await storedUser(t.knex);
      expect(await listUserTokens(t.knex, user.id, { limit: 5 })).toEqual({ items: [], nextCursor: null });
    });

    it('refuses a cursor issued for another list', async () => {
      const user = await storedUser(t.knex);
      await expectInvalidCursor(
        listUserTokens(t.knex, user.id, {
          limit: 2,
          cursor: Buffer.from('{"l":"users","k":["a","b"]}').toString('base64url'),
        }),
      );
    });
  });

  describe('revokeUserToken', () => {
    it('records the revocation time once; revoking again keeps the first time', async () => {
      const user = await storedUser(t.knex);
      const { token } = await storedToken(user.id);
      await revokeUserToken(t.knex, user.id, token.id, instant(10));
      await revokeUserToken(t.knex, user.id, token.id, instant(20));
      expect((await findUserToken(t.knex, user.id, token.id))?.revokedAt).toBe(instant(10));
    });

    it("does not revoke another user's token", async () => {
      const owner = await storedUser(t.knex);
      const other = await storedUser(t.knex);
      const { token } = await storedToken(owner.id);
      await revokeUserToken(t.knex, other.id, token.id, instant(10));
      expect((await findUserToken(t.knex, owner.id, token.id))?.revokedAt).toBeNull();
    });
  });

  describe('touchToken', () => {
    it('records when the token was last used', async () => {
      const user = await storedUser(t.knex);
      const { token } = await storedToken(user.id);
      await touchToken(t.knex, token.id, instant(42));
      expect(await findUserToken(t.knex, user.id, token.id)).toEqual({ ...token, lastUsedAt: instant(42) });
    });
  });

  describe('hasTokenWithHash', () => {
    it('is true for a stored hash and false otherwise', async () => {
      const user = await storedUser(t.knex);
      const { secretHash } = await storedToken(user.id);
      expect(await hasTokenWithHash(t.knex, secretHash)).toBe(true);
      expect(await hasTokenWithHash(t.knex, `${secretHash}x`)).toBe(false);
    });
  });
});
