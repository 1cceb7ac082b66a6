// Benchmark definitions (public), plans saved in projects (validated against the QPIs and metrics),
// and what can be asked of runs before they have results.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Worker } from '../../src/backends/scheduler/worker.js';
import { createLogger } from '../../src/log.js';
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

  describe('cancelBenchmarkRun', () => {
    const runs = '/api/v1/projects/perf/benchmark-runs';
    const start = async (plan: string) => {
      const res = await t.http.post(runs).set('Authorization', owner.auth).send({ plan }).expect(202);
      return { runId: res.body.target.id as string, operationId: res.body.id as string };
    };
    const runStatus = async (runId: string) =>
      (await t.http.get(`${runs}/${runId}`).set('Authorization', owner.auth).expect(200)).body
        .status as string;
    const operation = async (operationId: string) =>
      (await t.http.get(`/api/v1/operations/${operationId}`).set('Authorization', owner.auth).expect(200))
        .body;
    const waitFor = async (runId: string, wanted: (status: string) => boolean, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      for (let i = 0; i < 600 && Date.now() < deadline; i++) {
        const status = await runStatus(runId);
        if (wanted(status)) return status;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return runStatus(runId);
    };

    it('cancels a queued run at once, with its operation (200), then answers 409; not for viewers (403)', async () => {
      const { runId, operationId } = await start('quick');
      expectProblem(
        await t.http.post(`${runs}/${runId}/cancellation`).set('Authorization', viewer.auth),
        403,
        'forbidden',
      );
      const res = await t.http
        .post(`${runs}/${runId}/cancellation`)
        .set('Authorization', owner.auth)
        .expect(200);
      expect(res.body).toMatchObject({ id: runId, status: 'cancelled' });
      expect(await operation(operationId)).toMatchObject({
        status: 'cancelled',
        error: { type: 'https://atrium.dev/problems/cancelled' },
      });
      expectProblem(
        await t.http.post(`${runs}/${runId}/cancellation`).set('Authorization', owner.auth),
        409,
        'conflict',
      );
      // Ended, it can be deleted.
      await t.http.delete(`${runs}/${runId}`).set('Authorization', owner.auth).expect(204);
    });

    it('cancels a run through its operation, as POST /operations/{id}/cancellation', async () => {
      const { runId, operationId } = await start('quick');
      const res = await t.http
        .post(`/api/v1/operations/${operationId}/cancellation`)
        .set('Authorization', owner.auth)
        .expect(202);
      expect(res.body).toMatchObject({ id: operationId, status: 'cancelled' });
      expect(await runStatus(runId)).toBe('cancelled');
    });

    it('stops a running run: its runner is killed and the run and its operation end cancelled', async () => {
      // Runs on one runner go one at a time: the runs queued by the tests above go first.
      const queued = await t.http
        .get(runs)
        .set('Authorization', owner.auth)
        .query({ status: 'queued' })
        .expect(200);
      for (const run of queued.body.items as { id: string }[]) {
        await t.http.post(`${runs}/${run.id}/cancellation`).set('Authorization', owner.auth).expect(200);
      }
      const plan = await t.http
        .post(plans)
        .set('Authorization', owner.auth)
        .send({
          name: 'long',
          title: 'Loopback throughput, then a minute of round trips',
          qpis: ['network'],
          samples: 1,
          warmup: 0,
          parameters: {
            network_tcp_throughput: { duration_ms: 50, ramp_ms: 10 },
            network_tcp_latency: { duration_ms: 60_000 },
          },
        })
        .expect(201);
      const worker = new Worker(
        { scheduler: t.services.scheduler, notifier: t.services.notifier, log: createLogger('silent') },
        { concurrency: 1, pollMs: 50 },
      );
      worker.start();
      try {
        const { runId, operationId } = await start(plan.body.id as string);
        expect(await waitFor(runId, (status) => status !== 'queued', 10_000)).toBe('running');
        // Once the first metric is reported, the runner is measuring the minute-long one.
        for (let i = 0; i < 200 && (await operation(operationId)).progress === 0; i++) {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        expect((await operation(operationId)).progress).toBeGreaterThan(0);
        const started = Date.now();
        await t.http.post(`${runs}/${runId}/cancellation`).set('Authorization', owner.auth).expect(200);
        expect(await waitFor(runId, (status) => status !== 'running', 20_000)).toBe('cancelled');
        // Long before the minute of measuring was over: the runner process was stopped.
        expect(Date.now() - started).toBeLessThan(30_000);
        expect(await operation(operationId)).toMatchObject({ status: 'cancelled' });
      } finally {
        await worker.stop(2000);
      }
    }, 60_000);
  });
});
