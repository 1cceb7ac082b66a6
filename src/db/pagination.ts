import type { Knex } from 'knex';
import { DomainError } from '../errors.js';

export interface PageRequest {
  limit: number;
  cursor?: string | undefined;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

type KeyValue = string | number;

// A cursor names the list it belongs to and the sort key of the last item returned; it is opaque
// to clients (base64url JSON) and rejected when handed to another list.
export function encodeCursor(list: string, key: KeyValue[]): string {
  return Buffer.from(JSON.stringify({ l: list, k: key })).toString('base64url');
}

export type KeyType = 'string' | 'number';

export function decodeCursor(list: string, cursor: string, types: readonly KeyType[]): KeyValue[] {
  const invalid = new DomainError(
    'invalid-cursor',
    'the cursor was not issued for this list; start again without it',
  );
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalid;
  }
  const { l, k } = (parsed ?? {}) as { l?: unknown; k?: unknown };
  if (
    l !== list ||
    !Array.isArray(k) ||
    k.length !== types.length ||
    !k.every((v, i) => typeof v === types[i])
  ) {
    throw invalid;
  }
  return k as KeyValue[];
}

export interface KeysetOptions<Row, T> {
  /**
   * Names the list and whatever narrows it (owner, filters), so that a cursor of one list is
   * refused by another.
   */
  list: string;
  /** Sort columns (qualified if joined), all in one direction; the last must be unique. */
  keys: string[];
  /** The type of each key, checked in a cursor before it reaches SQL (default: all strings). */
  keyTypes?: KeyType[];
  direction: 'asc' | 'desc';
  /** Reads the sort key of a row, in the order of `keys`. */
  keyOf: (row: Row) => KeyValue[];
  map: (row: Row) => T;
}

/**
 * Keyset pagination: stable under inserts and deletes, and as cheap on page 1,000 as on page 1
 * (an index range scan, never an OFFSET). Fetches one row more than asked to know if a page follows.
 */
export async function keysetPage<Row, T>(
  query: Knex.QueryBuilder,
  page: PageRequest,
  options: KeysetOptions<Row, T>,
): Promise<Page<T>> {
  const { keys, direction } = options;
  if (page.cursor) {
    const after = decodeCursor(options.list, page.cursor, options.keyTypes ?? keys.map(() => 'string'));
    const op = direction === 'asc' ? '>' : '<';
    const columns = keys.map(() => '??').join(', ');
    const values = keys.map(() => '?').join(', ');
    query.whereRaw(`(${columns}) ${op} (${values})`, [...keys, ...after]);
  }
  for (const key of keys) query.orderBy(key, direction);
  const rows = (await query.limit(page.limit + 1)) as Row[];
  const hasMore = rows.length > page.limit;
  const items = hasMore ? rows.slice(0, page.limit) : rows;
  const last = items[items.length - 1];
  return {
    items: items.map(options.map),
    nextCursor: hasMore && last !== undefined ? encodeCursor(options.list, options.keyOf(last)) : null,
  };
}

/**
 * Keyset pagination over the union of several queries (for example "mine OR shared"): each runs
 * as its own index range scan with the cursor and limit, and the pages are merged. An `OR` in one
 * query would filter rows after the range scan instead, and cost more as the table grows. The
 * ranges are sent as one statement (a UNION ALL of the limited ranges, merged here): one round trip
 * and one query to build, whatever the number of ranges.
 */
export async function keysetUnionPage<Row, T>(
  db: Knex,
  queries: Knex.QueryBuilder[],
  page: PageRequest,
  options: KeysetOptions<Row, T> & { idOf: (row: Row) => string },
): Promise<Page<T>> {
  const { keys, direction } = options;
  const after = page.cursor
    ? decodeCursor(options.list, page.cursor, options.keyTypes ?? keys.map(() => 'string'))
    : null;
  // Each range is a subquery of its own, because SQLite takes no ORDER BY or LIMIT on a member of
  // a compound SELECT; `select *` of it keeps the members' columns alike.
  const ranges = queries.map((query, i) => {
    if (after) {
      query.whereRaw(
        `(${keys.map(() => '??').join(', ')}) ${direction === 'asc' ? '>' : '<'} (${keys.map(() => '?').join(', ')})`,
        [...keys, ...after],
      );
    }
    for (const key of keys) query.orderBy(key, direction);
    return db.select('*').from(query.limit(page.limit + 1).as(`range_${i}`));
  });
  const [first, ...others] = ranges;
  if (!first) return { items: [], nextCursor: null };
  const rows = (others.length ? await first.unionAll(others) : await first) as Row[];
  const byId = new Map<string, Row>();
  for (const row of rows) byId.set(options.idOf(row), row);
  const compare = (a: Row, b: Row) => {
    const [ka, kb] = [options.keyOf(a), options.keyOf(b)];
    for (let i = 0; i < ka.length; i++) {
      if (ka[i] === kb[i]) continue;
      const less = (ka[i] as KeyValue) < (kb[i] as KeyValue);
      return (less ? -1 : 1) * (direction === 'asc' ? 1 : -1);
    }
    return 0;
  };
  const sorted = [...byId.values()].sort(compare);
  const hasMore = sorted.length > page.limit;
  const items = sorted.slice(0, page.limit);
  const last = items[items.length - 1];
  return {
    items: items.map(options.map),
    nextCursor: hasMore && last !== undefined ? encodeCursor(options.list, options.keyOf(last)) : null,
  };
}

/** The same contract over an in-memory list already in its stable order (configured regions…). */
export function arrayPage<T>(
  list: string,
  all: readonly T[],
  idOf: (item: T) => string,
  page: PageRequest,
): Page<T> {
  let start = 0;
  if (page.cursor) {
    const [afterId] = decodeCursor(list, page.cursor, ['string']);
    start = all.findIndex((item) => idOf(item) === afterId) + 1;
    if (start === 0)
      throw new DomainError('invalid-cursor', 'the cursor names an item that no longer exists');
  }
  const items = all.slice(start, start + page.limit);
  const last = items[items.length - 1];
  const hasMore = start + page.limit < all.length;
  return { items, nextCursor: hasMore && last !== undefined ? encodeCursor(list, [idOf(last)]) : null };
}
