import type { Knex } from 'knex';
import * as foundation from './001_foundation.js';
import * as services from './002_services.js';
import * as pipelines from './003_pipelines.js';
import * as benchmarks from './004_benchmarks.js';
import * as idempotencyAnswers from './005_idempotency_answers.js';
import * as listIndexes from './007_list_indexes.js';
import * as jobsEnqueue from './008_jobs_enqueue.js';
import * as serviceEventsOutlive from './009_service_events_outlive.js';
import * as serviceCalls from './010_service_calls.js';
import * as concurrencyLimits from './011_concurrency_limits.js';
import * as pluginDrivers from './012_plugin_drivers.js';
import * as externalBackends from './013_external_backends.js';

// A static list, so that migrations work the same from src/ (tests) and dist/ (production), and a
// bundler or a missing directory can never skip one. Append only.
const migrations: Record<string, Knex.Migration> = {
  '001_foundation': foundation,
  '002_services': services,
  '003_pipelines': pipelines,
  '004_benchmarks': benchmarks,
  '005_idempotency_answers': idempotencyAnswers,
  '007_list_indexes': listIndexes,
  '008_jobs_enqueue': jobsEnqueue,
  '009_service_events_outlive': serviceEventsOutlive,
  '010_service_calls': serviceCalls,
  '011_concurrency_limits': concurrencyLimits,
  '012_plugin_drivers': pluginDrivers,
  '013_external_backends': externalBackends,
};

export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => Object.keys(migrations),
  getMigrationName: (name) => name,
  getMigration: async (name) => migrations[name] as Knex.Migration,
};
