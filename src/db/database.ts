import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { DomainError } from '../errors.js';
import { migrationSource } from './migrations/index.js';
import { takeChangeRecords, writingChangeRecords } from './with-change.js';

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
interface QueryingClient {
  _query(connection: unknown, query: unknown): Promise<unknown>;
  acquireConnection(): Promise<unknown>;
  destroyRawConnection(connection: unknown): Promise<unknown>;
  transaction(container: unknown, config: unknown, outerTx: unknown): unknown;
  queryBuilder(): Knex.QueryBuilder;
  positionBindings(sql: string): string;
  prepBindings(bindings: readonly unknown[]): unknown[];
}
type TransactionContainer = ((trx: Knex.Transaction) => unknown) | undefined;

const writeMethods = new Set(['insert', 'update', 'del', 'counter']);

/** A top-level transaction's callback, made to write the change records (with-change.ts) as it ends. */
function withRecords(container: TransactionContainer, outerTx: unknown): TransactionContainer {
  return typeof container === 'function' && !outerTx
    ? writingChangeRecords(container as (trx: Knex.Transaction) => Promise<unknown>)
    : container;
}

// PostgreSQL SQLSTATEs that mean the server cannot take work now (class 08: connection exceptions).
const unavailableStates = new Set(['57P01', '57P02', '57P03', '53300']);

/**
 * What a failure of the database means to a client, decided here at the database's edge: a full
 * disk (SQLite's SQLITE_FULL, PostgreSQL's disk_full) is a 507, a database out of reach (busy past
 * the timeout, no connection, shutting down) a 503. Anything else is passed on as it is.
 */
export function translateDatabaseError(error: unknown): unknown {
  const e = error as { code?: string; name?: string } | null;
  const code = e?.code ?? '';
  if (code === 'SQLITE_FULL' || code === '53100' || code === 'ENOSPC') {
    return new DomainError(
      'insufficient-storage',
      'the database has no room left for this change; nothing of it was kept',
      {},
      { 'Retry-After': '60' },
    );
  }
  if (
    code === 'SQLITE_BUSY' ||
    code === 'SQLITE_CANTOPEN' ||
    code.startsWith('08') ||
    unavailableStates.has(code) ||
    code === 'ECONNREFUSED' ||
    code === 'ECONNRESET' ||
    e?.name === 'KnexTimeoutError'
  ) {
    return new DomainError(
      'unavailable',
      'the database cannot be reached right now',
      {},
      { 'Retry-After': '5' },
    );
  }
  return error;
}

/**
 * A knex client whose queries and connections fail with translated errors (translateDatabaseError),
 * and which writes the change records of the work in progress (with-change.ts) with its first change:
 * inside the first top-level transaction to commit, or just before a first write made outside one.
 */
function atriumClient(Base: KnexClientClass): KnexClientClass {
  class AtriumClient extends (Base as unknown as new (...args: unknown[]) => QueryingClient) {
    override async _query(connection: unknown, query: unknown): Promise<unknown> {
      try {
        const method = (query as { method?: string }).method ?? '';
        if (writeMethods.has(method) && !(connection as { __knexTxId?: string }).__knexTxId) {
          for (const { table, row } of takeChangeRecords()) {
            const { sql, bindings } = this.queryBuilder().table(table).insert(row).toSQL();
            await super._query(connection, {
              sql: this.positionBindings(sql),
              bindings: this.prepBindings(bindings),
              method: 'insert',
            });
          }
        }
        return await super._query(connection, query);
      } catch (error) {
        throw translateDatabaseError(error);
      }
    }
    override async acquireConnection(): Promise<unknown> {
      try {
        return await super.acquireConnection();
      } catch (error) {
        throw translateDatabaseError(error);
      }
    }
    override transaction(container: TransactionContainer, config: unknown, outerTx: unknown): unknown {
      return super.transaction(withRecords(container, outerTx), config, outerTx);
    }
  }
  return AtriumClient as unknown as KnexClientClass;
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
  const Base = atriumClient(SqliteClient) as unknown as new (...args: unknown[]) => QueryingClient;
  class ImmediateSqliteClient extends Base {
    /** Reads go through a statement prepared once per connection and SQL text (preparedRead). */
    override async _query(connection: unknown, query: unknown): Promise<unknown> {
      const obj = query as { method?: string; sql?: string; bindings?: unknown[]; response?: unknown };
      if (!readMethods.has(obj.method ?? '') || !obj.sql) return super._query(connection, query);
      try {
        obj.response = await preparedRead(connection as SqliteConnection, obj.sql, obj.bindings ?? []);
        return obj;
      } catch (error) {
        throw translateDatabaseError(error);
      }
    }
    override async destroyRawConnection(connection: unknown): Promise<unknown> {
      await finalizeStatements(connection as SqliteConnection);
      return super.destroyRawConnection(connection);
    }
    override transaction(container: TransactionContainer, config: unknown, outerTx: unknown) {
      return new ImmediateTransaction(
        this,
        withRecords(container, outerTx),
        config,
        outerTx,
      ) as unknown as Knex.Transaction;
    }
  }
  return ImmediateSqliteClient as unknown as KnexClientClass;
}

const readMethods = new Set(['select', 'first', 'pluck']);

interface SqliteStatement {
  all(params: unknown[], cb: (err: Error | null, rows: unknown[]) => void): void;
  reset(cb: () => void): void;
  finalize(cb: () => void): void;
}
interface SqliteConnection {
  prepare(sql: string, cb: (err: Error | null) => void): SqliteStatement;
}

/** The most statements kept prepared per connection (the least recently used is finalized). */
const preparedPerConnection = 256;
const statementsOf = new WeakMap<SqliteConnection, Map<string, Promise<SqliteStatement>>>();

/**
 * A read through a statement prepared once per connection and SQL text: knex prepares every
 * statement anew, and preparing a page's wide select costs about a third of running it (README,
 * "Performance"). SQLite re-prepares a kept statement by itself when the schema changes. A statement
 * that ran to its end holds no lock; one whose run failed is reset (its read transaction ended) and
 * forgotten. One connection runs one query at a time (knex's pool), so a statement is never shared
 * by two runs at once.
 */
function preparedRead(connection: SqliteConnection, sql: string, bindings: unknown[]): Promise<unknown[]> {
  let statements = statementsOf.get(connection);
  if (!statements) statementsOf.set(connection, (statements = new Map()));
  let prepared = statements.get(sql);
  if (prepared) {
    statements.delete(sql); // re-inserted below: the map's order is the order of use
  } else {
    prepared = new Promise<SqliteStatement>((resolve, reject) => {
      const statement = connection.prepare(sql, (err) => (err ? reject(err) : resolve(statement)));
    });
    prepared.catch(() => statements.delete(sql));
    if (statements.size >= preparedPerConnection) {
      const [oldest, evicted] = statements.entries().next().value as [string, Promise<SqliteStatement>];
      statements.delete(oldest);
      void evicted.then(
        (s) => s.finalize(() => undefined),
        () => undefined,
      );
    }
  }
  statements.set(sql, prepared);
  return prepared.then(
    (statement) =>
      new Promise<unknown[]>((resolve, reject) => {
        statement.all(bindings, (err, rows) => {
          if (!err) return resolve(rows);
          statements.delete(sql);
          statement.reset(() => statement.finalize(() => reject(err)));
        });
      }),
  );
}

/** Finalizes a connection's kept statements (before it closes: SQLite closes none with some open). */
async function finalizeStatements(connection: SqliteConnection): Promise<void> {
  const statements = statementsOf.get(connection);
  if (!statements) return;
  statementsOf.delete(connection);
  await Promise.all(
    [...statements.values()].map((prepared) =>
      prepared.then(
        (s) => new Promise<void>((resolve) => s.finalize(() => resolve())),
        () => undefined,
      ),
    ),
  );
}

function postgresClient(): KnexClientClass {
  const require = createRequire(import.meta.url);
  return atriumClient(require('knex/lib/dialects/postgres/index.js') as KnexClientClass);
}

/**
 * Opens the database: a PostgreSQL URL, or else a SQLite file (`sqlite://path`, a bare path, or
 * `atrium.db` in the data directory). SQLite runs in WAL mode with a busy timeout and foreign keys.
 */
export function openDatabase(url: string | null, dataDir: string): Database {
  if (url && engineOf(url) === 'postgres') {
    const knex = knexFactory({
      client: postgresClient(),
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

/** Whether queries of `db` (or a transaction of it) run on PostgreSQL, for the clauses only it has. */
export function isPostgres(db: Knex): boolean {
  return (db.client as { dialect?: string }).dialect === 'postgresql';
}

/** True when an error is a unique-constraint violation on either engine. */
export function isUniqueViolation(error: unknown): boolean {
  const e = error as { code?: string; errno?: number; message?: string };
  return e?.code === '23505' || (e?.code === 'SQLITE_CONSTRAINT' && /UNIQUE|PRIMARY/.test(e.message ?? ''));
}
