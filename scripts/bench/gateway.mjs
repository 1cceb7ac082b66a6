// Figure 7 of `make bench` (see run.mjs): what the gateway adds to a request. The demo echo service
// is launched through the real `atrium serve` (dist/src/cli.js, SQLite, scratch data directory) and
// reached through its gateway URL with a bearer token; the baseline is the same echo.mjs spawned
// directly and reached on its own port. Same load (keep-alive connections, GET of a small path).
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BenchFailure,
  callApi,
  count,
  measureCases,
  ms,
  onCleanUp,
  printTable,
  range,
  ratio,
  signal,
  sleep,
} from './harness.mjs';
import { deleteOnce, exitOf, freePort, killProcessesUnder, startAtriumServe, stopChild } from './launch.mjs';
import { fetchOnce } from './load.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const echoScript = join(repo, 'src', 'demo', 'catalog', 'echo', 'echo.mjs');
const projectId = 'user-admin';
const servicesPath = `/api/v1/projects/${projectId}/services`;
const path = '/bench?x=1';
const healthTimeoutMs = 30_000;

/** CPU time (user + system) of a process so far, in microseconds, from /proc (Linux). */
function processCpu(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The fields after the command name (which may hold spaces) in parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return { user: (ticks * 1e6) / 100, system: 0 };
}

async function waitForHealth(port) {
  const deadline = Date.now() + healthTimeoutMs;
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    const ok = await fetchOnce(port, '/healthz', { timeoutMs: 1000 }).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return;
    await sleep(20);
  }
  throw new BenchFailure(`echo.mjs on port ${port} did not answer /healthz within ${healthTimeoutMs} ms`);
}

const syncCalls = 300;
const syncCallBudgetMs = 60_000;

/** Latencies (ms) of `n` sequential requests made by `once(i)`, at most `budgetMs` in all. */
async function latencies(n, budgetMs, once) {
  const taken = [];
  const deadline = Date.now() + budgetMs;
  for (let i = 0; i < n && Date.now() < deadline; i++) {
    const start = performance.now();
    await once(i);
    taken.push(performance.now() - start);
  }
  taken.sort((x, y) => x - y);
  const at = (q) => taken[Math.min(taken.length - 1, Math.floor(q * taken.length))];
  return { n: taken.length, p50: at(0.5), p99: at(0.99) };
}

/**
 * Sync call latency: echo's `echo` function called with `sync=true` (a new input each time, so
 * never from the cache: validation, the call's row, the driver's request, the result recorded) vs
 * the same POST /call straight to echo.mjs. One request at a time.
 */
async function syncCallLatency(atriumPort, token, serviceId, echoPort) {
  const post = async (url, body, headers = {}) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (res.status !== 200)
      throw new BenchFailure(`POST ${url} answered ${res.status}: ${text.slice(0, 300)}`);
  };
  const callUrl = `http://127.0.0.1:${atriumPort}${servicesPath}/${serviceId}/functions/echo/calls?sync=true`;
  const run = `${Date.now()}`;
  const straight = await latencies(syncCalls, syncCallBudgetMs, (i) =>
    post(`http://127.0.0.1:${echoPort}/call`, { message: `straight ${run} ${i}` }),
  );
  const called = await latencies(syncCalls, syncCallBudgetMs, (i) =>
    post(callUrl, { input: { message: `sync ${run} ${i}` } }, { Authorization: `Bearer ${token}` }),
  );
  printTable(
    ['what', 'calls', 'p50 ms', 'p99 ms', 'p50 ratio', 'p99 ratio'],
    [
      [
        'POST /call straight to echo.mjs',
        count(straight.n),
        ms(straight.p50),
        ms(straight.p99),
        '1.00',
        '1.00',
      ],
      [
        'sync call of echo’s `echo` through Atrium (cache misses)',
        count(called.n),
        ms(called.p50),
        ms(called.p99),
        ratio(called.p50 / straight.p50),
        ratio(called.p99 / straight.p99),
      ],
    ],
  );
  console.log(
    '  (one request at a time; the sync call adds validation, its recorded row and the driver’s request)\n',
  );
}

export async function figureGateway(settings, scratch) {
  console.log(
    '7. Gateway: GET through /services/{project}/{service}/http/… (bearer token) vs straight to the ' +
      'service’s port; demo/echo on the local runtime, `atrium serve` on SQLite',
  );
  const dataDir = mkdtempSync(join(scratch, 'gateway-'));
  const token = `atr_${randomBytes(16).toString('hex')}`;
  const launched = new Set();
  let atrium = null;
  let direct = null;
  const stopEverything = async () => {
    if (direct) {
      await stopChild(direct.child, direct.exited);
      direct = null;
    }
    if (atrium) {
      for (const serviceId of [...launched]) {
        await deleteOnce(atrium, token, serviceId, launched, { timeoutMs: 15_000 }).catch(() => undefined);
      }
      await atrium.stop();
      atrium = null;
    }
    return killProcessesUnder(dataDir);
  };
  const forget = onCleanUp(stopEverything);
  try {
    atrium = await startAtriumServe(dataDir, token);
    const launch = await callApi(atrium.port, 'POST', servicesPath, {
      token,
      body: { catalog_id: 'demo', package: 'echo' },
      headers: { Prefer: 'wait=30' },
      expect: [202],
    });
    const serviceId = launch.body.target?.id;
    if (serviceId) launched.add(serviceId);
    if (launch.body.status !== 'succeeded')
      throw new BenchFailure(
        `the echo launch ended ${launch.body.status}: ${JSON.stringify(launch.body).slice(0, 400)}`,
      );
    const service = await callApi(atrium.port, 'GET', `${servicesPath}/${serviceId}`, {
      token,
      expect: [200],
    });
    const url = new URL(service.body.endpoints[0].url);
    const gatewayPath = `${url.pathname.replace(/\/$/, '')}${path}`;

    const port = await freePort();
    const child = spawn(process.execPath, [echoScript], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOST: '127.0.0.1', PORT: String(port) },
      stdio: 'ignore',
    });
    direct = { child, exited: exitOf(child) };
    await waitForHealth(port);

    const headers = { Authorization: `Bearer ${token}` };
    const check = await fetchOnce(atrium.port, gatewayPath, { headers });
    if (check.status !== 200 || JSON.parse(check.body).path !== '/bench')
      throw new BenchFailure(
        `GET ${gatewayPath} through the gateway answered ${check.status}: ${check.body.slice(0, 300)}`,
      );

    const straight = { label: 'echo.mjs straight', port, cpu: async () => processCpu(child.pid) };
    const through = { label: 'Atrium gateway', port: atrium.port, cpu: async () => processCpu(atrium.pid) };
    const [a, b] = await measureCases(settings, [
      { server: straight, path },
      { server: through, path: gatewayPath, headers },
    ]);
    printTable(
      [
        'what',
        'req/s',
        'req/s range',
        'p50 ms',
        'p99 ms',
        'CPU µs/req (its process)',
        'req/s ratio',
        'p99 ratio',
      ],
      [
        [
          'straight to echo.mjs on its port',
          count(a.rps),
          range(a),
          ms(a.p50),
          ms(a.p99),
          count(a.cpuPerRequest),
          '1.00',
          '1.00',
        ],
        [
          'through the gateway (Atrium: auth, access, proxy; echo behind it)',
          count(b.rps),
          range(b),
          ms(b.p50),
          ms(b.p99),
          count(b.cpuPerRequest),
          ratio(b.rps / a.rps),
          ratio(b.p99 / a.p99),
        ],
      ],
    );
    console.log(
      '  (CPU µs/req: the echo process for the first row, the Atrium process for the second: what the gateway itself spends)\n',
    );
    await syncCallLatency(atrium.port, token, serviceId, port);
  } finally {
    forget();
    const killed = await stopEverything();
    if (killed.length > 0) console.error(`killed ${killed.length} processes left under ${dataDir}`);
    if (direct) signal(direct.child.pid, 'SIGKILL');
  }
}
