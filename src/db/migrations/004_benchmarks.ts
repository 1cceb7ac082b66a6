import type { Knex } from 'knex';

// Benchmark plans and runs; jobs that must not run alongside another of the same key (one
// benchmark at a time per runner), held by a lock row while they run.

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('jobs', (t) => {
    t.string('concurrency_key', 200).nullable();
  });
  await knex.schema.createTable('job_locks', (t) => {
    t.string('key', 200).primary();
    t.string('job_id', 46).notNullable().references('id').inTable('jobs').onDelete('CASCADE');
    t.string('taken_at', 30).notNullable();
  });

  await knex.schema.createTable('benchmark_plans', (t) => {
    t.string('id', 46).primary();
    t.string('project_id', 63).notNullable().references('id').inTable('projects').onDelete('CASCADE');
    t.string('name', 63).notNullable();
    // The plan document (name, title, qpis, runner, formula, samples, warmup, parameters).
    t.text('definition').notNullable();
    t.string('created_by', 46).notNullable();
    t.integer('version').notNullable().defaultTo(1);
    t.string('created_at', 30).notNullable();
    t.string('updated_at', 30).notNullable();
    t.unique(['project_id', 'name']);
    t.index(['project_id', 'created_at', 'id']);
  });

  await knex.schema.createTable('benchmark_runs', (t) => {
    t.string('id', 46).primary();
    t.string('project_id', 63).notNullable().references('id').inTable('projects').onDelete('CASCADE');
    t.string('plan_name', 63).notNullable();
    // The plan with its QPIs as it was run.
    t.text('plan').notNullable();
    t.string('runner', 100).notNullable();
    t.string('status', 12).notNullable();
    t.string('operation_id', 46).nullable();
    t.string('job_id', 46).nullable();
    t.text('results').nullable();
    t.float('score').nullable();
    t.text('error').nullable();
    t.string('created_by', 46).notNullable();
    t.string('created_at', 30).notNullable();
    t.string('updated_at', 30).notNullable();
    t.string('finished_at', 30).nullable();
    t.index(['project_id', 'created_at', 'id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('benchmark_runs');
  await knex.schema.dropTableIfExists('benchmark_plans');
  await knex.schema.dropTableIfExists('job_locks');
  await knex.schema.alterTable('jobs', (t) => {
    t.dropColumn('concurrency_key');
  });
}
