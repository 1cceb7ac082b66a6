import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import {
  backendEndpoints,
  echo,
  launch,
  parseSse,
  probe,
  serviceTestConfig,
  waitForService,
} from '../fixtures/services.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

describe.each(testEngines())('services (%s)', (engine) => {
  let t: TestApp;
  let alice: Login; // owner of project lab
  let bob: Login; // member of lab
  let vera: Login; // viewer of lab
  let oscar: Login; // outsider
  let root: Login; // administrator
  const lab = '/api/v1/projects/lab/services';

  beforeAll(async () => {
    t = await createTestApp(engine, { config: serviceTestConfig });
    [alice, bob, vera, oscar, root] = await Promise.all([
      t.login('alice'),
      t.login('bob'),
      t.login('vera'),
      t.login('oscar'),
      t.login('root', { admin: true }),
    ]);
    await t.http
      .post('/api/v1/projects')
      .set('Authorization', alice.auth)
      .send({ id: 'lab', name: 'Lab' })
      .expect(201);
    for (const [who, role] of [
      [bob, 'member'],
      [vera, 'viewer'],
    ] as const) {
      await t.http
        .put(`/api/v1/projects/lab/members/${who.user.id}`)
        .set('Authorization', alice.auth)
        .send({ role })
        .expect(201);
    }
    // Room for every service these tests launch in the lab.
    await t.http
      .patch('/api/v1/projects/lab/quota')
      .set('Authorization', root.auth)
      .send({ limits: { services: 100, cpu: '20', memory: '20Gi' } })
      .expect(200);
  });
  afterAll(() => t.close());

  describe('launchService', () => {
    it('answers a dry run with the rendered run spec and the quota it would take, creating nothing (200)', async () => {
      const res = await t.http
        .post(`${lab}?dryRun=true`)
        .set('Authorization', bob.auth)
        .send(probe({ label: 'dry', secret: 'hunter2' }))
        .expect(200);
      expect(res.body.service).toMatchObject({
        package: 'probe',
        version: '1.0.0',
        secret_options: ['secret'],
      });
      expect(res.body.service.options).toMatchObject({ label: 'dry', mode: 'serve' });
      expect(res.body.service.options).not.toHaveProperty('secret');
      expect(res.body.run.backend).toBe('local');
      expect(res.body.run.spec.env).toMatchObject({ LABEL: 'dry', SECRET: '********' });
      expect(JSON.stringify(res.body)).not.toContain('hunter2');
      expect(res.body.quota).toMatchObject({
        delta: { cpu: '100m', memory: '128Mi', gpu: 0, services: 1 },
        admissible: true,
        exceeded: [],
      });
      const list = await t.http.get(lab).set('Authorization', alice.auth).expect(200);
      expect(list.body.items).toEqual([]);
    });

    it('launches a service and, with Prefer: wait, answers once it runs (202)', async () => {
      const res = await t.http
        .post(lab)
        .set('Authorization', bob.auth)
        .set('Prefer', 'wait=20')
        .send({ ...echo, name: 'bob-echo', options: { greeting: 'salut' } })
        .expect(202);
      expect(res.headers.location).toBe(`/api/v1/operations/${res.body.id}`);
      expect(res.headers['preference-applied']).toBe('wait=20');
      expect(res.body).toMatchObject({
        kind: 'launch-service',
        status: 'succeeded',
        done: true,
        progress: 100,
      });
      const service = await t.http
        .get(`${lab}/${res.body.result.service_id}`)
        .set('Authorization', bob.auth)
        .expect(200);
      expect(service.body).toMatchObject({ name: 'bob-echo', status: 'running', owner: { username: 'bob' } });
      const answer = await fetch(`${service.body.endpoints[0].url}ping`, {
        headers: { Authorization: bob.auth },
      });
      expect(await answer.json()).toMatchObject({ greeting: 'salut', path: '/ping' });
    });

    it('without Prefer: wait, answers at once with the running operation', async () => {
      const res = await t.http.post(lab).set('Authorization', bob.auth).send(echo).expect(202);
      expect(res.body).toMatchObject({ status: 'running', done: false });
      expect(res.headers['preference-applied']).toBeUndefined();
      await waitForService(t, bob.auth, 'lab', res.body.target.id, (s) => s.status === 'running');
    });

    it('replays the launch for a repeated Idempotency-Key, launching once', async () => {
      const send = () =>
        t.http
          .post(lab)
          .set('Authorization', bob.auth)
          .set('Idempotency-Key', 'launch-once')
          .send({ ...echo, name: 'once' });
      const first = await send().expect(202);
      const again = await send().expect(202);
      expect(again.body.id).toBe(first.body.id);
      expect(again.headers['idempotent-replayed']).toBe('true');
      const list = await t.http.get(lab).set('Authorization', bob.auth).expect(200);
      expect(list.body.items.filter((s: { name: string }) => s.name === 'once')).toHaveLength(1);
    });

    it('rejects options that do not match the package options schema, saying which (400)', async () => {
      const res = await t.http
        .post(lab)
        .set('Authorization', bob.auth)
        .send({ ...echo, options: { greeting: 42, colour: 'red' } });
      expectProblem(res, 400, 'validation');
      expect(res.body.errors).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ location: 'body', pointer: '/options/greeting', code: 'type' }),
          expect.objectContaining({
            location: 'body',
            pointer: '/options/colour',
            code: 'additionalProperties',
          }),
        ]),
      );
      expectProblem(
        await t.http.post(lab).set('Authorization', bob.auth).send({ package: 'echo' }),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.post(lab).send(echo), 401, 'unauthorized');
    });

    it('is refused to viewers and to read-only tokens (403)', async () => {
      expectProblem(await t.http.post(lab).set('Authorization', vera.auth).send(echo), 403, 'forbidden');
      const reader = await t.login('reader', { scopes: ['read'] });
      expectProblem(
        await t.http
          .post('/api/v1/projects/user-reader/services')
          .set('Authorization', reader.auth)
          .send(echo),
        403,
        'insufficient-scope',
      );
    });

    it("is refused in someone else's project as if it did not exist (404)", async () => {
      expectProblem(await t.http.post(lab).set('Authorization', oscar.auth).send(echo), 404, 'not-found');
    });

    it('refuses a launch the quota has no room for, naming the resource, and keeps nothing (409)', async () => {
      await t.http
        .patch('/api/v1/projects/user-oscar/quota')
        .set('Authorization', root.auth)
        .send({ limits: { memory: '100Mi' } })
        .expect(200);
      const res = await t.http
        .post('/api/v1/projects/user-oscar/services')
        .set('Authorization', oscar.auth)
        .send(echo);
      expectProblem(res, 409, 'quota-exceeded');
      expect(res.body).toMatchObject({ resource: 'memory', requested: '128Mi', usage: '0', limit: '100Mi' });
      const dry = await t.http
        .post('/api/v1/projects/user-oscar/services?dryRun=true')
        .set('Authorization', oscar.auth)
        .send(echo);
      expect(dry.body.quota).toMatchObject({ admissible: false, exceeded: ['memory'] });
      const list = await t.http
        .get('/api/v1/projects/user-oscar/services')
        .set('Authorization', oscar.auth)
        .expect(200);
      expect(list.body.items).toEqual([]);
      const quota = await t.http
        .get('/api/v1/projects/user-oscar/quota')
        .set('Authorization', oscar.auth)
        .expect(200);
      expect(quota.body.usage).toMatchObject({ services: 0, memory: '0' });
    });

    it('asks to come back while the catalogs are still loading (503)', async () => {
      const early = await createTestApp(engine, { config: serviceTestConfig, loadCatalogs: false });
      try {
        const { auth } = await early.login('early');
        const res = await early.http
          .post('/api/v1/projects/user-early/services')
          .set('Authorization', auth)
          .send(echo);
        expectProblem(res, 503, 'unavailable');
        expect(res.headers['retry-after']).toBe('2');
      } finally {
        await early.close();
      }
    });

    it('refuses an unknown package or version (422)', async () => {
      expectProblem(
        await t.http.post(lab).set('Authorization', bob.auth).send({ catalog_id: 'demo', package: 'nope' }),
        422,
        'unprocessable',
      );
      expectProblem(
        await t.http
          .post(lab)
          .set('Authorization', bob.auth)
          .send({ ...echo, version: '9.9.9' }),
        422,
        'unprocessable',
      );
    });
  });

  describe('listServices', () => {
    let shared: string;
    let secret: string;

    beforeAll(async () => {
      shared = (await launch(t, bob.auth, 'lab', { ...echo, name: 'shared-one', shared: true })).serviceId;
      secret = (await launch(t, bob.auth, 'lab', { ...echo, name: 'private-one' })).serviceId;
    });

    it('shows members their own and the shared services, owners all of them, newest first (200)', async () => {
      const forVera = await t.http.get(lab).set('Authorization', vera.auth).expect(200);
      const veraIds = forVera.body.items.map((s: { id: string }) => s.id);
      expect(veraIds).toContain(shared);
      expect(veraIds).not.toContain(secret);
      const forAlice = await t.http.get(lab).set('Authorization', alice.auth).expect(200);
      const aliceIds = forAlice.body.items.map((s: { id: string }) => s.id);
      expect(aliceIds.slice(0, 2)).toEqual([secret, shared]);
    });

    it('filters by status and package, and paginates', async () => {
      const running = await t.http
        .get(`${lab}?status=running&package=echo&limit=1`)
        .set('Authorization', alice.auth)
        .expect(200);
      expect(running.body.items).toHaveLength(1);
      expect(running.body.items[0].status).toBe('running');
      expect(running.headers.link).toContain('rel="next"');
      const none = await t.http.get(`${lab}?status=suspended`).set('Authorization', alice.auth).expect(200);
      expect(none.body.items).toEqual([]);
    });

    it('rejects an unknown status (400)', async () => {
      expectProblem(
        await t.http.get(`${lab}?status=sleeping`).set('Authorization', alice.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get(lab), 401, 'unauthorized');
    });

    it("hides someone else's project (404)", async () => {
      expectProblem(await t.http.get(lab).set('Authorization', oscar.auth), 404, 'not-found');
    });
  });

  describe('getService', () => {
    let serviceId: string;

    beforeAll(async () => {
      serviceId = (
        await launch(t, bob.auth, 'lab', { ...probe({ label: 'x', secret: 's3cret' }), name: 'with-secret' })
      ).serviceId;
    });

    it('returns the service with tasks, endpoints and an ETag, never the secret options (200)', async () => {
      const res = await t.http.get(`${lab}/${serviceId}`).set('Authorization', bob.auth).expect(200);
      expect(res.body).toMatchObject({
        id: serviceId,
        project_id: 'lab',
        region_id: 'local',
        status: 'running',
        desired_state: 'running',
        resources: { cpu: '100m', memory: '128Mi', gpu: 0 },
        secret_options: ['secret'],
        exit_code: null,
        log_tail: [],
      });
      expect(res.body.options).toEqual({ mode: 'serve', exit_code: 3, crash_after_ms: 500, label: 'x' });
      expect(res.body.tasks[0]).toMatchObject({ id: 'main', status: 'running', ready: true, restarts: 0 });
      // Through the gateway, on the app's origin: the backend's own port stays internal.
      expect(res.body.endpoints[0]).toEqual({
        port: 'http',
        protocol: 'http',
        url: `${t.url}/services/lab/${serviceId}/http/`,
      });
      expect(res.headers.etag).toBeDefined();
      expect(JSON.stringify(res.body)).not.toContain('s3cret');
    });

    it('rejects a malformed id (400)', async () => {
      expectProblem(await t.http.get(`${lab}/not-an-id`).set('Authorization', bob.auth), 400, 'validation');
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get(`${lab}/${serviceId}`), 401, 'unauthorized');
    });

    it("hides a member's private service from other members, and everything from outsiders (404)", async () => {
      expectProblem(
        await t.http.get(`${lab}/${serviceId}`).set('Authorization', vera.auth),
        404,
        'not-found',
      );
      expectProblem(
        await t.http.get(`${lab}/${serviceId}`).set('Authorization', oscar.auth),
        404,
        'not-found',
      );
      expectProblem(
        await t.http.get(`/api/v1/projects/user-bob/services/${serviceId}`).set('Authorization', bob.auth),
        404,
        'not-found',
      );
      await t.http.get(`${lab}/${serviceId}`).set('Authorization', alice.auth).expect(200);
    });
  });

  describe('updateService', () => {
    let serviceId: string;

    beforeAll(async () => {
      serviceId = (await launch(t, bob.auth, 'lab', { ...echo, name: 'changing' })).serviceId;
    });

    it('renames and shares at once, with a new ETag (200)', async () => {
      const before = await t.http.get(`${lab}/${serviceId}`).set('Authorization', bob.auth);
      const res = await t.http
        .patch(`${lab}/${serviceId}`)
        .set('Authorization', bob.auth)
        .set('If-Match', String(before.headers.etag))
        .send({ name: 'renamed', shared: true })
        .expect(200);
      expect(res.body).toMatchObject({ name: 'renamed', shared: true });
      expect(res.headers.etag).not.toBe(before.headers.etag);
      await t.http.get(`${lab}/${serviceId}`).set('Authorization', vera.auth).expect(200);
    });

    it('suspends (freeing cpu and memory, keeping the slot) and resumes, as operations (202)', async () => {
      const quotaBefore = await t.http.get('/api/v1/projects/lab/quota').set('Authorization', alice.auth);
      const suspended = await t.http
        .patch(`${lab}/${serviceId}`)
        .set('Authorization', bob.auth)
        .set('Prefer', 'wait=20')
        .send({ suspended: true })
        .expect(202);
      expect(suspended.body).toMatchObject({ kind: 'suspend-service', status: 'succeeded' });
      const service = await t.http.get(`${lab}/${serviceId}`).set('Authorization', bob.auth);
      expect(service.body).toMatchObject({ status: 'suspended', desired_state: 'suspended', endpoints: [] });
      const quota = await t.http.get('/api/v1/projects/lab/quota').set('Authorization', alice.auth);
      const services = quotaBefore.body.usage.services;
      expect(quota.body.usage.services).toBe(services);
      expect(quota.body.usage.memory).not.toBe(quotaBefore.body.usage.memory);
      const resumed = await t.http
        .patch(`${lab}/${serviceId}`)
        .set('Authorization', bob.auth)
        .set('Prefer', 'wait=20')
        .send({ suspended: false })
        .expect(202);
      expect(resumed.body).toMatchObject({ kind: 'resume-service', status: 'succeeded' });
      const again = await t.http.get(`${lab}/${serviceId}`).set('Authorization', bob.auth);
      expect(again.body.status).toBe('running');
      expect(
        (await fetch(`${again.body.endpoints[0].url}again`, { headers: { Authorization: bob.auth } })).status,
      ).toBe(200);
    });

    it('rejects an empty change (400)', async () => {
      expectProblem(
        await t.http.patch(`${lab}/${serviceId}`).set('Authorization', bob.auth).send({}),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.patch(`${lab}/${serviceId}`).send({ name: 'x' }), 401, 'unauthorized');
    });

    it("lets members see but not change someone else's shared service (403)", async () => {
      const other = await t.login('mia');
      await t.http
        .put(`/api/v1/projects/lab/members/${other.user.id}`)
        .set('Authorization', alice.auth)
        .send({ role: 'member' });
      expectProblem(
        await t.http.patch(`${lab}/${serviceId}`).set('Authorization', other.auth).send({ name: 'mine' }),
        403,
        'forbidden',
      );
      await t.http
        .patch(`${lab}/${serviceId}`)
        .set('Authorization', alice.auth)
        .send({ name: 'owner-renamed' })
        .expect(200);
    });

    it('is hidden from outsiders (404)', async () => {
      expectProblem(
        await t.http.patch(`${lab}/${serviceId}`).set('Authorization', oscar.auth).send({ name: 'x' }),
        404,
        'not-found',
      );
    });

    it('refuses to suspend a failed service, and to resume one the quota has no room for (409)', async () => {
      const crashed = await launch(t, bob.auth, 'lab', probe({ mode: 'crash' }));
      expect(crashed.operation.status).toBe('failed');
      expectProblem(
        await t.http
          .patch(`${lab}/${crashed.serviceId}`)
          .set('Authorization', bob.auth)
          .send({ suspended: true }),
        409,
        'conflict',
      );
      const quinn = await t.login('quinn');
      const own = await launch(t, quinn.auth, 'user-quinn', echo);
      await t.http
        .patch(`/api/v1/projects/user-quinn/services/${own.serviceId}`)
        .set('Authorization', quinn.auth)
        .set('Prefer', 'wait=20')
        .send({ suspended: true })
        .expect(202);
      await t.http
        .patch('/api/v1/projects/user-quinn/quota')
        .set('Authorization', root.auth)
        .send({ limits: { cpu: '50m' } })
        .expect(200);
      const res = await t.http
        .patch(`/api/v1/projects/user-quinn/services/${own.serviceId}`)
        .set('Authorization', quinn.auth)
        .send({ suspended: false });
      expectProblem(res, 409, 'quota-exceeded');
      expect(res.body.resource).toBe('cpu');
      const still = await t.http
        .get(`/api/v1/projects/user-quinn/services/${own.serviceId}`)
        .set('Authorization', quinn.auth);
      expect(still.body.status).toBe('suspended');
    });

    it('refuses a stale If-Match and changes nothing (412)', async () => {
      const res = await t.http
        .patch(`${lab}/${serviceId}`)
        .set('Authorization', bob.auth)
        .set('If-Match', '"1-abc"')
        .send({ name: 'stale' });
      expectProblem(res, 412, 'precondition-failed');
      const service = await t.http.get(`${lab}/${serviceId}`).set('Authorization', bob.auth);
      expect(service.body.name).not.toBe('stale');
    });
  });

  describe('deleteService', () => {
    it('stops the service, gives its quota back and removes it (202)', async () => {
      const { serviceId } = await launch(t, alice.auth, 'user-alice', { ...echo, name: 'short-lived' });
      const before = await t.http.get('/api/v1/projects/user-alice/quota').set('Authorization', alice.auth);
      const running = await t.http
        .get(`/api/v1/projects/user-alice/services/${serviceId}`)
        .set('Authorization', alice.auth);
      const internalUrl = (await backendEndpoints(t, serviceId))[0]?.url as string;
      const res = await t.http
        .delete(`/api/v1/projects/user-alice/services/${serviceId}`)
        .set('Authorization', alice.auth)
        .set('Prefer', 'wait=20')
        .expect(202);
      expect(res.body).toMatchObject({ kind: 'delete-service', status: 'succeeded' });
      expectProblem(
        await t.http
          .get(`/api/v1/projects/user-alice/services/${serviceId}`)
          .set('Authorization', alice.auth),
        404,
        'not-found',
      );
      const after = await t.http.get('/api/v1/projects/user-alice/quota').set('Authorization', alice.auth);
      expect(after.body.usage.services).toBe(before.body.usage.services - 1);
      // Its gateway URL leads nowhere now, and its process is gone with it.
      expect(
        (await fetch(running.body.endpoints[0].url, { headers: { Authorization: alice.auth } })).status,
      ).toBe(404);
      await expect(fetch(`${internalUrl}/`)).rejects.toThrow();
    });

    it('deletes a service at any moment of its launch, leaving nothing behind', async () => {
      const before = await t.http.get('/api/v1/projects/lab/quota').set('Authorization', alice.auth);
      for (let i = 0; i < 8; i++) {
        const started = await t.http.post(lab).set('Authorization', bob.auth).send(echo).expect(202);
        await new Promise((r) => setTimeout(r, i * 7));
        const deleted = await t.http
          .delete(`${lab}/${started.body.target.id}`)
          .set('Authorization', bob.auth)
          .set('Prefer', 'wait=20')
          .expect(202);
        expect(deleted.body.status).toBe('succeeded');
      }
      const after = await t.http.get('/api/v1/projects/lab/quota').set('Authorization', alice.auth);
      expect(after.body.usage).toEqual(before.body.usage);
    });

    it('deletes a failed service too', async () => {
      const { serviceId } = await launch(t, bob.auth, 'lab', probe({ mode: 'crash' }));
      await t.http
        .delete(`${lab}/${serviceId}`)
        .set('Authorization', bob.auth)
        .set('Prefer', 'wait=20')
        .expect(202);
      expectProblem(await t.http.get(`${lab}/${serviceId}`).set('Authorization', bob.auth), 404, 'not-found');
    });

    it('rejects a malformed id (400)', async () => {
      expectProblem(await t.http.delete(`${lab}/x`).set('Authorization', bob.auth), 400, 'validation');
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.delete(`${lab}/svc_00000000000000000000`), 401, 'unauthorized');
    });

    it('is refused to viewers of a shared service (403), hidden from outsiders (404)', async () => {
      const { serviceId } = await launch(t, bob.auth, 'lab', { ...echo, shared: true });
      expectProblem(
        await t.http.delete(`${lab}/${serviceId}`).set('Authorization', vera.auth),
        403,
        'forbidden',
      );
      expectProblem(
        await t.http.delete(`${lab}/${serviceId}`).set('Authorization', oscar.auth),
        404,
        'not-found',
      );
    });

    it('refuses a stale If-Match and deletes nothing (412)', async () => {
      const { serviceId } = await launch(t, bob.auth, 'lab', echo);
      expectProblem(
        await t.http.delete(`${lab}/${serviceId}`).set('Authorization', bob.auth).set('If-Match', '"1-abc"'),
        412,
        'precondition-failed',
      );
      await t.http.get(`${lab}/${serviceId}`).set('Authorization', bob.auth).expect(200);
    });
  });

  describe('deleteServices', () => {
    it('deletes every matching service the caller may delete, as one operation (202)', async () => {
      await t.http
        .post('/api/v1/projects')
        .set('Authorization', alice.auth)
        .send({ id: 'bulk', name: 'Bulk' })
        .expect(201);
      await t.http
        .put(`/api/v1/projects/bulk/members/${bob.user.id}`)
        .set('Authorization', alice.auth)
        .send({ role: 'member' });
      const mine = await Promise.all([
        launch(t, alice.auth, 'bulk', echo),
        launch(t, alice.auth, 'bulk', echo),
      ]);
      const bobs = await launch(t, bob.auth, 'bulk', { ...echo, shared: true });
      const crashed = await launch(t, alice.auth, 'bulk', probe({ mode: 'crash' }));
      const onlyFailed = await t.http
        .delete('/api/v1/projects/bulk/services?status=failed')
        .set('Authorization', alice.auth)
        .set('Prefer', 'wait=20')
        .expect(202);
      expect(onlyFailed.body).toMatchObject({
        kind: 'delete-services',
        status: 'succeeded',
        result: { done: [crashed.serviceId] },
      });
      const bobsOnly = await t.http
        .delete('/api/v1/projects/bulk/services')
        .set('Authorization', bob.auth)
        .set('Prefer', 'wait=20')
        .expect(202);
      expect(bobsOnly.body.result.done).toEqual([bobs.serviceId]);
      const rest = await t.http
        .delete('/api/v1/projects/bulk/services')
        .set('Authorization', alice.auth)
        .set('Prefer', 'wait=20')
        .expect(202);
      expect([...rest.body.result.done].sort()).toEqual(mine.map((m) => m.serviceId).sort());
      const quota = await t.http.get('/api/v1/projects/bulk/quota').set('Authorization', alice.auth);
      expect(quota.body.usage).toMatchObject({ services: 0, cpu: '0', memory: '0' });
      const empty = await t.http
        .delete('/api/v1/projects/bulk/services')
        .set('Authorization', alice.auth)
        .expect(202);
      expect(empty.body).toMatchObject({ status: 'succeeded', result: { done: [] } });
      await t.http.delete('/api/v1/projects/bulk').set('Authorization', alice.auth).expect(204);
    });

    it('rejects an unknown status (400)', async () => {
      expectProblem(
        await t.http.delete(`${lab}?status=zombie`).set('Authorization', alice.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.delete(lab), 401, 'unauthorized');
    });

    it('is refused to viewers (403), and hidden from outsiders (404)', async () => {
      expectProblem(await t.http.delete(lab).set('Authorization', vera.auth), 403, 'forbidden');
      expectProblem(await t.http.delete(lab).set('Authorization', oscar.auth), 404, 'not-found');
    });
  });

  describe('getServiceLogs', () => {
    let serviceId: string;
    let url: string;

    beforeAll(async () => {
      serviceId = (await launch(t, bob.auth, 'lab', probe({ label: 'logs' }))).serviceId;
      url = (await backendEndpoints(t, serviceId))[0]?.url as string;
      await fetch(`${url}/first`);
      // The line travels through the supervisor into the log file a moment after the answer.
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        const logs = await t.http.get(`${lab}/${serviceId}/logs`).set('Authorization', bob.auth);
        if (logs.text.includes('probe served GET /first')) break;
        await new Promise((r) => setTimeout(r, 50));
      }
    });

    it('returns what the service wrote, with tail and timestamps (200)', async () => {
      const all = await t.http.get(`${lab}/${serviceId}/logs`).set('Authorization', bob.auth).expect(200);
      expect(all.headers['content-type']).toMatch(/^text\/plain/);
      const lines = all.text.trim().split('\n');
      expect(lines[0]).toBe('probe starting in mode serve on port ' + new URL(url).port);
      expect(lines).toContain('probe writes to stderr too');
      expect(lines).toContain('probe served GET /first');
      const tail = await t.http
        .get(`${lab}/${serviceId}/logs?tail=1&timestamps=true`)
        .set('Authorization', bob.auth)
        .expect(200);
      expect(tail.text).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z probe served GET \/first\n$/);
      const since = await t.http
        .get(
          `${lab}/${serviceId}/logs?since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`,
        )
        .set('Authorization', bob.auth)
        .expect(200);
      expect(since.text).toBe('');
    });

    it('streams new lines with follow=true until the client goes away', async () => {
      const server: Server = createServer(t.app);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const port = (server.address() as AddressInfo).port;
        const controller = new AbortController();
        const res = await fetch(`http://127.0.0.1:${port}${lab}/${serviceId}/logs?follow=true&tail=1`, {
          headers: { Authorization: bob.auth },
          signal: controller.signal,
        });
        expect(res.status).toBe(200);
        const reader = (res.body as ReadableStream<Uint8Array>).getReader();
        await fetch(`${url}/while-following`);
        let text = '';
        const deadline = Date.now() + 10_000;
        while (!text.includes('/while-following') && Date.now() < deadline) {
          const { value, done } = await reader.read();
          if (done) break;
          text += new TextDecoder().decode(value);
        }
        controller.abort();
        expect(text).toContain('probe served GET /while-following');
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });

    it('rejects a bad tail (400)', async () => {
      expectProblem(
        await t.http.get(`${lab}/${serviceId}/logs?tail=0`).set('Authorization', bob.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get(`${lab}/${serviceId}/logs`), 401, 'unauthorized');
    });

    it('hides the logs of services the caller cannot see, and of unknown tasks (404)', async () => {
      expectProblem(
        await t.http.get(`${lab}/${serviceId}/logs`).set('Authorization', vera.auth),
        404,
        'not-found',
      );
      expectProblem(
        await t.http.get(`${lab}/${serviceId}/logs?task=other`).set('Authorization', bob.auth),
        404,
        'not-found',
      );
      expectProblem(
        await t.http.get(`${lab}/${serviceId}/logs?container=sidecar`).set('Authorization', bob.auth),
        404,
        'not-found',
      );
      await t.http
        .get(`${lab}/${serviceId}/logs?task=main&container=main`)
        .set('Authorization', bob.auth)
        .expect(200);
    });
  });

  describe('followServiceEvents', () => {
    let serviceId: string;

    beforeAll(async () => {
      serviceId = (await launch(t, bob.auth, 'lab', echo)).serviceId;
      // The launch ends as soon as the service is seen running; its `running` event is logged a moment later.
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline) {
        const res = await t.http
          .get(`${lab}/${serviceId}/events?follow=false`)
          .set('Authorization', bob.auth);
        if (parseSse(res.text).some((f) => f.event === 'running')) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    });

    it('sends the stored events as Server-Sent Events, resumable after Last-Event-ID (200)', async () => {
      const res = await t.http
        .get(`${lab}/${serviceId}/events?follow=false`)
        .set('Authorization', bob.auth)
        .expect(200);
      expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
      const frames = parseSse(res.text);
      expect(frames.map((f) => f.id)).toEqual(frames.map((_f, i) => i + 1));
      const types = frames.map((f) => f.event);
      expect(types[0]).toBe('admitted');
      expect(types).toContain('running');
      expect(frames.every((f) => f.data.seq === f.id && f.data.type === f.event)).toBe(true);
      const resumed = await t.http
        .get(`${lab}/${serviceId}/events?follow=false`)
        .set('Authorization', bob.auth)
        .set('Last-Event-ID', '2')
        .expect(200);
      expect(parseSse(resumed.text).map((f) => f.id)).toEqual(frames.slice(2).map((f) => f.id));
    });

    it('follows new events as they happen, and ends when the service is deleted', async () => {
      const server: Server = createServer(t.app);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const port = (server.address() as AddressInfo).port;
        const known = parseSse(
          (await t.http.get(`${lab}/${serviceId}/events?follow=false`).set('Authorization', bob.auth)).text,
        );
        const res = await fetch(`http://127.0.0.1:${port}${lab}/${serviceId}/events`, {
          headers: { Authorization: bob.auth, 'Last-Event-ID': String(known[known.length - 1]?.id) },
        });
        await t.http
          .patch(`${lab}/${serviceId}`)
          .set('Authorization', bob.auth)
          .send({ suspended: true })
          .expect(202);
        await waitForService(t, bob.auth, 'lab', serviceId, (s) => s.status === 'suspended');
        await t.http.delete(`${lab}/${serviceId}`).set('Authorization', bob.auth).expect(202);
        const text = await Promise.race([
          res.text(),
          new Promise<string>((_r, reject) =>
            setTimeout(() => reject(new Error('the stream did not end')), 15_000),
          ),
        ]);
        const frames = parseSse(text);
        expect(frames[0]?.id).toBe((known[known.length - 1]?.id ?? 0) + 1);
        expect(frames.map((f) => f.event)).toEqual(
          expect.arrayContaining(['suspend-requested', 'suspended', 'deleting']),
        );
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });

    it('gives a follower that reads after the deletion the last events, `deleted` last, and ends', async () => {
      const { serviceId: doomed } = await launch(t, bob.auth, 'lab', echo);
      const principal = {
        user: bob.user,
        method: 'token' as const,
        tokenId: null,
        scopes: ['read' as const],
      };
      const controller = new AbortController();
      const events = t.services.serviceManager.events(principal, 'lab', doomed, {
        afterSeq: 0,
        follow: true,
        signal: controller.signal,
      });
      const feed = events[Symbol.asyncIterator]();
      try {
        const first = await feed.next();
        expect(first.value).toMatchObject({ seq: 1, type: 'admitted' });
        // The follower is held while the service is deleted and its row removed.
        const deletion = await t.http.delete(`${lab}/${doomed}`).set('Authorization', bob.auth).expect(202);
        await t.http
          .get(`/api/v1/operations/${deletion.body.id}`)
          .set('Authorization', bob.auth)
          .set('Prefer', 'wait=20')
          .expect(200)
          .expect((res) => expect(res.body.status).toBe('succeeded'));
        expect(await t.database.knex('services').where({ id: doomed }).first()).toBeUndefined();
        const rest: string[] = [];
        for (let i = 0; i < 1000; i++) {
          const next = await feed.next();
          if (next.done) break;
          if (next.value) rest.push(next.value.type);
        }
        expect(rest).toContain('deleting');
        expect(rest[rest.length - 1]).toBe('deleted');
        // A new reader no longer finds the service.
        expectProblem(
          await t.http.get(`${lab}/${doomed}/events?follow=false`).set('Authorization', bob.auth),
          404,
          'not-found',
        );
      } finally {
        controller.abort();
        await feed.return?.(undefined);
      }
    });

    it("keeps a deleted service's events for its followers, then the purge removes them", async () => {
      const { serviceId: doomed } = await launch(t, bob.auth, 'lab', echo);
      const { serviceId: alive } = await launch(t, bob.auth, 'lab', echo);
      const deletion = await t.http.delete(`${lab}/${doomed}`).set('Authorization', bob.auth).expect(202);
      await t.http
        .get(`/api/v1/operations/${deletion.body.id}`)
        .set('Authorization', bob.auth)
        .set('Prefer', 'wait=20')
        .expect(200)
        .expect((res) => expect(res.body.status).toBe('succeeded'));
      const kept = () => t.database.knex('service_events').where({ service_id: doomed }).count({ n: '*' });
      const count = async () => Number((await kept())[0]?.n);
      expect(await count()).toBeGreaterThan(2);
      // Recent: kept. An hour after the last event: removed, and nothing of a living service.
      await t.services.serviceManager.purgeDeletedEvents();
      expect(await count()).toBeGreaterThan(2);
      await t.database
        .knex('service_events')
        .where({ service_id: doomed })
        .update({ at: '2000-01-01T00:00:00.000Z' });
      const living = Number(
        (await t.database.knex('service_events').where({ service_id: alive }).count({ n: '*' }))[0]?.n,
      );
      await t.database
        .knex('service_events')
        .where({ service_id: alive })
        .update({ at: '2000-01-01T00:00:00.000Z' });
      expect(await t.services.serviceManager.purgeDeletedEvents()).toBeGreaterThan(2);
      expect(await count()).toBe(0);
      expect(
        Number(
          (await t.database.knex('service_events').where({ service_id: alive }).count({ n: '*' }))[0]?.n,
        ),
      ).toBe(living);
      expect(living).toBeGreaterThan(0);
    });

    it('rejects a malformed Last-Event-ID (400)', async () => {
      const { serviceId: other } = await launch(t, bob.auth, 'lab', echo);
      expectProblem(
        await t.http
          .get(`${lab}/${other}/events?follow=false`)
          .set('Authorization', bob.auth)
          .set('Last-Event-ID', 'abc'),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get(`${lab}/svc_00000000000000000000/events`), 401, 'unauthorized');
    });

    it('is hidden from outsiders (404)', async () => {
      const { serviceId: other } = await launch(t, bob.auth, 'lab', { ...echo, shared: true });
      expectProblem(
        await t.http.get(`${lab}/${other}/events`).set('Authorization', oscar.auth),
        404,
        'not-found',
      );
    });
  });
});
