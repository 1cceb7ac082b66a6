// Runs of pipelines: the tasks as they were, the input files, the status the jobs add up to.
import type { Knex } from 'knex';
import { parseJson, toNumber } from './database.js';
import { keysetPage, type Page, type PageRequest } from './pagination.js';
import type { PipelineTask } from './pipelines.js';

export type RunStatus = 'running' | 'finished' | 'failed' | 'cancelled';

export interface RunRecord {
  id: string;
  projectId: string;
  pipelineId: string;
  name: string;
  status: RunStatus;
  tasks: PipelineTask[];
  operationId: string | null;
  createdBy: string;
  version: number;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
}

interface RunRow {
  id: string;
  project_id: string;
  pipeline_id: string;
  name: string;
  status: RunStatus;
  tasks: string;
  operation_id: string | null;
  created_by: string;
  version: number | string;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

const runFromRow = (row: RunRow): RunRecord => ({
  id: row.id,
  projectId: row.project_id,
  pipelineId: row.pipeline_id,
  name: row.name,
  status: row.status,
  tasks: parseJson<PipelineTask[]>(row.tasks),
  operationId: row.operation_id,
  createdBy: row.created_by,
  version: toNumber(row.version),
  createdAt: row.created_at,
  updatedAt: row.updated_at,
  finishedAt: row.finished_at,
});

export async function insertRun(
  trx: Knex.Transaction,
  run: RunRecord,
  inputFileIds: string[],
): Promise<void> {
  await trx('runs').insert({
    id: run.id,
    project_id: run.projectId,
    pipeline_id: run.pipelineId,
    name: run.name,
    status: run.status,
    tasks: JSON.stringify(run.tasks),
    operation_id: run.operationId,
    created_by: run.createdBy,
    version: run.version,
    created_at: run.createdAt,
    updated_at: run.updatedAt,
    finished_at: run.finishedAt,
  });
  if (inputFileIds.length > 0) {
    await trx('run_inputs').insert(
      inputFileIds.map((file_id, position) => ({ run_id: run.id, file_id, position })),
    );
  }
}

export async function findRun(db: Knex, id: string): Promise<RunRecord | null> {
  const row = (await db('runs').where({ id }).first()) as RunRow | undefined;
  return row ? runFromRow(row) : null;
}

export async function runInputIds(db: Knex, runId: string): Promise<string[]> {
  const rows = (await db('run_inputs').where({ run_id: runId }).orderBy('position')) as { file_id: string }[];
  return rows.map((r) => r.file_id);
}

export async function listRuns(
  db: Knex,
  projectId: string,
  filter: { pipelineId?: string | undefined; status?: RunStatus | undefined },
  page: PageRequest,
): Promise<Page<RunRecord>> {
  const query = db('runs').select('*').where({ project_id: projectId });
  if (filter.pipelineId) query.where({ pipeline_id: filter.pipelineId });
  if (filter.status) query.where({ status: filter.status });
  return keysetPage<RunRow, RunRecord>(query, page, {
    list: `runs:${projectId}:${filter.pipelineId ?? ''}:${filter.status ?? ''}`,
    keys: ['created_at', 'id'],
    direction: 'desc',
    keyOf: (row) => [row.created_at, row.id],
    map: runFromRow,
  });
}

export async function updateRun(
  db: Knex,
  id: string,
  changes: { status?: RunStatus; operationId?: string | null; finishedAt?: string | null },
  at: string,
): Promise<void> {
  const update: Record<string, unknown> = { updated_at: at, version: db.raw('version + 1') };
  if (changes.status !== undefined) update.status = changes.status;
  if (changes.operationId !== undefined) update.operation_id = changes.operationId;
  if (changes.finishedAt !== undefined) update.finished_at = changes.finishedAt;
  await db('runs').where({ id }).update(update);
}

/** Runs not ended that take one of these files as an input. */
export async function activeRunsReading(db: Knex, fileIds: string[]): Promise<string[]> {
  if (fileIds.length === 0) return [];
  const rows = (await db('run_inputs as i')
    .join('runs as r', 'r.id', 'i.run_id')
    .whereIn('i.file_id', fileIds)
    .where('r.status', 'running')
    .distinct('r.id')) as { id: string }[];
  return rows.map((r) => r.id);
}

/** Deletes the run, its jobs (with their history) and its input list. */
export async function deleteRun(trx: Knex.Transaction, id: string): Promise<void> {
  await trx('jobs').where({ run_id: id }).delete();
  await trx('runs').where({ id }).delete();
}

/** History of several jobs at once, in order. */
export async function jobHistories(
  db: Knex,
  jobIds: string[],
): Promise<Map<string, { type: string; at: string; message: string }[]>> {
  const histories = new Map<string, { type: string; at: string; message: string }[]>();
  if (jobIds.length === 0) return histories;
  const rows = (await db('job_events')
    .whereIn('job_id', jobIds)
    .orderBy([{ column: 'job_id' }, { column: 'seq' }])
    .select('job_id', 'type', 'at', 'message')) as {
    job_id: string;
    type: string;
    at: string;
    message: string;
  }[];
  for (const row of rows) {
    const list = histories.get(row.job_id) ?? [];
    list.push({ type: row.type, at: row.at, message: row.message });
    histories.set(row.job_id, list);
  }
  return histories;
}

/** Output file ids of the jobs of a run, by job. */
export async function outputsByJob(db: Knex, runId: string): Promise<Map<string, string[]>> {
  const rows = (await db('files')
    .where({ run_id: runId })
    .orderBy([{ column: 'created_at' }, { column: 'id' }])
    .select('id', 'job_id')) as { id: string; job_id: string | null }[];
  const outputs = new Map<string, string[]>();
  for (const row of rows) {
    if (!row.job_id) continue;
    outputs.set(row.job_id, [...(outputs.get(row.job_id) ?? []), row.id]);
  }
  return outputs;
}
