// End to end, through the real `atrium serve` (its in-process workers run the jobs) and the
// generated client (@atrium/client), as a user drives it: upload a CSV, create the demo pipeline
// csv.clean → ml.train → ml.predict, run it, follow its events to the end, and download the
// predictions, checked against the model the run trained. Then a task whose `atrium worker` is
// SIGKILLed under it.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createAtriumClient, unwrap, type AtriumClient } from '@atrium/client';
import { demoModulesPath, repoRoot } from '../../src/paths.js';
import { studentsCsv, type TrainedModel } from '../fixtures/ml.js';
import { createTestDatabase, testEngines, type TestDatabase } from '../fixtures/databases.js';
import {
  expectAccepted,
  expectStatus,
  FollowedEvents,
  startedAtrium,
  type StartedAtrium,
} from '../fixtures/e2e.js';
import {
  cliPath,
  requireBuild,
  startAtrium,
  waitForStatus,
  type AtriumProcess,
} from '../fixtures/process.js';

const adminToken = 'atr_e2ePipelinesAdmin0123456789';
const projectId = 'user-admin';

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
  let atrium: StartedAtrium;

  beforeAll(async () => {
    atrium = await startedAtrium(engine, adminToken);
  }, 60_000);

  afterAll(async () => {
    await atrium?.stop();
  });

  it('uploads a CSV, runs clean → train → predict, follows the run and downloads checked predictions', async () => {
    const { client } = atrium;
    const file = await client.uploadFile(projectId, new Blob([studentsCsv]), {
      name: 'students.csv',
      tags: ['students'],
    });
    expect(file).toMatchObject({
      name: 'students.csv',
      tags: ['students'],
      size: Buffer.byteLength(studentsCsv),
    });
    expect(file.media_type).toBe('text/csv');

    const pipeline = expectStatus(
      await client.POST('/projects/{projectId}/pipelines', {
        params: { path: { projectId } },
        body: {
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
        },
      }),
      201,
    );

    const started = expectAccepted(
      await client.POST('/projects/{projectId}/runs', {
        params: { path: { projectId } },
        body: { pipeline_id: pipeline.id, input_file_ids: [file.id] },
      }),
    );
    const runId = started.target?.id as string;

    // Follow the run's events, live, until the stream ends with the run.
    const stream = new FollowedEvents((signal) =>
      client.events('/projects/{projectId}/runs/{runId}/events', {
        params: { path: { projectId, runId } },
        signal,
      }),
    );
    let events;
    try {
      events = await stream.readToEnd(90_000);
    } finally {
      stream.close();
    }
    const types = events.map((e) => e.event);
    expect(types[0]).toBe('run-created');
    expect(types[types.length - 1]).toBe('run-finished');
    expect(types.filter((t) => t === 'job-finished')).toHaveLength(3);
    // Each task ran only after the previous one finished.
    const order = events
      .filter((e) => e.event === 'job-running' || e.event === 'job-finished')
      .map((e) => `${e.event}:${String(e.data.data?.task_index)}`);
    expect(order).toEqual([
      'job-running:0',
      'job-finished:0',
      'job-running:1',
      'job-finished:1',
      'job-running:2',
      'job-finished:2',
    ]);

    const run = unwrap(
      await client.GET('/projects/{projectId}/runs/{runId}', { params: { path: { projectId, runId } } }),
    );
    expect(run.status).toBe('finished');
    const [, train, predict] = run.jobs;
    const outputs = await Promise.all(
      [...(train?.output_file_ids ?? []), ...(predict?.output_file_ids ?? [])].map(async (fileId) =>
        unwrap(
          await client.GET('/projects/{projectId}/files/{fileId}', {
            params: { path: { projectId, fileId } },
          }),
        ),
      ),
    );
    const modelFile = outputs.find((f) => f?.name === 'model.json');
    const predictions = outputs.find((f) => f?.name === 'predictions.csv');
    expect(modelFile).toBeDefined();
    expect(predictions).toBeDefined();

    const model = JSON.parse(
      await new Response(await client.downloadFile(projectId, modelFile?.id as string)).text(),
    ) as TrainedModel;
    // Read as text through the typed GET rather than downloadFile, to see the Content-Type it is served with.
    const content = await client.GET('/projects/{projectId}/files/{fileId}/content', {
      params: { path: { projectId, fileId: predictions?.id as string } },
      parseAs: 'text',
    });
    const text = expectStatus(content, 200);
    expect(content.response.headers.get('content-type')).toMatch(/^text\/csv/);
    const { header, rows } = parseCsv(text);
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
  let client: AtriumClient;

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
    client = createAtriumClient({ baseUrl: server.url, token: adminToken });
  }, 90_000);

  afterAll(async () => {
    for (const proc of workers) proc.kill('SIGKILL');
    await server?.stop();
    await db?.drop();
  });

  it('takes the task’s process with its worker, records its end, and the run finishes on another worker', async () => {
    const file = await client.uploadFile(projectId, Buffer.from('some notes\n'), { name: 'notes.txt' });
    expect(file).toMatchObject({ name: 'notes.txt', size: 11 });
    const pipeline = expectStatus(
      await client.POST('/projects/{projectId}/pipelines', {
        params: { path: { projectId } },
        body: { name: 'sleepy', tasks: [{ module: 'testing', function: 'sleepy', options: { seconds: 2 } }] },
      }),
      201,
    );
    const first = startWorker();
    const started = expectAccepted(
      await client.POST('/projects/{projectId}/runs', {
        params: { path: { projectId } },
        body: { pipeline_id: pipeline.id, input_file_ids: [file.id] },
      }),
    );
    const runId = started.target?.id as string;
    const getRun = async () =>
      unwrap(
        await client.GET('/projects/{projectId}/runs/{runId}', { params: { path: { projectId, runId } } }),
      );

    // The first attempt's process, once it runs.
    const jobId = (await getRun()).jobs[0]?.id;
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
    await client.waitForOperation(started, { timeoutMs: 100_000 });
    const run = await getRun();
    expect(run.status).toBe('finished');
    const [job] = run.jobs;
    expect(job?.attempts).toBe(2);
    expect(job?.output_file_ids).toHaveLength(1);
  }, 120_000);
});
