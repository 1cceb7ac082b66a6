import type { Knex } from 'knex';
import { keysetPage, type Page, type PageRequest } from './pagination.js';
import { parseJson } from './database.js';

export interface User {
  id: string;
  username: string;
  name: string | null;
  email: string | null;
  groups: string[];
  admin: boolean;
  oidcIssuer: string | null;
  oidcSubject: string | null;
  createdAt: string;
  updatedAt: string;
  lastSeenAt: string | null;
}

interface UserRow {
  id: string;
  username: string;
  name: string | null;
  email: string | null;
  groups: string;
  is_admin: boolean | number;
  oidc_issuer: string | null;
  oidc_subject: string | null;
  created_at: string;
  updated_at: string;
  last_seen_at: string | null;
}

export function userFromRow(row: UserRow): User {
  return {
    id: row.id,
    username: row.username,
    name: row.name,
    email: row.email,
    groups: parseJson<string[]>(row.groups),
    admin: Boolean(row.is_admin),
    oidcIssuer: row.oidc_issuer,
    oidcSubject: row.oidc_subject,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    lastSeenAt: row.last_seen_at,
  };
}

/** Lower-cased in JavaScript, which knows every alphabet (SQLite's lower() knows only ASCII). */
function searchText(user: { username: string; name: string | null; email: string | null }): string {
  return [user.username, user.name ?? '', user.email ?? ''].join('\n').toLowerCase();
}

export async function insertUser(db: Knex, user: User): Promise<void> {
  await db('users').insert({
    search_text: searchText(user),
    id: user.id,
    username: user.username,
    name: user.name,
    email: user.email,
    groups: JSON.stringify(user.groups),
    is_admin: user.admin,
    oidc_issuer: user.oidcIssuer,
    oidc_subject: user.oidcSubject,
    created_at: user.createdAt,
    updated_at: user.updatedAt,
    last_seen_at: user.lastSeenAt,
  });
}

export async function findUserById(db: Knex, id: string): Promise<User | null> {
  const row = await db<UserRow>('users').where({ id }).first();
  return row ? userFromRow(row) : null;
}

export async function findUserByUsername(db: Knex, username: string): Promise<User | null> {
  const row = await db<UserRow>('users').where({ username }).first();
  return row ? userFromRow(row) : null;
}

export async function findUserByOidc(db: Knex, issuer: string, subject: string): Promise<User | null> {
  const row = await db<UserRow>('users').where({ oidc_issuer: issuer, oidc_subject: subject }).first();
  return row ? userFromRow(row) : null;
}

export async function usernameTaken(db: Knex, username: string): Promise<boolean> {
  return (await db('users').where({ username }).first('id')) !== undefined;
}

export interface UserProfile {
  name: string | null;
  email: string | null;
  groups: string[];
  admin?: boolean;
}

export async function updateUserProfile(
  db: Knex,
  id: string,
  profile: Partial<UserProfile>,
  at: string,
): Promise<void> {
  const changes: Record<string, unknown> = { updated_at: at };
  if (profile.name !== undefined) changes.name = profile.name;
  if (profile.email !== undefined) changes.email = profile.email;
  if (profile.name !== undefined || profile.email !== undefined) {
    const current = await db('users').where({ id }).first('username', 'name', 'email');
    if (current) changes.search_text = searchText({ ...current, ...changes });
  }
  if (profile.groups !== undefined) changes.groups = JSON.stringify(profile.groups);
  if (profile.admin !== undefined) changes.is_admin = profile.admin;
  await db('users').where({ id }).update(changes);
}

export async function touchUserLastSeen(db: Knex, id: string, at: string): Promise<void> {
  await db('users').where({ id }).update({ last_seen_at: at });
}

export async function listUsers(
  db: Knex,
  filter: { q?: string | undefined },
  page: PageRequest,
): Promise<Page<User>> {
  const query = db<UserRow>('users').select('*');
  if (filter.q) query.whereRaw("search_text like ? escape '\\'", [`%${escapeLike(filter.q.toLowerCase())}%`]);
  return keysetPage<UserRow, User>(query, page, {
    list: `users:${filter.q ?? ''}`,
    keys: ['username'],
    direction: 'asc',
    keyOf: (row) => [row.username],
    map: userFromRow,
  });
}

/** Escapes LIKE wildcards so that user text matches literally (used with `escape '\'`). */
export function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}
