// Bad input, whatever its shape, is a declared 4xx problem that changes nothing: the cases the
// contract fuzzer (fuzz.test.ts) found on the code before they were fixed, kept as they were found,
// plus the problems' caching headers.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { loadBundledSpec } from '../../src/app.js';
import { demoModulesPath, repoRoot } from '../../src/paths.js';
import { specOperations } from '../../src/http/dispatch.js';
import { join } from 'node:path';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

const nested = (levels: number, inner = '') => `${'['.repeat(levels)}${inner}${']'.repeat(levels)}`;

describe.each(testEngines())('hardening (%s)', (engine) => {
  let t: TestApp;
  let alice: Login;
  const files = '/api/v1/projects/user-alice/files';

  beforeAll(async () => {
    t = await createTestApp(engine, {
      config: {
        modules: [
          { id: 'demo', name: 'Demo', path: demoModulesPath },
          { id: 'testing', name: 'Test modules', path: join(repoRoot, 'test', 'fixtures', 'modules') },
        ],
      },
    });
    alice = await t.login('alice');
  });
  afterAll(() => t.close());

  describe('JSON bodies nested far too deep', () => {
    it.each([10_000, 300_000])('are a 400 at %i levels, before authentication and after', async (levels) => {
      for (const auth of [null, alice.auth]) {
        const req = t.http.post('/api/v1/projects').set('Content-Type', 'application/json');
        if (auth) req.set('Authorization', auth);
        expectProblem(await req.send(nested(levels)), 400, 'bad-request');
      }
      const inOptions = `{"catalog_id":"demo","package":"echo","options":{"a":${nested(10_000)}}}`;
      expectProblem(
        await t.http
          .post('/api/v1/projects/user-alice/services')
          .set('Authorization', alice.auth)
          .set('Content-Type', 'application/json')
          .send(inOptions),
        400,
        'bad-request',
      );
      expect((await t.http.get('/api/v1/projects').set('Authorization', alice.auth)).body.items).toHaveLength(
        1,
      );
    });
  });

  describe('non-finite numbers', () => {
    const lists = specOperations(loadBundledSpec()).filter(
      (op) => op.method === 'get' && /^list[A-Z]/.test(op.operationId),
    );

    it('are refused as every list operation’s limit (400), which then lists nothing', async () => {
      expect(lists.length).toBeGreaterThan(15);
      for (const op of lists) {
        const path = `/api/v1${op.path
          .replace('{projectId}', 'user-alice')
          .replace('{catalogId}', 'demo')
          .replace('{serviceId}', 'svc_00000000000000000000')}`;
        for (const limit of ['Infinity', '-Infinity', '%2BInfinity', '1e999', '-1e999', 'NaN']) {
          const res = await t.http.get(`${path}?limit=${limit}`).set('Authorization', alice.auth);
          expectProblem(res, 400, 'validation');
          expect(res.body.errors).toEqual(
            expect.arrayContaining([expect.objectContaining({ location: 'query', pointer: '/limit' })]),
          );
        }
      }
    });

    it('are refused in JSON bodies, in typed fields and free-form options alike (400)', async () => {
      const post = (path: string, text: string) =>
        t.http.post(path).set('Authorization', alice.auth).set('Content-Type', 'application/json').send(text);
      const runs = await post(
        '/api/v1/projects/user-alice/benchmark-runs',
        '{"plan":"quick","samples":1e999}',
      );
      expectProblem(runs, 400, 'validation');
      expect(runs.body.errors).toEqual([
        { location: 'body', pointer: '/samples', message: 'must be a finite number' },
      ]);
      const launch = await post(
        '/api/v1/projects/user-alice/services?dryRun=true',
        '{"catalog_id":"demo","package":"echo","options":{"deep":{"n":[1,-1e400]}}}',
      );
      expectProblem(launch, 400, 'validation');
      expect(launch.body.errors).toEqual([
        { location: 'body', pointer: '/options/deep/n/1', message: 'must be a finite number' },
      ]);
    });
  });

  describe('listModuleSources', () => {
    it('follows the list contract: limit, next_cursor, Link, and a foreign cursor refused', async () => {
      const first = await t.http.get('/api/v1/module-sources?limit=1').expect(200);
      expect(first.body.items.map((s: { id: string }) => s.id)).toEqual(['demo']);
      expect(first.headers.link).toContain('rel="next"');
      const second = await t.http
        .get(`/api/v1/module-sources?limit=1&cursor=${first.body.next_cursor as string}`)
        .expect(200);
      expect(second.body).toMatchObject({ items: [{ id: 'testing' }], next_cursor: null });
      expectProblem(
        await t.http.get('/api/v1/module-sources?cursor=bm90LWEtY3Vyc29y'),
        400,
        'invalid-cursor',
      );
    });
  });

  describe('uploadFile, multipart and raw alike', () => {
    const badNames = ['../x', 'a\u0000b', 'a\r\nb', 'x'.repeat(5000), '..'];

    const multipart = (fields: [string, string][], filename = 'ok.txt') => {
      const boundary = 'hardening-1f2e3d';
      let body = '';
      for (const [name, value] of fields) {
        body += `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
      }
      body += `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\n\r\nhello\r\n--${boundary}--\r\n`;
      return t.http
        .post(files)
        .set('Authorization', alice.auth)
        .set('Content-Type', `multipart/form-data; boundary=${boundary}`)
        .send(body);
    };

    it('refuses a name outside the contract in a field, as the filename, and in the query (400)', async () => {
      for (const name of badNames) {
        const field = await multipart([['name', name]]);
        expectProblem(field, 400, 'validation');
        expect(field.body.errors[0]).toMatchObject({ location: 'body', pointer: '/name' });
        if (!name.includes('\r') && name !== '../x') {
          // A filename loses any directory part ('..' becomes none) and cannot hold CR or LF in a
          // part header; a NUL there makes the body malformed. Whatever remains, it is refused.
          const filename = await multipart([], name);
          expect(filename.status).toBe(400);
          if (name.length > 255) {
            expectProblem(filename, 400, 'validation');
            expect(filename.body.errors[0]).toMatchObject({
              location: 'body',
              pointer: '/file (its filename)',
            });
          }
        }
        const raw = await t.http
          .post(`${files}?name=${encodeURIComponent(name)}`)
          .set('Authorization', alice.auth)
          .set('Content-Type', 'application/octet-stream')
          .send(Buffer.from('hello'));
        expectProblem(raw, 400, 'validation');
      }
      expect((await t.http.get(files).set('Authorization', alice.auth)).body.items).toEqual([]);
    });

    it('refuses tags, media types and parents outside the contract in fields as in the query (400)', async () => {
      const cases: [string, string, string][] = [
        ['tags', 'ok,has space', 'tag=has%20space'],
        ['tags', `ok,${'t'.repeat(201)}`, `tag=${'t'.repeat(201)}`],
        [
          'tags',
          Array.from({ length: 51 }, (_, i) => `t${i}`).join(','),
          Array.from({ length: 51 }, (_, i) => `tag=t${i}`).join('&'),
        ],
        ['media_type', 'not a media type', 'media_type=not%20a%20media%20type'],
        ['media_type', 'text/plain\r\nX-Injected: 1', 'media_type=text%2Fplain%0D%0AX-Injected%3A%201'],
        ['parent_id', '../../etc', 'parent_id=..%2F..%2Fetc'],
      ];
      for (const [field, value, query] of cases) {
        expectProblem(await multipart([[field, value]]), 400, 'validation');
        const raw = await t.http
          .post(`${files}?name=ok.txt&${query}`)
          .set('Authorization', alice.auth)
          .set('Content-Type', 'application/octet-stream')
          .send(Buffer.from('hello'));
        expectProblem(raw, 400, 'validation');
      }
      expectProblem(await multipart([['colour', 'blue']]), 400, 'validation');
      expect((await t.http.get(files).set('Authorization', alice.auth)).body.items).toEqual([]);
    });

    it('still stores what the contract allows, from fields and the part alike (201)', async () => {
      const res = await multipart(
        [
          ['tags', 'kind=raw, source:lab'],
          ['media_type', 'text/csv; charset=utf-8'],
        ],
        'data.csv',
      );
      expect(res.status).toBe(201);
      expect(res.body).toMatchObject({
        name: 'data.csv',
        media_type: 'text/csv; charset=utf-8',
        tags: ['kind=raw', 'source:lab'],
      });
    });
  });

  describe('problem answers', () => {
    it('are never cached, and never shared when the request carried credentials', async () => {
      const authenticated = [
        await t.http.get('/api/v1/projects/nope').set('Authorization', alice.auth),
        await t.http.get('/api/v1/projects?limit=0').set('Authorization', alice.auth),
        await t.http.get('/api/v1/me').set('Authorization', 'Bearer atr_notavalidtokenatall00'),
        await t.http.post('/api/v1/projects').set('Authorization', alice.auth).send({ id: 'x' }),
      ];
      for (const res of authenticated) {
        expect(res.status).toBeGreaterThanOrEqual(400);
        expect(res.headers['cache-control']).toBe('private, no-store');
      }
      const anonymous = await t.http.get('/api/v1/catalogs/nope');
      expectProblem(anonymous, 404, 'not-found');
      expect(anonymous.headers['cache-control']).toBe('no-store');
    });
  });
});
