// Static file server over one directory, with optional listings. No path ever leaves the root.
import { createReadStream } from 'node:fs';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, resolve, sep } from 'node:path';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 8080);
const root = resolve(process.env.ROOT ?? 'www');
const listing = process.env.LISTING !== 'false';
const types = {
  '.html': 'text/html; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.css': 'text/css',
  '.js': 'text/javascript',
  '.json': 'application/json',
  '.csv': 'text/csv',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.svg': 'image/svg+xml',
};
const escape = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

await mkdir(root, { recursive: true });
if ((await readdir(root)).length === 0) {
  await writeFile(
    join(root, 'index.html'),
    '<!doctype html><title>Atrium</title><h1>It works</h1><p>Put files in this directory.</p>\n',
  );
}

async function answer(req, res) {
  const url = new URL(req.url ?? '/', 'http://static');
  if (url.pathname === '/healthz')
    return res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
  if (req.method !== 'GET' && req.method !== 'HEAD') return res.writeHead(405, { allow: 'GET, HEAD' }).end();
  let relative;
  try {
    relative = decodeURIComponent(url.pathname);
  } catch {
    return res.writeHead(400).end();
  }
  const path = resolve(root, `.${relative}`);
  if (path !== root && !path.startsWith(root + sep)) return res.writeHead(403).end();
  const info = await stat(path).catch(() => null);
  if (!info) return res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  if (info.isDirectory()) {
    if (!url.pathname.endsWith('/')) return res.writeHead(301, { location: `${url.pathname}/` }).end();
    const index = join(path, 'index.html');
    if (await stat(index).catch(() => null)) return send(res, index, req.method);
    if (!listing) return res.writeHead(404).end();
    const names = (await readdir(path, { withFileTypes: true }))
      .map((e) => (e.isDirectory() ? `${e.name}/` : e.name))
      .sort();
    const items = names.map(
      (n) =>
        `<li><a href="${encodeURIComponent(n.replace(/\/$/, ''))}${n.endsWith('/') ? '/' : ''}">${escape(n)}</a></li>`,
    );
    return res
      .writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      .end(`<!doctype html><title>${escape(relative)}</title><ul>${items.join('')}</ul>\n`);
  }
  return send(res, path, req.method, info.size);
}

async function send(res, path, method, size) {
  const length = size ?? (await stat(path)).size;
  res.writeHead(200, {
    'content-type': types[extname(path)] ?? 'application/octet-stream',
    'content-length': length,
  });
  if (method === 'HEAD') return res.end();
  createReadStream(path).pipe(res);
}

const server = createServer((req, res) => {
  answer(req, res).catch((error) => {
    console.error(error);
    if (!res.headersSent) res.writeHead(500).end();
  });
  console.log(`${req.method} ${req.url}`);
});
server.listen(port, host, () => console.log(`serving ${root} on ${host}:${port}`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
