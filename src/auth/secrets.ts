import { createHash } from 'node:crypto';
import { randomBase62 } from '../ids.js';

/** Every Atrium API token starts with this, so that it is recognisable in logs and by secret scanners. */
export const tokenPrefix = 'atr_';

/** A new token secret: the prefix and 40 random base62 characters (about 238 bits). */
export function newTokenSecret(): string {
  return `${tokenPrefix}${randomBase62(40)}`;
}

/**
 * Secrets are stored as SHA-256 digests. They are long random strings, not passwords, so a fast hash
 * is safe and lets a request be authenticated with one indexed lookup.
 */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** The visible start of a secret, enough to tell tokens apart. */
export function secretPrefix(secret: string): string {
  return secret.slice(0, tokenPrefix.length + 8);
}

export function isAtriumToken(value: string): boolean {
  return value.startsWith(tokenPrefix);
}
