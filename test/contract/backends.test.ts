// External backends: a real kv-store process Atrium did not launch, registered by URL in a
// project, then used like a launched service (its db scope's functions, its heartbeat, the
// gateway); the egress policy refusing internal addresses unless the administrator allows them.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from '../../src/backends/scheduler/worker.js';
import { createLogger } from '../../src/log.js';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { freePort, functionCalls, serviceTestConfig, startOutsideKvStore } from '../fixtures/services.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

describe.each(testEngines())('external backends (%s)', (engine) => {
  let t: TestApp;
  let strict: TestApp; // the default policy: nothing internal allowed
  let worker: Worker;
  let alice: Login; // owner of lab
  let bob: Login; // member of lab
  let vera: Login; // viewer of lab
  let oscar: Login; // outsider
  let kv: Awaited<ReturnType<typeof startOutsideKvStore>>;
  let silent: Server; // accepts connections and never answers
  const silentSockets = new Set<Socket>();
  let silentUrl = '';
  const dir = mkdtempSync(join(tmpdir(), 'atrium-external-'));
  const backends = '/api/v1/projects/lab/backends';
  const services = '/api/v1/projects/lab/services';

  beforeAll(async () => {
    kv = await startOutsideKvStore(dir);
    silent = createServer((socket) => {
      silentSockets.add(socket);
      socket.on('close', () => silentSockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    silentUrl = `http://127.0.0.1:${(silent.address() as { port: number }).port}`;
    t = await createTestApp(engine, {
      config: { ...serviceTestConfig, functions: { externalBackends: { allow: ['127.0.0.1/32'] } } },
    });
    [alice, bob, vera, oscar] = await Promise.all([
      t.login('alice'),
      t.login('bob'),
      t.login('vera'),
      t.login('oscar'),
    ]);
    await t.createProject(alice, 'lab', { member: [bob], viewer: [vera] });
    worker = new Worker(
      { scheduler: t.services.scheduler, notifier: t.services.notifier, log: createLogger('silent') },
      { concurrency: 4, pollMs: 50 },
    );
    worker.start();
    strict = await createTestApp(engine, { config: serviceTestConfig });
  });
  afterAll(async () => {
    await worker.stop(2000);
    await t.close();
    await strict.close();
    kv.child.kill('SIGTERM');
    for (const socket of silentSockets) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  const register = (body: Record<string, unknown>, auth = bob.auth, app = t) =>
    app.http.post(backends).set('Authorization', auth).send(body);
  const kvBody = (extra: Record<string, unknown> = {}) => ({
    name: 'team-kv',
    app: 'kv-store',
    version: '1.0.0',
    locations: [{ name: 'http', url: kv.url }],
    health_path: '/healthz',
    scope: { name: 'db', port: 'http' },
    metadata: { team: 'data' },
    ...extra,
  });

  describe('createBackend', () => {
    it('201: registers a backend as a service of the project, reachable, holding no quota', async () => {
      const res = await register(kvBody()).expect(201);
      expect(res.headers.location).toBe(`${services}/${res.body.id}`);
      expect(res.headers.etag).toBeTruthy();
      expect(res.body).toMatchObject({
        name: 'team-kv',
        origin: 'external',
        catalog_id: 'external',
        package: 'kv-store',
        version: '1.0.0',
        status: 'running',
        message: null,
        owner: { username: 'bob' },
      });
      // Its URL goes through the gateway; the backend's own address stays internal.
      expect(res.body.endpoints).toEqual([
        {
          port: 'http',
          protocol: 'http',
          url: expect.stringMatching(new RegExp(`/services/lab/${res.body.id}/http/$`)),
        },
      ]);
      expect(JSON.stringify(res.body)).not.toContain(kv.url);
      const quota = await t.http.get('/api/v1/projects/lab/quota').set('Authorization', bob.auth).expect(200);
      expect(quota.body.usage.services).toBe(0);
      const list = await t.http.get(services).set('Authorization', bob.auth).expect(200);
      expect(list.body.items.map((s: { id: string }) => s.id)).toContain(res.body.id);
      const events = await t.http
        .get(`${services}/${res.body.id}/events?follow=false`)
        .set('Authorization', bob.auth)
        .expect(200);
      expect(events.text).toContain('registered as an external backend (kv-store 1.0.0)');
    });

    it('201: registers an unreachable backend at once and says so, not hanging on it', async () => {
      const closed = `http://127.0.0.1:${await freePort()}`;
      const refused = await register(
        kvBody({ name: 'gone', locations: [{ name: 'http', url: closed }] }),
      ).expect(201);
      expect(refused.body.message).toMatch(/^not reachable when registered: .*ECONNREFUSED/);
      const mute = await register(
        kvBody({ name: 'mute', locations: [{ name: 'http', url: silentUrl }] }),
      ).expect(201);
      expect(mute.body.message).toMatch(/^not reachable when registered: no answer within \d+ ms/);
    });

    it('422: refuses loopback, link-local and private locations unless the administrator allows them', async () => {
      const rootOfStrict = await strict.login('root', { admin: true });
      await strict.createProject(rootOfStrict, 'lab');
      for (const url of [
        kv.url,
        'http://localhost:8080/',
        'http://[::1]:8080/',
        'http://169.254.169.254/latest/meta-data/',
        'http://10.0.0.5/',
        'http://192.168.1.10:9000/',
        'http://2130706433/',
      ]) {
        const res = await register(kvBody({ locations: [{ name: 'http', url }] }), rootOfStrict.auth, strict);
        expectProblem(res, 422, 'unprocessable');
        expect(res.body.detail).toMatch(/internal address|allow-list/);
        expect(res.body.errors).toEqual([expect.objectContaining({ pointer: '/locations/0/url' })]);
      }
      // Allowed on `t` for 127.0.0.1 only: another loopback address is still refused.
      const other = await register(kvBody({ locations: [{ name: 'http', url: 'http://127.0.0.2:1/' }] }));
      expectProblem(other, 422, 'unprocessable');
    });

    it('422: refuses other schemes, credentials in URLs, unresolvable names and a scope on no location', async () => {
      for (const url of ['ftp://example.org/', 'http://u:p@127.0.0.1:1/', 'http://no-such-host.invalid/']) {
        expectProblem(await register(kvBody({ locations: [{ name: 'http', url }] })), 422, 'unprocessable');
      }
      expectProblem(await register(kvBody({ scope: { name: 'db', port: 'api' } })), 422, 'unprocessable');
      expectProblem(
        await register(
          kvBody({
            locations: [
              { name: 'http', url: kv.url },
              { name: 'http', url: kv.url },
            ],
          }),
        ),
        422,
        'unprocessable',
      );
    });

    it('400: refuses unknown fields and a registration without locations', async () => {
      expectProblem(await register({ ...kvBody(), image: 'x' }), 400, 'validation');
      expectProblem(await register(kvBody({ locations: [] })), 400, 'validation');
    });

    it('401/403/404: anonymous, viewers and outsiders cannot register', async () => {
      expectProblem(await t.http.post(backends).send(kvBody()), 401, 'unauthorized');
      expectProblem(await register(kvBody(), vera.auth), 403, 'forbidden');
      expectProblem(await register(kvBody(), oscar.auth), 404, 'not-found');
    });
  });

  describe('an external backend used like a service', () => {
    let id = '';
    beforeAll(async () => {
      id = (await register(kvBody({ name: 'used' })).expect(201)).body.id as string;
    });

    const calls = functionCalls(
      () => t,
      services,
      () => bob.auth,
    );
    const callFn = (name: string, input: unknown, sync: boolean, serviceId = id) =>
      calls.call(serviceId, name, input, { sync });

    it('offers its scope’s functions and calls them, sync and queued, on the program itself', async () => {
      const list = await t.http.get(`${services}/${id}/functions`).set('Authorization', bob.auth).expect(200);
      expect(list.body.items.map((f: { name: string }) => f.name)).toEqual(
        expect.arrayContaining(['tables', 'records.get', 'records.put', 'records.delete', 'records.query']),
      );
      const put = await callFn('records.put', { table: 'people', id: 'ada', value: { born: 1815 } }, true);
      expect(put.status).toBe(200);
      expect(put.body).toMatchObject({ status: 'succeeded', result: { table: 'people', id: 'ada' } });
      const queued = await callFn('records.get', { table: 'people', id: 'ada' }, false);
      expect(queued.status).toBe(202);
      const call = await calls.wait(id, queued.body.id as string);
      expect(call).toMatchObject({ status: 'succeeded', result: { value: { born: 1815 } } });
      const own = await fetch(`${kv.url}/keys/people%2Fada`);
      expect(await own.json()).toMatchObject({ value: { born: 1815 } });
    });

    it('answers its heartbeat through its health path', async () => {
      const beat = await t.http.get(`${services}/${id}/heartbeat`).set('Authorization', bob.auth).expect(200);
      expect(beat.body).toMatchObject({ status: 'up', http_status: 200 });
    });

    it('is reached through the gateway with a token, and not without', async () => {
      const gateway = `/services/lab/${id}/http`;
      await t.http.get(`${gateway}/keys`).expect(401);
      const keys = await t.http.get(`${gateway}/keys`).set('Authorization', bob.auth).expect(200);
      expect(keys.body.keys).toContain('people/ada');
      expectProblem(
        await t.http.get(`/services/lab/${id}/other/`).set('Authorization', bob.auth),
        404,
        'not-found',
      );
    });

    it('never follows a redirect to an address the policy refuses: a call fails, the gateway hands it to the client', async () => {
      // A backend that sends every request on to 127.0.0.2, which is not allowed; a listener there
      // counts what would have reached it.
      let reached = 0;
      const target = createServer((socket) => {
        reached++;
        socket.destroy();
      });
      await new Promise<void>((resolve) => target.listen(0, '127.0.0.2', resolve));
      const targetPort = (target.address() as { port: number }).port;
      const redirector = (await import('node:http')).createServer((req, res) => {
        res.writeHead(302, { Location: `http://127.0.0.2:${targetPort}${req.url ?? '/'}` }).end();
      });
      await new Promise<void>((resolve) => redirector.listen(0, '127.0.0.1', resolve));
      try {
        const url = `http://127.0.0.1:${(redirector.address() as { port: number }).port}`;
        const hop = (await register(kvBody({ name: 'hop', locations: [{ name: 'http', url }] })).expect(201))
          .body.id as string;
        const called = await callFn('tables', {}, true, hop);
        expectProblem(called, 502, 'bad-gateway');
        // The gateway hands a redirect to the client (whose own browser decides), never follows it.
        const through = await t.http
          .get(`/services/lab/${hop}/http/db/tables`)
          .set('Authorization', bob.auth);
        expect(through.status).toBe(302);
        expect(reached).toBe(0);
      } finally {
        await new Promise((resolve) => redirector.close(resolve));
        await new Promise((resolve) => target.close(resolve));
      }
    });

    it('cannot be suspended (409) but can be renamed, and has no log here', async () => {
      expectProblem(
        await t.http.patch(`${services}/${id}`).set('Authorization', bob.auth).send({ suspended: true }),
        409,
        'conflict',
      );
      await t.http
        .patch(`${services}/${id}`)
        .set('Authorization', bob.auth)
        .send({ name: 'used-kv' })
        .expect(200);
      const logs = await t.http.get(`${services}/${id}/logs`).set('Authorization', bob.auth).expect(200);
      expect(logs.text).toBe('');
    });

    it('is forgotten when deleted, and the program it names keeps running', async () => {
      const gone = (await register(kvBody({ name: 'to-forget' })).expect(201)).body.id as string;
      await t.http
        .delete(`${services}/${gone}`)
        .set('Authorization', bob.auth)
        .set('Prefer', 'wait=10')
        .expect((res) => expect([200, 202]).toContain(res.status));
      for (let i = 0; i < 100; i++) {
        const res = await t.http.get(`${services}/${gone}`).set('Authorization', bob.auth);
        if (res.status === 404) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expectProblem(await t.http.get(`${services}/${gone}`).set('Authorization', bob.auth), 404, 'not-found');
      expect((await fetch(`${kv.url}/healthz`)).ok).toBe(true);
    });
  });
});
