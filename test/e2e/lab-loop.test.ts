// The whole lab loop, end to end through the real `atrium serve` (its in-process workers run the
// pipeline's tasks and the queued calls), driven as a user drives it, with the generated client
// (@atrium/client): upload the students CSV, train a logistic regression in a pipeline (csv.clean →
// ml.train), launch the demo model-server, `serve` the trained model.json through the ai scope's
// driver, `predict` with a queued call, and check the predictions against the model the run
// trained. The model-server is reached through its gateway URL with the token, and not without it.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { unwrap } from '@atrium/client';
import { logisticProbability, studentsCsv, type TrainedModel } from '../fixtures/ml.js';
import { testEngines } from '../fixtures/databases.js';
import { expectAccepted, expectStatus, startedAtrium, until, type StartedAtrium } from '../fixtures/e2e.js';

const adminToken = 'atr_e2eLabLoopAdmin0123456789ab';
const projectId = 'user-admin';

async function readText(stream: ReadableStream<Uint8Array>): Promise<string> {
  return new Response(stream).text();
}

describe.each(testEngines())('train → serve → predict, end to end (%s)', (engine) => {
  let atrium: StartedAtrium;
  let serviceId = '';

  beforeAll(async () => {
    atrium = await startedAtrium(engine, adminToken);
  }, 90_000);

  afterAll(async () => {
    if (serviceId && atrium) {
      await atrium.client
        .DELETE('/projects/{projectId}/services/{serviceId}', { params: { path: { projectId, serviceId } } })
        .catch(() => undefined);
    }
    await atrium?.stop();
  });

  it('trains a model in a pipeline, serves its output on the model-server and predicts with it', async () => {
    const { client } = atrium;
    // Uploaded as a form (the spec's multipart body), as a browser does; the other end-to-end tests
    // stream theirs raw through uploadFile.
    const csv = expectStatus(
      await client.POST('/projects/{projectId}/files', {
        params: { path: { projectId } },
        body: { file: studentsCsv },
        // openapi-fetch sends a FormData as multipart, with its boundary.
        bodySerializer: (fields) => {
          const form = new FormData();
          const content = typeof fields === 'string' ? fields : (fields.file ?? '');
          form.append('file', new Blob([content], { type: 'text/csv' }), 'students.csv');
          return form;
        },
      }),
      201,
    );
    const pipeline = expectStatus(
      await client.POST('/projects/{projectId}/pipelines', {
        params: { path: { projectId } },
        body: {
          name: 'clean → train',
          tasks: [
            { module: 'csv', function: 'clean' },
            {
              module: 'ml',
              function: 'train',
              options: { target: 'passed', features: ['hours_studied', 'hours_slept'], model: 'logistic' },
            },
          ],
        },
      }),
      201,
    );
    const started = expectAccepted(
      await client.POST('/projects/{projectId}/runs', {
        params: { path: { projectId } },
        body: { pipeline_id: pipeline.id, input_file_ids: [csv.id] },
      }),
    );
    const runId = started.target?.id as string;

    // Launch the model server while the run trains.
    const launched = expectAccepted(
      await client.POST('/projects/{projectId}/services', {
        params: { path: { projectId }, header: { Prefer: 'wait=30' } },
        body: { catalog_id: 'demo', package: 'model-server' },
      }),
    );
    serviceId = launched.target?.id as string;

    await client.waitForOperation(started, { timeoutMs: 90_000 });
    const run = unwrap(
      await client.GET('/projects/{projectId}/runs/{runId}', { params: { path: { projectId, runId } } }),
    );
    expect(run.status).toBe('finished');
    const train = run.jobs[1];
    const outputs = await Promise.all(
      (train?.output_file_ids ?? []).map(async (fileId) =>
        unwrap(
          await client.GET('/projects/{projectId}/files/{fileId}', {
            params: { path: { projectId, fileId } },
          }),
        ),
      ),
    );
    const modelFile = outputs.find((f) => f?.name === 'model.json');
    expect(modelFile).toBeDefined();
    const model = JSON.parse(
      await readText(await client.downloadFile(projectId, modelFile?.id as string)),
    ) as TrainedModel;

    const service = await until(
      'the model server',
      async () =>
        unwrap(
          await client.GET('/projects/{projectId}/services/{serviceId}', {
            params: { path: { projectId, serviceId } },
          }),
        ),
      (s) => s.status === 'running' || s.status === 'failed',
    );
    expect(service.status).toBe('running');

    // Its gateway URL (the service's own API, not Atrium's: raw fetch) answers with the token, and
    // not without it.
    const url = service.endpoints[0]?.url as string;
    const described = await fetch(`${url}model`, { headers: { Authorization: `Bearer ${adminToken}` } });
    expect(described.status).toBe(200);
    expect(((await described.json()) as { kind: string }).kind).toBe('logistic-regression');
    const anonymous = await fetch(`${url}model`, { headers: { Accept: 'application/json' } });
    expect(anonymous.status).toBe(401);
    await anonymous.body?.cancel();

    const served = expectStatus(
      await client.POST('/projects/{projectId}/services/{serviceId}/functions/{functionName}/calls', {
        params: { path: { projectId, serviceId, functionName: 'serve' }, query: { sync: true } },
        body: { input: { name: 'students', model_file: modelFile?.id } },
      }),
      200,
    );
    expect(served.result).toMatchObject({
      name: 'students',
      features: model.features,
      target: 'passed',
    });

    const instances = [
      [9, 8],
      [1, 4],
      [5, 7],
    ];
    const queued = expectStatus(
      await client.POST('/projects/{projectId}/services/{serviceId}/functions/{functionName}/calls', {
        params: { path: { projectId, serviceId, functionName: 'predict' } },
        body: { input: { model: 'students', instances } },
      }),
      202,
    );
    const done = await until(
      'the predict call',
      async () =>
        unwrap(
          await client.GET('/projects/{projectId}/services/{serviceId}/calls/{callId}', {
            params: { path: { projectId, serviceId, callId: queued.id }, header: { Prefer: 'wait=10' } },
          }),
        ),
      (c) => ['succeeded', 'failed'].includes(c.status),
    );
    expect(done.status).toBe('succeeded');
    const predictions = (done.result as { predictions: { probability: number; label: number }[] })
      .predictions;
    const expected = instances.map((x) => logisticProbability(model, x));
    expect(predictions.map((p) => p.probability)).toEqual(expected.map((p) => expect.closeTo(p, 9)));
    expect(predictions.map((p) => p.label)).toEqual(expected.map((p) => (p >= 0.5 ? 1 : 0)));
    // Nine hours of study and eight of sleep pass; one and four do not.
    expect(predictions.map((p) => p.label).slice(0, 2)).toEqual([1, 0]);
  }, 180_000);
});
