// The gateway: every http port of a service through Atrium, at a URL that survives suspend and
// resume, with Atrium's credentials checked and never passed on. Against a real listening server
// and real service processes (echo, static-files).
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import WebSocket from 'ws';
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

  it('sends every method and streams Server-Sent Events as they come, unbuffered', async () => {
    for (const method of ['GET', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
      const res = await fetch(`${gw}/m`, { method, headers: { Authorization: bob.auth } });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { method: string }).method).toBe(method);
    }
    const res = await fetch(`${gw}/sse`, { headers: { Authorization: bob.auth } });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    // The service sends one event at a time: a buffering proxy would deliver them all at once.
    expect(first).toBe('data: 0\n\n');
    let rest = '';
    for (let i = 0; i < 100; i++) {
      const chunk = await reader.read();
      if (chunk.done) break;
      rest += new TextDecoder().decode(chunk.value);
    }
    expect(rest).toBe('data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n');
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
