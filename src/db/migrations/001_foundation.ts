import type { Knex } from 'knex';

// Timestamps are ISO-8601 UTC strings (sortable, identical on both engines); JSON is stored as text.

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('users', (t) => {
    t.string('id', 46).primary();
    t.string('username', 200).notNullable().unique();
    t.string('name', 400).nullable();
    t.string('email', 400).nullable();
    t.text('groups').notNullable().defaultTo('[]');
    t.boolean('is_admin').notNullable().defaultTo(false);
    t.string('oidc_issuer', 500).nullable();
    t.string('oidc_subject', 500).nullable();
    t.string('created_at', 30).notNullable();
    t.string('updated_at', 30).notNullable();
    t.string('last_seen_at', 30).nullable();
    // Lower-cased username, name and email, for `q`.
    t.text('search_text').notNullable().defaultTo('');
    t.unique(['oidc_issuer', 'oidc_subject']);
  });

  await knex.schema.createTable('api_tokens', (t) => {
    t.string('id', 46).primary();
    t.string('user_id', 46).notNullable().references('id').inTable('users').onDelete('CASCADE');
    t.string('name', 100).notNullable();
    t.string('prefix', 20).notNullable();
    t.string('secret_hash', 64).notNullable().unique();
    t.text('scopes').notNullable();
    t.string('created_at', 30).notNullable();
    t.string('expires_at', 30).nullable();
    t.string('last_used_at', 30).nullable();
    t.string('revoked_at', 30).nullable();
    t.index(['user_id', 'created_at', 'id']);
  });

  await knex.schema.createTable('projects', (t) => {
    t.string('id', 63).primary();
    t.string('name', 200).notNullable();
    t.string('description', 2000).notNullable().defaultTo('');
    t.string('kind', 10).notNullable();
    t.string('region_id', 63).notNullable();
    // The user a personal project belongs to; unique, so a user never gets two.
    t.string('personal_of', 46).nullable().unique().references('id').inTable('users').onDelete('CASCADE');
    t.integer('version').notNullable().defaultTo(1);
    t.string('created_at', 30).notNullable();
    t.string('updated_at', 30).notNullable();
  });

  await knex.schema.createTable('project_members', (t) => {
    t.string('project_id', 63).notNullable().references('id').inTable('projects').onDelete('CASCADE');
    t.string('user_id', 46).notNullable().references('id').inTable('users').onDelete('CASCADE');
    t.string('role', 10).notNullable();
    t.string('added_at', 30).notNullable();
    t.primary(['project_id', 'user_id']);
    t.index(['user_id', 'project_id']);
  });

  await knex.schema.createTable('project_quotas', (t) => {
    t.string('project_id', 63).primary().references('id').inTable('projects').onDelete('CASCADE');
    for (const prefix of ['limit', 'used']) {
      const nullable = prefix === 'limit';
      for (const column of ['cpu_millis', 'memory_bytes', 'storage_bytes']) {
        const c = t.bigInteger(`${prefix}_${column}`);
        if (nullable) c.nullable();
        else c.notNullable().defaultTo(0);
      }
      for (const column of ['gpu', 'services', 'concurrent_jobs']) {
        const c = t.integer(`${prefix}_${column}`);
        if (nullable) c.nullable();
        else c.notNullable().defaultTo(0);
      }
    }
    t.integer('version').notNullable().defaultTo(1);
    t.string('updated_at', 30).notNullable();
  });

  await knex.schema.createTable('catalogs', (t) => {
    t.string('id', 63).primary();
    t.integer('position').notNullable();
    t.string('name', 200).notNullable();
    t.string('description', 2000).notNullable();
    t.string('maintainer', 200).nullable();
    t.text('source').notNullable();
    t.string('status', 10).notNullable();
    t.integer('package_count').notNullable().defaultTo(0);
    t.text('issues').notNullable().defaultTo('[]');
    t.string('refreshed_at', 30).nullable();
  });

  await knex.schema.createTable('packages', (t) => {
    t.string('catalog_id', 63).notNullable().references('id').inTable('catalogs').onDelete('CASCADE');
    t.string('name', 63).notNullable();
    t.string('title', 200).notNullable();
    t.text('description').notNullable();
    t.text('icon').nullable();
    t.text('keywords').notNullable();
    t.text('home').nullable();
    t.string('latest_version', 100).notNullable();
    // Lower-cased name, title, description and keywords, for `q`.
    t.text('search_text').notNullable();
    t.primary(['catalog_id', 'name']);
  });

  await knex.schema.createTable('package_keywords', (t) => {
    t.string('catalog_id', 63).notNullable();
    t.string('package_name', 63).notNullable();
    t.string('keyword', 100).notNullable();
    t.primary(['catalog_id', 'keyword', 'package_name']);
    t.foreign(['catalog_id', 'package_name'])
      .references(['catalog_id', 'name'])
      .inTable('packages')
      .onDelete('CASCADE');
  });

  await knex.schema.createTable('package_versions', (t) => {
    t.string('catalog_id', 63).notNullable();
    t.string('package_name', 63).notNullable();
    t.string('version', 100).notNullable();
    t.text('manifest').notNullable();
    t.text('source_dir').notNullable();
    t.primary(['catalog_id', 'package_name', 'version']);
    t.foreign(['catalog_id', 'package_name'])
      .references(['catalog_id', 'name'])
      .inTable('packages')
      .onDelete('CASCADE');
  });

  await knex.schema.createTable('audit_events', (t) => {
    t.string('id', 46).primary();
    t.string('at', 30).notNullable();
    t.string('request_id', 128).notNullable();
    t.string('user_id', 46).nullable();
    t.string('operation_id', 100).notNullable();
    t.string('method', 10).notNullable();
    t.text('path').notNullable();
    t.integer('status').notNullable();
    t.string('project_id', 63).nullable();
    t.string('ip', 64).notNullable();
    t.index(['at', 'id']);
    t.index(['user_id', 'at']);
    t.index(['project_id', 'at']);
  });

  await knex.schema.createTable('idempotency_keys', (t) => {
    t.string('user_id', 46).notNullable();
    t.string('key', 200).notNullable();
    t.string('request_hash', 64).notNullable();
    t.string('state', 10).notNullable();
    t.integer('status').nullable();
    t.text('headers').nullable();
    t.text('body').nullable();
    t.string('expires_at', 30).notNullable();
    t.primary(['user_id', 'key']);
    t.index(['expires_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of [
    'idempotency_keys',
    'audit_events',
    'package_versions',
    'package_keywords',
    'packages',
    'catalogs',
    'project_quotas',
    'project_members',
    'projects',
    'api_tokens',
    'users',
  ]) {
    await knex.schema.dropTableIfExists(table);
  }
}
