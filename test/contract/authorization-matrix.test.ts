// The authorization matrix, generated from the spec: for every operation with a path parameter that
// names something a user owns, somebody else calling it with the owner's ids gets exactly what a
// missing id gets (a 404; for administrators' operations, the same refusal): the same status, the
// same headers, the same body but for the request id and the id itself. A new operation is covered
// by being in the spec; one whose parameters this test does not know fails the coverage guard.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { loadBundledSpec } from '../../src/app.js';
import { createTestApp, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { specOperationDocs, type SpecOperationDoc } from '../fixtures/fuzz/requests.js';
import { jsonText, SpecSchemas } from '../fixtures/fuzz/schemas.js';
import { buildWorld, type World } from '../fixtures/world.js';

/** Path parameters naming what everyone may read (catalogs, modules, built-in benchmarks, regions, drivers). */
const sharedParameters = new Set([
  'catalogId',
  'packageName',
  'version',
  'moduleName',
  'functionName',
  'metricName',
  'qpiName',
  'planName',
  'regionId',
  'driverName',
]);
/** Path parameters naming what belongs to someone (their projects and all in them, tokens, operations, users). */
const ownedParameters = new Set([
  'projectId',
  'fileId',
  'pipelineId',
  'runId',
  'jobId',
  'planId',
  'serviceId',
  'callId',
  'operationId',
  'tokenId',
  'userId',
]);

const spec = loadBundledSpec();
const operations = specOperationDocs(spec as never);
const pathParameters = (op: SpecOperationDoc) =>
  op.parameters.filter((p) => p.in === 'path').map((p) => p.name);
const owned = operations.filter((op) => pathParameters(op).some((name) => ownedParameters.has(name)));

/** An id of the same shape and length that names nothing: `pipe_3fA9…` → `pipe_zzzz…`, `my-lab` → `zz-zzz`. */
function missing(id: string): string {
  const prefix = /^[a-z]{2,5}_/.exec(id)?.[0] ?? '';
  return (
    prefix +
    id
      .slice(prefix.length)
      .replace(/[A-Za-z0-9]/g, (c, i: number) => (i === 0 && /[a-z]/.test(c) ? 'q' : 'z'))
  );
}

describe('the authorization matrix covers the spec', () => {
  it('knows every path parameter of every operation', () => {
    const unknown = operations.flatMap((op) =>
      pathParameters(op)
        .filter((name) => !sharedParameters.has(name) && !ownedParameters.has(name))
        .map((name) => `${op.operationId}: {${name}}`),
    );
    expect(unknown).toEqual([]);
  });

  it('checks every operation on something owned, and leaves out only those on shared things', () => {
    const withPath = operations.filter((op) => pathParameters(op).length > 0);
    const sharedOnly = withPath.filter((op) => !owned.includes(op)).map((op) => op.operationId);
    expect(owned.length + sharedOnly.length).toBe(withPath.length);
    expect(owned.length).toBeGreaterThan(50);
    for (const id of sharedOnly)
      expect(operations.find((op) => op.operationId === id)?.path).not.toMatch(/projects|me\//);
  });
});

describe.each(testEngines())('authorization matrix (%s)', (engine) => {
  let t: TestApp;
  let world: World;
  let stranger: string;
  const schemas = new SpecSchemas(spec as never);

  beforeAll(async () => {
    t = await createTestApp(engine);
    world = await buildWorld(t, 'ada', 'ada-lab');
    stranger = (await t.login('eve')).auth;
  }, 120_000);
  afterAll(() => t.close());

  /** A request the contract accepts, so that what answers is the authorization, not the validator. */
  function call(op: SpecOperationDoc, ids: (name: string, value: string) => string) {
    let path = `/api/v1${op.path}`;
    for (const name of pathParameters(op)) {
      path = path.replace(`{${name}}`, encodeURIComponent(ids(name, world.paramValue(op.path, name))));
    }
    const required = op.parameters.filter((p) => p.in === 'query' && p.required);
    const values = required.map((p) => {
      const [value] = fc.sample(schemas.valid(p.schema), { seed: 7, numRuns: 1 });
      return `${p.name}=${encodeURIComponent(String(value))}`;
    });
    if (op.operationId === 'uploadFile') values.push('name=probe.txt');
    const query = values.length > 0 ? `?${values.join('&')}` : '';
    const req = t.http[op.method as 'get'](`${path}${query}`).set('Authorization', stranger);
    const content = op.requestBody?.content ?? {};
    if (content['application/json']) {
      const [body] = fc.sample(schemas.valid(content['application/json'].schema), { seed: 7, numRuns: 1 });
      req.set('Content-Type', 'application/json').send(jsonText(body));
    } else if (content['application/octet-stream']) {
      req.set('Content-Type', 'application/octet-stream').send(Buffer.from('probe'));
    }
    return req;
  }

  /** What is left of an answer once the request id and the ids asked for are set aside. */
  function normalised(res: { status: number; headers: Record<string, string>; text: string }, ids: string[]) {
    let text = res.text.replace(/"request_id":"[^"]*"/, '"request_id":"…"');
    for (const id of ids) text = text.split(id).join('{id}');
    const headers = Object.fromEntries(
      Object.entries(res.headers).filter(([name]) => !['x-request-id', 'date', 'etag'].includes(name)),
    );
    return { status: res.status, headers, text };
  }

  it.each(owned.map((op) => [op.operationId, op] as const))(
    '%s answers somebody else exactly as it answers a missing id',
    async (_id, op) => {
      const asked: string[] = [];
      const theirs = await call(op, (name, value) => (asked.push(value), value));
      const absent: string[] = [];
      const none = await call(op, (name, value) => {
        const other = ownedParameters.has(name) ? missing(value) : value;
        absent.push(other);
        return other;
      });
      const foreign = normalised(theirs, asked);
      const missingOne = normalised(none, absent);
      expect(foreign).toEqual(missingOne);
      const adminOnly = op.path.startsWith('/users/');
      expect(foreign.status).toBe(adminOnly ? 403 : 404);
      expect(foreign.headers['content-type']).toMatch(/^application\/problem\+json/);
    },
  );
});
