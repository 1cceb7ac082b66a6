// Benchmark definitions (public), plans saved in projects (validated against the QPIs and metrics),
// and what can be asked of runs before they have results.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

describe.each(testEngines())('benchmarks (%s)', (engine) => {
  let t: TestApp;
  let owner: Login;
  let viewer: Login;
  const plans = '/api/v1/projects/perf/benchmark-plans';

  beforeAll(async () => {
    t = await createTestApp(engine);
    [owner, viewer] = await Promise.all([t.login('bea'), t.login('ben')]);
    await t.createProject(owner, 'perf', { viewer: [viewer] });
  });
  afterAll(() => t.close());

  describe('listBenchmarkMetrics', () => {
    it('lists the built-in metrics of every category, to anyone', async () => {
      const res = await t.http.get('/api/v1/benchmark-metrics?limit=100').expect(200);
      const categories = new Set(res.body.items.map((m: { category: string }) => m.category));
      expect(categories).toEqual(new Set(['compute', 'memory', 'storage', 'network']));
      const latency = res.body.items.find((m: { name: string }) => m.name === 'memory_random_latency');
      expect(latency).toMatchObject({ unit: 'ns', better: 'lower' });
      await t.http.get('/api/v1/benchmark-metrics/sha256_throughput').expect(200);
      expectProblem(await t.http.get('/api/v1/benchmark-metrics/warp_speed'), 404, 'not-found');
    });
  });

  describe('listBenchmarkQpis', () => {
    it('lists the QPIs with sections, baselines and their reference run', async () => {
      const res = await t.http.get('/api/v1/benchmark-qpis').expect(200);
      expect(res.body.items.map((q: { name: string }) => q.name).sort()).toEqual([
        'compute',
        'memory',
        'network',
        'storage',
      ]);
      const compute = await t.http.get('/api/v1/benchmark-qpis/compute').expect(200);
      expect(compute.body.baseline_score).toBe(2048);
      expect(compute.body.sections[0].metrics[0].baseline).toBeGreaterThan(0);
      expect(compute.body.reference_run).toMatchObject({ machine: expect.any(String) });
    });
  });

  describe('listBenchmarkPlans', () => {
    it('lists the built-in plans', async () => {
      const res = await t.http.get('/api/v1/benchmark-plans').expect(200);
      expect(res.body.items.map((p: { name: string }) => p.name)).toEqual(
        expect.arrayContaining(['quick', 'full']),
      );
      const quick = await t.http.get('/api/v1/benchmark-plans/quick').expect(200);
      expect(quick.body).toMatchObject({ builtin: true, id: null, runner: 'local' });
    });
  });

  describe('createBenchmarkPlan', () => {
    it('saves a plan of QPIs with parameter overrides (201), and edits it with If-Match', async () => {
      const res = await t.http
        .post(plans)
        .set('Authorization', owner.auth)
        .send({
          name: 'cpu-only',
          title: 'CPU only',
          qpis: ['compute'],
          samples: 3,
          parameters: { sha256_throughput: { duration_ms: 100 } },
        })
        .expect(201);
      expect(res.body).toMatchObject({
        builtin: false,
        name: 'cpu-only',
        formula: 'arithmetic',
        runner: 'local',
      });
      const changed = await t.http
        .patch(`${plans}/${res.body.id}`)
        .set('Authorization', owner.auth)
        .set('If-Match', res.headers.etag as string)
        .send({ formula: 'geometric' })
        .expect(200);
      expect(changed.body.formula).toBe('geometric');
      expectProblem(
        await t.http
          .patch(`${plans}/${res.body.id}`)
          .set('Authorization', owner.auth)
          .set('If-Match', res.headers.etag as string)
          .send({ samples: 2 }),
        412,
        'precondition-failed',
      );
      const listed = await t.http.get(plans).set('Authorization', viewer.auth).expect(200);
      expect(listed.body.items.map((p: { id: string }) => p.id)).toEqual([res.body.id]);
    });

    it('refuses unknown QPIs, overrides of metrics not in the plan and bad parameters (422)', async () => {
      const res = await t.http
        .post(plans)
        .set('Authorization', owner.auth)
        .send({
          name: 'broken',
          title: 'Broken',
          qpis: ['compute', 'teleport'],
          parameters: { network_tcp_latency: { duration_ms: 100 }, sha256_throughput: { duration_ms: -5 } },
        });
      expectProblem(res, 422, 'unprocessable');
      expect(res.body.detail).toMatch(/teleport/);
      expect(res.body.detail).toMatch(/network_tcp_latency/);
      expect(res.body.detail).toMatch(/duration_ms/);
    });

    it('refuses the name of a built-in or of another plan of the project (409), and viewers (403)', async () => {
      const body = { name: 'quick', title: 'Mine', qpis: ['memory'] };
      expectProblem(await t.http.post(plans).set('Authorization', owner.auth).send(body), 409, 'conflict');
      expectProblem(
        await t.http
          .post(plans)
          .set('Authorization', owner.auth)
          .send({ ...body, name: 'cpu-only' }),
        409,
        'conflict',
      );
      expectProblem(
        await t.http
          .post(plans)
          .set('Authorization', viewer.auth)
          .send({ ...body, name: 'v' }),
        403,
        'forbidden',
      );
    });
  });

  describe('getProjectBenchmarkPlan', () => {
    it('answers a saved plan with its ETag (200), 304 when unchanged, and 404 for another', async () => {
      const created = await t.http
        .post(plans)
        .set('Authorization', owner.auth)
        .send({ name: 'memory-only', title: 'Memory only', qpis: ['memory'] })
        .expect(201);
      const res = await t.http
        .get(`${plans}/${created.body.id}`)
        .set('Authorization', viewer.auth)
        .expect(200);
      expect(res.body).toMatchObject({ name: 'memory-only', qpis: ['memory'], project_id: 'perf' });
      await t.http
        .get(`${plans}/${created.body.id}`)
        .set('Authorization', viewer.auth)
        .set('If-None-Match', res.headers.etag as string)
        .expect(304);
      expectProblem(
        await t.http.get(`${plans}/bplan_doesnotexist0000000`).set('Authorization', viewer.auth),
        404,
        'not-found',
      );
    });
  });

  describe('deleteBenchmarkPlan', () => {
    it('deletes for its creator (204), refusing viewers (403) and a stale ETag (412)', async () => {
      const created = await t.http
        .post(plans)
        .set('Authorization', owner.auth)
        .send({ name: 'short-lived', title: 'Short-lived', qpis: ['network'] })
        .expect(201);
      const path = `${plans}/${created.body.id}`;
      expectProblem(await t.http.delete(path).set('Authorization', viewer.auth), 403, 'forbidden');
      expectProblem(
        await t.http.delete(path).set('Authorization', owner.auth).set('If-Match', '"1-stale"'),
        412,
        'precondition-failed',
      );
      await t.http
        .delete(path)
        .set('Authorization', owner.auth)
        .set('If-Match', created.headers.etag as string)
        .expect(204);
      expectProblem(await t.http.get(path).set('Authorization', owner.auth), 404, 'not-found');
    });
  });

  describe('createBenchmarkRun', () => {
    it('refuses a plan that does not exist (422)', async () => {
      expectProblem(
        await t.http
          .post('/api/v1/projects/perf/benchmark-runs')
          .set('Authorization', owner.auth)
          .send({ plan: 'nope' }),
        422,
        'unprocessable',
      );
    });

    it('queues a run that has no results until a worker measured it (409 on results)', async () => {
      const res = await t.http
        .post('/api/v1/projects/perf/benchmark-runs')
        .set('Authorization', owner.auth)
        .send({ plan: 'quick' })
        .expect(202);
      expect(res.body).toMatchObject({
        kind: 'run-benchmark',
        status: 'running',
        target: { type: 'benchmark-run' },
      });
      const runId = res.body.target.id as string;
      const run = await t.http
        .get(`/api/v1/projects/perf/benchmark-runs/${runId}`)
        .set('Authorization', viewer.auth);
      expect(run.body).toMatchObject({ status: 'queued', runner: 'local', score: null });
      expectProblem(
        await t.http
          .get(`/api/v1/projects/perf/benchmark-runs/${runId}/results`)
          .set('Authorization', viewer.auth),
        409,
        'conflict',
      );
      expectProblem(
        await t.http.delete(`/api/v1/projects/perf/benchmark-runs/${runId}`).set('Authorization', owner.auth),
        409,
        'conflict',
      );
    });
  });

  describe('listBenchmarkRuns', () => {
    it('lists the project’s runs newest first, filtered by plan and status', async () => {
      const queued = await t.http
        .get('/api/v1/projects/perf/benchmark-runs')
        .set('Authorization', viewer.auth)
        .query({ plan: 'quick', status: 'queued' })
        .expect(200);
      expect(queued.body.items.length).toBeGreaterThanOrEqual(1);
      expect(
        queued.body.items.every(
          (r: { plan_name: string; status: string }) => r.plan_name === 'quick' && r.status === 'queued',
        ),
      ).toBe(true);
      const none = await t.http
        .get('/api/v1/projects/perf/benchmark-runs')
        .set('Authorization', viewer.auth)
        .query({ status: 'succeeded' })
        .expect(200);
      expect(none.body.items).toEqual([]);
    });
  });
});
