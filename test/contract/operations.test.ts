import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { echo, launch, parseSse, probe, quickRuntime, serviceTestConfig } from '../fixtures/services.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

describe.each(testEngines())('operations (%s)', (engine) => {
  let t: TestApp;
  let alice: Login;
  let bob: Login;
  let oscar: Login;
  let root: Login;
  let finished: string;

  beforeAll(async () => {
    t = await createTestApp(engine, {
      config: {
        ...serviceTestConfig,
        localRuntime: { ...quickRuntime, readinessTimeoutMs: 8000 },
      },
    });
    [alice, bob, oscar, root] = await Promise.all([
      t.login('alice'),
      t.login('bob'),
      t.login('oscar'),
      t.login('root', { admin: true }),
    ]);
    await t.http
      .post('/api/v1/projects')
      .set('Authorization', alice.auth)
      .send({ id: 'team', name: 'Team' })
      .expect(201);
    await t.http
      .put(`/api/v1/projects/team/members/${bob.user.id}`)
      .set('Authorization', alice.auth)
      .send({ role: 'viewer' })
      .expect(201);
    finished = (await launch(t, alice.auth, 'team', echo)).operation.id;
  });
  afterAll(() => t.close());

  describe('getOperation', () => {
    it('returns an operation to whoever started it and to those who may see what it acts on (200)', async () => {
      const res = await t.http
        .get(`/api/v1/operations/${finished}`)
        .set('Authorization', alice.auth)
        .expect(200);
      expect(res.body).toMatchObject({
        id: finished,
        kind: 'launch-service',
        project_id: 'team',
        target: { type: 'service' },
        status: 'succeeded',
        done: true,
        progress: 100,
        error: null,
        created_by: alice.user.id,
      });
      expect(res.body.finished_at).not.toBeNull();
      // Bob, a viewer of the project, does not see Alice's service while she has not shared it:
      // nor its launch, nor that launch's events.
      for (const path of [`/api/v1/operations/${finished}`, `/api/v1/operations/${finished}/events`]) {
        const hidden = await t.http.get(path).set('Authorization', bob.auth);
        expectProblem(hidden, 404, 'not-found');
        expect(hidden.body.detail).toBe(`operation "${finished}" does not exist`);
      }
      await t.http
        .patch(`/api/v1/projects/team/services/${res.body.target.id}`)
        .set('Authorization', alice.auth)
        .send({ shared: true })
        .expect(200);
      await t.http.get(`/api/v1/operations/${finished}`).set('Authorization', bob.auth).expect(200);
    });

    it('holds the answer until the operation is done with Prefer: wait', async () => {
      const started = await t.http
        .post('/api/v1/projects/team/services')
        .set('Authorization', alice.auth)
        .send(echo)
        .expect(202);
      expect(started.body.done).toBe(false);
      const res = await t.http
        .get(`/api/v1/operations/${started.body.id}`)
        .set('Authorization', alice.auth)
        .set('Prefer', 'wait=20')
        .expect(200);
      expect(res.body).toMatchObject({ status: 'succeeded', done: true });
      expect(res.headers['preference-applied']).toBe('wait=20');
    });

    it('ends a wait at N seconds when the operation is not done by then', async () => {
      const slow = await t.http
        .post('/api/v1/projects/team/services')
        .set('Authorization', alice.auth)
        .send(probe({ mode: 'never-ready' }))
        .expect(202);
      const before = Date.now();
      const res = await t.http
        .get(`/api/v1/operations/${slow.body.id}`)
        .set('Authorization', alice.auth)
        .set('Prefer', 'wait=1')
        .expect(200);
      expect(res.body.done).toBe(false);
      expect(Date.now() - before).toBeGreaterThanOrEqual(900);
      expect(Date.now() - before).toBeLessThan(5000);
    });

    it('rejects a malformed id and a malformed Prefer (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/operations/nope').set('Authorization', alice.auth),
        400,
        'validation',
      );
      expectProblem(
        await t.http
          .get(`/api/v1/operations/${finished}`)
          .set('Authorization', alice.auth)
          .set('Prefer', 'wait=forever'),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get(`/api/v1/operations/${finished}`), 401, 'unauthorized');
    });

    it('hides the operations of other projects like missing ones (404)', async () => {
      const foreign = await t.http.get(`/api/v1/operations/${finished}`).set('Authorization', oscar.auth);
      expectProblem(foreign, 404, 'not-found');
      expectProblem(
        await t.http.get('/api/v1/operations/op_00000000000000000000').set('Authorization', oscar.auth),
        404,
        'not-found',
      );
      await t.http.get(`/api/v1/operations/${finished}`).set('Authorization', root.auth).expect(200);
    });
  });

  describe('listOperations', () => {
    it('lists the operations I started, newest first, with filters (200)', async () => {
      const res = await t.http.get('/api/v1/operations').set('Authorization', alice.auth).expect(200);
      const createdAt = res.body.items.map((op: { created_at: string }) => op.created_at);
      expect(createdAt).toEqual([...createdAt].sort().reverse());
      expect(res.body.items.every((op: { created_by: string }) => op.created_by === alice.user.id)).toBe(
        true,
      );
      const succeeded = await t.http
        .get('/api/v1/operations?status=succeeded&project_id=team&limit=1')
        .set('Authorization', alice.auth)
        .expect(200);
      expect(succeeded.body.items).toHaveLength(1);
      expect(succeeded.body.items[0].status).toBe('succeeded');
      const mine = await t.http.get('/api/v1/operations').set('Authorization', bob.auth).expect(200);
      expect(mine.body.items).toEqual([]);
    });

    it("lists everyone's operations for administrators with all=true", async () => {
      const res = await t.http
        .get('/api/v1/operations?all=true&limit=200')
        .set('Authorization', root.auth)
        .expect(200);
      expect(res.body.items.map((op: { id: string }) => op.id)).toContain(finished);
    });

    it('rejects an unknown status (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/operations?status=sleeping').set('Authorization', alice.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get('/api/v1/operations'), 401, 'unauthorized');
    });

    it('refuses all=true to non-administrators (403)', async () => {
      expectProblem(
        await t.http.get('/api/v1/operations?all=true').set('Authorization', alice.auth),
        403,
        'forbidden',
      );
    });
  });

  describe('cancelOperation', () => {
    it('cancels a launch still in progress: the service is removed and its quota given back (202)', async () => {
      const quota = await t.http.get('/api/v1/projects/team/quota').set('Authorization', alice.auth);
      const started = await t.http
        .post('/api/v1/projects/team/services')
        .set('Authorization', alice.auth)
        .send(probe({ mode: 'never-ready' }))
        .expect(202);
      const res = await t.http
        .post(`/api/v1/operations/${started.body.id}/cancellation`)
        .set('Authorization', alice.auth)
        .set('Prefer', 'wait=20')
        .expect(202);
      expect(res.headers.location).toBe(`/api/v1/operations/${started.body.id}`);
      expect(res.body).toMatchObject({
        status: 'cancelled',
        done: true,
        error: { type: 'https://atrium.dev/problems/cancelled' },
      });
      expectProblem(
        await t.http
          .get(`/api/v1/projects/team/services/${started.body.target.id}`)
          .set('Authorization', alice.auth),
        404,
        'not-found',
      );
      const after = await t.http.get('/api/v1/projects/team/quota').set('Authorization', alice.auth);
      expect(after.body.usage).toEqual(quota.body.usage);
    });

    it('rejects a malformed id (400)', async () => {
      expectProblem(
        await t.http.post('/api/v1/operations/x/cancellation').set('Authorization', alice.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.post(`/api/v1/operations/${finished}/cancellation`), 401, 'unauthorized');
    });

    it('is for whoever started the operation, or administrators (403)', async () => {
      // Shared, so that Bob sees the service (and its launch) but may not act on it.
      const started = await t.http
        .post('/api/v1/projects/team/services')
        .set('Authorization', alice.auth)
        .send({ ...echo, shared: true })
        .expect(202);
      expectProblem(
        await t.http
          .post(`/api/v1/operations/${started.body.id}/cancellation`)
          .set('Authorization', bob.auth),
        403,
        'forbidden',
      );
    });

    it('hides operations of other projects (404)', async () => {
      expectProblem(
        await t.http.post(`/api/v1/operations/${finished}/cancellation`).set('Authorization', oscar.auth),
        404,
        'not-found',
      );
    });

    it('refuses to cancel what is finished, and deletions (409)', async () => {
      expectProblem(
        await t.http.post(`/api/v1/operations/${finished}/cancellation`).set('Authorization', alice.auth),
        409,
        'conflict',
      );
      const { serviceId } = await launch(t, alice.auth, 'team', echo);
      const deletion = await t.http
        .delete(`/api/v1/projects/team/services/${serviceId}`)
        .set('Authorization', alice.auth)
        .expect(202);
      const res = await t.http
        .post(`/api/v1/operations/${deletion.body.id}/cancellation`)
        .set('Authorization', alice.auth);
      if (res.status !== 409) throw new Error(`expected 409, got ${res.status} ${JSON.stringify(res.body)}`);
      expect(res.body.type).toBe('https://atrium.dev/problems/conflict');
    });
  });

  describe('followOperationEvents', () => {
    it('replays the stored events, and ends with `done` (200)', async () => {
      const res = await t.http
        .get(`/api/v1/operations/${finished}/events`)
        .set('Authorization', alice.auth)
        .expect(200);
      expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
      const frames = parseSse(res.text);
      expect(frames[0]?.event).toBe('created');
      expect(frames[frames.length - 1]).toMatchObject({
        event: 'done',
        data: { data: { status: 'succeeded' } },
      });
      const resumed = await t.http
        .get(`/api/v1/operations/${finished}/events`)
        .set('Authorization', alice.auth)
        .set('Last-Event-ID', '1')
        .expect(200);
      expect(parseSse(resumed.text).map((f) => f.id)).toEqual(frames.slice(1).map((f) => f.id));
    });

    it('follows a running operation until it is done, then ends the stream', async () => {
      const server: Server = createServer(t.app);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const port = (server.address() as AddressInfo).port;
        const started = await t.http
          .post('/api/v1/projects/team/services')
          .set('Authorization', alice.auth)
          .send(echo)
          .expect(202);
        const res = await fetch(`http://127.0.0.1:${port}/api/v1/operations/${started.body.id}/events`, {
          headers: { Authorization: alice.auth },
        });
        const text = await Promise.race([
          res.text(),
          new Promise<string>((_r, reject) =>
            setTimeout(() => reject(new Error('the stream did not end')), 20_000),
          ),
        ]);
        const events = parseSse(text).map((f) => f.event);
        expect(events[0]).toBe('created');
        expect(events).toContain('progress');
        expect(events[events.length - 1]).toBe('done');
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });

    it('rejects a malformed Last-Event-ID (400)', async () => {
      expectProblem(
        await t.http
          .get(`/api/v1/operations/${finished}/events`)
          .set('Authorization', alice.auth)
          .set('Last-Event-ID', '-1'),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get(`/api/v1/operations/${finished}/events`), 401, 'unauthorized');
    });

    it('hides operations of other projects (404)', async () => {
      expectProblem(
        await t.http.get(`/api/v1/operations/${finished}/events`).set('Authorization', oscar.auth),
        404,
        'not-found',
      );
    });
  });
});
