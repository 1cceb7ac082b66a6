import type { Knex } from 'knex';

// Plugin drivers: external HTTP services an administrator registered to perform functions for the
// services of an app (name + semver range). One row per plugin, with the functions it offers and
// its last health check, which the background checks keep up to date. A service keeps the app its
// package version named (null: the package itself), as it keeps its functions: a catalog change
// does not change which plugins serve a running service.

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('services', (t) => {
    t.string('app_name', 63).nullable();
    t.string('app_version', 100).nullable();
  });
  await knex.schema.createTable('plugin_drivers', (t) => {
    t.string('name', 63).primary();
    t.string('version', 100).notNullable();
    t.text('description').notNullable();
    t.string('scope', 63).nullable();
    t.string('app_name', 63).notNullable();
    // A semver range (`>=1.0.0`, `^7.2`): matched in the service layer, not in SQL.
    t.string('app_versions', 200).notNullable();
    t.string('url', 2000).notNullable();
    t.text('functions').notNullable();
    t.string('health_status', 8).notNullable().defaultTo('unknown');
    t.string('health_checked_at', 30).nullable();
    t.text('health_detail').nullable();
    t.string('created_by', 46).notNullable();
    t.string('created_at', 30).notNullable();
    t.index(['app_name', 'name']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('plugin_drivers');
  await knex.schema.alterTable('services', (t) => {
    t.dropColumn('app_version');
    t.dropColumn('app_name');
  });
}
