import { describe, expect, it } from '@jest/globals';
import express, { type RequestHandler } from 'express';
import request from 'supertest';
import { problemTypeBase } from '../../../src/errors.js';
import { cors, jsonBodyLimits, rateLimit, requestContext } from '../../../src/http/middleware.js';
import { problemMiddleware } from '../../../src/http/problem.js';
import { createLogger } from '../../../src/log.js';

/** A tiny app: the middleware under test, then a handler that says it was reached, then Atrium's errors. */
function appWith(...middleware: RequestHandler[]): express.Express {
  const app = express();
  // Lets tests act as several clients through X-Forwarded-For.
  app.set('trust proxy', true);
  app.use(requestContext(createLogger('silent')));
  app.use(express.json());
  for (const handler of middleware) app.use(handler);
  app.use((req, res) => {
    res.setHeader('X-Reached', 'yes');
    res.json({ reached: true, body: req.body ?? null });
  });
  app.use(problemMiddleware);
  return app;
}

/** A clock the test moves by hand. */
function manualClock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

describe('rateLimit', () => {
  it('lets a burst through, then refuses with 429 problem+json and Retry-After', async () => {
    const clock = manualClock();
    const http = request(appWith(rateLimit({ requestsPerMinute: 60, burst: 3, now: clock.now })));
    for (let i = 0; i < 3; i++) await http.get('/').expect(200);
    const res = await http.get('/').expect(429);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.headers['retry-after']).toBe('1');
    expect(res.headers['x-reached']).toBeUndefined();
    expect(res.body).toMatchObject({
      type: `${problemTypeBase}rate-limited`,
      status: 429,
      detail: 'slow down: at most 60 requests a minute',
    });
  });

  it('refills at the configured rate', async () => {
    const clock = manualClock();
    const http = request(appWith(rateLimit({ requestsPerMinute: 60, burst: 1, now: clock.now })));
    await http.get('/').expect(200);
    await http.get('/').expect(429);
    clock.advance(999);
    await http.get('/').expect(429);
    clock.advance(1);
    await http.get('/').expect(200);
    await http.get('/').expect(429);
  });

  it('says in Retry-After how many seconds until the next token, rounded up', async () => {
    const clock = manualClock();
    // One request every 10 seconds.
    const http = request(appWith(rateLimit({ requestsPerMinute: 6, burst: 1, now: clock.now })));
    await http.get('/').expect(200);
    expect((await http.get('/').expect(429)).headers['retry-after']).toBe('10');
    clock.advance(4_000);
    expect((await http.get('/').expect(429)).headers['retry-after']).toBe('6');
    clock.advance(5_500);
    expect((await http.get('/').expect(429)).headers['retry-after']).toBe('1');
    clock.advance(500);
    await http.get('/').expect(200);
  });

  it('does not count refused requests against the client', async () => {
    const clock = manualClock();
    const http = request(appWith(rateLimit({ requestsPerMinute: 60, burst: 1, now: clock.now })));
    await http.get('/').expect(200);
    for (let i = 0; i < 5; i++) await http.get('/').expect(429);
    clock.advance(1_000);
    await http.get('/').expect(200);
  });

  it('never stores more than the burst, however long a client was idle', async () => {
    const clock = manualClock();
    const http = request(appWith(rateLimit({ requestsPerMinute: 600, burst: 2, now: clock.now })));
    clock.advance(3_600_000);
    await http.get('/').expect(200);
    await http.get('/').expect(200);
    await http.get('/').expect(429);
  });

  it('keeps one bucket per client address', async () => {
    const clock = manualClock();
    const http = request(appWith(rateLimit({ requestsPerMinute: 60, burst: 2, now: clock.now })));
    const as = (ip: string) => http.get('/').set('X-Forwarded-For', ip);
    await as('203.0.113.1').expect(200);
    await as('203.0.113.1').expect(200);
    await as('203.0.113.1').expect(429);
    await as('203.0.113.2').expect(200);
    await as('203.0.113.2').expect(200);
    await as('203.0.113.2').expect(429);
    await as('203.0.113.1').expect(429);
  });

  it('uses a monotonic clock when no clock is given', async () => {
    const http = request(appWith(rateLimit({ requestsPerMinute: 1, burst: 1 })));
    await http.get('/').expect(200);
    const res = await http.get('/').expect(429);
    expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(59);
    expect(Number(res.headers['retry-after'])).toBeLessThanOrEqual(60);
  });
});

describe('jsonBodyLimits', () => {
  const http = request(appWith(jsonBodyLimits(3)));

  it.each([
    ['an empty object', {}],
    ['three levels of arrays', [[[]]]],
    ['three levels of objects', { a: { b: {} } }],
    ['a wide flat object', Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`k${i}`, {}]))],
    ['mixed arrays and objects three deep', { a: [{}], b: [[]] }],
    ['three levels of containers holding scalars', { a: { b: { c: 1 } }, d: [['x', 2, null]] }],
  ])('lets through %s', async (_what, body) => {
    const res = await http.post('/').send(body).expect(200);
    expect(res.body).toEqual({ reached: true, body });
  });

  it.each([
    ['four levels of arrays', [[[[]]]]],
    ['four levels of objects', { a: { b: { c: {} } } }],
    ['one deep branch among shallow ones', { a: 1, b: {}, c: [[], [[[]]]] }],
    ['a thousand levels', JSON.parse(`${'['.repeat(1000)}${']'.repeat(1000)}`) as unknown],
  ])('refuses %s with 400 bad-request before the handler', async (_what, body) => {
    const res = await http
      .post('/')
      .send(body as object)
      .expect(400);
    expect(res.headers['x-reached']).toBeUndefined();
    expect(res.body).toMatchObject({
      type: `${problemTypeBase}bad-request`,
      detail: 'the JSON body is nested deeper than 3 levels',
    });
  });

  it.each([
    ['ten thousand levels', 10_000],
    ['three hundred thousand levels', 300_000],
  ])('refuses %s with 400 bad-request, without recursing that deep', async (_what, levels) => {
    const big = request(
      (() => {
        const app = express();
        app.use(requestContext(createLogger('silent')));
        app.use(express.json({ limit: '2mb' }));
        app.use(jsonBodyLimits(32));
        app.use((_req, res) => res.json({ reached: true }));
        app.use(problemMiddleware);
        return app;
      })(),
    );
    const res = await big
      .post('/')
      .set('Content-Type', 'application/json')
      .send(`${'['.repeat(levels)}${']'.repeat(levels)}`)
      .expect(400);
    expect(res.body).toMatchObject({ type: `${problemTypeBase}bad-request` });
  });

  it.each([
    ['a number past the largest double', '{"a": 1e999}', '/a'],
    ['a negative one, in an array', '{"a": {"b": [1, -1e999]}}', '/a/b/1'],
    ['one under a key that needs escaping', '{"x/y~z": 1e500}', '/x~1y~0z'],
  ])('refuses %s with 400 validation naming where it is', async (_what, text, pointer) => {
    const res = await http.post('/').set('Content-Type', 'application/json').send(text);
    expect(res.status).toBe(400);
    expect(res.headers['x-reached']).toBeUndefined();
    expect(res.body).toMatchObject({
      type: `${problemTypeBase}validation`,
      errors: [{ location: 'body', pointer, message: 'must be a finite number' }],
    });
  });

  it('lets through requests without a JSON body', async () => {
    await http.get('/').expect(200);
    await http.post('/').type('text/plain').send('[[[[[[]]]]]]').expect(200);
  });
});

describe('cors', () => {
  const allowed = 'https://app.example.org';
  const http = request(appWith(cors([allowed, 'https://other.example.org'])));

  it('lets an allowed origin read the response and the headers it needs', async () => {
    const res = await http.get('/').set('Origin', allowed).expect(200);
    expect(res.headers['access-control-allow-origin']).toBe(allowed);
    const exposed = (res.headers['access-control-expose-headers'] ?? '').split(/,\s*/);
    expect(exposed).toEqual(
      expect.arrayContaining(['ETag', 'Link', 'Location', 'Retry-After', 'X-Request-Id']),
    );
    expect(res.headers.vary).toMatch(/\bOrigin\b/);
    expect(res.headers['x-reached']).toBe('yes');
  });

  it('says nothing to an origin that is not allowed, and still serves the request', async () => {
    const res = await http.get('/').set('Origin', 'https://evil.example.com').expect(200);
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
    expect(res.headers['access-control-expose-headers']).toBeUndefined();
    expect(res.headers['x-reached']).toBe('yes');
  });

  it('marks every response as varying by Origin, so that caches keep allowed and other origins apart', async () => {
    expect((await http.get('/').set('Origin', 'https://evil.example.com')).headers.vary).toBe('Origin');
    expect((await http.get('/')).headers.vary).toBe('Origin');
    expect((await http.get('/').set('Origin', allowed)).headers.vary).toBe('Origin');
  });

  it('matches origins exactly', async () => {
    for (const origin of [`${allowed}/`, allowed.toUpperCase(), `${allowed}:443`, 'http://app.example.org']) {
      const res = await http.get('/').set('Origin', origin).expect(200);
      expect(res.headers['access-control-allow-origin']).toBeUndefined();
    }
  });

  it('says nothing to a request without an Origin', async () => {
    const res = await http.get('/').expect(200);
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('answers a preflight of an allowed origin itself with 204', async () => {
    const res = await http
      .options('/api/v1/projects')
      .set('Origin', allowed)
      .set('Access-Control-Request-Method', 'PATCH')
      .set('Access-Control-Request-Headers', 'authorization, if-match')
      .expect(204);
    expect(res.headers['x-reached']).toBeUndefined();
    expect(res.headers['access-control-allow-origin']).toBe(allowed);
    expect(res.headers['access-control-allow-methods']?.split(/,\s*/)).toEqual(
      expect.arrayContaining(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']),
    );
    expect(res.headers['access-control-allow-headers']?.split(/,\s*/)).toEqual(
      expect.arrayContaining(['Authorization', 'Content-Type', 'If-Match', 'Idempotency-Key']),
    );
    expect(res.headers['access-control-max-age']).toBe('600');
  });

  it('leaves the preflight of another origin to the rest of the app', async () => {
    const res = await http
      .options('/')
      .set('Origin', 'https://evil.example.com')
      .set('Access-Control-Request-Method', 'DELETE')
      .expect(200);
    expect(res.headers['x-reached']).toBe('yes');
    expect(res.headers['access-control-allow-methods']).toBeUndefined();
  });

  it('treats an OPTIONS request without Access-Control-Request-Method as an ordinary request', async () => {
    const res = await http.options('/').set('Origin', allowed).expect(200);
    expect(res.headers['x-reached']).toBe('yes');
    expect(res.headers['access-control-allow-origin']).toBe(allowed);
    expect(res.headers['access-control-allow-methods']).toBeUndefined();
  });

  it('allows no origin when none is configured', async () => {
    const res = await request(appWith(cors([])))
      .get('/')
      .set('Origin', allowed)
      .expect(200);
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });
});
