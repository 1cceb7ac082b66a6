import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import type { CatalogSourceConfig } from '../config.js';
import { notFound } from '../errors.js';
import type { Engine } from '../db/database.js';
import type { Page, PageRequest } from '../db/pagination.js';
import * as q from '../db/catalogs.js';
import type {
  Catalog,
  PackageDetail,
  PackageFilter,
  PackageSummary,
  StoredPackageVersion,
} from '../db/catalogs.js';
import type { CatalogSource } from '../backends/catalog/source.js';
import { requireAdmin, type Principal } from './principal.js';

export interface CatalogServiceDeps {
  db: Knex;
  engine: Engine;
  clock: Clock;
  log: Logger;
  catalogs: readonly CatalogSourceConfig[];
  /** Opens the source of a configured catalog (a directory today). */
  openSource: (catalog: CatalogSourceConfig) => CatalogSource;
  /**
   * How long this process serves a package page from memory (config cache.catalogPagesMs). A
   * catalog changes only when it is loaded (start, refresh): the process that loads it forgets its
   * pages at once; another API process sharing the database serves cached pages for at most this
   * long after a refresh there.
   */
  pageCacheTtlMs?: number;
}

const pageCacheEntries = 500;

export class CatalogService {
  private loaded = false;
  private readonly pages = new Map<string, { page: Page<PackageSummary>; until: number }>();
  /** Counts loads: a page read while a load ran is not kept. */
  private generation = 0;

  constructor(private readonly deps: CatalogServiceDeps) {}

  /** Whether every catalog has been loaded once since start. */
  isLoaded(): boolean {
    return this.loaded;
  }

  /** At start-up: store the configured catalogs, then load each from its source. */
  async loadAll(): Promise<void> {
    await q.syncCatalogDefinitions(
      this.deps.db,
      this.deps.catalogs.map((c) => ({
        id: c.id,
        name: c.name,
        description: c.description,
        maintainer: c.maintainer,
        source: c.path,
      })),
    );
    for (const catalog of this.deps.catalogs) await this.load(catalog);
    this.loaded = true;
  }

  async refresh(principal: Principal, catalogId: string): Promise<Catalog> {
    requireAdmin(principal);
    const catalog = this.deps.catalogs.find((c) => c.id === catalogId);
    if (!catalog) throw notFound('catalog', catalogId);
    await this.load(catalog);
    return this.get(catalogId);
  }

  list(page: PageRequest): Promise<Page<Catalog>> {
    return q.listCatalogs(this.deps.db, page);
  }

  async get(catalogId: string): Promise<Catalog> {
    const catalog = await q.findCatalog(this.deps.db, catalogId);
    if (!catalog) throw notFound('catalog', catalogId);
    return catalog;
  }

  async listPackages(
    catalogId: string,
    filter: PackageFilter,
    page: PageRequest,
  ): Promise<Page<PackageSummary>> {
    const key = JSON.stringify([
      catalogId,
      filter.keywords ?? null,
      filter.q ?? null,
      page.limit,
      page.cursor ?? null,
    ]);
    const now = performance.now();
    const cached = this.pages.get(key);
    if (cached && cached.until > now) return cached.page;
    const generation = this.generation;
    const result = await q.listPackages(this.deps.db, catalogId, filter, page);
    // Only an empty page can hide an unknown catalog: look it up then, not on every request.
    if (result.items.length === 0) await this.get(catalogId);
    const ttl = this.deps.pageCacheTtlMs ?? 2_000;
    if (generation !== this.generation || ttl <= 0) return result;
    if (!cached && this.pages.size >= pageCacheEntries) {
      this.pages.delete(this.pages.keys().next().value as string);
    }
    this.pages.set(key, { page: result, until: now + ttl });
    return result;
  }

  async getPackage(catalogId: string, name: string): Promise<PackageDetail> {
    const found = await q.findPackage(this.deps.db, catalogId, name);
    if (!found) throw notFound('package', `${catalogId}/${name}`);
    return found;
  }

  /** One version; `latest` names the package's newest release. */
  async getPackageVersion(catalogId: string, name: string, version: string): Promise<StoredPackageVersion> {
    const { db } = this.deps;
    const resolved = version === 'latest' ? await q.findLatestVersionName(db, catalogId, name) : version;
    const found = resolved === null ? null : await q.findPackageVersion(db, catalogId, name, resolved);
    if (!found) throw notFound('package version', `${catalogId}/${name}@${version}`);
    return found;
  }

  private async load(catalog: CatalogSourceConfig): Promise<void> {
    try {
      await this.loadContents(catalog, iso(this.deps.clock()));
    } finally {
      this.generation += 1;
      this.pages.clear();
    }
  }

  private async loadContents(catalog: CatalogSourceConfig, at: string): Promise<void> {
    const { db, engine, log } = this.deps;
    try {
      const contents = await this.deps.openSource(catalog).load();
      const status = contents.issues.length > 0 ? 'degraded' : 'ok';
      await q.replaceCatalogContents(db, engine, catalog.id, contents.packages, {
        status,
        issues: contents.issues,
        refreshedAt: at,
      });
      log.info(
        { catalog: catalog.id, packages: contents.packages.size, issues: contents.issues.length },
        'catalog loaded',
      );
      for (const issue of contents.issues)
        log.warn({ catalog: catalog.id, ...issue }, 'catalog manifest rejected');
    } catch (error) {
      // Catalogs are public: say what is wrong without revealing the server's paths.
      const code = (error as { code?: string }).code;
      const message =
        code === 'ENOENT'
          ? 'the catalog source directory does not exist'
          : `cannot read the catalog source (${code ?? 'error'})`;
      await q.markCatalogFailed(db, catalog.id, [{ file: '.', message }], at);
      log.error({ catalog: catalog.id, err: error }, 'catalog source unreadable');
    }
  }
}
