import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

describe.each(testEngines())('users (%s)', (engine) => {
  let t: TestApp;
  let admin: Login;
  let alice: Login;

  beforeAll(async () => {
    t = await createTestApp(engine);
    admin = await t.login('root', { admin: true });
    alice = await t.login('alice');
    await t.login('albert');
    await t.login('bruno');
  });
  afterAll(() => t.close());

  describe('listUsers', () => {
    it('lists users by username, with text search over username, name and email (200)', async () => {
      const all = await t.http.get('/api/v1/users').set('Authorization', admin.auth).expect(200);
      expect(all.body.items.map((u: { username: string }) => u.username)).toEqual([
        'albert',
        'alice',
        'bruno',
        'root',
      ]);
      const al = await t.http.get('/api/v1/users?q=AL').set('Authorization', admin.auth).expect(200);
      expect(al.body.items.map((u: { username: string }) => u.username)).toEqual(['albert', 'alice']);
      const literal = await t.http.get('/api/v1/users?q=%25').set('Authorization', admin.auth).expect(200);
      expect(literal.body.items).toEqual([]);
    });

    it('rejects a bad cursor (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/users?cursor=abc').set('Authorization', admin.auth),
        400,
        'invalid-cursor',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get('/api/v1/users'), 401, 'unauthorized');
    });

    it('is for administrators (403)', async () => {
      expectProblem(await t.http.get('/api/v1/users').set('Authorization', alice.auth), 403, 'forbidden');
    });
  });

  describe('getUser', () => {
    it('returns a user to administrators (200)', async () => {
      const res = await t.http
        .get(`/api/v1/users/${alice.user.id}`)
        .set('Authorization', admin.auth)
        .expect(200);
      expect(res.body).toMatchObject({ id: alice.user.id, username: 'alice', admin: false, groups: [] });
    });

    it('rejects a malformed id (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/users/alice').set('Authorization', admin.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get(`/api/v1/users/${alice.user.id}`), 401, 'unauthorized');
    });

    it('is for administrators (403)', async () => {
      expectProblem(
        await t.http.get(`/api/v1/users/${admin.user.id}`).set('Authorization', alice.auth),
        403,
        'forbidden',
      );
    });

    it('answers 404 for an unknown user', async () => {
      expectProblem(
        await t.http.get('/api/v1/users/usr_00000000000000000000').set('Authorization', admin.auth),
        404,
        'not-found',
      );
    });
  });

  describe('updateUser', () => {
    it('grants administration, which takes effect on the next request (200)', async () => {
      const bob = await t.login('bob');
      expectProblem(await t.http.get('/api/v1/users').set('Authorization', bob.auth), 403, 'forbidden');
      const res = await t.http
        .patch(`/api/v1/users/${bob.user.id}`)
        .set('Authorization', admin.auth)
        .send({ admin: true })
        .expect(200);
      expect(res.body.admin).toBe(true);
      await t.http.get('/api/v1/users').set('Authorization', bob.auth).expect(200);
      await t.http
        .patch(`/api/v1/users/${bob.user.id}`)
        .set('Authorization', admin.auth)
        .send({ admin: false })
        .expect(200);
      expectProblem(await t.http.get('/api/v1/users').set('Authorization', bob.auth), 403, 'forbidden');
    });

    it('rejects an empty change (400)', async () => {
      expectProblem(
        await t.http.patch(`/api/v1/users/${alice.user.id}`).set('Authorization', admin.auth).send({}),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(
        await t.http.patch(`/api/v1/users/${alice.user.id}`).send({ admin: true }),
        401,
        'unauthorized',
      );
    });

    it('is for administrators: nobody makes themselves one (403)', async () => {
      expectProblem(
        await t.http
          .patch(`/api/v1/users/${alice.user.id}`)
          .set('Authorization', alice.auth)
          .send({ admin: true }),
        403,
        'forbidden',
      );
    });

    it('answers 404 for an unknown user', async () => {
      expectProblem(
        await t.http
          .patch('/api/v1/users/usr_00000000000000000000')
          .set('Authorization', admin.auth)
          .send({ admin: true }),
        404,
        'not-found',
      );
    });

    it('refuses to withdraw your own administration (409)', async () => {
      expectProblem(
        await t.http
          .patch(`/api/v1/users/${admin.user.id}`)
          .set('Authorization', admin.auth)
          .send({ admin: false }),
        409,
        'conflict',
      );
    });
  });
});
