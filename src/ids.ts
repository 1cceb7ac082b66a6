import { randomBytes } from 'node:crypto';

const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Random base62 characters (rejection sampling, so every character is equally likely). */
export function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += alphabet[byte % 62];
    }
  }
  return out;
}

/** A server-assigned identifier: a short type prefix and 20 random characters (about 119 bits). */
export function newId(
  prefix: 'usr' | 'tok' | 'aud' | 'svc' | 'op' | 'job' | 'file' | 'pipe' | 'run' | 'bplan' | 'brun' | 'call',
): string {
  return `${prefix}_${randomBase62(20)}`;
}
