import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  engineOf,
  isPostgres,
  isUniqueViolation,
  migrate,
  openDatabase,
  toNullableNumber,
  toNumber,
} from '../../src/db/database.js';
import { insertProjectMember } from '../../src/db/members.js';
import { DomainError } from '../../src/errors.js';
import { insertUser } from '../../src/db/users.js';
import { testEngines } from '../fixtures/databases.js';
import { migrationSource } from '../../src/db/migrations/index.js';
import {
  aUser,
  openMigratedDatabase,
  rejectionOf,
  storedProject,
  storedUser,
  type MigratedDatabase,
} from './builders.js';

const tables = [
  'users',
  'api_tokens',
  'projects',
  'project_members',
  'project_quotas',
  'catalogs',
  'packages',
  'package_keywords',
  'package_versions',
  'audit_events',
  'idempotency_keys',
];

describe.each(testEngines())('database (%s)', (engine) => {
  const onSqlite = (name: string, fn: () => Promise<void>) =>
    engine === 'sqlite' ? it(name, fn) : undefined;
  let t: MigratedDatabase;

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
  });
  afterAll(() => t.close());

  describe('openDatabase', () => {
    it('opens the engine the URL names', async () => {
      expect(t.database.engine).toBe(engine);
      expect(await t.knex.raw('select 1 as one')).toBeDefined();
    });

    onSqlite(
      'opens atrium.db in the data directory when no URL is given, creating the directory',
      async () => {
        const root = mkdtempSync(join(tmpdir(), 'atrium-open-'));
        const dataDir = join(root, 'nested', 'data');
        const db = openDatabase(null, dataDir);
        try {
          await db.knex.raw('create table probe (n integer)');
          expect(db.location).toBe(join(dataDir, 'atrium.db'));
          expect(existsSync(join(dataDir, 'atrium.db'))).toBe(true);
        } finally {
          await db.close();
          rmSync(root, { recursive: true, force: true });
        }
      },
    );

    onSqlite('accepts a bare file path as the URL', async () => {
      const root = mkdtempSync(join(tmpdir(), 'atrium-open-'));
      const file = join(root, 'sub', 'other.db');
      const db = openDatabase(file, join(root, 'unused'));
      try {
        await db.knex.raw('create table probe (n integer)');
        expect(db.engine).toBe('sqlite');
        expect(existsSync(file)).toBe(true);
        expect(existsSync(join(root, 'unused'))).toBe(false);
      } finally {
        await db.close();
        rmSync(root, { recursive: true, force: true });
      }
    });

    onSqlite('turns on WAL journaling, foreign keys and a busy timeout', async () => {
      const [journal] = (await t.knex.raw('PRAGMA journal_mode')) as { journal_mode: string }[];
      const [foreignKeys] = (await t.knex.raw('PRAGMA foreign_keys')) as { foreign_keys: number }[];
      const [busy] = (await t.knex.raw('PRAGMA busy_timeout')) as { timeout: number }[];
      expect(journal?.journal_mode).toBe('wal');
      expect(foreignKeys?.foreign_keys).toBe(1);
      expect(busy?.timeout).toBe(10000);
      expect(existsSync(`${t.database.location}-wal`)).toBe(true);
    });

    it('says which engine a connection and its transactions run on', async () => {
      expect(isPostgres(t.knex)).toBe(engine === 'postgres');
      await t.knex.transaction(async (trx) => expect(isPostgres(trx)).toBe(engine === 'postgres'));
    });

    it('fails a query with a translated error only when the failure is the database’s, not the request’s', async () => {
      // A constraint stays what it is (callers tell duplicates apart); a missing table is no 503.
      await t.knex.raw('create table probe_unique (n integer primary key)');
      await t.knex('probe_unique').insert({ n: 1 });
      expect(isUniqueViolation(await rejectionOf(t.knex('probe_unique').insert({ n: 1 })))).toBe(true);
      expect(await rejectionOf(t.knex('no_such_table').select('*'))).not.toBeInstanceOf(DomainError);
    });

    it('enforces foreign keys, cascading deletes to dependent rows', async () => {
      const owner = await storedUser(t.knex);
      const error = await rejectionOf(
        insertProjectMember(t.knex, 'no-such-project', owner.id, 'member', 'x'),
      );
      expect(isUniqueViolation(error)).toBe(false);
      const project = await storedProject(t.knex, owner.id);
      await t.knex('users').where({ id: owner.id }).delete();
      expect(await t.knex('project_members').where({ project_id: project.id })).toEqual([]);
    });
  });

  describe('migrate', () => {
    it('creates every table', async () => {
      for (const table of tables) expect([table, await t.knex.schema.hasTable(table)]).toEqual([table, true]);
    });

    it('does nothing when run a second time, keeping the data', async () => {
      const user = await storedUser(t.knex);
      await migrate(t.database);
      await migrate(t.database);
      const applied = (await t.knex('knex_migrations').select('name')) as { name: string }[];
      expect(applied.map((m) => m.name)).toEqual(await migrationSource.getMigrations([]));
      expect(await t.knex('users').where({ id: user.id }).first('id')).toEqual({ id: user.id });
    });
  });

  describe('isUniqueViolation', () => {
    it('recognises a duplicate primary key', async () => {
      const user = await storedUser(t.knex);
      const error = await rejectionOf(insertUser(t.knex, aUser({ id: user.id })));
      expect(isUniqueViolation(error)).toBe(true);
    });

    it('recognises a duplicate value in a unique column', async () => {
      const user = await storedUser(t.knex);
      const error = await rejectionOf(
        insertUser(t.knex, aUser({ id: 'usr_other', username: user.username })),
      );
      expect(isUniqueViolation(error)).toBe(true);
    });

    it('recognises a duplicate composite primary key', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id);
      const error = await rejectionOf(insertProjectMember(t.knex, project.id, owner.id, 'member', 'x'));
      expect(isUniqueViolation(error)).toBe(true);
    });

    it('is false for a not-null violation', async () => {
      const error = await rejectionOf(t.knex('users').insert({ id: 'usr_incomplete' }));
      expect(isUniqueViolation(error)).toBe(false);
    });

    it('is false for errors that do not come from the database', () => {
      expect(isUniqueViolation(new Error('UNIQUE constraint failed'))).toBe(false);
      expect(isUniqueViolation(null)).toBe(false);
      expect(isUniqueViolation(undefined)).toBe(false);
    });
  });

  describe('toNumber', () => {
    it('turns what count() returns on this engine into a number', async () => {
      await storedUser(t.knex);
      const row = (await t.knex('users').count({ n: '*' }).first()) as { n: unknown };
      const n = toNumber(row.n);
      expect(typeof n).toBe('number');
      expect(n).toBeGreaterThan(0);
    });

    it('turns a 64-bit integer column into the exact number', async () => {
      const owner = await storedUser(t.knex);
      const project = await storedProject(t.knex, owner.id);
      const big = 2 ** 40 + 7;
      await t.knex('project_quotas').where({ project_id: project.id }).update({ limit_memory_bytes: big });
      const row = (await t.knex('project_quotas').where({ project_id: project.id }).first()) as {
        limit_memory_bytes: unknown;
        limit_gpu: unknown;
      };
      expect(toNumber(row.limit_memory_bytes)).toBe(big);
      expect(toNullableNumber(row.limit_gpu)).toBeNull();
    });

    it('keeps numbers and parses numeric strings', () => {
      expect(toNumber(7)).toBe(7);
      expect(toNumber('42')).toBe(42);
      expect(toNullableNumber(undefined)).toBeNull();
      expect(toNullableNumber('0')).toBe(0);
    });
  });
});

describe('database URLs', () => {
  describe('engineOf', () => {
    it('takes postgres:// and postgresql:// URLs for PostgreSQL and anything else for SQLite', () => {
      expect(engineOf('postgres://u@h/db')).toBe('postgres');
      expect(engineOf('postgresql://u@h/db')).toBe('postgres');
      expect(engineOf('sqlite:///var/lib/atrium.db')).toBe('sqlite');
      expect(engineOf('/var/lib/atrium.db')).toBe('sqlite');
    });
  });

  describe('openDatabase', () => {
    it('hides the PostgreSQL password in the printable location', async () => {
      const db = openDatabase('postgres://atrium:s3cret@db.example:5432/atrium', '/nonexistent');
      try {
        expect(db.engine).toBe('postgres');
        expect(db.location).toBe('postgres://atrium:***@db.example:5432/atrium');
      } finally {
        await db.close();
      }
    });
  });
});
