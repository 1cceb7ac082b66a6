import type { Knex } from 'knex';
import type { CatalogIssue, LoadedVersion } from '../backends/catalog/source.js';
import type { PackageVersionSpec } from '../backends/catalog/manifest.js';
import { compareVersionsDescending, latestVersion } from '../versions.js';
import { escapeLike } from './users.js';
import { keysetPage, type Page, type PageRequest } from './pagination.js';
import { parseJson, toNumber, type Engine } from './database.js';

export type CatalogStatus = 'pending' | 'ok' | 'degraded' | 'error';

export interface Catalog {
  id: string;
  name: string;
  description: string;
  maintainer: string | null;
  status: CatalogStatus;
  packageCount: number;
  refreshedAt: string | null;
  issues: CatalogIssue[];
}

interface CatalogRow {
  id: string;
  position: number | string;
  name: string;
  description: string;
  maintainer: string | null;
  source: string;
  status: CatalogStatus;
  package_count: number | string;
  issues: string;
  refreshed_at: string | null;
}

const catalogFromRow = (row: CatalogRow): Catalog => ({
  id: row.id,
  name: row.name,
  description: row.description,
  maintainer: row.maintainer,
  status: row.status,
  packageCount: toNumber(row.package_count),
  refreshedAt: row.refreshed_at,
  issues: parseJson<CatalogIssue[]>(row.issues),
});

export interface CatalogDefinition {
  id: string;
  name: string;
  description: string;
  maintainer: string | null;
  source: string;
}

/**
 * Makes the stored catalogs match the configuration: new ones appear as `pending`, changed ones
 * are updated, and catalogs no longer configured are removed with their packages.
 */
export async function syncCatalogDefinitions(db: Knex, definitions: CatalogDefinition[]): Promise<void> {
  await db.transaction(async (trx) => {
    const ids = definitions.map((d) => d.id);
    await trx('catalogs')
      .whereNotIn('id', ids.length ? ids : [''])
      .delete();
    for (const [position, d] of definitions.entries()) {
      await trx('catalogs')
        .insert({
          id: d.id,
          position,
          name: d.name,
          description: d.description,
          maintainer: d.maintainer,
          source: d.source,
          status: 'pending',
          package_count: 0,
          issues: '[]',
          refreshed_at: null,
        })
        .onConflict('id')
        .merge(['position', 'name', 'description', 'maintainer', 'source']);
    }
  });
}

export async function listCatalogs(db: Knex, page: PageRequest): Promise<Page<Catalog>> {
  return keysetPage<CatalogRow, Catalog>(db<CatalogRow>('catalogs').select('*'), page, {
    list: 'catalogs',
    keys: ['position', 'id'],
    keyTypes: ['number', 'string'],
    direction: 'asc',
    keyOf: (row) => [toNumber(row.position), row.id],
    map: catalogFromRow,
  });
}

export async function findCatalog(db: Knex, id: string): Promise<Catalog | null> {
  const row = await db<CatalogRow>('catalogs').where({ id }).first();
  return row ? catalogFromRow(row) : null;
}

/** Replaces a catalog's packages in one transaction: readers see the old set or the new one. */
export async function replaceCatalogContents(
  db: Knex,
  engine: Engine,
  catalogId: string,
  packages: Map<string, LoadedVersion[]>,
  outcome: { status: CatalogStatus; issues: CatalogIssue[]; refreshedAt: string },
): Promise<void> {
  await db.transaction(async (trx) => {
    // Two API instances refreshing the same catalog at once take turns instead of interleaving.
    if (engine === 'postgres')
      await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`catalog:${catalogId}`]);
    await trx('package_versions').where({ catalog_id: catalogId }).delete();
    await trx('package_keywords').where({ catalog_id: catalogId }).delete();
    await trx('packages').where({ catalog_id: catalogId }).delete();
    const packageRows: Record<string, unknown>[] = [];
    const keywordRows: Record<string, unknown>[] = [];
    const versionRows: Record<string, unknown>[] = [];
    for (const [name, versions] of packages) {
      const latest = latestVersion(versions.map((v) => v.spec.version));
      const head = (versions.find((v) => v.spec.version === latest) as LoadedVersion).spec;
      packageRows.push({
        catalog_id: catalogId,
        name,
        title: head.title,
        description: head.description,
        icon: head.icon,
        keywords: JSON.stringify(head.keywords),
        home: head.home,
        latest_version: latest,
        search_text: [name, head.title, head.description, ...head.keywords].join('\n').toLowerCase(),
      });
      for (const keyword of new Set(head.keywords.map((k) => k.toLowerCase()))) {
        keywordRows.push({ catalog_id: catalogId, package_name: name, keyword });
      }
      for (const v of versions) {
        versionRows.push({
          catalog_id: catalogId,
          package_name: name,
          version: v.spec.version,
          manifest: JSON.stringify(v.spec),
          source_dir: v.sourceDir,
        });
      }
    }
    await trx.batchInsert('packages', packageRows, 100);
    await trx.batchInsert('package_keywords', keywordRows, 200);
    await trx.batchInsert('package_versions', versionRows, 100);
    await trx('catalogs')
      .where({ id: catalogId })
      .update({
        status: outcome.status,
        issues: JSON.stringify(outcome.issues),
        refreshed_at: outcome.refreshedAt,
        package_count: packageRows.length,
      });
  });
}

/** Marks a catalog whose source could not be read; its previous packages stay listed. */
export async function markCatalogFailed(
  db: Knex,
  catalogId: string,
  issues: CatalogIssue[],
  at: string,
): Promise<void> {
  await db('catalogs')
    .where({ id: catalogId })
    .update({ status: 'error', issues: JSON.stringify(issues), refreshed_at: at });
}

export interface PackageSummary {
  catalogId: string;
  name: string;
  title: string;
  description: string;
  icon: string | null;
  keywords: string[];
  home: string | null;
  latestVersion: string;
}

interface PackageRow {
  catalog_id: string;
  name: string;
  title: string;
  description: string;
  icon: string | null;
  keywords: string;
  home: string | null;
  latest_version: string;
}

const packageFromRow = (row: PackageRow): PackageSummary => ({
  catalogId: row.catalog_id,
  name: row.name,
  title: row.title,
  description: row.description,
  icon: row.icon,
  keywords: parseJson<string[]>(row.keywords),
  home: row.home,
  latestVersion: row.latest_version,
});

export interface PackageFilter {
  keywords?: string[] | undefined;
  q?: string | undefined;
}

export async function listPackages(
  db: Knex,
  catalogId: string,
  filter: PackageFilter,
  page: PageRequest,
): Promise<Page<PackageSummary>> {
  const query = db('packages as p')
    .where('p.catalog_id', catalogId)
    .select(
      'p.catalog_id',
      'p.name',
      'p.title',
      'p.description',
      'p.icon',
      'p.keywords',
      'p.home',
      'p.latest_version',
    );
  for (const keyword of new Set((filter.keywords ?? []).map((k) => k.toLowerCase()))) {
    query.whereExists(
      db('package_keywords as k')
        .whereRaw('k.catalog_id = p.catalog_id')
        .whereRaw('k.package_name = p.name')
        .where('k.keyword', keyword)
        .select(db.raw('1')),
    );
  }
  if (filter.q)
    query.whereRaw("p.search_text like ? escape '\\'", [`%${escapeLike(filter.q.toLowerCase())}%`]);
  return keysetPage<PackageRow, PackageSummary>(query, page, {
    list: `packages:${JSON.stringify([catalogId, filter.keywords ?? [], filter.q ?? null])}`,
    keys: ['p.name'],
    direction: 'asc',
    keyOf: (row) => [row.name],
    map: packageFromRow,
  });
}

export interface PackageDetail extends PackageSummary {
  versions: { version: string; title: string }[];
}

export async function findPackage(db: Knex, catalogId: string, name: string): Promise<PackageDetail | null> {
  const row = await db<PackageRow>('packages').where({ catalog_id: catalogId, name }).first();
  if (!row) return null;
  const versions = await db('package_versions')
    .where({ catalog_id: catalogId, package_name: name })
    .select('version', 'manifest');
  return {
    ...packageFromRow(row),
    versions: versions
      .map((v: { version: string; manifest: string }) => ({
        version: v.version,
        title: parseJson<PackageVersionSpec>(v.manifest).title,
      }))
      .sort((a, b) => compareVersionsDescending(a.version, b.version)),
  };
}

export interface StoredPackageVersion {
  catalogId: string;
  spec: PackageVersionSpec;
  sourceDir: string;
}

export async function findPackageVersion(
  db: Knex,
  catalogId: string,
  name: string,
  version: string,
): Promise<StoredPackageVersion | null> {
  const row = await db('package_versions')
    .where({ catalog_id: catalogId, package_name: name, version })
    .first();
  return row
    ? { catalogId, spec: parseJson<PackageVersionSpec>(row.manifest), sourceDir: row.source_dir }
    : null;
}

export async function findLatestVersionName(
  db: Knex,
  catalogId: string,
  name: string,
): Promise<string | null> {
  const row = await db('packages').where({ catalog_id: catalogId, name }).first('latest_version');
  return row ? (row.latest_version as string) : null;
}
