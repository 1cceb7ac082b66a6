// The whole lab loop, end to end through the real `atrium serve` (its in-process workers run the
// pipeline's tasks and the queued calls): upload the students CSV, train a logistic regression in a
// pipeline (csv.clean → ml.train), launch the demo model-server, `serve` the trained model.json
// through the ai scope's driver, `predict` with a queued call, and check the predictions against
// the model the run trained. The model-server is reached through its gateway URL with the token,
// and not without it.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { logisticProbability, studentsCsv, type TrainedModel } from '../fixtures/ml.js';
import { testEngines } from '../fixtures/databases.js';
import { startedAtrium, until, type StartedAtrium } from '../fixtures/e2e.js';

const adminToken = 'atr_e2eLabLoopAdmin0123456789ab';

describe.each(testEngines())('train → serve → predict, end to end (%s)', (engine) => {
  let atrium: StartedAtrium;
  const project = '/api/v1/projects/user-admin';
  let serviceId = '';

  const call: StartedAtrium['call'] = (...args) => atrium.call(...args);

  beforeAll(async () => {
    atrium = await startedAtrium(engine, adminToken);
  }, 90_000);

  afterAll(async () => {
    if (serviceId && atrium) await call('DELETE', `${project}/services/${serviceId}`).catch(() => undefined);
    await atrium?.stop();
  });

  it('trains a model in a pipeline, serves its output on the model-server and predicts with it', async () => {
    const form = new FormData();
    form.append('file', new Blob([studentsCsv], { type: 'text/csv' }), 'students.csv');
    const uploaded = await fetch(`${atrium.server.url}${project}/files`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${adminToken}` },
      body: form,
    });
    expect(uploaded.status).toBe(201);
    const csv = (await uploaded.json()) as { id: string };
    const pipeline = await call('POST', `${project}/pipelines`, {
      name: 'clean → train',
      tasks: [
        { module: 'csv', function: 'clean' },
        {
          module: 'ml',
          function: 'train',
          options: { target: 'passed', features: ['hours_studied', 'hours_slept'], model: 'logistic' },
        },
      ],
    });
    expect(pipeline.status).toBe(201);
    const started = await call('POST', `${project}/runs`, {
      pipeline_id: pipeline.body.id,
      input_file_ids: [csv.id],
    });
    expect(started.status).toBe(202);
    const runId = started.body.target.id as string;

    // Launch the model server while the run trains.
    const launched = await call(
      'POST',
      `${project}/services`,
      { catalog_id: 'demo', package: 'model-server' },
      { Prefer: 'wait=30' },
    );
    expect(launched.status).toBe(202);
    serviceId = launched.body.target.id as string;

    const run = await until(
      'the run',
      () => call('GET', `${project}/runs/${runId}`),
      (r) => ['finished', 'failed', 'cancelled'].includes(r.body.status as string),
    );
    expect(run.body.status).toBe('finished');
    const train = (run.body.jobs as { output_file_ids: string[] }[])[1];
    const outputs = await Promise.all(
      (train?.output_file_ids ?? []).map(
        async (id) => (await call('GET', `${project}/files/${id}`)).body as { id: string; name: string },
      ),
    );
    const modelFile = outputs.find((f) => f.name === 'model.json');
    expect(modelFile).toBeDefined();
    const model = (await call('GET', `${project}/files/${modelFile?.id}/content`)).body as TrainedModel;

    const service = await until(
      'the model server',
      () => call('GET', `${project}/services/${serviceId}`),
      (s) => s.body.status === 'running' || s.body.status === 'failed',
    );
    expect(service.body.status).toBe('running');

    // Its gateway URL answers with the token, and not without it.
    const url = (service.body.endpoints as { url: string }[])[0]?.url as string;
    const described = await fetch(`${url}model`, { headers: { Authorization: `Bearer ${adminToken}` } });
    expect(described.status).toBe(200);
    expect(((await described.json()) as { kind: string }).kind).toBe('logistic-regression');
    const anonymous = await fetch(`${url}model`, { headers: { Accept: 'application/json' } });
    expect(anonymous.status).toBe(401);
    await anonymous.body?.cancel();

    const fns = `${project}/services/${serviceId}/functions`;
    const served = await call('POST', `${fns}/serve/calls?sync=true`, {
      input: { name: 'students', model_file: modelFile?.id },
    });
    expect(served.status).toBe(200);
    expect(served.body.result).toMatchObject({
      name: 'students',
      features: model.features,
      target: 'passed',
    });

    const instances = [
      [9, 8],
      [1, 4],
      [5, 7],
    ];
    const queued = await call('POST', `${fns}/predict/calls`, { input: { model: 'students', instances } });
    expect(queued.status).toBe(202);
    const done = await until(
      'the predict call',
      () =>
        call('GET', `${project}/services/${serviceId}/calls/${queued.body.id}`, undefined, {
          Prefer: 'wait=10',
        }),
      (c) => ['succeeded', 'failed'].includes(c.body.status as string),
    );
    expect(done.body.status).toBe('succeeded');
    const predictions = (done.body.result as { predictions: { probability: number; label: number }[] })
      .predictions;
    const expected = instances.map((x) => logisticProbability(model, x));
    expect(predictions.map((p) => p.probability)).toEqual(expected.map((p) => expect.closeTo(p, 9)));
    expect(predictions.map((p) => p.label)).toEqual(expected.map((p) => (p >= 0.5 ? 1 : 0)));
    // Nine hours of study and eight of sleep pass; one and four do not.
    expect(predictions.map((p) => p.label).slice(0, 2)).toEqual([1, 0]);
  }, 180_000);
});
