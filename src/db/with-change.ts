// Rows that must be written with the first change a piece of work makes, atomically with it: an
// API request's audit record, say, which must exist for every change a client was told about, even
// when the process dies right after. Whoever runs the work calls `withChangeRecords`; the database
// client (database.ts) writes the rows inside the first transaction that commits within it, or
// just before the first write outside any transaction.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Knex } from 'knex';

/** A row to insert into a table. */
export interface ChangeRecord {
  table: string;
  row: object;
}

interface Scope {
  records: (product: unknown) => ChangeRecord[];
  written: boolean;
  /** The work has ended: what it started and left running (a background step) is not it. */
  ended: boolean;
  product?: unknown;
}

const scopes = new AsyncLocalStorage<Scope>();

/**
 * Runs `work`; the rows `records()` gives are written with its first change, and may report what
 * that change produced (`produced`). `settled` is told, when the work ends (however), whether they
 * were written (if not, the work changed nothing).
 */
export async function withChangeRecords<T>(
  records: (product: unknown) => ChangeRecord[],
  work: () => Promise<T>,
  settled: (written: boolean) => void,
): Promise<T> {
  const scope: Scope = { records, written: false, ended: false };
  try {
    return await scopes.run(scope, work);
  } finally {
    scope.ended = true;
    settled(scope.written);
  }
}

/**
 * Tells the work in progress what its change produces (the record a create makes), before that
 * change commits, for the rows written with it; the first product counts.
 */
export function produced(value: unknown): void {
  const scope = scopes.getStore();
  if (scope && !scope.ended && scope.product === undefined) scope.product = value;
}

/** The rows still to be written with the current work's first change (once: then none). */
export function takeChangeRecords(): ChangeRecord[] {
  const scope = scopes.getStore();
  if (!scope || scope.written || scope.ended) return [];
  scope.written = true;
  return scope.records(scope.product);
}

/** Puts back rows taken for a change that did not happen (its transaction rolled back). */
export function returnChangeRecords(): void {
  const scope = scopes.getStore();
  if (scope && !scope.ended) scope.written = false;
}

/**
 * A transaction callback that writes the change records at its end, inside it, before it commits.
 * One that returns no promise commits when its caller says so (knex's `await db.transaction()`):
 * its end is not known here, so it writes none.
 */
export function writingChangeRecords<T>(
  container: (trx: Knex.Transaction) => Promise<T> | T,
): (trx: Knex.Transaction) => Promise<T> | T {
  return (trx) => {
    const result = container(trx);
    if (typeof (result as { then?: unknown } | null)?.then !== 'function') return result;
    return Promise.resolve(result).then(async (value) => {
      const records = takeChangeRecords();
      for (const { table, row } of records) await trx(table).insert(row);
      if (records.length > 0) {
        // Should the commit fail, nothing of the change, nor of its records, was kept.
        trx.executionPromise?.catch(() => returnChangeRecords());
      }
      return value;
    });
  };
}
