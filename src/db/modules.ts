// Modules loaded from their sources, and the sources' load status.
import type { Knex } from 'knex';
import { parseJson, toNumber } from './database.js';
import { keysetPage, type Page, type PageRequest } from './pagination.js';

export interface StoredModule {
  name: string;
  sourceId: string;
  version: string;
  title: string;
  description: string;
  /** The validated manifest, as parseModuleManifest returned it. */
  manifest: unknown;
  dir: string;
  digest: string;
  loadedAt: string;
}

interface ModuleRow {
  name: string;
  source: string;
  version: string;
  title: string;
  description: string;
  manifest: string;
  source_dir: string;
  digest: string;
  loaded_at: string;
}

const moduleFromRow = (row: ModuleRow): StoredModule => ({
  name: row.name,
  sourceId: row.source,
  version: row.version,
  title: row.title,
  description: row.description,
  manifest: parseJson<unknown>(row.manifest),
  dir: row.source_dir,
  digest: row.digest,
  loadedAt: row.loaded_at,
});

export interface ModuleSourceStatus {
  id: string;
  position: number;
  path: string;
  status: 'loaded' | 'failed' | 'pending';
  moduleCount: number;
  issues: { file: string; message: string }[];
  refreshedAt: string | null;
}

interface SourceRow {
  id: string;
  position: number | string;
  path: string;
  status: ModuleSourceStatus['status'];
  module_count: number | string;
  issues: string;
  refreshed_at: string | null;
}

const sourceFromRow = (row: SourceRow): ModuleSourceStatus => ({
  id: row.id,
  position: toNumber(row.position),
  path: row.path,
  status: row.status,
  moduleCount: toNumber(row.module_count),
  issues: parseJson<ModuleSourceStatus['issues']>(row.issues),
  refreshedAt: row.refreshed_at,
});

/**
 * Replaces every module and source status with what was just loaded, in one transaction: readers
 * see the old set or the new one, never a mix.
 */
export async function replaceModules(
  db: Knex,
  modules: StoredModule[],
  sources: ModuleSourceStatus[],
): Promise<void> {
  await db.transaction(async (trx) => {
    await trx('modules').delete();
    for (const m of modules) {
      await trx('modules').insert({
        name: m.name,
        source: m.sourceId,
        version: m.version,
        title: m.title,
        description: m.description,
        manifest: JSON.stringify(m.manifest),
        source_dir: m.dir,
        digest: m.digest,
        loaded_at: m.loadedAt,
      });
    }
    await trx('module_sources').delete();
    for (const s of sources) {
      await trx('module_sources').insert({
        id: s.id,
        position: s.position,
        path: s.path,
        status: s.status,
        module_count: s.moduleCount,
        issues: JSON.stringify(s.issues),
        refreshed_at: s.refreshedAt,
      });
    }
  });
}

export async function findModule(db: Knex, name: string): Promise<StoredModule | null> {
  const row = (await db('modules').where({ name }).first()) as ModuleRow | undefined;
  return row ? moduleFromRow(row) : null;
}

export async function listModules(db: Knex, page: PageRequest): Promise<Page<StoredModule>> {
  return keysetPage<ModuleRow, StoredModule>(db('modules').select('*'), page, {
    list: 'modules',
    keys: ['name'],
    direction: 'asc',
    keyOf: (row) => [row.name],
    map: moduleFromRow,
  });
}

export async function listModuleSources(db: Knex, page: PageRequest): Promise<Page<ModuleSourceStatus>> {
  return keysetPage<SourceRow, ModuleSourceStatus>(db('module_sources').select('*'), page, {
    list: 'module-sources',
    keys: ['position'],
    keyTypes: ['number'],
    direction: 'asc',
    keyOf: (row) => [toNumber(row.position)],
    map: sourceFromRow,
  });
}
