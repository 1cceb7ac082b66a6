import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

describe.each(testEngines())('projects (%s)', (engine) => {
  let t: TestApp;
  let owner: Login;
  let member: Login;
  let viewer: Login;
  let outsider: Login;
  let admin: Login;

  beforeAll(async () => {
    t = await createTestApp(engine);
    [owner, member, viewer, outsider, admin] = await Promise.all([
      t.login('olga'),
      t.login('mehdi'),
      t.login('vera'),
      t.login('oscar'),
      t.login('root', { admin: true }),
    ]);
    await t.http
      .post('/api/v1/projects')
      .set('Authorization', owner.auth)
      .send({ id: 'vision', name: 'Vision' })
      .expect(201);
    await t.http
      .put(`/api/v1/projects/vision/members/${member.user.id}`)
      .set('Authorization', owner.auth)
      .send({ role: 'member' })
      .expect(201);
    await t.http
      .put(`/api/v1/projects/vision/members/${viewer.user.id}`)
      .set('Authorization', owner.auth)
      .send({ role: 'viewer' })
      .expect(201);
  });
  afterAll(() => t.close());

  describe('createProject', () => {
    it('creates a group project owned by its creator, with the region default quota (201)', async () => {
      const res = await t.http
        .post('/api/v1/projects')
        .set('Authorization', owner.auth)
        .send({ id: 'nlp-lab', name: 'NLP lab', description: 'Language models' })
        .expect(201);
      expect(res.body).toMatchObject({ id: 'nlp-lab', kind: 'group', role: 'owner', region_id: 'local' });
      expect(res.headers.location).toBe('/api/v1/projects/nlp-lab');
      expect(res.headers.etag).toMatch(/^"1-/);
      const quota = await t.http
        .get('/api/v1/projects/nlp-lab/quota')
        .set('Authorization', owner.auth)
        .expect(200);
      expect(quota.body.limits).toEqual({
        cpu: '4',
        memory: '8Gi',
        gpu: 0,
        services: 10,
        concurrent_jobs: 4,
        storage: '10Gi',
      });
    });

    it('rejects an invalid identifier (400)', async () => {
      const res = await t.http
        .post('/api/v1/projects')
        .set('Authorization', owner.auth)
        .send({ id: 'Not_A_Slug', name: 'x' });
      expectProblem(res, 400, 'validation');
      expect(res.body.errors[0]).toMatchObject({ location: 'body', pointer: '/id', code: 'pattern' });
    });

    it('needs credentials (401)', async () => {
      expectProblem(
        await t.http.post('/api/v1/projects').send({ id: 'x-y', name: 'x' }),
        401,
        'unauthorized',
      );
    });

    it('needs the write scope (403)', async () => {
      const reader = await t.login('reader-p', { scopes: ['read'] });
      expectProblem(
        await t.http
          .post('/api/v1/projects')
          .set('Authorization', reader.auth)
          .send({ id: 'ro-x', name: 'x' }),
        403,
        'insufficient-scope',
      );
    });

    it('refuses an identifier already taken, even by a project the caller cannot see (409)', async () => {
      const res = await t.http
        .post('/api/v1/projects')
        .set('Authorization', outsider.auth)
        .send({ id: 'vision', name: 'Mine' });
      expectProblem(res, 409, 'conflict');
    });

    it('refuses the personal-project prefix and unknown regions (422)', async () => {
      expectProblem(
        await t.http
          .post('/api/v1/projects')
          .set('Authorization', owner.auth)
          .send({ id: 'user-fake', name: 'x' }),
        422,
        'unprocessable',
      );
      expectProblem(
        await t.http
          .post('/api/v1/projects')
          .set('Authorization', owner.auth)
          .send({ id: 'elsewhere', name: 'x', region_id: 'mars' }),
        422,
        'unprocessable',
      );
    });
  });

  describe('listProjects', () => {
    it('lists the projects I am a member of, by id, with my role (200)', async () => {
      const res = await t.http.get('/api/v1/projects').set('Authorization', viewer.auth).expect(200);
      expect(res.body.items.map((p: { id: string; role: string }) => [p.id, p.role])).toEqual([
        ['user-vera', 'owner'],
        ['vision', 'viewer'],
      ]);
    });

    it('filters by kind and paginates', async () => {
      const res = await t.http
        .get('/api/v1/projects?kind=group&limit=1')
        .set('Authorization', owner.auth)
        .expect(200);
      expect(res.body.items).toHaveLength(1);
      expect(res.body.items[0].kind).toBe('group');
      const next = await t.http
        .get(`/api/v1/projects?kind=group&limit=1&cursor=${res.body.next_cursor}`)
        .set('Authorization', owner.auth);
      expect(next.body.items[0].id).not.toBe(res.body.items[0].id);
    });

    it('lets administrators list every project with all=true, without a role where they are no member', async () => {
      const res = await t.http
        .get('/api/v1/projects?all=true&limit=200')
        .set('Authorization', admin.auth)
        .expect(200);
      const vision = res.body.items.find((p: { id: string }) => p.id === 'vision');
      expect(vision.role).toBeNull();
      expect(res.body.items.map((p: { id: string }) => p.id)).toEqual(
        expect.arrayContaining(['user-oscar', 'user-olga', 'vision']),
      );
    });

    it('rejects unknown query parameters and bad values (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/projects?colour=red').set('Authorization', owner.auth),
        400,
        'validation',
      );
      expectProblem(
        await t.http.get('/api/v1/projects?kind=team').set('Authorization', owner.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get('/api/v1/projects'), 401, 'unauthorized');
    });

    it('refuses all=true to non-administrators (403)', async () => {
      expectProblem(
        await t.http.get('/api/v1/projects?all=true').set('Authorization', owner.auth),
        403,
        'forbidden',
      );
    });
  });

  describe('getProject', () => {
    it('returns the project to any member, with an ETag (200)', async () => {
      const res = await t.http.get('/api/v1/projects/vision').set('Authorization', viewer.auth).expect(200);
      expect(res.body).toMatchObject({ id: 'vision', name: 'Vision', role: 'viewer' });
      expect(res.headers.etag).toMatch(/^"\d+-[0-9a-z]+"$/);
      expect(res.headers['cache-control']).toBe('private, no-store');
    });

    it('answers 304 to a matching If-None-Match', async () => {
      const first = await t.http.get('/api/v1/projects/vision').set('Authorization', viewer.auth).expect(200);
      await t.http
        .get('/api/v1/projects/vision')
        .set('Authorization', viewer.auth)
        .set('If-None-Match', String(first.headers.etag))
        .expect(304);
    });

    it('rejects a malformed id (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/projects/UPPER').set('Authorization', owner.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get('/api/v1/projects/vision'), 401, 'unauthorized');
    });

    it("hides another user's project exactly like a missing one (404)", async () => {
      const foreign = await t.http.get('/api/v1/projects/vision').set('Authorization', outsider.auth);
      const missing = await t.http
        .get('/api/v1/projects/no-such-project')
        .set('Authorization', outsider.auth);
      expectProblem(foreign, 404, 'not-found');
      expectProblem(missing, 404, 'not-found');
      expect(foreign.body.title).toBe(missing.body.title);
      expect(foreign.body.detail.replace('vision', 'X')).toBe(
        missing.body.detail.replace('no-such-project', 'X'),
      );
      expectProblem(
        await t.http.get('/api/v1/projects/user-olga').set('Authorization', outsider.auth),
        404,
        'not-found',
      );
    });

    it('lets administrators see any project', async () => {
      await t.http.get('/api/v1/projects/user-olga').set('Authorization', admin.auth).expect(200);
    });
  });

  describe('updateProject', () => {
    it('renames the project for its owner and moves the ETag on (200)', async () => {
      const before = await t.http.get('/api/v1/projects/vision').set('Authorization', owner.auth);
      const res = await t.http
        .patch('/api/v1/projects/vision')
        .set('Authorization', owner.auth)
        .set('If-Match', String(before.headers.etag))
        .send({ name: 'Computer vision' })
        .expect(200);
      expect(res.body.name).toBe('Computer vision');
      expect(res.headers.etag).not.toBe(before.headers.etag);
    });

    it('rejects an empty change and unknown fields (400)', async () => {
      expectProblem(
        await t.http.patch('/api/v1/projects/vision').set('Authorization', owner.auth).send({}),
        400,
        'validation',
      );
      expectProblem(
        await t.http
          .patch('/api/v1/projects/vision')
          .set('Authorization', owner.auth)
          .send({ kind: 'personal' }),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.patch('/api/v1/projects/vision').send({ name: 'x' }), 401, 'unauthorized');
    });

    it('is for owners only: members get 403, outsiders 404', async () => {
      expectProblem(
        await t.http.patch('/api/v1/projects/vision').set('Authorization', member.auth).send({ name: 'x' }),
        403,
        'forbidden',
      );
      expectProblem(
        await t.http.patch('/api/v1/projects/vision').set('Authorization', outsider.auth).send({ name: 'x' }),
        404,
        'not-found',
      );
    });

    it('refuses a stale If-Match and keeps the stored value (412)', async () => {
      const current = await t.http.get('/api/v1/projects/vision').set('Authorization', owner.auth);
      await t.http
        .patch('/api/v1/projects/vision')
        .set('Authorization', owner.auth)
        .send({ description: 'v2' })
        .expect(200);
      const res = await t.http
        .patch('/api/v1/projects/vision')
        .set('Authorization', owner.auth)
        .set('If-Match', String(current.headers.etag))
        .send({ description: 'stale write' });
      expectProblem(res, 412, 'precondition-failed');
      const after = await t.http.get('/api/v1/projects/vision').set('Authorization', owner.auth);
      expect(after.body.description).toBe('v2');
    });
  });

  describe('deleteProject', () => {
    it('deletes a group project for its owner; it is gone with its quota (204)', async () => {
      await t.http
        .post('/api/v1/projects')
        .set('Authorization', owner.auth)
        .send({ id: 'short-lived', name: 'x' })
        .expect(201);
      await t.http.delete('/api/v1/projects/short-lived').set('Authorization', owner.auth).expect(204);
      expectProblem(
        await t.http.get('/api/v1/projects/short-lived').set('Authorization', owner.auth),
        404,
        'not-found',
      );
      expectProblem(
        await t.http.get('/api/v1/projects/short-lived/quota').set('Authorization', owner.auth),
        404,
        'not-found',
      );
    });

    it('rejects a malformed id (400)', async () => {
      expectProblem(
        await t.http.delete('/api/v1/projects/-bad-').set('Authorization', owner.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.delete('/api/v1/projects/vision'), 401, 'unauthorized');
    });

    it('is for owners only (403), and hidden from outsiders (404)', async () => {
      expectProblem(
        await t.http.delete('/api/v1/projects/vision').set('Authorization', member.auth),
        403,
        'forbidden',
      );
      expectProblem(
        await t.http.delete('/api/v1/projects/vision').set('Authorization', outsider.auth),
        404,
        'not-found',
      );
    });

    it('refuses to delete a personal project (409)', async () => {
      expectProblem(
        await t.http.delete('/api/v1/projects/user-olga').set('Authorization', owner.auth),
        409,
        'conflict',
      );
    });

    it('refuses a stale If-Match and deletes nothing (412)', async () => {
      await t.http
        .post('/api/v1/projects')
        .set('Authorization', owner.auth)
        .send({ id: 'guarded', name: 'x' })
        .expect(201);
      const res = await t.http
        .delete('/api/v1/projects/guarded')
        .set('Authorization', owner.auth)
        .set('If-Match', '"99-zz"');
      expectProblem(res, 412, 'precondition-failed');
      await t.http.get('/api/v1/projects/guarded').set('Authorization', owner.auth).expect(200);
    });
  });

  describe('listProjectMembers', () => {
    it('lists members by username with their roles (200)', async () => {
      const res = await t.http
        .get('/api/v1/projects/vision/members')
        .set('Authorization', viewer.auth)
        .expect(200);
      expect(
        res.body.items.map((m: { user: { username: string }; role: string }) => [m.user.username, m.role]),
      ).toEqual([
        ['mehdi', 'member'],
        ['olga', 'owner'],
        ['vera', 'viewer'],
      ]);
    });

    it('rejects a bad limit (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/projects/vision/members?limit=0').set('Authorization', owner.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get('/api/v1/projects/vision/members'), 401, 'unauthorized');
    });

    it('is hidden from outsiders (404)', async () => {
      expectProblem(
        await t.http.get('/api/v1/projects/vision/members').set('Authorization', outsider.auth),
        404,
        'not-found',
      );
    });
  });

  describe('setProjectMember', () => {
    it('adds a member (201) and changes a role (200)', async () => {
      const newcomer = await t.login('nadia');
      const added = await t.http
        .put(`/api/v1/projects/vision/members/${newcomer.user.id}`)
        .set('Authorization', owner.auth)
        .send({ role: 'viewer' })
        .expect(201);
      expect(added.body).toMatchObject({ user: { username: 'nadia' }, role: 'viewer' });
      const changed = await t.http
        .put(`/api/v1/projects/vision/members/${newcomer.user.id}`)
        .set('Authorization', owner.auth)
        .send({ role: 'member' })
        .expect(200);
      expect(changed.body.role).toBe('member');
      await t.http.get('/api/v1/projects/vision').set('Authorization', newcomer.auth).expect(200);
    });

    it('rejects an unknown role (400)', async () => {
      expectProblem(
        await t.http
          .put(`/api/v1/projects/vision/members/${member.user.id}`)
          .set('Authorization', owner.auth)
          .send({ role: 'boss' }),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(
        await t.http.put(`/api/v1/projects/vision/members/${member.user.id}`).send({ role: 'member' }),
        401,
        'unauthorized',
      );
    });

    it('is for owners only (403)', async () => {
      expectProblem(
        await t.http
          .put(`/api/v1/projects/vision/members/${viewer.user.id}`)
          .set('Authorization', member.auth)
          .send({ role: 'owner' }),
        403,
        'forbidden',
      );
    });

    it('is hidden from outsiders (404)', async () => {
      expectProblem(
        await t.http
          .put(`/api/v1/projects/vision/members/${outsider.user.id}`)
          .set('Authorization', outsider.auth)
          .send({ role: 'owner' }),
        404,
        'not-found',
      );
    });

    it('keeps an owner: the last one cannot be demoted, and personal projects take no members (409)', async () => {
      expectProblem(
        await t.http
          .put(`/api/v1/projects/vision/members/${owner.user.id}`)
          .set('Authorization', owner.auth)
          .send({ role: 'member' }),
        409,
        'conflict',
      );
      expectProblem(
        await t.http
          .put(`/api/v1/projects/user-olga/members/${member.user.id}`)
          .set('Authorization', owner.auth)
          .send({ role: 'member' }),
        409,
        'conflict',
      );
    });

    it('refuses a user who does not exist (422)', async () => {
      expectProblem(
        await t.http
          .put('/api/v1/projects/vision/members/usr_00000000000000000000')
          .set('Authorization', owner.auth)
          .send({ role: 'member' }),
        422,
        'unprocessable',
      );
    });
  });

  describe('removeProjectMember', () => {
    it('lets an owner remove a member, who then loses access (204)', async () => {
      const temp = await t.login('tim');
      await t.http
        .put(`/api/v1/projects/vision/members/${temp.user.id}`)
        .set('Authorization', owner.auth)
        .send({ role: 'member' });
      await t.http.get('/api/v1/projects/vision').set('Authorization', temp.auth).expect(200);
      // Reads decide on a role kept for a moment: the second list asks the database no role.
      await t.http.get('/api/v1/projects/vision/services').set('Authorization', temp.auth).expect(200);
      const queries: string[] = [];
      const onQuery = (q: { sql: string }) => queries.push(q.sql);
      t.database.knex.on('query', onQuery);
      try {
        await t.http.get('/api/v1/projects/vision/files').set('Authorization', temp.auth).expect(200);
      } finally {
        t.database.knex.off('query', onQuery);
      }
      expect(queries.filter((sql) => /project_members/.test(sql))).toEqual([]);
      await t.http
        .delete(`/api/v1/projects/vision/members/${temp.user.id}`)
        .set('Authorization', owner.auth)
        .expect(204);
      // … and forget it the moment the membership changes.
      for (const path of [
        '/api/v1/projects/vision',
        '/api/v1/projects/vision/services',
        '/api/v1/projects/vision/files',
      ]) {
        expectProblem(await t.http.get(path).set('Authorization', temp.auth), 404, 'not-found');
      }
    });

    it('lets a member leave on their own', async () => {
      const leaver = await t.login('lea');
      await t.http
        .put(`/api/v1/projects/vision/members/${leaver.user.id}`)
        .set('Authorization', owner.auth)
        .send({ role: 'viewer' });
      await t.http
        .delete(`/api/v1/projects/vision/members/${leaver.user.id}`)
        .set('Authorization', leaver.auth)
        .expect(204);
    });

    it('rejects a malformed user id (400)', async () => {
      expectProblem(
        await t.http.delete('/api/v1/projects/vision/members/bob').set('Authorization', owner.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(
        await t.http.delete(`/api/v1/projects/vision/members/${member.user.id}`),
        401,
        'unauthorized',
      );
    });

    it('does not let a member remove someone else (403)', async () => {
      expectProblem(
        await t.http
          .delete(`/api/v1/projects/vision/members/${viewer.user.id}`)
          .set('Authorization', member.auth),
        403,
        'forbidden',
      );
    });

    it('answers 404 for a non-member and for outsiders', async () => {
      expectProblem(
        await t.http
          .delete(`/api/v1/projects/vision/members/${outsider.user.id}`)
          .set('Authorization', owner.auth),
        404,
        'not-found',
      );
      expectProblem(
        await t.http
          .delete(`/api/v1/projects/vision/members/${member.user.id}`)
          .set('Authorization', outsider.auth),
        404,
        'not-found',
      );
    });

    it('does not let the last owner leave (409)', async () => {
      expectProblem(
        await t.http
          .delete(`/api/v1/projects/vision/members/${owner.user.id}`)
          .set('Authorization', owner.auth),
        409,
        'conflict',
      );
    });
  });

  describe('getProjectQuota', () => {
    it('shows limits and usage to any member, with an ETag (200)', async () => {
      const res = await t.http
        .get('/api/v1/projects/vision/quota')
        .set('Authorization', viewer.auth)
        .expect(200);
      expect(res.body.usage).toEqual({
        cpu: '0',
        memory: '0',
        gpu: 0,
        services: 0,
        concurrent_jobs: 0,
        storage: '0',
      });
      expect(res.headers.etag).toBeDefined();
    });

    it('rejects a malformed project id (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/projects/a_b/quota').set('Authorization', owner.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get('/api/v1/projects/vision/quota'), 401, 'unauthorized');
    });

    it('is hidden from outsiders (404)', async () => {
      expectProblem(
        await t.http.get('/api/v1/projects/vision/quota').set('Authorization', outsider.auth),
        404,
        'not-found',
      );
    });
  });

  describe('updateProjectQuota', () => {
    it('lets administrators change some limits, keeping the others (200)', async () => {
      const before = await t.http.get('/api/v1/projects/vision/quota').set('Authorization', admin.auth);
      const res = await t.http
        .patch('/api/v1/projects/vision/quota')
        .set('Authorization', admin.auth)
        .set('If-Match', String(before.headers.etag))
        .send({ limits: { services: 3, memory: '1536Mi', cpu: '2500m', gpu: null } })
        .expect(200);
      expect(res.body.limits).toEqual({
        cpu: '2500m',
        memory: '1536Mi',
        gpu: null,
        services: 3,
        concurrent_jobs: 4,
        storage: '10Gi',
      });
      expect(res.headers.etag).not.toBe(before.headers.etag);
    });

    it('rejects malformed quantities and empty changes (400)', async () => {
      expectProblem(
        await t.http
          .patch('/api/v1/projects/vision/quota')
          .set('Authorization', admin.auth)
          .send({ limits: { memory: 'lots' } }),
        400,
        'validation',
      );
      expectProblem(
        await t.http
          .patch('/api/v1/projects/vision/quota')
          .set('Authorization', admin.auth)
          .send({ limits: {} }),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(
        await t.http.patch('/api/v1/projects/vision/quota').send({ limits: { services: 1 } }),
        401,
        'unauthorized',
      );
    });

    it('is for administrators, not even project owners (403)', async () => {
      expectProblem(
        await t.http
          .patch('/api/v1/projects/vision/quota')
          .set('Authorization', owner.auth)
          .send({ limits: { services: 100 } }),
        403,
        'forbidden',
      );
    });

    it('is hidden from outsiders (404)', async () => {
      expectProblem(
        await t.http
          .patch('/api/v1/projects/vision/quota')
          .set('Authorization', outsider.auth)
          .send({ limits: { services: 100 } }),
        404,
        'not-found',
      );
    });

    it('refuses a stale If-Match and changes nothing (412)', async () => {
      const res = await t.http
        .patch('/api/v1/projects/vision/quota')
        .set('Authorization', admin.auth)
        .set('If-Match', '"1-0"')
        .send({ limits: { services: 99 } });
      expectProblem(res, 412, 'precondition-failed');
      const quota = await t.http.get('/api/v1/projects/vision/quota').set('Authorization', admin.auth);
      expect(quota.body.limits.services).not.toBe(99);
    });
  });
});
