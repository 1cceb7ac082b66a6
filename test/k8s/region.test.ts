// A Kubernetes region through the whole HTTP API, against a real API server with the test's node agent:
// launch the echo package, call it through its gateway URL (Atrium reaches it through the API server's
// service proxy, as a client outside the cluster), read and follow its logs, suspend and resume it, delete
// it (nothing left); an unschedulable launch fails with its reason; a cluster quota refusal leaves nothing;
// a restarted Atrium adopts what runs; pipeline tasks and benchmark runs run as Jobs. Atrium works there as
// a ServiceAccount holding exactly the ClusterRole of the README, no more.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { namespaceName } from '../../src/backends/cluster/kubernetes/naming.js';
import { Worker } from '../../src/backends/scheduler/worker.js';
import { systemClock } from '../../src/clock.js';
import { listEvents } from '../../src/db/events.js';
import { createLogger } from '../../src/log.js';
import { repoRoot } from '../../src/paths.js';
import { createServices } from '../../src/services/index.js';
import { createTestApp, type TestApp } from '../fixtures/app.js';
import { eventually, readmeIdentity, realCluster, type RealCluster } from './cluster.js';

jest.setTimeout(180_000);

type Login = Awaited<ReturnType<TestApp['login']>>;

interface OperationBody {
  id: string;
  status: string;
  error: { type: string; detail: string } | null;
  target: { id: string };
  result: Record<string, unknown> | null;
}

describe('a kubernetes region through the API (real API server, node agent)', () => {
  let cluster: RealCluster;
  let t: TestApp;
  let owner: Login;
  let namespace: string;
  let identity: Awaited<ReturnType<typeof readmeIdentity>>;
  const work = mkdtempSync(join(tmpdir(), 'atrium-k8s-work-'));
  const project = '/api/v1/projects/kube';

  beforeAll(async () => {
    cluster = await realCluster({
      images: { 'atrium:test': { kind: 'process', files: { '/opt/atrium': repoRoot } } },
    });
    namespace = namespaceName(cluster.prefix, 'kube');
    identity = await readmeIdentity(cluster, 'edit');
    t = await createTestApp('sqlite', {
      config: {
        benchmarks: { clusterImage: 'atrium:test' },
        regions: [
          {
            id: 'cluster',
            name: 'Test cluster',
            backend: {
              type: 'kubernetes',
              kubeconfig: identity.kubeconfig,
              namespace_prefix: cluster.prefix,
              role_binding: {
                cluster_role: 'edit',
                subjects: [{ kind: 'Group', name: 'lab:${project.id}' }],
              },
              work_volume_claim: 'atrium-work',
              readiness_timeout_ms: 15_000,
              reconcile_interval_ms: 1000,
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
  }, 120_000);

  afterAll(async () => {
    await t?.close();
    await identity?.remove();
    await cluster?.close();
    rmSync(work, { recursive: true, force: true });
  });

  const launch = async (body: Record<string, unknown> = { catalog_id: 'demo', package: 'echo' }) =>
    (
      await t.http
        .post(`${project}/services`)
        .set('Authorization', owner.auth)
        .set('Prefer', 'wait=60')
        .send(body)
        .expect(202)
    ).body as OperationBody;

  const service = async (id: string) =>
    (await t.http.get(`${project}/services/${id}`).set('Authorization', owner.auth).expect(200)).body as {
      status: string;
      message: string | null;
      endpoints: { url: string }[];
    };

  const waitFor = async (id: string, status: string) =>
    eventually(
      `service ${id} to be ${status}`,
      async () => {
        const s = await service(id);
        return s.status === status ? s : null;
      },
      120_000,
    );

  /** Polls an operation until it is no longer running; returns it. */
  const operationEnd = async (id: string, what: string, timeoutMs: number) =>
    eventually(
      what,
      async () => {
        const body = (
          await t.http.get(`/api/v1/operations/${id}`).set('Authorization', owner.auth).expect(200)
        ).body as OperationBody;
        return body.status === 'running' ? null : body;
      },
      timeoutMs,
    );

  const objectsOf = async (serviceId: string) => {
    const labelSelector = `atrium.dev/service=${serviceId}`;
    const { apps, core } = cluster.admin;
    return [
      ...(await apps.listNamespacedDeployment({ namespace, labelSelector })).items,
      ...(await core.listNamespacedService({ namespace, labelSelector })).items,
      ...(await core.listNamespacedSecret({ namespace, labelSelector })).items,
      ...(await core.listNamespacedConfigMap({ namespace, labelSelector })).items,
      ...(await core.listNamespacedPod({ namespace, labelSelector })).items,
    ].map((o) => o.metadata?.name);
  };

  /**
   * Calls the service at its endpoint URL: Atrium's gateway, which reaches it through the API
   * server's service proxy (Atrium runs outside the cluster).
   */
  const callThroughProxy = async (url: string, path: string) => {
    const res = await fetch(`${url.replace(/\/$/, '')}${path}`, { headers: { Authorization: owner.auth } });
    const text = await res.text();
    let body: { path: string; service?: string } | null = null;
    try {
      body = JSON.parse(text) as { path: string; service?: string };
    } catch {
      body = null;
    }
    return { status: res.status, body };
  };

  it('launches echo, reaches it through the service proxy, follows its logs, suspends, resumes and deletes it', async () => {
    const op = await launch({ catalog_id: 'demo', package: 'echo', options: { greeting: 'hej' } });
    expect(op.status).toBe('succeeded');
    const id = op.target.id;
    const running = await service(id);
    expect(running.status).toBe('running');
    const binding = await cluster.admin.rbac.readNamespacedRoleBinding({ name: 'atrium-access', namespace });
    expect(binding.subjects).toEqual([expect.objectContaining({ kind: 'Group', name: 'lab:kube' })]);
    const answer = await eventually('echo to answer through the proxy', async () => {
      const res = await callThroughProxy(running.endpoints[0]?.url ?? '', '/hello');
      return res.status === 200 ? res : null;
    });
    expect(answer.body).toMatchObject({ path: '/hello', service: id });

    const logs = await t.http
      .get(`${project}/services/${id}/logs`)
      .set('Authorization', owner.auth)
      .expect(200);
    expect(logs.text).toContain('GET /hello');
    // Followed: a request made while following shows up in the stream.
    const server = createServer(t.app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const followed = new Promise<string>((resolve, reject) => {
        const req = httpRequest(
          {
            host: '127.0.0.1',
            port: (server.address() as AddressInfo).port,
            path: `${project}/services/${id}/logs?follow=true&tail=1`,
            headers: { Authorization: owner.auth },
          },
          (res) => {
            let text = '';
            res.on('data', (chunk: Buffer) => {
              text += chunk.toString();
              if (text.includes('GET /followed')) {
                resolve(text);
                req.destroy();
              }
            });
            res.on('end', () => reject(new Error(`the followed log ended: ${text}`)));
          },
        );
        req.on('error', () => undefined);
        req.end();
      });
      await new Promise((r) => setTimeout(r, 1000));
      await callThroughProxy(running.endpoints[0]?.url ?? '', '/followed');
      expect(await followed).toContain('GET /followed');
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }

    await t.http
      .patch(`${project}/services/${id}`)
      .set('Authorization', owner.auth)
      .set('Prefer', 'wait=60')
      .send({ suspended: true })
      .expect(202);
    await waitFor(id, 'suspended');
    expect(
      (await cluster.admin.core.listNamespacedPod({ namespace, labelSelector: `atrium.dev/service=${id}` }))
        .items,
    ).toEqual([]);
    await t.http
      .patch(`${project}/services/${id}`)
      .set('Authorization', owner.auth)
      .set('Prefer', 'wait=60')
      .send({ suspended: false })
      .expect(202);
    const resumed = await waitFor(id, 'running');
    await eventually(
      'echo to answer again',
      async () => (await callThroughProxy(resumed.endpoints[0]?.url ?? '', '/again')).status === 200,
    );

    await t.http
      .delete(`${project}/services/${id}`)
      .set('Authorization', owner.auth)
      .set('Prefer', 'wait=60')
      .expect(202);
    await eventually('its objects to be gone', async () => (await objectsOf(id)).length === 0);
    await t.http.get(`${project}/services/${id}`).set('Authorization', owner.auth).expect(404);
  });

  it('fails a launch no node can take, with its reason, at the readiness timeout', async () => {
    const taint = 'atrium.dev/test-unschedulable';
    await cluster.agent.taint(taint);
    try {
      const op = await launch();
      const id = op.target.id;
      const failed = await waitFor(id, 'failed');
      expect(failed.message).toMatch(/^unschedulable: no node of the cluster can run it/);
      const operation = (
        await t.http.get(`/api/v1/operations/${op.id}`).set('Authorization', owner.auth).expect(200)
      ).body as OperationBody;
      expect(operation).toMatchObject({
        status: 'failed',
        error: { type: 'https://atrium.dev/problems/launch-failed' },
      });
      expect(operation.error?.detail).toMatch(/unschedulable/);
    } finally {
      await cluster.agent.untaint(taint);
    }
  });

  it('ends a launch the cluster quota refuses as quota-exceeded, leaving nothing of it', async () => {
    // The admins took the namespace quota over and made it tiny.
    await cluster.admin.core.deleteNamespacedResourceQuota({ name: 'atrium-quota', namespace });
    await cluster.admin.core.createNamespacedResourceQuota({
      namespace,
      body: {
        metadata: { name: 'atrium-quota', annotations: { 'atrium.dev/managed-by': 'external' } },
        spec: { hard: { 'requests.cpu': '10m' } },
      },
    });
    try {
      const op = await launch();
      expect(op.status).toBe('failed');
      expect(op.error?.type).toBe('https://atrium.dev/problems/quota-exceeded');
      expect(op.error?.detail).toMatch(/requests\.cpu/);
      expect(await objectsOf(op.target.id)).toEqual([]);
    } finally {
      await cluster.admin.core.deleteNamespacedResourceQuota({ name: 'atrium-quota', namespace });
    }
  });

  it('adopts what runs when Atrium starts again', async () => {
    const op = await launch();
    const id = op.target.id;
    const before = (
      await cluster.admin.core.listNamespacedPod({ namespace, labelSelector: `atrium.dev/service=${id}` })
    ).items.map((p) => p.metadata?.uid);
    const again = createServices({
      config: t.config,
      database: t.database,
      clock: systemClock,
      log: createLogger('silent'),
      build: { version: '0.0.0-test', commit: null, builtAt: null },
    });
    await again.serviceReconciler.start();
    await again.serviceReconciler.settled(id);
    await again.serviceReconciler.close();
    const events = await listEvents(t.database.knex, 'service', id, 0, 1000);
    expect(events.map((e) => e.type)).toContain('adopted');
    expect((await service(id)).status).toBe('running');
    const after = (
      await cluster.admin.core.listNamespacedPod({ namespace, labelSelector: `atrium.dev/service=${id}` })
    ).items.map((p) => p.metadata?.uid);
    expect(after).toEqual(before);
  });

  describe('batch work as Jobs', () => {
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

    beforeAll(async () => {
      // The region's work volume: a hostPath PersistentVolume bound to the claim Jobs mount,
      // which Atrium sees at <data dir>/work.
      mkdirSync(work, { recursive: true });
      const volume = `${cluster.prefix}work`;
      await cluster.admin.core.createPersistentVolume({
        body: {
          metadata: { name: volume },
          spec: {
            capacity: { storage: '1Gi' },
            accessModes: ['ReadWriteMany'],
            hostPath: { path: work },
            storageClassName: '',
            claimRef: { namespace, name: 'atrium-work' },
          },
        },
      });
      await cluster.admin.core.createNamespacedPersistentVolumeClaim({
        namespace,
        body: {
          metadata: { name: 'atrium-work' },
          spec: {
            accessModes: ['ReadWriteMany'],
            resources: { requests: { storage: '1Gi' } },
            storageClassName: '',
            volumeName: volume,
          },
        },
      });
      symlinkSync(work, join(t.config.dataDir, 'work'));
      await eventually(
        'the claim to be bound',
        async () =>
          (await cluster.admin.core.readNamespacedPersistentVolumeClaim({ name: 'atrium-work', namespace }))
            .status?.phase === 'Bound',
      );
    });
    afterAll(async () => {
      await cluster.admin.core
        .deletePersistentVolume({ name: `${cluster.prefix}work` })
        .catch(() => undefined);
    });

    it('runs a pipeline task as a Job over the work volume', async () => {
      await withWorker(async () => {
        const file = await t.http
          .post(`${project}/files?name=note.txt`)
          .set('Authorization', owner.auth)
          .set('Content-Type', 'application/octet-stream')
          .send(Buffer.from('shout this\n'))
          .expect(201);
        const pipeline = await t.http
          .post(`${project}/pipelines`)
          .set('Authorization', owner.auth)
          .send({
            name: 'upper',
            tasks: [{ module: 'text', function: 'change-case', options: { case: 'upper' } }],
          })
          .expect(201);
        const started = await t.http
          .post(`${project}/runs`)
          .set('Authorization', owner.auth)
          .set('Prefer', 'wait=60')
          .send({ pipeline_id: pipeline.body.id, input_file_ids: [file.body.id] })
          .expect(202);
        const op = await operationEnd(started.body.id, 'the run to end', 120_000);
        expect(op).toMatchObject({ status: 'succeeded' });
        const [output] = (op.result?.output_file_ids as string[] | undefined) ?? [];
        const content = await t.http
          .get(`${project}/files/${output}/content`)
          .set('Authorization', owner.auth)
          .buffer(true);
        expect(content.text).toBe('SHOUT THIS\n');
      });
    });

    it("runs a benchmark plan as a Job of Atrium's image, and scores it", async () => {
      await withWorker(async () => {
        const plan = await t.http
          .post(`${project}/benchmark-plans`)
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
        const started = await t.http
          .post(`${project}/benchmark-runs`)
          .set('Authorization', owner.auth)
          .send({ plan: plan.body.id })
          .expect(202);
        const op = await operationEnd(started.body.id, 'the benchmark run to end', 150_000);
        expect(op).toMatchObject({ status: 'succeeded' });
        const results = await t.http
          .get(`${project}/benchmark-runs/${started.body.target.id}/results`)
          .set('Authorization', owner.auth)
          .expect(200);
        expect(results.body.score).toBeGreaterThan(0);
      });
    });
  });
});
