// The contract fuzzer: requests generated from the bundled spec (test/fixtures/fuzz), sent over real
// connections to the app on every engine, each answer judged by the oracle (no 5xx, declared status,
// problem+json errors, schema-valid bodies, broken requests refused), and the server alive after
// every operation. A fixed seed always runs, then a random one; a failure names its seed (replay it
// with ATRIUM_FUZZ_SEED=<seed>).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { loadBundledSpec } from '../../src/app.js';
import { createTestApp, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { Oracle } from '../fixtures/fuzz/oracle.js';
import {
  describeRequest,
  requestsFor,
  send,
  specOperationDocs,
  type Credential,
  type FuzzContext,
  type SpecOperationDoc,
} from '../fixtures/fuzz/requests.js';
import { SpecSchemas } from '../fixtures/fuzz/schemas.js';
import { buildWorld, type World } from '../fixtures/world.js';

const fixedSeed = 20261203;
const randomSeed = Number(process.env.ATRIUM_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const runsPerOperation = 60;

/** Destructive operations last (the project's deletion very last), so the others meet real resources. */
function order(ops: SpecOperationDoc[]): SpecOperationDoc[] {
  const rank = (op: SpecOperationDoc) =>
    op.operationId === 'deleteProject'
      ? 3
      : op.method === 'delete'
        ? 2
        : op.operationId === 'revokeMyToken'
          ? 2
          : 1;
  return [...ops].sort((a, b) => rank(a) - rank(b) || a.operationId.localeCompare(b.operationId));
}

describe.each(testEngines())('contract fuzzer (%s)', (engine) => {
  let t: TestApp;
  let server: Server;
  let origin: { host: string; port: number };
  let world: World;
  const spec = loadBundledSpec();
  const oracle = new Oracle(spec);

  beforeAll(async () => {
    t = await createTestApp(engine, {
      config: {
        regions: [
          {
            id: 'local',
            name: 'This machine',
            backend: { type: 'local' },
            quotas: { default: { services: 2, cpu: '4', memory: '8Gi', storage: '1Gi', concurrent_jobs: 2 } },
          },
        ],
      },
    });
    world = await buildWorld(t, 'fuzzy', 'fuzz');
    server = createServer(t.app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = { host: '127.0.0.1', port: (server.address() as AddressInfo).port };
  }, 120_000);
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await t.close();
  });

  it('answers every generated request within the contract, and stays up', async () => {
    const stranger = await t.login('outsider');
    const readOnly = await t.login('fuzzy', { scopes: ['read'] });
    const authorization: Record<Credential, string | null> = {
      owner: world.owner.auth,
      member: world.member.auth,
      stranger: stranger.auth,
      'read-only': readOnly.auth,
      none: null,
      garbage: 'Bearer atr_notarealtokenatall0000',
    };
    const ctx: FuzzContext = {
      schemas: new SpecSchemas(spec as never),
      basePath: '/api/v1',
      paramValue: world.paramValue,
      authorization: (credential) => authorization[credential],
    };
    const failures: string[] = [];
    for (const seed of [fixedSeed, randomSeed]) {
      for (const op of order(specOperationDocs(spec as never))) {
        let failure: string | null = null;
        try {
          await fc.assert(
            fc.asyncProperty(requestsFor(ctx, op), async (req) => {
              const res = await send(origin, req);
              const wrong = oracle.judge(op, req, res);
              if (wrong.length > 0) {
                failure = `${wrong.join('; ')}\n  ${describeRequest(req)}\n  → ${res.status} ${res.text.slice(0, 300)}`;
                throw new Error(failure);
              }
            }),
            { seed, numRuns: runsPerOperation, endOnFailure: true },
          );
        } catch (error) {
          const path = /path: "([^"]*)"/.exec((error as Error).message)?.[1] ?? '?';
          failures.push(
            `${op.operationId} (seed ${seed}, path ${path}): ${failure ?? (error as Error).message.slice(0, 600)}`,
          );
        }
        const health = await send(origin, {
          operationId: 'healthz',
          method: 'GET',
          path: '/healthz',
          query: [],
          headers: {},
          broken: null,
        });
        if (health.status !== 200)
          failures.push(`after ${op.operationId}: /healthz answered ${health.status}`);
      }
    }
    if (failures.length > 0)
      console.error(`fuzzer seeds: ${fixedSeed}, ${randomSeed}\n${failures.join('\n\n')}`);
    expect(failures).toEqual([]);
  }, 900_000);
});
