// The conventions every operation shares: problem+json errors, body limits, rate limits, CORS,
// security headers, request ids, and what a server error may (not) reveal.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import request from 'supertest';
import { createApp } from '../../src/app.js';
import { controllers } from '../../src/controllers/index.js';
import type { ControllerModules } from '../../src/http/dispatch.js';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { captureLogs } from '../fixtures/log-capture.js';

describe('API conventions', () => {
  let t: TestApp;
  let auth: string;
  const logs = captureLogs();

  beforeAll(async () => {
    t = await createTestApp('sqlite', {
      log: logs.log,
      config: {
        server: { maxBodyBytes: 2048, maxJsonDepth: 5, corsOrigins: ['https://ui.example.org'] },
      },
    });
    ({ auth } = await t.login('alice'));
  });
  afterAll(() => t.close());

  it('answers unknown paths, inside and outside the API, with a 404 problem', async () => {
    expectProblem(await t.http.get('/api/v1/nothing-here'), 404, 'not-found');
    expectProblem(await t.http.get('/nothing-here'), 404, 'not-found');
  });

  it('answers a known path with the wrong method with 405 and Allow', async () => {
    const res = await t.http.delete('/api/v1/regions');
    expectProblem(res, 405, 'method-not-allowed');
    expect(res.headers.allow).toBe('GET');
  });

  it('answers malformed JSON with 400 bad-request', async () => {
    const res = await t.http
      .post('/api/v1/projects')
      .set('Authorization', auth)
      .set('Content-Type', 'application/json')
      .send('{"id": ');
    expectProblem(res, 400, 'bad-request');
  });

  it('answers a body over the size limit with 413, creating nothing', async () => {
    const res = await t.http
      .post('/api/v1/projects')
      .set('Authorization', auth)
      .send({ id: 'big-one', name: 'x', description: 'y'.repeat(4000) });
    expectProblem(res, 413, 'payload-too-large');
    expectProblem(await t.http.get('/api/v1/projects/big-one').set('Authorization', auth), 404, 'not-found');
  });

  it('answers JSON nested deeper than the limit with 400', async () => {
    const deep = { a: { b: { c: { d: { e: { f: 1 } } } } } };
    expectProblem(
      await t.http.post('/api/v1/projects').set('Authorization', auth).send({ id: 'deep', name: 'x', deep }),
      400,
      'bad-request',
    );
  });

  it('answers a body of another media type with 415', async () => {
    const res = await t.http
      .post('/api/v1/projects')
      .set('Authorization', auth)
      .set('Content-Type', 'text/plain')
      .send('id=x');
    expectProblem(res, 415, 'unsupported-media-type');
  });

  it('answers a path with a malformed escape with 400', async () => {
    expectProblem(await t.http.get('/api/v1/regions/%E0%A4%A'), 400, 'validation');
  });

  it('lists every field that fails validation, with where it is', async () => {
    const res = await t.http
      .post('/api/v1/projects')
      .set('Authorization', auth)
      .send({ id: 'ok-id', name: '', extra: 1 });
    expectProblem(res, 400, 'validation');
    expect(res.body.errors).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ location: 'body', pointer: '/name', code: 'minLength' }),
        expect.objectContaining({ location: 'body', pointer: '/extra', code: 'additionalProperties' }),
      ]),
    );
  });

  it('echoes a sane X-Request-Id and replaces an unsafe one', async () => {
    const sane = await t.http.get('/api/v1/regions').set('X-Request-Id', 'trace-123.abc');
    expect(sane.headers['x-request-id']).toBe('trace-123.abc');
    const unsafe = await t.http.get('/api/v1/regions').set('X-Request-Id', 'bad id\u00e9<script>');
    expect(unsafe.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const problem = await t.http.get('/api/v1/regions/nope').set('X-Request-Id', 'find-me');
    expect(problem.body.request_id).toBe('find-me');
  });

  it('sends security headers and no framework banner', async () => {
    const res = await t.http.get('/api/v1/regions');
    expect(res.headers).toMatchObject({
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
      'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
    });
    expect(res.headers['x-powered-by']).toBeUndefined();
    expect(res.headers.etag).toBeUndefined();
  });

  it('allows CORS for configured origins only, preflight included', async () => {
    const allowed = await t.http.get('/api/v1/regions').set('Origin', 'https://ui.example.org');
    expect(allowed.headers['access-control-allow-origin']).toBe('https://ui.example.org');
    expect(allowed.headers['access-control-expose-headers']).toContain('ETag');
    const other = await t.http.get('/api/v1/regions').set('Origin', 'https://evil.example.com');
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    const preflight = await t.http
      .options('/api/v1/projects')
      .set('Origin', 'https://ui.example.org')
      .set('Access-Control-Request-Method', 'POST')
      .expect(204);
    expect(preflight.headers['access-control-allow-headers']).toContain('Idempotency-Key');
    expectProblem(
      await t.http
        .options('/api/v1/projects')
        .set('Origin', 'https://evil.example.com')
        .set('Access-Control-Request-Method', 'POST'),
      405,
      'method-not-allowed',
    );
  });

  it('never logs the Authorization header or a token secret', async () => {
    await t.http.get('/api/v1/me').set('Authorization', auth).expect(200);
    const created = await t.http
      .post('/api/v1/me/tokens')
      .set('Authorization', auth)
      .send({ name: 'x' })
      .expect(201);
    const text = JSON.stringify(logs.lines());
    expect(text).not.toContain(auth.slice(7));
    expect(text).not.toContain(created.body.secret);
    expect(logs.lines().some((l) => l.msg === 'request' && l.operation === 'createMyToken')).toBe(true);
  });
});

describe('server errors', () => {
  it('answer 500 with a log id that is in the log, and reveal nothing of the cause', async () => {
    const logs = captureLogs();
    const t = await createTestApp('sqlite', { log: logs.log });
    try {
      const failing = {
        ...controllers,
        platform: {
          ...controllers.platform,
          getConfig: async () => {
            throw new Error('connection to 10.0.0.5 refused: password=hunter2');
          },
        },
      } as unknown as ControllerModules;
      const app = createApp({
        config: t.config,
        database: t.database,
        services: t.services,
        log: logs.log,
        ready: async () => ({ ready: true }),
        controllers: failing,
      });
      const res = await request(app).get('/api/v1/config');
      expectProblem(res, 500, 'internal');
      expect(res.body.log_id).toMatch(/^[0-9a-f-]{36}$/);
      expect(JSON.stringify(res.body)).not.toMatch(/10\.0\.0\.5|hunter2|at .*\.ts/);
      const logged = logs.lines().find((l) => l.log_id === res.body.log_id);
      expect(JSON.stringify(logged)).toContain('10.0.0.5');
    } finally {
      await t.close();
    }
  });

  it('during authentication answer 500, not 401, without leaking the database error', async () => {
    const logs = captureLogs();
    const t = await createTestApp('sqlite', { log: logs.log });
    try {
      const { auth } = await t.login('alice');
      await t.database.knex.schema.renameTable('api_tokens', 'api_tokens_gone');
      const res = await t.http.get('/api/v1/me').set('Authorization', auth);
      expectProblem(res, 500, 'internal');
      expect(res.headers['www-authenticate']).toBeUndefined();
      expect(JSON.stringify(res.body)).not.toMatch(/api_tokens|SQLITE|select/i);
      expect(JSON.stringify(logs.lines().find((l) => l.log_id === res.body.log_id))).toMatch(/api_tokens/);
    } finally {
      await t.close();
    }
  });

  it('include responses that break the spec: response validation is on in tests', async () => {
    const t = await createTestApp('sqlite');
    try {
      const lying = {
        ...controllers,
        platform: {
          ...controllers.platform,
          getClientIp: async () => ({ status: 200, body: { ip: 42, extra: true } }),
        },
      } as unknown as ControllerModules;
      const app = createApp({
        config: t.config,
        database: t.database,
        services: t.services,
        log: captureLogs().log,
        ready: async () => ({ ready: true }),
        controllers: lying,
      });
      expectProblem(await request(app).get('/api/v1/ip'), 500, 'internal');
    } finally {
      await t.close();
    }
  });
});

describe('rate limiting', () => {
  it('answers 429 with Retry-After once a client exceeds its budget', async () => {
    const t = await createTestApp('sqlite', {
      config: { server: { rateLimit: { enabled: true, requestsPerMinute: 60, burst: 3 } } },
    });
    try {
      for (let i = 0; i < 3; i++) await t.http.get('/api/v1/regions').expect(200);
      const res = await t.http.get('/api/v1/regions');
      expectProblem(res, 429, 'rate-limited');
      expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      await t.http.get('/healthz').expect(200);
    } finally {
      await t.close();
    }
  });
});
