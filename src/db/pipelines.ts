// Pipelines of projects: ordered tasks of module functions.
import type { Knex } from 'knex';
import { parseJson, toNumber } from './database.js';
import { keysetPage, type Page, type PageRequest } from './pagination.js';

export interface PipelineTask {
  module: string;
  function: string;
  options: Record<string, unknown>;
}

export interface PipelineRecord {
  id: string;
  projectId: string;
  name: string;
  description: string;
  enabled: boolean;
  tasks: PipelineTask[];
  createdBy: string;
  version: number;
  createdAt: string;
  updatedAt: string;
}

interface PipelineRow {
  id: string;
  project_id: string;
  name: string;
  description: string;
  enabled: boolean | number;
  tasks: string;
  created_by: string;
  version: number | string;
  created_at: string;
  updated_at: string;
}

const pipelineFromRow = (row: PipelineRow): PipelineRecord => ({
  id: row.id,
  projectId: row.project_id,
  name: row.name,
  description: row.description,
  enabled: Boolean(row.enabled),
  tasks: parseJson<PipelineTask[]>(row.tasks),
  createdBy: row.created_by,
  version: toNumber(row.version),
  createdAt: row.created_at,
  updatedAt: row.updated_at,
});

export async function insertPipeline(db: Knex, p: PipelineRecord): Promise<void> {
  await db('pipelines').insert({
    id: p.id,
    project_id: p.projectId,
    name: p.name,
    description: p.description,
    enabled: p.enabled,
    tasks: JSON.stringify(p.tasks),
    created_by: p.createdBy,
    version: p.version,
    created_at: p.createdAt,
    updated_at: p.updatedAt,
  });
}

export async function findPipeline(db: Knex, projectId: string, id: string): Promise<PipelineRecord | null> {
  const row = (await db('pipelines').where({ project_id: projectId, id }).first()) as PipelineRow | undefined;
  return row ? pipelineFromRow(row) : null;
}

export async function listPipelines(
  db: Knex,
  projectId: string,
  filter: { enabled?: boolean | undefined },
  page: PageRequest,
): Promise<Page<PipelineRecord>> {
  const query = db('pipelines').select('*').where({ project_id: projectId });
  if (filter.enabled !== undefined) query.where({ enabled: filter.enabled });
  return keysetPage<PipelineRow, PipelineRecord>(query, page, {
    list: `pipelines:${projectId}:${String(filter.enabled ?? '')}`,
    keys: ['created_at', 'id'],
    direction: 'desc',
    keyOf: (row) => [row.created_at, row.id],
    map: pipelineFromRow,
  });
}

export async function updatePipeline(
  db: Knex,
  projectId: string,
  id: string,
  changes: Partial<Pick<PipelineRecord, 'name' | 'description' | 'enabled' | 'tasks'>>,
  expectedVersion: number,
  at: string,
): Promise<boolean> {
  const update: Record<string, unknown> = { updated_at: at, version: db.raw('version + 1') };
  if (changes.name !== undefined) update.name = changes.name;
  if (changes.description !== undefined) update.description = changes.description;
  if (changes.enabled !== undefined) update.enabled = changes.enabled;
  if (changes.tasks !== undefined) update.tasks = JSON.stringify(changes.tasks);
  return (
    (await db('pipelines').where({ project_id: projectId, id, version: expectedVersion }).update(update)) > 0
  );
}

export async function deletePipeline(
  db: Knex,
  projectId: string,
  id: string,
  expectedVersion: number,
): Promise<boolean> {
  return (await db('pipelines').where({ project_id: projectId, id, version: expectedVersion }).delete()) > 0;
}
