// Who belongs to a project, and in which role.
import type { Knex } from 'knex';
import { keysetPage, type Page, type PageRequest } from './pagination.js';
import { toNumber } from './database.js';
import type { ProjectRole } from './projects.js';

export interface ProjectMember {
  userId: string;
  username: string;
  name: string | null;
  role: ProjectRole;
  addedAt: string;
}

interface MemberRow {
  user_id: string;
  username: string;
  name: string | null;
  role: ProjectRole;
  added_at: string;
}

const memberFromRow = (row: MemberRow): ProjectMember => ({
  userId: row.user_id,
  username: row.username,
  name: row.name,
  role: row.role,
  addedAt: row.added_at,
});

function membersQuery(db: Knex, projectId: string) {
  return db('project_members as m')
    .join('users as u', 'u.id', 'm.user_id')
    .where('m.project_id', projectId)
    .select('m.user_id', 'u.username', 'u.name', 'm.role', 'm.added_at');
}

export async function listProjectMembers(
  db: Knex,
  projectId: string,
  page: PageRequest,
): Promise<Page<ProjectMember>> {
  return keysetPage<MemberRow, ProjectMember>(membersQuery(db, projectId), page, {
    list: `members:${projectId}`,
    keys: ['u.username'],
    direction: 'asc',
    keyOf: (row) => [row.username],
    map: memberFromRow,
  });
}

export async function findProjectMember(
  db: Knex,
  projectId: string,
  userId: string,
): Promise<ProjectMember | null> {
  const row = await membersQuery(db, projectId).where('m.user_id', userId).first();
  return row ? memberFromRow(row as MemberRow) : null;
}

export async function insertProjectMember(
  db: Knex,
  projectId: string,
  userId: string,
  role: ProjectRole,
  at: string,
): Promise<void> {
  await db('project_members').insert({ project_id: projectId, user_id: userId, role, added_at: at });
}

export async function updateProjectMemberRole(
  db: Knex,
  projectId: string,
  userId: string,
  role: ProjectRole,
): Promise<void> {
  await db('project_members').where({ project_id: projectId, user_id: userId }).update({ role });
}

export async function deleteProjectMember(db: Knex, projectId: string, userId: string): Promise<void> {
  await db('project_members').where({ project_id: projectId, user_id: userId }).delete();
}

export async function countOwners(db: Knex, projectId: string): Promise<number> {
  const row = await db('project_members')
    .where({ project_id: projectId, role: 'owner' })
    .count({ n: '*' })
    .first();
  return toNumber(row?.n ?? 0);
}
