// The route lookup of express-openapi-validator as patched by
// scripts/patches/express-openapi-validator+5.6.2.patch (a segment trie instead of one path-to-regexp
// per route and request): which operation a URL reaches, with which path parameters.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import express, { type Express } from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import { pathToRegexp } from 'path-to-regexp';
import request from 'supertest';
import { problemTypeBase } from '../../../src/errors.js';
import { openapiMatch } from '../../../src/http/locals.js';
import { requestContext } from '../../../src/http/middleware.js';
import { problemMiddleware } from '../../../src/http/problem.js';
import { createLogger } from '../../../src/log.js';

type ApiSpec = Parameters<typeof OpenApiValidator.middleware>[0]['apiSpec'];
type Method = 'get' | 'put' | 'post' | 'delete' | 'patch';

const basePath = '/api/v1';

function operation(operationId: string, template: string) {
  const names = [...template.matchAll(/\{([^}]+)\}/g)].map((m) => m[1] as string);
  return {
    operationId,
    parameters: names.map((name) => ({
      name,
      in: 'path' as const,
      required: true,
      schema: { type: 'string' as const },
    })),
    responses: { '200': { description: 'OK' } },
  };
}

/** A spec from `{template: {method: operationId}}`, under the base path. */
function specOf(paths: Record<string, Partial<Record<Method, string>>>): ApiSpec {
  const spec = {
    openapi: '3.1.0',
    info: { title: 'Route lookup', version: '1.0.0' },
    servers: [{ url: basePath }],
    paths: Object.fromEntries(
      Object.entries(paths).map(([template, methods]) => [
        template,
        Object.fromEntries(
          Object.entries(methods).map(([method, operationId]) => [method, operation(operationId, template)]),
        ),
      ]),
    ),
  };
  // The validator's deep-immutable document type makes every optional field required; src/app.ts
  // passes its spec the same way.
  return spec as never;
}

/** The validator with requests validated, and a handler answering what it matched. */
function appFor(spec: ApiSpec, options: { caseSensitive?: boolean } = {}): Express {
  const app = express();
  if (options.caseSensitive) app.set('case sensitive routing', true);
  app.use(requestContext(createLogger('silent')));
  app.use(
    OpenApiValidator.middleware({
      apiSpec: spec,
      validateRequests: true,
      validateResponses: false,
      validateSecurity: false,
    }),
  );
  app.use((req, res) => {
    const match = openapiMatch(req);
    res.json({
      route: match?.openApiRoute ?? null,
      operationId: match?.schema.operationId ?? null,
      params: match?.pathParams ?? null,
    });
  });
  app.use(problemMiddleware);
  return app;
}

const ambiguousSpec = specOf({
  '/items': { get: 'listItems' },
  '/items/{id}': { get: 'getItem', delete: 'deleteItem' },
  '/items/special': { get: 'getSpecialItem' },
  '/items/{id}/parts/{partId}': { get: 'getPart' },
  '/items/special/parts/main': { get: 'getMainPart' },
  '/a/{x}/b/{y}': { get: 'getB' },
  '/a/literal/c': { get: 'getLiteralC' },
  '/users/me': { get: 'getMe' },
  '/users/{userId}': { get: 'getUser', put: 'replaceUser' },
  '/Mixed/Case': { get: 'getMixedCase' },
  '/reports/{year}-{month}': { get: 'getReport' },
});

describe('route lookup of the patched express-openapi-validator', () => {
  it('runs against the installed validator with the patch applied', () => {
    const file = createRequire(import.meta.url).resolve(
      'express-openapi-validator/dist/middlewares/openapi.metadata.js',
    );
    expect(readFileSync(file, 'utf8')).toContain('function buildRouteIndex(sensitive, strict)');
  });

  const api = request(appFor(ambiguousSpec));
  const expectRoute = async (path: string, operationId: string, params: Record<string, string> = {}) => {
    const res = await api.get(path).expect(200);
    expect(res.body).toMatchObject({ operationId, params });
    expect(Object.keys(res.body.params as object).sort()).toEqual(Object.keys(params).sort());
  };

  describe('concrete paths win over templated ones', () => {
    it('matches /items/special to its own operation, and other ids to the template', async () => {
      await expectRoute('/api/v1/items/special', 'getSpecialItem');
      await expectRoute('/api/v1/items/specials', 'getItem', { id: 'specials' });
      await expectRoute('/api/v1/items/42', 'getItem', { id: '42' });
    });

    it('matches /users/me whichever order the spec lists the paths in', async () => {
      await expectRoute('/api/v1/users/me', 'getMe');
      await expectRoute('/api/v1/users/u-1', 'getUser', { userId: 'u-1' });
    });

    it('prefers a concrete path at every depth', async () => {
      await expectRoute('/api/v1/items/special/parts/main', 'getMainPart');
      await expectRoute('/api/v1/items/special/parts/p2', 'getPart', { id: 'special', partId: 'p2' });
      await expectRoute('/api/v1/items/x/parts/main', 'getPart', { id: 'x', partId: 'main' });
    });

    it('falls back to the template when the concrete branch leads nowhere', async () => {
      await expectRoute('/api/v1/a/literal/c', 'getLiteralC');
      await expectRoute('/api/v1/a/literal/b/2', 'getB', { x: 'literal', y: '2' });
      await expectRoute('/api/v1/a/1/b/2', 'getB', { x: '1', y: '2' });
    });

    it('answers the OpenAPI template of the matched path, with the base path', async () => {
      const res = await api.get('/api/v1/a/1/b/2').expect(200);
      expect(res.body.route).toBe('/api/v1/a/{x}/b/{y}');
    });

    it('matches a path whose template sits inside a segment', async () => {
      await expectRoute('/api/v1/reports/2024-05', 'getReport', { year: '2024', month: '05' });
    });
  });

  describe('path parameters', () => {
    it('decodes percent-escapes', async () => {
      await expectRoute('/api/v1/items/a%20b', 'getItem', { id: 'a b' });
      await expectRoute('/api/v1/items/caf%C3%A9', 'getItem', { id: 'café' });
      await expectRoute('/api/v1/items/a%2Fb', 'getItem', { id: 'a/b' });
      await expectRoute('/api/v1/items/100%25', 'getItem', { id: '100%' });
      await expectRoute('/api/v1/a/%7Bx%7D/b/%3F', 'getB', { x: '{x}', y: '?' });
    });

    it('keeps a plus sign as it is', async () => {
      await expectRoute('/api/v1/items/a+b', 'getItem', { id: 'a+b' });
    });

    it('refuses a malformed escape with 400', async () => {
      for (const path of ['/api/v1/items/%E0%A4%A', '/api/v1/items/%', '/api/v1/a/%zz/b/1']) {
        const res = await api.get(path).expect(400);
        expect(res.body.type).toBe(`${problemTypeBase}validation`);
      }
    });

    it('does not take an escaped segment for a concrete one', async () => {
      await expectRoute('/api/v1/items/%73pecial', 'getItem', { id: 'special' });
    });
  });

  describe('trailing slash', () => {
    it('matches a path with one trailing slash', async () => {
      await expectRoute('/api/v1/items/', 'listItems');
      await expectRoute('/api/v1/items/special/', 'getSpecialItem');
      await expectRoute('/api/v1/items/x/', 'getItem', { id: 'x' });
      await expectRoute('/api/v1/a/1/b/2/', 'getB', { x: '1', y: '2' });
    });

    it('does not match two trailing slashes or an empty segment', async () => {
      await api.get('/api/v1/items/x//').expect(404);
      await api.get('/api/v1/items//parts/p').expect(404);
      await api.get('/api/v1/a//b/2').expect(404);
    });
  });

  describe('spec paths that end in a slash', () => {
    const slashed = request(appFor(specOf({ '/': { get: 'getRoot' }, '/things/': { get: 'listThings' } })));

    it('are reached with or without the slash, the root of the base path included', async () => {
      for (const path of ['/api/v1/', '/api/v1']) {
        expect((await slashed.get(path).expect(200)).body.operationId).toBe('getRoot');
      }
      for (const path of ['/api/v1/things/', '/api/v1/things']) {
        expect((await slashed.get(path).expect(200)).body.operationId).toBe('listThings');
      }
    });
  });

  describe('routes with a parameter sharing its segment with literal text', () => {
    const mixed = request(
      appFor(
        specOf({
          '/{collection}': { get: 'getCollection' },
          '/things:search': { get: 'searchThings' },
          '/items/{id}': { get: 'getItem' },
          '/items/{id}:archive': { post: 'archiveItem' },
          '/files/{name}.json': { get: 'getJsonFile' },
          '/files/index.json': { get: 'getIndex' },
        }),
      ),
    );

    it('win over a template with less literal text', async () => {
      expect((await mixed.get('/api/v1/things:search').expect(200)).body.operationId).toBe('searchThings');
      const archived = await mixed.post('/api/v1/items/7:archive').expect(200);
      expect(archived.body).toMatchObject({ operationId: 'archiveItem', params: { id: '7' } });
    });

    it('lose to a concrete path with more literal text', async () => {
      expect((await mixed.get('/api/v1/files/index.json').expect(200)).body.operationId).toBe('getIndex');
      const other = await mixed.get('/api/v1/files/data.json').expect(200);
      expect(other.body).toMatchObject({ operationId: 'getJsonFile', params: { name: 'data' } });
    });

    it('leave the plain templates their own URLs', async () => {
      expect((await mixed.get('/api/v1/books').expect(200)).body).toMatchObject({
        operationId: 'getCollection',
      });
      expect((await mixed.get('/api/v1/items/7').expect(200)).body).toMatchObject({ operationId: 'getItem' });
    });
  });

  describe('methods', () => {
    it('reaches each operation of a path by its method', async () => {
      const res = await api.delete('/api/v1/items/7').expect(200);
      expect(res.body).toMatchObject({ operationId: 'deleteItem', params: { id: '7' } });
      const put = await api.put('/api/v1/users/u1').expect(200);
      expect(put.body.operationId).toBe('replaceUser');
    });

    it('answers 405 with the allowed methods in Allow for a method the path lacks', async () => {
      const res = await api.post('/api/v1/items/7').expect(405);
      expect(res.body.type).toBe(`${problemTypeBase}method-not-allowed`);
      expect(res.headers.allow?.split(/,\s*/).sort()).toEqual(['DELETE', 'GET']);
    });

    it('answers 405 for a concrete path even when its templated twin has the method', async () => {
      const res = await api.delete('/api/v1/items/special').expect(405);
      expect(res.headers.allow).toBe('GET');
    });
  });

  describe('unknown paths', () => {
    it('answers 404 under the base path', async () => {
      for (const path of ['/api/v1/nothing', '/api/v1/items/x/y', '/api/v1/items/x/parts', '/api/v1/a/1/b']) {
        const res = await api.get(path).expect(404);
        expect(res.body.type).toBe(`${problemTypeBase}not-found`);
      }
    });

    it('leaves paths outside the base path to the rest of the app', async () => {
      const res = await api.get('/elsewhere/items/special').expect(200);
      expect(res.body).toEqual({ route: null, operationId: null, params: null });
    });
  });

  describe('letter case', () => {
    it('matches concrete segments whatever their case by default, as Express does', async () => {
      await expectRoute('/api/v1/ITEMS/Special', 'getSpecialItem');
      await expectRoute('/API/V1/items/special', 'getSpecialItem');
      await expectRoute('/api/v1/mixed/case', 'getMixedCase');
      await expectRoute('/api/v1/MIXED/CASE', 'getMixedCase');
    });

    it('keeps the case of parameter values', async () => {
      await expectRoute('/api/v1/Items/AbC', 'getItem', { id: 'AbC' });
      await expectRoute('/api/v1/USERS/ME', 'getMe');
      await expectRoute('/api/v1/users/Me2', 'getUser', { userId: 'Me2' });
    });

    it('matches case exactly when the app turns on case-sensitive routing', async () => {
      const sensitive = request(appFor(ambiguousSpec, { caseSensitive: true }));
      expect((await sensitive.get('/api/v1/Mixed/Case').expect(200)).body.operationId).toBe('getMixedCase');
      await sensitive.get('/api/v1/mixed/case').expect(404);
      const res = await sensitive.get('/api/v1/items/Special').expect(200);
      expect(res.body).toMatchObject({ operationId: 'getItem', params: { id: 'Special' } });
    });
  });
});

/** A deterministic pseudo-random generator (mulberry32), so that a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Random {
  constructor(readonly next: () => number) {}
  int(below: number): number {
    return Math.floor(this.next() * below);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: ArrayLike<T>): T {
    return items[this.int(items.length)] as T;
  }
  text(alphabet: string, min: number, max: number): string {
    let s = '';
    const length = min + this.int(max - min + 1);
    for (let i = 0; i < length; i++) s += alphabet[this.int(alphabet.length)];
    return s;
  }
}

interface GeneratedRoute {
  template: string;
  segments: { literal?: string; param?: string }[];
  operationId: string;
}

const letters = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const wordCharacters = `${letters}0123456789-._~`;

/**
 * Templates without ambiguity: at every level a path continues either with one parameter or with
 * concrete segments (distinct regardless of case), never both, so no URL can match two templates.
 */
function generateRoutes(rnd: Random): GeneratedRoute[] {
  const routes: GeneratedRoute[] = [];
  let paramCount = 0;
  const grow = (segments: GeneratedRoute['segments'], depth: number): void => {
    if (routes.length >= 40) return;
    if (depth > 0 && (depth === 5 || rnd.chance(0.5))) {
      const template = segments.map((s) => s.literal ?? `{${s.param}}`).join('/');
      routes.push({ template: `/${template}`, segments, operationId: `op${routes.length}` });
    }
    if (depth === 5 || (depth > 0 && rnd.chance(0.3))) return;
    if (depth > 0 && rnd.chance(0.35)) {
      grow([...segments, { param: `p${paramCount++}${rnd.text(letters, 0, 3)}` }], depth + 1);
      return;
    }
    const seen = new Set<string>();
    const count = 1 + rnd.int(3);
    for (let i = 0; i < count; i++) {
      const word = rnd.pick(letters) + rnd.text(wordCharacters, 0, 7);
      if (seen.has(word.toLowerCase())) continue;
      seen.add(word.toLowerCase());
      grow([...segments, { literal: word }], depth + 1);
    }
  };
  while (routes.length === 0) grow([], 0);
  return routes;
}

const valueCharacters = `${letters}0123456789-._~!$&'()*+,;=:@`;
const escapes = ['%20', '%2F', '%C3%A9', '%25', '%3F', '%23', '%E2%9C%93', '%7e'];
const malformed = ['%E0%A4%A', '%', '%zz', '%C3'];

function paramValue(rnd: Random): string {
  let value = '';
  const parts = 1 + rnd.int(3);
  for (let i = 0; i < parts; i++) {
    value += rnd.chance(0.3) ? rnd.pick(escapes) : rnd.text(valueCharacters, 1, 6);
  }
  // A segment of dots would be a relative reference, not a value.
  return /^\.+$/.test(value) ? `v${value}` : value;
}

function recase(rnd: Random, text: string): string {
  if (rnd.chance(0.5)) return text;
  return [...text].map((c) => (rnd.chance(0.5) ? c.toUpperCase() : c.toLowerCase())).join('');
}

/** A request path: mostly instances of a route, some near misses and some noise. */
function requestPath(rnd: Random, routes: GeneratedRoute[]): string {
  const route = rnd.pick(routes);
  const segments = route.segments.map((s) =>
    s.literal !== undefined ? recase(rnd, s.literal) : paramValue(rnd),
  );
  const roll = rnd.next();
  if (roll < 0.08) {
    const index = route.segments.findIndex((s) => s.param !== undefined);
    if (index >= 0) segments[index] = `${segments[index]}${rnd.pick(malformed)}`;
  } else if (roll < 0.16) {
    segments.pop();
  } else if (roll < 0.24) {
    segments.push(rnd.text(wordCharacters, 1, 5));
  } else if (roll < 0.32) {
    segments[rnd.int(segments.length)] = rnd.pick(letters) + rnd.text(wordCharacters, 0, 4);
  } else if (roll < 0.36) {
    segments.splice(rnd.int(segments.length + 1), 0, '');
  } else if (roll < 0.42) {
    const noise: string[] = [];
    for (let i = rnd.int(5); i >= 0; i--) noise.push(rnd.text(wordCharacters, 1, 6));
    segments.splice(0, segments.length, ...noise);
  }
  const base = rnd.chance(0.15) ? recase(rnd, basePath) : basePath;
  const trailing = rnd.pick(['', '', '', '', '/', '//']);
  return `${base}/${segments.join('/')}${trailing}`;
}

interface Outcome {
  status: number;
  route?: string | null;
  params?: Record<string, string> | null;
}

/** What path-to-regexp (the lookup the patch replaces) makes of a path. */
function referenceLookup(routes: GeneratedRoute[], path: string, sensitive: boolean): Outcome {
  const matches = routes.flatMap((route) => {
    const express = `${basePath}${route.template}`.replace(/\{([^}]+)\}/g, ':$1');
    const { regexp, keys } = pathToRegexp(express, { sensitive });
    const found = regexp.exec(path);
    return found ? [{ route, keys: keys.map((k) => k.name), values: found.slice(1) }] : [];
  });
  // The generator promises specs without ambiguity; check it keeps that promise.
  expect(matches.length).toBeLessThanOrEqual(1);
  const [match] = matches;
  if (!match) return path.startsWith(basePath) ? { status: 404 } : { status: 200, route: null, params: null };
  try {
    const params = Object.fromEntries(
      match.keys.map((key, i) => [key, decodeURIComponent(match.values[i] ?? '')]),
    );
    return { status: 200, route: `${basePath}${match.route.template}`, params };
  } catch {
    return { status: 400 };
  }
}

/** A raw GET over loopback: the path goes out byte for byte, with no URL normalisation. */
function rawGet(port: number, path: string, agent: http.Agent): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'GET', agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        if (status !== 200) return resolve({ status });
        const parsed = JSON.parse(body) as { route: string | null; params: Record<string, string> | null };
        resolve({ status, route: parsed.route, params: parsed.params });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the patched lookup against path-to-regexp on generated specs without ambiguity', () => {
  const agent = new http.Agent({ keepAlive: true });
  afterAll(() => agent.destroy());

  const cases: [number, boolean][] = [
    [1, false],
    [2, false],
    [3, false],
    [4, false],
    [5, false],
    [6, true],
    [11, true],
  ];

  describe.each(cases)('seed %i (case-sensitive routing: %s)', (seed, sensitive) => {
    const rnd = new Random(random(seed));
    const routes = generateRoutes(rnd);
    const spec = specOf(Object.fromEntries(routes.map((r) => [r.template, { get: r.operationId }])));
    let server: http.Server;
    let port: number;

    beforeAll(async () => {
      server = appFor(spec, { caseSensitive: sensitive }).listen(0, '127.0.0.1');
      await new Promise<void>((resolve) => server.once('listening', () => resolve()));
      port = (server.address() as AddressInfo).port;
    });
    afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

    it('chooses the same route with the same parameters for every path', async () => {
      const paths = Array.from({ length: 150 }, () => requestPath(rnd, routes));
      const differences: { path: string; expected: Outcome; actual: Outcome }[] = [];
      const statuses = new Set<number>();
      for (const path of paths) {
        const expected = referenceLookup(routes, path, sensitive);
        const actual = await rawGet(port, path, agent);
        statuses.add(expected.status);
        if (JSON.stringify(actual) !== JSON.stringify(expected)) differences.push({ path, expected, actual });
      }
      expect(differences).toEqual([]);
      // The generated paths exercise matches and misses, not only one of them.
      expect(statuses).toContain(200);
      expect(statuses).toContain(404);
    });
  });
});
