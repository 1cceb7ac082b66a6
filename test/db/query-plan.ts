// Query plans of the SQL a database function really issues: the statements are captured from knex's
// `query` event while the function runs, then handed to the engine's planner with the same bindings
// (SQLite `EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN (FORMAT JSON)`), and each plan is reduced to how
// every table is reached and whether rows are sorted after they are read.
import type { Knex } from 'knex';
import type { Engine } from '../../src/db/database.js';

export interface CapturedQuery {
  sql: string;
  bindings: readonly Knex.RawBinding[];
}

/** The SELECT statements `run` sends, in order. */
export async function capturedSelects(db: Knex, run: () => Promise<unknown>): Promise<CapturedQuery[]> {
  const captured: CapturedQuery[] = [];
  const listener = (query: { sql: string; bindings?: readonly Knex.RawBinding[]; method?: string }) => {
    if (query.method === 'select' || query.method === 'first')
      captured.push({ sql: query.sql, bindings: query.bindings ?? [] });
  };
  db.on('query', listener);
  try {
    await run();
  } finally {
    db.removeListener('query', listener);
  }
  return captured;
}

/** How one table of a query is read. */
export interface TableAccess {
  /** The name the query gives it (its alias, or the table's name). */
  name: string;
  /** `search`: a range or point lookup in an index; `walk`: a whole index in its order; `scan`: the table itself. */
  how: 'search' | 'walk' | 'scan';
  index: string | null;
  /** The index condition as the engine prints it ('' when none). */
  condition: string;
  /** Whether an explicit sort of the rows read from it sits above it in the plan. */
  sortedAfter: boolean;
}

export interface QueryPlan {
  accesses: TableAccess[];
  /** The engine's plan, printed, for failure messages. */
  text: string;
}

interface SqlitePlanRow {
  id: number;
  parent: number;
  detail: string;
}

function sqlitePlan(rows: SqlitePlanRow[]): QueryPlan {
  // SQLite prints its sorter as its own step ("USE TEMP B-TREE FOR ORDER BY", or for part of it) of the
  // query or subquery that sorts; it sorts every table read in that query.
  const sortingParents = new Set(
    rows.filter((r) => /^USE TEMP B-TREE FOR .*ORDER BY/.test(r.detail)).map((r) => r.parent),
  );
  // A subquery in FROM (the ranges of a union, say) is run as a co-routine or materialized, and its
  // rows read back with "SCAN <its name>": not a table, and its own tables are reached above.
  const subqueries = new Set(
    rows.map((r) => /^(?:CO-ROUTINE|MATERIALIZE) (\S+)/.exec(r.detail)?.[1]).filter(Boolean),
  );
  const accesses: TableAccess[] = [];
  for (const row of rows) {
    const match =
      /^(SCAN|SEARCH) (\S+)(?: USING (?:COVERING )?(?:INDEX (\S+)|(INTEGER PRIMARY KEY)))?(?: \((.*)\))?/.exec(
        row.detail,
      );
    if (!match) continue;
    const [, verb, name, index, rowid, condition] = match;
    if (subqueries.has(name)) continue;
    accesses.push({
      name: name as string,
      how: verb === 'SEARCH' ? 'search' : index || rowid ? 'walk' : 'scan',
      index: index ?? rowid ?? null,
      condition: condition ?? '',
      sortedAfter: sortingParents.has(row.parent),
    });
  }
  return { accesses, text: rows.map((r) => `${r.id}/${r.parent} ${r.detail}`).join('\n') };
}

interface PostgresPlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  Alias?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  Filter?: string;
  'Sort Key'?: string[];
  'Plan Rows'?: number;
  Plans?: PostgresPlanNode[];
}

/** The plan as an indented tree, one node a line, with what each reads, by what and in what order. */
function printed(node: PostgresPlanNode, depth = 0): string {
  const parts = [
    node['Node Type'],
    node.Alias !== undefined ? `on ${node['Relation Name']} ${node.Alias}` : '',
    node['Index Name'] ? `using ${node['Index Name']}` : '',
    node['Index Cond'] ? `cond ${node['Index Cond']}` : '',
    node.Filter ? `filter ${node.Filter}` : '',
    node['Sort Key'] ? `by ${node['Sort Key'].join(', ')}` : '',
    `rows=${node['Plan Rows']}`,
  ];
  const line = `${'  '.repeat(depth)}${parts.filter(Boolean).join(' ')}`;
  return [line, ...(node.Plans ?? []).map((child) => printed(child, depth + 1))].join('\n');
}

/** The bitmap index scans below a bitmap heap scan (more than one under a BitmapAnd or BitmapOr). */
function bitmapScans(node: PostgresPlanNode): PostgresPlanNode[] {
  if (node['Node Type'] === 'Bitmap Index Scan') return [node];
  return (node.Plans ?? []).flatMap(bitmapScans);
}

function postgresPlan(root: PostgresPlanNode): QueryPlan {
  const accesses: TableAccess[] = [];
  const visit = (node: PostgresPlanNode, sorted: boolean) => {
    const type = node['Node Type'];
    const isSort = sorted || type === 'Sort' || type === 'Incremental Sort';
    // Only relations are tables: a subquery's scan (the ranges of a union) has an alias but no
    // relation, and its own tables are among the nodes below it.
    if (node.Alias !== undefined && node['Relation Name'] !== undefined) {
      // A bitmap heap scan takes its rows from the bitmap index scan(s) below it.
      const sources = type === 'Bitmap Heap Scan' ? bitmapScans(node) : [node];
      const indexed = type === 'Index Scan' || type === 'Index Only Scan' || type === 'Bitmap Heap Scan';
      const condition = sources.map((n) => n['Index Cond'] ?? '').join(' ');
      accesses.push({
        name: node.Alias,
        how: !indexed ? 'scan' : condition.trim() ? 'search' : 'walk',
        index: indexed ? sources.map((n) => n['Index Name']).join(' + ') : null,
        condition: condition.trim(),
        sortedAfter: isSort,
      });
      if (type === 'Bitmap Heap Scan') return;
    }
    for (const child of node.Plans ?? []) visit(child, isSort);
  };
  visit(root, false);
  return { accesses, text: printed(root) };
}

interface PostgresConnection {
  query(
    sql: string,
    values?: readonly unknown[],
  ): Promise<{ rows: { 'QUERY PLAN': { Plan: PostgresPlanNode }[] }[] }>;
}
interface PooledClient {
  acquireConnection(): Promise<PostgresConnection>;
  releaseConnection(connection: PostgresConnection): Promise<void>;
}

/**
 * The plan of one captured query. On PostgreSQL knex has already numbered the parameters ($1…), so
 * the statement goes to the driver as it was sent, on a connection of its own, in a transaction that
 * prices out sequential scans and sorts (`enable_seqscan`, `enable_sort` off): the question asked is
 * whether an index *can* give the list its rows in its order, which must not hang on how many rows
 * the test happened to insert. With the statistics alone (ANALYZE on a few thousand rows) PostgreSQL
 * rightly reads a table of a few pages from the heap, and sorts a filtered set it expects to be a few
 * dozen rows (a bitmap scan and a top-N sort) rather than walk an index in order; it would walk the
 * index as the set grows, if there is one. A priced-out plan is still chosen when nothing else
 * fits, so a missing index shows as a Seq Scan or a Sort.
 */
export async function explain(db: Knex, engine: Engine, query: CapturedQuery): Promise<QueryPlan> {
  if (engine === 'sqlite') {
    const rows = (await db.raw(`EXPLAIN QUERY PLAN ${query.sql}`, query.bindings)) as SqlitePlanRow[];
    return sqlitePlan(rows);
  }
  const client = db.client as PooledClient;
  const connection = await client.acquireConnection();
  try {
    await connection.query('BEGIN');
    await connection.query('SET LOCAL enable_seqscan = off');
    await connection.query('SET LOCAL enable_sort = off');
    const result = await connection.query(`EXPLAIN (FORMAT JSON) ${query.sql}`, query.bindings);
    return postgresPlan((result.rows[0]?.['QUERY PLAN'][0] as { Plan: PostgresPlanNode }).Plan);
  } finally {
    await connection.query('ROLLBACK');
    await client.releaseConnection(connection);
  }
}
