// A Kubernetes region through the whole API, against the fake API server: a launch runs as a
// Deployment, and a launch the namespace's own quota refuses ends as a quota-exceeded problem (the
// project quota in Atrium had room), not as a failure to start and never as a 500.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { namespaceName } from '../../src/backends/cluster/kubernetes/naming.js';
import { createTestApp, type TestApp } from '../fixtures/app.js';
import { FakeKube } from '../fixtures/fake-kube/index.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

describe('a kubernetes region (fake API server, sqlite)', () => {
  let fake: FakeKube;
  let t: TestApp;
  let owner: Login;

  beforeAll(async () => {
    fake = await FakeKube.start();
    t = await createTestApp('sqlite', {
      config: {
        regions: [
          {
            id: 'cluster',
            name: 'Test cluster',
            backend: { type: 'kubernetes', kubeconfig: fake.kubeconfigPath, namespace_prefix: 'atrium-' },
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
  }, 60_000);

  afterAll(async () => {
    await t?.close();
    await fake?.close();
  });

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
