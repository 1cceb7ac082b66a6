import type { Knex } from 'knex';

// Service functions and their calls: a service keeps the functions of the package version it was
// launched from (so that a catalog change does not change a running service), and every call made
// to them is a row — queued, running, then succeeded or failed with its result — kept for a while.

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('services', (t) => {
    t.text('functions').notNullable().defaultTo('[]');
  });
  await knex.schema.createTable('service_calls', (t) => {
    t.string('id', 46).primary();
    t.string('service_id', 46).notNullable().references('id').inTable('services').onDelete('CASCADE');
    t.string('project_id', 63).notNullable();
    t.string('function', 63).notNullable();
    t.text('input').notNullable();
    t.string('status', 12).notNullable();
    t.boolean('sync').notNullable();
    t.text('result').nullable();
    t.text('error').nullable();
    t.string('job_id', 46).nullable();
    // sha256 of the function and its input, for functions answered from a cache.
    t.string('cache_key', 64).nullable();
    t.string('user_id', 46).notNullable();
    t.string('created_at', 30).notNullable();
    t.string('started_at', 30).nullable();
    t.string('finished_at', 30).nullable();
    t.string('expires_at', 30).nullable();
    t.index(['service_id', 'created_at', 'id']);
    t.index(['service_id', 'function', 'cache_key', 'finished_at']);
    t.index(['expires_at']);
    t.index(['job_id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('service_calls');
  await knex.schema.alterTable('services', (t) => {
    t.dropColumn('functions');
  });
}
