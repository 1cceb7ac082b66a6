import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { migrationSource } from './migrations/index.js';

export type Engine = 'sqlite' | 'postgres';

export interface Database {
  knex: Knex;
  engine: Engine;
  /** A printable location, with any password removed. */
  location: string;
  close(): Promise<void>;
}

export function engineOf(url: string): Engine {
  return /^postgres(ql)?:\/\//i.test(url) ? 'postgres' : 'sqlite';
}

function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return url.replace(/\/\/[^/]*@/, '//***@');
  }
}

type KnexClientClass = typeof knexFactory.Client;
interface TransactionClass {
  new (...args: unknown[]): { query(conn: unknown, sql: string): Promise<unknown> };
}

/**
 * knex's SQLite client with every transaction opened by `BEGIN IMMEDIATE`: a transaction takes the
 * write lock before its first read, so several processes (API and `atrium worker`s) sharing one file
 * wait on the busy timeout instead of failing with SQLITE_BUSY when a read snapshot would have to be
 * upgraded to a write after another process committed.
 */
function immediateSqliteClient(): KnexClientClass {
  const require = createRequire(import.meta.url);
  const SqliteClient = require('knex/lib/dialects/sqlite3/index.js') as KnexClientClass;
  const SqliteTransaction =
    require('knex/lib/dialects/sqlite3/execution/sqlite-transaction.js') as TransactionClass;
  class ImmediateTransaction extends SqliteTransaction {
    begin(conn: unknown) {
      return this.query(conn, 'BEGIN IMMEDIATE;');
    }
  }
  class ImmediateSqliteClient extends SqliteClient {
    override transaction(...args: unknown[]) {
      return new ImmediateTransaction(this, ...args) as unknown as Knex.Transaction;
    }
  }
  return ImmediateSqliteClient;
}

/**
 * Opens the database: a PostgreSQL URL, or else a SQLite file (`sqlite://path`, a bare path, or
 * `atrium.db` in the data directory). SQLite runs in WAL mode with a busy timeout and foreign keys.
 */
export function openDatabase(url: string | null, dataDir: string): Database {
  if (url && engineOf(url) === 'postgres') {
    const knex = knexFactory({
      client: 'pg',
      connection: url,
      pool: { min: 0, max: 10 },
    });
    return { knex, engine: 'postgres', location: redact(url), close: () => knex.destroy() };
  }
  const filename = url ? url.replace(/^sqlite:\/\//, '') : join(dataDir, 'atrium.db');
  if (filename !== ':memory:') mkdirSync(join(filename, '..'), { recursive: true });
  const knex = knexFactory({
    client: immediateSqliteClient(),
    connection: { filename },
    useNullAsDefault: true,
    pool: {
      min: 1,
      max: 1,
      afterCreate(
        conn: { exec(sql: string, cb: (err: Error | null) => void): void },
        done: (err: Error | null) => void,
      ) {
        conn.exec(
          'PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;',
          done,
        );
      },
    },
  });
  return { knex, engine: 'sqlite', location: filename, close: () => knex.destroy() };
}

export async function migrate(db: Database): Promise<void> {
  await db.knex.migrate.latest({ migrationSource });
}

/** Knex returns bigint and count() as strings on PostgreSQL; domain code wants numbers. */
export function toNumber(value: unknown): number {
  return typeof value === 'number' ? value : Number(value);
}

export function toNullableNumber(value: unknown): number | null {
  return value === null || value === undefined ? null : toNumber(value);
}

export function parseJson<T>(value: unknown): T {
  return (typeof value === 'string' ? JSON.parse(value) : value) as T;
}

/** True when an error is a unique-constraint violation on either engine. */
export function isUniqueViolation(error: unknown): boolean {
  const e = error as { code?: string; errno?: number; message?: string };
  return e?.code === '23505' || (e?.code === 'SQLITE_CONSTRAINT' && /UNIQUE|PRIMARY/.test(e.message ?? ''));
}
