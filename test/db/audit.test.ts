import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { insertAuditEvent, listAuditEvents, type AuditEvent, type AuditFilter } from '../../src/db/audit.js';
import { encodeCursor } from '../../src/db/pagination.js';
import { testEngines } from '../fixtures/databases.js';
import {
  anAuditEvent,
  expectInvalidCursor,
  instant,
  openMigratedDatabase,
  uniqueId,
  type MigratedDatabase,
} from './builders.js';

describe.each(testEngines())('audit (%s)', (engine) => {
  let t: MigratedDatabase;

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
  });
  afterAll(() => t.close());

  async function stored(overrides: Partial<AuditEvent>): Promise<AuditEvent> {
    const event = anAuditEvent(overrides);
    await insertAuditEvent(t.knex, event);
    return event;
  }

  const ids = async (filter: AuditFilter) =>
    (await listAuditEvents(t.knex, filter, { limit: 100 })).items.map((e) => e.id);

  describe('insertAuditEvent', () => {
    it('stores every field, read back unchanged', async () => {
      const event = await stored({
        userId: uniqueId('usr'),
        projectId: 'proj-1',
        operationId: 'updateProject',
        method: 'PATCH',
        path: '/api/v1/projects/proj-1',
        status: 412,
        requestId: 'req-abc',
        ip: '::1',
      });
      const listed = await listAuditEvents(t.knex, { userId: event.userId ?? '' }, { limit: 10 });
      expect(listed).toEqual({ items: [event], nextCursor: null });
    });
  });

  describe('listAuditEvents', () => {
    it('lists events newest first, ties broken by id, a page at a time', async () => {
      const userId = uniqueId('usr');
      await stored({ id: 'aud_b', userId, at: instant(10) });
      await stored({ id: 'aud_a', userId, at: instant(20) });
      await stored({ id: 'aud_c', userId, at: instant(20) });
      await stored({ id: 'aud_d', userId, at: instant(5) });
      await stored({ id: 'aud_e', userId, at: instant(20) });
      const first = await listAuditEvents(t.knex, { userId }, { limit: 2 });
      const second = await listAuditEvents(
        t.knex,
        { userId },
        { limit: 2, cursor: first.nextCursor ?? undefined },
      );
      const third = await listAuditEvents(
        t.knex,
        { userId },
        { limit: 2, cursor: second.nextCursor ?? undefined },
      );
      expect([first, second, third].map((p) => p.items.map((e) => e.id))).toEqual([
        ['aud_e', 'aud_c'],
        ['aud_a', 'aud_b'],
        ['aud_d'],
      ]);
      expect(third.nextCursor).toBeNull();
    });

    it('keeps only the events of one user, one project or one operation', async () => {
      const user = uniqueId('usr');
      const project = uniqueId('proj');
      const operation = uniqueId('op');
      const byUser = await stored({ userId: user, at: instant(1) });
      const byUserInProject = await stored({ userId: user, projectId: project, at: instant(2) });
      const inProject = await stored({ projectId: project, operationId: operation, at: instant(3) });
      const byOperation = await stored({ operationId: operation, at: instant(4) });
      expect(await ids({ userId: user })).toEqual([byUserInProject.id, byUser.id]);
      expect(await ids({ projectId: project })).toEqual([inProject.id, byUserInProject.id]);
      expect(await ids({ operationId: operation })).toEqual([byOperation.id, inProject.id]);
    });

    it('keeps only events matching every filter given', async () => {
      const user = uniqueId('usr');
      const project = uniqueId('proj');
      await stored({ userId: user });
      await stored({ projectId: project });
      const both = await stored({ userId: user, projectId: project, operationId: 'deleteProject' });
      await stored({ userId: user, projectId: project, operationId: 'getProject' });
      expect(await ids({ userId: user, projectId: project, operationId: 'deleteProject' })).toEqual([
        both.id,
      ]);
    });

    it('lists every event, newest first, without a filter', async () => {
      const newest = await stored({ at: instant(10_000_000) });
      const all = await listAuditEvents(t.knex, {}, { limit: 1000 });
      expect(all.items[0]).toEqual(newest);
      const keys = all.items.map((e) => `${e.at} ${e.id}`);
      expect(keys).toEqual([...keys].sort().reverse());
    });

    it('refuses a cursor issued for another list', async () => {
      await expectInvalidCursor(
        listAuditEvents(t.knex, {}, { limit: 1, cursor: encodeCursor('tokens', [instant(1), 'aud_x']) }),
      );
    });
  });
});
