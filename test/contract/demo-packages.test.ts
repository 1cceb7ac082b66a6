// The demo catalog's packages really run, each doing its job, on the local runtime.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { demoCatalogPath } from '../../src/paths.js';
import { createTestApp, type TestApp } from '../fixtures/app.js';
import { backendEndpoints, launch, serviceTestConfig } from '../fixtures/services.js';

describe('demo packages', () => {
  let t: TestApp;
  let auth: string;

  const start = async (pkg: string, options: Record<string, unknown> = {}) => {
    const { operation, serviceId } = await launch(t, auth, 'user-demo', {
      catalog_id: 'demo',
      package: pkg,
      options,
    });
    expect(operation.status).toBe('succeeded');
    // Each package's own address: what it does, not the gateway (test/contract/gateway.test.ts).
    return { serviceId, url: (await backendEndpoints(t, serviceId))[0]?.url as string };
  };

  beforeAll(async () => {
    t = await createTestApp('sqlite', { config: serviceTestConfig });
    ({ auth } = await t.login('demo'));
  });
  afterAll(() => t.close());

  it('echo answers with what it received and its greeting, with the status asked for', async () => {
    const { url } = await start('echo', { greeting: 'hej', status: 203 });
    const res = await fetch(`${url}/some/path?x=1`, { method: 'POST', body: 'payload' });
    expect(res.status).toBe(203);
    expect(await res.json()).toMatchObject({
      greeting: 'hej',
      method: 'POST',
      path: '/some/path',
      query: { x: '1' },
      body: 'payload',
    });
  });

  it('static-files serves its directory, with listings, and nothing outside it', async () => {
    const { url } = await start('static-files');
    const index = await fetch(`${url}/`);
    expect(index.status).toBe(200);
    expect(await index.text()).toContain('It works');
    expect((await fetch(`${url}/missing.txt`)).status).toBe(404);
    const escape = await fetch(`${url}/..%2f..%2f..%2fspec.json`);
    expect([403, 404]).toContain(escape.status);
  });

  it('kv-store keeps values in its working directory, across a suspension', async () => {
    const { serviceId, url } = await start('kv-store');
    expect((await fetch(`${url}/keys/colour`, { method: 'PUT', body: '"teal"' })).status).toBe(201);
    expect(await (await fetch(`${url}/keys/colour`)).json()).toEqual({ key: 'colour', value: 'teal' });
    const path = `/api/v1/projects/user-demo/services/${serviceId}`;
    await t.http
      .patch(path)
      .set('Authorization', auth)
      .set('Prefer', 'wait=20')
      .send({ suspended: true })
      .expect(202);
    const resumed = await t.http
      .patch(path)
      .set('Authorization', auth)
      .set('Prefer', 'wait=20')
      .send({ suspended: false })
      .expect(202);
    expect(resumed.body.status).toBe('succeeded');
    const [endpoint] = await backendEndpoints(t, serviceId);
    const after = await fetch(`${endpoint?.url}/keys/colour`);
    expect(await after.json()).toEqual({ key: 'colour', value: 'teal' });
    expect(await (await fetch(`${endpoint?.url}/keys`)).json()).toEqual({ keys: ['colour'] });
  });

  it('model-server predicts with its trained logistic regression', async () => {
    const model = JSON.parse(readFileSync(join(demoCatalogPath, 'model-server', 'model.json'), 'utf8')) as {
      mean: number[];
      std: number[];
      weights: number[];
      bias: number;
      features: string[];
    };
    const expected = (x: number[]) =>
      1 /
      (1 +
        Math.exp(
          -x.reduce(
            (z, v, j) =>
              z + ((v - (model.mean[j] as number)) / (model.std[j] as number)) * (model.weights[j] as number),
            model.bias,
          ),
        ));
    const { url } = await start('model-server', { threshold: 0.5 });
    const res = await fetch(`${url}/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ instances: [[9, 8], [1, 5], { hours_studied: 5, hours_slept: 7 }] }),
    });
    const body = (await res.json()) as { predictions: { probability: number; label: number }[] };
    expect(body.predictions.map((p) => p.label)).toEqual([1, 0, expected([5, 7]) >= 0.5 ? 1 : 0]);
    body.predictions.forEach((p, i) => {
      const x = [
        [9, 8],
        [1, 5],
        [5, 7],
      ][i] as number[];
      expect(p.probability).toBeCloseTo(expected(x), 10);
    });
    expect(await (await fetch(`${url}/model`)).json()).toMatchObject({
      kind: 'logistic-regression',
      features: model.features,
    });
    expect((await fetch(`${url}/predict`, { method: 'POST', body: '{"instances": []}' })).status).toBe(400);
  });
});
