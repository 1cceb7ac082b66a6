// Files of projects: metadata rows; the content lives in the content-addressed store by sha256.
import type { Knex } from 'knex';
import { parseJson, toNumber } from './database.js';
import { keysetPage, type Page, type PageRequest } from './pagination.js';

export type FileKind = 'input' | 'output';

export interface FileRecord {
  id: string;
  projectId: string;
  name: string;
  size: number;
  sha256: string;
  mediaType: string;
  tags: string[];
  kind: FileKind;
  parentId: string | null;
  runId: string | null;
  jobId: string | null;
  createdBy: string | null;
  version: number;
  createdAt: string;
  updatedAt: string;
}

interface FileRow {
  id: string;
  project_id: string;
  name: string;
  size: number | string;
  sha256: string;
  media_type: string;
  tags: string;
  kind: FileKind;
  parent_id: string | null;
  run_id: string | null;
  job_id: string | null;
  created_by: string | null;
  version: number | string;
  created_at: string;
  updated_at: string;
}

function fileFromRow(row: FileRow): FileRecord {
  return {
    id: row.id,
    projectId: row.project_id,
    name: row.name,
    size: toNumber(row.size),
    sha256: row.sha256,
    mediaType: row.media_type,
    tags: parseJson<string[]>(row.tags),
    kind: row.kind,
    parentId: row.parent_id,
    runId: row.run_id,
    jobId: row.job_id,
    createdBy: row.created_by,
    version: toNumber(row.version),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export async function insertFile(db: Knex, file: FileRecord): Promise<void> {
  await db('files').insert({
    id: file.id,
    project_id: file.projectId,
    name: file.name,
    size: file.size,
    sha256: file.sha256,
    media_type: file.mediaType,
    tags: JSON.stringify(file.tags),
    kind: file.kind,
    parent_id: file.parentId,
    run_id: file.runId,
    job_id: file.jobId,
    created_by: file.createdBy,
    version: file.version,
    created_at: file.createdAt,
    updated_at: file.updatedAt,
  });
}

export async function findFile(db: Knex, projectId: string, id: string): Promise<FileRecord | null> {
  const row = (await db('files').where({ project_id: projectId, id }).first()) as FileRow | undefined;
  return row ? fileFromRow(row) : null;
}

export async function findFiles(db: Knex, projectId: string, ids: string[]): Promise<FileRecord[]> {
  if (ids.length === 0) return [];
  const rows = (await db('files').where({ project_id: projectId }).whereIn('id', ids)) as FileRow[];
  return rows.map(fileFromRow);
}

export interface FileFilter {
  kind?: FileKind | undefined;
  mediaType?: string | undefined;
  name?: string | undefined;
  tags?: string[] | undefined;
  runId?: string | undefined;
  parentId?: string | undefined;
}

export async function listFiles(
  db: Knex,
  projectId: string,
  filter: FileFilter,
  page: PageRequest,
): Promise<Page<FileRecord>> {
  const query = db('files').select('*').where({ project_id: projectId });
  if (filter.kind) query.where({ kind: filter.kind });
  if (filter.mediaType) query.where({ media_type: filter.mediaType });
  if (filter.name) query.where({ name: filter.name });
  if (filter.runId) query.where({ run_id: filter.runId });
  if (filter.parentId) query.where({ parent_id: filter.parentId });
  // Tags are a JSON array of strings: each wanted tag must appear as one whole element.
  for (const tag of filter.tags ?? []) {
    query.whereRaw("tags like ? escape '\\'", [`%${JSON.stringify(tag).replace(/[%_\\]/g, '\\$&')}%`]);
  }
  return keysetPage<FileRow, FileRecord>(query, page, {
    list: `files:${projectId}:${JSON.stringify(filter)}`,
    keys: ['created_at', 'id'],
    direction: 'desc',
    keyOf: (row) => [row.created_at, row.id],
    map: fileFromRow,
  });
}

/** Changes name or tags if the version is still `expectedVersion` (when given); false otherwise. */
export async function updateFile(
  db: Knex,
  projectId: string,
  id: string,
  changes: { name?: string | undefined; tags?: string[] | undefined },
  expectedVersion: number | null,
  at: string,
): Promise<boolean> {
  const update: Record<string, unknown> = { updated_at: at, version: db.raw('version + 1') };
  if (changes.name !== undefined) update.name = changes.name;
  if (changes.tags !== undefined) update.tags = JSON.stringify(changes.tags);
  const query = db('files').where({ project_id: projectId, id });
  if (expectedVersion !== null) query.where({ version: expectedVersion });
  return (await query.update(update)) > 0;
}

export async function deleteFileRow(db: Knex, projectId: string, id: string): Promise<boolean> {
  return (await db('files').where({ project_id: projectId, id }).delete()) > 0;
}

/** Whether any file row still refers to this content. */
export async function contentInUse(db: Knex, sha256: string): Promise<boolean> {
  return (await db('files').where({ sha256 }).first('id')) !== undefined;
}

/**
 * The run, not yet ended, that uses the file: as one of its inputs, or as an output of one of its
 * jobs that a later task consumes.
 */
export async function activeRunUsing(db: Knex, file: FileRecord): Promise<string | null> {
  const active = ['pending', 'queued', 'running'];
  const asInput = await db('run_inputs as i')
    .join('runs as r', 'r.id', 'i.run_id')
    .where('i.file_id', file.id)
    .whereIn('r.status', active)
    .first('r.id');
  if (asInput) return asInput.id as string;
  if (file.runId) {
    const producer = await db('runs').where({ id: file.runId }).whereIn('status', active).first('id');
    if (producer) return producer.id as string;
  }
  return null;
}

/** The files a run produced: their ids and sizes. */
export async function filesOfRun(db: Knex, runId: string): Promise<{ id: string; size: number }[]> {
  const rows = (await db('files').where({ run_id: runId }).select('id', 'size')) as {
    id: string;
    size: number | string;
  }[];
  return rows.map((r) => ({ id: r.id, size: Number(r.size) }));
}

export async function deleteFilesOfRun(trx: Knex.Transaction, runId: string): Promise<void> {
  await trx('files').where({ run_id: runId }).delete();
}
