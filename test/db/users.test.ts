import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { isUniqueViolation } from '../../src/db/database.js';
import { encodeCursor } from '../../src/db/pagination.js';
import {
  escapeLike,
  findUserById,
  findUserByOidc,
  findUserByUsername,
  insertUser,
  listUsers,
  touchUserLastSeen,
  updateUserProfile,
  usernameTaken,
} from '../../src/db/users.js';
import { testEngines } from '../fixtures/databases.js';
import {
  aUser,
  expectInvalidCursor,
  instant,
  openMigratedDatabase,
  rejectionOf,
  storedUser,
  uniqueId,
  type MigratedDatabase,
} from './builders.js';

describe.each(testEngines())('users (%s)', (engine) => {
  let t: MigratedDatabase;

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
  });
  afterAll(() => t.close());

  describe('insertUser', () => {
    it('stores every field, read back unchanged', async () => {
      const user = aUser({
        name: 'Ada Lovelace',
        email: 'ada@example.org',
        groups: ['lab', 'admins'],
        admin: true,
        oidcIssuer: 'https://idp.example',
        oidcSubject: 'sub-ada',
        createdAt: instant(10),
        updatedAt: instant(20),
        lastSeenAt: instant(30),
      });
      await insertUser(t.knex, user);
      expect(await findUserById(t.knex, user.id)).toEqual(user);
    });

    it('refuses a second user with the same username', async () => {
      const user = await storedUser(t.knex);
      const error = await rejectionOf(insertUser(t.knex, aUser({ id: 'usr_dup', username: user.username })));
      expect(isUniqueViolation(error)).toBe(true);
    });

    it('refuses a second user with the same OIDC issuer and subject', async () => {
      const identity = { oidcIssuer: 'https://idp.example', oidcSubject: uniqueId('sub') };
      await storedUser(t.knex, identity);
      const error = await rejectionOf(insertUser(t.knex, aUser(identity)));
      expect(isUniqueViolation(error)).toBe(true);
    });

    it('allows any number of local users without an OIDC identity', async () => {
      const a = await storedUser(t.knex);
      const b = await storedUser(t.knex);
      expect((await findUserById(t.knex, a.id))?.oidcSubject).toBeNull();
      expect((await findUserById(t.knex, b.id))?.oidcSubject).toBeNull();
    });
  });

  describe('findUserById', () => {
    it('returns null for an unknown id', async () => {
      expect(await findUserById(t.knex, 'usr_nobody')).toBeNull();
    });
  });

  describe('findUserByUsername', () => {
    it('finds the user with exactly that username, case included', async () => {
      const user = await storedUser(t.knex, { username: uniqueId('grace') });
      expect(await findUserByUsername(t.knex, user.username)).toEqual(user);
      expect(await findUserByUsername(t.knex, user.username.toUpperCase())).toBeNull();
    });
  });

  describe('findUserByOidc', () => {
    it('finds the user by issuer and subject together', async () => {
      const user = await storedUser(t.knex, { oidcIssuer: 'https://a.example', oidcSubject: uniqueId('s') });
      expect(await findUserByOidc(t.knex, 'https://a.example', user.oidcSubject ?? '')).toEqual(user);
      expect(await findUserByOidc(t.knex, 'https://b.example', user.oidcSubject ?? '')).toBeNull();
    });
  });

  describe('usernameTaken', () => {
    it('is true for a stored username and false otherwise', async () => {
      const user = await storedUser(t.knex);
      expect(await usernameTaken(t.knex, user.username)).toBe(true);
      expect(await usernameTaken(t.knex, `${user.username}-free`)).toBe(false);
    });
  });

  describe('updateUserProfile', () => {
    it('changes only the fields given, and the update time', async () => {
      const user = await storedUser(t.knex, { name: 'Old', email: 'old@example.org', groups: ['a'] });
      await updateUserProfile(t.knex, user.id, { email: 'new@example.org' }, instant(99));
      expect(await findUserById(t.knex, user.id)).toEqual({
        ...user,
        email: 'new@example.org',
        updatedAt: instant(99),
      });
    });

    it('can clear the name and email, replace the groups and grant administration', async () => {
      const user = await storedUser(t.knex, { name: 'Old', email: 'old@example.org', groups: ['a'] });
      await updateUserProfile(
        t.knex,
        user.id,
        { name: null, email: null, groups: ['b', 'c'], admin: true },
        instant(5),
      );
      expect(await findUserById(t.knex, user.id)).toMatchObject({
        name: null,
        email: null,
        groups: ['b', 'c'],
        admin: true,
      });
    });

    it('leaves other users alone', async () => {
      const user = await storedUser(t.knex, { name: 'Keep' });
      const other = await storedUser(t.knex, { name: 'Other' });
      await updateUserProfile(t.knex, other.id, { name: 'Changed' }, instant(5));
      expect(await findUserById(t.knex, user.id)).toEqual(user);
    });
  });

  describe('touchUserLastSeen', () => {
    it('records when the user was last seen without touching the update time', async () => {
      const user = await storedUser(t.knex);
      await touchUserLastSeen(t.knex, user.id, instant(77));
      expect(await findUserById(t.knex, user.id)).toEqual({ ...user, lastSeenAt: instant(77) });
    });
  });

  describe('listUsers', () => {
    it('searches without regard to case in every alphabet, on every engine', async () => {
      const user = await storedUser(t.knex, { username: uniqueId('emile'), name: 'Émile Zola', email: null });
      for (const q of ['émile', 'ÉMILE', 'zola']) {
        expect((await listUsers(t.knex, { q }, { limit: 10 })).items.map((u) => u.id)).toContain(user.id);
      }
      await updateUserProfile(t.knex, user.id, { name: 'Œdipe Roi' }, instant(5));
      expect((await listUsers(t.knex, { q: 'œdipe' }, { limit: 10 })).items.map((u) => u.id)).toEqual([
        user.id,
      ]);
      expect((await listUsers(t.knex, { q: 'émile zola' }, { limit: 10 })).items).toEqual([]);
    });

    it('lists users in username order, a page at a time', async () => {
      const prefix = uniqueId('pager');
      for (const suffix of ['d', 'b', 'e', 'a', 'c'])
        await storedUser(t.knex, { username: `${prefix}-${suffix}` });
      const first = await listUsers(t.knex, { q: prefix }, { limit: 2 });
      const second = await listUsers(
        t.knex,
        { q: prefix },
        { limit: 2, cursor: first.nextCursor ?? undefined },
      );
      const third = await listUsers(
        t.knex,
        { q: prefix },
        { limit: 2, cursor: second.nextCursor ?? undefined },
      );
      expect(
        [first, second, third].map((p) => p.items.map((u) => u.username.slice(prefix.length + 1))),
      ).toEqual([['a', 'b'], ['c', 'd'], ['e']]);
      expect(third.nextCursor).toBeNull();
    });

    it('lists every user without a filter', async () => {
      const user = await storedUser(t.knex);
      const all = await listUsers(t.knex, {}, { limit: 1000 });
      const names = all.items.map((u) => u.username);
      expect(names).toContain(user.username);
      expect(names).toEqual([...names].sort());
    });

    it('matches q in the username, the name or the email, ignoring case', async () => {
      const tag = uniqueId('needle');
      const byUsername = await storedUser(t.knex, { username: `${tag}-u` });
      const byName = await storedUser(t.knex, { name: `Dr ${tag.toUpperCase()} Who` });
      const byEmail = await storedUser(t.knex, { email: `x.${tag}@Example.org` });
      await storedUser(t.knex, { name: 'unrelated' });
      const found = await listUsers(t.knex, { q: tag.toUpperCase() }, { limit: 10 });
      expect(found.items.map((u) => u.id).sort()).toEqual([byUsername.id, byName.id, byEmail.id].sort());
    });

    it('matches %, _ and \\ in q literally', async () => {
      const tag = uniqueId('lit');
      const percent = await storedUser(t.knex, { name: `${tag} saves 50% time` });
      await storedUser(t.knex, { name: `${tag} saves 500 time` });
      const underscore = await storedUser(t.knex, { name: `${tag} a_b` });
      await storedUser(t.knex, { name: `${tag} axb` });
      const backslash = await storedUser(t.knex, { name: `${tag} c\\d` });
      await storedUser(t.knex, { name: `${tag} cd` });
      const ids = async (q: string) => (await listUsers(t.knex, { q }, { limit: 10 })).items.map((u) => u.id);
      expect(await ids('50%')).toEqual([percent.id]);
      expect(await ids('a_b')).toEqual([underscore.id]);
      expect(await ids('c\\d')).toEqual([backslash.id]);
    });

    it('returns an empty page when nothing matches', async () => {
      expect(await listUsers(t.knex, { q: 'zz-no-such-user-zz' }, { limit: 10 })).toEqual({
        items: [],
        nextCursor: null,
      });
    });

    it('refuses a cursor issued for another list', async () => {
      await expectInvalidCursor(
        listUsers(t.knex, {}, { limit: 2, cursor: encodeCursor('projects', ['anything']) }),
      );
    });
  });
});

describe('escapeLike', () => {
  it('escapes the LIKE wildcards and the escape character itself', () => {
    expect(escapeLike('50%_a\\b')).toBe('50\\%\\_a\\\\b');
  });
});
