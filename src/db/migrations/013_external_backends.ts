import type { Knex } from 'knex';

// External backends: services Atrium did not launch, registered by URL in a project. They are
// rows of `services` (so that their functions, calls, heartbeat and gateway are those of any
// service) with `origin` 'external' and what was registered in `external`; no backend runs them.

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('services', (t) => {
    t.string('origin', 10).notNullable().defaultTo('catalog');
    t.text('external').nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('services', (t) => {
    t.dropColumn('external');
    t.dropColumn('origin');
  });
}
