import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('services', (t) => {
    t.string('id', 46).primary();
    t.string('project_id', 63).notNullable().references('id').inTable('projects').onDelete('CASCADE');
    t.string('region_id', 63).notNullable();
    t.string('name', 100).notNullable();
    t.string('catalog_id', 63).notNullable();
    t.string('package_name', 63).notNullable();
    t.string('package_version', 100).notNullable();
    t.string('owner_user_id', 46).notNullable().references('id').inTable('users');
    t.boolean('shared').notNullable().defaultTo(false);
    // Validated options, secrets included (never returned); the names of the secret ones.
    t.text('options').notNullable();
    t.text('secret_options').notNullable();
    // The run spec and package directory as launched: a catalog refresh does not change what runs.
    t.text('run_spec').notNullable();
    t.text('source_dir').notNullable();
    // What one instance reserves from the quota.
    t.bigInteger('cpu_millis').notNullable();
    t.bigInteger('memory_bytes').notNullable();
    t.integer('gpu').notNullable();
    t.string('status', 12).notNullable();
    t.string('desired_state', 12).notNullable();
    // What it holds of the quota right now, so that every release is exact.
    t.boolean('holds_slot').notNullable();
    t.boolean('holds_compute').notNullable();
    t.text('message').nullable();
    t.integer('exit_code').nullable();
    t.text('log_tail').notNullable().defaultTo('[]');
    t.text('tasks').notNullable().defaultTo('[]');
    t.text('endpoints').notNullable().defaultTo('[]');
    t.integer('event_seq').notNullable().defaultTo(0);
    // The last backend event recorded, handed back to the backend after a restart.
    t.integer('backend_seq').notNullable().defaultTo(0);
    // Which start of the service runs now: events of an earlier run are not taken for this one.
    t.integer('generation').notNullable().defaultTo(0);
    t.integer('version').notNullable().defaultTo(1);
    t.string('created_at', 30).notNullable();
    t.string('updated_at', 30).notNullable();
    t.string('started_at', 30).nullable();
    t.index(['project_id', 'created_at', 'id']);
    // A member's list: their services, and the shared ones, each an index range.
    t.index(['project_id', 'owner_user_id', 'created_at', 'id']);
    t.index(['project_id', 'shared', 'created_at', 'id']);
    t.index(['region_id', 'status']);
  });

  await knex.schema.createTable('service_events', (t) => {
    t.string('service_id', 46).notNullable().references('id').inTable('services').onDelete('CASCADE');
    t.integer('seq').notNullable();
    t.string('at', 30).notNullable();
    t.string('type', 40).notNullable();
    t.text('message').notNullable();
    t.text('data').notNullable().defaultTo('{}');
    t.primary(['service_id', 'seq']);
  });

  await knex.schema.createTable('operations', (t) => {
    t.string('id', 46).primary();
    t.string('kind', 30).notNullable();
    t.string('project_id', 63).nullable();
    t.string('target_type', 20).nullable();
    t.string('target_id', 63).nullable();
    t.string('user_id', 46).notNullable();
    t.string('status', 12).notNullable();
    t.integer('progress').notNullable().defaultTo(0);
    t.text('message').nullable();
    t.text('error').nullable();
    t.text('result').nullable();
    t.boolean('cancel_requested').notNullable().defaultTo(false);
    t.integer('event_seq').notNullable().defaultTo(0);
    t.string('created_at', 30).notNullable();
    t.string('updated_at', 30).notNullable();
    t.string('finished_at', 30).nullable();
    t.index(['user_id', 'created_at', 'id']);
    t.index(['project_id', 'created_at', 'id']);
    t.index(['target_id', 'status']);
  });

  await knex.schema.createTable('operation_events', (t) => {
    t.string('operation_id', 46).notNullable().references('id').inTable('operations').onDelete('CASCADE');
    t.integer('seq').notNullable();
    t.string('at', 30).notNullable();
    t.string('type', 40).notNullable();
    t.text('message').notNullable();
    t.text('data').notNullable().defaultTo('{}');
    t.primary(['operation_id', 'seq']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['operation_events', 'operations', 'service_events', 'services']) {
    await knex.schema.dropTableIfExists(table);
  }
}
