// Plugin drivers, end to end: the demo plugin kv-stats (src/demo/drivers/kv-stats) runs as a real
// process on loopback, an administrator registers it, and a real kv-store service then offers its
// functions, called synchronously and queued (run by a real worker) — until the plugin stops, and
// once it is removed.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Worker } from '../../src/backends/scheduler/worker.js';
import { createLogger } from '../../src/log.js';
import { repoRoot } from '../../src/paths.js';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { versionMatches } from '../../src/services/drivers.js';
import { echo, functionCalls, launch, serviceTestConfig } from '../fixtures/services.js';

type Login = Awaited<ReturnType<TestApp['login']>>;
type Driver = {
  name: string;
  kind: string;
  url: string | null;
  health: { status: string; detail: string | null } | null;
};

const pluginDir = join(repoRoot, 'src', 'demo', 'drivers', 'kv-stats');
const registration = JSON.parse(readFileSync(join(pluginDir, 'driver.json'), 'utf8')) as Record<
  string,
  unknown
>;
const kvOwn = ['put', 'get', 'delete', 'keys'];
const dbScope = ['tables', 'records.get', 'records.put', 'records.delete', 'records.query'];

/** The demo plugin as a child process on a loopback port (a free one by default); resolves once it listens. */
async function startPlugin(port = 0): Promise<{ proc: ChildProcess; url: string; stop(): Promise<void> }> {
  const proc = spawn(process.execPath, [join(pluginDir, 'kv-stats.mjs')], {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`kv-stats did not start: ${out}`)), 15_000);
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const match = /listening on (http:\/\/\S+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve(match[1] as string);
      }
    });
    void exited.then(() => reject(new Error(`kv-stats exited: ${out}`)));
  });
  return {
    proc,
    url,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

describe('versionMatches', () => {
  it('matches a semver range, reading a shorter version as its first x.y.z', () => {
    expect(versionMatches('1.0.0', '>=1.0.0')).toBe(true);
    expect(versionMatches('0.9.1', '>=1.0.0')).toBe(false);
    expect(versionMatches('7.2', '>=7')).toBe(true);
    expect(versionMatches('7.2.4', '~7.2')).toBe(true);
    expect(versionMatches('1.4.2', '1.4.2')).toBe(true);
    expect(versionMatches('1.4.3', '1.4.2')).toBe(false);
    expect(versionMatches('latest', '*')).toBe(false);
  });
});

describe.each(testEngines())('plugin drivers (%s)', (engine) => {
  let t: TestApp;
  let worker: Worker;
  let root: Login; // administrator
  let bob: Login; // owner of lab
  let plugin: Awaited<ReturnType<typeof startPlugin>>;
  let kv: string;
  let echoId: string;
  const lab = '/api/v1/projects/lab/services';
  // Registered for kv-store too, never running: its `put` must not hide the store's own, and its
  // `keys.count` comes after kv-stats' (plugins in name order).
  const shadow = {
    name: 'zz-shadow',
    version: '0.1.0',
    app: { name: 'kv-store', versions: '^1.0.0' },
    url: 'http://127.0.0.1:9/shadow',
    functions: [{ name: 'put' }, { name: 'keys.count' }, { name: 'shadow.only', idempotent: true }],
  };

  beforeAll(async () => {
    t = await createTestApp(engine, {
      config: {
        ...serviceTestConfig,
        functions: { pluginHealthIntervalMs: 200, pluginHealthTimeoutMs: 1000 },
      },
    });
    [root, bob] = await Promise.all([t.login('root', { admin: true }), t.login('bob')]);
    await t.createProject(bob, 'lab');
    await t.http
      .patch('/api/v1/projects/lab/quota')
      .set('Authorization', root.auth)
      .send({ limits: { services: 20, cpu: '4', memory: '4Gi', concurrent_jobs: 100 } })
      .expect(200);
    worker = new Worker(
      { scheduler: t.services.scheduler, notifier: t.services.notifier, log: createLogger('silent') },
      { concurrency: 4, pollMs: 50 },
    );
    worker.start();
    plugin = await startPlugin();
    kv = (await launch(t, bob.auth, 'lab', { catalog_id: 'demo', package: 'kv-store' })).serviceId;
    echoId = (await launch(t, bob.auth, 'lab', echo)).serviceId;
  });
  afterAll(async () => {
    await worker.stop(2000);
    await plugin.stop();
    await t.close();
  });

  const register = (body: unknown, auth = root.auth) =>
    t.http
      .post('/api/v1/drivers')
      .set('Authorization', auth)
      .send(body as object);
  const getDriver = (name: string, auth = bob.auth) =>
    t.http.get(`/api/v1/drivers/${name}`).set('Authorization', auth);
  const functionsOf = async (serviceId: string) =>
    (
      (await t.http.get(`${lab}/${serviceId}/functions`).set('Authorization', bob.auth).expect(200)).body
        .items as { name: string; driver: string }[]
    ).map((f) => `${f.name}:${f.driver}`);
  const calls = functionCalls(
    () => t,
    lab,
    () => bob.auth,
  );
  const callFn = (serviceId: string, name: string, input: unknown, sync = false) =>
    calls.call(serviceId, name, input, { sync });
  const waitCall = calls.wait;
  /** Polls a driver until its health is `status`, for at most 20 s. */
  const waitHealth = async (name: string, status: string): Promise<Driver> => {
    let driver: Driver | null = null;
    for (let i = 0; i < 200 && driver?.health?.status !== status; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 100));
      driver = (await getDriver(name).expect(200)).body as Driver;
    }
    return driver as Driver;
  };

  describe('createDriver', () => {
    it('registers a plugin for administrators (201 and Location), its health checked at once', async () => {
      expectProblem(await register({ ...registration, url: plugin.url }, bob.auth), 403, 'forbidden');
      expectProblem(
        await t.http.post('/api/v1/drivers').send({ ...registration, url: plugin.url }),
        401,
        'unauthorized',
      );
      const res = await register({ ...registration, url: plugin.url }).expect(201);
      expect(res.headers.location).toBe('/api/v1/drivers/kv-stats');
      expect(res.body).toMatchObject({
        name: 'kv-stats',
        version: '1.0.0',
        kind: 'plugin',
        scope: 'kv',
        functions: ['keys.count', 'keys.export'],
        app: { name: 'kv-store', versions: '>=1.0.0' },
        url: plugin.url,
        health: { status: 'up', detail: null },
      });
      expect(res.body.definitions[0]).toMatchObject({ name: 'keys.count', idempotent: true, cache_ttl_s: 0 });
    });

    it('registers a plugin that does not answer all the same, down with why', async () => {
      const res = await register(shadow).expect(201);
      expect(res.body.health).toMatchObject({ status: 'down' });
      expect(res.body.health.detail).toMatch(/could not be reached|did not answer/);
      expect(res.body.definitions[0]).toEqual({
        name: 'put',
        description: '',
        input: { type: 'object' },
        output: null,
        timeout_ms: 30_000,
        idempotent: false,
        cache_ttl_s: 0,
      });
    });

    it('refuses a name that is taken, a native driver’s included (409)', async () => {
      expectProblem(await register({ ...registration, url: plugin.url }), 409, 'conflict');
      expectProblem(await register({ ...shadow, name: 'db' }), 409, 'conflict');
      expectProblem(await register({ ...shadow, name: 'http-json' }), 409, 'conflict');
    });

    it('refuses a version, version rule, URL or schema it cannot use (422 naming each field)', async () => {
      const res = await register({
        ...shadow,
        name: 'broken',
        version: 'one',
        app: { name: 'kv-store', versions: 'newest please' },
        url: 'ftp://127.0.0.1/x',
        functions: [
          { name: 'a', input: { type: 'no-such-type' } },
          { name: 'a' },
          { name: 'b', cache_ttl_s: 60 },
        ],
      });
      expectProblem(res, 422, 'unprocessable');
      expect((res.body.errors as { pointer: string }[]).map((e) => e.pointer).sort()).toEqual([
        '/app/versions',
        '/functions/0/input',
        '/functions/1/name',
        '/functions/2/cache_ttl_s',
        '/url',
        '/version',
      ]);
      expectProblem(
        await register({ ...shadow, name: 'creds', url: 'http://user:secret@127.0.0.1:9' }),
        422,
        'unprocessable',
      );
      expectProblem(await getDriver('broken'), 404, 'not-found');
      expectProblem(await register({ ...shadow, name: 'extra', port: 1 }), 400, 'validation');
    });
  });

  describe('listDrivers', () => {
    it('lists native drivers and plugins by name, a plugin’s URL to administrators only', async () => {
      const mine = await t.http.get('/api/v1/drivers').set('Authorization', bob.auth).expect(200);
      expect((mine.body.items as Driver[]).map((d) => `${d.name}:${d.kind}`)).toEqual([
        'ai:native',
        'db:native',
        'http-json:native',
        'kv-stats:plugin',
        'zz-shadow:plugin',
      ]);
      expect((mine.body.items as Driver[]).every((d) => d.url === null)).toBe(true);
      const admins = await t.http.get('/api/v1/drivers?limit=2').set('Authorization', root.auth).expect(200);
      expect(admins.body.items).toHaveLength(2);
      const rest = await t.http
        .get(`/api/v1/drivers?cursor=${encodeURIComponent(admins.body.next_cursor as string)}`)
        .set('Authorization', root.auth)
        .expect(200);
      expect(rest.body.items.find((d: Driver) => d.name === 'kv-stats')).toMatchObject({
        url: plugin.url,
        health: { status: 'up' },
      });
    });
  });

  describe('getDriver', () => {
    it('gets a plugin with its functions and health, and a native driver with its scope’s', async () => {
      expect((await getDriver('kv-stats').expect(200)).body).toMatchObject({
        kind: 'plugin',
        url: null,
        health: { status: 'up', detail: null },
      });
      const db = (await getDriver('db').expect(200)).body;
      expect(db).toMatchObject({ kind: 'native', scope: 'db', app: null, health: null, functions: dbScope });
      expect(db.definitions[1]).toMatchObject({ name: 'records.get', idempotent: true });
      expectProblem(await getDriver('nothing'), 404, 'not-found');
      expectProblem(await t.http.get('/api/v1/drivers/kv-stats'), 401, 'unauthorized');
    });
  });

  describe('listServiceFunctions', () => {
    it('offers a kv-store its package’s functions, then those of the plugins for its app', async () => {
      expect(await functionsOf(kv)).toEqual([
        ...kvOwn.map((f) => `${f}:http-json`),
        ...dbScope.map((f) => `${f}:db`),
        'keys.count:kv-stats',
        'keys.export:kv-stats',
        'shadow.only:zz-shadow',
      ]);
      const fn = await t.http
        .get(`${lab}/${kv}/functions/keys.export`)
        .set('Authorization', bob.auth)
        .expect(200);
      expect(fn.body).toMatchObject({ driver: 'kv-stats', idempotent: true, timeout_ms: 30_000 });
    });

    it('offers them to a package that names kv-store as the app it runs, where they work', async () => {
      const version = await t.http
        .get('/api/v1/catalogs/test/packages/kv-appliance/versions/1.0.0')
        .expect(200);
      expect(version.body.app).toEqual({ name: 'kv-store', version: '1.3.0' });
      const appliance = (await launch(t, bob.auth, 'lab', { catalog_id: 'test', package: 'kv-appliance' }))
        .serviceId;
      expect(await functionsOf(appliance)).toEqual([
        'keys.count:kv-stats',
        'keys.export:kv-stats',
        'put:zz-shadow',
        'shadow.only:zz-shadow',
      ]);
      expect((await callFn(appliance, 'keys.count', {}, true).expect(200)).body.result).toEqual({
        prefix: '',
        count: 0,
      });
    });

    it('offers a service of another app none of them', async () => {
      expect((await functionsOf(echoId)).filter((f) => /kv-stats|zz-shadow/.test(f))).toEqual([]);
    });
  });

  describe('callServiceFunction', () => {
    it('calls a plugin’s function synchronously and queued, the plugin using the service’s own API', async () => {
      await callFn(kv, 'put', { key: 'fruit/apple', value: { colour: 'red' } }, true).expect(200);
      await callFn(kv, 'put', { key: 'fruit/pear', value: { colour: 'green' } }, true).expect(200);
      await callFn(kv, 'put', { key: 'veg/leek', value: 1 }, true).expect(200);
      const count = await callFn(kv, 'keys.count', { prefix: 'fruit/' }, true).expect(200);
      expect(count.body).toMatchObject({
        function: 'keys.count',
        status: 'succeeded',
        result: { prefix: 'fruit/', count: 2 },
      });
      const queued = await callFn(kv, 'keys.export', { prefix: 'fruit/' }).expect(202);
      expect(await waitCall(kv, queued.body.id)).toMatchObject({
        status: 'succeeded',
        result: {
          prefix: 'fruit/',
          count: 2,
          entries: { 'fruit/apple': { colour: 'red' }, 'fruit/pear': { colour: 'green' } },
        },
      });
      expectProblem(await callFn(kv, 'keys.count', { prefix: 1 }, true), 400, 'validation');
    });

    it('answers 503 with Retry-After once the plugin has stopped and its health went down', async () => {
      await plugin.stop();
      const down = await waitHealth('kv-stats', 'down');
      expect(down.health?.detail).toMatch(/could not be reached|did not answer/);
      const res = await callFn(kv, 'keys.count', {}, true);
      expectProblem(res, 503, 'unavailable');
      expect(res.headers['retry-after']).toBeDefined();
      expect(res.body.detail).toMatch(/kv-stats is down/);
      // The service's own functions do not depend on the plugin.
      await callFn(kv, 'get', { key: 'veg/leek' }, true).expect(200);
    });

    it('uses the plugin again once it is back and a health check saw it up', async () => {
      plugin = await startPlugin(Number(new URL(plugin.url).port));
      expect((await waitHealth('kv-stats', 'up')).health).toEqual(expect.objectContaining({ detail: null }));
      expect((await callFn(kv, 'keys.count', { prefix: 'veg/' }, true).expect(200)).body.result).toEqual({
        prefix: 'veg/',
        count: 1,
      });
    });
  });

  describe('deleteDriver', () => {
    it('removes a plugin for administrators: its functions leave the services at once', async () => {
      expectProblem(
        await t.http.delete('/api/v1/drivers/kv-stats').set('Authorization', bob.auth),
        403,
        'forbidden',
      );
      await t.http.delete('/api/v1/drivers/kv-stats').set('Authorization', root.auth).expect(204);
      expectProblem(await getDriver('kv-stats'), 404, 'not-found');
      expect(await functionsOf(kv)).toEqual(
        expect.arrayContaining(['keys.count:zz-shadow', 'shadow.only:zz-shadow']),
      );
      expect((await functionsOf(kv)).some((f) => f.startsWith('keys.export'))).toBe(false);
      expectProblem(await callFn(kv, 'keys.export', {}, true), 404, 'not-found');
      expectProblem(
        await t.http.delete('/api/v1/drivers/kv-stats').set('Authorization', root.auth),
        404,
        'not-found',
      );
    });

    it('keeps native drivers (409)', async () => {
      expectProblem(
        await t.http.delete('/api/v1/drivers/http-json').set('Authorization', root.auth),
        409,
        'conflict',
      );
      await getDriver('http-json').expect(200);
    });
  });
});

// Between two health checks (an hour apart here), a plugin that stopped is only found out by a call:
// that call answers 502 at once and marks the plugin down, so the next one is refused with 503.
describe.each(testEngines())('a plugin that stops between health checks (%s)', (engine) => {
  let t: TestApp;
  let root: Login;
  let plugin: Awaited<ReturnType<typeof startPlugin>>;
  let kv: string;
  const lab = '/api/v1/projects/lab/services';

  beforeAll(async () => {
    t = await createTestApp(engine, {
      config: { ...serviceTestConfig, functions: { pluginHealthIntervalMs: 3_600_000 } },
    });
    root = await t.login('root', { admin: true });
    await t.createProject(root, 'lab');
    plugin = await startPlugin();
    kv = (await launch(t, root.auth, 'lab', { catalog_id: 'demo', package: 'kv-store' })).serviceId;
    await t.http
      .post('/api/v1/drivers')
      .set('Authorization', root.auth)
      .send({ ...registration, url: plugin.url })
      .expect(201);
  });
  afterAll(async () => {
    await plugin.stop();
    await t.close();
  });

  const count = () =>
    t.http
      .post(`${lab}/${kv}/functions/keys.count/calls?sync=true`)
      .set('Authorization', root.auth)
      .send({ input: {} });

  it('answers 502 to the call that finds it gone, then 503 while it stays down', async () => {
    expect((await count().expect(200)).body.result).toEqual({ prefix: '', count: 0 });
    await plugin.stop();
    const gone = await count();
    expectProblem(gone, 502, 'bad-gateway');
    expect(gone.body.detail).toMatch(/plugin kv-stats could not be reached/);
    const driver = await t.http.get('/api/v1/drivers/kv-stats').set('Authorization', root.auth).expect(200);
    expect(driver.body.health).toMatchObject({ status: 'down' });
    expectProblem(await count(), 503, 'unavailable');
  });
});
