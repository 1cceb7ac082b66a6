import type { Knex } from 'knex';

// A service's events outlive its row for a while: a follower of the event stream reads the last
// ones (`deleting`, `deleted`) after the service is gone, and then ends. Deleting the row used to
// take its events with it (ON DELETE CASCADE), so a follower that read a moment too late lost them.
// The events of a deleted service are removed by the purge (db/events.ts purgeOrphanServiceEvents).

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('service_events', (t) => {
    t.dropForeign(['service_id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex('service_events')
    .whereNotExists(knex('services').whereRaw('services.id = service_events.service_id'))
    .delete();
  await knex.schema.alterTable('service_events', (t) => {
    t.foreign('service_id').references('id').inTable('services').onDelete('CASCADE');
  });
}
