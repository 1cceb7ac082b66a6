// `make bench-profile`: where a request's CPU time goes. Starts the figure-1 servers (Atrium and the
// bare node:http baseline, scripts/bench/server.mjs) under `node --cpu-prof`, drives the catalog page
// (also with its page cache off, the services page's baseline in figure 4, and, with an admin token,
// the services page) for BENCH_SECONDS, stops them, and prints the top self-time functions and the
// self time per package (node_modules/<name>, node: internals, Atrium's own dist/src/<dir>) of each
// profile, in µs per request. Self time is the main thread's: work on libuv's threads (SQLite's
// statements run there) is in "CPU µs/req" of `make bench`, not here. The .cpuprofile files are
// kept under .bench/profiles/ for Chrome DevTools or speedscope.
// Settings: BENCH_SECONDS (5), BENCH_CONNECTIONS (32), BENCH_PACKAGES (500), BENCH_PROFILE_TOP (25),
// ATRIUM_BENCH_DATABASE_URL (also profile on PostgreSQL).
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCatalog } from './catalog.mjs';
import { callApi, cleanUp, onCleanUp, startServer, withPostgresDatabase } from './harness.mjs';
import { measure } from './load.mjs';
import { insertServices } from './service-list.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const outDir = join(root, '.bench', 'profiles');
const seconds = Number(process.env.BENCH_SECONDS || 5);
const connections = Number(process.env.BENCH_CONNECTIONS || 32);
const packages = Number(process.env.BENCH_PACKAGES || 500);
const top = Number(process.env.BENCH_PROFILE_TOP || 25);
const catalogPath = '/api/v1/catalogs/bench/packages?limit=20';

/** Self time per node of a .cpuprofile, in µs. */
function selfTimes(profile) {
  const byId = new Map(profile.nodes.map((node) => [node.id, { node, self: 0 }]));
  for (let i = 0; i < profile.samples.length; i++) {
    const entry = byId.get(profile.samples[i]);
    if (entry) entry.self += profile.timeDeltas[i] ?? 0;
  }
  return [...byId.values()];
}

function where(url) {
  if (!url) return '(native)';
  if (url.startsWith('node:')) return 'node:internals';
  const path = url.replace(/^file:\/\//, '');
  const modules = path.lastIndexOf('node_modules/');
  if (modules >= 0) {
    const rest = path.slice(modules + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  const rel = relative(root, path);
  const parts = rel.split('/');
  return parts[0] === 'dist' && parts[1] === 'src' ? `atrium ${parts.slice(2, -1).join('/') || '.'}` : rel;
}

function summarize(file, requests) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const entries = selfTimes(profile);
  const total = entries.reduce((sum, e) => sum + e.self, 0);
  const idle = entries
    .filter((e) => ['(idle)', '(program)', '(garbage collector)'].includes(e.node.callFrame.functionName))
    .map((e) => [e.node.callFrame.functionName, e.self]);
  const byFunction = new Map();
  const byPackage = new Map();
  for (const { node, self } of entries) {
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') continue;
    const place = where(url);
    const key = `${functionName || '(anonymous)'}  ${place}${url && !url.startsWith('node:') ? `:${lineNumber + 1}` : ''}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + self);
    byPackage.set(place, (byPackage.get(place) ?? 0) + self);
  }
  const busy = total - (idle.find(([n]) => n === '(idle)')?.[1] ?? 0);
  const perRequest = (us) => (us / Math.max(1, requests)).toFixed(1);
  console.log(`   ${requests} requests, ${perRequest(busy)} µs busy per request (sampled)`);
  console.log('   by package (µs/req, share of busy):');
  for (const [name, us] of [...byPackage].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    console.log(
      `     ${perRequest(us).padStart(8)}  ${((100 * us) / busy).toFixed(1).padStart(5)} %  ${name}`,
    );
  }
  console.log(`   top ${top} functions by self time (µs/req):`);
  for (const [name, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(
      `     ${perRequest(us).padStart(8)}  ${((100 * us) / busy).toFixed(1).padStart(5)} %  ${name}`,
    );
  }
}

async function profileOne(label, options, prepare) {
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `${label.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}.cpuprofile`);
  const server = await startServer(label, options);
  let result;
  let path;
  try {
    const target = await prepare(server);
    path = target.path;
    const run = (s) =>
      measure({
        port: server.port,
        path,
        headers: target.headers,
        seconds: s,
        connections,
        maxRequests: 1e7,
      });
    await run(1);
    await server.ask({ type: 'profile-start', intervalUs: 200 }, 'profile-started');
    result = await run(seconds);
    await server.ask({ type: 'profile-stop', file }, 'profile-stopped');
  } finally {
    await server.stop();
  }
  if (result.errors > 0)
    throw new Error(`${label}: ${result.errors} failed requests: ${result.failures.samples}`);
  console.log(`\n== ${label}: GET ${path} (${relative(root, file)})`);
  summarize(file, result.requests);
}

async function profileEngine(engine, database) {
  const catalog = async () => ({ path: catalogPath });
  // Atrium first: it migrates the database and loads the catalog the bare server reads.
  await profileOne(
    `atrium ${engine}`,
    { kind: 'atrium', ...database, catalogId: 'bench', extraPaths: 0 },
    catalog,
  );
  await profileOne(`bare ${engine}`, { kind: 'bare', ...database }, catalog);
  // The services page's baseline in figure 4: the same page making its one query on every request.
  await profileOne(
    `atrium ${engine} catalog page cache off`,
    { kind: 'atrium', ...database, catalogId: 'bench', extraPaths: 0, cache: { catalogPagesMs: 0 } },
    catalog,
  );
  const token = `atr_${randomBytes(16).toString('hex')}`;
  await profileOne(
    `atrium ${engine} services page`,
    { kind: 'atrium', ...database, catalogId: 'bench', extraPaths: 0, adminToken: token },
    async ({ port }) => {
      const admin = (await callApi(port, 'GET', '/api/v1/me', { token, expect: [200] })).body.user.id;
      const id = `profile-${randomBytes(3).toString('hex')}`;
      await callApi(port, 'POST', '/api/v1/projects', {
        token,
        body: { id, name: 'Profile' },
        expect: [201],
      });
      await insertServices(database, { admin, member: admin }, [{ id, total: 200 }]);
      return {
        path: `/api/v1/projects/${id}/services?limit=20`,
        headers: { Authorization: `Bearer ${token}` },
        setupRequests: 2,
      };
    },
  );
}

async function main() {
  const scratch = mkdtempSync(join(tmpdir(), 'atrium-profile-'));
  onCleanUp(() => rmSync(scratch, { recursive: true, force: true }));
  const catalogDir = join(scratch, 'catalog');
  writeCatalog(catalogDir, packages);
  try {
    await profileEngine('SQLite', {
      databaseUrl: `sqlite://${join(scratch, 'atrium.db')}`,
      dataDir: scratch,
      catalogDir,
    });
    if (process.env.ATRIUM_BENCH_DATABASE_URL) {
      await withPostgresDatabase(process.env.ATRIUM_BENCH_DATABASE_URL, scratch, (postgres) =>
        profileEngine('PostgreSQL', { ...postgres, catalogDir }),
      );
    }
  } finally {
    await cleanUp();
  }
}

main().catch(async (error) => {
  console.error(`\nPROFILE FAILED: ${error?.stack ?? error}`);
  await cleanUp();
  process.exit(1);
});
