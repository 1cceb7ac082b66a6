import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { isUniqueViolation, toNumber } from '../../src/db/database.js';
import {
  deleteProject,
  findPersonalProject,
  findProjectForUser,
  insertProject,
  listAllProjects,
  listUserProjects,
  lockProject,
  projectExists,
  updateProject,
  userProjectsForProfile,
  type ProjectFilter,
  type ProjectView,
} from '../../src/db/projects.js';
import {
  countOwners,
  deleteProjectMember,
  findProjectMember,
  insertProjectMember,
  listProjectMembers,
  updateProjectMemberRole,
} from '../../src/db/members.js';
import { findQuota, updateQuotaLimits, type QuotaAmounts } from '../../src/db/quotas.js';
import type { Page, PageRequest } from '../../src/db/pagination.js';
import { testEngines } from '../fixtures/databases.js';
import {
  aProject,
  expectInvalidCursor,
  instant,
  openMigratedDatabase,
  rejectionOf,
  storedProject,
  storedUser,
  uniqueId,
  unlimited,
  type MigratedDatabase,
} from './builders.js';

const limits: QuotaAmounts = {
  cpuMillis: 4000,
  memoryBytes: 64 * 2 ** 30,
  gpu: 1,
  services: 5,
  concurrentJobs: 2,
  storageBytes: 2 ** 40,
};

describe.each(testEngines())('projects (%s)', (engine) => {
  // Engine-specific cases exist only on their engine (never as skipped tests on the other).
  const onPostgres = (name: string, fn: () => Promise<void>) =>
    engine === 'postgres' ? it(name, fn) : undefined;
  const onSqlite = (name: string, fn: () => Promise<void>) =>
    engine === 'sqlite' ? it(name, fn) : undefined;
  let t: MigratedDatabase;

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
  });
  afterAll(() => t.close());

  async function allPages(
    list: (page: PageRequest) => Promise<Page<ProjectView>>,
    limit: number,
  ): Promise<ProjectView[]> {
    const items: ProjectView[] = [];
    let cursor: string | undefined;
    for (let pages = 0; pages < 1000; pages += 1) {
      const page = await list({ limit, cursor });
      items.push(...page.items);
      if (!page.nextCursor) return items;
      cursor = page.nextCursor;
    }
    throw new Error('the list never ended');
  }

  describe('insertProject', () => {
    it("creates the project, its owner's membership and its quota", async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(
        t.knex,
        owner.id,
        { description: 'about', createdAt: instant(7) },
        limits,
      );
      expect(await findProjectForUser(t.knex, project.id, owner.id)).toEqual({ ...project, role: 'owner' });
      expect(await findProjectMember(t.knex, project.id, owner.id)).toEqual({
        userId: owner.id,
        username: owner.username,
        name: null,
        role: 'owner',
        addedAt: instant(7),
      });
      expect(await findQuota(t.knex, project.id)).toEqual({
        projectId: project.id,
        limits,
        usage: { cpuMillis: 0, memoryBytes: 0, gpu: 0, services: 0, concurrentJobs: 0, storageBytes: 0 },
        version: 1,
        updatedAt: instant(7),
      });
    });

    it('stores unlimited quotas as null', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id);
      expect((await findQuota(t.knex, project.id))?.limits).toEqual(unlimited);
    });

    it("leaves nothing behind when the caller's transaction rolls back", async () => {
      const owner = await storedUser(t.knex);
      const project = aProject();
      const failure = new Error('later step failed');
      const error = await rejectionOf(
        t.knex.transaction(async (trx) => {
          await insertProject(trx, project, owner.id, limits);
          throw failure;
        }),
      );
      expect(error).toBe(failure);
      expect(await projectExists(t.knex, project.id)).toBe(false);
      expect(await findQuota(t.knex, project.id)).toBeNull();
      expect(await countOwners(t.knex, project.id)).toBe(0);
    });

    it('refuses a project id that is taken', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id);
      const error = await rejectionOf(storedProject(t.knex, owner.id, { id: project.id }));
      expect(isUniqueViolation(error)).toBe(true);
    });
  });

  describe('projectExists', () => {
    it('is true for a stored project and false otherwise', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id);
      expect(await projectExists(t.knex, project.id)).toBe(true);
      expect(await projectExists(t.knex, `${project.id}-x`)).toBe(false);
    });
  });

  describe('findPersonalProject', () => {
    it("finds the user's personal project, and null for a user without one", async () => {
      const user = await storedUser(t.knex);
      const other = await storedUser(t.knex);
      await storedProject(t.knex, user.id);
      const personal = await storedProject(t.knex, user.id, { kind: 'personal', personalOf: user.id });
      expect(await findPersonalProject(t.knex, user.id)).toEqual({ ...personal, role: null });
      expect(await findPersonalProject(t.knex, other.id)).toBeNull();
    });

    it('refuses a second personal project for the same user', async () => {
      const user = await storedUser(t.knex);
      await storedProject(t.knex, user.id, { kind: 'personal', personalOf: user.id });
      const error = await rejectionOf(
        storedProject(t.knex, user.id, { kind: 'personal', personalOf: user.id }),
      );
      expect(isUniqueViolation(error)).toBe(true);
    });
  });

  describe('findProjectForUser', () => {
    it("returns the project with the user's role", async () => {
      const owner = await storedUser(t.knex);
      const viewer = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id);
      await insertProjectMember(t.knex, project.id, viewer.id, 'viewer', instant(1));
      expect(await findProjectForUser(t.knex, project.id, viewer.id)).toEqual({ ...project, role: 'viewer' });
    });

    it('returns the project with a null role for a user who is not a member', async () => {
      const owner = await storedUser(t.knex);
      const stranger = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id);
      expect(await findProjectForUser(t.knex, project.id, stranger.id)).toEqual({ ...project, role: null });
    });

    it('returns null when the project does not exist', async () => {
      const user = await storedUser(t.knex);
      expect(await findProjectForUser(t.knex, 'no-such-project', user.id)).toBeNull();
    });
  });

  describe('listUserProjects', () => {
    it('lists only the projects the user belongs to, with their role, by id, a page at a time', async () => {
      const user = await storedUser(t.knex);
      const other = await storedUser(t.knex);
      const owned = await storedProject(t.knex, user.id, { id: uniqueId('lup-c') });
      const joined = await storedProject(t.knex, other.id, { id: uniqueId('lup-a') });
      await insertProjectMember(t.knex, joined.id, user.id, 'member', instant(1));
      const personal = await storedProject(t.knex, user.id, {
        id: uniqueId('lup-b'),
        kind: 'personal',
        personalOf: user.id,
      });
      await storedProject(t.knex, other.id);
      const listed = await allPages((page) => listUserProjects(t.knex, user.id, {}, page), 2);
      expect(listed.map((p) => [p.id, p.role])).toEqual([
        [joined.id, 'member'],
        [personal.id, 'owner'],
        [owned.id, 'owner'],
      ]);
    });

    it('keeps only projects of the kind asked for', async () => {
      const user = await storedUser(t.knex);
      await storedProject(t.knex, user.id);
      const personal = await storedProject(t.knex, user.id, { kind: 'personal', personalOf: user.id });
      const filter: ProjectFilter = { kind: 'personal' };
      const listed = await listUserProjects(t.knex, user.id, filter, { limit: 10 });
      expect(listed.items.map((p) => p.id)).toEqual([personal.id]);
    });

    it('refuses a cursor issued for another list', async () => {
      const user = await storedUser(t.knex);
      await expectInvalidCursor(
        listUserProjects(
          t.knex,
          user.id,
          {},
          { limit: 2, cursor: Buffer.from('{"l":"users","k":["x"]}').toString('base64url') },
        ),
      );
    });
  });

  describe('listAllProjects', () => {
    it("lists every project by id, with the viewer's role or null", async () => {
      const admin = await storedUser(t.knex);
      const other = await storedUser(t.knex);
      const mine = await storedProject(t.knex, admin.id);
      const theirs = await storedProject(t.knex, other.id);
      const listed = await allPages((page) => listAllProjects(t.knex, admin.id, {}, page), 3);
      const ids = listed.map((p) => p.id);
      expect(ids).toEqual([...new Set(ids)].sort());
      expect(ids).toEqual(expect.arrayContaining([mine.id, theirs.id]));
      expect(listed.find((p) => p.id === mine.id)?.role).toBe('owner');
      expect(listed.find((p) => p.id === theirs.id)?.role).toBeNull();
      expect(ids).toHaveLength(toNumber((await t.knex('projects').count({ n: '*' }).first())?.n));
    });

    it('keeps only projects of the kind asked for', async () => {
      const admin = await storedUser(t.knex);
      const other = await storedUser(t.knex);
      const personal = await storedProject(t.knex, other.id, { kind: 'personal', personalOf: other.id });
      const listed = await allPages(
        (page) => listAllProjects(t.knex, admin.id, { kind: 'personal' }, page),
        5,
      );
      expect(listed.every((p) => p.kind === 'personal')).toBe(true);
      expect(listed.map((p) => p.id)).toContain(personal.id);
    });
  });

  describe('userProjectsForProfile', () => {
    it('puts the personal project first, then the others by id, up to the maximum', async () => {
      const user = await storedUser(t.knex);
      const b = await storedProject(t.knex, user.id, { id: uniqueId('prof-b') });
      const a = await storedProject(t.knex, user.id, { id: uniqueId('prof-a') });
      const personal = await storedProject(t.knex, user.id, {
        id: uniqueId('prof-z'),
        kind: 'personal',
        personalOf: user.id,
      });
      const ids = async (max: number) =>
        (await userProjectsForProfile(t.knex, user.id, max)).map((p) => p.id);
      expect(await ids(10)).toEqual([personal.id, a.id, b.id]);
      expect(await ids(2)).toEqual([personal.id, a.id]);
    });
  });

  describe('updateProject', () => {
    it('applies the changes and bumps the version when the expected version matches', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id, { description: 'keep' });
      expect(await updateProject(t.knex, project.id, { name: 'Renamed' }, 1, instant(9))).toBe(true);
      expect(await findProjectForUser(t.knex, project.id, owner.id)).toEqual({
        ...project,
        name: 'Renamed',
        version: 2,
        updatedAt: instant(9),
        role: 'owner',
      });
    });

    it('changes nothing and returns false when the version has moved on', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id);
      expect(await updateProject(t.knex, project.id, { description: 'first' }, 1, instant(1))).toBe(true);
      expect(await updateProject(t.knex, project.id, { description: 'second' }, 1, instant(2))).toBe(false);
      expect(await findProjectForUser(t.knex, project.id, owner.id)).toMatchObject({
        description: 'first',
        version: 2,
      });
    });

    it('updates whatever the version when none is expected', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id, { version: 5 });
      expect(await updateProject(t.knex, project.id, { description: 'x' }, null, instant(1))).toBe(true);
      expect((await findProjectForUser(t.knex, project.id, owner.id))?.version).toBe(6);
    });

    it('returns false for a project that does not exist', async () => {
      expect(await updateProject(t.knex, 'no-such-project', { name: 'x' }, null, instant(1))).toBe(false);
    });
  });

  describe('deleteProject', () => {
    it('refuses to delete when the version has moved on', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id, { version: 3 });
      expect(await deleteProject(t.knex, project.id, 2)).toBe(false);
      expect(await projectExists(t.knex, project.id)).toBe(true);
    });

    it('deletes the project with its members and quota when the version matches', async () => {
      const owner = await storedUser(t.knex);
      const member = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id, { version: 3 });
      await insertProjectMember(t.knex, project.id, member.id, 'member', instant(1));
      expect(await deleteProject(t.knex, project.id, 3)).toBe(true);
      expect(await projectExists(t.knex, project.id)).toBe(false);
      expect(await findQuota(t.knex, project.id)).toBeNull();
      expect(await t.knex('project_members').where({ project_id: project.id })).toEqual([]);
    });

    it('deletes whatever the version when none is expected, and returns false when nothing is left', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id, { version: 8 });
      expect(await deleteProject(t.knex, project.id, null)).toBe(true);
      expect(await deleteProject(t.knex, project.id, null)).toBe(false);
    });
  });

  async function projectWithMembers() {
    const owner = await storedUser(t.knex, { username: uniqueId('m-c'), name: 'Carol' });
    const project = await storedProject(t.knex, owner.id);
    const bob = await storedUser(t.knex, { username: uniqueId('m-b') });
    const alice = await storedUser(t.knex, { username: uniqueId('m-a') });
    await insertProjectMember(t.knex, project.id, bob.id, 'member', instant(2));
    await insertProjectMember(t.knex, project.id, alice.id, 'viewer', instant(3));
    return { project, owner, bob, alice };
  }

  describe('listProjectMembers', () => {
    it('lists members by username with their roles, a page at a time', async () => {
      const { project, owner, bob, alice } = await projectWithMembers();
      const unrelated = await storedProject(t.knex, bob.id);
      const first = await listProjectMembers(t.knex, project.id, { limit: 2 });
      const second = await listProjectMembers(t.knex, project.id, {
        limit: 2,
        cursor: first.nextCursor ?? undefined,
      });
      expect([...first.items, ...second.items]).toEqual([
        { userId: alice.id, username: alice.username, name: null, role: 'viewer', addedAt: instant(3) },
        { userId: bob.id, username: bob.username, name: null, role: 'member', addedAt: instant(2) },
        { userId: owner.id, username: owner.username, name: 'Carol', role: 'owner', addedAt: instant(0) },
      ]);
      expect(second.nextCursor).toBeNull();
      await expectInvalidCursor(
        listProjectMembers(t.knex, unrelated.id, { limit: 2, cursor: first.nextCursor ?? undefined }),
      );
    });
  });

  describe('findProjectMember', () => {
    it('finds one member, and null for a user who is not one', async () => {
      const { project, bob } = await projectWithMembers();
      const stranger = await storedUser(t.knex);
      expect(await findProjectMember(t.knex, project.id, bob.id)).toMatchObject({
        userId: bob.id,
        role: 'member',
      });
      expect(await findProjectMember(t.knex, project.id, stranger.id)).toBeNull();
    });
  });

  describe('insertProjectMember', () => {
    it('refuses to add a member twice', async () => {
      const { project, bob } = await projectWithMembers();
      const error = await rejectionOf(insertProjectMember(t.knex, project.id, bob.id, 'owner', instant(4)));
      expect(isUniqueViolation(error)).toBe(true);
    });
  });

  describe('updateProjectMemberRole', () => {
    it("changes one member's role only", async () => {
      const { project, bob, alice } = await projectWithMembers();
      await updateProjectMemberRole(t.knex, project.id, bob.id, 'owner');
      expect((await findProjectMember(t.knex, project.id, bob.id))?.role).toBe('owner');
      expect((await findProjectMember(t.knex, project.id, alice.id))?.role).toBe('viewer');
    });
  });

  describe('deleteProjectMember', () => {
    it('removes one member only', async () => {
      const { project, bob, alice } = await projectWithMembers();
      await deleteProjectMember(t.knex, project.id, bob.id);
      expect(await findProjectMember(t.knex, project.id, bob.id)).toBeNull();
      expect(await findProjectMember(t.knex, project.id, alice.id)).not.toBeNull();
      expect(await findProjectForUser(t.knex, project.id, bob.id)).toMatchObject({ role: null });
    });
  });

  describe('countOwners', () => {
    it('counts the owners of that project only, as a number', async () => {
      const owner = await storedUser(t.knex);
      const bob = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id);
      await insertProjectMember(t.knex, project.id, bob.id, 'member', instant(1));
      await storedProject(t.knex, bob.id);
      expect(await countOwners(t.knex, project.id)).toBe(1);
      await updateProjectMemberRole(t.knex, project.id, bob.id, 'owner');
      expect(await countOwners(t.knex, project.id)).toBe(2);
    });

    it('is zero for a project that does not exist', async () => {
      expect(await countOwners(t.knex, 'no-such-project')).toBe(0);
    });
  });

  describe('findQuota', () => {
    it('returns null for a project that does not exist', async () => {
      expect(await findQuota(t.knex, 'no-such-project')).toBeNull();
    });
  });

  describe('updateQuotaLimits', () => {
    it('changes the limits given, including to unlimited, and bumps the version', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id, {}, limits);
      expect(await updateQuotaLimits(t.knex, project.id, { gpu: 4, memoryBytes: null }, 1, instant(50))).toBe(
        true,
      );
      expect(await findQuota(t.knex, project.id)).toMatchObject({
        limits: { ...limits, gpu: 4, memoryBytes: null },
        version: 2,
        updatedAt: instant(50),
      });
    });

    it('changes nothing and returns false when the version has moved on', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id, {}, limits);
      expect(await updateQuotaLimits(t.knex, project.id, { services: 9 }, 1, instant(1))).toBe(true);
      expect(await updateQuotaLimits(t.knex, project.id, { services: 1 }, 1, instant(2))).toBe(false);
      expect(await findQuota(t.knex, project.id)).toMatchObject({ limits: { services: 9 }, version: 2 });
    });

    it('updates whatever the version when none is expected', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id, {}, limits);
      await updateQuotaLimits(t.knex, project.id, { services: 2 }, null, instant(1));
      expect(await updateQuotaLimits(t.knex, project.id, { services: 3 }, null, instant(2))).toBe(true);
      expect(await findQuota(t.knex, project.id)).toMatchObject({ limits: { services: 3 }, version: 3 });
    });

    it('returns false for a project that does not exist', async () => {
      expect(await updateQuotaLimits(t.knex, 'no-such-project', { gpu: 1 }, null, instant(1))).toBe(false);
    });
  });

  describe('lockProject', () => {
    /** Locks the project in a transaction of its own that gives up after 150 ms of waiting. */
    const tryLock = (projectId: string) =>
      t.knex.transaction(async (trx) => {
        await trx.raw("set local lock_timeout = '150ms'");
        await lockProject(trx, projectId);
      });

    onPostgres('makes another transaction wait for the same project until the first ends', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id);
      const other = await storedProject(t.knex, owner.id);
      const holder = await t.knex.transaction();
      try {
        await lockProject(holder, project.id);
        expect(await rejectionOf(tryLock(project.id))).toMatchObject({ code: '55P03' });
        await expect(tryLock(other.id)).resolves.toBeUndefined();
      } finally {
        await holder.commit();
      }
      await expect(tryLock(project.id)).resolves.toBeUndefined();
    });

    onSqlite('returns at once, SQLite transactions being serial already', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id);
      await t.knex.transaction(async (trx) => {
        await lockProject(trx, project.id);
        await updateProject(trx, project.id, { name: 'locked' }, 1, instant(1));
      });
      expect((await findProjectForUser(t.knex, project.id, owner.id))?.name).toBe('locked');
    });
  });
});
