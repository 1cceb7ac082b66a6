// Modules (public browsing, admin refresh) and pipelines (tasks validated against function schemas,
// editable, reorderable, enabled flag, ETags).
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { demoModulesPath } from '../../src/paths.js';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

describe.each(testEngines())('modules and pipelines (%s)', (engine) => {
  let t: TestApp;
  let owner: Login;
  let member: Login;
  let viewer: Login;
  let admin: Login;
  // A copy of the demo modules that a test may break, to see a refresh report it.
  const modulesDir = mkdtempSync(join(tmpdir(), 'atrium-modules-'));
  const base = '/api/v1/projects/ml/pipelines';
  const demoTasks = [
    { module: 'csv', function: 'clean' },
    {
      module: 'ml',
      function: 'train',
      options: { target: 'passed', features: ['hours_studied', 'hours_slept'], model: 'logistic' },
    },
    { module: 'ml', function: 'predict' },
  ];

  beforeAll(async () => {
    cpSync(demoModulesPath, modulesDir, { recursive: true });
    t = await createTestApp(engine, {
      config: { modules: [{ id: 'lab', name: 'Lab modules', path: modulesDir }] },
    });
    [owner, member, viewer, admin] = await Promise.all([
      t.login('olive'),
      t.login('mark'),
      t.login('vic'),
      t.login('root', { admin: true }),
    ]);
    await t.createProject(owner, 'ml', { member: [member], viewer: [viewer] });
  });
  afterAll(async () => {
    await t.close();
    rmSync(modulesDir, { recursive: true, force: true });
  });

  describe('listModules', () => {
    it('lists the loaded modules with their functions, to anyone (200)', async () => {
      const res = await t.http.get('/api/v1/modules').expect(200);
      expect(res.body.items.map((m: { name: string }) => m.name)).toEqual(['csv', 'ml', 'text']);
      const csv = res.body.items[0];
      expect(csv.source_id).toBe('lab');
      expect(csv.functions.map((f: { name: string }) => f.name)).toEqual(
        expect.arrayContaining(['summary', 'filter-rows', 'clean']),
      );
    });
  });

  describe('getModule', () => {
    it('answers a module, and 404 for one that does not exist', async () => {
      const res = await t.http.get('/api/v1/modules/ml').expect(200);
      expect(res.body).toMatchObject({ name: 'ml', digest: expect.stringMatching(/^[0-9a-f]{64}$/) });
      expectProblem(await t.http.get('/api/v1/modules/nope'), 404, 'not-found');
    });
  });

  describe('getModuleFunction', () => {
    it('answers the options schema, inputs, output and limits of a function', async () => {
      const res = await t.http.get('/api/v1/modules/ml/functions/train').expect(200);
      expect(res.body).toMatchObject({
        module: 'ml',
        name: 'train',
        output: 'creates',
        runs_on: expect.arrayContaining(['local']),
        options_schema: { type: 'object' },
        inputs: { media_types: expect.arrayContaining(['text/csv']) },
      });
      expect(res.body.timeout_seconds).toBeGreaterThan(0);
      expectProblem(await t.http.get('/api/v1/modules/ml/functions/fly'), 404, 'not-found');
    });
  });

  describe('refreshModules', () => {
    it('reloads the directories, reporting a broken manifest and keeping the valid modules (200)', async () => {
      const broken = join(modulesDir, 'broken');
      cpSync(join(modulesDir, 'text'), broken, { recursive: true });
      writeFileSync(join(broken, 'module.yaml'), 'name: Broken Name\nfunctions: []\n');
      const res = await t.http.post('/api/v1/module-refreshes').set('Authorization', admin.auth).expect(200);
      expect(res.body.items).toEqual([
        expect.objectContaining({
          id: 'lab',
          status: 'loaded',
          module_count: 3,
          issues: [expect.objectContaining({ file: 'broken/module.yaml' })],
        }),
      ]);
      const sources = await t.http.get('/api/v1/module-sources').expect(200);
      expect(sources.body.items[0].issues).toHaveLength(1);
      rmSync(broken, { recursive: true, force: true });
      await t.http.post('/api/v1/module-refreshes').set('Authorization', admin.auth).expect(200);
    });

    it('is for administrators only (403)', async () => {
      expectProblem(
        await t.http.post('/api/v1/module-refreshes').set('Authorization', owner.auth),
        403,
        'forbidden',
      );
    });
  });

  describe('createPipeline', () => {
    it('stores the tasks with their options completed by defaults (201)', async () => {
      const res = await t.http
        .post(base)
        .set('Authorization', member.auth)
        .send({ name: 'clean-train-predict', tasks: demoTasks })
        .expect(201);
      expect(res.body).toMatchObject({
        name: 'clean-train-predict',
        enabled: true,
        created_by: member.user.id,
      });
      expect(res.body.tasks.map((task: { function: string }) => task.function)).toEqual([
        'clean',
        'train',
        'predict',
      ]);
      expect(res.body.tasks[1].options).toMatchObject({ target: 'passed', model: 'logistic' });
      expect(res.headers.location).toBe(`${base}/${res.body.id}`);
    });

    it('refuses unknown functions and options that break the schema, pointing at each (422)', async () => {
      const res = await t.http
        .post(base)
        .set('Authorization', member.auth)
        .send({
          name: 'bad',
          tasks: [
            { module: 'csv', function: 'teleport' },
            { module: 'ml', function: 'train', options: { model: 'quantum', target: 'passed' } },
            { module: 'nope', function: 'x' },
          ],
        });
      expectProblem(res, 422, 'unprocessable');
      const pointers = (res.body.errors as { pointer: string }[]).map((e) => e.pointer);
      expect(pointers).toEqual(expect.arrayContaining(['/tasks/0', '/tasks/1/options/model', '/tasks/2']));
    });

    it('refuses viewers (403) and malformed bodies (400)', async () => {
      expectProblem(
        await t.http.post(base).set('Authorization', viewer.auth).send({ name: 'x', tasks: demoTasks }),
        403,
        'forbidden',
      );
      expectProblem(
        await t.http.post(base).set('Authorization', member.auth).send({ name: 'x', tasks: [] }),
        400,
        'validation',
      );
    });
  });

  describe('updatePipeline', () => {
    it('reorders, edits and disables tasks with If-Match, and refuses a stale ETag (412)', async () => {
      const created = await t.http
        .post(base)
        .set('Authorization', member.auth)
        .send({
          name: 'text',
          tasks: [
            { module: 'text', function: 'word-count' },
            { module: 'text', function: 'change-case', options: { case: 'upper' } },
          ],
        })
        .expect(201);
      const path = `${base}/${created.body.id}`;
      const reordered = await t.http
        .patch(path)
        .set('Authorization', member.auth)
        .set('If-Match', created.headers.etag as string)
        .send({ tasks: [created.body.tasks[1], created.body.tasks[0]], enabled: false })
        .expect(200);
      expect(reordered.body.tasks.map((task: { function: string }) => task.function)).toEqual([
        'change-case',
        'word-count',
      ]);
      expect(reordered.body.enabled).toBe(false);
      expectProblem(
        await t.http
          .patch(path)
          .set('Authorization', member.auth)
          .set('If-Match', created.headers.etag as string)
          .send({ name: 'x' }),
        412,
        'precondition-failed',
      );
      const invalid = await t.http
        .patch(path)
        .set('Authorization', member.auth)
        .send({ tasks: [{ module: 'text', function: 'change-case', options: { case: 'sideways' } }] });
      expectProblem(invalid, 422, 'unprocessable');
      const listed = await t.http
        .get(base)
        .set('Authorization', viewer.auth)
        .query({ enabled: false })
        .expect(200);
      expect(listed.body.items.map((p: { id: string }) => p.id)).toEqual([created.body.id]);
    });
  });

  describe('deletePipeline', () => {
    it('deletes for its creator and owners, not for other members (403)', async () => {
      const created = await t.http
        .post(base)
        .set('Authorization', owner.auth)
        .send({ name: 'gone', tasks: demoTasks })
        .expect(201);
      expectProblem(
        await t.http.delete(`${base}/${created.body.id}`).set('Authorization', member.auth),
        403,
        'forbidden',
      );
      await t.http.delete(`${base}/${created.body.id}`).set('Authorization', owner.auth).expect(204);
      expectProblem(
        await t.http.get(`${base}/${created.body.id}`).set('Authorization', owner.auth),
        404,
        'not-found',
      );
    });
  });
});
