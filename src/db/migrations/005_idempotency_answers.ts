// Idempotency keys survive a crash of the process that held them: a claim is leased to its process
// (and renewed while the request runs), and the answer of a create is kept in the same transaction
// as what it created, in its own table (rows written with a change are inserts).
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('idempotency_keys', (t) => {
    t.string('owner', 40).nullable();
    t.string('lease_until', 30).nullable();
  });
  await knex.schema.createTable('idempotency_answers', (t) => {
    t.string('user_id', 46).notNullable();
    t.string('key', 200).notNullable();
    t.integer('status').notNullable();
    t.text('headers').notNullable();
    t.text('body').nullable();
    t.string('expires_at', 30).notNullable();
    t.primary(['user_id', 'key']);
    t.index(['expires_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('idempotency_answers');
  await knex.schema.alterTable('idempotency_keys', (t) => {
    t.dropColumn('owner');
    t.dropColumn('lease_until');
  });
}
