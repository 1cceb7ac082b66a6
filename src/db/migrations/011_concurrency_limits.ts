import type { Knex } from 'knex';
import { createEnqueueView, dropEnqueueView, isSqlite, jobColumns } from './008_jobs_enqueue.js';

// A concurrency key may admit more than one job at a time: `jobs.concurrency_limit` says how many
// jobs of the same key run at once (1 before this migration: one benchmark per runner). Each
// running job holds one lock row of its key's group (`job_locks.lock_group`, the job's concurrency
// key); the rows of one group are told apart by a slot number in their primary key
// (`key#slot`, or the bare key when the limit is 1, as before).

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

/** The view and trigger of 008_jobs_enqueue, made again over the given columns of `jobs`. */
async function recreateEnqueueView(knex: Knex, columns: string[]): Promise<void> {
  await dropEnqueueView(knex);
  await createEnqueueView(knex, columns);
}
