import type { Knex } from 'knex';
import { keysetPage, type Page, type PageRequest } from './pagination.js';
import { parseJson } from './database.js';
import { userFromRow, type User } from './users.js';

export type TokenScope = 'read' | 'write';

export interface ApiToken {
  id: string;
  userId: string;
  name: string;
  prefix: string;
  scopes: TokenScope[];
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

interface TokenRow {
  id: string;
  user_id: string;
  name: string;
  prefix: string;
  secret_hash: string;
  scopes: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
}

function tokenFromRow(row: TokenRow): ApiToken {
  return {
    id: row.id,
    userId: row.user_id,
    name: row.name,
    prefix: row.prefix,
    scopes: parseJson<TokenScope[]>(row.scopes),
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    lastUsedAt: row.last_used_at,
    revokedAt: row.revoked_at,
  };
}

export async function insertToken(db: Knex, token: ApiToken, secretHash: string): Promise<void> {
  await db('api_tokens').insert({
    id: token.id,
    user_id: token.userId,
    name: token.name,
    prefix: token.prefix,
    secret_hash: secretHash,
    scopes: JSON.stringify(token.scopes),
    created_at: token.createdAt,
    expires_at: token.expiresAt,
    last_used_at: token.lastUsedAt,
    revoked_at: token.revokedAt,
  });
}

/** The token with this secret hash and its user, whatever its state (the caller judges validity). */
export async function findTokenBySecretHash(
  db: Knex,
  secretHash: string,
): Promise<{ token: ApiToken; user: User } | null> {
  const row = await db('api_tokens as t')
    .join('users as u', 'u.id', 't.user_id')
    .where('t.secret_hash', secretHash)
    .first(
      't.*',
      'u.username',
      'u.name as u_name',
      'u.email',
      'u.groups',
      'u.is_admin',
      'u.oidc_issuer',
      'u.oidc_subject',
      'u.created_at as u_created_at',
      'u.updated_at as u_updated_at',
      'u.last_seen_at as u_last_seen_at',
    );
  if (!row) return null;
  return {
    token: tokenFromRow(row as TokenRow),
    user: userFromRow({
      id: row.user_id,
      username: row.username,
      name: row.u_name,
      email: row.email,
      groups: row.groups,
      is_admin: row.is_admin,
      oidc_issuer: row.oidc_issuer,
      oidc_subject: row.oidc_subject,
      created_at: row.u_created_at,
      updated_at: row.u_updated_at,
      last_seen_at: row.u_last_seen_at,
    }),
  };
}

export async function findUserToken(db: Knex, userId: string, tokenId: string): Promise<ApiToken | null> {
  const row = await db<TokenRow>('api_tokens').where({ id: tokenId, user_id: userId }).first();
  return row ? tokenFromRow(row) : null;
}

export async function listUserTokens(db: Knex, userId: string, page: PageRequest): Promise<Page<ApiToken>> {
  return keysetPage<TokenRow, ApiToken>(
    db<TokenRow>('api_tokens').where({ user_id: userId }).select('*'),
    page,
    {
      list: `tokens:${userId}`,
      keys: ['created_at', 'id'],
      direction: 'desc',
      keyOf: (row) => [row.created_at, row.id],
      map: tokenFromRow,
    },
  );
}

export async function revokeUserToken(db: Knex, userId: string, tokenId: string, at: string): Promise<void> {
  await db('api_tokens')
    .where({ id: tokenId, user_id: userId })
    .whereNull('revoked_at')
    .update({ revoked_at: at });
}

export async function touchToken(db: Knex, tokenId: string, at: string): Promise<void> {
  await db('api_tokens').where({ id: tokenId }).update({ last_used_at: at });
}

export async function hasTokenWithHash(db: Knex, secretHash: string): Promise<boolean> {
  return (await db('api_tokens').where({ secret_hash: secretHash }).first('id')) !== undefined;
}
