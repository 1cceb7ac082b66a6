import type { Knex } from 'knex';

// A job and the first event of its history written by one statement (insertJob), so that an
// enqueue costs one round trip inside its transaction. PostgreSQL does it with a data-modifying CTE
// and needs nothing here. SQLite has no such CTE: an insert into the view `job_enqueues` (a job's
// columns and its first event's) is turned by its trigger into the two inserts. A column added to
// `jobs` later that an enqueue sets must be added to the view and the trigger too.

/** The columns of `jobs` the view carries as of this migration (011 adds concurrency_limit). */
export const jobColumns = [
  'id',
  'kind',
  'project_id',
  'run_id',
  'task_index',
  'payload',
  'priority',
  'status',
  'depends_on',
  'concurrency_key',
  'max_attempts',
  'run_after',
  'event_seq',
  'created_at',
  'updated_at',
];

export async function up(knex: Knex): Promise<void> {
  if (!isSqlite(knex)) return;
  await createEnqueueView(knex, jobColumns);
}

/** The view `job_enqueues` over the given columns of `jobs`, and its insert trigger (SQLite). */
export async function createEnqueueView(knex: Knex, columns: string[]): Promise<void> {
  await knex.raw(`
    create view job_enqueues as
    select ${columns.map((c) => `j.${c}`).join(', ')},
      e.at as event_at, e.type as event_type, e.message as event_message, e.data as event_data
    from jobs j join job_events e on e.job_id = j.id and e.seq = 1`);
  await knex.raw(`
    create trigger job_enqueues_insert instead of insert on job_enqueues
    begin
      insert into jobs (${columns.join(', ')})
        values (${columns.map((c) => `new.${c}`).join(', ')});
      insert into job_events (job_id, seq, at, type, message, data)
        values (new.id, new.event_seq, new.event_at, new.event_type, new.event_message, new.event_data);
    end`);
}

export async function down(knex: Knex): Promise<void> {
  if (!isSqlite(knex)) return;
  await dropEnqueueView(knex);
}

export async function dropEnqueueView(knex: Knex): Promise<void> {
  await knex.raw('drop trigger if exists job_enqueues_insert');
  await knex.raw('drop view if exists job_enqueues');
}

export function isSqlite(knex: Knex): boolean {
  return (knex.client as { dialect?: string }).dialect === 'sqlite3';
}
