// The gateway: every http port of a service through Atrium, at a URL that survives suspend and
// resume, with Atrium's credentials checked and never passed on. Against a real listening server
// and real service processes (echo, static-files). What every backend must do alike (methods, SSE,
// WebSocket, suspend and resume) is the conformance suite, test/conformance/gateway.ts.
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import WebSocket from 'ws';
import { gatewayHost, parseGatewayHost } from '../../src/services/gateway.js';
import { createTestApp, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { echo, launch, serviceTestConfig, waitForService } from '../fixtures/services.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

const maxBodyBytes = 4096;

describe.each(testEngines())('gateway (%s)', (engine) => {
  let t: TestApp;
  let base: string;
  let alice: Login; // owner of lab
  let bob: Login; // member of lab
  let vera: Login; // viewer of lab
  let oscar: Login; // outsider
  let reader: Login; // bob with a read-only token
  let serviceId: string;
  let gw: string; // bob's echo through the gateway

  beforeAll(async () => {
    t = await createTestApp(engine, {
      config: { ...serviceTestConfig, gateway: { maxBodyBytes, timeoutMs: 1000 } },
    });
    base = t.url;
    [alice, bob, vera, oscar] = await Promise.all([
      t.login('alice'),
      t.login('bob'),
      t.login('vera'),
      t.login('oscar'),
    ]);
    reader = await t.login('bob', { scopes: ['read'] });
    await t.createProject(alice, 'lab', { member: [bob], viewer: [vera] });
    serviceId = (await launch(t, bob.auth, 'lab', echo)).serviceId;
    gw = `${base}/services/lab/${serviceId}/http`;
  });
  afterAll(() => t.close());

  const get = (url: string, headers: Record<string, string> = {}) =>
    fetch(url, { headers, redirect: 'manual' });

  it('gives each http endpoint a gateway URL on Atrium’s origin, not the backend address', async () => {
    const res = await get(`${base}/api/v1/projects/lab/services/${serviceId}`, { Authorization: bob.auth });
    const body = (await res.json()) as { endpoints: { port: string; protocol: string; url: string }[] };
    expect(body.endpoints).toEqual([{ port: 'http', protocol: 'http', url: `${gw}/` }]);
  });

  it('passes a request through with its method, path, query and body, and without Atrium’s credentials', async () => {
    // node:http, not fetch: fetch refuses to send a Connection header.
    const res = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = httpRequest(
        `${gw}/some/path?x=1&y=two`,
        {
          method: 'POST',
          headers: {
            Authorization: bob.auth,
            'Content-Type': 'text/plain',
            Cookie: 'theme=dark; atrium_gateway=leaked; lang=en',
            Connection: 'keep-alive, x-hop',
            'X-Hop': 'must not pass',
            'X-Forwarded-For': '203.0.113.9',
            'X-Custom': 'kept',
          },
        },
        (response) => {
          let text = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => (text += chunk));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, text }));
        },
      );
      req.on('error', reject);
      req.end('hello through the gateway');
    });
    expect(res.status).toBe(200);
    const answer = JSON.parse(res.text) as {
      method: string;
      path: string;
      query: Record<string, string>;
      body: string;
      headers: Record<string, string>;
    };
    expect(answer).toMatchObject({
      method: 'POST',
      path: '/some/path',
      query: { x: '1', y: 'two' },
      body: 'hello through the gateway',
    });
    expect(answer.headers).not.toHaveProperty('authorization');
    expect(answer.headers).not.toHaveProperty('x-hop');
    expect(answer.headers.cookie).toBe('theme=dark; lang=en');
    expect(answer.headers['x-custom']).toBe('kept');
    expect(answer.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(answer.headers['x-forwarded-prefix']).toBe(`/services/lab/${serviceId}/http`);
    expect(answer.headers['x-forwarded-proto']).toBe('http');
    expect(answer.headers['x-forwarded-host']).toBe(new URL(base).host);
  });

  it('redirects the bare prefix to its slash, where relative links resolve (308)', async () => {
    const res = await get(gw, { Authorization: bob.auth });
    expect(res.status).toBe(308);
    expect(res.headers.get('location')).toBe(`/services/lab/${serviceId}/http/`);
  });

  it('asks API clients for credentials (401 problem) and sends browsers to sign in (302)', async () => {
    const api = await get(`${gw}/`);
    expect(api.status).toBe(401);
    expect(api.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(api.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(((await api.json()) as { type: string }).type).toBe('https://atrium.dev/problems/unauthorized');
    const bad = await get(`${gw}/`, { Authorization: 'Bearer atr_notarealtokenatall12345' });
    expect(bad.status).toBe(401);
    const browser = await get(`${gw}/page?a=1`, { Accept: 'text/html,application/xhtml+xml' });
    expect(browser.status).toBe(302);
    expect(browser.headers.get('location')).toBe(
      `/services/_login?next=${encodeURIComponent(`/services/lab/${serviceId}/http/page?a=1`)}`,
    );
  });

  it('lets in whoever may read the service, and answers 404 to everyone else', async () => {
    expect((await get(`${gw}/`, { Authorization: alice.auth })).status).toBe(200); // project owner
    expect((await get(`${gw}/`, { Authorization: oscar.auth })).status).toBe(404); // outsider
    expect((await get(`${gw}/`, { Authorization: vera.auth })).status).toBe(404); // not shared
    const missing = await get(`${base}/services/lab/svc_00000000000000000000/http/`, {
      Authorization: bob.auth,
    });
    expect(missing.status).toBe(404);
    const otherProject = await get(`${base}/services/other/${serviceId}/http/`, { Authorization: bob.auth });
    expect(otherProject.status).toBe(404);
    const port = await get(`${base}/services/lab/${serviceId}/nope/`, { Authorization: bob.auth });
    expect(port.status).toBe(404);
    // A read-only token reads, and may not write.
    expect((await get(`${gw}/`, { Authorization: reader.auth })).status).toBe(200);
    const write = await fetch(`${gw}/`, {
      method: 'POST',
      headers: { Authorization: reader.auth },
      body: 'x',
    });
    expect(write.status).toBe(403);
  });

  it('signs a browser in with a form, into an HttpOnly cookie for the gateway only, and out again', async () => {
    const page = await get(
      `${base}/services/_login?next=${encodeURIComponent(`/services/lab/${serviceId}/http/`)}`,
    );
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await page.text()).toContain(`name="next" value="/services/lab/${serviceId}/http/"`);
    const refused = await fetch(`${base}/services/_login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: 'atr_notarealtokenatall12345', next: '/services/' }).toString(),
    });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('set-cookie')).toBeNull();
    const signed = await fetch(`${base}/services/_login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        token: bob.token,
        next: `/services/lab/${serviceId}/http/after`,
      }).toString(),
    });
    expect(signed.status).toBe(303);
    expect(signed.headers.get('location')).toBe(`/services/lab/${serviceId}/http/after`);
    const cookie = signed.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/^atrium_gateway=/);
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Lax/);
    expect(cookie).toMatch(/Path=\/services\//);
    const pair = cookie.split(';')[0] as string;
    const through = await get(`${gw}/after`, { Cookie: pair, Accept: 'text/html' });
    expect(through.status).toBe(200);
    const seen = (await through.json()) as { headers: Record<string, string> };
    expect(seen.headers).not.toHaveProperty('cookie');
    // Somewhere else than a gateway path is never where a sign-in sends the browser.
    const offsite = await fetch(`${base}/services/_login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: bob.token, next: '//evil.example/' }).toString(),
    });
    expect(offsite.headers.get('location')).toBe('/services/');
    const out = await fetch(`${base}/services/_logout`, {
      method: 'POST',
      redirect: 'manual',
      headers: { Cookie: pair },
    });
    expect(out.status).toBe(303);
    expect(out.headers.get('set-cookie')).toMatch(/^atrium_gateway=;/);
  });

  it('round-trips WebSocket messages, and refuses an upgrade without credentials', async () => {
    const socket = new WebSocket(`${gw.replace(/^http/, 'ws')}/ws`, { headers: { Authorization: bob.auth } });
    const echoed = await new Promise<string>((resolve, reject) => {
      socket.once('open', () => socket.send('ping through the gateway'));
      socket.once('message', (data) => resolve(String(data)));
      socket.once('error', reject);
    });
    expect(echoed).toBe('ping through the gateway');
    socket.close();
    const refused = new WebSocket(`${gw.replace(/^http/, 'ws')}/ws`);
    const status = await new Promise<number>((resolve, reject) => {
      refused.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      refused.once('open', () => reject(new Error('opened without credentials')));
      refused.once('error', () => undefined);
    });
    expect(status).toBe(401);
    const foreign = new WebSocket(`${gw.replace(/^http/, 'ws')}/ws`, {
      headers: { Authorization: oscar.auth },
    });
    const foreignStatus = await new Promise<number>((resolve) => {
      foreign.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      foreign.once('error', () => undefined);
    });
    expect(foreignStatus).toBe(404);
  });

  it('refuses a body over the limit (413), declared or streamed, and stays up', async () => {
    const declared = await fetch(`${gw}/`, {
      method: 'POST',
      headers: { Authorization: bob.auth },
      body: 'x'.repeat(maxBodyBytes + 1),
    });
    expect(declared.status).toBe(413);
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(
        `${gw}/`,
        { method: 'POST', headers: { Authorization: bob.auth, 'Transfer-Encoding': 'chunked' } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      for (let i = 0; i < 8; i++) req.write('y'.repeat(1024));
      req.end();
    });
    expect(status).toBe(413);
    expect((await get(`${base}/healthz`)).status).toBe(200);
    expect((await get(`${gw}/`, { Authorization: bob.auth })).status).toBe(200);
  });

  it('answers 504 when the service sends nothing within the timeout', async () => {
    const { serviceId: slow } = await launch(t, bob.auth, 'lab', {
      ...echo,
      version: '1.1.0',
      options: { delay_ms: 5000 },
    });
    const res = await get(`${base}/services/lab/${slow}/http/`, { Authorization: bob.auth });
    expect(res.status).toBe(504);
    expect(((await res.json()) as { type: string }).type).toBe('https://atrium.dev/problems/gateway-timeout');
  });

  it('answers 503 with Retry-After while suspended, and the same URL once resumed', async () => {
    const { serviceId: id } = await launch(t, bob.auth, 'lab', echo);
    const url = `${base}/services/lab/${id}/http/`;
    expect((await get(url, { Authorization: bob.auth })).status).toBe(200);
    await t.http
      .patch(`/api/v1/projects/lab/services/${id}`)
      .set('Authorization', bob.auth)
      .send({ suspended: true })
      .expect(202);
    await waitForService(t, bob.auth, 'lab', id, (s) => s.status === 'suspended');
    const suspended = await get(url, { Authorization: bob.auth });
    expect(suspended.status).toBe(503);
    expect(Number(suspended.headers.get('retry-after'))).toBeGreaterThan(0);
    await t.http
      .patch(`/api/v1/projects/lab/services/${id}`)
      .set('Authorization', bob.auth)
      .send({ suspended: false })
      .expect(202);
    await waitForService(t, bob.auth, 'lab', id, (s) => s.status === 'running');
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      status = (await get(url, { Authorization: bob.auth })).status;
      if (status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    expect(status).toBe(200);
    const service = await get(`${base}/api/v1/projects/lab/services/${id}`, { Authorization: bob.auth });
    expect(((await service.json()) as { endpoints: { url: string }[] }).endpoints[0]?.url).toBe(url);
    // Deleted: gone (404).
    const deletion = await t.http
      .delete(`/api/v1/projects/lab/services/${id}`)
      .set('Authorization', bob.auth)
      .expect(202);
    await t.http
      .get(`/api/v1/operations/${deletion.body.id}`)
      .set('Authorization', bob.auth)
      .set('Prefer', 'wait=20');
    expect((await get(url, { Authorization: bob.auth })).status).toBe(404);
  });

  it('lets anyone reach a port launched public, and only that one', async () => {
    const open = (
      await launch(t, bob.auth, 'lab', {
        catalog_id: 'demo',
        package: 'static-files',
        options: { public: true },
      })
    ).serviceId;
    const closed = (await launch(t, bob.auth, 'lab', { catalog_id: 'demo', package: 'static-files' }))
      .serviceId;
    const page = await get(`${base}/services/lab/${open}/http/`);
    expect(page.status).toBe(200);
    expect((await get(`${base}/services/lab/${closed}/http/`)).status).toBe(401);
    // Public in its own project only.
    expect((await get(`${base}/services/other/${open}/http/`)).status).toBe(401);
  });

  it('audits writes through the gateway and counts requests per service', async () => {
    await fetch(`${gw}/audited`, { method: 'PUT', headers: { Authorization: bob.auth }, body: 'x' });
    let rows: { user_id: string; status: number }[] = [];
    for (let i = 0; i < 100 && rows.length === 0; i++) {
      await t.services.audit.flush();
      rows = await t.database
        .knex('audit_events')
        .where({ operation_id: 'gateway', method: 'PUT' })
        .select('user_id', 'status', 'path');
    }
    expect(rows[0]).toMatchObject({ user_id: bob.user.id, status: 200 });
    const metrics = await (await get(`${base}/metrics`)).text();
    expect(metrics).toMatch(
      new RegExp(
        `atrium_gateway_requests_total\\{project="lab",service="${serviceId}",port="http",status="200"\\} [1-9]`,
      ),
    );
    expect(metrics).toMatch(
      new RegExp(
        `atrium_gateway_requests_total\\{project="lab",service="${serviceId}",port="http",status="101"\\} [1-9]`,
      ),
    );
  });
});

describe.each(testEngines())('gateway by host, under a region’s wildcard domain (%s)', (engine) => {
  const domain = 'apps.example.test';
  let t: TestApp;
  let bob: Login;
  let oscar: Login;
  let serviceId: string;
  let host: string;

  /** A request to the app with another Host header (as a wildcard DNS name would bring it). */
  const send = (
    path: string,
    headers: Record<string, string>,
    { method = 'GET', body = null as string | null, as = host } = {},
  ) =>
    new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }>(
      (resolve, reject) => {
        const length = body === null ? {} : { 'Content-Length': String(Buffer.byteLength(body)) };
        const req = httpRequest(
          `${t.url}${path}`,
          { method, headers: { ...headers, ...length, Host: as } },
          (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => (text += chunk));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
          },
        );
        req.on('error', reject);
        req.end(body ?? undefined);
      },
    );

  beforeAll(async () => {
    t = await createTestApp(engine, {
      config: {
        ...serviceTestConfig,
        regions: [{ id: 'local', name: 'This machine', backend: { type: 'local' }, gateway: { domain } }],
      },
    });
    const alice = await t.login('alice');
    [bob, oscar] = await Promise.all([t.login('bob'), t.login('oscar')]);
    await t.createProject(alice, 'lab', { member: [bob] });
    serviceId = (await launch(t, bob.auth, 'lab', echo)).serviceId;
    host = gatewayHost(serviceId, 'http', domain) as string;
  });
  afterAll(() => t.close());

  it('names each port by a host of its own: {port}-{service id in base32}.{domain}, one per port', async () => {
    expect(host).toMatch(new RegExp(`^http-[a-z2-7]+\\.${domain.replace(/\./g, '\\.')}$`));
    expect(parseGatewayHost(host.toUpperCase(), [domain])).toEqual({ serviceId, port: 'http', domain });
    expect(parseGatewayHost(`http-${host.split('.')[0]?.slice(5)}x.${domain}`, [domain])).toBeNull();
    expect(parseGatewayHost(`http-abc.elsewhere.test`, [domain])).toBeNull();
    // A port whose label would not fit one DNS label (63) keeps its path URL.
    expect(gatewayHost(serviceId, 'p'.repeat(30), domain)).toBeNull();
    const res = await t.http.get(`/api/v1/projects/lab/services/${serviceId}`).set('Authorization', bob.auth);
    expect(res.body.endpoints).toEqual([{ port: 'http', protocol: 'http', url: `http://${host}/` }]);
  });

  it('passes the whole path to the service, with the same auth and without Atrium’s credentials', async () => {
    const res = await send('/some/path?x=1', { Authorization: bob.auth });
    expect(res.status).toBe(200);
    const answer = JSON.parse(res.text) as { path: string; query: object; headers: Record<string, string> };
    expect(answer).toMatchObject({ path: '/some/path', query: { x: '1' } });
    expect(answer.headers).not.toHaveProperty('authorization');
    expect(answer.headers).not.toHaveProperty('x-forwarded-prefix');
    expect(answer.headers['x-forwarded-host']).toBe(host);
    expect((await send('/', {})).status).toBe(401);
    expect((await send('/', { Authorization: oscar.auth })).status).toBe(404);
    // A host of no service under the domain: 404, not Atrium's API.
    const nobody = gatewayHost('svc_00000000000000000000', 'http', domain) as string;
    expect((await send('/', { Authorization: bob.auth }, { as: nobody })).status).toBe(404);
    expect((await send('/api/v1/projects', { Authorization: bob.auth })).text).toContain(
      '"path":"/api/v1/projects"',
    );
  });

  it('signs a browser in on the service’s host, into a cookie of that host only', async () => {
    const browser = await send('/page', { Accept: 'text/html' });
    expect(browser.status).toBe(302);
    expect(browser.headers.location).toBe(`/_atrium/login?next=${encodeURIComponent('/page')}`);
    const form = new URLSearchParams({ token: bob.token, next: '/page' }).toString();
    const signed = await send(
      '/_atrium/login',
      { 'Content-Type': 'application/x-www-form-urlencoded' },
      { method: 'POST', body: form },
    );
    expect(signed.status).toBe(303);
    expect(signed.headers.location).toBe('/page');
    const cookie = String(signed.headers['set-cookie'] ?? '');
    expect(cookie).toMatch(/^atrium_gateway=.*; Path=\/;.*HttpOnly/);
    expect(cookie).not.toMatch(/Domain=/i);
    const pair = cookie.split(';')[0] as string;
    const through = await send('/page', { Cookie: pair, Accept: 'text/html' });
    expect(through.status).toBe(200);
    expect((JSON.parse(through.text) as { headers: object }).headers).not.toHaveProperty('cookie');
    // Another page of the same site (another service's host) cannot write with this cookie.
    const forged = await send(
      '/write',
      { Cookie: pair, Origin: `http://${gatewayHost('svc_someoneelse0000000000', 'http', domain)}` },
      { method: 'POST', body: 'x' },
    );
    expect(forged.status).toBe(403);
    const offsite = await send(
      '/_atrium/login',
      { 'Content-Type': 'application/x-www-form-urlencoded' },
      { method: 'POST', body: new URLSearchParams({ token: bob.token, next: '//evil.example/' }).toString() },
    );
    expect(offsite.headers.location).toBe('/');
  });

  it('round-trips WebSocket messages by host', async () => {
    const socket = new WebSocket(`${t.url.replace(/^http/, 'ws')}/ws`, {
      headers: { Authorization: bob.auth, Host: host },
    });
    const echoed = await new Promise<string>((resolve, reject) => {
      socket.once('open', () => socket.send('ping by host'));
      socket.once('message', (data) => resolve(String(data)));
      socket.once('error', reject);
    });
    expect(echoed).toBe('ping by host');
    socket.close();
  });
});
