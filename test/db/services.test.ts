// A project's list of services as each reader sees it: every service for owners and administrators,
// a member's own and the shared ones for a member (two index ranges merged, each service once),
// newest first through keyset pages, and each item read exactly as the service's own record.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Page, PageRequest } from '../../src/db/pagination.js';
import {
  findService,
  insertService,
  listProjectServices,
  type NewService,
  type ServiceFilter,
  type ServiceSummary,
} from '../../src/db/services.js';
import { testEngines } from '../fixtures/databases.js';
import {
  instant,
  openMigratedDatabase,
  storedProject,
  storedUser,
  type MigratedDatabase,
} from './builders.js';

function aService(
  projectId: string,
  ownerUserId: string,
  seconds: number,
  overrides: Partial<NewService>,
): NewService {
  return {
    id: `svc_${projectId}_${seconds}`,
    projectId,
    regionId: 'local',
    name: `echo-${seconds}`,
    catalogId: 'demo',
    packageName: 'echo',
    packageVersion: '1.1.0',
    ownerUserId,
    shared: false,
    options: { greeting: 'hello', delay_ms: 0 },
    secretOptions: [],
    runSpec: { local: null, cluster: null },
    sourceDir: '/srv/catalog/echo',
    functions: [],
    origin: 'catalog',
    external: null,
    resources: { cpuMillis: 100, memoryBytes: 128 * 2 ** 20, gpu: 0 },
    status: 'suspended',
    desiredState: 'suspended',
    holdsSlot: false,
    holdsCompute: false,
    message: null,
    exitCode: null,
    logTail: [],
    tasks: [],
    endpoints: [],
    createdAt: instant(seconds),
    updatedAt: instant(seconds),
    startedAt: null,
    ...overrides,
  };
}

describe.each(testEngines())('listProjectServices (%s)', (engine) => {
  let t: MigratedDatabase;
  let projectId: string;
  let memberId: string;
  /** Every service of the project, newest first, with whether the member may see it. */
  const stored: { id: string; visibleToMember: boolean }[] = [];

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
    const owner = await storedUser(t.knex, { name: 'Ada Owner' });
    const member = await storedUser(t.knex);
    memberId = member.id;
    projectId = (await storedProject(t.knex, owner.id)).id;
    // Two services share a creation instant, so that only the whole sort key (created_at, id) orders them.
    const plan: { seconds: number; owner: string; shared: boolean; id?: string }[] = [
      { seconds: 1, owner: member.id, shared: false },
      { seconds: 2, owner: owner.id, shared: true },
      { seconds: 3, owner: owner.id, shared: false },
      { seconds: 4, owner: member.id, shared: true },
      { seconds: 5, owner: owner.id, shared: false },
      { seconds: 6, owner: owner.id, shared: true, id: `svc_${projectId}_6a` },
      { seconds: 6, owner: member.id, shared: false, id: `svc_${projectId}_6b` },
      { seconds: 7, owner: owner.id, shared: false },
      { seconds: 8, owner: member.id, shared: false },
    ];
    await t.knex.transaction(async (trx) => {
      for (const { seconds, owner: by, shared, id } of plan) {
        await insertService(
          trx,
          aService(projectId, by, seconds, {
            ...(id ? { id } : {}),
            shared,
            // Values of every kind a summary carries: nested JSON, secrets, nulls, numbers, quotes.
            ...(seconds === 4
              ? {
                  options: { greeting: 'hé "there"\n', nested: { list: [1, 2.5, null, true] }, token: 'x' },
                  secretOptions: ['token'],
                  status: 'running',
                  desiredState: 'running',
                  holdsSlot: true,
                  holdsCompute: true,
                  message: 'running — since “now”',
                  exitCode: 137,
                  logTail: ['line 1', 'line\t2'],
                  tasks: [
                    {
                      id: 'task-1',
                      status: 'running',
                      ready: true,
                      restarts: 2,
                      containers: [
                        {
                          name: 'main',
                          ready: true,
                          state: 'running',
                          reason: null,
                          exitCode: null,
                          startedAt: instant(4),
                        },
                      ],
                    },
                  ],
                  endpoints: [{ port: 'http', protocol: 'http', url: 'http://127.0.0.1:40123' }],
                  resources: { cpuMillis: 1500, memoryBytes: 6 * 2 ** 30, gpu: 1 },
                  startedAt: instant(4),
                }
              : {}),
          }),
        );
      }
    });
    for (const { seconds, owner: by, shared, id } of [...plan].sort(
      (a, b) => b.seconds - a.seconds || ((b.id ?? '') < (a.id ?? '') ? -1 : 1),
    )) {
      stored.push({ id: id ?? `svc_${projectId}_${seconds}`, visibleToMember: by === member.id || shared });
    }
  });

  afterAll(async () => {
    await t.close();
  });

  /** Every item of the list, following next_cursor `limit` at a time. */
  async function everyPage(filter: ServiceFilter, limit: number): Promise<ServiceSummary[]> {
    const items: ServiceSummary[] = [];
    let request: PageRequest = { limit };
    for (;;) {
      const page: Page<ServiceSummary> = await listProjectServices(t.knex, projectId, filter, request);
      expect(page.items.length).toBeLessThanOrEqual(limit);
      items.push(...page.items);
      if (page.nextCursor === null) return items;
      request = { limit, cursor: page.nextCursor };
    }
  }

  it('lists every service to owners and administrators, newest first, page by page', async () => {
    for (const limit of [1, 2, 4, 20]) {
      const ids = (await everyPage({ visibleTo: null }, limit)).map((s) => s.id);
      expect(ids).toEqual(stored.map((s) => s.id));
    }
  });

  it("lists a member's own and the shared services, newest first, each once", async () => {
    const expected = stored.filter((s) => s.visibleToMember).map((s) => s.id);
    for (const limit of [1, 2, 3, 20]) {
      const ids = (await everyPage({ visibleTo: memberId }, limit)).map((s) => s.id);
      expect(ids).toEqual(expected);
    }
  });

  it("reads each item as the service's own record reads it", async () => {
    for (const visibleTo of [null, memberId]) {
      for (const item of await everyPage({ visibleTo }, 3)) {
        const record = await findService(t.knex, item.id);
        expect(record).not.toBeNull();
        const {
          runSpec: _runSpec,
          sourceDir: _sourceDir,
          functions: _functions,
          external: _external,
          app: _app,
          ...summary
        } = record as NonNullable<typeof record>;
        expect(item).toStrictEqual(summary);
      }
    }
  });

  it('narrows the list by status and package, for every reader', async () => {
    for (const visibleTo of [null, memberId]) {
      const running = await everyPage({ visibleTo, statuses: ['running'] }, 2);
      expect(running.map((s) => s.id)).toEqual([`svc_${projectId}_4`]);
      expect(await everyPage({ visibleTo, packageName: 'other' }, 2)).toEqual([]);
    }
  });
});
