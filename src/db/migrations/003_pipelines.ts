import type { Knex } from 'knex';

// The scheduler's jobs, files, modules, pipelines and runs.

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('jobs', (t) => {
    t.string('id', 46).primary();
    t.string('kind', 50).notNullable();
    t.string('project_id', 63).nullable().references('id').inTable('projects').onDelete('CASCADE');
    t.string('run_id', 46).nullable();
    t.integer('task_index').nullable();
    t.text('payload').notNullable();
    t.integer('priority').notNullable().defaultTo(0);
    // pending (waits for depends_on) → queued → running → finished | failed | cancelled
    t.string('status', 12).notNullable();
    t.string('depends_on', 46).nullable();
    t.integer('attempts').notNullable().defaultTo(0);
    t.integer('max_attempts').notNullable();
    // Not claimed before this time (retry backoff).
    t.string('run_after', 30).notNullable();
    // The current claim: its token fences every write of whoever holds it.
    t.string('lease_token', 40).nullable();
    t.string('lease_owner', 200).nullable();
    t.string('lease_expires_at', 30).nullable();
    // Whether it holds one of its project's concurrent-job slots.
    t.boolean('holds_slot').notNullable().defaultTo(false);
    t.boolean('cancel_requested').notNullable().defaultTo(false);
    t.text('error').nullable();
    t.text('result').nullable();
    t.integer('event_seq').notNullable().defaultTo(0);
    t.string('created_at', 30).notNullable();
    t.string('updated_at', 30).notNullable();
    t.string('started_at', 30).nullable();
    t.string('finished_at', 30).nullable();
    t.index(['status', 'priority', 'created_at', 'id']);
    t.index(['status', 'lease_expires_at']);
    t.index(['depends_on']);
    t.index(['run_id', 'task_index']);
  });

  await knex.schema.createTable('job_events', (t) => {
    t.string('job_id', 46).notNullable().references('id').inTable('jobs').onDelete('CASCADE');
    t.integer('seq').notNullable();
    t.string('at', 30).notNullable();
    t.string('type', 40).notNullable();
    t.text('message').notNullable();
    t.text('data').notNullable().defaultTo('{}');
    t.primary(['job_id', 'seq']);
  });

  await knex.schema.createTable('files', (t) => {
    t.string('id', 46).primary();
    t.string('project_id', 63).notNullable().references('id').inTable('projects').onDelete('CASCADE');
    t.string('name', 255).notNullable();
    t.bigInteger('size').notNullable();
    t.string('sha256', 64).notNullable();
    t.string('media_type', 200).notNullable();
    t.text('tags').notNullable().defaultTo('[]');
    t.string('kind', 10).notNullable();
    t.string('parent_id', 46).nullable();
    // The job (and its run) that produced it, for outputs.
    t.string('run_id', 46).nullable();
    t.string('job_id', 46).nullable();
    t.string('created_by', 46).nullable();
    t.integer('version').notNullable().defaultTo(1);
    t.string('created_at', 30).notNullable();
    t.string('updated_at', 30).notNullable();
    t.index(['project_id', 'created_at', 'id']);
    t.index(['sha256']);
    t.index(['parent_id']);
    t.index(['run_id']);
  });

  await knex.schema.createTable('modules', (t) => {
    t.string('name', 63).primary();
    t.string('source', 63).notNullable();
    t.string('version', 100).notNullable();
    t.string('title', 200).notNullable();
    t.text('description').notNullable();
    t.text('manifest').notNullable();
    t.text('source_dir').notNullable();
    t.string('digest', 64).notNullable();
    t.string('loaded_at', 30).notNullable();
  });

  await knex.schema.createTable('module_sources', (t) => {
    t.string('id', 63).primary();
    t.integer('position').notNullable();
    t.text('path').notNullable();
    t.string('status', 10).notNullable();
    t.integer('module_count').notNullable().defaultTo(0);
    t.text('issues').notNullable().defaultTo('[]');
    t.string('refreshed_at', 30).nullable();
  });

  await knex.schema.createTable('pipelines', (t) => {
    t.string('id', 46).primary();
    t.string('project_id', 63).notNullable().references('id').inTable('projects').onDelete('CASCADE');
    t.string('name', 200).notNullable();
    t.text('description').notNullable();
    t.boolean('enabled').notNullable().defaultTo(true);
    // The ordered tasks: [{module, function, options}].
    t.text('tasks').notNullable();
    t.string('created_by', 46).notNullable();
    t.integer('version').notNullable().defaultTo(1);
    t.string('created_at', 30).notNullable();
    t.string('updated_at', 30).notNullable();
    t.index(['project_id', 'created_at', 'id']);
  });

  await knex.schema.createTable('runs', (t) => {
    t.string('id', 46).primary();
    t.string('project_id', 63).notNullable().references('id').inTable('projects').onDelete('CASCADE');
    t.string('pipeline_id', 46).notNullable();
    t.string('name', 200).notNullable();
    // The pipeline's tasks as they were when the run was made.
    t.text('tasks').notNullable();
    t.string('status', 12).notNullable();
    t.string('operation_id', 46).nullable();
    t.string('created_by', 46).notNullable();
    t.integer('event_seq').notNullable().defaultTo(0);
    t.integer('version').notNullable().defaultTo(1);
    t.string('created_at', 30).notNullable();
    t.string('updated_at', 30).notNullable();
    t.string('finished_at', 30).nullable();
    t.index(['project_id', 'created_at', 'id']);
    t.index(['pipeline_id']);
  });

  await knex.schema.createTable('run_inputs', (t) => {
    t.string('run_id', 46).notNullable().references('id').inTable('runs').onDelete('CASCADE');
    t.string('file_id', 46).notNullable();
    t.integer('position').notNullable();
    t.primary(['run_id', 'file_id']);
    t.index(['file_id']);
  });

  await knex.schema.createTable('run_events', (t) => {
    t.string('run_id', 46).notNullable().references('id').inTable('runs').onDelete('CASCADE');
    t.integer('seq').notNullable();
    t.string('at', 30).notNullable();
    t.string('type', 40).notNullable();
    t.text('message').notNullable();
    t.text('data').notNullable().defaultTo('{}');
    t.primary(['run_id', 'seq']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of [
    'run_events',
    'run_inputs',
    'runs',
    'pipelines',
    'module_sources',
    'modules',
    'files',
    'job_events',
    'jobs',
  ]) {
    await knex.schema.dropTableIfExists(table);
  }
}
