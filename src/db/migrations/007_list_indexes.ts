import type { Knex } from 'knex';

// Every list is read through an index that gives its order (test/db/query-plans.test.ts): these are
// the ones that had none — every operation (administrators), the catalogs and the module sources
// — or one without the id that breaks ties, so that the engine sorted what it read: a user's or a
// project's audit events (and those of one operation), a run's outputs. The wider index replaces the
// narrower one it starts with.

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('operations', (t) => {
    t.index(['created_at', 'id']);
  });
  await knex.schema.alterTable('audit_events', (t) => {
    t.dropIndex(['user_id', 'at']);
    t.dropIndex(['project_id', 'at']);
    t.index(['user_id', 'at', 'id']);
    t.index(['project_id', 'at', 'id']);
    t.index(['operation_id', 'at', 'id']);
  });
  await knex.schema.alterTable('files', (t) => {
    t.dropIndex(['run_id']);
    t.index(['run_id', 'created_at', 'id']);
  });
  await knex.schema.alterTable('catalogs', (t) => {
    t.index(['position', 'id']);
  });
  await knex.schema.alterTable('module_sources', (t) => {
    t.index(['position']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('module_sources', (t) => {
    t.dropIndex(['position']);
  });
  await knex.schema.alterTable('catalogs', (t) => {
    t.dropIndex(['position', 'id']);
  });
  await knex.schema.alterTable('files', (t) => {
    t.dropIndex(['run_id', 'created_at', 'id']);
    t.index(['run_id']);
  });
  await knex.schema.alterTable('audit_events', (t) => {
    t.dropIndex(['operation_id', 'at', 'id']);
    t.dropIndex(['project_id', 'at', 'id']);
    t.dropIndex(['user_id', 'at', 'id']);
    t.index(['project_id', 'at']);
    t.index(['user_id', 'at']);
  });
  await knex.schema.alterTable('operations', (t) => {
    t.dropIndex(['created_at', 'id']);
  });
}
