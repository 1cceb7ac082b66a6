// A JSON key-value store over HTTP, persisted to one file with atomic replace (write + rename).
// /keys/{key} is the store's own API; /db/… is Atrium's `db` scope protocol over the same data (a
// record {id} of table {table} is the key `{table}/{id}`; keys without a slash are table `default`).
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

const keyOf = (table, id) => (table === 'default' && !id.includes('/') ? id : `${table}/${id}`);
const tableOf = (key) => (key.includes('/') ? key.slice(0, key.indexOf('/')) : 'default');
const idOf = (key) => (key.includes('/') ? key.slice(key.indexOf('/') + 1) : key);

async function readValue(req, res) {
  try {
    return { value: JSON.parse(await readBody(req, maxValueBytes)) };
  } catch (error) {
    json(res, error.status ?? 400, { error: error.status ? 'value too large' : 'the body must be JSON' });
    return null;
  }
}

/** The `db` scope: tables of records. */
async function db(req, res, url) {
  if (url.pathname === '/db/tables' && req.method === 'GET') {
    const counts = new Map();
    for (const key of store.keys()) counts.set(tableOf(key), (counts.get(tableOf(key)) ?? 0) + 1);
    const tables = [...counts]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, records]) => ({ name, records }));
    return json(res, 200, { tables });
  }
  const query = /^\/db\/tables\/([^/]+)\/query$/.exec(url.pathname);
  if (query && req.method === 'POST') {
    const table = decodeURIComponent(query[1]);
    const read = await readValue(req, res);
    if (!read) return;
    const { prefix = '', limit = 100 } = read.value ?? {};
    const records = [...store.keys()]
      .filter((k) => tableOf(k) === table && idOf(k).startsWith(prefix))
      .sort()
      .slice(0, limit)
      .map((k) => ({ id: idOf(k), value: store.get(k) }));
    return json(res, 200, { records });
  }
  const match = /^\/db\/tables\/([^/]+)\/records\/(.+)$/.exec(url.pathname);
  if (!match) return json(res, 404, { error: 'not found' });
  const [table, id] = [decodeURIComponent(match[1]), decodeURIComponent(match[2])];
  const key = keyOf(table, id);
  if (req.method === 'GET') {
    return store.has(key)
      ? json(res, 200, { table, id, value: store.get(key) })
      : json(res, 404, { error: `no record ${id} in ${table}` });
  }
  if (req.method === 'PUT') {
    const read = await readValue(req, res);
    if (!read) return;
    if (!store.has(key) && store.size >= maxKeys) return json(res, 507, { error: `at most ${maxKeys} keys` });
    store.set(key, read.value);
    await save();
    return json(res, 200, { table, id, value: read.value });
  }
  if (req.method === 'DELETE') {
    const deleted = store.delete(key);
    if (deleted) await save();
    return json(res, 200, { table, id, deleted });
  }
  return json(res, 405, { error: 'method not allowed' });
}

async function answer(req, res) {
  const url = new URL(req.url ?? '/', 'http://kv');
  if (url.pathname === '/healthz') return json(res, 200, { status: 'ok', keys: store.size });
  if (url.pathname.startsWith('/db/')) return db(req, res, url);
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
