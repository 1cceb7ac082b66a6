import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

describe.each(testEngines())('audit (%s)', (engine) => {
  let t: TestApp;
  let admin: Login;
  let alice: Login;

  beforeAll(async () => {
    t = await createTestApp(engine);
    admin = await t.login('root', { admin: true });
    alice = await t.login('alice');
    await t.http
      .post('/api/v1/projects')
      .set('Authorization', alice.auth)
      .send({ id: 'audited', name: 'A' })
      .expect(201);
    await t.http
      .patch('/api/v1/projects/audited')
      .set('Authorization', alice.auth)
      .send({ name: 'B' })
      .expect(200);
    await t.http
      .patch('/api/v1/projects/audited')
      .set('Authorization', alice.auth)
      .send({ nope: 1 })
      .expect(400);
    await t.http.post('/api/v1/projects').send({ id: 'anonymous', name: 'A' }).expect(401);
    await t.http.get('/api/v1/projects/audited').set('Authorization', alice.auth).expect(200);
    await t.services.audit.flush();
  });
  afterAll(() => t.close());

  describe('listAuditEvents', () => {
    it('records every mutating request, failed ones included, newest first; reads are not recorded (200)', async () => {
      const res = await t.http.get('/api/v1/audit-events').set('Authorization', admin.auth).expect(200);
      expect(
        res.body.items.map((e: { operation_id: string; status: number }) => [e.operation_id, e.status]),
      ).toEqual([
        ['createProject', 401],
        ['updateProject', 400],
        ['updateProject', 200],
        ['createProject', 201],
      ]);
      expect(res.body.items[2]).toMatchObject({
        user_id: alice.user.id,
        method: 'PATCH',
        path: '/api/v1/projects/audited',
        project_id: 'audited',
      });
      expect(res.body.items[0].user_id).toBeNull();
    });

    it('filters by user, project and operation', async () => {
      const byProject = await t.http
        .get('/api/v1/audit-events?project_id=audited')
        .set('Authorization', admin.auth)
        .expect(200);
      expect(byProject.body.items).toHaveLength(2);
      const byOperation = await t.http
        .get('/api/v1/audit-events?operation_id=createProject')
        .set('Authorization', admin.auth);
      expect(byOperation.body.items).toHaveLength(2);
      const byUser = await t.http
        .get(`/api/v1/audit-events?user_id=${alice.user.id}&limit=1`)
        .set('Authorization', admin.auth);
      expect(byUser.body.items).toHaveLength(1);
      expect(byUser.body.next_cursor).not.toBeNull();
    });

    it('rejects malformed filters (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/audit-events?user_id=alice').set('Authorization', admin.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get('/api/v1/audit-events'), 401, 'unauthorized');
    });

    it('is for administrators (403)', async () => {
      expectProblem(
        await t.http.get('/api/v1/audit-events').set('Authorization', alice.auth),
        403,
        'forbidden',
      );
    });
  });
});
