// A Kubernetes region through the whole API, against the fake API server: a launch runs as a
// Deployment, a pipeline task and a benchmark plan as Jobs, and a launch the namespace's own quota
// refuses ends as a quota-exceeded problem (the project quota in Atrium had room), not as a
// failure to start and never as a 500.
import { mkdirSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Worker } from '../../src/backends/scheduler/worker.js';
import { createLogger } from '../../src/log.js';
import { namespaceName } from '../../src/backends/cluster/kubernetes/naming.js';
import { createTestApp, type TestApp } from '../fixtures/app.js';
import { FakeKube } from '../fixtures/fake-kube/index.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

/** The repository, standing for Atrium's image: its /opt/atrium (dist/ needs `npm run build`). */
const repository = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('a kubernetes region (fake API server, sqlite)', () => {
  let fake: FakeKube;
  let t: TestApp;
  let owner: Login;

  beforeAll(async () => {
    fake = await FakeKube.start({
      images: { 'atrium:test': { kind: 'process', files: { '/opt/atrium': repository } } },
    });
    t = await createTestApp('sqlite', {
      config: {
        benchmarks: { clusterImage: 'atrium:test' },
        regions: [
          {
            id: 'cluster',
            name: 'Test cluster',
            backend: {
              type: 'kubernetes',
              kubeconfig: fake.kubeconfigPath,
              namespace_prefix: 'atrium-',
              work_volume_claim: 'atrium-work',
            },
            quotas: {
              default: { cpu: '4', memory: '8Gi', gpu: 0, services: 10, concurrent_jobs: 4, storage: '10Gi' },
            },
          },
        ],
      },
    });
    owner = await t.login('kate');
    await t.http
      .post('/api/v1/projects')
      .set('Authorization', owner.auth)
      .send({ id: 'kube', name: 'Kube' })
      .expect(201);
    // Atrium sees the region's work volume at <data dir>/work (here: the fake's directory of the claim).
    const claim = join(fake.root, 'claims', namespaceName('atrium-', 'kube'), 'atrium-work');
    mkdirSync(claim, { recursive: true });
    symlinkSync(claim, join(t.config.dataDir, 'work'));
  }, 60_000);

  afterAll(async () => {
    await t?.close();
    await fake?.close();
  });

  /** Runs `body` with a scheduler worker in this process, for the jobs it starts. */
  const withWorker = async (body: () => Promise<void>) => {
    const worker = new Worker(
      { scheduler: t.services.scheduler, notifier: t.services.notifier, log: createLogger('silent') },
      { concurrency: 1, pollMs: 50 },
    );
    worker.start();
    try {
      await body();
    } finally {
      await worker.stop(2000);
    }
  };

  const launch = async () => {
    const res = await t.http
      .post('/api/v1/projects/kube/services')
      .set('Authorization', owner.auth)
      .set('Prefer', 'wait=30')
      .send({ catalog_id: 'demo', package: 'echo' })
      .expect(202);
    return res.body as {
      status: string;
      error: { type: string; detail: string } | null;
      target: { id: string };
    };
  };

  it('runs a launch as a Deployment in the project namespace', async () => {
    const op = await launch();
    expect(op.status).toBe('succeeded');
    const namespace = namespaceName('atrium-', 'kube');
    expect(fake.objects('deployments', namespace).length).toBe(1);
    expect(fake.objects('resourcequotas', namespace).length).toBe(1);
    await t.http
      .delete(`/api/v1/projects/kube/services/${op.target.id}`)
      .set('Authorization', owner.auth)
      .set('Prefer', 'wait=30')
      .expect(202);
  }, 60_000);

  it('runs a pipeline task as a Job over the shared work volume, with the same contract', async () => {
    const namespace = namespaceName('atrium-', 'kube');
    await withWorker(async () => {
      const file = await t.http
        .post('/api/v1/projects/kube/files?name=note.txt')
        .set('Authorization', owner.auth)
        .set('Content-Type', 'application/octet-stream')
        .send(Buffer.from('shout this\n'))
        .expect(201);
      const pipeline = await t.http
        .post('/api/v1/projects/kube/pipelines')
        .set('Authorization', owner.auth)
        .send({
          name: 'upper',
          tasks: [{ module: 'text', function: 'change-case', options: { case: 'upper' } }],
        })
        .expect(201);
      const started = await t.http
        .post('/api/v1/projects/kube/runs')
        .set('Authorization', owner.auth)
        .set('Prefer', 'wait=50')
        .send({ pipeline_id: pipeline.body.id, input_file_ids: [file.body.id] })
        .expect(202);
      expect(started.body).toMatchObject({ status: 'succeeded' });
      const jobs = fake.objects('jobs', namespace);
      expect(jobs.length).toBe(1);
      const [output] = started.body.result.output_file_ids as string[];
      const content = await t.http
        .get(`/api/v1/projects/kube/files/${output}/content`)
        .set('Authorization', owner.auth)
        .buffer(true);
      expect(content.text).toBe('SHOUT THIS\n');
    });
  }, 60_000);

  it("runs a benchmark plan on the cluster as a Job of Atrium's image, and scores it", async () => {
    const namespace = namespaceName('atrium-', 'kube');
    await withWorker(async () => {
      const plan = await t.http
        .post('/api/v1/projects/kube/benchmark-plans')
        .set('Authorization', owner.auth)
        .send({
          name: 'on-cluster',
          title: 'On the cluster',
          runner: 'cluster',
          qpis: ['network'],
          samples: 1,
          warmup: 0,
          parameters: {
            network_tcp_throughput: { duration_ms: 50, ramp_ms: 10 },
            network_tcp_latency: { duration_ms: 50, ramp_ms: 10 },
          },
        })
        .expect(201);
      const jobsCreated = () =>
        fake.requests.filter(
          (r) => r.method === 'POST' && r.path === `/apis/batch/v1/namespaces/${namespace}/jobs`,
        ).length;
      const jobsBefore = jobsCreated();
      const started = await t.http
        .post('/api/v1/projects/kube/benchmark-runs')
        .set('Authorization', owner.auth)
        .set('Prefer', 'wait=50')
        .send({ plan: plan.body.id })
        .expect(202);
      expect(started.body).toMatchObject({ status: 'succeeded' });
      const runId = started.body.target.id as string;
      // One Job made for it (and deleted once its results were read back from the work volume).
      expect(jobsCreated()).toBe(jobsBefore + 1);
      const run = await t.http
        .get(`/api/v1/projects/kube/benchmark-runs/${runId}`)
        .set('Authorization', owner.auth)
        .expect(200);
      expect(run.body).toMatchObject({ status: 'succeeded', runner: 'cluster:cluster' });
      const results = await t.http
        .get(`/api/v1/projects/kube/benchmark-runs/${runId}/results`)
        .set('Authorization', owner.auth)
        .expect(200);
      expect(results.body.score).toBeGreaterThan(0);
      const measured = results.body.qpis[0].sections.flatMap(
        (section: { metrics: { metric: string; value: number }[] }) => section.metrics,
      );
      expect(measured.map((m: { metric: string }) => m.metric).sort()).toEqual([
        'network_tcp_latency',
        'network_tcp_throughput',
      ]);
      for (const m of measured) expect(m.value).toBeGreaterThan(0);
    });
  }, 60_000);

  it('ends a launch the namespace quota refuses with a quota-exceeded problem', async () => {
    const namespace = namespaceName('atrium-', 'kube');
    // The admins took the namespace quota over and made it tiny.
    const [quota] = fake.objects('resourcequotas', namespace);
    expect(quota).toBeDefined();
    fake.api.delete('resourcequotas', namespace, quota?.metadata.name as string);
    fake.api.create('resourcequotas', namespace, {
      apiVersion: 'v1',
      kind: 'ResourceQuota',
      metadata: {
        name: 'atrium-quota',
        uid: '',
        resourceVersion: '',
        creationTimestamp: '',
        annotations: { 'atrium.dev/managed-by': 'external' },
      },
      spec: { hard: { 'requests.cpu': '10m' } },
    });
    const op = await launch();
    expect(op.status).toBe('failed');
    expect(op.error?.type).toBe('https://atrium.dev/problems/quota-exceeded');
    expect(op.error?.detail).toMatch(/requests\.cpu/);
  }, 60_000);
});
