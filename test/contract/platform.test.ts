import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';

const regions = [
  {
    id: 'onprem',
    name: 'On premises',
    description: 'The lab machine',
    location: { name: 'Paris', lat: 48.85, long: 2.35 },
    quotas: { default: { cpu: '2', memory: '4Gi', gpu: 0, services: 3, concurrent_jobs: 2, storage: '1Gi' } },
  },
  { id: 'gpu-farm', name: 'GPU farm', expose: { domain: 'lab.example.org' } },
  { id: 'third', name: 'Third' },
];

describe.each(testEngines())('platform (%s)', (engine) => {
  let t: TestApp;

  beforeAll(async () => {
    t = await createTestApp(engine, {
      config: {
        regions,
        server: { trustedProxies: ['127.0.0.1', '::ffff:127.0.0.1', '::1'] },
        auth: {
          oidc: { issuer: 'https://login.example.org/realms/lab', audience: 'atrium', clientId: 'atrium-ui' },
        },
      },
    });
  });
  afterAll(() => t.close());

  describe('listRegions', () => {
    it('lists the configured regions in configuration order, without authentication (200)', async () => {
      const res = await t.http.get('/api/v1/regions').expect(200);
      expect(res.body.items.map((r: { id: string }) => r.id)).toEqual(['onprem', 'gpu-farm', 'third']);
      expect(res.body.items[0]).toEqual({
        id: 'onprem',
        name: 'On premises',
        description: 'The lab machine',
        location: { name: 'Paris', lat: 48.85, long: 2.35 },
        backend: { type: 'local' },
        quotas: {
          default: { cpu: '2', memory: '4Gi', gpu: 0, services: 3, concurrent_jobs: 2, storage: '1Gi' },
        },
        expose: null,
      });
      expect(res.headers['cache-control']).toBe('no-cache');
    });

    it('paginates like every list', async () => {
      const first = await t.http.get('/api/v1/regions?limit=2').expect(200);
      expect(first.body.items).toHaveLength(2);
      expect(first.headers.link).toContain('rel="next"');
      const second = await t.http.get(`/api/v1/regions?limit=2&cursor=${first.body.next_cursor}`).expect(200);
      expect(second.body.items.map((r: { id: string }) => r.id)).toEqual(['third']);
      expect(second.body.next_cursor).toBeNull();
    });

    it('rejects a limit above the maximum (400)', async () => {
      expectProblem(await t.http.get('/api/v1/regions?limit=1000'), 400, 'validation');
    });
  });

  describe('getRegion', () => {
    it('returns one region (200)', async () => {
      const res = await t.http.get('/api/v1/regions/gpu-farm').expect(200);
      expect(res.body).toMatchObject({
        id: 'gpu-farm',
        expose: { domain: 'lab.example.org' },
        backend: { type: 'local' },
      });
    });

    it('rejects a malformed id (400)', async () => {
      expectProblem(await t.http.get('/api/v1/regions/GPU'), 400, 'validation');
    });

    it('answers 404 for an unknown region', async () => {
      expectProblem(await t.http.get('/api/v1/regions/mars'), 404, 'not-found');
    });
  });

  describe('getConfig', () => {
    it('tells a client the version, how to authenticate, the regions and the limits (200)', async () => {
      const res = await t.http.get('/api/v1/config').expect(200);
      expect(res.body).toMatchObject({
        version: '0.0.0-test',
        api_base_path: '/api/v1',
        auth: {
          token: { prefix: 'atr_' },
          oidc: {
            issuer: 'https://login.example.org/realms/lab',
            audience: 'atrium',
            client_id: 'atrium-ui',
          },
        },
        limits: { page_size_default: 20, page_size_max: 200, max_body_bytes: 1048576 },
      });
      expect(res.body.regions).toHaveLength(3);
    });
  });

  describe('getClientIp', () => {
    it("returns the caller's address (200)", async () => {
      const res = await t.http.get('/api/v1/ip').expect(200);
      expect(res.body.ip).toMatch(/127\.0\.0\.1$/);
    });

    it('believes X-Forwarded-For from a trusted proxy', async () => {
      const res = await t.http.get('/api/v1/ip').set('X-Forwarded-For', '203.0.113.7').expect(200);
      expect(res.body.ip).toBe('203.0.113.7');
    });
  });
});

describe('getClientIp without trusted proxies', () => {
  it('ignores X-Forwarded-For, which any client can forge', async () => {
    const t = await createTestApp('sqlite');
    try {
      const res = await t.http.get('/api/v1/ip').set('X-Forwarded-For', '203.0.113.7').expect(200);
      expect(res.body.ip).toMatch(/127\.0\.0\.1$/);
      const config = await t.http.get('/api/v1/config').expect(200);
      expect(config.body.auth.oidc).toBeNull();
    } finally {
      await t.close();
    }
  });
});
