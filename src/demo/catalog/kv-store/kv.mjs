// A JSON key-value store over HTTP, persisted to one file with atomic replace (write + rename).
import { readFile, rename, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 8080);
const file = process.env.DATA_FILE ?? 'kv-data.json';
const maxKeys = Number(process.env.MAX_KEYS ?? 10000);
const maxValueBytes = Number(process.env.MAX_VALUE_BYTES ?? 65536);

const store = new Map(Object.entries(JSON.parse(await readFile(file, 'utf8').catch(() => '{}'))));
let saving = Promise.resolve();
const save = () =>
  (saving = saving.then(async () => {
    await writeFile(`${file}.tmp`, JSON.stringify(Object.fromEntries(store)));
    await rename(`${file}.tmp`, file);
  }));

const json = (res, status, body) =>
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) reject(Object.assign(new Error('too large'), { status: 413 }));
      else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function answer(req, res) {
  const url = new URL(req.url ?? '/', 'http://kv');
  if (url.pathname === '/healthz') return json(res, 200, { status: 'ok', keys: store.size });
  if (url.pathname === '/keys' && req.method === 'GET') {
    const prefix = url.searchParams.get('prefix') ?? '';
    return json(res, 200, { keys: [...store.keys()].filter((k) => k.startsWith(prefix)).sort() });
  }
  const match = /^\/keys\/([^/]+)$/.exec(url.pathname);
  if (!match) return json(res, 404, { error: 'not found' });
  const key = decodeURIComponent(match[1]);
  if (req.method === 'GET') {
    return store.has(key)
      ? json(res, 200, { key, value: store.get(key) })
      : json(res, 404, { error: `no key ${key}` });
  }
  if (req.method === 'PUT') {
    let value;
    try {
      value = JSON.parse(await readBody(req, maxValueBytes));
    } catch (error) {
      return json(res, error.status ?? 400, {
        error: error.status ? 'value too large' : 'the body must be JSON',
      });
    }
    if (!store.has(key) && store.size >= maxKeys) return json(res, 507, { error: `at most ${maxKeys} keys` });
    const created = !store.has(key);
    store.set(key, value);
    await save();
    return json(res, created ? 201 : 200, { key, value });
  }
  if (req.method === 'DELETE') {
    if (!store.delete(key)) return json(res, 404, { error: `no key ${key}` });
    await save();
    return res.writeHead(204).end();
  }
  return json(res, 405, { error: 'method not allowed' });
}

const server = createServer((req, res) => {
  console.log(`${req.method} ${req.url}`);
  answer(req, res).catch((error) => {
    console.error(error);
    if (!res.headersSent) json(res, 500, { error: 'internal error' });
  });
});
server.listen(port, host, () => console.log(`kv-store on ${host}:${port}, ${store.size} keys from ${file}`));
const stop = () => server.close(() => saving.then(() => process.exit(0)));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
