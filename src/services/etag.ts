import { preconditionFailed } from '../errors.js';

/** A strong ETag from a row's version counter and update time (so a re-created row gets a new one). */
export function etagFor(version: number, updatedAt: string): string {
  return `"${version}-${Date.parse(updatedAt).toString(36)}"`;
}

/** Throws 412 when an If-Match header is given and names none of the current ETag (`*` matches any). */
export function checkIfMatch(ifMatch: string | undefined, current: string, what: string): void {
  if (ifMatch === undefined) return;
  const candidates = ifMatch.split(',').map((tag) => tag.trim().replace(/^W\//, ''));
  if (!candidates.includes('*') && !candidates.includes(current)) throw preconditionFailed(what);
}
