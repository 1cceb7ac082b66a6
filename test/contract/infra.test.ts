import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import request from 'supertest';
import { createApp, loadBundledSpec } from '../../src/app.js';
import { repoRoot } from '../../src/paths.js';
import { createLogger } from '../../src/log.js';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';

describe('infrastructure endpoints', () => {
  let t: TestApp;
  let ready = true;

  beforeAll(async () => {
    t = await createTestApp('sqlite', {
      ready: async () => (ready ? { ready: true } : { ready: false, reason: 'catalogs are loading' }),
    });
  });
  afterAll(() => t.close());

  it('GET /healthz answers 200 while the process lives', async () => {
    expect((await t.http.get('/healthz').expect(200)).body).toEqual({ status: 'ok' });
  });

  it('GET /readyz answers 200 when ready, and 503 problem with Retry-After when not', async () => {
    await t.http.get('/readyz').expect(200);
    ready = false;
    const res = await t.http.get('/readyz');
    ready = true;
    expectProblem(res, 503, 'unavailable');
    expect(res.body.detail).toBe('catalogs are loading');
    expect(res.headers['retry-after']).toBe('1');
  });

  it('GET /readyz answers 503 when the database is gone', async () => {
    const t2 = await createTestApp('sqlite');
    const app = createApp({
      config: t2.config,
      database: t2.database,
      services: t2.services,
      log: createLogger('silent'),
      ready: async () => ({ ready: true }),
    });
    await t2.close();
    expectProblem(await request(app).get('/readyz'), 503, 'unavailable');
  });

  it('GET /metrics labels requests by operationId, never by raw URL', async () => {
    const { auth } = await t.login('metrics-user');
    await t.http.get('/api/v1/projects/user-metrics-user').set('Authorization', auth).expect(200);
    await t.http.get('/api/v1/projects/some-secret-name').set('Authorization', auth).expect(404);
    const text = (await t.http.get('/metrics').expect(200)).text;
    expect(text).toMatch(/atrium_http_requests_total\{operation="getProject",method="GET",status="200"\} 1/);
    expect(text).toMatch(/atrium_http_requests_total\{operation="getProject",method="GET",status="404"\} 1/);
    expect(text).toMatch(/atrium_http_request_duration_seconds_bucket\{le="0.005",operation="getProject"\}/);
    expect(text).toContain('atrium_process_cpu_seconds_total');
    expect(text).not.toContain('some-secret-name');
    expect(text).not.toContain('metrics-user');
  });

  it('GET /openapi.json serves the bundled spec, which passes redocly lint', async () => {
    const res = await t.http.get('/openapi.json').expect(200);
    expect(res.body).toEqual(loadBundledSpec());
    const dir = mkdtempSync(join(tmpdir(), 'atrium-spec-'));
    writeFileSync(join(dir, 'openapi.json'), res.text);
    const lint = spawnSync(
      join(repoRoot, 'node_modules/.bin/redocly'),
      ['lint', '--config', join(repoRoot, 'scripts/redocly.yaml'), join(dir, 'openapi.json')],
      { env: { ...process.env, REDOCLY_TELEMETRY: 'off' }, encoding: 'utf8' },
    );
    expect(`${lint.stdout}${lint.stderr}`).toMatch(/Your API description is valid/);
    expect(lint.status).toBe(0);
  }, 60_000);

  it('GET /docs redirects to /docs/, which is Swagger UI over /openapi.json', async () => {
    const redirect = await t.http.get('/docs').expect(301);
    expect(redirect.headers.location).toBe('/docs/');
    const page = await t.http.get('/docs/').expect(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.text).toContain('swagger-ui-bundle.js');
    expect(page.headers['content-security-policy']).toContain("default-src 'self'");
    const bundle = await t.http.get('/docs/swagger-ui-bundle.js').expect(200);
    expect(bundle.headers['content-type']).toMatch(/javascript/);
    expect(bundle.text).toContain('SwaggerUIBundle');
    const init = await t.http.get('/docs/atrium-docs.js').expect(200);
    expect(init.text).toContain("url: '/openapi.json'");
  });
});
