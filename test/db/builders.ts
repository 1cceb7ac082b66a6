// Shared set-up for the database tests: a migrated database of one engine, and small builders of
// valid domain objects whose ids never collide inside one test file.
import { expect } from '@jest/globals';
import type { Knex } from 'knex';
import { migrate, openDatabase, type Database, type Engine } from '../../src/db/database.js';
import { DomainError } from '../../src/errors.js';
import type { LoadedVersion } from '../../src/backends/catalog/source.js';
import type { PackageVersionSpec } from '../../src/backends/catalog/manifest.js';
import type { ApiToken } from '../../src/db/tokens.js';
import type { AuditEvent } from '../../src/db/audit.js';
import type { Project } from '../../src/db/projects.js';
import type { QuotaAmounts } from '../../src/db/quotas.js';
import { insertProject } from '../../src/db/projects.js';
import type { User } from '../../src/db/users.js';
import { insertUser } from '../../src/db/users.js';
import { createTestDatabase, type TestDatabase } from '../fixtures/databases.js';

export interface MigratedDatabase {
  database: Database;
  knex: Knex;
  testDatabase: TestDatabase;
  close(): Promise<void>;
}

export async function openMigratedDatabase(engine: Engine): Promise<MigratedDatabase> {
  const testDatabase = await createTestDatabase(engine);
  const database = openDatabase(testDatabase.url, testDatabase.dataDir);
  await migrate(database);
  return {
    database,
    knex: database.knex,
    testDatabase,
    close: async () => {
      await database.close();
      await testDatabase.drop();
    },
  };
}

let counter = 0;

/** A fresh lower-case identifier, ordered by creation: `prefix-0001`, `prefix-0002`… */
export function uniqueId(prefix: string): string {
  counter += 1;
  return `${prefix}-${String(counter).padStart(4, '0')}`;
}

/** An ISO-8601 instant `seconds` after a fixed epoch, in the format the services write. */
export function instant(seconds: number): string {
  return new Date(Date.UTC(2025, 0, 1) + seconds * 1000).toISOString();
}

/** The error a promise rejects with; fails the test when it resolves. */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the promise to reject, but it resolved');
}

export async function expectInvalidCursor(promise: Promise<unknown>): Promise<void> {
  const error = await rejectionOf(promise);
  expect(error).toBeInstanceOf(DomainError);
  expect((error as DomainError).kind).toBe('invalid-cursor');
}

export function aUser(overrides: Partial<User> = {}): User {
  const username = overrides.username ?? uniqueId('user');
  return {
    id: `usr_${username}`,
    username,
    name: null,
    email: null,
    groups: [],
    admin: false,
    oidcIssuer: null,
    oidcSubject: null,
    createdAt: instant(0),
    updatedAt: instant(0),
    lastSeenAt: null,
    ...overrides,
  };
}

export async function storedUser(knex: Knex, overrides: Partial<User> = {}): Promise<User> {
  const user = aUser(overrides);
  await insertUser(knex, user);
  return user;
}

export function aToken(userId: string, overrides: Partial<ApiToken> = {}): ApiToken {
  const id = overrides.id ?? `tok_${uniqueId('t')}`;
  return {
    id,
    userId,
    name: 'laptop',
    prefix: 'atr_abcdefgh',
    scopes: ['read', 'write'],
    createdAt: instant(0),
    expiresAt: null,
    lastUsedAt: null,
    revokedAt: null,
    ...overrides,
  };
}

export const unlimited: QuotaAmounts = {
  cpuMillis: null,
  memoryBytes: null,
  gpu: null,
  services: null,
  concurrentJobs: null,
  storageBytes: null,
};

export function aProject(overrides: Partial<Project> = {}): Project {
  const id = overrides.id ?? uniqueId('proj');
  return {
    id,
    name: `Project ${id}`,
    description: '',
    kind: 'group',
    regionId: 'local',
    personalOf: null,
    version: 1,
    createdAt: instant(0),
    updatedAt: instant(0),
    ...overrides,
  };
}

/** Inserts a project owned by `ownerId` in a transaction of its own. */
export async function storedProject(
  knex: Knex,
  ownerId: string,
  overrides: Partial<Project> = {},
  limits: QuotaAmounts = unlimited,
): Promise<Project> {
  const project = aProject(overrides);
  await knex.transaction((trx) => insertProject(trx, project, ownerId, limits));
  return project;
}

export function anAuditEvent(overrides: Partial<AuditEvent> = {}): AuditEvent {
  return {
    id: `aud_${uniqueId('e')}`,
    at: instant(0),
    requestId: 'req-1',
    userId: null,
    operationId: 'getMe',
    method: 'GET',
    path: '/api/v1/me',
    status: 200,
    projectId: null,
    ip: '127.0.0.1',
    ...overrides,
  };
}

/** A package version as the manifest parser returns it (modelled on src/demo/catalog/echo). */
export function aSpec(
  name: string,
  version: string,
  overrides: Partial<PackageVersionSpec> = {},
): PackageVersionSpec {
  return {
    name,
    version,
    title: `${name} ${version}`,
    description: '',
    icon: null,
    keywords: [],
    home: null,
    options_schema: {
      type: 'object',
      properties: { greeting: { type: 'string', default: 'hello' } },
      additionalProperties: false,
    },
    defaults: { greeting: 'hello' },
    resources: { cpu: '100m', memory: '64Mi', gpu: 0 },
    run: {
      local: {
        command: ['node', 'echo.mjs'],
        ports: [{ name: 'http', protocol: 'http' }],
        health: { port: 'http', path: '/healthz' },
        env: { PORT: '${ports.http}' },
      },
      cluster: null,
    },
    functions: [],
    app: { name, version },
    ...overrides,
  };
}

/** Groups specs by package name, as a catalog source loads them. */
export function catalogContents(...specs: PackageVersionSpec[]): Map<string, LoadedVersion[]> {
  const packages = new Map<string, LoadedVersion[]>();
  for (const spec of specs) {
    const versions = packages.get(spec.name) ?? [];
    versions.push({ spec, sourceDir: `/catalogs/${spec.name}/${spec.version}` });
    packages.set(spec.name, versions);
  }
  return packages;
}
