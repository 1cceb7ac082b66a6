// The real server process under what clients and machines do to it: uploads that fail part-way and
// clients that vanish (never fatal), a full disk (507, reads go on, nothing lost), SIGKILL under
// concurrent writes (no change without its audit record; an Idempotency-Key cut by the crash
// answers within seconds, never twice), and SIGTERM with busy keep-alive clients.
import { randomBytes, randomUUID } from 'node:crypto';
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestDatabase, testEngines, type TestDatabase } from '../fixtures/databases.js';
import { requireBuild, startAtrium, waitForStatus, type AtriumProcess } from '../fixtures/process.js';

const adminToken = 'atr_resilienceadmintoken0001';
const auth = { Authorization: `Bearer ${adminToken}` };

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

/** One request over its own connection (or `agent`'s); rejects on a socket error. */
function send(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string | Buffer; agent?: Agent } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      {
        method: options.method ?? 'GET',
        headers: {
          ...(options.body === undefined
            ? {}
            : { 'Content-Length': String(Buffer.byteLength(options.body)) }),
          ...options.headers,
        },
        agent: options.agent ?? false,
        timeout: 30_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(chunks).toString(),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer in time')));
    req.on('error', reject);
    req.end(options.body);
  });
}

const json = (body: unknown) => ({
  headers: { ...auth, 'Content-Type': 'application/json' },
  body: JSON.stringify(body),
});
const pipelineBody = (name: string) => ({ name, tasks: [{ module: 'text', function: 'word-count' }] });

/** Starts the server and waits until it is ready (its modules loaded: pipelines can be made). */
async function startReady(env: Record<string, string>, prefix: string[] = []): Promise<AtriumProcess> {
  const server = await startAtrium(env, 30_000, prefix);
  await waitForStatus(`${server.url}/readyz`, 200, 60_000);
  return server;
}

async function healthy(server: AtriumProcess): Promise<void> {
  expect(server.proc.exitCode).toBeNull();
  expect((await send(`${server.url}/healthz`)).status).toBe(200);
}

/** Every item of a paginated list (bounded). */
async function listAll<T>(url: string): Promise<T[]> {
  const items: T[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 500; page++) {
    const sep = url.includes('?') ? '&' : '?';
    const res = await send(`${url}${sep}limit=200${cursor ? `&cursor=${cursor}` : ''}`, { headers: auth });
    expect(res.status).toBe(200);
    const body = JSON.parse(res.text) as { items: T[]; next_cursor: string | null };
    items.push(...body.items);
    cursor = body.next_cursor;
    if (!cursor) return items;
  }
  throw new Error(`${url} has more than 500 pages`);
}

describe('a client’s fault is never fatal', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'atrium-faults-'));
  let server: AtriumProcess;
  const files = () => `${server.url}/api/v1/projects/user-admin/files`;

  beforeAll(async () => {
    requireBuild();
    server = await startAtrium({
      ATRIUM_DATA_DIR: dataDir,
      ATRIUM_ADMIN_TOKEN: adminToken,
      ATRIUM_MAX_UPLOAD_BYTES: '100000',
      ATRIUM_WORKERS: '0',
    });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  /** Streams `chunks` chunks of 64 KiB as a chunked upload, and what the server said, if anything. */
  function chunkedUpload(path: string, contentType: string, prelude: string, chunks: number, cut: boolean) {
    return new Promise<number | 'cut'>((resolve) => {
      const req = httpRequest(`${server.url}${path}`, {
        method: 'POST',
        agent: false,
        headers: { ...auth, 'Content-Type': contentType, 'Transfer-Encoding': 'chunked' },
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => resolve('cut'));
      req.write(prelude);
      let sent = 0;
      const timer = setInterval(() => {
        if (req.destroyed) return clearInterval(timer);
        if (sent++ >= chunks) {
          clearInterval(timer);
          if (cut) req.destroy();
          else req.end();
          return;
        }
        req.write(Buffer.alloc(64 * 1024, 97));
      }, 2);
    });
  }

  it('answers a chunked upload over the limit with 413 and keeps serving', async () => {
    expect(
      await chunkedUpload(
        '/api/v1/projects/user-admin/files?name=big.bin',
        'application/octet-stream',
        '',
        200,
        false,
      ),
    ).toBe(413);
    await healthy(server);
    const boundary = 'b0undary';
    const prelude = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n`;
    expect(
      await chunkedUpload(
        '/api/v1/projects/user-admin/files',
        `multipart/form-data; boundary=${boundary}`,
        prelude,
        200,
        false,
      ),
    ).toBe(413);
    await healthy(server);
  });

  it('survives uploads whose client goes away part-way, raw and multipart, and keeps nothing of them', async () => {
    for (let i = 0; i < 5; i++) {
      await chunkedUpload(
        '/api/v1/projects/user-admin/files?name=cut.bin',
        'application/octet-stream',
        '',
        1,
        true,
      );
      const boundary = 'cutb0undary';
      await chunkedUpload(
        '/api/v1/projects/user-admin/files',
        `multipart/form-data; boundary=${boundary}`,
        `--${boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\ncut.txt\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.txt"\r\n\r\n`,
        1,
        true,
      );
    }
    await healthy(server);
    expect(await listAll(files())).toEqual([]);
  });

  it('survives clients that leave event streams and waits before their end', async () => {
    // A benchmark run stays queued (no workers here): its operation runs, and its events stream on.
    const started = await send(`${server.url}/api/v1/projects/user-admin/benchmark-runs`, {
      method: 'POST',
      ...json({ plan: 'quick' }),
    });
    expect(started.status).toBe(202);
    const operationId = (JSON.parse(started.text) as { id: string }).id;
    const leave = (path: string, headers: Record<string, string>) =>
      new Promise<void>((resolve) => {
        const req = httpRequest(`${server.url}${path}`, { headers: { ...auth, ...headers }, agent: false });
        req.on('error', () => resolve());
        req.on('response', (res) => {
          res.once('data', () => (req.destroy(), resolve()));
        });
        // A wait answers nothing before it ends: the client leaves after a moment.
        setTimeout(() => (req.destroy(), resolve()), 200);
        req.end();
      });
    for (let i = 0; i < 5; i++) {
      await leave(`/api/v1/operations/${operationId}/events`, { Accept: 'text/event-stream' });
      await leave(`/api/v1/operations/${operationId}`, { Prefer: 'wait=5' });
    }
    await healthy(server);
  });
});

describe('a full disk', () => {
  // The server runs in its own mount namespace (as an unprivileged user it is root there), with
  // its data directory on a small tmpfs: only it sees the mount, and it goes when it exits.
  const dataDir = mkdtempSync(join(tmpdir(), 'atrium-full-'));
  let server: AtriumProcess;
  const project = () => `${server.url}/api/v1/projects/user-admin`;

  beforeAll(async () => {
    requireBuild();
    server = await startReady(
      { ATRIUM_DATA_DIR: dataDir, ATRIUM_ADMIN_TOKEN: adminToken, ATRIUM_WORKERS: '0' },
      [
        'unshare',
        '--user',
        '--map-root-user',
        '--mount',
        'sh',
        '-c',
        `mount -t tmpfs -o size=24m tmpfs "${dataDir}" && exec "$@"`,
        'sh',
      ],
    );
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  // Random content: the store keeps each distinct content once.
  const upload = (name: string, bytes: number, body = randomBytes(bytes)) =>
    send(`${project()}/files?name=${name}`, {
      method: 'POST',
      headers: { ...auth, 'Content-Type': 'application/octet-stream' },
      body,
    });

  it('answers 507 insufficient-storage, keeps what it acknowledged, and goes on reading', async () => {
    const kept = await upload('kept.txt', 1000, Buffer.alloc(1000, 'k'));
    expect(kept.status).toBe(201);
    const keptFile = JSON.parse(kept.text) as { id: string; sha256: string };
    const pipeline = await send(`${project()}/pipelines`, {
      method: 'POST',
      ...json(pipelineBody('before')),
    });
    expect(pipeline.status).toBe(201);
    // A token not used yet: its first use, once the disk is full, writes its last use (or tries to).
    const unused = await send(`${server.url}/api/v1/me/tokens`, {
      method: 'POST',
      ...json({ name: 'later' }),
    });
    expect(unused.status).toBe(201);
    const laterToken = (JSON.parse(unused.text) as { secret: string }).secret;

    // Fill the disk with files, halving their size on each refusal, down to a few KiB.
    const stored: string[] = [];
    let size = 4 * 1024 * 1024;
    let refusal: Answer | null = null;
    for (let i = 0; i < 400 && size >= 2048; i++) {
      const res = await upload(`fill-${i}.bin`, size);
      if (res.status === 201) stored.push((JSON.parse(res.text) as { id: string }).id);
      else {
        expect(res.status).toBe(507);
        refusal = res;
        size = Math.floor(size / 2);
      }
    }
    expect(refusal).not.toBeNull();
    const problem = JSON.parse(refusal?.text ?? '{}') as Record<string, unknown>;
    expect(problem).toMatchObject({ type: 'https://atrium.dev/problems/insufficient-storage', status: 507 });
    expect(refusal?.headers['retry-after']).toBeDefined();
    expect(refusal?.headers['content-type']).toMatch(/^application\/problem\+json/);

    // Then the database has no room either: its writes are refused the same way, and only them.
    const acknowledged = ['before'];
    let databaseFull: Answer | null = null;
    for (let i = 0; i < 3000 && !databaseFull; i++) {
      const res = await send(`${project()}/pipelines`, {
        method: 'POST',
        ...json({ ...pipelineBody(`p-${i}`), description: 'x'.repeat(4000) }),
      });
      if (res.status === 201) acknowledged.push(`p-${i}`);
      else {
        expect([res.status, res.text]).toEqual([507, expect.stringContaining('insufficient-storage')]);
        databaseFull = res;
      }
    }
    expect(databaseFull).not.toBeNull();

    await healthy(server);
    const me = await send(`${server.url}/api/v1/me`, { headers: { Authorization: `Bearer ${laterToken}` } });
    expect(me.status).toBe(200);
    const names = (await listAll<{ name: string }>(`${project()}/pipelines`)).map((p) => p.name);
    expect(names.sort()).toEqual(acknowledged.sort());
    expect((await listAll<{ id: string }>(`${project()}/files`)).map((f) => f.id).sort()).toEqual(
      [keptFile.id, ...stored].sort(),
    );
    const content = await send(`${project()}/files/${keptFile.id}/content`, { headers: auth });
    expect([content.status, content.text]).toEqual([200, 'k'.repeat(1000)]);
  }, 180_000);
});

describe.each(testEngines())('crashes and shutdowns (%s)', (engine) => {
  let db: TestDatabase;
  let server: AtriumProcess;
  const env = () => ({
    ATRIUM_DATA_DIR: db.dataDir,
    ATRIUM_DATABASE_URL: db.url,
    ATRIUM_ADMIN_TOKEN: adminToken,
    ATRIUM_WORKERS: '0',
    ATRIUM_LOG_LEVEL: 'warn',
  });
  const pipelines = () => `${server.url}/api/v1/projects/user-admin/pipelines`;

  beforeAll(async () => {
    requireBuild();
    db = await createTestDatabase(engine);
    server = await startReady(env());
  });
  afterAll(async () => {
    await server?.stop();
    await db.drop();
  });

  interface Attempt {
    key: string | null;
    name: string;
    requestIds: string[];
    answered: Answer | null;
  }

  /** Creates a pipeline as `attempt` (with its Idempotency-Key, if any), under a new request id. */
  const create = (attempt: Attempt) => {
    const requestId = randomUUID();
    attempt.requestIds.push(requestId);
    return send(pipelines(), {
      method: 'POST',
      headers: {
        ...json(null).headers,
        'X-Request-Id': requestId,
        ...(attempt.key ? { 'Idempotency-Key': attempt.key } : {}),
      },
      body: JSON.stringify(pipelineBody(attempt.name)),
    });
  };

  /**
   * Six clients create pipelines until the server is SIGKILLed under them (later in each round),
   * then it starts again; `afterRestart` sees each round's attempts.
   */
  async function killedUnderWrites(
    rounds: number,
    keyed: boolean,
    afterRestart: (all: Attempt[]) => Promise<void>,
  ) {
    const attempts: Attempt[] = [];
    for (let round = 0; round < rounds; round++) {
      let writing = true;
      let answered = 0;
      const writers = Array.from({ length: 6 }, async () => {
        for (let i = 0; i < 10_000 && writing; i++) {
          const attempt: Attempt = {
            key: keyed ? randomUUID() : null,
            name: `r${round}-${randomUUID()}`,
            requestIds: [],
            answered: null,
          };
          attempts.push(attempt);
          try {
            attempt.answered = await create(attempt);
            answered++;
          } catch {
            return; // the server is gone
          }
        }
      });
      // Killed once writes are flowing (however slow the machine), with more in flight.
      for (let i = 0; i < 1200 && answered < 2 + round * 2; i++) await sleep(50);
      server.proc.kill('SIGKILL');
      writing = false;
      await Promise.all(writers);
      await server.stop();
      server = await startReady(env());
      await afterRestart(attempts);
    }
    return attempts;
  }

  it('keeps an audit record of every change it acknowledged, across SIGKILLs', async () => {
    const attempts = await killedUnderWrites(6, false, async () => undefined);
    const acknowledged = attempts.filter((a) => a.answered?.status === 201);
    expect(acknowledged.length).toBeGreaterThan(0);
    const audited = new Set(
      (
        await listAll<{ request_id: string }>(`${server.url}/api/v1/audit-events?operation_id=createPipeline`)
      ).map((e) => e.request_id),
    );
    expect(acknowledged.filter((a) => !audited.has(a.requestIds[0] as string)).map((a) => a.name)).toEqual(
      [],
    );
    // And every change made, acknowledged or cut short, has its record.
    const made = new Set((await listAll<{ name: string }>(pipelines())).map((p) => p.name));
    const unaudited = attempts.filter((a) => made.has(a.name) && !audited.has(a.requestIds[0] as string));
    expect(unaudited.map((a) => a.name)).toEqual([]);
  }, 240_000);

  it('answers an Idempotency-Key cut by a SIGKILL within seconds, and never makes two of anything', async () => {
    const attempts = await killedUnderWrites(4, true, async (all) => {
      // A retry of what the crash cut gets its answer within seconds: the kept one if the change
      // was made, a fresh one if it was not; never "in progress" for long, never a second pipeline.
      for (const attempt of all.filter((a) => !a.answered)) {
        for (let tries = 0; tries < 60 && !attempt.answered; tries++) {
          const res = await create(attempt);
          if (res.status === 409 && res.text.includes('idempotency-in-progress')) await sleep(500);
          else attempt.answered = res;
        }
        expect([attempt.name, attempt.answered?.status]).toEqual([attempt.name, 201]);
      }
    });
    const stored = await listAll<{ id: string; name: string }>(pipelines());
    const keyed = stored.filter((p) => attempts.some((a) => a.name === p.name));
    const byName = new Map<string, number>();
    for (const p of keyed) byName.set(p.name, (byName.get(p.name) ?? 0) + 1);
    expect([...byName].filter(([, n]) => n > 1)).toEqual([]);
    expect(keyed.length).toBe(attempts.length);
    for (const attempt of attempts) {
      expect(JSON.parse(attempt.answered?.text ?? '{}')).toMatchObject({ name: attempt.name });
    }
  }, 240_000);

  it('finishes what is in flight on SIGTERM, tells keep-alive clients to close, and exits', async () => {
    const results: { status: number | null; connection?: string; afterSignal: boolean; name: string }[] = [];
    let signalledAt = Infinity;
    let running = true;
    const clients = Array.from({ length: 4 }, async (_, c) => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        for (let i = 0; i < 100_000 && running; i++) {
          const name = `ka-${c}-${i}-${randomUUID()}`;
          const startedAt = Date.now();
          try {
            const res = await send(pipelines(), { method: 'POST', ...json(pipelineBody(name)), agent });
            results.push({
              status: res.status,
              connection: res.headers.connection,
              afterSignal: startedAt > signalledAt,
              name,
            });
          } catch (error) {
            results.push({ status: null, afterSignal: startedAt > signalledAt, name });
            if ((error as NodeJS.ErrnoException).code === 'ECONNREFUSED') return;
          }
        }
      } finally {
        agent.destroy();
      }
    });
    // Signalled once requests are flowing on every connection (however slow the machine).
    for (let i = 0; i < 1200 && results.filter((r) => r.status === 201).length < 8; i++) await sleep(50);
    signalledAt = Date.now();
    server.proc.kill('SIGTERM');
    const code = await server.stop(30_000);
    running = false;
    await Promise.all(clients);
    expect(code).toBe(0);
    expect(server.proc.signalCode).toBeNull();

    expect(results.filter((r) => r.status === 201 && !r.afterSignal).length).toBeGreaterThan(0);
    // Every answer to a request sent after the signal tells its client to close the connection.
    expect(results.filter((r) => r.afterSignal && r.status !== null && r.connection !== 'close')).toEqual([]);

    server = await startReady(env());
    const stored = new Set((await listAll<{ name: string }>(pipelines())).map((p) => p.name));
    // Nothing was cut mid-response: every pipeline made was answered 201 to its client.
    const madeUnanswered = results.filter((r) => r.status !== 201 && stored.has(r.name));
    expect(madeUnanswered).toEqual([]);
    for (const r of results.filter((x) => x.status === 201)) expect(stored.has(r.name)).toBe(true);
  }, 120_000);
});
