// End to end, through the real `atrium serve` (its in-process workers run the jobs): upload a CSV,
// create the demo pipeline csv.clean → ml.train → ml.predict, run it, follow its events to the
// end, and download the predictions, checked against the model the run trained.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { demoModulesPath } from '../../src/paths.js';
import { createTestDatabase, testEngines, type TestDatabase } from '../fixtures/databases.js';
import { EventStream } from '../fixtures/event-stream.js';
import { requireBuild, startAtrium, type AtriumProcess } from '../fixtures/process.js';

const adminToken = 'atr_e2ePipelinesAdmin0123456789';
const studentsCsv = readFileSync(join(demoModulesPath, 'ml', 'samples', 'students.csv'), 'utf8');

interface Model {
  features: string[];
  standardization: { mean: number[]; std: number[] };
  intercept: number;
  weights: number[];
}

function parseCsv(text: string): { header: string[]; rows: string[][] } {
  const [head = '', ...lines] = text.trim().split('\n');
  return { header: head.split(','), rows: lines.map((line) => line.split(',')) };
}

describe.each(testEngines())('pipelines end to end (%s)', (engine) => {
  let db: TestDatabase;
  let server: AtriumProcess;

  async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${adminToken}`,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? null : JSON.stringify(body),
      signal: AbortSignal.timeout(60_000),
    });
    const text = await res.text();
    return {
      status: res.status,
      body: /json/.test(res.headers.get('content-type') ?? '') ? JSON.parse(text) : text,
    };
  }

  beforeAll(async () => {
    requireBuild();
    db = await createTestDatabase(engine);
    server = await startAtrium({
      ATRIUM_DATA_DIR: db.dataDir,
      ATRIUM_DATABASE_URL: db.url,
      ATRIUM_ADMIN_TOKEN: adminToken,
      ATRIUM_LOG_LEVEL: 'warn',
    });
    for (let i = 0; i < 200; i++) {
      if ((await fetch(`${server.url}/readyz`)).status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    await db?.drop();
  });

  it('uploads a CSV, runs clean → train → predict, follows the run and downloads checked predictions', async () => {
    const project = '/api/v1/projects/user-admin';
    const form = new FormData();
    form.append('tags', 'students');
    form.append('file', new Blob([studentsCsv], { type: 'text/csv' }), 'students.csv');
    const uploaded = await fetch(`${server.url}${project}/files`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${adminToken}` },
      body: form,
    });
    expect(uploaded.status).toBe(201);
    const file = (await uploaded.json()) as { id: string; media_type: string };
    expect(file.media_type).toBe('text/csv');

    const pipeline = await call('POST', `${project}/pipelines`, {
      name: 'clean → train → predict',
      tasks: [
        { module: 'csv', function: 'clean' },
        {
          module: 'ml',
          function: 'train',
          options: { target: 'passed', features: ['hours_studied', 'hours_slept'], model: 'logistic' },
        },
        { module: 'ml', function: 'predict' },
      ],
    });
    expect(pipeline.status).toBe(201);

    const started = await call('POST', `${project}/runs`, {
      pipeline_id: pipeline.body.id,
      input_file_ids: [file.id],
    });
    expect(started.status).toBe(202);
    const runId = started.body.target.id as string;

    // Follow the run's events, live, until the stream ends with the run.
    const stream = await EventStream.open(`${server.url}${project}/runs/${runId}/events`, {
      token: adminToken,
    });
    let frames;
    try {
      frames = await stream.readToEnd(90_000);
    } finally {
      stream.close();
    }
    const types = frames.map((f) => f.event);
    expect(types[0]).toBe('run-created');
    expect(types[types.length - 1]).toBe('run-finished');
    expect(types.filter((t) => t === 'job-finished')).toHaveLength(3);
    // Each task ran only after the previous one finished.
    const order = frames
      .filter((f) => f.event === 'job-running' || f.event === 'job-finished')
      .map((f) => `${f.event}:${String(f.data.data?.task_index)}`);
    expect(order).toEqual([
      'job-running:0',
      'job-finished:0',
      'job-running:1',
      'job-finished:1',
      'job-running:2',
      'job-finished:2',
    ]);

    const run = await call('GET', `${project}/runs/${runId}`);
    expect(run.body.status).toBe('finished');
    const [, train, predict] = run.body.jobs as { output_file_ids: string[] }[];
    const outputs = await Promise.all(
      [...(train?.output_file_ids ?? []), ...(predict?.output_file_ids ?? [])].map(
        async (id) => (await call('GET', `${project}/files/${id}`)).body as { id: string; name: string },
      ),
    );
    const modelFile = outputs.find((f) => f.name === 'model.json');
    const predictions = outputs.find((f) => f.name === 'predictions.csv');
    expect(modelFile).toBeDefined();
    expect(predictions).toBeDefined();

    const model = (await call('GET', `${project}/files/${modelFile?.id}/content`)).body as Model;
    const content = await fetch(`${server.url}${project}/files/${predictions?.id}/content`, {
      headers: { Authorization: `Bearer ${adminToken}` },
    });
    expect(content.status).toBe(200);
    expect(content.headers.get('content-type')).toMatch(/^text\/csv/);
    const { header, rows } = parseCsv(await content.text());
    expect(header).toEqual(
      expect.arrayContaining(['hours_studied', 'hours_slept', 'passed', 'prediction', 'probability']),
    );
    const col = (name: string) => header.indexOf(name);
    // Every cleaned row is predicted: the sample's rows minus those clean dropped (missing or bad values, duplicates).
    expect(rows.length).toBeGreaterThan(80);
    expect(rows.length).toBeLessThan(parseCsv(studentsCsv).rows.length);
    let correct = 0;
    for (const row of rows) {
      const x = model.features.map((f) => Number(row[col(f)]));
      const z = x.map(
        (v, j) => (v - (model.standardization.mean[j] ?? 0)) / (model.standardization.std[j] ?? 1),
      );
      const expected =
        1 / (1 + Math.exp(-(model.intercept + z.reduce((s, v, j) => s + v * (model.weights[j] ?? 0), 0))));
      const probability = Number(row[col('probability')]);
      expect(Math.abs(probability - expected)).toBeLessThan(1e-6);
      expect(Number(row[col('prediction')])).toBe(probability >= 0.5 ? 1 : 0);
      if (Number(row[col('prediction')]) === Number(row[col('passed')])) correct += 1;
    }
    expect(correct / rows.length).toBeGreaterThan(0.8);
  }, 120_000);
});
