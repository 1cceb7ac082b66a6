// End to end, through the real `atrium serve` (its in-process workers run the jobs): upload a CSV,
// create the demo pipeline csv.clean → ml.train → ml.predict, run it, follow its events to the
// end, and download the predictions, checked against the model the run trained. Then a task whose
// `atrium worker` is SIGKILLed under it.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { demoModulesPath, repoRoot } from '../../src/paths.js';
import { studentsCsv, type TrainedModel } from '../fixtures/ml.js';
import { createTestDatabase, testEngines, type TestDatabase } from '../fixtures/databases.js';
import { EventStream } from '../fixtures/event-stream.js';
import {
  apiCaller,
  cliPath,
  requireBuild,
  startAtrium,
  waitForStatus,
  type AtriumProcess,
} from '../fixtures/process.js';

const adminToken = 'atr_e2ePipelinesAdmin0123456789';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function parseCsv(text: string): { header: string[]; rows: string[][] } {
  const [head = '', ...lines] = text.trim().split('\n');
  return { header: head.split(','), rows: lines.map((line) => line.split(',')) };
}

describe.each(testEngines())('pipelines end to end (%s)', (engine) => {
  let db: TestDatabase;
  let server: AtriumProcess;

  const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    apiCaller(server, adminToken)(method, path, body, headers);

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

    const model = (await call('GET', `${project}/files/${modelFile?.id}/content`)).body as TrainedModel;
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

// A task runs as one process under its worker's runner: when that `atrium worker` is SIGKILLed, the
// task's process goes with it and the end is recorded; the job's lease runs out, another worker
// runs it again, and the run finishes as if nothing had happened.
describe.each(testEngines())('a pipeline task whose worker is SIGKILLed (%s)', (engine) => {
  let db: TestDatabase;
  let server: AtriumProcess;
  const workers = new Set<ChildProcess>();
  let env: Record<string, string>;

  async function call(method: string, path: string, body?: unknown) {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${adminToken}`,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      },
      body: body === undefined ? null : JSON.stringify(body),
      signal: AbortSignal.timeout(60_000),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  function startWorker(): ChildProcess {
    const proc = spawn(process.execPath, [cliPath, 'worker', '--concurrency', '1'], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: 'ignore',
    });
    workers.add(proc);
    proc.on('exit', () => workers.delete(proc));
    return proc;
  }

  beforeAll(async () => {
    requireBuild();
    db = await createTestDatabase(engine);
    const configFile = join(db.dataDir, 'atrium.yaml');
    writeFileSync(
      configFile,
      JSON.stringify({
        modules: [
          { id: 'demo', name: 'Demo', path: demoModulesPath },
          { id: 'testing', name: 'Test modules', path: join(repoRoot, 'test', 'fixtures', 'modules') },
        ],
        scheduler: { leaseMs: 1000, pollMs: 50 },
      }),
    );
    env = {
      ATRIUM_CONFIG: configFile,
      ATRIUM_DATA_DIR: db.dataDir,
      ATRIUM_DATABASE_URL: db.url,
      ATRIUM_ADMIN_TOKEN: adminToken,
      ATRIUM_LOG_LEVEL: 'warn',
      ATRIUM_WORKERS: '0',
    };
    server = await startAtrium(env);
    await waitForStatus(`${server.url}/readyz`, 200, 60_000);
  }, 90_000);

  afterAll(async () => {
    for (const proc of workers) proc.kill('SIGKILL');
    await server?.stop();
    await db?.drop();
  });

  it('takes the task’s process with its worker, records its end, and the run finishes on another worker', async () => {
    const project = '/api/v1/projects/user-admin';
    const uploaded = await fetch(`${server.url}${project}/files?name=notes.txt`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${adminToken}`, 'Content-Type': 'application/octet-stream' },
      body: 'some notes\n',
    });
    expect(uploaded.status).toBe(201);
    const file = (await uploaded.json()) as { id: string };
    const pipeline = await call('POST', `${project}/pipelines`, {
      name: 'sleepy',
      tasks: [{ module: 'testing', function: 'sleepy', options: { seconds: 2 } }],
    });
    expect(pipeline.status).toBe(201);
    const first = startWorker();
    const started = await call('POST', `${project}/runs`, {
      pipeline_id: pipeline.body.id,
      input_file_ids: [file.id],
    });
    expect(started.status).toBe(202);
    const runId = (started.body.target as { id: string }).id;

    // The first attempt's process, once it runs.
    const jobId = ((await call('GET', `${project}/runs/${runId}`)).body.jobs as { id: string }[])[0]?.id;
    const statusPath = join(db.dataDir, 'jobs', `${jobId}-a1`, 'status.json');
    const readStatus = () => {
      try {
        return JSON.parse(readFileSync(statusPath, 'utf8')) as { pid?: number; message?: string };
      } catch {
        return null;
      }
    };
    for (let i = 0; i < 1200 && !readStatus()?.pid; i++) await sleep(50);
    const pid = readStatus()?.pid as number;
    expect(isAlive(pid)).toBe(true);

    first.kill('SIGKILL');
    for (let i = 0; i < 1200 && isAlive(pid); i++) await sleep(50);
    expect(isAlive(pid)).toBe(false);
    for (let i = 0; i < 1200 && !readStatus()?.message; i++) await sleep(50);
    expect(readStatus()?.message).toBe('its worker went away');

    startWorker();
    let run = (await call('GET', `${project}/runs/${runId}`)).body;
    for (let i = 0; i < 1200 && run.status === 'running'; i++) {
      await sleep(100);
      run = (await call('GET', `${project}/runs/${runId}`)).body;
    }
    expect(run.status).toBe('finished');
    const [job] = run.jobs as { attempts: number; output_file_ids: string[] }[];
    expect(job?.attempts).toBe(2);
    expect(job?.output_file_ids).toHaveLength(1);
  }, 120_000);
});
