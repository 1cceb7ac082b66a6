// Generated from the spec: every operation that is not public refuses a request without credentials
// (and with bad ones) with a 401 problem and a Bearer challenge. A new operation is covered the
// moment it appears in the spec.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { loadBundledSpec } from '../../src/app.js';
import { specOperations } from '../../src/http/dispatch.js';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';

const apiDoc = loadBundledSpec();
const operations = specOperations(apiDoc);
const secured = operations.filter((op) => !op.public);
const open = operations.filter((op) => op.public);

/** A concrete URL for a path template, with well-formed placeholder ids. */
function concrete(path: string): string {
  return `/api/v1${path.replace(/\{(\w+)\}/g, (_m, name: string) =>
    /userId|tokenId/.test(name) ? 'usr_00000000000000000000' : name === 'version' ? '1.0.0' : 'some-id',
  )}`;
}

describe('authentication of every operation', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp('sqlite');
  });
  afterAll(() => t.close());

  it('covers the spec: some operations are secured, and the public ones are exactly the browsing ones', () => {
    expect(secured.length).toBeGreaterThan(15);
    expect(open.map((op) => op.operationId).sort()).toEqual([
      'getBenchmarkMetric',
      'getBenchmarkPlan',
      'getBenchmarkQpi',
      'getCatalog',
      'getClientIp',
      'getConfig',
      'getModule',
      'getModuleFunction',
      'getPackage',
      'getPackageVersion',
      'getRegion',
      'listBenchmarkMetrics',
      'listBenchmarkPlans',
      'listBenchmarkQpis',
      'listCatalogs',
      'listModuleSources',
      'listModules',
      'listPackages',
      'listRegions',
    ]);
  });

  it.each(secured.map((op) => [op.operationId, op] as const))(
    '%s refuses a request without a token (401)',
    async (_id, op) => {
      const res = await t.http[op.method](concrete(op.path)).send(
        op.method === 'get' || op.method === 'delete' ? undefined : {},
      );
      expectProblem(res, 401, 'unauthorized');
      expect(res.headers['www-authenticate']).toBe('Bearer realm="atrium"');
    },
  );

  it.each(secured.map((op) => [op.operationId, op] as const))(
    '%s refuses an invalid token (401)',
    async (_id, op) => {
      const res = await t.http[op.method](concrete(op.path)).set(
        'Authorization',
        'Bearer atr_not-a-real-token-000000',
      );
      expectProblem(res, 401, 'unauthorized');
      expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="atrium", error="invalid_token"/);
    },
  );
});
