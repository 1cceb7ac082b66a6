// Runs: a pipeline over files becomes chained jobs, run by a real worker with real processes;
// their outputs, lineage, logs and history; failure, retry from the failed job, cancellation,
// deletion; and files a running run uses cannot be deleted.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Worker } from '../../src/backends/scheduler/worker.js';
import { createLogger } from '../../src/log.js';
import { demoModulesPath, repoRoot } from '../../src/paths.js';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

interface RunBody {
  id: string;
  status: string;
  operation_id: string;
  jobs: {
    id: string;
    status: string;
    attempts: number;
    input_file_ids: string[];
    output_file_ids: string[];
    error: Record<string, unknown> | null;
    history: { status: string; at: string }[];
  }[];
}

const text = 'the quick brown fox\njumps over the lazy dog\nthe end\n';

describe.each(testEngines())('runs (%s)', (engine) => {
  let t: TestApp;
  let owner: Login;
  let member: Login;
  let viewer: Login;
  let worker: Worker;
  const scratch = mkdtempSync(join(tmpdir(), 'atrium-runs-'));
  const project = '/api/v1/projects/runs';

  beforeAll(async () => {
    t = await createTestApp(engine, {
      config: {
        modules: [
          { id: 'demo', name: 'Demo', path: demoModulesPath },
          { id: 'testing', name: 'Test modules', path: join(repoRoot, 'test', 'fixtures', 'modules') },
        ],
      },
    });
    [owner, member, viewer] = await Promise.all([t.login('rita'), t.login('ron'), t.login('ria')]);
    await t.createProject(owner, 'runs', { member: [member], viewer: [viewer] });
    worker = new Worker(
      { scheduler: t.services.scheduler, notifier: t.services.notifier, log: createLogger('silent') },
      { concurrency: 2, pollMs: 50 },
    );
    worker.start();
  });
  afterAll(async () => {
    await worker.stop(2000);
    await t.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  const upload = async (name: string, content: string) =>
    (
      await t.http
        .post(`${project}/files?name=${name}`)
        .set('Authorization', member.auth)
        .set('Content-Type', 'application/octet-stream')
        .send(Buffer.from(content))
        .expect(201)
    ).body.id as string;

  const pipeline = async (tasks: Record<string, unknown>[]) =>
    (
      await t.http
        .post(`${project}/pipelines`)
        .set('Authorization', member.auth)
        .send({ name: `p-${Math.random().toString(36).slice(2, 8)}`, tasks })
        .expect(201)
    ).body.id as string;

  const start = async (pipelineId: string, inputs: string[]) => {
    const res = await t.http
      .post(`${project}/runs`)
      .set('Authorization', member.auth)
      .send({ pipeline_id: pipelineId, input_file_ids: inputs })
      .expect(202);
    expect(res.body).toMatchObject({ kind: 'run-pipeline', target: { type: 'run' } });
    return { runId: res.body.target.id as string, operationId: res.body.id as string };
  };

  const getRun = async (runId: string) =>
    (await t.http.get(`${project}/runs/${runId}`).set('Authorization', viewer.auth).expect(200))
      .body as RunBody;

  async function waitForRun(runId: string, done: (run: RunBody) => boolean, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    let run = await getRun(runId);
    for (let i = 0; i < 2000 && !done(run) && Date.now() < deadline; i++) {
      await sleep(50);
      run = await getRun(runId);
    }
    if (!done(run)) throw new Error(`run ${runId} never got there: ${JSON.stringify(run)}`);
    return run;
  }

  const download = async (fileId: string) =>
    (await t.http.get(`${project}/files/${fileId}/content`).set('Authorization', viewer.auth).buffer(true))
      .text;

  describe('createRun', () => {
    it('runs the tasks in order, each on the previous outputs, and finishes the operation (202)', async () => {
      const input = await upload('story.txt', text);
      const id = await pipeline([
        { module: 'text', function: 'change-case', options: { case: 'upper' } },
        { module: 'text', function: 'word-count' },
      ]);
      const { runId, operationId } = await start(id, [input]);
      const run = await waitForRun(runId, (r) => r.status !== 'running');
      expect(run.status).toBe('finished');
      const [first, second] = run.jobs;
      expect(first?.input_file_ids).toEqual([input]);
      expect(second?.input_file_ids).toEqual(first?.output_file_ids);
      expect(first?.history.map((h) => h.status)).toEqual(['queued', 'running', 'finished']);
      expect(second?.history.map((h) => h.status)).toEqual(['pending', 'queued', 'running', 'finished']);
      // Task 1 started only after task 0 finished.
      const finished0 = first?.history.find((h) => h.status === 'finished')?.at ?? '';
      const running1 = second?.history.find((h) => h.status === 'running')?.at ?? '';
      expect(running1 >= finished0).toBe(true);

      const upper = await t.http
        .get(`${project}/files/${first?.output_file_ids[0]}`)
        .set('Authorization', viewer.auth);
      expect(upper.body).toMatchObject({
        kind: 'output',
        run_id: runId,
        job_id: first?.id,
        parent_id: input,
      });
      expect(await download(first?.output_file_ids[0] as string)).toBe(text.toUpperCase());
      const counts = JSON.parse(await download(second?.output_file_ids[0] as string)) as Record<
        string,
        unknown
      >;
      expect(JSON.stringify(counts)).toContain('"words":11');

      const op = await t.http
        .get(`/api/v1/operations/${operationId}`)
        .set('Authorization', member.auth)
        .expect(200);
      expect(op.body).toMatchObject({ status: 'succeeded', done: true, progress: 100 });
      expect(op.body.result.output_file_ids).toEqual(expect.arrayContaining(second?.output_file_ids ?? []));

      const events = await t.http
        .get(`${project}/runs/${runId}/events?follow=false`)
        .set('Authorization', viewer.auth)
        .buffer(true)
        .expect(200);
      expect(events.text).toContain('event: run-finished');
      const logs = await t.http
        .get(`${project}/runs/${runId}/jobs/${second?.id}/logs`)
        .set('Authorization', viewer.auth);
      expect(logs.status).toBe(200);
    });

    it('refuses a disabled pipeline, missing files and inputs the first function does not take (422)', async () => {
      const csvOnly = await pipeline([{ module: 'csv', function: 'summary' }]);
      const notCsv = await upload('notes.txt', 'hello');
      expectProblem(
        await t.http
          .post(`${project}/runs`)
          .set('Authorization', member.auth)
          .send({ pipeline_id: csvOnly, input_file_ids: [notCsv] }),
        422,
        'unprocessable',
      );
      expectProblem(
        await t.http
          .post(`${project}/runs`)
          .set('Authorization', member.auth)
          .send({ pipeline_id: csvOnly, input_file_ids: ['file_doesnotexist0000000'] }),
        422,
        'unprocessable',
      );
      await t.http
        .patch(`${project}/pipelines/${csvOnly}`)
        .set('Authorization', member.auth)
        .send({ enabled: false })
        .expect(200);
      const csv = await upload('t.csv', 'a,b\n1,2\n');
      expectProblem(
        await t.http
          .post(`${project}/runs`)
          .set('Authorization', member.auth)
          .send({ pipeline_id: csvOnly, input_file_ids: [csv] }),
        422,
        'unprocessable',
      );
      expectProblem(
        await t.http
          .post(`${project}/runs`)
          .set('Authorization', viewer.auth)
          .send({ pipeline_id: csvOnly, input_file_ids: [csv] }),
        403,
        'forbidden',
      );
    });
  });

  describe('getJobLogs', () => {
    it('follows a running job’s log until the job ends', async () => {
      const input = await upload('follow.txt', 'follow me');
      const id = await pipeline([{ module: 'testing', function: 'sleepy', options: { seconds: 1 } }]);
      const { runId } = await start(id, [input]);
      const running = await waitForRun(runId, (r) => r.jobs[0]?.status === 'running');
      const followed = await t.http
        .get(`${project}/runs/${runId}/jobs/${running.jobs[0]?.id}/logs?follow=true`)
        .set('Authorization', viewer.auth)
        .buffer(true)
        .expect(200);
      // The stream ended with the job's process; the job itself finishes once its outputs are in.
      expect(followed.text).toContain('sleeping 1 s');
      expect((await waitForRun(runId, (r) => r.status !== 'running')).status).toBe('finished');
    });
  });

  describe('retryRun', () => {
    it('fails at the failing job with its exit code and log, cancels the rest, then retries from it', async () => {
      const marker = join(scratch, `marker-${engine}`);
      const input = await upload('data.txt', 'payload');
      const id = await pipeline([
        { module: 'testing', function: 'flaky', options: { marker } },
        { module: 'text', function: 'word-count' },
      ]);
      const { runId, operationId } = await start(id, [input]);
      const failed = await waitForRun(runId, (r) => r.status !== 'running');
      expect(failed.status).toBe('failed');
      expect(failed.jobs[0]).toMatchObject({ status: 'failed', error: { exit_code: 4 } });
      expect(String(failed.jobs[0]?.error?.log_tail)).toContain('no marker');
      expect(failed.jobs[1]?.status).toBe('cancelled');
      const op = await t.http
        .get(`/api/v1/operations/${operationId}`)
        .set('Authorization', member.auth)
        .expect(200);
      expect(op.body).toMatchObject({
        status: 'failed',
        error: { type: 'https://atrium.dev/problems/task-failed' },
      });
      const log = await t.http
        .get(`${project}/runs/${runId}/jobs/${failed.jobs[0]?.id}/logs`)
        .set('Authorization', viewer.auth);
      expect(log.text).toContain('no marker');

      writeFileSync(marker, 'now it works');
      const retried = await t.http
        .post(`${project}/runs/${runId}/retries`)
        .set('Authorization', member.auth)
        .expect(202);
      expect(retried.body.id).not.toBe(operationId);
      const run = await waitForRun(runId, (r) => r.status !== 'running');
      expect(run.status).toBe('finished');
      expect(run.operation_id).toBe(retried.body.id);
      expect(await download(run.jobs[0]?.output_file_ids[0] as string)).toBe('payload');
      expectProblem(
        await t.http.post(`${project}/runs/${runId}/retries`).set('Authorization', member.auth),
        409,
        'conflict',
      );
    });
  });

  describe('cancelRun', () => {
    it('kills the running job, cancels the rest and the operation; its input could not be deleted meanwhile', async () => {
      const input = await upload('slow.txt', 'zzz');
      const id = await pipeline([
        { module: 'testing', function: 'sleepy', options: { seconds: 30 } },
        { module: 'text', function: 'word-count' },
      ]);
      const { runId, operationId } = await start(id, [input]);
      await waitForRun(runId, (r) => r.jobs[0]?.status === 'running');
      expectProblem(
        await t.http.delete(`${project}/files/${input}`).set('Authorization', member.auth),
        409,
        'conflict',
      );
      expectProblem(
        await t.http.delete(`${project}/runs/${runId}`).set('Authorization', member.auth),
        409,
        'conflict',
      );
      await t.http
        .post(`${project}/runs/${runId}/cancellation`)
        .set('Authorization', member.auth)
        .expect(200);
      const run = await waitForRun(runId, (r) => r.status !== 'running', 15_000);
      expect(run.status).toBe('cancelled');
      expect(run.jobs.map((j) => j.status)).toEqual(['cancelled', 'cancelled']);
      const op = await t.http
        .get(`/api/v1/operations/${operationId}`)
        .set('Authorization', member.auth)
        .expect(200);
      expect(op.body.status).toBe('cancelled');
      expectProblem(
        await t.http.post(`${project}/runs/${runId}/cancellation`).set('Authorization', member.auth),
        409,
        'conflict',
      );
    });
    it('cancels a run through its operation (POST /operations/{id}/cancellation, 202)', async () => {
      const input = await upload('slow2.txt', 'zzz');
      const id = await pipeline([{ module: 'testing', function: 'sleepy', options: { seconds: 30 } }]);
      const { runId, operationId } = await start(id, [input]);
      await waitForRun(runId, (r) => r.jobs[0]?.status === 'running');
      expectProblem(
        await t.http.post(`/api/v1/operations/${operationId}/cancellation`).set('Authorization', viewer.auth),
        403,
        'forbidden',
      );
      await t.http
        .post(`/api/v1/operations/${operationId}/cancellation`)
        .set('Authorization', member.auth)
        .expect(202);
      const run = await waitForRun(runId, (r) => r.status !== 'running', 15_000);
      expect(run.status).toBe('cancelled');
      const op = await t.http
        .get(`/api/v1/operations/${operationId}`)
        .set('Authorization', member.auth)
        .expect(200);
      expect(op.body.status).toBe('cancelled');
    });
  });

  describe('deleteRun', () => {
    it('deletes an ended run with its jobs and the files it produced (204)', async () => {
      const input = await upload('del.txt', 'delete me');
      const id = await pipeline([{ module: 'text', function: 'word-count' }]);
      const { runId } = await start(id, [input]);
      const run = await waitForRun(runId, (r) => r.status !== 'running');
      const output = run.jobs[0]?.output_file_ids[0] as string;
      expectProblem(
        await t.http.delete(`${project}/runs/${runId}`).set('Authorization', viewer.auth),
        403,
        'forbidden',
      );
      await t.http.delete(`${project}/runs/${runId}`).set('Authorization', member.auth).expect(204);
      expectProblem(
        await t.http.get(`${project}/runs/${runId}`).set('Authorization', member.auth),
        404,
        'not-found',
      );
      expectProblem(
        await t.http.get(`${project}/files/${output}`).set('Authorization', member.auth),
        404,
        'not-found',
      );
      expect(existsSync(join(t.config.dataDir, 'jobs', `${run.jobs[0]?.id}-a1`))).toBe(false);
      await t.http.get(`${project}/files/${input}`).set('Authorization', member.auth).expect(200);
    });
  });

  describe('listRuns', () => {
    it('lists the project’s runs newest first, filtered by status', async () => {
      const res = await t.http
        .get(`${project}/runs`)
        .set('Authorization', viewer.auth)
        .query({ status: 'cancelled' })
        .expect(200);
      expect(res.body.items.length).toBeGreaterThanOrEqual(1);
      expect(res.body.items.every((r: RunBody) => r.status === 'cancelled')).toBe(true);
    });
  });
});
