// SQLite reads through statements kept prepared per connection (src/db/database.ts, preparedRead):
// the same answers as a fresh statement whatever the bindings, more SQL texts than are kept, schema
// changes under a kept statement, failing reads that keep nothing and hold no lock, and a clean close.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { openDatabase, type Database } from '../../src/db/database.js';

describe('SQLite reads through kept prepared statements', () => {
  const dir = mkdtempSync(join(tmpdir(), 'atrium-prepared-'));
  let database: Database;
  let other: Database;

  beforeAll(async () => {
    database = openDatabase(`sqlite://${join(dir, 'p.db')}`, dir);
    other = openDatabase(`sqlite://${join(dir, 'p.db')}`, dir);
    await database.knex.schema.createTable('things', (t) => {
      t.integer('n').primary();
      t.string('name');
    });
    await database.knex('things').insert(Array.from({ length: 50 }, (_, n) => ({ n, name: `thing-${n}` })));
  });

  afterAll(async () => {
    await database.close();
    await other.close();
  });

  it('answers each run with its own bindings', async () => {
    for (let n = 0; n < 50; n += 7) {
      const row = await database.knex('things').where({ n }).first();
      expect(row).toEqual({ n, name: `thing-${n}` });
    }
    expect(await database.knex('things').where('n', '<', 3).orderBy('n').pluck('name')).toEqual([
      'thing-0',
      'thing-1',
      'thing-2',
    ]);
    expect(await database.knex('things').where({ n: 999 }).first()).toBeUndefined();
  });

  it('stays right past the number of statements it keeps (the oldest are finalized)', async () => {
    for (let limit = 1; limit <= 300; limit++) {
      const rows = await database
        .knex('things')
        .select('n')
        .orderBy('n')
        .limit(limit % 50 || 50)
        .offset(limit);
      expect(rows.length).toBe(Math.max(0, Math.min(limit % 50 || 50, 50 - limit)));
    }
    expect(await database.knex('things').count({ c: '*' }).first()).toEqual({ c: 50 });
  });

  it('sees a schema change under a kept statement', async () => {
    const all = () => database.knex('things').select('*').where({ n: 1 });
    expect(await all()).toEqual([{ n: 1, name: 'thing-1' }]);
    await database.knex.schema.alterTable('things', (t) => t.string('colour').defaultTo('red'));
    expect(await all()).toEqual([{ n: 1, name: 'thing-1', colour: 'red' }]);
  });

  it('keeps nothing of a failing read, and a failure leaves the connection reading afresh', async () => {
    await expect(database.knex('no_such_table').select('*')).rejects.toThrow(/no such table/);
    await expect(
      database.knex('things').select(database.knex.raw('json_extract(?, ?)', ['{', '$.a'])),
    ).rejects.toThrow(/malformed JSON/i);
    // Another connection can still write: no read transaction was left open by the failures.
    await other.knex('things').insert({ n: 100, name: 'from the other connection' });
    expect(await database.knex('things').where({ n: 100 }).first()).toMatchObject({
      name: 'from the other connection',
    });
  });

  it('reads inside transactions, on the transaction’s connection', async () => {
    const seen = await database.knex.transaction(async (trx) => {
      await trx('things').insert({ n: 200, name: 'in a transaction' });
      return trx('things').where({ n: 200 }).first();
    });
    expect(seen).toMatchObject({ name: 'in a transaction' });
  });
});
