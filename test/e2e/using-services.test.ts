// Using what you launched, end to end through the real `atrium serve`: the kv-store reached
// through its gateway URL with a token (and not without), at the same URL after suspend and
// resume; `put` called synchronously and `get` queued, polled to its result; a WebSocket
// round-trip through the gateway (echo); an external backend (a kv-store Atrium did not launch)
// registered and called; the demo plugin driver (kv-stats) registered by the administrator and
// used on both kv-stores.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import WebSocket from 'ws';
import { demoDriversPath } from '../../src/paths.js';
import { startOutsideKvStore } from '../fixtures/services.js';
import { testEngines } from '../fixtures/databases.js';
import { startedAtrium, until, type StartedAtrium } from '../fixtures/e2e.js';

const adminToken = 'atr_e2eUsingServicesAdmin012345';

describe.each(testEngines())('using services, end to end (%s)', (engine) => {
  let atrium: StartedAtrium;
  let outside: ChildProcess | null = null;
  let plugin: ChildProcess | null = null;
  const launchedIds: string[] = [];
  let launchedKv = '';
  let outsideKv = '';
  const scratch = mkdtempSync(join(tmpdir(), 'atrium-e2e-outside-'));
  const project = '/api/v1/projects/user-admin';

  beforeAll(async () => {
    atrium = await startedAtrium(engine, adminToken, { ATRIUM_EXTERNAL_BACKENDS_ALLOW: '127.0.0.1/32' });
  }, 90_000);

  afterAll(async () => {
    // What it launched: services outlive the server (they are adopted on its next start).
    for (const id of launchedIds) {
      await atrium
        ?.call('DELETE', `${project}/services/${id}`, undefined, { Prefer: 'wait=20' })
        .catch(() => undefined);
    }
    outside?.kill('SIGTERM');
    plugin?.kill('SIGTERM');
    await atrium?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  const launched = async (pkg: string) => {
    const res = await atrium.call('POST', `${project}/services`, { catalog_id: 'demo', package: pkg });
    expect(res.status).toBe(202);
    const serviceId = res.body.target.id as string;
    launchedIds.push(serviceId);
    return until(
      `${pkg} running`,
      async () => (await atrium.call('GET', `${project}/services/${serviceId}`)).body,
      (s) => s.status === 'running' && s.endpoints.length > 0,
    );
  };

  const callFunction = (serviceId: string, name: string, input: unknown, sync: boolean) =>
    atrium.call(
      'POST',
      `${project}/services/${serviceId}/functions/${name}/calls${sync ? '?sync=true' : ''}`,
      {
        input,
      },
    );

  const pollCall = async (serviceId: string, callId: string) =>
    until(
      `call ${callId}`,
      async () =>
        (
          await atrium.call('GET', `${project}/services/${serviceId}/calls/${callId}`, undefined, {
            Prefer: 'wait=5',
          })
        ).body,
      (c) => ['succeeded', 'failed', 'cancelled'].includes(c.status),
    );

  it('reaches the kv-store through its gateway URL, keeps the URL across suspend and resume, and calls its functions', async () => {
    const kv = await launched('kv-store');
    launchedKv = kv.id as string;
    const url = kv.endpoints[0].url as string;
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

    expect((await atrium.call('PATCH', `${project}/services/${kv.id}`, { suspended: true })).status).toBe(
      202,
    );
    await until(
      'kv-store suspended',
      async () => (await atrium.call('GET', `${project}/services/${kv.id}`)).body.status,
      (s) => s === 'suspended',
    );
    const asleep = await fetch(`${url}keys/colour`, { headers: auth });
    expect(asleep.status).toBe(503);
    expect(asleep.headers.get('retry-after')).toBeTruthy();
    expect((await atrium.call('PATCH', `${project}/services/${kv.id}`, { suspended: false })).status).toBe(
      202,
    );
    const resumed = await until(
      'kv-store resumed',
      async () => (await atrium.call('GET', `${project}/services/${kv.id}`)).body,
      (s) => s.status === 'running' && s.endpoints.length > 0,
    );
    expect(resumed.endpoints[0].url).toBe(url);
    expect(await (await fetch(`${url}keys/colour`, { headers: auth })).json()).toMatchObject({
      value: 'teal',
    });

    const putCall = await callFunction(kv.id, 'put', { key: 'size', value: 42 }, true);
    expect(putCall.status).toBe(200);
    expect(putCall.body).toMatchObject({ status: 'succeeded', result: { key: 'size', value: 42 } });
    const getCall = await callFunction(kv.id, 'get', { key: 'size' }, false);
    expect(getCall.status).toBe(202);
    expect(getCall.headers.get('location')).toBe(`${project}/services/${kv.id}/calls/${getCall.body.id}`);
    expect(await pollCall(kv.id, getCall.body.id)).toMatchObject({
      status: 'succeeded',
      result: { key: 'size', value: 42 },
    });
  });

  it('round-trips WebSocket messages through the gateway, with the token and not without', async () => {
    const echo = await launched('echo');
    const ws = `${(echo.endpoints[0].url as string).replace(/^http/, 'ws')}ws`;
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
    const started = await startOutsideKvStore(scratch);
    outside = started.child;
    const registered = await atrium.call('POST', `${project}/backends`, {
      name: 'outside-kv',
      app: 'kv-store',
      version: '1.0.0',
      locations: [{ name: 'http', url: started.url }],
      health_path: '/healthz',
      scope: { name: 'db', port: 'http' },
    });
    expect(registered.status).toBe(201);
    expect(registered.body).toMatchObject({ origin: 'external', status: 'running', message: null });
    const id = registered.body.id as string;
    outsideKv = id;
    const heartbeat = await atrium.call('GET', `${project}/services/${id}/heartbeat`);
    expect(heartbeat.status).toBe(200);
    expect(heartbeat.body.status).toBe('up');
    const put = await callFunction(
      id,
      'records.put',
      { table: 'people', id: 'ada', value: { born: 1815 } },
      true,
    );
    expect(put.status).toBe(200);
    const get = await callFunction(id, 'records.get', { table: 'people', id: 'ada' }, false);
    expect(get.status).toBe(202);
    expect(await pollCall(id, get.body.id)).toMatchObject({
      status: 'succeeded',
      result: { table: 'people', id: 'ada', value: { born: 1815 } },
    });
    // The same data, seen by the program itself: Atrium called it, nothing was copied.
    const own = await fetch(`${started.url}/keys/people%2Fada`);
    expect(await own.json()).toMatchObject({ value: { born: 1815 } });
  });

  it('registers the demo plugin driver and calls its functions on both kv-stores', async () => {
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
    const registration = JSON.parse(readFileSync(join(demoDriversPath, 'kv-stats', 'driver.json'), 'utf8'));
    const created = await atrium.call('POST', '/api/v1/drivers', { ...registration, url });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'kv-stats', kind: 'plugin', health: { status: 'up' } });

    const offered = await atrium.call('GET', `${project}/services/${outsideKv}/functions`);
    expect(offered.body.items.map((f: { name: string }) => f.name)).toEqual(
      expect.arrayContaining(['records.get', 'keys.count', 'keys.export']),
    );
    const counted = await callFunction(outsideKv, 'keys.count', {}, true);
    expect(counted.status).toBe(200);
    expect(counted.body.result).toEqual({ prefix: '', count: 1 });
    const exported = await callFunction(launchedKv, 'keys.export', { prefix: 'size' }, false);
    expect(exported.status).toBe(202);
    const done = await pollCall(launchedKv, exported.body.id);
    expect(done.status).toBe('succeeded');
    expect(JSON.stringify(done.result)).toContain('42');
  });
});
