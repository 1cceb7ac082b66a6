import type { Knex } from 'knex';
import { parseJson } from './database.js';

// Plugin drivers: external HTTP services registered to perform functions for the services of an
// app (services/drivers.ts). Their number is small (an administrator registers each), so lists
// are read whole and ordered by name.

export type PluginHealthStatus = 'up' | 'down' | 'unknown';

/** A function a plugin offers: a manifest function's shape, without how (the plugin knows). */
export interface PluginFunction {
  name: string;
  description: string;
  input: Record<string, unknown>;
  output: Record<string, unknown> | null;
  timeout_ms: number;
  idempotent: boolean;
  cache_ttl_s: number;
}

export interface PluginHealth {
  status: PluginHealthStatus;
  checkedAt: string | null;
  detail: string | null;
}

export interface PluginDriver {
  name: string;
  version: string;
  description: string;
  scope: string | null;
  app: { name: string; versions: string };
  url: string;
  functions: PluginFunction[];
  health: PluginHealth;
  createdBy: string;
  createdAt: string;
}

interface PluginDriverRow {
  name: string;
  version: string;
  description: string;
  scope: string | null;
  app_name: string;
  app_versions: string;
  url: string;
  functions: string;
  health_status: PluginHealthStatus;
  health_checked_at: string | null;
  health_detail: string | null;
  created_by: string;
  created_at: string;
}

const fromRow = (r: PluginDriverRow): PluginDriver => ({
  name: r.name,
  version: r.version,
  description: r.description,
  scope: r.scope,
  app: { name: r.app_name, versions: r.app_versions },
  url: r.url,
  functions: parseJson<PluginFunction[]>(r.functions),
  health: { status: r.health_status, checkedAt: r.health_checked_at, detail: r.health_detail },
  createdBy: r.created_by,
  createdAt: r.created_at,
});

/** Stores a new plugin; a taken name is a unique violation. */
export async function insertPluginDriver(db: Knex, d: PluginDriver): Promise<void> {
  await db('plugin_drivers').insert({
    name: d.name,
    version: d.version,
    description: d.description,
    scope: d.scope,
    app_name: d.app.name,
    app_versions: d.app.versions,
    url: d.url,
    functions: JSON.stringify(d.functions),
    health_status: d.health.status,
    health_checked_at: d.health.checkedAt,
    health_detail: d.health.detail,
    created_by: d.createdBy,
    created_at: d.createdAt,
  });
}

export async function findPluginDriver(db: Knex, name: string): Promise<PluginDriver | null> {
  const row = (await db('plugin_drivers').where({ name }).first()) as PluginDriverRow | undefined;
  return row ? fromRow(row) : null;
}

/** Every plugin, by name. */
export async function listPluginDrivers(db: Knex): Promise<PluginDriver[]> {
  const rows = (await db('plugin_drivers').select('*').orderBy('name')) as PluginDriverRow[];
  return rows.map(fromRow);
}

/** The plugins registered for an app (whichever versions they serve), by name. */
export async function listPluginDriversOfApp(db: Knex, appName: string): Promise<PluginDriver[]> {
  const rows = (await db('plugin_drivers').where({ app_name: appName }).orderBy('name')) as PluginDriverRow[];
  return rows.map(fromRow);
}

export async function countPluginDrivers(db: Knex): Promise<number> {
  const [row] = (await db('plugin_drivers').count({ n: '*' })) as { n: number | string }[];
  return Number(row?.n ?? 0);
}

/**
 * Records a health check of the registration made at `createdAt`; false when it is gone (removed
 * meanwhile, perhaps registered again: a check of the old one must not speak for the new).
 */
export async function setPluginHealth(
  db: Knex,
  name: string,
  createdAt: string,
  health: PluginHealth,
): Promise<boolean> {
  return (
    (await db('plugin_drivers').where({ name, created_at: createdAt }).update({
      health_status: health.status,
      health_checked_at: health.checkedAt,
      health_detail: health.detail,
    })) > 0
  );
}

/** Removes a plugin; false when there was none. */
export async function deletePluginDriver(db: Knex, name: string): Promise<boolean> {
  return (await db('plugin_drivers').where({ name }).delete()) > 0;
}
