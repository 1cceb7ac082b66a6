// Service functions: the demo kv-store's and echo's functions, called synchronously and queued (as
// scheduler jobs run by a real worker), against real service processes on the local runtime.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Worker } from '../../src/backends/scheduler/worker.js';
import { createLogger } from '../../src/log.js';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import {
  echo,
  functionCalls,
  launch,
  serviceTestConfig,
  waitForService,
  type CallView as Call,
} from '../fixtures/services.js';

type Login = Awaited<ReturnType<TestApp['login']>>;
const kvOwn = ['put', 'get', 'delete', 'keys'];
const dbScope = ['tables', 'records.get', 'records.put', 'records.delete', 'records.query'];

describe.each(testEngines())('service functions (%s)', (engine) => {
  let t: TestApp;
  let worker: Worker;
  let alice: Login; // owner of lab
  let bob: Login; // member of lab
  let oscar: Login; // outsider
  let kv: string;
  const lab = '/api/v1/projects/lab/services';

  beforeAll(async () => {
    t = await createTestApp(engine, { config: { ...serviceTestConfig, functions: { concurrency: 2 } } });
    [alice, bob, oscar] = await Promise.all([t.login('alice'), t.login('bob'), t.login('oscar')]);
    await t.createProject(alice, 'lab', { member: [bob] });
    await t.http
      .patch('/api/v1/projects/lab/quota')
      .set('Authorization', (await t.login('root', { admin: true })).auth)
      .send({ limits: { services: 20, cpu: '4', memory: '4Gi', concurrent_jobs: 100 } })
      .expect(200);
    worker = new Worker(
      { scheduler: t.services.scheduler, notifier: t.services.notifier, log: createLogger('silent') },
      { concurrency: 8, pollMs: 50 },
    );
    worker.start();
    kv = (await launch(t, bob.auth, 'lab', { catalog_id: 'demo', package: 'kv-store' })).serviceId;
  });
  afterAll(async () => {
    await worker.stop(2000);
    await t.close();
  });

  const { call: callFn, wait: waitCall } = functionCalls(
    () => t,
    lab,
    () => bob.auth,
  );

  it('lists the functions the package declares, and one with its schemas', async () => {
    const list = await t.http.get(`${lab}/${kv}/functions`).set('Authorization', bob.auth).expect(200);
    expect(list.body.items.map((f: { name: string }) => f.name)).toEqual([...kvOwn, ...dbScope]);
    expect(list.body.next_cursor).toBeNull();
    const put = await t.http.get(`${lab}/${kv}/functions/put`).set('Authorization', bob.auth).expect(200);
    expect(put.body).toMatchObject({
      name: 'put',
      service_id: kv,
      idempotent: true,
      driver: 'http-json',
      cache_ttl_s: 0,
    });
    expect(put.body.input.required).toEqual(['key', 'value']);
    expectProblem(
      await t.http.get(`${lab}/${kv}/functions/nope`).set('Authorization', bob.auth),
      404,
      'not-found',
    );
    expectProblem(
      await t.http.get(`${lab}/${kv}/functions`).set('Authorization', oscar.auth),
      404,
      'not-found',
    );
    const version = await t.http.get('/api/v1/catalogs/demo/packages/kv-store/versions/1.0.0').expect(200);
    expect(version.body.functions.map((f: { name: string }) => f.name)).toEqual([...kvOwn, ...dbScope]);
    expect(version.body.functions[0].http).toEqual({
      port: 'http',
      method: 'PUT',
      path: '/keys/{key}',
      body: 'value',
    });
    const drivers = await t.http.get('/api/v1/drivers').set('Authorization', bob.auth).expect(200);
    expect(drivers.body.items).toEqual([
      expect.objectContaining({
        name: 'ai',
        kind: 'native',
        scope: 'ai',
        functions: ['serve', 'predict', 'usage'],
      }),
      expect.objectContaining({ name: 'db', kind: 'native', scope: 'db', functions: dbScope }),
      expect.objectContaining({ name: 'http-json', kind: 'native', scope: null, functions: [] }),
    ]);
  });

  it('puts synchronously (200 with the result) and gets asynchronously (202, then the call to its result)', async () => {
    const put = await callFn(kv, 'put', { key: 'colour', value: { name: 'teal' } }, { sync: true }).expect(
      200,
    );
    expect(put.body).toMatchObject({
      function: 'put',
      status: 'succeeded',
      sync: true,
      result: { key: 'colour', value: { name: 'teal' } },
    });
    const queued = await callFn(kv, 'get', { key: 'colour' }).expect(202);
    expect(queued.headers.location).toBe(`${lab}/${kv}/calls/${queued.body.id}`);
    expect(['queued', 'running', 'succeeded']).toContain(queued.body.status);
    const done = await waitCall(kv, queued.body.id);
    expect(done).toMatchObject({
      status: 'succeeded',
      result: { key: 'colour', value: { name: 'teal' } },
      error: null,
    });
    const list = await t.http.get(`${lab}/${kv}/calls`).set('Authorization', bob.auth).expect(200);
    expect(list.body.items.map((c: Call) => c.id)).toEqual(
      expect.arrayContaining([put.body.id, queued.body.id]),
    );
  });

  it('checks the input against the function’s schema (400 naming each field)', async () => {
    const res = await callFn(kv, 'put', { key: '', extra: 1 }, { sync: true });
    expectProblem(res, 400, 'validation');
    const pointers = (res.body.errors as { pointer: string }[]).map((e) => e.pointer);
    expect(pointers).toEqual(expect.arrayContaining(['/input', '/input/key', '/input/extra']));
  });

  it('reports what the service refused: 422 with its answer, and the call recorded failed', async () => {
    const res = await callFn(kv, 'get', { key: 'missing' }, { sync: true });
    expectProblem(res, 422, 'unprocessable');
    expect(res.body).toMatchObject({ service_status: 404, service_answer: { error: 'no key missing' } });
    const queued = await callFn(kv, 'get', { key: 'missing' }).expect(202);
    const failed = await waitCall(kv, queued.body.id);
    expect(failed.status).toBe('failed');
    expect(failed.error).toMatchObject({
      type: 'https://atrium.dev/problems/unprocessable',
      service_status: 404,
    });
  });

  it('runs 100 concurrent queued calls, each exactly once', async () => {
    const calls = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        callFn(kv, 'put', { key: `k${String(i).padStart(3, '0')}`, value: i }),
      ),
    );
    expect(calls.map((c) => c.status)).toEqual(Array(100).fill(202));
    const ended = await Promise.all(calls.map((c) => waitCall(kv, c.body.id as string)));
    expect(ended.map((c) => c.status)).toEqual(Array(100).fill('succeeded'));
    const jobs = await t.database
      .knex('jobs')
      .whereIn(
        'id',
        (
          await t.database
            .knex('service_calls')
            .whereIn(
              'id',
              calls.map((c) => c.body.id),
            )
            .select('job_id')
        ).map((r) => r.job_id),
      )
      .select('status', 'attempts');
    expect(jobs).toHaveLength(100);
    expect(jobs.every((j) => j.status === 'finished' && Number(j.attempts) === 1)).toBe(true);
    const keys = await callFn(kv, 'keys', { prefix: 'k' }, { sync: true }).expect(200);
    expect((keys.body.result as { keys: string[] }).keys).toHaveLength(100);
  });

  it('offers the db scope’s standard functions on the kv-store, performed by the db driver', async () => {
    const fn = await t.http
      .get(`${lab}/${kv}/functions/records.put`)
      .set('Authorization', bob.auth)
      .expect(200);
    expect(fn.body).toMatchObject({ driver: 'db', idempotent: true });
    const put = await callFn(
      kv,
      'records.put',
      { table: 'people', id: 'ada', value: { born: 1815 } },
      { sync: true },
    ).expect(200);
    expect(put.body.result).toEqual({ table: 'people', id: 'ada', value: { born: 1815 } });
    await callFn(
      kv,
      'records.put',
      { table: 'people', id: 'alan', value: { born: 1912 } },
      { sync: true },
    ).expect(200);
    await callFn(
      kv,
      'records.put',
      { table: 'people', id: 'grace', value: { born: 1906 } },
      { sync: true },
    ).expect(200);
    const queued = await callFn(kv, 'records.get', { table: 'people', id: 'alan' }).expect(202);
    expect(await waitCall(kv, queued.body.id)).toMatchObject({
      status: 'succeeded',
      result: { table: 'people', id: 'alan', value: { born: 1912 } },
    });
    const found = await callFn(kv, 'records.query', { table: 'people', prefix: 'a' }, { sync: true }).expect(
      200,
    );
    expect(found.body.result).toEqual({
      records: [
        { id: 'ada', value: { born: 1815 } },
        { id: 'alan', value: { born: 1912 } },
      ],
    });
    const tables = await callFn(kv, 'tables', {}, { sync: true }).expect(200);
    expect((tables.body.result as { tables: { name: string; records: number }[] }).tables).toEqual(
      expect.arrayContaining([{ name: 'people', records: 3 }]),
    );
    const removed = await callFn(kv, 'records.delete', { table: 'people', id: 'ada' }, { sync: true }).expect(
      200,
    );
    expect(removed.body.result).toEqual({ table: 'people', id: 'ada', deleted: true });
    const missing = await callFn(kv, 'records.get', { table: 'people', id: 'ada' }, { sync: true });
    expectProblem(missing, 422, 'unprocessable');
    expect(missing.body.service_status).toBe(404);
    expectProblem(
      await callFn(kv, 'records.put', { table: '../x', id: 'a', value: 1 }, { sync: true }),
      400,
      'validation',
    );
    expectProblem(
      await callFn(kv, 'records.get', { table: '..', id: 'a' }, { sync: true }),
      400,
      'validation',
    );
    // A path field of a declared function may not be a dot segment: the URL would reach another path.
    const dots = await callFn(kv, 'get', { key: '..' }, { sync: true });
    expectProblem(dots, 422, 'unprocessable');
    expect(dots.body.detail).toMatch(/key may not be/);
  });

  it('serves a model file of the project on the model-server (ai scope) and predicts with it', async () => {
    const model = {
      format: 'atrium.ml/v1',
      kind: 'logistic-regression',
      target: 'passed',
      features: ['hours_studied', 'hours_slept'],
      standardization: { mean: [5, 7], std: [2, 1.5] },
      intercept: 0.2,
      weights: [3, 1.2],
    };
    const uploaded = await t.http
      .post('/api/v1/projects/lab/files')
      .set('Authorization', bob.auth)
      .attach('file', Buffer.from(JSON.stringify(model)), {
        filename: 'model.json',
        contentType: 'application/json',
      })
      .expect(201);
    const server = (await launch(t, bob.auth, 'lab', { catalog_id: 'demo', package: 'model-server' }))
      .serviceId;
    await waitForService(t, bob.auth, 'lab', server, (s) => s.status === 'running');
    const served = await callFn(
      server,
      'serve',
      { name: 'students', model_file: uploaded.body.id },
      { sync: true },
    ).expect(200);
    expect(served.body.result).toEqual({
      name: 'students',
      kind: 'logistic-regression',
      features: ['hours_studied', 'hours_slept'],
      target: 'passed',
    });
    const instances = [
      [6, 8],
      [1, 4],
    ];
    const queued = await callFn(server, 'predict', { model: 'students', instances }).expect(202);
    const done = await waitCall(server, queued.body.id);
    expect(done.status).toBe('succeeded');
    const expected = instances.map(([a, b]) => {
      const z = 0.2 + (((a as number) - 5) / 2) * 3 + (((b as number) - 7) / 1.5) * 1.2;
      return 1 / (1 + Math.exp(-z));
    });
    const predictions = (done.result as { predictions: { probability: number; label: number }[] })
      .predictions;
    expect(predictions.map((p) => p.probability)).toEqual(expected.map((p) => expect.closeTo(p, 9)));
    expect(predictions.map((p) => p.label)).toEqual(expected.map((p) => (p >= 0.5 ? 1 : 0)));
    const usage = await callFn(server, 'usage', {}, { sync: true }).expect(200);
    expect(usage.body.result).toMatchObject({ predictions: 2 });
    const none = await callFn(server, 'serve', { name: 'x', model_file: 'file_nope' }, { sync: true });
    expectProblem(none, 422, 'unprocessable');
  });

  describe('on the echo', () => {
    let echoId: string;
    let slow: string;

    beforeAll(async () => {
      echoId = (await launch(t, bob.auth, 'lab', echo)).serviceId;
      // Slow enough that the fifth call cannot have started while the test looks (two rounds of
      // two calls stand before it).
      slow = (await launch(t, bob.auth, 'lab', { ...echo, options: { delay_ms: 4000 } })).serviceId;
    });

    it('answers a cacheable function from its cache for the same input', async () => {
      const first = await callFn(echoId, 'echo', { message: 'once' }, { sync: true }).expect(200);
      expect(first.headers['cache-status']).toBe('atrium; fwd=miss');
      expect(first.body.result).toMatchObject({ method: 'POST', path: '/call', body: '{"message":"once"}' });
      const again = await callFn(echoId, 'echo', { message: 'once' }, { sync: true }).expect(200);
      expect(again.headers['cache-status']).toBe('atrium; hit');
      expect(again.body.id).toBe(first.body.id);
      const other = await callFn(echoId, 'echo', { message: 'twice' }, { sync: true }).expect(200);
      expect(other.headers['cache-status']).toBe('atrium; fwd=miss');
      expect(other.body.id).not.toBe(first.body.id);
    });

    it('queues calls past the service’s concurrency, shows their place, and cancels a queued one', async () => {
      const made = [];
      for (let i = 0; i < 5; i++)
        made.push((await callFn(slow, 'echo', { message: `q${i}` }).expect(202)).body as Call);
      // A limit of two: at most two run at once; the others wait their turn.
      let queued: Call[] = [];
      for (let i = 0; i < 50; i++) {
        const list = await t.http
          .get(`${lab}/${slow}/calls?limit=10`)
          .set('Authorization', bob.auth)
          .expect(200);
        queued = (list.body.items as Call[]).filter((c) => c.status === 'queued');
        if ((list.body.items as Call[]).some((c) => c.status === 'running')) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const last = made[4] as Call;
      const view = await t.http
        .get(`${lab}/${slow}/calls/${last.id}`)
        .set('Authorization', bob.auth)
        .expect(200);
      expect(view.body.status).toBe('queued');
      expect(view.body.position).toBeGreaterThanOrEqual(1);
      expect(queued.length).toBeGreaterThanOrEqual(2);
      const cancelled = await t.http
        .post(`${lab}/${slow}/calls/${last.id}/cancellation`)
        .set('Authorization', bob.auth)
        .expect(200);
      expect(cancelled.body).toMatchObject({ status: 'cancelled', position: null });
      expectProblem(
        await t.http.post(`${lab}/${slow}/calls/${last.id}/cancellation`).set('Authorization', bob.auth),
        409,
        'conflict',
      );
      const rest = await Promise.all(made.slice(0, 4).map((c) => waitCall(slow, c.id)));
      expect(rest.map((c) => c.status)).toEqual(['succeeded', 'succeeded', 'succeeded', 'succeeded']);
    });

    it('answers 504 past the function’s timeout, and 503 while the service is suspended', async () => {
      const sleepy = (await launch(t, bob.auth, 'lab', { ...echo, options: { delay_ms: 8000 } })).serviceId;
      expectProblem(
        await callFn(sleepy, 'echo', { message: 'late' }, { sync: true }),
        504,
        'gateway-timeout',
      );
      await t.http
        .patch(`${lab}/${sleepy}`)
        .set('Authorization', bob.auth)
        .send({ suspended: true })
        .expect(202);
      await waitForService(t, bob.auth, 'lab', sleepy, (s) => s.status === 'suspended');
      const res = await callFn(sleepy, 'echo', { message: 'asleep' }, { sync: true });
      expectProblem(res, 503, 'unavailable');
      expect(res.headers['retry-after']).toBeDefined();
    });

    it('pings a service through its driver (heartbeat)', async () => {
      const beat = await t.http.get(`${lab}/${echoId}/heartbeat`).set('Authorization', bob.auth).expect(200);
      expect(beat.body).toMatchObject({ status: 'up', http_status: 200 });
      expectProblem(
        await t.http.get(`${lab}/${echoId}/heartbeat`).set('Authorization', oscar.auth),
        404,
        'not-found',
      );
    });

    it('is hidden from outsiders and refused to read-only tokens', async () => {
      expectProblem(await callFn(echoId, 'echo', {}, { sync: true, as: oscar.auth }), 404, 'not-found');
      const reader = await t.login('bob', { scopes: ['read'] });
      expectProblem(
        await callFn(echoId, 'echo', {}, { sync: true, as: reader.auth }),
        403,
        'insufficient-scope',
      );
    });
  });
});
