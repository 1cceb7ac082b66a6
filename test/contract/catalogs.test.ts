import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { CatalogDir } from '../fixtures/catalog.js';
import { demoCatalogPath } from '../../src/paths.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

function labCatalog(): CatalogDir {
  const dir = new CatalogDir()
    .add({ name: 'jupyter', version: '1.0.0', title: 'Jupyter', keywords: ['Notebook', 'python'] })
    .add({
      name: 'jupyter',
      version: '1.10.0',
      title: 'Jupyter Lab',
      keywords: ['notebook', 'python', 'ide'],
    })
    .add({ name: 'jupyter', version: '2.0.0-rc.1', title: 'Jupyter next', keywords: ['notebook'] })
    .add({
      name: 'rstudio',
      version: '0.9.0',
      title: 'RStudio',
      description: 'R IDE, 100% open',
      keywords: ['ide', 'r'],
    })
    .add({ name: 'mlflow', version: '2.1.0', title: 'MLflow', keywords: ['tracking', 'python'] })
    .add({ name: 'nightly', version: '0.1.0-alpha', title: 'Nightly build', keywords: ['python'] });
  // Broken manifests are reported on the catalog; the rest is listed.
  dir.write('broken', '1.0.0.yaml', 'name: broken\nversion: 1.0.0\ntitle: [unclosed\n');
  dir.add({ name: 'misnamed', version: '1.0.0' }, '1.0.0.yaml');
  dir.write(
    'misnamed',
    '1.0.0.yaml',
    'name: other-name\nversion: 1.0.0\ntitle: x\nrun: {local: {command: [x]}}\n',
  );
  dir.add({
    name: 'badopts',
    version: '1.0.0',
    options: { type: 'object', required: ['token'], properties: { token: { type: 'string' } } },
  });
  return dir;
}

describe.each(testEngines())('catalogs (%s)', (engine) => {
  let t: TestApp;
  let lab: CatalogDir;
  let admin: Login;
  let alice: Login;

  beforeAll(async () => {
    lab = labCatalog();
    t = await createTestApp(engine, {
      config: {
        catalogs: [
          {
            id: 'lab',
            name: 'Lab catalog',
            description: 'Our services',
            maintainer: 'platform team',
            path: lab.path,
          },
          { id: 'demo', name: 'Demo', path: demoCatalogPath },
          { id: 'gone', name: 'Gone', path: join(lab.path, 'does-not-exist') },
        ],
      },
    });
    admin = await t.login('root', { admin: true });
    alice = await t.login('alice');
  });
  afterAll(async () => {
    await t.close();
    rmSync(lab.path, { recursive: true, force: true });
  });

  describe('listCatalogs', () => {
    it('lists catalogs in configuration order with their status, without authentication (200)', async () => {
      const res = await t.http.get('/api/v1/catalogs').expect(200);
      expect(
        res.body.items.map((c: { id: string; status: string; package_count: number }) => [
          c.id,
          c.status,
          c.package_count,
        ]),
      ).toEqual([
        ['lab', 'degraded', 4],
        ['demo', 'ok', 4],
        ['gone', 'error', 0],
      ]);
    });

    it('paginates (and rejects a cursor of another list) (400)', async () => {
      const first = await t.http.get('/api/v1/catalogs?limit=1').expect(200);
      const second = await t.http
        .get(`/api/v1/catalogs?limit=1&cursor=${first.body.next_cursor}`)
        .expect(200);
      expect(second.body.items[0].id).toBe('demo');
      const packages = await t.http.get('/api/v1/catalogs/lab/packages?limit=1').expect(200);
      expectProblem(
        await t.http.get(`/api/v1/catalogs?cursor=${packages.body.next_cursor}`),
        400,
        'invalid-cursor',
      );
    });
  });

  describe('getCatalog', () => {
    it('reports the manifests it rejected, with their file and reason (200)', async () => {
      const res = await t.http.get('/api/v1/catalogs/lab').expect(200);
      expect(res.body).toMatchObject({
        id: 'lab',
        name: 'Lab catalog',
        maintainer: 'platform team',
        status: 'degraded',
      });
      const files = res.body.issues.map((i: { file: string }) => i.file).sort();
      expect(files).toEqual(['badopts/1.0.0.yaml', 'broken/1.0.0.yaml', 'misnamed/1.0.0.yaml']);
      const byFile = Object.fromEntries(
        res.body.issues.map((i: { file: string; message: string }) => [i.file, i.message]),
      );
      expect(byFile['broken/1.0.0.yaml']).toMatch(/YAML/);
      expect(byFile['misnamed/1.0.0.yaml']).toMatch(/must match its directory/);
      expect(byFile['badopts/1.0.0.yaml']).toMatch(/defaults do not validate/);
    });

    it('says when a source cannot be read, without revealing server paths', async () => {
      const res = await t.http.get('/api/v1/catalogs/gone').expect(200);
      expect(res.body.status).toBe('error');
      expect(JSON.stringify(res.body)).not.toContain(lab.path);
    });

    it('rejects a malformed id (400)', async () => {
      expectProblem(await t.http.get('/api/v1/catalogs/Lab'), 400, 'validation');
    });

    it('answers 404 for an unknown catalog', async () => {
      expectProblem(await t.http.get('/api/v1/catalogs/nope'), 404, 'not-found');
    });
  });

  describe('listPackages', () => {
    it('lists packages by name with their latest release (200)', async () => {
      const res = await t.http.get('/api/v1/catalogs/lab/packages').expect(200);
      expect(
        res.body.items.map((p: { name: string; latest_version: string }) => [p.name, p.latest_version]),
      ).toEqual([
        ['jupyter', '1.10.0'],
        ['mlflow', '2.1.0'],
        ['nightly', '0.1.0-alpha'],
        ['rstudio', '0.9.0'],
      ]);
      expect(res.body.items[0]).toMatchObject({
        catalog_id: 'lab',
        title: 'Jupyter Lab',
        keywords: ['notebook', 'python', 'ide'],
      });
    });

    it('filters by keywords (all must match, any case) and by text', async () => {
      const names = async (query: string) =>
        (await t.http.get(`/api/v1/catalogs/lab/packages?${query}`).expect(200)).body.items.map(
          (p: { name: string }) => p.name,
        );
      expect(await names('keyword=python')).toEqual(['jupyter', 'mlflow', 'nightly']);
      expect(await names('keyword=Python&keyword=IDE')).toEqual(['jupyter']);
      expect(await names('q=studio')).toEqual(['rstudio']);
      expect(await names('q=100%25')).toEqual(['rstudio']);
      expect(await names('q=_')).toEqual([]);
      expect(await names('keyword=python&q=flow')).toEqual(['mlflow']);
    });

    it('walks every page with the cursor, each package once', async () => {
      const seen: string[] = [];
      let url = '/api/v1/catalogs/lab/packages?limit=1';
      for (let i = 0; i < 10 && url; i++) {
        const res = await t.http.get(url).expect(200);
        seen.push(...res.body.items.map((p: { name: string }) => p.name));
        url = res.headers.link ? (/<([^>]+)>/.exec(res.headers.link)?.[1] ?? '') : '';
      }
      expect(seen).toEqual(['jupyter', 'mlflow', 'nightly', 'rstudio']);
    });

    it('rejects unknown parameters and empty search (400)', async () => {
      expectProblem(await t.http.get('/api/v1/catalogs/lab/packages?sort=name'), 400, 'validation');
      expectProblem(await t.http.get('/api/v1/catalogs/lab/packages?q='), 400, 'validation');
    });

    it('answers 404 for an unknown catalog', async () => {
      expectProblem(await t.http.get('/api/v1/catalogs/nope/packages'), 404, 'not-found');
    });
  });

  describe('getPackage', () => {
    it('returns the package with its versions, newest first (200)', async () => {
      const res = await t.http.get('/api/v1/catalogs/lab/packages/jupyter').expect(200);
      expect(res.body.versions.map((v: { version: string }) => v.version)).toEqual([
        '2.0.0-rc.1',
        '1.10.0',
        '1.0.0',
      ]);
      expect(res.body).toMatchObject({ name: 'jupyter', latest_version: '1.10.0', home: null });
    });

    it('rejects a malformed name (400)', async () => {
      expectProblem(await t.http.get('/api/v1/catalogs/lab/packages/Jupyter'), 400, 'validation');
    });

    it('answers 404 for an unknown or rejected package', async () => {
      expectProblem(await t.http.get('/api/v1/catalogs/lab/packages/spark'), 404, 'not-found');
      expectProblem(await t.http.get('/api/v1/catalogs/lab/packages/broken'), 404, 'not-found');
    });
  });

  describe('getPackageVersion', () => {
    it('returns the options schema, defaults, resources and run specs (200)', async () => {
      const res = await t.http.get('/api/v1/catalogs/demo/packages/echo/versions/1.0.0').expect(200);
      expect(res.body).toMatchObject({
        catalog_id: 'demo',
        package_name: 'echo',
        version: '1.0.0',
        defaults: { greeting: 'hello', delay_ms: 0 },
        resources: { cpu: '100m', memory: '128Mi', gpu: 0 },
      });
      expect(res.body.options_schema.properties.greeting.type).toBe('string');
      expect(res.body.run.local).toMatchObject({
        command: ['node', '${package.dir}/echo.mjs'],
        health: { port: 'http', path: '/healthz' },
      });
      expect(res.body.run.cluster).toMatchObject({ image: 'node:20-alpine', files: ['echo.mjs'] });
    });

    it('resolves `latest` to the newest release', async () => {
      const res = await t.http.get('/api/v1/catalogs/lab/packages/jupyter/versions/latest').expect(200);
      expect(res.body.version).toBe('1.10.0');
    });

    it('rejects a malformed version (400)', async () => {
      expectProblem(
        await t.http.get('/api/v1/catalogs/lab/packages/jupyter/versions/1.0%20.0'),
        400,
        'validation',
      );
    });

    it('answers 404 for an unknown version', async () => {
      expectProblem(
        await t.http.get('/api/v1/catalogs/lab/packages/jupyter/versions/9.9.9'),
        404,
        'not-found',
      );
      expectProblem(await t.http.get('/api/v1/catalogs/lab/packages/nope/versions/latest'), 404, 'not-found');
    });
  });

  describe('refreshCatalog', () => {
    it('reloads the catalog from its source (200)', async () => {
      lab.add({ name: 'spark', version: '3.5.0', title: 'Spark', keywords: ['big-data'] });
      const res = await t.http
        .post('/api/v1/catalogs/lab/refreshes')
        .set('Authorization', admin.auth)
        .expect(200);
      expect(res.body.package_count).toBe(5);
      await t.http.get('/api/v1/catalogs/lab/packages/spark/versions/3.5.0').expect(200);
    });

    it('serves a package page from memory until the catalog is loaded again, and the refreshed list at once', async () => {
      const names = async () =>
        (await t.http.get('/api/v1/catalogs/lab/packages?limit=100').expect(200)).body.items.map(
          (p: { name: string }) => p.name,
        );
      const before = await names();
      const queries: string[] = [];
      const onQuery = (q: { sql: string }) => queries.push(q.sql);
      t.database.knex.on('query', onQuery);
      try {
        expect(await names()).toEqual(before);
      } finally {
        t.database.knex.off('query', onQuery);
      }
      expect(queries).toEqual([]);
      lab.add({ name: 'zeppelin', version: '0.11.0', title: 'Zeppelin', keywords: ['notebook'] });
      expect(await names()).toEqual(before);
      await t.http.post('/api/v1/catalogs/lab/refreshes').set('Authorization', admin.auth).expect(200);
      expect(await names()).toEqual([...before, 'zeppelin'].sort());
    });

    it('keeps serving the previous packages when the source has vanished, marking the catalog in error', async () => {
      const tmp = new CatalogDir().add({ name: 'solo', version: '1.0.0' });
      const t2 = await createTestApp(engine, {
        config: { catalogs: [{ id: 'tmp', name: 'Tmp', path: tmp.path }] },
      });
      try {
        const root = await t2.login('root', { admin: true });
        rmSync(tmp.path, { recursive: true, force: true });
        const res = await t2.http
          .post('/api/v1/catalogs/tmp/refreshes')
          .set('Authorization', root.auth)
          .expect(200);
        expect(res.body.status).toBe('error');
        await t2.http.get('/api/v1/catalogs/tmp/packages/solo').expect(200);
      } finally {
        await t2.close();
      }
    });

    it('rejects a malformed id (400)', async () => {
      expectProblem(
        await t.http.post('/api/v1/catalogs/L!/refreshes').set('Authorization', admin.auth),
        400,
        'validation',
      );
    });

    it('needs credentials (401)', async () => {
      expectProblem(await t.http.post('/api/v1/catalogs/lab/refreshes'), 401, 'unauthorized');
    });

    it('is for administrators (403)', async () => {
      expectProblem(
        await t.http.post('/api/v1/catalogs/lab/refreshes').set('Authorization', alice.auth),
        403,
        'forbidden',
      );
    });

    it('answers 404 for an unknown catalog', async () => {
      expectProblem(
        await t.http.post('/api/v1/catalogs/nope/refreshes').set('Authorization', admin.auth),
        404,
        'not-found',
      );
    });
  });
});
