import { describe, expect, it } from '@jest/globals';
import { CredentialCache } from '../../src/services/tokens.js';
import type { ApiToken } from '../../src/db/tokens.js';
import type { User } from '../../src/db/users.js';

const token = { id: 'tok_1' } as ApiToken;
const user = { id: 'usr_1' } as User;

describe('CredentialCache', () => {
  it('keeps a lookup for its time to live, then forgets it', () => {
    let now = 0;
    const cache = new CredentialCache(5_000, 10, () => now);
    cache.set('h1', { token, user });
    now = 4_999;
    expect(cache.get('h1')).toEqual({ token, user });
    now = 5_000;
    expect(cache.get('h1')).toBeUndefined();
  });

  it('forgets everything on clear (a revoke, a changed user)', () => {
    const cache = new CredentialCache(5_000, 10, () => 0);
    cache.set('h1', { token, user });
    cache.set('h2', { token, user });
    cache.clear();
    expect(cache.get('h1')).toBeUndefined();
    expect(cache.get('h2')).toBeUndefined();
  });

  it('holds at most its bound, dropping the oldest', () => {
    const cache = new CredentialCache(5_000, 2, () => 0);
    cache.set('h1', { token, user });
    cache.set('h2', { token, user });
    cache.set('h3', { token, user });
    expect(cache.get('h1')).toBeUndefined();
    expect(cache.get('h2')).toBeDefined();
    expect(cache.get('h3')).toBeDefined();
  });

  it('keeps nothing with a time to live of zero', () => {
    const cache = new CredentialCache(0, 2, () => 0);
    cache.set('h1', { token, user });
    expect(cache.get('h1')).toBeUndefined();
  });
});
