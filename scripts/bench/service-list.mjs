// Figure 4 of `make bench` (see run.mjs): GET /api/v1/projects/{p}/services?limit=20 in projects
// holding different numbers of services, on one server (scripts/bench/server.mjs) and one database:
// the admin's first page, the admin's middle page (reached by following next_cursor), and the first
// page of a member who owns only the project's oldest page of services (the admin owns the rest, none
// shared): a member sees their own services and the shared ones, so their page is a filtered one.
//
// The services are rows written straight into the database with the app's own insertService (so
// they stay in step with the schema), shaped like suspended demo/echo services: nothing runs, and
// they hold no quota. The projects are created through the API; the member's token with
// `atrium token create`. On PostgreSQL the tables are ANALYZEd after the insert, as autovacuum
// would have done on a live server: without statistics the planner sorts the whole project.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import {
  BenchFailure,
  callApi,
  mib,
  count,
  measureCases,
  ms,
  printTable,
  range,
  ratio,
  startServer,
} from './harness.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const cliScript = join(repo, 'dist', 'src', 'cli.js');
const echoDir = join(repo, 'src', 'demo', 'catalog', 'echo');
const echoVersion = '1.1.0';
const pageSize = 20;
// Far enough back that the rows' timestamps (one second apart) stay in the past.
const firstCreatedAt = Date.parse('2020-01-01T00:00:00.000Z');
const cliTimeoutMs = 60_000;

const listPath = (projectId) => `/api/v1/projects/${projectId}/services?limit=${pageSize}`;
const requests = {
  first: 'first page',
  middle: 'middle page (cursor)',
  member: `first page, as a member owning the ${pageSize} oldest`,
};

/**
 * The service rows: suspended echo services named echo-0 (the oldest) … echo-(n-1), one second
 * apart; the member owns the oldest page of them, the admin the rest.
 */
function serviceRows(newId, projectId, owners, total) {
  const manifest = parseYaml(readFileSync(join(echoDir, `${echoVersion}.yaml`), 'utf8'));
  const runSpec = { local: manifest.run.local ?? null, cluster: manifest.run.cluster ?? null };
  return Array.from({ length: total }, (_, i) => {
    const at = new Date(firstCreatedAt + i * 1000).toISOString();
    return {
      id: newId('svc'),
      projectId,
      regionId: 'local',
      name: `echo-${i}`,
      catalogId: 'demo',
      packageName: 'echo',
      packageVersion: echoVersion,
      ownerUserId: i < pageSize ? owners.member : owners.admin,
      shared: false,
      options: { greeting: 'hello', delay_ms: 0, status: 200 },
      secretOptions: [],
      runSpec,
      sourceDir: echoDir,
      functions: [],
      origin: 'catalog',
      external: null,
      resources: { cpuMillis: 100, memoryBytes: 128 * 1024 * 1024, gpu: 0 },
      status: 'suspended',
      desiredState: 'suspended',
      holdsSlot: false,
      holdsCompute: false,
      message: 'suspended',
      exitCode: null,
      logTail: [],
      tasks: [],
      endpoints: [],
      createdAt: at,
      updatedAt: at,
      startedAt: null,
    };
  });
}

/** Writes every project's rows in one transaction; returns how long it took (ms). */
export async function insertServices(database, owners, projects) {
  const { openDatabase } = await import('../../dist/src/db/database.js');
  const { insertService } = await import('../../dist/src/db/services.js');
  const { newId } = await import('../../dist/src/ids.js');
  const db = openDatabase(database.databaseUrl, database.dataDir);
  const started = performance.now();
  try {
    await db.knex.transaction(async (trx) => {
      for (const { id, total } of projects) {
        for (const row of serviceRows(newId, id, owners, total)) await insertService(trx, row);
      }
    });
    if (db.engine === 'postgres') await db.knex.raw('analyze');
  } finally {
    await db.close();
  }
  return performance.now() - started;
}

/** A user `username` and an API token of theirs, made by `atrium token create` on the same database. */
async function createUserToken(database, username) {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('ATRIUM_')),
  );
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [cliScript, 'token', 'create', '--user', username, '--name', 'bench'],
    {
      env: {
        ...inherited,
        ATRIUM_DATABASE_URL: database.databaseUrl,
        ATRIUM_DATA_DIR: database.dataDir,
        ATRIUM_LOG_LEVEL: 'warn',
      },
      timeout: cliTimeoutMs,
    },
  );
  return stdout.trim();
}

/** Checks that `path` answers `token` with a page of `expectedNames` (by name, in order). */
async function expectPage(port, token, path, expectedNames) {
  const page = (await callApi(port, 'GET', path, { token, expect: [200] })).body;
  const names = (page.items ?? []).map((item) => item.name);
  if (names.join() !== expectedNames.join()) {
    throw new BenchFailure(
      `${path} answered ${names.length} services (${names.slice(0, 3).join(', ')} …), ` +
        `not ${expectedNames.length} (${expectedNames.slice(0, 3).join(', ')} …)`,
    );
  }
  return page;
}

/** The names of a page of services, newest first, starting at echo-`newest`. */
const namesFrom = (newest) => Array.from({ length: pageSize }, (_, k) => `echo-${newest - k}`);

/**
 * The path of the page that starts halfway down the list (newest first), reached by following
 * next_cursor from the first page; checks every page on the way and the one it lands on.
 */
async function middlePagePath(port, token, { id, total }) {
  const hops = Math.floor(total / 2 / pageSize);
  let path = listPath(id);
  for (let hop = 0; ; hop++) {
    const page = await expectPage(port, token, path, namesFrom(total - 1 - hop * pageSize));
    if (hop === hops) return { path, page: hop + 1 };
    if (typeof page.next_cursor !== 'string') {
      throw new BenchFailure(`page ${hop + 1} of ${id} has no next cursor`);
    }
    path = `${listPath(id)}&cursor=${encodeURIComponent(page.next_cursor)}`;
  }
}

export async function figureServiceList(settings, engineName, database) {
  const counts = settings.serviceCounts;
  console.log(
    `4. GET /api/v1/projects/{p}/services?limit=${pageSize} with ${counts.join(' and ')} services in the ` +
      `project (${engineName}; as the admin unless said; ratios to ${counts[0]} services)`,
  );
  const token = `atr_${randomBytes(16).toString('hex')}`;
  // The catalog page is measured on the same server for comparison, with its page cache off: it
  // then makes one query per request, as a services page does once authentication and the
  // caller's role come from memory.
  const server = await startServer(`Atrium (${engineName}, service lists)`, {
    kind: 'atrium',
    ...database,
    catalogId: 'bench',
    extraPaths: 0,
    adminToken: token,
    cache: { catalogPagesMs: 0 },
  });
  try {
    const { port } = server;
    const memberToken = await createUserToken(database, `bench-member-${randomBytes(3).toString('hex')}`);
    const owners = {
      admin: (await callApi(port, 'GET', '/api/v1/me', { token, expect: [200] })).body.user.id,
      member: (await callApi(port, 'GET', '/api/v1/me', { token: memberToken, expect: [200] })).body.user.id,
    };
    const projects = [];
    for (const total of counts) {
      const id = `bench-services-${total}-${randomBytes(3).toString('hex')}`;
      await callApi(port, 'POST', '/api/v1/projects', {
        token,
        body: { id, name: `Benchmark: ${total} services` },
        expect: [201],
      });
      await callApi(port, 'PUT', `/api/v1/projects/${id}/members/${owners.member}`, {
        token,
        body: { role: 'member' },
        expect: [200, 201],
      });
      projects.push({ id, total });
    }
    const insertMs = await insertServices(database, owners, projects);

    const middles = [];
    for (const project of projects) {
      middles.push(await middlePagePath(port, token, project));
      await expectPage(port, memberToken, listPath(project.id), namesFrom(pageSize - 1));
    }
    const asAdmin = { Authorization: `Bearer ${token}` };
    const asMember = { Authorization: `Bearer ${memberToken}` };
    const cases = [
      ...projects.map((p) => ({
        request: requests.first,
        path: listPath(p.id),
        page: 1,
        headers: asAdmin,
        ...p,
      })),
      ...projects.map((p, i) => ({ request: requests.middle, headers: asAdmin, ...p, ...middles[i] })),
      ...projects.map((p) => ({
        request: requests.member,
        path: listPath(p.id),
        page: 1,
        headers: asMember,
        ...p,
      })),
    ].map((c) => ({ ...c, server }));
    const catalogCase = { server, path: `/api/v1/catalogs/bench/packages?limit=${pageSize}` };
    const [catalogResult, ...results] = await measureCases(settings, [catalogCase, ...cases]);
    const rows = cases.map((c, i) => {
      const result = results[i];
      const baseline = results[cases.findIndex((other) => other.request === c.request)];
      return [
        c.total === counts[0] ? c.request : '',
        count(c.total),
        count(c.page),
        count(result.rps),
        range(result),
        ms(result.p50),
        ms(result.p99),
        count(result.errors),
        count(result.cpuPerRequest),
        ratio(result.rps / baseline.rps),
        ratio(result.p99 / baseline.p99),
        ratio(result.cpuPerRequest / baseline.cpuPerRequest),
        ratio(result.cpuPerRequest / catalogResult.cpuPerRequest),
      ];
    });
    rows.unshift([
      'catalog page (public, its one query)',
      '',
      '',
      count(catalogResult.rps),
      range(catalogResult),
      ms(catalogResult.p50),
      ms(catalogResult.p99),
      count(catalogResult.errors),
      count(catalogResult.cpuPerRequest),
      '',
      '',
      '',
      '1.00',
    ]);
    printTable(
      [
        'request',
        'services',
        'page',
        'req/s',
        'req/s range',
        'p50 ms',
        'p99 ms',
        'errors',
        'CPU µs/req',
        'req/s ratio',
        'p99 ratio',
        'CPU/req ratio',
        'CPU/req ÷ catalog',
      ],
      rows,
    );
    const memory = await server.memory();
    console.log(
      `  server memory after these pages, ${counts.reduce((a, b) => a + b, 0)} services stored: ` +
        `RSS ${mib(memory.rss)}, heap ${mib(memory.heapUsed)} (after a full GC)`,
    );
    console.log(
      `  (${counts.reduce((a, b) => a + b, 0)} service rows inserted in ${count(insertMs)} ms; page p holds ` +
        `items ${pageSize}·(p-1) … ${pageSize}·p-1, newest first` +
        `${database.databaseUrl.startsWith('postgres') ? '; the database server\'s CPU is not in "CPU µs/req"' : ''})\n`,
    );
  } finally {
    await server.stop();
  }
}
