import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { DomainError, notFound, unauthorized, unprocessable } from '../errors.js';
import type { Page, PageRequest } from '../db/pagination.js';
import * as q from '../db/tokens.js';
import type { ApiToken, TokenScope } from '../db/tokens.js';
import type { User } from '../db/users.js';
import { newId } from '../ids.js';
import { hashSecret, newTokenSecret, secretPrefix } from '../auth/secrets.js';
import type { Principal } from './principal.js';
import { produced } from './changes.js';

export type { ApiToken } from '../db/tokens.js';

const lastUsedResolutionMs = 60_000;

/**
 * Valid tokens recently seen, by secret hash, so that a request does not pay a hash lookup in the
 * database each time. Only successful lookups are kept (a token made a moment ago by another
 * process is found at once), for `ttlMs` at most; the process that revokes a token or changes a
 * user clears it at once, other API processes see the change within `ttlMs`. Bounded in size.
 */
export class CredentialCache {
  private readonly entries = new Map<string, { token: ApiToken; user: User; until: number }>();

  constructor(
    private readonly ttlMs = 5_000,
    private readonly maxEntries = 10_000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get(secretHash: string): { token: ApiToken; user: User } | undefined {
    const entry = this.entries.get(secretHash);
    if (!entry) return undefined;
    if (entry.until <= this.now()) {
      this.entries.delete(secretHash);
      return undefined;
    }
    return { token: entry.token, user: entry.user };
  }

  set(secretHash: string, found: { token: ApiToken; user: User }): void {
    if (this.ttlMs <= 0) return;
    if (!this.entries.has(secretHash) && this.entries.size >= this.maxEntries) {
      this.entries.delete(this.entries.keys().next().value as string);
    }
    this.entries.set(secretHash, { ...found, until: this.now() + this.ttlMs });
  }

  /** Forgets everything: a token was revoked or a user changed. */
  clear(): void {
    this.entries.clear();
  }
}

export interface TokenRequest {
  name: string;
  scopes?: TokenScope[] | undefined;
  expiresAt?: string | undefined;
}

export class TokenService {
  constructor(private readonly deps: { db: Knex; clock: Clock; cache?: CredentialCache }) {}

  /** Creates a token for the principal's user; it cannot carry scopes the principal lacks. */
  async create(principal: Principal, request: TokenRequest): Promise<{ token: ApiToken; secret: string }> {
    const scopes = request.scopes ?? ['read', 'write'];
    const missing = scopes.filter((s) => !principal.scopes.includes(s));
    if (missing.length > 0) {
      throw new DomainError(
        'insufficient-scope',
        `a token cannot grant scopes its creator lacks: ${missing.join(', ')}`,
      );
    }
    return this.issue(principal.user, { ...request, scopes });
  }

  /** Creates a token for a user, without a principal (command line, first start). */
  async issue(
    user: User,
    request: TokenRequest,
    secret = newTokenSecret(),
  ): Promise<{ token: ApiToken; secret: string }> {
    const now = this.deps.clock();
    if (request.expiresAt !== undefined && Date.parse(request.expiresAt) <= now.getTime()) {
      throw unprocessable('expires_at must be in the future');
    }
    const token: ApiToken = {
      id: newId('tok'),
      userId: user.id,
      name: request.name,
      prefix: secretPrefix(secret),
      scopes: request.scopes ?? ['read', 'write'],
      createdAt: iso(now),
      expiresAt: request.expiresAt === undefined ? null : iso(new Date(request.expiresAt)),
      lastUsedAt: null,
      revokedAt: null,
    };
    await this.deps.db.transaction(async (trx) => {
      produced({ token, secret });
      await q.insertToken(trx, token, hashSecret(secret));
    });
    return { token, secret };
  }

  async exists(secret: string): Promise<boolean> {
    return q.hasTokenWithHash(this.deps.db, hashSecret(secret));
  }

  list(principal: Principal, page: PageRequest): Promise<Page<ApiToken>> {
    return q.listUserTokens(this.deps.db, principal.user.id, page);
  }

  async get(principal: Principal, tokenId: string): Promise<ApiToken> {
    const token = await q.findUserToken(this.deps.db, principal.user.id, tokenId);
    if (!token) throw notFound('token', tokenId);
    return token;
  }

  async revoke(principal: Principal, tokenId: string): Promise<void> {
    await this.get(principal, tokenId);
    await q.revokeUserToken(this.deps.db, principal.user.id, tokenId, iso(this.deps.clock()));
    this.deps.cache?.clear();
  }

  /** The token and user a secret belongs to, if it is valid now. */
  async authenticate(secret: string): Promise<{ token: ApiToken; user: User }> {
    const hash = hashSecret(secret);
    const { cache } = this.deps;
    let found = cache?.get(hash);
    if (!found) {
      const stored = await q.findTokenBySecretHash(this.deps.db, hash);
      if (!stored) throw unauthorized('the API token is not valid');
      found = stored;
    }
    const { token } = found;
    const now = this.deps.clock();
    if (token.revokedAt) throw unauthorized('the API token has been revoked');
    if (token.expiresAt && Date.parse(token.expiresAt) <= now.getTime())
      throw unauthorized('the API token has expired');
    if (!token.lastUsedAt || now.getTime() - Date.parse(token.lastUsedAt) > lastUsedResolutionMs) {
      // Bookkeeping: a database that cannot take it now (full, busy) must not fail the request.
      await q.touchToken(this.deps.db, token.id, iso(now)).catch(() => undefined);
      found = { token: { ...token, lastUsedAt: iso(now) }, user: found.user };
    }
    cache?.set(hash, found);
    return found;
  }
}
