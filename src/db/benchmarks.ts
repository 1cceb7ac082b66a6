// Benchmark plans saved in projects, and benchmark runs with their results.
import type { Knex } from 'knex';
import type { PlanDefinition, ResolvedPlan } from '../backends/benchmark/definitions.js';
import type { PlanResults } from '../backends/benchmark/run-plan.js';
import { parseJson, toNumber } from './database.js';
import { keysetPage, type Page, type PageRequest } from './pagination.js';

export interface BenchmarkPlanRecord {
  id: string;
  projectId: string;
  name: string;
  /** As validated when it was saved (parsePlan). */
  definition: PlanDefinition;
  createdBy: string;
  version: number;
  createdAt: string;
  updatedAt: string;
}

interface PlanRow {
  id: string;
  project_id: string;
  name: string;
  definition: string;
  created_by: string;
  version: number | string;
  created_at: string;
  updated_at: string;
}

const planFromRow = (row: PlanRow): BenchmarkPlanRecord => ({
  id: row.id,
  projectId: row.project_id,
  name: row.name,
  definition: parseJson<PlanDefinition>(row.definition),
  createdBy: row.created_by,
  version: toNumber(row.version),
  createdAt: row.created_at,
  updatedAt: row.updated_at,
});

export async function insertPlan(db: Knex, plan: BenchmarkPlanRecord): Promise<void> {
  await db('benchmark_plans').insert({
    id: plan.id,
    project_id: plan.projectId,
    name: plan.name,
    definition: JSON.stringify(plan.definition),
    created_by: plan.createdBy,
    version: plan.version,
    created_at: plan.createdAt,
    updated_at: plan.updatedAt,
  });
}

export async function findPlan(db: Knex, projectId: string, id: string): Promise<BenchmarkPlanRecord | null> {
  const row = (await db('benchmark_plans').where({ project_id: projectId, id }).first()) as
    PlanRow | undefined;
  return row ? planFromRow(row) : null;
}

export async function listPlans(
  db: Knex,
  projectId: string,
  page: PageRequest,
): Promise<Page<BenchmarkPlanRecord>> {
  return keysetPage<PlanRow, BenchmarkPlanRecord>(
    db('benchmark_plans').select('*').where({ project_id: projectId }),
    page,
    {
      list: `benchmark-plans:${projectId}`,
      keys: ['created_at', 'id'],
      direction: 'desc',
      keyOf: (row) => [row.created_at, row.id],
      map: planFromRow,
    },
  );
}

export async function updatePlan(
  db: Knex,
  projectId: string,
  id: string,
  definition: PlanDefinition,
  expectedVersion: number,
  at: string,
): Promise<boolean> {
  const updated = await db('benchmark_plans')
    .where({ project_id: projectId, id, version: expectedVersion })
    .update({
      name: definition.name,
      definition: JSON.stringify(definition),
      version: db.raw('version + 1'),
      updated_at: at,
    });
  return updated > 0;
}

export async function deletePlan(db: Knex, projectId: string, id: string): Promise<boolean> {
  return (await db('benchmark_plans').where({ project_id: projectId, id }).delete()) > 0;
}

export type BenchmarkRunStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface BenchmarkRunRecord {
  id: string;
  projectId: string;
  planName: string;
  /** The plan as resolved for this run (its QPIs' metrics and parameters filled in). */
  plan: ResolvedPlan;
  runner: string;
  status: BenchmarkRunStatus;
  operationId: string | null;
  jobId: string | null;
  results: PlanResults | null;
  score: number | null;
  error: Record<string, unknown> | null;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
}

interface RunRow {
  id: string;
  project_id: string;
  plan_name: string;
  plan: string;
  runner: string;
  status: BenchmarkRunStatus;
  operation_id: string | null;
  job_id: string | null;
  results: string | null;
  score: number | string | null;
  error: string | null;
  created_by: string;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

const runFromRow = (row: RunRow): BenchmarkRunRecord => ({
  id: row.id,
  projectId: row.project_id,
  planName: row.plan_name,
  plan: parseJson<ResolvedPlan>(row.plan),
  runner: row.runner,
  status: row.status,
  operationId: row.operation_id,
  jobId: row.job_id,
  results: row.results === null ? null : parseJson<PlanResults>(row.results),
  score: row.score === null ? null : toNumber(row.score),
  error: row.error === null ? null : parseJson<Record<string, unknown>>(row.error),
  createdBy: row.created_by,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
  finishedAt: row.finished_at,
});

export async function insertRun(db: Knex, run: BenchmarkRunRecord): Promise<void> {
  await db('benchmark_runs').insert({
    id: run.id,
    project_id: run.projectId,
    plan_name: run.planName,
    plan: JSON.stringify(run.plan),
    runner: run.runner,
    status: run.status,
    operation_id: run.operationId,
    job_id: run.jobId,
    results: run.results === null ? null : JSON.stringify(run.results),
    score: run.score,
    error: run.error === null ? null : JSON.stringify(run.error),
    created_by: run.createdBy,
    created_at: run.createdAt,
    updated_at: run.updatedAt,
    finished_at: run.finishedAt,
  });
}

export async function findRun(db: Knex, id: string): Promise<BenchmarkRunRecord | null> {
  const row = (await db('benchmark_runs').where({ id }).first()) as RunRow | undefined;
  return row ? runFromRow(row) : null;
}

export async function listRuns(
  db: Knex,
  projectId: string,
  filter: { planName?: string | undefined; status?: BenchmarkRunStatus | undefined },
  page: PageRequest,
): Promise<Page<BenchmarkRunRecord>> {
  const query = db('benchmark_runs').select('*').where({ project_id: projectId });
  if (filter.planName) query.where({ plan_name: filter.planName });
  if (filter.status) query.where({ status: filter.status });
  return keysetPage<RunRow, BenchmarkRunRecord>(query, page, {
    list: `benchmark-runs:${projectId}:${filter.planName ?? ''}:${filter.status ?? ''}`,
    keys: ['created_at', 'id'],
    direction: 'desc',
    keyOf: (row) => [row.created_at, row.id],
    map: runFromRow,
  });
}

export async function updateRun(
  db: Knex,
  id: string,
  changes: Partial<
    Pick<
      BenchmarkRunRecord,
      'status' | 'operationId' | 'jobId' | 'results' | 'score' | 'error' | 'finishedAt'
    >
  >,
  at: string,
): Promise<void> {
  const update: Record<string, unknown> = { updated_at: at };
  if (changes.status !== undefined) update.status = changes.status;
  if (changes.operationId !== undefined) update.operation_id = changes.operationId;
  if (changes.jobId !== undefined) update.job_id = changes.jobId;
  if (changes.results !== undefined)
    update.results = changes.results === null ? null : JSON.stringify(changes.results);
  if (changes.score !== undefined) update.score = changes.score;
  if (changes.error !== undefined)
    update.error = changes.error === null ? null : JSON.stringify(changes.error);
  if (changes.finishedAt !== undefined) update.finished_at = changes.finishedAt;
  await db('benchmark_runs').where({ id }).update(update);
}

export async function deleteRun(db: Knex, id: string): Promise<void> {
  await db('benchmark_runs').where({ id }).delete();
}
