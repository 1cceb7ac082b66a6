// Rows written with a piece of work's first change, on every engine: inside the first transaction
// that commits, never with one that rolls back, just before a first write outside a transaction,
// and only once.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { produced, withChangeRecords, type ChangeRecord } from '../../src/db/with-change.js';
import { testEngines } from '../fixtures/databases.js';
import { openMigratedDatabase, type MigratedDatabase } from './builders.js';

describe.each(testEngines())('change records (%s)', (engine) => {
  let t: MigratedDatabase;

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
    await t.knex.schema.createTable('probe_changes', (table) => {
      table.string('id').primary();
    });
    await t.knex.schema.createTable('probe_records', (table) => {
      table.string('note').notNullable();
    });
  });
  afterAll(() => t.close());

  const notes = async () =>
    ((await t.knex('probe_records').select('note').orderBy('note')) as { note: string }[]).map((r) => r.note);
  const record = (note: string) => (): ChangeRecord[] => [{ table: 'probe_records', row: { note } }];

  it('writes them in the first transaction that commits, once, and tells the work', async () => {
    let written: boolean | null = null;
    await withChangeRecords(
      record('first'),
      async () => {
        await t.knex.transaction(async (trx) => trx('probe_changes').insert({ id: 'a' }));
        await t.knex.transaction(async (trx) => trx('probe_changes').insert({ id: 'b' }));
      },
      (w) => (written = w),
    );
    expect(await notes()).toEqual(['first']);
    expect(written).toBe(true);
  });

  it('writes none with a transaction that rolls back, and waits for one that commits', async () => {
    await withChangeRecords(
      record('after-rollback'),
      async () => {
        await t.knex
          .transaction(async (trx) => {
            await trx('probe_changes').insert({ id: 'c' });
            throw new Error('changed its mind');
          })
          .catch(() => undefined);
        expect(await notes()).not.toContain('after-rollback');
        await t.knex.transaction(async (trx) => trx('probe_changes').insert({ id: 'd' }));
      },
      () => undefined,
    );
    expect(await notes()).toContain('after-rollback');
    expect(await t.knex('probe_changes').where({ id: 'c' })).toEqual([]);
  });

  it('writes them just before a first write outside a transaction, and not for reads', async () => {
    let written: boolean | null = null;
    await withChangeRecords(
      record('plain'),
      async () => {
        await t.knex('probe_changes').select('*');
        expect(await notes()).not.toContain('plain');
        await t.knex('probe_changes').insert({ id: 'e' });
      },
      (w) => (written = w),
    );
    expect(await notes()).toContain('plain');
    expect(written).toBe(true);
  });

  it('says when the work changed nothing, and gives the records what the change produced', async () => {
    let written: boolean | null = null;
    await withChangeRecords(
      record('never'),
      async () => t.knex('probe_changes').select('*'),
      (w) => (written = w),
    );
    expect(written).toBe(false);
    expect(await notes()).not.toContain('never');
    await withChangeRecords(
      (product) => [{ table: 'probe_records', row: { note: `made ${String(product)}` } }],
      () =>
        t.knex.transaction(async (trx) => {
          produced('f');
          await trx('probe_changes').insert({ id: 'f' });
        }),
      () => undefined,
    );
    expect(await notes()).toContain('made f');
  });

  it('writes none with what the work left running after it ended', async () => {
    let later: Promise<unknown> = Promise.resolve();
    let written: boolean | null = null;
    await withChangeRecords(
      record('background'),
      async () => {
        later = new Promise((resolve) => setTimeout(resolve, 20)).then(() =>
          t.knex.transaction(async (trx) => trx('probe_changes').insert({ id: 'h' })),
        );
      },
      (w) => (written = w),
    );
    await later;
    expect(written).toBe(false);
    expect(await notes()).not.toContain('background');
  });

  it('leaves transactions that the caller commits itself to the caller', async () => {
    await withChangeRecords(
      record('explicit'),
      async () => {
        const trx = await t.knex.transaction();
        await trx('probe_changes').insert({ id: 'g' });
        await trx.commit();
      },
      () => undefined,
    );
    expect(await t.knex('probe_changes').where({ id: 'g' })).toHaveLength(1);
  });
});
