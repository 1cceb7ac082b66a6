// The conformance suite of the gateway, service function calls and heartbeats: what every cluster
// backend must give (through `ClusterBackend.reach`), over HTTP through the whole app, with the
// demo echo service. Each backend's test file runs it with a harness: the local runtime, the
// Kubernetes backend on the fake API server (its service proxy) and on the real one. What is the
// same whatever the backend (auth, sign-in, limits, audit) is in test/contract/gateway.test.ts.
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import WebSocket from 'ws';
import type { ConfigInput } from '../../src/config.js';
import { createTestApp, type TestApp } from '../fixtures/app.js';
import type { Engine } from '../../src/db/database.js';
import { launch, serviceTestConfig, waitForService } from '../fixtures/services.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

export interface GatewayHarness {
  /** The app's configuration: one region, on the backend under test. */
  config: ConfigInput;
  /** How long a launch, a suspension or a resume may take on this backend (seconds). */
  waitSeconds: number;
  cleanup(): Promise<void>;
}

/** The echo service's function (version 1.1.0: POST /call answers what it received). */
const echoWithFunctions = { catalog_id: 'demo', package: 'echo', version: '1.1.0' };

export function describeGateway(
  name: string,
  engines: Engine[],
  makeHarness: () => Promise<GatewayHarness>,
): void {
  describe.each(engines)(`gateway and calls conformance: ${name} (%s)`, (engine) => {
    let harness: GatewayHarness;
    let t: TestApp;
    let bob: Login;
    let serviceId: string;
    let gw: string;

    beforeAll(async () => {
      harness = await makeHarness();
      t = await createTestApp(engine, {
        config: { ...serviceTestConfig, ...harness.config, gateway: { timeoutMs: 10_000 } },
      });
      const alice = await t.login('alice');
      bob = await t.login('bob');
      await t.createProject(alice, 'lab', { member: [bob] });
      serviceId = (await launch(t, bob.auth, 'lab', echoWithFunctions, harness.waitSeconds)).serviceId;
      const service = await waitForService(
        t,
        bob.auth,
        'lab',
        serviceId,
        (s) => s.status === 'running',
        harness.waitSeconds * 1000,
      );
      gw = (service.endpoints as { url: string }[])[0]?.url.replace(/\/$/, '') ?? '';
    });
    afterAll(async () => {
      await t?.close();
      await harness?.cleanup();
    });

    interface Echoed {
      method: string;
      path: string;
      query: Record<string, string>;
      body: string;
      headers: Record<string, string>;
    }

    /** A request by node:http (fetch sends no body with GET). */
    const send = (method: string, url: string, body: string | null, headers: Record<string, string>) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        // Framed by its length: node:http sends a GET's body unframed otherwise.
        const length = body === null ? {} : { 'Content-Length': String(Buffer.byteLength(body)) };
        const req = httpRequest(url, { method, headers: { ...headers, ...length } }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        });
        req.on('error', reject);
        req.end(body ?? undefined);
      });

    it('gives the http endpoint a gateway URL on Atrium’s origin', () => {
      expect(gw).toBe(`${t.url}/services/lab/${serviceId}/http`);
    });

    it('passes a GET with its query and body, and Atrium’s credentials never reach the service', async () => {
      const res = await send('GET', `${gw}/some/path?x=1&y=two`, 'a body on a GET', {
        Authorization: bob.auth,
        'Content-Type': 'text/plain',
        'X-Custom': 'kept',
      });
      expect(res.status).toBe(200);
      const answer = JSON.parse(res.text) as Echoed;
      expect(answer).toMatchObject({
        method: 'GET',
        path: '/some/path',
        query: { x: '1', y: 'two' },
        body: 'a body on a GET',
      });
      // Neither the caller's token nor the backend's own (an API server's) gets through.
      expect(answer.headers).not.toHaveProperty('authorization');
      expect(answer.headers['x-custom']).toBe('kept');
      expect(answer.headers['x-forwarded-prefix']).toBe(`/services/lab/${serviceId}/http`);
      expect(answer.headers['x-forwarded-host']).toBe(new URL(t.url).host);
    });

    it('passes a POST and every other method, with their bodies', async () => {
      const posted = await send('POST', `${gw}/items`, '{"n":1}', {
        Authorization: bob.auth,
        'Content-Type': 'application/json',
      });
      expect(posted.status).toBe(200);
      expect(JSON.parse(posted.text) as Echoed).toMatchObject({
        method: 'POST',
        path: '/items',
        body: '{"n":1}',
      });
      for (const method of ['PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
        const res = await send(method, `${gw}/m`, method === 'OPTIONS' ? null : `${method} body`, {
          Authorization: bob.auth,
        });
        expect(res.status).toBe(200);
        expect((JSON.parse(res.text) as Echoed).method).toBe(method);
      }
    });

    it('streams Server-Sent Events as they come, unbuffered', async () => {
      const res = await fetch(`${gw}/sse`, { headers: { Authorization: bob.auth } });
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const first = new TextDecoder().decode((await reader.read()).value);
      // One event every 200 ms: a buffering proxy on the way would deliver them all at once.
      expect(first).toBe('data: 0\n\n');
      let rest = '';
      for (let i = 0; i < 100; i++) {
        const chunk = await reader.read();
        if (chunk.done) break;
        rest += new TextDecoder().decode(chunk.value);
      }
      expect(rest).toBe('data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n');
    });

    it('round-trips WebSocket messages', async () => {
      const socket = new WebSocket(`${gw.replace(/^http/, 'ws')}/ws`, {
        headers: { Authorization: bob.auth },
      });
      const echoed = await new Promise<string[]>((resolve, reject) => {
        const seen: string[] = [];
        socket.once('open', () => {
          socket.send('one');
          socket.send('two');
        });
        socket.on('message', (data) => {
          seen.push(String(data));
          if (seen.length === 2) resolve(seen);
        });
        socket.once('error', reject);
        socket.once('unexpected-response', (_req, res) =>
          reject(new Error(`upgrade answered ${res.statusCode}`)),
        );
      });
      expect(echoed).toEqual(['one', 'two']);
      socket.close();
    });

    it('calls a function synchronously through the same way in (http-json driver)', async () => {
      const res = await t.http
        .post(`/api/v1/projects/lab/services/${serviceId}/functions/echo/calls?sync=true`)
        .set('Authorization', bob.auth)
        .send({ input: { message: 'through the backend' } });
      expect(res.status).toBe(200);
      expect(res.body.status).toBe('succeeded');
      expect(res.body.result).toMatchObject({ method: 'POST', path: '/call' });
      expect(JSON.parse(res.body.result.body as string)).toEqual({ message: 'through the backend' });
      expect(JSON.stringify(res.body.result)).not.toMatch(/authorization/i);
    });

    it('pings the service through the same way in (heartbeat)', async () => {
      const res = await t.http
        .get(`/api/v1/projects/lab/services/${serviceId}/heartbeat`)
        .set('Authorization', bob.auth);
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ status: 'up', http_status: 200 });
    });

    it('answers 503 with Retry-After while suspended, and the same URL once resumed', async () => {
      const url = `${gw}/after`;
      const patch = async (suspended: boolean) =>
        t.http
          .patch(`/api/v1/projects/lab/services/${serviceId}`)
          .set('Authorization', bob.auth)
          .send({ suspended })
          .expect(202);
      await patch(true);
      await waitForService(
        t,
        bob.auth,
        'lab',
        serviceId,
        (s) => s.status === 'suspended',
        harness.waitSeconds * 1000,
      );
      const suspended = await fetch(url, { headers: { Authorization: bob.auth } });
      expect(suspended.status).toBe(503);
      expect(Number(suspended.headers.get('retry-after'))).toBeGreaterThan(0);
      await patch(false);
      const resumed = await waitForService(
        t,
        bob.auth,
        'lab',
        serviceId,
        (s) => s.status === 'running',
        harness.waitSeconds * 1000,
      );
      expect((resumed.endpoints as { url: string }[])[0]?.url).toBe(`${gw}/`);
      // Running as Atrium sees it; the way in (a Service's endpoints) may follow a moment later.
      let status = 0;
      const deadline = Date.now() + harness.waitSeconds * 1000;
      for (let i = 0; i < 1000 && status !== 200 && Date.now() < deadline; i++) {
        status = (await fetch(url, { headers: { Authorization: bob.auth } })).status;
        if (status !== 200) await new Promise((r) => setTimeout(r, 200));
      }
      expect(status).toBe(200);
    });
  });
}
