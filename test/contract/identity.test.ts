import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { IdempotencyService } from '../../src/services/idempotency.js';

describe.each(testEngines())('identity (%s)', (engine) => {
  let t: TestApp;
  let alice: { auth: string; user: { id: string } };

  beforeAll(async () => {
    t = await createTestApp(engine);
    alice = await t.login('alice');
  });
  afterAll(() => t.close());

  describe('getMe', () => {
    it('returns the user, how they authenticated and their projects, personal first (200)', async () => {
      const res = await t.http.get('/api/v1/me').set('Authorization', alice.auth).expect(200);
      expect(res.body.user).toMatchObject({ id: alice.user.id, username: 'alice', admin: false });
      expect(res.body.auth).toMatchObject({ method: 'token', scopes: ['read', 'write'] });
      expect(res.body.auth.token_id).toMatch(/^tok_/);
      expect(res.body.projects[0]).toMatchObject({ id: 'user-alice', kind: 'personal', role: 'owner' });
      expect(res.body.ip).toMatch(/127\.0\.0\.1$/);
    });

    it('refuses a request without credentials, with a Bearer challenge (401)', async () => {
      const res = await t.http.get('/api/v1/me').expect(401);
      expectProblem(res, 401, 'unauthorized');
      expect(res.headers['www-authenticate']).toBe('Bearer realm="atrium"');
    });

    it('refuses an unknown token and says why in the challenge (401)', async () => {
      const res = await t.http
        .get('/api/v1/me')
        .set('Authorization', 'Bearer atr_doesnotexist0000000000')
        .expect(401);
      expectProblem(res, 401, 'unauthorized');
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_token"/);
    });

    it('refuses a non-Bearer scheme (401)', async () => {
      const res = await t.http.get('/api/v1/me').set('Authorization', 'Basic YWxpY2U6c2VjcmV0').expect(401);
      expectProblem(res, 401, 'unauthorized');
    });

    it('onboards a new user into a personal project on their first request', async () => {
      const { auth } = await t.login('New.Comer@Lab');
      const res = await t.http.get('/api/v1/me').set('Authorization', auth).expect(200);
      expect(res.body.projects.map((p: { id: string }) => p.id)).toEqual(['user-new-comer-lab']);
    });
  });

  describe('createMyToken', () => {
    it('creates a token whose secret works at once and is shown only here (201)', async () => {
      const res = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', alice.auth)
        .send({ name: 'laptop', scopes: ['read'] })
        .expect(201);
      expect(res.body.secret).toMatch(/^atr_[0-9A-Za-z]{40}$/);
      expect(res.body.prefix).toBe(res.body.secret.slice(0, 12));
      expect(res.headers.location).toBe(`/api/v1/me/tokens/${res.body.id}`);
      const me = await t.http.get('/api/v1/me').set('Authorization', `Bearer ${res.body.secret}`).expect(200);
      expect(me.body.auth).toMatchObject({ method: 'token', scopes: ['read'], token_id: res.body.id });
      const shown = await t.http
        .get(`/api/v1/me/tokens/${res.body.id}`)
        .set('Authorization', alice.auth)
        .expect(200);
      expect(shown.body).not.toHaveProperty('secret');
    });

    it('defaults to read and write scopes', async () => {
      const res = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', alice.auth)
        .send({ name: 'ci' })
        .expect(201);
      expect(res.body.scopes).toEqual(['read', 'write']);
      expect(res.body.expires_at).toBeNull();
    });

    it('rejects an unknown field or scope (400)', async () => {
      const res = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', alice.auth)
        .send({ name: 'x', scopes: ['admin'] })
        .expect(400);
      expectProblem(res, 400, 'validation');
      expect(res.body.errors[0]).toMatchObject({ location: 'body', pointer: '/scopes/0' });
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.post('/api/v1/me/tokens').send({ name: 'x' }), 401, 'unauthorized');
    });

    it('refuses to mint scopes the caller lacks, and a read-only token cannot write at all (403)', async () => {
      const reader = await t.login('reader', { scopes: ['read'] });
      const res = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', reader.auth)
        .send({ name: 'x' })
        .expect(403);
      expectProblem(res, 403, 'insufficient-scope');
      expect(res.headers['www-authenticate']).toMatch(/error="insufficient_scope"/);
    });

    it('replays the first response for a repeated Idempotency-Key, and refuses it for another body (409, 422)', async () => {
      const first = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', alice.auth)
        .set('Idempotency-Key', 'token-key-1')
        .send({ name: 'once' })
        .expect(201);
      const again = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', alice.auth)
        .set('Idempotency-Key', 'token-key-1')
        .send({ name: 'once' })
        .expect(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.body).toEqual(first.body);
      const list = await t.http
        .get('/api/v1/me/tokens?limit=200')
        .set('Authorization', alice.auth)
        .expect(200);
      expect(list.body.items.filter((tok: { name: string }) => tok.name === 'once')).toHaveLength(1);
      const reuse = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', alice.auth)
        .set('Idempotency-Key', 'token-key-1')
        .send({ name: 'different' });
      expectProblem(reuse, 422, 'idempotency-key-reuse');
      // The same request while the first is still in flight is refused, not run twice.
      const fingerprint = IdempotencyService.fingerprint('createMyToken', '/api/v1/me/tokens', {
        name: 'x',
        scopes: ['read', 'write'],
      });
      await t.services.idempotency.begin(alice.user.id, 'in-flight', fingerprint);
      const busy = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', alice.auth)
        .set('Idempotency-Key', 'in-flight')
        .send({ name: 'x' });
      expectProblem(busy, 409, 'idempotency-in-progress');
      expect(busy.headers['retry-after']).toBe('1');
    });

    it('refuses an expiry in the past (422)', async () => {
      const res = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', alice.auth)
        .send({ name: 'old', expires_at: '2001-01-01T00:00:00Z' });
      expectProblem(res, 422, 'unprocessable');
    });
  });

  describe('listMyTokens', () => {
    it('lists only my tokens, newest first, paginated with a Link header (200)', async () => {
      const bob = await t.login('bob-tokens');
      for (const name of ['a', 'b', 'c']) {
        await t.http.post('/api/v1/me/tokens').set('Authorization', bob.auth).send({ name }).expect(201);
      }
      const first = await t.http.get('/api/v1/me/tokens?limit=2').set('Authorization', bob.auth).expect(200);
      expect(first.body.items.map((x: { name: string }) => x.name)).toEqual(['c', 'b']);
      expect(first.headers.link).toBe(
        `</api/v1/me/tokens?limit=2&cursor=${first.body.next_cursor}>; rel="next"`,
      );
      const second = await t.http
        .get(`/api/v1/me/tokens?limit=2&cursor=${first.body.next_cursor}`)
        .set('Authorization', bob.auth)
        .expect(200);
      expect(second.body.items.map((x: { name: string }) => x.name)).toEqual(['a', 'test']);
      expect(second.body.next_cursor).toBeNull();
      expect(second.headers.link).toBeUndefined();
    });

    it('rejects a limit above 200 and a forged cursor (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/me/tokens?limit=201').set('Authorization', alice.auth),
        400,
        'validation',
      );
      expectProblem(
        await t.http.get('/api/v1/me/tokens?cursor=bm9wZQ').set('Authorization', alice.auth),
        400,
        'invalid-cursor',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get('/api/v1/me/tokens'), 401, 'unauthorized');
    });
  });

  describe('getMyToken', () => {
    it('returns one of my tokens (200)', async () => {
      const created = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', alice.auth)
        .send({ name: 'one' });
      const res = await t.http
        .get(`/api/v1/me/tokens/${created.body.id}`)
        .set('Authorization', alice.auth)
        .expect(200);
      expect(res.body).toMatchObject({ id: created.body.id, name: 'one', revoked_at: null });
    });

    it('rejects a malformed id (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/me/tokens/nope').set('Authorization', alice.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.get('/api/v1/me/tokens/tok_00000000000000000000'), 401, 'unauthorized');
    });

    it("treats someone else's token as missing (404)", async () => {
      const bob = await t.login('bob-other');
      const created = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', bob.auth)
        .send({ name: 'bobs' });
      const res = await t.http.get(`/api/v1/me/tokens/${created.body.id}`).set('Authorization', alice.auth);
      expectProblem(res, 404, 'not-found');
      const missing = await t.http
        .get('/api/v1/me/tokens/tok_00000000000000000000')
        .set('Authorization', alice.auth);
      expect(missing.body.title).toBe(res.body.title);
    });
  });

  describe('revokeMyToken', () => {
    it('revokes a token, which stops working at once (204)', async () => {
      const created = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', alice.auth)
        .send({ name: 'short' });
      await t.http
        .delete(`/api/v1/me/tokens/${created.body.id}`)
        .set('Authorization', alice.auth)
        .expect(204);
      const res = await t.http.get('/api/v1/me').set('Authorization', `Bearer ${created.body.secret}`);
      expectProblem(res, 401, 'unauthorized');
      expect(res.body.detail).toMatch(/revoked/);
      const shown = await t.http
        .get(`/api/v1/me/tokens/${created.body.id}`)
        .set('Authorization', alice.auth)
        .expect(200);
      expect(shown.body.revoked_at).not.toBeNull();
      await t.http
        .delete(`/api/v1/me/tokens/${created.body.id}`)
        .set('Authorization', alice.auth)
        .expect(204);
    });

    it('rejects a malformed id (400)', async () => {
      expectProblem(
        await t.http.delete('/api/v1/me/tokens/x').set('Authorization', alice.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.delete('/api/v1/me/tokens/tok_00000000000000000000'), 401, 'unauthorized');
    });

    it('needs the write scope (403)', async () => {
      const reader = await t.login('reader2', { scopes: ['read'] });
      expectProblem(
        await t.http.delete('/api/v1/me/tokens/tok_00000000000000000000').set('Authorization', reader.auth),
        403,
        'insufficient-scope',
      );
    });

    it("treats someone else's token as missing (404)", async () => {
      const bob = await t.login('bob-revoke');
      const created = await t.http
        .post('/api/v1/me/tokens')
        .set('Authorization', bob.auth)
        .send({ name: 'bobs' });
      expectProblem(
        await t.http.delete(`/api/v1/me/tokens/${created.body.id}`).set('Authorization', alice.auth),
        404,
        'not-found',
      );
      await t.http.get('/api/v1/me').set('Authorization', `Bearer ${created.body.secret}`).expect(200);
    });
  });

  it('rejects an expired token (401), even one it has just accepted', async () => {
    // A clock the test moves: the token is checked against it on every request, cached or not.
    let offsetMs = 0;
    const own = await createTestApp(engine, { clock: () => new Date(Date.now() + offsetMs) });
    try {
      const { user } = await own.services.users.ensureLocalUser('expiring');
      const { secret } = await own.services.tokens.issue(user, {
        name: 'soon',
        expiresAt: new Date(Date.now() + 60_000).toISOString(),
      });
      await own.http.get('/api/v1/me').set('Authorization', `Bearer ${secret}`).expect(200);
      offsetMs = 61_000;
      const res = await own.http.get('/api/v1/me').set('Authorization', `Bearer ${secret}`);
      expectProblem(res, 401, 'unauthorized');
      expect(res.body.detail).toMatch(/expired/);
    } finally {
      await own.close();
    }
  });

  it('looks a token up in the database once, not on every request', async () => {
    const { token } = await t.login('cached-caller');
    const auth = `Bearer ${token}`;
    await t.http.get('/api/v1/me').set('Authorization', auth).expect(200);
    const queries: string[] = [];
    const onQuery = (q: { sql: string }) => queries.push(q.sql);
    t.database.knex.on('query', onQuery);
    try {
      await t.http.get('/api/v1/me').set('Authorization', auth).expect(200);
      await t.http.get('/api/v1/me').set('Authorization', auth).expect(200);
    } finally {
      t.database.knex.off('query', onQuery);
    }
    expect(queries.filter((sql) => /api_tokens/.test(sql))).toEqual([]);
  });
});
