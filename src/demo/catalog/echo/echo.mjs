// HTTP echo: answers every request with what it received. Configured by environment variables.
import { createHash } from 'node:crypto';
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
  if (req.url === '/sse') {
    // Server-Sent Events: five, one every 200 ms (shows that nothing on the way buffers them).
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    let n = 0;
    const tick = setInterval(() => {
      res.write(`data: ${n}\n\n`);
      if (++n === 5) {
        clearInterval(tick);
        res.end();
      }
    }, 200);
    res.on('close', () => clearInterval(tick));
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

// WebSocket (RFC 6455): every text or binary message comes back as it was sent; ping gets pong.
const frame = (opcode, payload) => {
  const length = payload.length;
  const head =
    length < 126
      ? Buffer.from([0x80 | opcode, length])
      : length < 65536
        ? Buffer.from([0x80 | opcode, 126, length >> 8, length & 255])
        : Buffer.concat([
            Buffer.from([0x80 | opcode, 127]),
            (() => {
              const b = Buffer.alloc(8);
              b.writeBigUInt64BE(BigInt(length));
              return b;
            })(),
          ]);
  return Buffer.concat([head, payload]);
};

server.on('upgrade', (req, socket) => {
  const key = req.headers['sec-websocket-key'];
  if (req.headers.upgrade?.toLowerCase() !== 'websocket' || typeof key !== 'string') {
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    return;
  }
  const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
  console.log(`websocket ${req.url}`);
  let buffered = Buffer.alloc(0);
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    for (let n = 0; n < 1000 && buffered.length >= 2; n++) {
      const opcode = buffered[0] & 0x0f;
      const masked = (buffered[1] & 0x80) !== 0;
      let length = buffered[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffered.length < 4) return;
        length = buffered.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (buffered.length < 10) return;
        length = Number(buffered.readBigUInt64BE(2));
        offset = 10;
      }
      if (length > maxBody) return socket.destroy();
      const maskAt = offset;
      if (masked) offset += 4;
      if (buffered.length < offset + length) return;
      const payload = Buffer.from(buffered.subarray(offset, offset + length));
      if (masked) for (let i = 0; i < payload.length; i++) payload[i] ^= buffered[maskAt + (i % 4)];
      buffered = buffered.subarray(offset + length);
      if (opcode === 0x8) return socket.end(frame(0x8, payload.subarray(0, 2)));
      if (opcode === 0x9) socket.write(frame(0xa, payload));
      else if (opcode === 0x1 || opcode === 0x2) socket.write(frame(opcode, payload));
    }
  });
});

server.listen(port, host, () => console.log(`echo listening on ${host}:${port}`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
