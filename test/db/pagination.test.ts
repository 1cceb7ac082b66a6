// Pagination: cursors (opaque, bound to their list, refused with a way to recover when wrong),
// keyset pages over both engines, and pages of in-memory lists.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { toNumber } from '../../src/db/database.js';
import {
  arrayPage,
  decodeCursor,
  encodeCursor,
  keysetPage,
  type KeysetOptions,
  type Page,
  type PageRequest,
} from '../../src/db/pagination.js';
import { DomainError } from '../../src/errors.js';
import { testEngines } from '../fixtures/databases.js';
import { expectInvalidCursor, openMigratedDatabase, type MigratedDatabase } from './builders.js';

interface ProbeRow {
  grp: number | string;
  label: string;
  id: string;
}

interface Probe {
  grp: number;
  label: string;
  id: string;
}

// Three sort columns with ties on the first two, so only the whole key orders the rows.
const rows: Probe[] = [
  { grp: 2, label: 'b', id: 'r01' },
  { grp: 1, label: 'a', id: 'r02' },
  { grp: 3, label: 'a', id: 'r03' },
  { grp: 1, label: 'b', id: 'r04' },
  { grp: 2, label: 'a', id: 'r05' },
  { grp: 1, label: 'a', id: 'r06' },
  { grp: 2, label: 'b', id: 'r07' },
  { grp: 3, label: 'b', id: 'r08' },
  { grp: 1, label: 'a', id: 'r09' },
  { grp: 2, label: 'a', id: 'r10' },
  { grp: 1, label: 'b', id: 'r11' },
];

function compareProbes(a: Probe, b: Probe): number {
  if (a.grp !== b.grp) return a.grp - b.grp;
  if (a.label !== b.label) return a.label < b.label ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function options(direction: 'asc' | 'desc', list = 'probes'): KeysetOptions<ProbeRow, Probe> {
  return {
    list,
    keys: ['grp', 'label', 'id'],
    keyTypes: ['number', 'string', 'string'],
    direction,
    keyOf: (row) => [toNumber(row.grp), row.label, row.id],
    map: (row) => ({ grp: toNumber(row.grp), label: row.label, id: row.id }),
  };
}

describe.each(testEngines())('pagination (%s)', (engine) => {
  let t: MigratedDatabase;

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
    await t.knex.schema.createTable('probes', (table) => {
      table.integer('grp').notNullable();
      table.string('label', 20).notNullable();
      table.string('id', 20).primary();
    });
    await t.knex('probes').insert(rows);
  });
  afterAll(() => t.close());

  const page = (request: PageRequest, direction: 'asc' | 'desc', list = 'probes') =>
    keysetPage(t.knex('probes').select('*'), request, options(direction, list));

  async function pageThrough(direction: 'asc' | 'desc', limit: number): Promise<Page<Probe>[]> {
    const pages: Page<Probe>[] = [];
    let cursor: string | undefined;
    do {
      const next = await page({ limit, cursor }, direction);
      pages.push(next);
      cursor = next.nextCursor ?? undefined;
    } while (cursor && pages.length <= rows.length);
    return pages;
  }

  describe('keysetPage', () => {
    it.each([1, 2, 3, 4])(
      'walks every row once in ascending key order, ties broken by the later keys (limit %i)',
      async (limit) => {
        const pages = await pageThrough('asc', limit);
        expect(pages.flatMap((p) => p.items)).toEqual([...rows].sort(compareProbes));
        expect(pages.map((p) => p.items.length)).toEqual(
          pages.map((_, i) => Math.min(limit, rows.length - i * limit)),
        );
      },
    );

    it.each([1, 2, 3, 4])(
      'walks every row once in descending key order, ties broken by the later keys (limit %i)',
      async (limit) => {
        const pages = await pageThrough('desc', limit);
        expect(pages.flatMap((p) => p.items)).toEqual([...rows].sort(compareProbes).reverse());
      },
    );

    it('gives a cursor only while rows remain, none when the last page is exactly full', async () => {
      const first = await page({ limit: 10 }, 'asc');
      expect(first.nextCursor).not.toBeNull();
      const last = await page({ limit: 1, cursor: first.nextCursor ?? undefined }, 'asc');
      expect(last.items).toHaveLength(1);
      expect(last.nextCursor).toBeNull();
      const all = await page({ limit: rows.length }, 'asc');
      expect(all.items).toHaveLength(rows.length);
      expect(all.nextCursor).toBeNull();
    });

    it('puts the sort key of the last row in the cursor, under the list name', async () => {
      const first = await page({ limit: 3 }, 'asc');
      expect(decodeCursor('probes', first.nextCursor ?? '', ['number', 'string', 'string'])).toEqual([
        1,
        'a',
        'r09',
      ]);
    });

    it('keeps its place when rows are inserted before the cursor or the next row is deleted', async () => {
      const first = await page({ limit: 3 }, 'desc');
      expect(first.items.map((r) => r.id)).toEqual(['r08', 'r03', 'r07']);
      await t.knex('probes').insert({ grp: 9, label: 'z', id: 'r99' });
      await t.knex('probes').where({ id: 'r01' }).delete();
      try {
        const second = await page({ limit: 3, cursor: first.nextCursor ?? undefined }, 'desc');
        expect(second.items.map((r) => r.id)).toEqual(['r10', 'r05', 'r11']);
      } finally {
        await t.knex('probes').where({ id: 'r99' }).delete();
        await t.knex('probes').insert({ grp: 2, label: 'b', id: 'r01' });
      }
    });

    it('keeps the filters of the query on every page', async () => {
      const filtered = (cursor?: string) =>
        keysetPage(t.knex('probes').where({ label: 'a' }).select('*'), { limit: 2, cursor }, options('asc'));
      const first = await filtered();
      const second = await filtered(first.nextCursor ?? undefined);
      const third = await filtered(second.nextCursor ?? undefined);
      expect([...first.items, ...second.items, ...third.items].map((r) => r.id)).toEqual([
        'r02',
        'r06',
        'r09',
        'r05',
        'r10',
        'r03',
      ]);
      expect(third.nextCursor).toBeNull();
    });

    it('refuses a cursor issued for another list', async () => {
      const other = await page({ limit: 2 }, 'asc', 'other-probes');
      await expectInvalidCursor(page({ limit: 2, cursor: other.nextCursor ?? undefined }, 'asc'));
    });

    it('refuses a cursor that is not base64url JSON', async () => {
      await expectInvalidCursor(page({ limit: 2, cursor: 'not-a-cursor' }, 'asc'));
      await expectInvalidCursor(
        page({ limit: 2, cursor: Buffer.from('{"l":"probes"').toString('base64url') }, 'asc'),
      );
    });

    it('refuses a cursor whose key has the wrong number of values', async () => {
      await expectInvalidCursor(page({ limit: 2, cursor: encodeCursor('probes', [1, 'a']) }, 'asc'));
      await expectInvalidCursor(
        page({ limit: 2, cursor: encodeCursor('probes', [1, 'a', 'r01', 'x']) }, 'asc'),
      );
    });

    it('refuses a cursor whose key holds something other than strings and numbers', async () => {
      const tampered = (k: unknown) => Buffer.from(JSON.stringify({ l: 'probes', k })).toString('base64url');
      await expectInvalidCursor(page({ limit: 2, cursor: tampered([1, null, 'r01']) }, 'asc'));
      await expectInvalidCursor(page({ limit: 2, cursor: tampered([1, { $gt: '' }, 'r01']) }, 'asc'));
      await expectInvalidCursor(page({ limit: 2, cursor: tampered('r01') }, 'asc'));
      await expectInvalidCursor(page({ limit: 2, cursor: Buffer.from('null').toString('base64url') }, 'asc'));
    });
  });
});

const base64url = (text: string) => Buffer.from(text).toString('base64url');

/** Fails unless `decode` throws the DomainError of an invalid cursor. */
function expectThrowsInvalidCursor(decode: () => unknown): void {
  let thrown: unknown;
  try {
    decode();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(DomainError);
  expect(thrown).toMatchObject({ kind: 'invalid-cursor', status: 400 });
}

describe('encodeCursor and decodeCursor', () => {
  it.each([
    ['one string', ['proj-1']],
    ['a timestamp and an id', ['2024-05-01T12:00:00.000Z', 'evt_123']],
    ['numbers', [42, 0, -7, 1.5]],
    ['text that needs escaping', ['a "quoted" / slashed \\ value', 'ünïcödé ✓', '']],
  ])('round-trips a key of %s', (_what, key) => {
    const cursor = encodeCursor('projects', key);
    expect(
      decodeCursor(
        'projects',
        cursor,
        key.map((v) => (typeof v === 'number' ? 'number' : 'string')),
      ),
    ).toEqual(key);
  });

  it('writes a cursor that is safe in a URL without escaping', () => {
    const cursor = encodeCursor('audit-events', ['2024-05-01T12:00:00.000Z', 'a/b+c?d=e&f', '~~~???>>>']);
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
  });

  it('gives different cursors to different lists with the same key', () => {
    expect(encodeCursor('users', ['x'])).not.toBe(encodeCursor('projects', ['x']));
  });

  it('refuses a cursor issued for another list', () => {
    const cursor = encodeCursor('users', ['alice']);
    expectThrowsInvalidCursor(() => decodeCursor('projects', cursor, ['string']));
  });

  it('refuses a cursor whose key parts have other types than the list sorts by', () => {
    expectThrowsInvalidCursor(() =>
      decodeCursor('catalogs', encodeCursor('catalogs', ['abc', 'x']), ['number', 'string']),
    );
    expect(decodeCursor('catalogs', encodeCursor('catalogs', [3, 'x']), ['number', 'string'])).toEqual([
      3,
      'x',
    ]);
  });

  it('refuses a cursor with fewer or more key parts than the list sorts by', () => {
    expectThrowsInvalidCursor(() =>
      decodeCursor('projects', encodeCursor('projects', ['a']), ['string', 'string']),
    );
    expectThrowsInvalidCursor(() =>
      decodeCursor('projects', encodeCursor('projects', ['a', 'b', 'c']), ['string', 'string']),
    );
    expectThrowsInvalidCursor(() => decodeCursor('projects', encodeCursor('projects', []), ['string']));
  });

  it('refuses text that is not base64url JSON', () => {
    expectThrowsInvalidCursor(() => decodeCursor('projects', '!!!not base64!!!', ['string']));
    expectThrowsInvalidCursor(() => decodeCursor('projects', base64url('not json'), ['string']));
    expectThrowsInvalidCursor(() =>
      decodeCursor('projects', base64url('{"l":"projects","k":["a"]'), ['string']),
    );
    expectThrowsInvalidCursor(() => decodeCursor('projects', '', ['string']));
  });

  it.each([
    ['null', 'null'],
    ['a number', '42'],
    ['a string', '"projects"'],
    ['an array', '["projects",["a"]]'],
    ['an object without a key', '{"l":"projects"}'],
    ['a key that is not an array', '{"l":"projects","k":"a"}'],
    ['a key holding an object', '{"l":"projects","k":[{"id":"a"}]}'],
    ['a key holding null', '{"l":"projects","k":[null]}'],
    ['a key holding a boolean', '{"l":"projects","k":[true]}'],
    ['a list name of another type', '{"l":["projects"],"k":["a"]}'],
  ])('refuses JSON that is %s', (_what, json) => {
    expectThrowsInvalidCursor(() => decodeCursor('projects', base64url(json), ['string']));
  });

  it('accepts a hand-made cursor of the right shape, since cursors are only opaque, not signed', () => {
    expect(decodeCursor('projects', base64url('{"l":"projects","k":["zzz"]}'), ['string'])).toEqual(['zzz']);
  });

  it('says how to recover in the detail of the error', () => {
    try {
      decodeCursor('projects', encodeCursor('users', ['a']), ['string']);
    } catch (error) {
      expect((error as DomainError).detail).toMatch(/start again without it/);
      return;
    }
    throw new Error('expected an invalid cursor');
  });
});

describe('arrayPage', () => {
  const regions = ['a', 'b', 'c', 'd', 'e'].map((id) => ({ id }));
  const idOf = (region: { id: string }) => region.id;

  it('walks a list page by page through next cursors, each item once and in order', () => {
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = arrayPage('regions', regions, idOf, { limit: 2, cursor });
      seen.push(...page.items.map(idOf));
      cursor = page.nextCursor ?? undefined;
      pages++;
    } while (cursor && pages < 10);
    expect(seen).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(pages).toBe(3);
  });

  it('gives no next cursor when the page reaches the end exactly', () => {
    const first = arrayPage('regions', regions, idOf, { limit: 5 });
    expect(first.items).toHaveLength(5);
    expect(first.nextCursor).toBeNull();
  });

  it('gives an empty page and no cursor for an empty list', () => {
    expect(arrayPage('regions', [], idOf, { limit: 3 })).toEqual({ items: [], nextCursor: null });
  });

  it('refuses a cursor naming an item that is no longer in the list', () => {
    const { nextCursor } = arrayPage('regions', regions, idOf, { limit: 2 });
    const shrunk = regions.filter((r) => r.id !== 'b');
    expectThrowsInvalidCursor(() =>
      arrayPage('regions', shrunk, idOf, { limit: 2, cursor: nextCursor ?? '' }),
    );
  });

  it('refuses a cursor of another list', () => {
    expectThrowsInvalidCursor(() =>
      arrayPage('regions', regions, idOf, { limit: 2, cursor: encodeCursor('catalogs', ['b']) }),
    );
  });

  it('refuses a tampered cursor', () => {
    expect(() => arrayPage('regions', regions, idOf, { limit: 1, cursor: '%%%' })).toThrow(
      expect.objectContaining({ kind: 'invalid-cursor' }),
    );
    expect(() =>
      arrayPage('regions', regions, idOf, { limit: 1, cursor: encodeCursor('regions', [1]) }),
    ).toThrow(expect.objectContaining({ kind: 'invalid-cursor' }));
  });
});
