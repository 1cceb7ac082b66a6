// The TypeScript client (clients/typescript, @atrium/client) against the real `atrium serve`: first
// as a user gets it — packed, installed into a scratch project from the tarball, imported by a plain
// ESM script and type-checked there — then every helper from the workspace source: lists over
// several pages, an operation waited for, event streams resumed with Last-Event-ID after a dropped
// connection, streamed uploads and downloads, and problems as typed errors.
// The client knows nothing of the database engine, so one engine (SQLite) is enough here.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { repoRoot } from '../../src/paths.js';
import {
  AtriumProblem,
  createAtriumClient,
  unwrap,
  type AtriumClient,
  type AtriumEvent,
} from '../../clients/typescript/src/index.js';
import { startedAtrium, writeTestCatalogsConfig, type StartedAtrium } from '../fixtures/e2e.js';

const run = promisify(execFile);
const adminToken = 'atr_e2eTypescriptClientAdmin0123';
const projectId = 'user-admin';

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function collect<T>(items: AsyncIterable<T>, max = 1000): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) {
    all.push(item);
    if (all.length >= max) break;
  }
  return all;
}

/**
 * A TCP proxy on loopback that breaks its first connection right after the first Server-Sent Event
 * it carries (the client sees the body end mid-stream) and passes later connections through whole.
 * It records each request's head, so the test sees what the reconnection asked for.
 */
async function startDroppingProxy(target: URL): Promise<{ url: string; heads: string[]; close: () => void }> {
  const heads: string[] = [];
  const sockets = new Set<Socket>();
  let connections = 0;
  const server: Server = createServer((client) => {
    const dropAfterFirstEvent = connections++ === 0;
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    let head = '';
    client.on('data', (chunk: Buffer) => {
      if (!head.includes('\r\n\r\n')) {
        head += chunk.toString('latin1');
        if (head.includes('\r\n\r\n')) heads.push(head.slice(0, head.indexOf('\r\n\r\n')));
      }
      upstream.write(chunk);
    });
    let seen = '';
    upstream.on('data', (chunk: Buffer) => {
      if (!dropAfterFirstEvent) return void client.write(chunk);
      const before = seen.length;
      seen += chunk.toString('latin1');
      const body = seen.indexOf('\r\n\r\n');
      const id = body < 0 ? -1 : seen.indexOf('\nid:', body);
      const end = id < 0 ? -1 : seen.indexOf('\n\n', id);
      if (end < 0) return void client.write(chunk);
      client.end(chunk.subarray(0, end + 2 - before));
      upstream.destroy();
    });
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', closeBoth).on('close', closeBoth);
    upstream.on('error', closeBoth).on('close', closeBoth);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the proxy has no port');
  return {
    url: `http://127.0.0.1:${address.port}`,
    heads,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

describe('the TypeScript client (@atrium/client)', () => {
  let atrium: StartedAtrium;
  let client: AtriumClient;
  const scratch = mkdtempSync(join(tmpdir(), 'atrium-client-'));

  beforeAll(async () => {
    // The test catalog has `probe`, a package that crashes on request: a launch that fails.
    const config = writeTestCatalogsConfig(scratch);
    atrium = await startedAtrium('sqlite', adminToken, { ATRIUM_CONFIG: config });
    client = createAtriumClient({ baseUrl: atrium.server.url, token: adminToken });
  }, 90_000);

  afterAll(async () => {
    await atrium?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  describe('packed and installed into a scratch project', () => {
    it('is packed with its own types, installed from the tarball, and used by a plain ESM script', async () => {
      const packed = await run(
        'npm',
        ['pack', '-w', '@atrium/client', '--pack-destination', scratch, '--json', '--no-audit', '--no-fund'],
        { cwd: repoRoot, timeout: 120_000 },
      );
      const [tarball] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
      expect(tarball?.files.map((f) => f.path)).toEqual(
        expect.arrayContaining(['package.json', 'README.md', 'dist/index.js', 'dist/generated/openapi.d.ts']),
      );

      const project = join(scratch, 'project');
      rmSync(project, { recursive: true, force: true });
      mkdirSync(project);
      writeFileSync(join(project, 'package.json'), JSON.stringify({ private: true, type: 'module' }));
      // openapi-fetch (the client's one dependency) comes from npm's cache when the root install put it
      // there, from the registry otherwise; bounded by the timeout.
      await run(
        'npm',
        [
          'install',
          join(scratch, tarball?.filename ?? ''),
          '--prefer-offline',
          '--no-audit',
          '--no-fund',
          '--loglevel=error',
        ],
        { cwd: project, timeout: 240_000 },
      );

      const content = `hello from a scratch project ${randomBytes(8).toString('hex')}\n`;
      writeFileSync(
        join(project, 'smoke.mjs'),
        `import { createHash } from 'node:crypto';
import { AtriumProblem, createAtriumClient, unwrap } from '@atrium/client';

const client = createAtriumClient({ baseUrl: process.env.ATRIUM_URL, token: process.env.ATRIUM_TOKEN });
const me = unwrap(await client.GET('/me'));
const packages = [];
for await (const pkg of client.paginate('/catalogs/{catalogId}/packages', {
  params: { path: { catalogId: 'demo' }, query: { limit: 1 } },
})) packages.push(pkg.name);
const body = new Blob([process.env.CONTENT]);
const file = await client.uploadFile('${projectId}', body, { name: 'smoke.txt', tags: ['smoke'] });
const hash = createHash('sha256');
for await (const chunk of await client.downloadFile('${projectId}', file.id)) hash.update(chunk);
let missing = null;
try {
  await client.downloadFile('${projectId}', 'fil_0000000000000000');
} catch (error) {
  missing = error instanceof AtriumProblem ? { status: error.status, kind: error.kind } : String(error);
}
console.log(JSON.stringify({ user: me.user.id, projects: me.projects.map((p) => p.id), packages, file, downloaded: hash.digest('hex'), missing }));
`,
      );
      const smoke = await run(process.execPath, ['smoke.mjs'], {
        cwd: project,
        timeout: 60_000,
        env: {
          PATH: process.env.PATH ?? '',
          ATRIUM_URL: atrium.server.url,
          ATRIUM_TOKEN: adminToken,
          CONTENT: content,
        },
      });
      const seen = JSON.parse(smoke.stdout) as {
        user: string;
        projects: string[];
        packages: string[];
        file: { sha256: string; size: number; tags: string[]; name: string };
        downloaded: string;
        missing: unknown;
      };
      expect(seen.user).toMatch(/^usr_/);
      expect(seen.projects).toContain(projectId);
      expect(seen.packages).toEqual(expect.arrayContaining(['echo', 'kv-store']));
      expect(new Set(seen.packages).size).toBe(seen.packages.length);
      expect(seen.file).toMatchObject({
        name: 'smoke.txt',
        tags: ['smoke'],
        size: Buffer.byteLength(content),
      });
      expect(seen.file.sha256).toBe(sha256(Buffer.from(content)));
      expect(seen.downloaded).toBe(seen.file.sha256);
      expect(seen.missing).toEqual({ status: 404, kind: 'not-found' });

      // The tarball's own declarations type a TypeScript user's code: a path not in the spec fails.
      writeFileSync(
        join(project, 'typed.ts'),
        `import { createAtriumClient, unwrap, type Schemas } from '@atrium/client';
const client = createAtriumClient({ baseUrl: 'http://127.0.0.1:1', token: 'atr_x' });
export async function names(): Promise<string[]> {
  const page: Schemas['PackageList'] = unwrap(
    await client.GET('/catalogs/{catalogId}/packages', { params: { path: { catalogId: 'demo' } } }),
  );
  // @ts-expect-error: no such path in the spec
  await client.GET('/no-such-path');
  return page.items.map((item) => item.name);
}
`,
      );
      await run(
        process.execPath,
        [
          join(repoRoot, 'node_modules/typescript/bin/tsc'),
          '--noEmit',
          '--strict',
          '--module',
          'nodenext',
          '--target',
          'es2022',
          '--lib',
          'es2023,dom,dom.asynciterable',
          'typed.ts',
        ],
        { cwd: project, timeout: 60_000 },
      );
    }, 420_000);
  });

  describe('its helpers, from the workspace source', () => {
    let launch: Awaited<ReturnType<AtriumClient['waitForOperation']>>;

    it('paginate follows next_cursor over every page of a list', async () => {
      const catalog = { path: { catalogId: 'demo' } };
      const whole = unwrap(
        await client.GET('/catalogs/{catalogId}/packages', { params: { ...catalog, query: { limit: 200 } } }),
      );
      expect(whole.next_cursor).toBeNull();
      expect(whole.items.length).toBeGreaterThan(2);
      const pageByPage = await collect(
        client.paginate('/catalogs/{catalogId}/packages', { params: { ...catalog, query: { limit: 1 } } }),
      );
      expect(pageByPage.map((p) => p.name)).toEqual(whole.items.map((p) => p.name));
    });

    it('waitForOperation waits for a launch of echo and resolves with the finished operation', async () => {
      const answer = await client.POST('/projects/{projectId}/services', {
        params: { path: { projectId } },
        body: { catalog_id: 'demo', package: 'echo' },
      });
      expect(answer.response.status).toBe(202);
      // 200 would be a dry run's answer; a launch answers its operation.
      const accepted = unwrap(answer);
      if (!('kind' in accepted)) throw new Error(`not an operation: ${JSON.stringify(accepted)}`);
      expect(accepted.kind).toBe('launch-service');
      launch = await client.waitForOperation(accepted, { timeoutMs: 90_000 });
      expect(launch).toMatchObject({ id: accepted.id, done: true, status: 'succeeded', error: null });
      const serviceId = launch.target?.id ?? '';
      const service = unwrap(
        await client.GET('/projects/{projectId}/services/{serviceId}', {
          params: { path: { projectId, serviceId } },
        }),
      );
      expect(service.status).toBe('running');
    });

    it('events reads an operation’s stream, resumes after Last-Event-ID, and reconnects after a drop', async () => {
      expect(launch).toBeDefined();
      const params = { path: { operationId: launch.id } };
      const stored = await collect(
        client.events('/operations/{operationId}/events', { params, follow: false }),
      );
      expect(stored.length).toBeGreaterThan(1);
      expect(stored.map((e) => Number(e.id))).toEqual(stored.map((_, i) => i + 1));
      expect(stored.map((e) => e.data.seq)).toEqual(stored.map((e) => Number(e.id)));
      expect(stored.at(-1)?.event).toBe('done');

      const after = await collect(
        client.events('/operations/{operationId}/events', { params, follow: false, lastEventId: '1' }),
      );
      expect(after).toEqual(stored.slice(1));

      const proxy = await startDroppingProxy(new URL(atrium.server.url));
      try {
        const throughProxy = createAtriumClient({ baseUrl: proxy.url, token: adminToken });
        const resumed: AtriumEvent[] = await collect(
          throughProxy.events('/operations/{operationId}/events', { params, follow: false }),
        );
        expect(resumed).toEqual(stored);
        expect(proxy.heads).toHaveLength(2);
        expect(proxy.heads[0]).not.toMatch(/^last-event-id:/im);
        expect(proxy.heads[1]).toMatch(/^last-event-id: 1\r?$/im);
      } finally {
        proxy.close();
      }
    });

    it('events follows a service’s stream until the caller stops reading', async () => {
      const serviceId = launch.target?.id ?? '';
      const followed = client.events('/projects/{projectId}/services/{serviceId}/events', {
        params: { path: { projectId, serviceId } },
        signal: AbortSignal.timeout(60_000),
      });
      const types: string[] = [];
      for await (const event of followed) {
        types.push(event.event);
        if (event.event === 'running' || types.length > 100) break;
      }
      expect(types).toContain('running');
    });

    it('uploadFile streams a body of each kind and downloadFile streams it back, sha256 intact', async () => {
      const bytes = randomBytes(3 * 1024 * 1024 + 17);
      let offset = 0;
      const stream = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (offset >= bytes.length) return controller.close();
          controller.enqueue(bytes.subarray(offset, offset + 256 * 1024));
          offset += 256 * 1024;
        },
      });
      const streamed = await client.uploadFile(projectId, stream, {
        name: 'weights.bin',
        mediaType: 'application/octet-stream',
        tags: ['client', 'streamed'],
      });
      expect(streamed).toMatchObject({
        size: bytes.length,
        sha256: sha256(bytes),
        tags: ['client', 'streamed'],
      });
      const back = await readAll(await client.downloadFile(projectId, streamed.id));
      expect(sha256(back)).toBe(streamed.sha256);

      const fromBuffer = await client.uploadFile(projectId, Buffer.from('a,b\n1,2\n'), {
        name: 'table.csv',
        parentId: streamed.id,
      });
      expect(fromBuffer).toMatchObject({ media_type: 'text/csv', parent_id: streamed.id, size: 8 });
      expect((await readAll(await client.downloadFile(projectId, fromBuffer.id))).toString()).toBe(
        'a,b\n1,2\n',
      );

      const empty = await client.uploadFile(projectId, new Blob([]), { name: 'empty.txt' });
      expect(await readAll(await client.downloadFile(projectId, empty.id))).toHaveLength(0);
    });

    it('waitForOperation throws a failed launch’s problem, with the operation', async () => {
      const accepted = unwrap(
        await client.POST('/projects/{projectId}/services', {
          params: { path: { projectId } },
          body: { catalog_id: 'test', package: 'probe', options: { mode: 'crash', exit_code: 42 } },
        }),
      );
      if (!('kind' in accepted)) throw new Error(`not an operation: ${JSON.stringify(accepted)}`);
      const failure = await client
        .waitForOperation(accepted.id, { timeoutMs: 90_000 })
        .catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(AtriumProblem);
      const problem = failure as AtriumProblem;
      expect(problem).toMatchObject({ status: 502, kind: 'launch-failed' });
      expect(problem.problem).toMatchObject({ exit_code: 42 });
      expect(problem.operation).toMatchObject({ id: accepted.id, done: true, status: 'failed' });
    });

    it('waitForOperation follows the deletion of what was launched', async () => {
      const serviceId = launch.target?.id ?? '';
      const deletion = unwrap(
        await client.DELETE('/projects/{projectId}/services/{serviceId}', {
          params: { path: { projectId, serviceId } },
        }),
      );
      expect(await client.waitForOperation(deletion, { timeoutMs: 90_000 })).toMatchObject({
        kind: 'delete-service',
        status: 'succeeded',
      });
      const gone = await client.GET('/projects/{projectId}/services/{serviceId}', {
        params: { path: { projectId, serviceId } },
      });
      expect(gone.response.status).toBe(404);
    });

    it('answers a 404 as an AtriumProblem, from unwrap and from the helpers', async () => {
      const missingFile = await client
        .GET('/projects/{projectId}/files/{fileId}', {
          params: { path: { projectId, fileId: 'fil_0000000000000000' } },
        })
        .then(unwrap)
        .catch((error: unknown) => error);
      expect(missingFile).toBeInstanceOf(AtriumProblem);
      expect(missingFile).toMatchObject({
        status: 404,
        type: 'https://atrium.dev/problems/not-found',
        kind: 'not-found',
        errors: [],
      });
      const missingOperation = await client
        .waitForOperation('op_0000000000000000', { timeoutMs: 10_000 })
        .catch((error: unknown) => error);
      expect(missingOperation).toBeInstanceOf(AtriumProblem);
      expect(missingOperation).toMatchObject({ status: 404, kind: 'not-found' });
    });

    it('answers a 400 as an AtriumProblem with its field errors', async () => {
      const params = { path: { catalogId: 'demo' }, query: { limit: 0 } };
      const fromUnwrap = await client
        .GET('/catalogs/{catalogId}/packages', { params })
        .then(unwrap)
        .catch((error: unknown) => error);
      const fromPaginate = await collect(client.paginate('/catalogs/{catalogId}/packages', { params })).catch(
        (error: unknown) => error,
      );
      for (const problem of [fromUnwrap, fromPaginate]) {
        expect(problem).toBeInstanceOf(AtriumProblem);
        expect(problem).toMatchObject({ status: 400, kind: 'validation' });
        expect((problem as AtriumProblem).errors).toEqual(
          expect.arrayContaining([expect.objectContaining({ location: 'query' })]),
        );
      }
    });
  });
});
