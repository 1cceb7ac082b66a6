// A database shaped like a busy installation, for query plans: a few thousand rows in the main
// table of every list, spread over several projects, users, pipelines and catalogs, with ties in
// the sort keys. Rows go in as plain inserts (the domain's insert functions would take minutes);
// the values are what the services write, so that the planner sees realistic distributions.
import type { Knex } from 'knex';
import { instant } from './builders.js';

/**
 * The rows of per-project lists are in these eleven projects (prime to every other period below, so
 * that each gets its share of every status, owner and kind); the tests read the first.
 */
export const busyProjects = Array.from({ length: 11 }, (_, i) => `proj-${String(i + 1).padStart(4, '0')}`);
export const userIds = Array.from({ length: 2000 }, (_, i) => `usr_user-${String(i).padStart(4, '0')}`);
/** The member (and owner of services, operations, tokens…) whose lists the tests read. */
export const reader = userIds[1] as string;
export const pipelineIds = Array.from({ length: 30 }, (_, i) => `pip_${String(i).padStart(3, '0')}`);
export const runIds = Array.from({ length: 4000 }, (_, i) => `run_${String(i).padStart(5, '0')}`);
export const catalogIds = Array.from({ length: 60 }, (_, i) => `cat-${String(i).padStart(2, '0')}`);
export const packageNames = ['echo', 'jupyter', 'postgres', 'redis', 'minio'];
export const keywords = Array.from({ length: 30 }, (_, i) => `kw${i}`);
const serviceStatuses = ['pending', 'running', 'suspended', 'failed'];
const rows = 4000;

const pick = <T>(values: readonly T[], i: number): T => values[i % values.length] as T;
// Two rows share each instant: the lists' id tiebreak is part of every plan.
const at = (i: number) => instant(Math.floor(i / 2));
const range = (n: number) => Array.from({ length: n }, (_, i) => i);
// File i is in project i mod 11, as run r is in project r mod 11.
const outputOf = (i: number) => pick(runIds, (i % 11) + 11 * (Math.floor(i / 33) % 4));

async function insert(trx: Knex.Transaction, table: string, records: Record<string, unknown>[]) {
  // SQLite takes 32,766 bound values per statement (PostgreSQL 65,535) and at most 500 rows in the
  // compound SELECT that knex makes of a multi-row insert.
  const columns = Object.keys(records[0] ?? {}).length || 1;
  await trx.batchInsert(table, records, Math.min(500, Math.floor(30000 / columns)));
}

export async function seedBusyInstallation(db: Knex): Promise<void> {
  await db.transaction(async (trx) => {
    await insert(
      trx,
      'users',
      userIds.map((id, i) => ({
        id,
        username: id.slice(4),
        name: `User ${i}`,
        email: `user${i}@example.org`,
        is_admin: i === 0,
        created_at: at(i),
        updated_at: at(i),
        search_text: `${id.slice(4)}\nuser ${i}\nuser${i}@example.org`,
      })),
    );
    const projectIds = range(2000).map((i) => `proj-${String(i + 1).padStart(4, '0')}`);
    await insert(
      trx,
      'projects',
      projectIds.map((id, i) => ({
        id,
        name: `Project ${i}`,
        kind: i % 4 === 3 ? 'personal' : 'group',
        region_id: 'local',
        personal_of: i % 4 === 3 ? pick(userIds, i) : null,
        created_at: at(i),
        updated_at: at(i),
      })),
    );
    // Every project has an owner; the reader is in one project of twenty, and each busy project has
    // two hundred members.
    const members = new Map<
      string,
      { project_id: string; user_id: string; role: string; added_at: string }
    >();
    for (const [i, projectId] of projectIds.entries()) {
      members.set(`${projectId}/${pick(userIds, i + 40)}`, {
        project_id: projectId,
        user_id: pick(userIds, i + 40),
        role: 'owner',
        added_at: at(i),
      });
      if (i % 20 === 0)
        members.set(`${projectId}/${reader}`, {
          project_id: projectId,
          user_id: reader,
          role: 'member',
          added_at: at(i),
        });
    }
    for (const projectId of busyProjects) {
      for (const j of range(200))
        members.set(`${projectId}/${pick(userIds, j)}`, {
          project_id: projectId,
          user_id: pick(userIds, j),
          role: j === 0 ? 'owner' : 'member',
          added_at: at(j),
        });
    }
    await insert(trx, 'project_members', [...members.values()]);

    await insert(
      trx,
      'services',
      range(rows).map((i) => ({
        id: `svc_${String(i).padStart(5, '0')}`,
        project_id: pick(busyProjects, i),
        region_id: 'local',
        name: `service-${i}`,
        catalog_id: pick(catalogIds, i),
        package_name: pick(packageNames, i),
        package_version: '1.0.0',
        owner_user_id: pick(userIds, i % 7),
        shared: i % 9 === 0,
        options: '{}',
        secret_options: '[]',
        run_spec: '{}',
        source_dir: '/srv/catalogs/echo',
        cpu_millis: 100,
        memory_bytes: 67108864,
        gpu: 0,
        status: pick(serviceStatuses, i),
        desired_state: 'running',
        holds_slot: true,
        holds_compute: true,
        created_at: at(i),
        updated_at: at(i),
      })),
    );
    // Calls of service functions: many of the first service, a few of the others.
    await insert(
      trx,
      'service_calls',
      range(rows).map((i) => ({
        id: `call_${String(i).padStart(5, '0')}`,
        service_id: `svc_${String(i % 3 === 0 ? 0 : i % 50).padStart(5, '0')}`,
        project_id: pick(busyProjects, i),
        function: 'echo',
        input: '{}',
        status: 'succeeded',
        sync: i % 2 === 0,
        result: '{}',
        user_id: pick(userIds, i % 7),
        created_at: at(i),
        finished_at: at(i),
        expires_at: at(i + rows),
      })),
    );
    await insert(
      trx,
      'operations',
      range(rows).map((i) => ({
        id: `op_${String(i).padStart(5, '0')}`,
        kind: 'service.start',
        project_id: i % 10 === 9 ? null : pick(busyProjects, i),
        target_type: 'service',
        target_id: `svc_${String(i).padStart(5, '0')}`,
        user_id: pick(userIds, i % 7),
        status: i % 5 === 0 ? 'running' : 'succeeded',
        created_at: at(i),
        updated_at: at(i),
      })),
    );
    await insert(
      trx,
      'pipelines',
      range(rows).map((i) => ({
        id: i < pipelineIds.length ? pipelineIds[i] : `pip_x${i}`,
        project_id: pick(busyProjects, i),
        name: `pipeline ${i}`,
        description: '',
        enabled: i % 3 !== 0,
        tasks: '[]',
        created_by: reader,
        created_at: at(i),
        updated_at: at(i),
      })),
    );
    await insert(
      trx,
      'runs',
      runIds.map((id, i) => ({
        id,
        project_id: pick(busyProjects, i),
        // One of the pipelines of its project (pipeline j is in project j mod 11).
        pipeline_id: pick(pipelineIds, (i % 11) + 11 * (Math.floor(i / 11) % 2)),
        name: `run ${i}`,
        tasks: '[]',
        status: pick(['running', 'finished', 'failed', 'cancelled'], i),
        created_by: reader,
        created_at: at(i),
        updated_at: at(i),
      })),
    );
    await insert(
      trx,
      'run_inputs',
      runIds.map((id, i) => ({ run_id: id, file_id: `fil_${String(i).padStart(5, '0')}`, position: 0 })),
    );
    // Two tasks per run; the first runs of the busy project have eight.
    const jobs = runIds.flatMap((runId, r) =>
      range(r < 6 ? 8 : 2).map((task) => ({
        id: `job_${runId.slice(4)}_${task}`,
        kind: 'pipeline.task',
        project_id: pick(busyProjects, r),
        run_id: runId,
        task_index: task,
        payload: '{}',
        status: 'finished',
        max_attempts: 3,
        run_after: at(r),
        created_at: at(r),
        updated_at: at(r),
      })),
    );
    await insert(trx, 'jobs', jobs);
    await insert(
      trx,
      'files',
      range(rows).map((i) => ({
        id: `fil_${String(i).padStart(5, '0')}`,
        project_id: pick(busyProjects, i),
        name: `data-${Math.floor(i / 11) % 10}.csv`,
        size: 1000 + i,
        sha256: (`${i}`.padStart(8, '0') + 'a').repeat(7).slice(0, 64),
        media_type: pick(['text/csv', 'application/json', 'text/plain'], i),
        tags: JSON.stringify(i % 2 === 0 ? ['raw', `batch-${i % 10}`] : ['clean']),
        kind: i % 3 === 0 ? 'output' : 'input',
        parent_id: i % 3 === 0 ? (i % 2 === 0 ? 'fil_00000' : 'fil_00001') : null,
        // Outputs of the first runs of their project: a page or two per run.
        run_id: i % 3 === 0 ? outputOf(i) : null,
        job_id: i % 3 === 0 ? `job_${outputOf(i).slice(4)}_0` : null,
        created_by: reader,
        created_at: at(i),
        updated_at: at(i),
      })),
    );
    await insert(
      trx,
      'benchmark_plans',
      range(rows).map((i) => ({
        id: `bpl_${String(i).padStart(5, '0')}`,
        project_id: pick(busyProjects, i),
        name: `plan-${i}`,
        definition: '{}',
        created_by: reader,
        created_at: at(i),
        updated_at: at(i),
      })),
    );
    await insert(
      trx,
      'benchmark_runs',
      range(rows).map((i) => ({
        id: `brn_${String(i).padStart(5, '0')}`,
        project_id: pick(busyProjects, i),
        plan_name: `plan-${Math.floor(i / 11) % 10}`,
        plan: '{}',
        runner: 'local',
        status: pick(['queued', 'running', 'succeeded', 'failed'], i),
        created_by: reader,
        created_at: at(i),
        updated_at: at(i),
      })),
    );
    await insert(
      trx,
      'api_tokens',
      range(rows).map((i) => ({
        id: `tok_${String(i).padStart(5, '0')}`,
        user_id: pick(userIds, i % 7),
        name: `token ${i}`,
        prefix: 'atr_abcdefgh',
        secret_hash: String(i).padStart(64, '0'),
        scopes: '["read"]',
        created_at: at(i),
      })),
    );
    await insert(
      trx,
      'audit_events',
      range(rows).map((i) => ({
        id: `aud_${String(i).padStart(5, '0')}`,
        at: at(i),
        request_id: `req-${i}`,
        user_id: pick(userIds, i % 7),
        operation_id: pick(['createService', 'deleteService', 'updateProject', 'createRun'], i),
        method: 'POST',
        path: '/api/v1/projects',
        status: 201,
        project_id: pick(busyProjects, i),
        ip: '127.0.0.1',
      })),
    );
    await insert(
      trx,
      'catalogs',
      catalogIds.map((id, i) => ({
        id,
        position: i,
        name: `Catalog ${id}`,
        description: '',
        source: `/srv/catalogs/${id}`,
        status: 'ok',
      })),
    );
    const packages = range(rows).map((i) => ({
      catalog_id: pick(catalogIds.slice(0, 4), i),
      name: `pkg-${String(i).padStart(5, '0')}`,
      title: `Package ${i}`,
      description: '',
      keywords: JSON.stringify([pick(keywords, i), pick(keywords, i + 7)]),
      latest_version: '1.0.0',
      search_text: `pkg-${i}\npackage ${i}`,
    }));
    await insert(trx, 'packages', packages);
    await insert(
      trx,
      'package_keywords',
      packages.flatMap((p, i) =>
        [pick(keywords, i), pick(keywords, i + 7)].map((keyword) => ({
          catalog_id: p.catalog_id,
          package_name: p.name,
          keyword,
        })),
      ),
    );
    await insert(
      trx,
      'modules',
      range(60).map((i) => ({
        name: `module-${String(i).padStart(2, '0')}`,
        source: 'builtin',
        version: '1.0.0',
        title: `Module ${i}`,
        description: '',
        manifest: '{}',
        source_dir: '/srv/modules',
        digest: 'd'.repeat(64),
        loaded_at: at(i),
      })),
    );
    await insert(
      trx,
      'module_sources',
      range(60).map((i) => ({ id: `source-${i}`, position: i, path: `/srv/modules/${i}`, status: 'ok' })),
    );
    // Each owner's history: a few events for most, a long one for the first.
    for (const [table, owner, ids] of [
      ['service_events', 'service_id', range(rows).map((i) => `svc_${String(i).padStart(5, '0')}`)],
      ['operation_events', 'operation_id', range(rows).map((i) => `op_${String(i).padStart(5, '0')}`)],
      ['run_events', 'run_id', runIds],
      ['job_events', 'job_id', jobs.map((j) => j.id)],
    ] as const) {
      await insert(
        trx,
        table,
        ids.flatMap((id, i) =>
          range(i === 0 ? 300 : 2).map((seq) => ({
            [owner]: id,
            seq: seq + 1,
            at: at(i),
            type: 'status',
            message: '',
          })),
        ),
      );
    }
  });
}

/** Fresh statistics, as autovacuum keeps them on a live PostgreSQL (SQLite runs without them). */
export async function analyze(db: Knex, engine: 'sqlite' | 'postgres'): Promise<void> {
  if (engine === 'postgres') await db.raw('ANALYZE');
}
