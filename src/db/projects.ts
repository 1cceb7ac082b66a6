import type { Knex } from 'knex';
import { keysetPage, type Page, type PageRequest } from './pagination.js';
import { isPostgres, toNumber } from './database.js';
import { quotaColumns, type QuotaAmounts } from './quotas.js';

export type ProjectRole = 'owner' | 'member' | 'viewer';
export type ProjectKind = 'personal' | 'group';

export interface Project {
  id: string;
  name: string;
  description: string;
  kind: ProjectKind;
  regionId: string;
  personalOf: string | null;
  version: number;
  createdAt: string;
  updatedAt: string;
}

/** A project as seen by one user: their role, or null when they see it only as an administrator. */
export interface ProjectView extends Project {
  role: ProjectRole | null;
}

interface ProjectRow {
  id: string;
  name: string;
  description: string;
  kind: ProjectKind;
  region_id: string;
  personal_of: string | null;
  version: number | string;
  created_at: string;
  updated_at: string;
  role?: ProjectRole | null;
}

function projectFromRow(row: ProjectRow): ProjectView {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    kind: row.kind,
    regionId: row.region_id,
    personalOf: row.personal_of,
    version: toNumber(row.version),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    role: row.role ?? null,
  };
}

/** Creates a project with its first owner and its quota, in the caller's transaction. */
export async function insertProject(
  trx: Knex.Transaction,
  project: Project,
  ownerUserId: string,
  limits: QuotaAmounts,
): Promise<void> {
  await trx('projects').insert({
    id: project.id,
    name: project.name,
    description: project.description,
    kind: project.kind,
    region_id: project.regionId,
    personal_of: project.personalOf,
    version: project.version,
    created_at: project.createdAt,
    updated_at: project.updatedAt,
  });
  await trx('project_members').insert({
    project_id: project.id,
    user_id: ownerUserId,
    role: 'owner',
    added_at: project.createdAt,
  });
  const quota: Record<string, unknown> = {
    project_id: project.id,
    version: 1,
    updated_at: project.createdAt,
  };
  for (const [key, column] of Object.entries(quotaColumns))
    quota[`limit_${column}`] = limits[key as keyof QuotaAmounts];
  await trx('project_quotas').insert(quota);
}

export async function projectExists(db: Knex, id: string): Promise<boolean> {
  return (await db('projects').where({ id }).first('id')) !== undefined;
}

export async function findPersonalProject(db: Knex, userId: string): Promise<Project | null> {
  const row = await db<ProjectRow>('projects').where({ personal_of: userId }).first();
  return row ? projectFromRow(row) : null;
}

/** The project and the user's role in it (null when not a member); null when there is no project. */
export async function findProjectForUser(
  db: Knex,
  projectId: string,
  userId: string,
): Promise<ProjectView | null> {
  const row = await db('projects as p')
    .leftJoin('project_members as m', (j) =>
      j.on('m.project_id', 'p.id').andOn('m.user_id', db.raw('?', [userId])),
    )
    .where('p.id', projectId)
    .first('p.*', 'm.role');
  return row ? projectFromRow(row as ProjectRow) : null;
}

export interface ProjectFilter {
  kind?: ProjectKind | undefined;
}

export async function listUserProjects(
  db: Knex,
  userId: string,
  filter: ProjectFilter,
  page: PageRequest,
): Promise<Page<ProjectView>> {
  const query = db('projects as p')
    .join('project_members as m', 'm.project_id', 'p.id')
    .where('m.user_id', userId)
    .select('p.*', 'm.role');
  if (filter.kind) query.where('p.kind', filter.kind);
  // Ordered by the membership's project id (the same value as p.id): the (user_id, project_id) index
  // gives that order, while SQLite would sort every membership of the user to order by p.id.
  return keysetPage<ProjectRow, ProjectView>(query, page, {
    list: `projects:${userId}:${filter.kind ?? ''}`,
    keys: ['m.project_id'],
    direction: 'asc',
    keyOf: (row) => [row.id],
    map: projectFromRow,
  });
}

export async function listAllProjects(
  db: Knex,
  viewerId: string,
  filter: ProjectFilter,
  page: PageRequest,
): Promise<Page<ProjectView>> {
  const query = db('projects as p')
    .leftJoin('project_members as m', (j) =>
      j.on('m.project_id', 'p.id').andOn('m.user_id', db.raw('?', [viewerId])),
    )
    .select('p.*', 'm.role');
  if (filter.kind) query.where('p.kind', filter.kind);
  return keysetPage<ProjectRow, ProjectView>(query, page, {
    list: `all-projects:${filter.kind ?? ''}`,
    keys: ['p.id'],
    direction: 'asc',
    keyOf: (row) => [row.id],
    map: projectFromRow,
  });
}

/** Every project of a user, personal first then by id; for `GET /me`, bounded by `max`. */
export async function userProjectsForProfile(db: Knex, userId: string, max: number): Promise<ProjectView[]> {
  const rows = await db('projects as p')
    .join('project_members as m', 'm.project_id', 'p.id')
    .where('m.user_id', userId)
    .orderByRaw("case when p.kind = 'personal' then 0 else 1 end")
    .orderBy('p.id')
    .limit(max)
    .select('p.*', 'm.role');
  return (rows as ProjectRow[]).map(projectFromRow);
}

/**
 * Applies changes when the version still matches (or unconditionally when expectedVersion is null)
 * and bumps it. Returns false when nothing was updated (gone, or the version moved on).
 */
export async function updateProject(
  db: Knex,
  id: string,
  changes: { name?: string | undefined; description?: string | undefined },
  expectedVersion: number | null,
  at: string,
): Promise<boolean> {
  const update: Record<string, unknown> = { updated_at: at, version: db.raw('version + 1') };
  if (changes.name !== undefined) update.name = changes.name;
  if (changes.description !== undefined) update.description = changes.description;
  const query = db('projects').where({ id });
  if (expectedVersion !== null) query.where({ version: expectedVersion });
  return (await query.update(update)) > 0;
}

export async function deleteProject(db: Knex, id: string, expectedVersion: number | null): Promise<boolean> {
  const query = db('projects').where({ id });
  if (expectedVersion !== null) query.where({ version: expectedVersion });
  return (await query.delete()) > 0;
}

export async function lockProject(trx: Knex.Transaction, projectId: string): Promise<void> {
  if (isPostgres(trx)) await trx('projects').where({ id: projectId }).forUpdate().first('id');
}

/** A change of quota usage: positive takes, negative gives back. */
export async function countProjectServices(db: Knex, projectId: string): Promise<number> {
  const row = await db('services').where({ project_id: projectId }).count({ n: '*' }).first();
  return toNumber(row?.n ?? 0);
}

/**
 * Changes a project's stored-file usage by `bytes`, admitted (when growing) only within its storage
 * limit, in one conditional statement like adjustQuotaUsage. Returns false when over the limit.
 */
/** The region a project runs in ('' when the project does not exist). */
export async function projectRegion(db: Knex, projectId: string): Promise<string> {
  const row = (await db('projects').where({ id: projectId }).first('region_id')) as
    { region_id: string } | undefined;
  return row?.region_id ?? '';
}
