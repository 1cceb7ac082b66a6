// kv-stats: a demo plugin driver for Atrium (the protocol: src/backends/drivers/plugin.ts). It
// serves the app `kv-store` (every version from 1.0.0, see driver.json) with two functions that
// the store does not have: `keys.count` and `keys.export`, computed from the store's own HTTP API
// at the endpoint Atrium sends with each call. No dependencies; listens on 127.0.0.1:$PORT (0: any
// free port) and prints where.
import { createServer } from 'node:http';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 8090);
const maxBodyBytes = 1024 * 1024;
// A store larger than this is not exported in one answer: the caller narrows by prefix.
const maxExported = 1000;
const upstreamTimeoutMs = 5000;

const json = (res, status, body, type = 'application/json') =>
  res.writeHead(status, { 'content-type': type }).end(JSON.stringify(body));
const problem = (res, status, title, detail) =>
  json(res, status, { type: 'about:blank', title, status, detail }, 'application/problem+json');

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > maxBodyBytes) {
        reject(Object.assign(new Error('too large'), { status: 413 }));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** GET on the kv-store's own API; an error with status 502 when it cannot be used. */
async function store(base, path) {
  let res;
  try {
    res = await fetch(new URL(path, `${base.replace(/\/$/, '')}/`), {
      signal: AbortSignal.timeout(upstreamTimeoutMs),
      redirect: 'manual',
    });
  } catch (error) {
    throw Object.assign(
      new Error(`the kv-store could not be reached: ${error.cause?.code ?? error.message}`),
      {
        status: 502,
      },
    );
  }
  if (!res.ok)
    throw Object.assign(new Error(`the kv-store answered ${res.status} to ${path}`), { status: 502 });
  return res.json();
}

const keysOf = async (base, prefix) => (await store(base, `keys?prefix=${encodeURIComponent(prefix)}`)).keys;

const functions = {
  async 'keys.count'({ prefix = '' }, base) {
    return { prefix, count: (await keysOf(base, prefix)).length };
  },
  async 'keys.export'({ prefix = '' }, base) {
    const keys = await keysOf(base, prefix);
    if (keys.length > maxExported) {
      throw Object.assign(new Error(`${keys.length} keys: export at most ${maxExported} (give a prefix)`), {
        status: 422,
      });
    }
    const entries = {};
    for (const key of keys) entries[key] = (await store(base, `keys/${encodeURIComponent(key)}`)).value;
    return { prefix, count: keys.length, entries };
  },
};

async function answer(req, res) {
  const url = new URL(req.url ?? '/', 'http://plugin');
  if (url.pathname === '/healthz' && req.method === 'GET') return json(res, 200, { status: 'ok' });
  const match = /^\/functions\/([^/]+)$/.exec(url.pathname);
  if (!match || req.method !== 'POST')
    return problem(res, 404, 'Not found', `no ${req.method} ${url.pathname}`);
  const fn = functions[decodeURIComponent(match[1])];
  if (!fn) return problem(res, 404, 'No such function', `kv-stats has no function ${match[1]}`);
  let call;
  try {
    call = JSON.parse(await readBody(req));
  } catch (error) {
    return problem(res, error.status ?? 400, 'Bad request', 'the body must be JSON');
  }
  const base = call?.service?.endpoints?.http;
  if (typeof base !== 'string') return problem(res, 400, 'Bad request', 'the service has no http endpoint');
  try {
    return json(res, 200, { result: await fn(call.input ?? {}, base) });
  } catch (error) {
    return problem(res, error.status ?? 500, 'The function failed', error.message);
  }
}

const server = createServer((req, res) => {
  answer(req, res).catch((error) => {
    console.error(error);
    if (!res.headersSent) problem(res, 500, 'Internal error', 'kv-stats failed');
  });
});
server.listen(port, host, () => {
  const { port: bound } = server.address();
  console.log(`kv-stats listening on http://${host}:${bound}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
