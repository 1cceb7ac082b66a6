import { describe, expect, it } from '@jest/globals';
import { arrayPage, decodeCursor, encodeCursor } from '../../../src/db/pagination.js';
import { DomainError } from '../../../src/errors.js';

const base64url = (text: string) => Buffer.from(text).toString('base64url');

/** Fails unless `decode` throws the DomainError of an invalid cursor. */
function expectInvalidCursor(decode: () => unknown): void {
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
    expectInvalidCursor(() => decodeCursor('projects', cursor, ['string']));
  });

  it('refuses a cursor whose key parts have other types than the list sorts by', () => {
    expectInvalidCursor(() =>
      decodeCursor('catalogs', encodeCursor('catalogs', ['abc', 'x']), ['number', 'string']),
    );
    expect(decodeCursor('catalogs', encodeCursor('catalogs', [3, 'x']), ['number', 'string'])).toEqual([
      3,
      'x',
    ]);
  });

  it('refuses a cursor with fewer or more key parts than the list sorts by', () => {
    expectInvalidCursor(() =>
      decodeCursor('projects', encodeCursor('projects', ['a']), ['string', 'string']),
    );
    expectInvalidCursor(() =>
      decodeCursor('projects', encodeCursor('projects', ['a', 'b', 'c']), ['string', 'string']),
    );
    expectInvalidCursor(() => decodeCursor('projects', encodeCursor('projects', []), ['string']));
  });

  it('refuses text that is not base64url JSON', () => {
    expectInvalidCursor(() => decodeCursor('projects', '!!!not base64!!!', ['string']));
    expectInvalidCursor(() => decodeCursor('projects', base64url('not json'), ['string']));
    expectInvalidCursor(() => decodeCursor('projects', base64url('{"l":"projects","k":["a"]'), ['string']));
    expectInvalidCursor(() => decodeCursor('projects', '', ['string']));
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
    expectInvalidCursor(() => decodeCursor('projects', base64url(json), ['string']));
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
    expectInvalidCursor(() => arrayPage('regions', shrunk, idOf, { limit: 2, cursor: nextCursor ?? '' }));
  });

  it('refuses a cursor of another list', () => {
    expectInvalidCursor(() =>
      arrayPage('regions', regions, idOf, { limit: 2, cursor: encodeCursor('catalogs', ['b']) }),
    );
  });
});
