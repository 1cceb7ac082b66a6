// Every list the API offers is served by an index, on every engine: the SQL each list's database
// function issues (captured as it runs, with a first page and a keyset cursor page) is planned by the
// engine on a database of a few thousand rows per list, and the plan must reach the list's table
// through an index — a range of it whenever the list is narrowed to a project, a user, a catalog or
// an owner, and on every cursor page a range that starts at the cursor — with no sort of the rows
// after they are read, so that a page costs the same on page 1 as on page 1,000.
//
// Lists that are not in the database (regions, benchmark metrics, QPIs and built-in plans: arrays
// from configuration and code) have no plan to check.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Knex } from 'knex';
import { listAuditEvents } from '../../src/db/audit.js';
import { listCalls } from '../../src/db/calls.js';
import { listPlans, listRuns as listBenchmarkRuns } from '../../src/db/benchmarks.js';
import { listCatalogs, listPackages } from '../../src/db/catalogs.js';
import type { Engine } from '../../src/db/database.js';
import { listEvents, type EventOwner } from '../../src/db/events.js';
import { listFiles } from '../../src/db/files.js';
import { jobsOfRun } from '../../src/db/jobs.js';
import { listProjectMembers } from '../../src/db/members.js';
import { listModules, listModuleSources } from '../../src/db/modules.js';
import { listOperations } from '../../src/db/operations.js';
import type { Page, PageRequest } from '../../src/db/pagination.js';
import { listPipelines } from '../../src/db/pipelines.js';
import { listAllProjects, listUserProjects } from '../../src/db/projects.js';
import { jobHistories, listRuns, outputsByJob, runInputIds } from '../../src/db/runs.js';
import { listProjectServices } from '../../src/db/services.js';
import { listUserTokens } from '../../src/db/tokens.js';
import { listUsers } from '../../src/db/users.js';
import { testEngines } from '../fixtures/databases.js';
import { openMigratedDatabase, type MigratedDatabase } from './builders.js';
import { capturedSelects, explain, type QueryPlan } from './query-plan.js';
import {
  analyze,
  busyProjects,
  catalogIds,
  pipelineIds,
  reader,
  runIds,
  seedBusyInstallation,
} from './query-plan-seed.js';

const project = busyProjects[0] as string;
const catalog = catalogIds[0] as string;

interface ListPlan {
  /** The list as a reader would name it. */
  name: string;
  /** The name the query gives the list's table (its alias when it has one). */
  table: string;
  /** Narrowed to one owner (project, user, catalog…) by equality: the first page is an index range too. */
  narrowed: boolean;
  /** The first sort key, which a cursor page's index range must start from. */
  cursorKey: string | null;
  /** Why sorting the rows read is fine here, where an index cannot give the order. */
  sortIsFine?: string;
  /** False for a query read whole, with no pages. */
  paged?: false;
  read(db: Knex, page: PageRequest): Promise<Page<unknown>>;
}

/** One table access per line that breaks the rules above, with the plan that shows it. */
function problemsOf(list: ListPlan, plans: QueryPlan[], cursorPage: boolean): string[] {
  const problems: string[] = [];
  for (const plan of plans) {
    const found: string[] = [];
    for (const access of plan.accesses) {
      if (access.how === 'scan') found.push(`${access.name} is read by a scan of the whole table`);
      // PostgreSQL names a repeated alias apart in a plan (`s`, `s_1`… for the ranges of a union).
      if (access.name !== list.table && !new RegExp(`^${list.table}_\\d+$`).test(access.name)) continue;
      if ((list.narrowed || cursorPage) && access.how === 'walk')
        found.push(`${access.name} is walked through ${access.index}, not searched by an index range`);
      if (cursorPage && list.cursorKey && !new RegExp(`\\b${list.cursorKey}\\b`).test(access.condition))
        found.push(
          `${access.name}'s index range does not start at the cursor (${access.condition || 'no range'})`,
        );
      if (access.sortedAfter && !list.sortIsFine)
        found.push(`${access.name}'s rows are sorted after they are read`);
    }
    if (!plan.accesses.some((a) => a.name === list.table)) found.push(`${list.table} is not in the plan`);
    if (found.length) problems.push(`${found.join('; ')}\n${plan.text}`);
  }
  return problems;
}

/** A stream of events read from a sequence number on, as the `follow…Events` operations read it. */
function eventsPage(owner: EventOwner, id: string) {
  return async (db: Knex, page: PageRequest): Promise<Page<unknown>> => {
    const items = await listEvents(db, owner, id, page.cursor ? Number(page.cursor) : 0, page.limit);
    const last = items[items.length - 1];
    return { items, nextCursor: items.length === page.limit && last ? String(last.seq) : null };
  };
}

/** A query of one run's details, read whole (a run has a bounded number of tasks, inputs and outputs). */
function whole(read: (db: Knex) => Promise<unknown>) {
  return async (db: Knex): Promise<Page<unknown>> => {
    await read(db);
    return { items: [], nextCursor: null };
  };
}

const byOperation: Record<string, ListPlan[]> = {
  listProjects: [
    {
      name: "a user's projects",
      table: 'm',
      narrowed: true,
      cursorKey: 'project_id',
      read: (db, page) => listUserProjects(db, reader, {}, page),
    },
    {
      name: "a user's group projects",
      table: 'm',
      narrowed: true,
      cursorKey: 'project_id',
      read: (db, page) => listUserProjects(db, reader, { kind: 'group' }, page),
    },
    {
      name: 'every project (administrators)',
      table: 'p',
      narrowed: false,
      cursorKey: 'id',
      read: (db, page) => listAllProjects(db, reader, {}, page),
    },
    {
      name: 'every personal project (administrators)',
      table: 'p',
      narrowed: false,
      cursorKey: 'id',
      read: (db, page) => listAllProjects(db, reader, { kind: 'personal' }, page),
    },
  ],
  listProjectMembers: [
    {
      name: "a project's members",
      table: 'm',
      narrowed: true,
      cursorKey: null,
      sortIsFine:
        'members are listed by username, which lives in users: the sort is of one project’s members, read by the primary key',
      read: (db, page) => listProjectMembers(db, project, page),
    },
  ],
  listServiceCalls: [
    {
      name: "a service's function calls",
      table: 'service_calls',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listCalls(db, 'svc_00000', page),
    },
  ],
  listServices: [
    {
      name: "a project's services (its owners and administrators)",
      table: 's',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listProjectServices(db, project, { visibleTo: null }, page),
    },
    {
      name: "a member's view of a project's services (theirs and the shared ones)",
      table: 's',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listProjectServices(db, project, { visibleTo: reader }, page),
    },
    {
      name: "a project's services in some statuses",
      table: 's',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) =>
        listProjectServices(db, project, { visibleTo: null, statuses: ['running', 'failed'] }, page),
    },
    {
      name: "a project's services of one package",
      table: 's',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listProjectServices(db, project, { visibleTo: null, packageName: 'echo' }, page),
    },
  ],
  listOperations: [
    {
      name: "a user's operations",
      table: 'operations',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listOperations(db, { userId: reader }, page),
    },
    {
      name: "a user's operations in a project",
      table: 'operations',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listOperations(db, { userId: reader, projectId: project }, page),
    },
    {
      name: "a user's running operations",
      table: 'operations',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listOperations(db, { userId: reader, status: 'running' }, page),
    },
    {
      name: 'every operation (administrators)',
      table: 'operations',
      narrowed: false,
      cursorKey: 'created_at',
      read: (db, page) => listOperations(db, { userId: null }, page),
    },
    {
      name: 'every operation in a project (administrators)',
      table: 'operations',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listOperations(db, { userId: null, projectId: project }, page),
    },
  ],
  listFiles: [
    {
      name: "a project's files",
      table: 'files',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listFiles(db, project, {}, page),
    },
    {
      name: "a project's outputs of one media type with a tag",
      table: 'files',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) =>
        listFiles(db, project, { kind: 'output', mediaType: 'text/csv', tags: ['raw'] }, page),
    },
    {
      name: "a project's files of one name",
      table: 'files',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listFiles(db, project, { name: 'data-2.csv' }, page),
    },
    {
      name: 'the outputs of one run',
      table: 'files',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listFiles(db, project, { runId: runIds[0] }, page),
    },
    {
      name: 'the files derived from one file',
      table: 'files',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listFiles(db, project, { parentId: 'fil_00000' }, page),
    },
  ],
  listPipelines: [
    {
      name: "a project's pipelines",
      table: 'pipelines',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listPipelines(db, project, {}, page),
    },
    {
      name: "a project's disabled pipelines",
      table: 'pipelines',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listPipelines(db, project, { enabled: false }, page),
    },
  ],
  listRuns: [
    {
      name: "a project's runs",
      table: 'runs',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listRuns(db, project, {}, page),
    },
    {
      name: 'the runs of one pipeline',
      table: 'runs',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listRuns(db, project, { pipelineId: pipelineIds[0] }, page),
    },
    {
      name: "a project's failed runs",
      table: 'runs',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listRuns(db, project, { status: 'failed' }, page),
    },
  ],
  getRun: [
    {
      name: "a run's inputs",
      table: 'run_inputs',
      narrowed: true,
      cursorKey: null,
      paged: false,
      sortIsFine: 'the inputs of one run, found by its key, are put in the order they were given',
      read: whole((db) => runInputIds(db, runIds[0] as string)),
    },
    {
      name: "a run's tasks",
      table: 'jobs',
      narrowed: true,
      cursorKey: null,
      paged: false,
      read: whole((db) => jobsOfRun(db, runIds[0] as string)),
    },
    {
      name: "a run's outputs",
      table: 'files',
      narrowed: true,
      cursorKey: null,
      paged: false,
      read: whole((db) => outputsByJob(db, runIds[0] as string)),
    },
    {
      name: "the histories of a run's tasks",
      table: 'job_events',
      narrowed: true,
      cursorKey: null,
      paged: false,
      read: whole((db) => jobHistories(db, ['job_00000_0', 'job_00000_1', 'job_00000_2'])),
    },
  ],
  listProjectBenchmarkPlans: [
    {
      name: "a project's benchmark plans",
      table: 'benchmark_plans',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listPlans(db, project, page),
    },
  ],
  listBenchmarkRuns: [
    {
      name: "a project's benchmark runs",
      table: 'benchmark_runs',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listBenchmarkRuns(db, project, {}, page),
    },
    {
      name: 'the benchmark runs of one plan',
      table: 'benchmark_runs',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listBenchmarkRuns(db, project, { planName: 'plan-0' }, page),
    },
    {
      name: "a project's failed benchmark runs",
      table: 'benchmark_runs',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listBenchmarkRuns(db, project, { status: 'failed' }, page),
    },
  ],
  listMyTokens: [
    {
      name: "a user's tokens",
      table: 'api_tokens',
      narrowed: true,
      cursorKey: 'created_at',
      read: (db, page) => listUserTokens(db, reader, page),
    },
  ],
  listUsers: [
    {
      name: 'every user',
      table: 'users',
      narrowed: false,
      cursorKey: 'username',
      read: (db, page) => listUsers(db, {}, page),
    },
    {
      name: 'the users matching a search',
      table: 'users',
      narrowed: false,
      cursorKey: 'username',
      read: (db, page) => listUsers(db, { q: 'user 1' }, page),
    },
  ],
  listAuditEvents: [
    {
      name: 'every audit event',
      table: 'audit_events',
      narrowed: false,
      cursorKey: 'at',
      read: (db, page) => listAuditEvents(db, {}, page),
    },
    {
      name: "a user's audit events",
      table: 'audit_events',
      narrowed: true,
      cursorKey: 'at',
      read: (db, page) => listAuditEvents(db, { userId: reader }, page),
    },
    {
      name: "a project's audit events",
      table: 'audit_events',
      narrowed: true,
      cursorKey: 'at',
      read: (db, page) => listAuditEvents(db, { projectId: project }, page),
    },
    {
      name: 'the audit events of one operation',
      table: 'audit_events',
      narrowed: true,
      cursorKey: 'at',
      read: (db, page) => listAuditEvents(db, { operationId: 'deleteService' }, page),
    },
  ],
  listCatalogs: [
    {
      name: 'the catalogs',
      table: 'catalogs',
      narrowed: false,
      cursorKey: 'position',
      read: (db, page) => listCatalogs(db, page),
    },
  ],
  listPackages: [
    {
      name: "a catalog's packages",
      table: 'p',
      narrowed: true,
      cursorKey: 'name',
      read: (db, page) => listPackages(db, catalog, {}, page),
    },
    {
      name: "a catalog's packages with a keyword",
      table: 'p',
      narrowed: true,
      cursorKey: 'name',
      read: (db, page) => listPackages(db, catalog, { keywords: ['kw0'] }, page),
    },
    {
      name: "a catalog's packages matching a search",
      table: 'p',
      narrowed: true,
      cursorKey: 'name',
      read: (db, page) => listPackages(db, catalog, { q: 'package 1' }, page),
    },
  ],
  listModules: [
    { name: 'the modules', table: 'modules', narrowed: false, cursorKey: 'name', read: listModules },
  ],
  listModuleSources: [
    {
      name: 'the module sources',
      table: 'module_sources',
      narrowed: false,
      cursorKey: 'position',
      read: listModuleSources,
    },
  ],
  followOperationEvents: [
    {
      name: "an operation's events",
      table: 'operation_events',
      narrowed: true,
      cursorKey: 'seq',
      read: eventsPage('operation', 'op_00000'),
    },
  ],
  followRunEvents: [
    {
      name: "a run's events",
      table: 'run_events',
      narrowed: true,
      cursorKey: 'seq',
      read: eventsPage('run', runIds[0] as string),
    },
  ],
  followServiceEvents: [
    {
      name: "a service's events",
      table: 'service_events',
      narrowed: true,
      cursorKey: 'seq',
      read: eventsPage('service', 'svc_00000'),
    },
  ],
};

describe.each(testEngines())('query plans of the lists (%s)', (engine: Engine) => {
  let t: MigratedDatabase;

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
    await seedBusyInstallation(t.knex);
    await analyze(t.knex, engine);
  });
  afterAll(() => t.close());

  async function plansOf(read: () => Promise<unknown>): Promise<QueryPlan[]> {
    const queries = await capturedSelects(t.knex, read);
    return Promise.all(queries.map((query) => explain(t.knex, engine, query)));
  }

  describe.each(Object.entries(byOperation))('%s', (_operationId, lists) => {
    it.each(lists.map((list) => [list.name, list] as const))(
      'serves %s from an index',
      async (_name, list) => {
        let first: Page<unknown> | undefined;
        const firstPlans = await plansOf(async () => {
          first = await list.read(t.knex, { limit: 20 });
        });
        expect(problemsOf(list, firstPlans, false)).toEqual([]);
        if (list.paged === false) return;
        // A list that pages has more than a page of rows here, so its cursor page is a real one.
        const cursor = first?.nextCursor;
        expect(cursor).toEqual(expect.any(String));
        const nextPlans = await plansOf(() => list.read(t.knex, { limit: 20, cursor: cursor ?? undefined }));
        expect(problemsOf(list, nextPlans, true)).toEqual([]);
      },
    );
  });
});
