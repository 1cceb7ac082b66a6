// The gateway and calls conformance suite on the Kubernetes backend against the fake API server:
// Atrium reaches services through its service proxy (as it does a real one's, from outside the
// cluster), which forwards to the pod's process that the fake's kubelet runs. Then what only a way
// in with errors of its own shows: the API server's refusals become problems, its words stay in.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { ConfigInput } from '../../src/config.js';
import { createTestApp, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { FakeKube, type KubeObject } from '../fixtures/fake-kube/index.js';
import { echo, launch, serviceTestConfig } from '../fixtures/services.js';
import { describeGateway } from './gateway.js';

const regionOf = (fake: FakeKube): ConfigInput => ({
  regions: [
    {
      id: 'cluster',
      name: 'Test cluster',
      backend: {
        type: 'kubernetes',
        kubeconfig: fake.kubeconfigPath,
        namespace_prefix: 'atrium-',
        reconcile_interval_ms: 1000,
        readiness_timeout_ms: 10_000,
        stop_grace_seconds: 1,
      },
    },
  ],
});

describeGateway('kubernetes (fake API server)', testEngines(), async () => {
  const fake = await FakeKube.start();
  return { config: regionOf(fake), waitSeconds: 30, cleanup: () => fake.close() };
});

describe('the gateway through the fake API server’s service proxy, when it refuses', () => {
  let fake: FakeKube;
  let t: TestApp;
  let auth: string;
  let url: string;
  let echoId: string;
  let portService: KubeObject & { spec: { selector: Record<string, string> } };

  beforeAll(async () => {
    fake = await FakeKube.start();
    t = await createTestApp('sqlite', { config: { ...serviceTestConfig, ...regionOf(fake) } });
    auth = (await t.login('kate')).auth;
    await t.http
      .post('/api/v1/projects')
      .set('Authorization', auth)
      .send({ id: 'kube', name: 'Kube' })
      .expect(201);
    const serviceId = (await launch(t, auth, 'kube', echo, 30)).serviceId;
    echoId = serviceId;
    url = `${t.url}/services/kube/${serviceId}/http/`;
    portService = fake.objects(
      'services',
      undefined,
      `atrium.dev/service=${serviceId}`,
    )[0] as typeof portService;
  });
  afterAll(async () => {
    await t?.close();
    await fake?.close();
  });

  it('answers 503 with Retry-After, as problem+json, when the Service has no ready pod', async () => {
    expect((await fetch(url, { headers: { Authorization: auth } })).status).toBe(200);
    // Its pods no longer behind it: the API server's own 503 "no endpoints available".
    fake.api.write('services', {
      ...portService,
      spec: { ...portService.spec, selector: { nothing: 'here' } },
    });
    const res = await fetch(url, { headers: { Authorization: auth } });
    expect(res.status).toBe(503);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    const text = await res.text();
    expect(text).not.toMatch(/no endpoints|Status|atrium-kube/);
    fake.api.write('services', portService);
    expect((await fetch(url, { headers: { Authorization: auth } })).status).toBe(200);
  });

  it('answers a sync call 503 with Retry-After, in its own words, while the Service has no ready pod', async () => {
    fake.api.write('services', {
      ...portService,
      spec: { ...portService.spec, selector: { nothing: 'here' } },
    });
    try {
      const res = await t.http
        .post(`/api/v1/projects/kube/services/${echoId}/functions/echo/calls?sync=true`)
        .set('Authorization', auth)
        .send({ input: { message: 'while it has no pod' } });
      expect(res.status).toBe(503);
      expect(res.body.type).toBe('https://atrium.dev/problems/unavailable');
      expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
      expect(JSON.stringify(res.body)).not.toMatch(/no endpoints|"Status"|atrium-kube/);
    } finally {
      fake.api.write('services', portService);
    }
    const again = await t.http
      .post(`/api/v1/projects/kube/services/${echoId}/functions/echo/calls?sync=true`)
      .set('Authorization', auth)
      .send({ input: { message: 'with its pod back' } });
    expect(again.status).toBe(200);
  });

  it('passes the service’s own error answers as they are', async () => {
    const failing = (
      await launch(t, auth, 'kube', { ...echo, version: '1.1.0', options: { status: 503 } }, 30)
    ).serviceId;
    const res = await fetch(`${t.url}/services/kube/${failing}/http/broken`, {
      headers: { Authorization: auth },
    });
    expect(res.status).toBe(503);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(((await res.json()) as { path: string }).path).toBe('/broken');
  });
});
