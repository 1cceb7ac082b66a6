// Using what you launched, end to end through the real `atrium serve` and the generated client
// (@atrium/client): the kv-store reached through its gateway URL with a token (and not without), at
// the same URL after suspend and resume; `put` called synchronously and `get` queued, polled to its
// result; a WebSocket round-trip through the gateway (echo); an external backend (a kv-store Atrium
// did not launch) registered and called; the demo plugin driver (kv-stats) registered by the
// administrator and used on both kv-stores.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { unwrap, type Schemas } from '@atrium/client';
import WebSocket from 'ws';
import { demoDriversPath } from '../../src/paths.js';
import { startOutsideKvStore } from '../fixtures/services.js';
import { testEngines } from '../fixtures/databases.js';
import {
  collect,
  expectAccepted,
  expectStatus,
  startedAtrium,
  until,
  type StartedAtrium,
} from '../fixtures/e2e.js';

const adminToken = 'atr_e2eUsingServicesAdmin012345';
const projectId = 'user-admin';

describe.each(testEngines())('using services, end to end (%s)', (engine) => {
  let atrium: StartedAtrium;
  let outside: ChildProcess | null = null;
  let plugin: ChildProcess | null = null;
  const launchedIds: string[] = [];
  let launchedKv = '';
  let outsideKv = '';
  const scratch = mkdtempSync(join(tmpdir(), 'atrium-e2e-outside-'));

  beforeAll(async () => {
    atrium = await startedAtrium(engine, adminToken, { ATRIUM_EXTERNAL_BACKENDS_ALLOW: '127.0.0.1/32' });
  }, 90_000);

  afterAll(async () => {
    // What it launched: services outlive the server (they are adopted on its next start).
    for (const serviceId of launchedIds) {
      await atrium?.client
        .DELETE('/projects/{projectId}/services/{serviceId}', {
          params: { path: { projectId, serviceId }, header: { Prefer: 'wait=20' } },
        })
        .catch(() => undefined);
    }
    outside?.kill('SIGTERM');
    plugin?.kill('SIGTERM');
    await atrium?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  const getService = async (serviceId: string) =>
    unwrap(
      await atrium.client.GET('/projects/{projectId}/services/{serviceId}', {
        params: { path: { projectId, serviceId } },
      }),
    );

  const launched = async (pkg: string) => {
    const op = expectAccepted(
      await atrium.client.POST('/projects/{projectId}/services', {
        params: { path: { projectId } },
        body: { catalog_id: 'demo', package: pkg },
      }),
    );
    const serviceId = op.target?.id as string;
    launchedIds.push(serviceId);
    await atrium.client.waitForOperation(op, { timeoutMs: 90_000 });
    const service = await getService(serviceId);
    expect(service.status).toBe('running');
    expect(service.endpoints.length).toBeGreaterThan(0);
    return service;
  };

  /** Suspends or resumes the service, and waits for the operation to succeed. */
  const setSuspended = async (serviceId: string, suspended: boolean) => {
    const op = expectAccepted(
      await atrium.client.PATCH('/projects/{projectId}/services/{serviceId}', {
        params: { path: { projectId, serviceId } },
        body: { suspended },
      }),
    );
    await atrium.client.waitForOperation(op, { timeoutMs: 90_000 });
  };

  const callFunction = (serviceId: string, functionName: string, input: unknown, sync: boolean) =>
    atrium.client.POST('/projects/{projectId}/services/{serviceId}/functions/{functionName}/calls', {
      params: { path: { projectId, serviceId, functionName }, query: sync ? { sync: true } : {} },
      body: { input },
    });

  const pollCall = async (serviceId: string, callId: string) =>
    until(
      `call ${callId}`,
      async () =>
        unwrap(
          await atrium.client.GET('/projects/{projectId}/services/{serviceId}/calls/{callId}', {
            params: { path: { projectId, serviceId, callId }, header: { Prefer: 'wait=5' } },
          }),
        ),
      (c) => ['succeeded', 'failed', 'cancelled'].includes(c.status),
    );

  // The services' own URLs (the gateway's, the outside kv-store's, the plugin's) are not paths of
  // Atrium's API: they are reached with plain fetch and WebSocket.
  it('reaches the kv-store through its gateway URL, keeps the URL across suspend and resume, and calls its functions', async () => {
    const kv = await launched('kv-store');
    launchedKv = kv.id;
    const url = kv.endpoints[0]?.url as string;
    expect(url).toBe(`${atrium.server.url}/services/user-admin/${kv.id}/http/`);
    const auth = { Authorization: `Bearer ${adminToken}` };
    expect((await fetch(`${url}keys`)).status).toBe(401);
    const put = await fetch(`${url}keys/colour`, {
      method: 'PUT',
      headers: auth,
      body: JSON.stringify('teal'),
    });
    expect(put.status).toBe(201);
    expect(await (await fetch(`${url}keys/colour`, { headers: auth })).json()).toMatchObject({
      value: 'teal',
    });

    await setSuspended(kv.id, true);
    expect((await getService(kv.id)).status).toBe('suspended');
    const asleep = await fetch(`${url}keys/colour`, { headers: auth });
    expect(asleep.status).toBe(503);
    expect(asleep.headers.get('retry-after')).toBeTruthy();
    await setSuspended(kv.id, false);
    const resumed = await getService(kv.id);
    expect(resumed.status).toBe('running');
    expect(resumed.endpoints[0]?.url).toBe(url);
    expect(await (await fetch(`${url}keys/colour`, { headers: auth })).json()).toMatchObject({
      value: 'teal',
    });

    const putCall = expectStatus(await callFunction(kv.id, 'put', { key: 'size', value: 42 }, true), 200);
    expect(putCall).toMatchObject({ status: 'succeeded', result: { key: 'size', value: 42 } });
    const getCall = await callFunction(kv.id, 'get', { key: 'size' }, false);
    const queued = expectStatus(getCall, 202);
    expect(getCall.response.headers.get('location')).toBe(
      `/api/v1/projects/${projectId}/services/${kv.id}/calls/${queued.id}`,
    );
    expect(await pollCall(kv.id, queued.id)).toMatchObject({
      status: 'succeeded',
      result: { key: 'size', value: 42 },
    });
  });

  it('round-trips WebSocket messages through the gateway, with the token and not without', async () => {
    const echo = await launched('echo');
    const ws = `${(echo.endpoints[0]?.url as string).replace(/^http/, 'ws')}ws`;
    const socket = new WebSocket(ws, { headers: { Authorization: `Bearer ${adminToken}` } });
    const answer = await new Promise<string>((resolve, reject) => {
      socket.on('open', () => socket.send('through the gateway'));
      socket.on('message', (data) => resolve(String(data)));
      socket.on('error', reject);
    });
    expect(answer).toBe('through the gateway');
    socket.close();
    const refused = new WebSocket(ws);
    const status = await new Promise<number>((resolve) => {
      refused.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      refused.on('error', () => resolve(-1));
    });
    expect(status).toBe(401);
  });

  it('registers a kv-store Atrium did not launch and calls its db functions, sync and queued', async () => {
    const { client } = atrium;
    const started = await startOutsideKvStore(scratch);
    outside = started.child;
    const registered = expectStatus(
      await client.POST('/projects/{projectId}/backends', {
        params: { path: { projectId } },
        body: {
          name: 'outside-kv',
          app: 'kv-store',
          version: '1.0.0',
          locations: [{ name: 'http', url: started.url }],
          health_path: '/healthz',
          scope: { name: 'db', port: 'http' },
        },
      }),
      201,
    );
    expect(registered).toMatchObject({ origin: 'external', status: 'running', message: null });
    const id = registered.id;
    outsideKv = id;
    const heartbeat = expectStatus(
      await client.GET('/projects/{projectId}/services/{serviceId}/heartbeat', {
        params: { path: { projectId, serviceId: id } },
      }),
      200,
    );
    expect(heartbeat.status).toBe('up');
    const put = await callFunction(
      id,
      'records.put',
      { table: 'people', id: 'ada', value: { born: 1815 } },
      true,
    );
    expectStatus(put, 200);
    const get = expectStatus(
      await callFunction(id, 'records.get', { table: 'people', id: 'ada' }, false),
      202,
    );
    expect(await pollCall(id, get.id)).toMatchObject({
      status: 'succeeded',
      result: { table: 'people', id: 'ada', value: { born: 1815 } },
    });
    // The same data, seen by the program itself: Atrium called it, nothing was copied.
    const own = await fetch(`${started.url}/keys/people%2Fada`);
    expect(await own.json()).toMatchObject({ value: { born: 1815 } });
  });

  it('registers the demo plugin driver and calls its functions on both kv-stores', async () => {
    const { client } = atrium;
    expect(launchedKv && outsideKv).toBeTruthy();
    plugin = spawn(process.execPath, [join(demoDriversPath, 'kv-stats', 'kv-stats.mjs')], {
      env: { PORT: '0' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let printed = '';
    plugin.stdout?.on('data', (chunk) => (printed += String(chunk)));
    const url = await until(
      'kv-stats listening',
      async () => /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(printed)?.[1] ?? '',
      (u) => u !== '',
      20_000,
    );
    const registration = JSON.parse(
      readFileSync(join(demoDriversPath, 'kv-stats', 'driver.json'), 'utf8'),
    ) as Omit<Schemas['DriverCreate'], 'url'>;
    const created = expectStatus(await client.POST('/drivers', { body: { ...registration, url } }), 201);
    expect(created).toMatchObject({ name: 'kv-stats', kind: 'plugin', health: { status: 'up' } });

    const offered = await collect(
      client.paginate('/projects/{projectId}/services/{serviceId}/functions', {
        params: { path: { projectId, serviceId: outsideKv } },
      }),
    );
    expect(offered.map((f) => f.name)).toEqual(
      expect.arrayContaining(['records.get', 'keys.count', 'keys.export']),
    );
    const counted = expectStatus(await callFunction(outsideKv, 'keys.count', {}, true), 200);
    expect(counted.result).toEqual({ prefix: '', count: 1 });
    const exported = expectStatus(
      await callFunction(launchedKv, 'keys.export', { prefix: 'size' }, false),
      202,
    );
    const done = await pollCall(launchedKv, exported.id);
    expect(done.status).toBe('succeeded');
    expect(JSON.stringify(done.result)).toContain('42');
  });
});
