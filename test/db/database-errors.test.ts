// What a failing database means to a client, decided at the database's edge.
import { describe, expect, it } from '@jest/globals';
import { translateDatabaseError } from '../../src/db/database.js';
import { DomainError } from '../../src/errors.js';

const kindOf = (error: unknown) => (error instanceof DomainError ? error.kind : 'passed on');

describe('translateDatabaseError', () => {
  it.each([
    ['SQLite out of room', { code: 'SQLITE_FULL', errno: 13 }, 'insufficient-storage'],
    ["PostgreSQL's disk_full", { code: '53100' }, 'insufficient-storage'],
    ['SQLite busy past its timeout', { code: 'SQLITE_BUSY' }, 'unavailable'],
    ['no connection to PostgreSQL', { code: 'ECONNREFUSED' }, 'unavailable'],
    ['a PostgreSQL connection exception', { code: '08006' }, 'unavailable'],
    ['PostgreSQL shutting down', { code: '57P01' }, 'unavailable'],
    ['too many connections', { code: '53300' }, 'unavailable'],
    ['no free connection in the pool in time', { name: 'KnexTimeoutError' }, 'unavailable'],
    ['a unique violation', { code: '23505' }, 'passed on'],
    ['a SQLite constraint', { code: 'SQLITE_CONSTRAINT' }, 'passed on'],
    ['a syntax error', { code: '42601' }, 'passed on'],
    ['anything else', new Error('boom'), 'passed on'],
  ])('makes %s %s', (_what, error, kind) => {
    expect(kindOf(translateDatabaseError(error))).toBe(kind);
  });

  it('says what a full database means without quoting the database', () => {
    const translated = translateDatabaseError({
      code: 'SQLITE_FULL',
      message: 'SQLITE_FULL: database or disk is full',
    });
    expect(translated).toMatchObject({ status: 507, headers: { 'Retry-After': '60' } });
    expect((translated as DomainError).detail).not.toMatch(/SQLITE/);
  });
});
