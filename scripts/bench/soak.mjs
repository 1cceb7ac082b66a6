// `make bench-soak`: does Atrium's memory grow with the number of requests it serves? One Atrium
// server (scripts/bench/server.mjs, SQLite in a scratch directory, 500 catalog packages, a project
// of 200 services) is driven for BENCH_SOAK_SECONDS (300) by the bench's load generator, taking
// turns over a mix of requests: the public catalog page, the admin's services page, /api/v1/me, a
// missing service (404 problem) and a refused parameter (400 problem). After each of BENCH_SOAK_SLICES
// (10) slices, the server's RSS and heap are read after a full collection. Flat means RSS and heap
// at the end within a few MiB of the first slice's, whatever the request count; growth is printed as
// MiB per 100,000 requests between the first slice and the last. Settings: BENCH_SOAK_SECONDS,
// BENCH_SOAK_SLICES, BENCH_CONNECTIONS (32), BENCH_SOAK_ENGINE=postgres (on a scratch database of
// ATRIUM_BENCH_DATABASE_URL instead of SQLite).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeCatalog } from './catalog.mjs';
import {
  BenchFailure,
  callApi,
  cleanUp,
  count,
  mib,
  onCleanUp,
  printTable,
  startServer,
  withPostgresDatabase,
} from './harness.mjs';
import { measure } from './load.mjs';
import { insertServices } from './service-list.mjs';

const seconds = Number(process.env.BENCH_SOAK_SECONDS || 300);
const slices = Number(process.env.BENCH_SOAK_SLICES || 10);
const connections = Number(process.env.BENCH_CONNECTIONS || 32);

async function main() {
  if (!(seconds > 0 && Number.isInteger(slices) && slices >= 2 && connections >= 1)) {
    throw new BenchFailure('BENCH_SOAK_SECONDS > 0, BENCH_SOAK_SLICES ≥ 2 and BENCH_CONNECTIONS ≥ 1, please');
  }
  const scratch = mkdtempSync(join(tmpdir(), 'atrium-soak-'));
  onCleanUp(() => rmSync(scratch, { recursive: true, force: true }));
  const catalogDir = join(scratch, 'catalog');
  writeCatalog(catalogDir, 500);
  const postgres = process.env.BENCH_SOAK_ENGINE === 'postgres';
  if (postgres && !process.env.ATRIUM_BENCH_DATABASE_URL) {
    throw new BenchFailure(
      'BENCH_SOAK_ENGINE=postgres needs ATRIUM_BENCH_DATABASE_URL (an admin postgres:// URL)',
    );
  }
  if (postgres) {
    await withPostgresDatabase(process.env.ATRIUM_BENCH_DATABASE_URL, scratch, (database) =>
      soak({ ...database, catalogDir }, 'PostgreSQL'),
    );
  } else {
    await soak(
      { databaseUrl: `sqlite://${join(scratch, 'atrium.db')}`, dataDir: scratch, catalogDir },
      'SQLite',
    );
  }
}

async function soak({ catalogDir, ...database }, engineName) {
  const token = `atr_${randomBytes(16).toString('hex')}`;
  const server = await startServer('Atrium (soak)', {
    kind: 'atrium',
    ...database,
    catalogId: 'bench',
    catalogDir,
    extraPaths: 0,
    adminToken: token,
  });
  const { port } = server;
  const admin = (await callApi(port, 'GET', '/api/v1/me', { token, expect: [200] })).body.user.id;
  const project = `soak-${randomBytes(3).toString('hex')}`;
  await callApi(port, 'POST', '/api/v1/projects', {
    token,
    body: { id: project, name: 'Soak' },
    expect: [201],
  });
  await insertServices(database, { admin, member: admin }, [{ id: project, total: 200 }]);
  const auth = { Authorization: `Bearer ${token}` };
  const mix = [
    { path: '/api/v1/catalogs/bench/packages?limit=20', status: 200 },
    { path: `/api/v1/projects/${project}/services?limit=20`, headers: auth, status: 200 },
    { path: '/api/v1/me', headers: auth, status: 200 },
    { path: `/api/v1/projects/${project}/services/svc_00000000000000000000`, headers: auth, status: 404 },
    { path: '/api/v1/catalogs/bench/packages?limit=Infinity', status: 400 },
  ];
  console.log(
    `Soak: ${seconds} s in ${slices} slices, ${connections} connections, a mix of ${mix.length} requests (${engineName})`,
  );
  const rows = [];
  let total = 0;
  const sliceSeconds = seconds / slices / mix.length;
  for (let slice = 1; slice <= slices; slice++) {
    for (const request of mix) {
      const result = await measure({
        port,
        path: request.path,
        headers: request.headers,
        seconds: sliceSeconds,
        connections,
        maxRequests: 1e8,
      });
      // measure() counts any non-2xx as an error: only the expected status is fine here.
      const unexpected = [...result.failures.statuses].filter(([status]) => status !== request.status);
      if (unexpected.length || result.failures.socketErrors || result.failures.timeouts) {
        throw new BenchFailure(`${request.path}: ${JSON.stringify(result.failures.samples)}`);
      }
      total += result.requests;
    }
    const memory = await server.memory();
    rows.push({ slice, total, ...memory });
  }
  await server.stop();
  const first = rows[0];
  const last = rows[rows.length - 1];
  const per100k = (bytes) => mib((bytes * 100_000) / Math.max(1, last.total - first.total));
  printTable(
    ['slice', 'requests so far', 'RSS', 'heap used'],
    rows.map((r) => [String(r.slice), count(r.total), mib(r.rss), mib(r.heapUsed)]),
  );
  console.log(
    `  from slice 1 to ${slices} (${count(last.total - first.total)} requests): RSS ${mib(last.rss - first.rss)} ` +
      `(${per100k(last.rss - first.rss)} per 100k requests), heap ${mib(last.heapUsed - first.heapUsed)} ` +
      `(${per100k(last.heapUsed - first.heapUsed)} per 100k requests)`,
  );
}

main()
  .catch((error) => {
    console.error(
      `\nSOAK FAILED: ${error instanceof BenchFailure ? error.message : (error?.stack ?? error)}`,
    );
    process.exitCode = 1;
  })
  .finally(() => cleanUp());
