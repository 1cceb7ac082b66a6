// HTTP echo: answers every request with what it received. Configured by environment variables.
import { createServer } from 'node:http';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 8080);
const greeting = process.env.GREETING ?? 'hello';
const delayMs = Number(process.env.DELAY_MS ?? 0);
const status = Number(process.env.STATUS ?? 200);
const maxBody = 1024 * 1024;

const server = createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    return;
  }
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > maxBody) {
      res.writeHead(413).end();
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    const url = new URL(req.url ?? '/', 'http://echo');
    const answer = {
      greeting,
      service: process.env.SERVICE_ID ?? null,
      method: req.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: req.headers,
      body: Buffer.concat(chunks).toString('utf8'),
    };
    console.log(`${req.method} ${url.pathname} ${size} bytes`);
    setTimeout(
      () => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(answer)),
      delayMs,
    );
  });
});

server.listen(port, host, () => console.log(`echo listening on ${host}:${port}`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
