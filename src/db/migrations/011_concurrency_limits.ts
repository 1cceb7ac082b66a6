import type { Knex } from 'knex';

// A concurrency key may admit more than one job at a time: `jobs.concurrency_limit` says how many
// jobs of the same key run at once (1 before this migration: one benchmark per runner). Each
// running job holds one lock row of its key's group (`job_locks.lock_group`, the job's concurrency
// key); the rows of one group are told apart by a slot number in their primary key
// (`key#slot`, or the bare key when the limit is 1, as before).

const jobColumns = [
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
  await knex.schema.alterTable('jobs', (t) => {
    t.integer('concurrency_limit').notNullable().defaultTo(1);
  });
  await knex.schema.alterTable('job_locks', (t) => {
    t.string('lock_group', 200).nullable();
  });
  await knex('job_locks').update({ lock_group: knex.ref('key') });
  await knex.schema.alterTable('job_locks', (t) => {
    t.index(['lock_group']);
  });
  if (isSqlite(knex)) await recreateEnqueueView(knex, [...jobColumns, 'concurrency_limit']);
}

export async function down(knex: Knex): Promise<void> {
  if (isSqlite(knex)) await recreateEnqueueView(knex, jobColumns);
  await knex.schema.alterTable('job_locks', (t) => {
    t.dropIndex(['lock_group']);
    t.dropColumn('lock_group');
  });
  await knex.schema.alterTable('jobs', (t) => {
    t.dropColumn('concurrency_limit');
  });
}

/** The view and trigger of 008_jobs_enqueue, over the given columns of `jobs`. */
async function recreateEnqueueView(knex: Knex, columns: string[]): Promise<void> {
  await knex.raw('drop trigger if exists job_enqueues_insert');
  await knex.raw('drop view if exists job_enqueues');
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

function isSqlite(knex: Knex): boolean {
  return (knex.client as { dialect?: string }).dialect === 'sqlite3';
}
