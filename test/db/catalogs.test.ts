import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  findCatalog,
  findLatestVersionName,
  findPackage,
  findPackageVersion,
  listCatalogs,
  listPackages,
  markCatalogFailed,
  replaceCatalogContents,
  syncCatalogDefinitions,
  type CatalogDefinition,
  type PackageFilter,
} from '../../src/db/catalogs.js';
import { isUniqueViolation, toNumber } from '../../src/db/database.js';
import { encodeCursor } from '../../src/db/pagination.js';
import type { LoadedVersion } from '../../src/backends/catalog/source.js';
import { testEngines } from '../fixtures/databases.js';
import {
  aSpec,
  catalogContents,
  expectInvalidCursor,
  instant,
  openMigratedDatabase,
  rejectionOf,
  type MigratedDatabase,
} from './builders.js';

function definition(id: string, overrides: Partial<CatalogDefinition> = {}): CatalogDefinition {
  return {
    id,
    name: `Catalog ${id}`,
    description: `The ${id} catalog`,
    maintainer: 'lab@example.org',
    source: `/srv/catalogs/${id}`,
    ...overrides,
  };
}

const ok = (seconds: number) => ({ status: 'ok' as const, issues: [], refreshedAt: instant(seconds) });

describe.each(testEngines())('catalogs (%s)', (engine) => {
  // Engine-specific cases exist only on their engine (never as skipped tests on the other).
  const onPostgres = (name: string, fn: () => Promise<void>) =>
    engine === 'postgres' ? it(name, fn) : undefined;
  let t: MigratedDatabase;

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
  });
  afterAll(() => t.close());

  /** Configures exactly these catalogs (the sync removes any other). */
  const configure = (...ids: string[]) =>
    syncCatalogDefinitions(
      t.knex,
      ids.map((id) => definition(id)),
    );

  const replace = (catalogId: string, packages: Map<string, LoadedVersion[]>, seconds = 1) =>
    replaceCatalogContents(t.knex, engine, catalogId, packages, ok(seconds));

  const names = async (catalogId: string, filter: PackageFilter = {}) =>
    (await listPackages(t.knex, catalogId, filter, { limit: 100 })).items.map((p) => p.name);

  const rowCount = async (table: string, catalogId: string) =>
    toNumber((await t.knex(table).where({ catalog_id: catalogId }).count({ n: '*' }).first())?.n);

  describe('syncCatalogDefinitions', () => {
    it('adds new catalogs as pending and empty, in the configured order', async () => {
      await syncCatalogDefinitions(t.knex, [definition('zeta'), definition('alpha', { maintainer: null })]);
      const listed = await listCatalogs(t.knex, { limit: 10 });
      expect(listed.items).toEqual([
        {
          id: 'zeta',
          name: 'Catalog zeta',
          description: 'The zeta catalog',
          maintainer: 'lab@example.org',
          status: 'pending',
          packageCount: 0,
          refreshedAt: null,
          issues: [],
        },
        expect.objectContaining({ id: 'alpha', maintainer: null, status: 'pending' }),
      ]);
    });

    it('updates changed catalogs, keeping their status and packages', async () => {
      await configure('main');
      await replace('main', catalogContents(aSpec('echo', '1.0.0')), 5);
      await syncCatalogDefinitions(t.knex, [
        definition('main', { name: 'Main', description: 'Renamed', maintainer: null, source: '/new' }),
      ]);
      expect(await findCatalog(t.knex, 'main')).toEqual({
        id: 'main',
        name: 'Main',
        description: 'Renamed',
        maintainer: null,
        status: 'ok',
        packageCount: 1,
        refreshedAt: instant(5),
        issues: [],
      });
      expect(await t.knex('catalogs').where({ id: 'main' }).first('source')).toEqual({ source: '/new' });
      expect(await names('main')).toEqual(['echo']);
    });

    it('follows a new configured order', async () => {
      await configure('one', 'two', 'three');
      await configure('three', 'one', 'two');
      expect((await listCatalogs(t.knex, { limit: 10 })).items.map((c) => c.id)).toEqual([
        'three',
        'one',
        'two',
      ]);
    });

    it('removes catalogs no longer configured, with all their packages', async () => {
      await configure('keep', 'drop');
      await replace('keep', catalogContents(aSpec('echo', '1.0.0', { keywords: ['demo'] })));
      await replace('drop', catalogContents(aSpec('echo', '1.0.0', { keywords: ['demo'] })));
      await configure('keep');
      expect(await findCatalog(t.knex, 'drop')).toBeNull();
      for (const table of ['packages', 'package_versions', 'package_keywords']) {
        expect([table, await rowCount(table, 'drop')]).toEqual([table, 0]);
        expect([table, await rowCount(table, 'keep')]).toEqual([table, 1]);
      }
    });

    it('removes every catalog when none is configured', async () => {
      await configure('a', 'b');
      await syncCatalogDefinitions(t.knex, []);
      expect(await listCatalogs(t.knex, { limit: 10 })).toEqual({ items: [], nextCursor: null });
    });
  });

  describe('listCatalogs', () => {
    it('refuses a forged cursor whose position is not a number, before it reaches SQL', async () => {
      await configure('c1');
      await expectInvalidCursor(
        listCatalogs(t.knex, { limit: 10, cursor: encodeCursor('catalogs', ['abc', 'x']) }),
      );
    });

    it('pages through the catalogs in configured order', async () => {
      await configure('c3', 'c1', 'c2');
      const first = await listCatalogs(t.knex, { limit: 2 });
      const second = await listCatalogs(t.knex, { limit: 2, cursor: first.nextCursor ?? undefined });
      expect([first, second].map((p) => p.items.map((c) => c.id))).toEqual([['c3', 'c1'], ['c2']]);
      expect(second.nextCursor).toBeNull();
    });

    it('refuses a cursor issued for another list', async () => {
      await configure('main');
      await replace('main', catalogContents(aSpec('a', '1.0.0'), aSpec('b', '1.0.0')));
      const packages = await listPackages(t.knex, 'main', {}, { limit: 1 });
      await expectInvalidCursor(listCatalogs(t.knex, { limit: 1, cursor: packages.nextCursor ?? undefined }));
    });
  });

  describe('findCatalog', () => {
    it('returns null for a catalog that is not configured', async () => {
      await configure('main');
      expect(await findCatalog(t.knex, 'other')).toBeNull();
    });
  });

  describe('replaceCatalogContents', () => {
    it('stores the packages with their versions and records the outcome', async () => {
      await configure('main');
      const issues = [{ file: 'broken/1.0.0.yaml', message: 'title: required' }];
      await replaceCatalogContents(
        t.knex,
        engine,
        'main',
        catalogContents(
          aSpec('echo', '1.0.0', {
            title: 'HTTP echo',
            description: 'Answers every request',
            keywords: ['HTTP', 'demo'],
            icon: 'https://example.org/echo.png',
            home: 'https://example.org/echo',
          }),
          aSpec('notebook', '2.1.0'),
        ),
        { status: 'degraded', issues, refreshedAt: instant(30) },
      );
      expect(await findCatalog(t.knex, 'main')).toMatchObject({
        status: 'degraded',
        issues,
        refreshedAt: instant(30),
        packageCount: 2,
      });
      const listed = await listPackages(t.knex, 'main', {}, { limit: 10 });
      expect(listed.items).toEqual([
        {
          catalogId: 'main',
          name: 'echo',
          title: 'HTTP echo',
          description: 'Answers every request',
          icon: 'https://example.org/echo.png',
          keywords: ['HTTP', 'demo'],
          home: 'https://example.org/echo',
          latestVersion: '1.0.0',
        },
        expect.objectContaining({ name: 'notebook', latestVersion: '2.1.0', icon: null, home: null }),
      ]);
    });

    it('replaces the previous contents entirely', async () => {
      await configure('main');
      await replace('main', catalogContents(aSpec('old', '1.0.0'), aSpec('kept', '1.0.0')));
      await replace('main', catalogContents(aSpec('kept', '2.0.0'), aSpec('new', '1.0.0')));
      expect(await names('main')).toEqual(['kept', 'new']);
      expect(await findPackageVersion(t.knex, 'main', 'kept', '1.0.0')).toBeNull();
      expect(await findPackage(t.knex, 'main', 'old')).toBeNull();
      expect((await findCatalog(t.knex, 'main'))?.packageCount).toBe(2);
    });

    it('leaves the other catalogs alone', async () => {
      await configure('main', 'other');
      await replace('other', catalogContents(aSpec('echo', '1.0.0')));
      await replace('main', catalogContents(aSpec('echo', '2.0.0')));
      await replace('main', new Map());
      expect(await names('main')).toEqual([]);
      expect(await findLatestVersionName(t.knex, 'other', 'echo')).toBe('1.0.0');
    });

    it('takes as latest the highest release, ignoring a higher pre-release, and shows its metadata', async () => {
      await configure('main');
      await replace(
        'main',
        catalogContents(
          aSpec('tool', '1.2.0', { title: 'Tool 1.2', keywords: ['stable'] }),
          aSpec('tool', '2.0.0-rc.1', { title: 'Tool 2 preview', keywords: ['preview'] }),
          aSpec('tool', '1.10.0', { title: 'Tool 1.10', keywords: ['current'] }),
          aSpec('tool', '1.9.0', { title: 'Tool 1.9' }),
        ),
      );
      expect(await findLatestVersionName(t.knex, 'main', 'tool')).toBe('1.10.0');
      expect(await findPackage(t.knex, 'main', 'tool')).toMatchObject({
        title: 'Tool 1.10',
        keywords: ['current'],
      });
      expect(await names('main', { keywords: ['current'] })).toEqual(['tool']);
      expect(await names('main', { keywords: ['preview'] })).toEqual([]);
    });

    it('takes as latest the highest pre-release when there is no release', async () => {
      await configure('main');
      await replace(
        'main',
        catalogContents(
          aSpec('beta', '1.0.0-rc.2'),
          aSpec('beta', '1.0.0-rc.10'),
          aSpec('beta', '0.9.0-alpha'),
        ),
      );
      expect(await findLatestVersionName(t.knex, 'main', 'beta')).toBe('1.0.0-rc.10');
    });

    it('keeps the previous contents and outcome when the replacement fails', async () => {
      await configure('main');
      await replace('main', catalogContents(aSpec('echo', '1.0.0')), 10);
      const broken = catalogContents(aSpec('fresh', '1.0.0'), aSpec('echo', '3.0.0'), aSpec('echo', '3.0.0'));
      expect(isUniqueViolation(await rejectionOf(replace('main', broken, 20)))).toBe(true);
      expect(await names('main')).toEqual(['echo']);
      expect(await findLatestVersionName(t.knex, 'main', 'echo')).toBe('1.0.0');
      expect(await findCatalog(t.knex, 'main')).toMatchObject({ refreshedAt: instant(10), packageCount: 1 });
    });

    onPostgres('lets readers see the old contents until the new ones are committed', async () => {
      await configure('main');
      await replace('main', catalogContents(aSpec('old', '1.0.0')));
      const blocker = await t.knex.transaction();
      try {
        // Holding the catalog row stops the replacement at its last statement (the update of the
        // catalog), with the old packages deleted and the new ones written but not committed.
        await blocker('catalogs').where({ id: 'main' }).forNoKeyUpdate().first('id');
        const replacing = replace('main', catalogContents(aSpec('new', '1.0.0')));
        await waitForLockWaiters(1);
        expect(await names('main')).toEqual(['old']);
        await blocker.commit();
        await replacing;
      } finally {
        if (!blocker.isCompleted()) await blocker.rollback();
      }
      expect(await names('main')).toEqual(['new']);
    });

    onPostgres('waits for another refresh of the same catalog to finish', async () => {
      await configure('fresh');
      const other = await t.knex.transaction();
      try {
        await other.raw('select pg_advisory_xact_lock(hashtext(?))', ['catalog:fresh']);
        const replacing = replace('fresh', catalogContents(aSpec('echo', '1.0.0')));
        await waitForLockWaiters(1);
        expect(await names('fresh')).toEqual([]);
        await other.commit();
        await replacing;
      } finally {
        if (!other.isCompleted()) await other.rollback();
      }
      expect(await names('fresh')).toEqual(['echo']);
    });

    async function waitForLockWaiters(count: number): Promise<void> {
      for (let attempt = 0; attempt < 200; attempt += 1) {
        const row = await t
          .knex('pg_stat_activity')
          .whereRaw('datname = current_database()')
          .where({ wait_event_type: 'Lock' })
          .count({ n: '*' })
          .first();
        if (toNumber(row?.n) >= count) return;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      throw new Error('nothing came to wait for the lock');
    }
  });

  describe('markCatalogFailed', () => {
    it('records the error and keeps the packages listed', async () => {
      await configure('main');
      await replace('main', catalogContents(aSpec('echo', '1.0.0')), 10);
      const issues = [{ file: '/srv/catalogs/main', message: 'directory not readable' }];
      await markCatalogFailed(t.knex, 'main', issues, instant(20));
      expect(await findCatalog(t.knex, 'main')).toMatchObject({
        status: 'error',
        issues,
        refreshedAt: instant(20),
        packageCount: 1,
      });
      expect(await names('main')).toEqual(['echo']);
    });
  });

  describe('listPackages', () => {
    beforeAll(async () => {
      await configure('main', 'other');
      await replace(
        'main',
        catalogContents(
          aSpec('jupyter', '1.0.0', {
            title: 'JupyterLab',
            description: 'Notebooks for Python',
            keywords: ['Notebook', 'python'],
          }),
          aSpec('rstudio', '1.0.0', {
            title: 'RStudio',
            description: 'An IDE for R',
            keywords: ['ide', 'r'],
          }),
          aSpec('vscode', '1.0.0', {
            title: 'VS Code',
            description: 'Edits Python and more; saves 50% time',
            keywords: ['ide', 'python'],
          }),
          aSpec('zeppelin', '1.0.0', {
            title: 'Zeppelin',
            description: 'Notebooks; saves 500 hours',
            keywords: ['notebook', 'scala'],
          }),
          aSpec('a-b', '1.0.0', { title: 'Underscore a_b test' }),
          aSpec('axb', '1.0.0', { title: 'Lookalike axb test' }),
        ),
      );
      await replace('other', catalogContents(aSpec('other-python', '1.0.0', { keywords: ['python'] })));
    });

    it("lists the catalog's packages by name, a page at a time", async () => {
      const first = await listPackages(t.knex, 'main', {}, { limit: 4 });
      const second = await listPackages(
        t.knex,
        'main',
        {},
        { limit: 4, cursor: first.nextCursor ?? undefined },
      );
      expect([first, second].map((p) => p.items.map((i) => i.name))).toEqual([
        ['a-b', 'axb', 'jupyter', 'rstudio'],
        ['vscode', 'zeppelin'],
      ]);
      expect(second.nextCursor).toBeNull();
    });

    it('keeps only packages having every keyword asked for', async () => {
      expect(await names('main', { keywords: ['python'] })).toEqual(['jupyter', 'vscode']);
      expect(await names('main', { keywords: ['python', 'ide'] })).toEqual(['vscode']);
      expect(await names('main', { keywords: ['python', 'scala'] })).toEqual([]);
    });

    it('matches keywords whatever their case', async () => {
      expect(await names('main', { keywords: ['NOTEBOOK'] })).toEqual(['jupyter', 'zeppelin']);
      expect(await names('main', { keywords: ['Python', 'python'] })).toEqual(['jupyter', 'vscode']);
    });

    it('searches q in the name, title, description and keywords, whatever the case', async () => {
      expect(await names('main', { q: 'ZEPP' })).toEqual(['zeppelin']);
      expect(await names('main', { q: 'jupyterlab' })).toEqual(['jupyter']);
      expect(await names('main', { q: 'an ide' })).toEqual(['rstudio']);
      expect(await names('main', { q: 'scala' })).toEqual(['zeppelin']);
      expect(await names('main', { q: 'python' })).toEqual(['jupyter', 'vscode']);
    });

    it('matches % and _ in q literally', async () => {
      expect(await names('main', { q: '50%' })).toEqual(['vscode']);
      expect(await names('main', { q: 'a_b' })).toEqual(['a-b']);
      expect(await names('main', { q: '%' })).toEqual(['vscode']);
    });

    it('combines keywords, q and paging', async () => {
      const filter = { keywords: ['notebook'], q: 'notebooks' };
      const first = await listPackages(t.knex, 'main', filter, { limit: 1 });
      const second = await listPackages(t.knex, 'main', filter, {
        limit: 1,
        cursor: first.nextCursor ?? undefined,
      });
      expect([...first.items, ...second.items].map((p) => p.name)).toEqual(['jupyter', 'zeppelin']);
      expect(second.nextCursor).toBeNull();
    });

    it('refuses a cursor issued for the list of another catalog', async () => {
      const page = await listPackages(t.knex, 'main', {}, { limit: 1 });
      await expectInvalidCursor(
        listPackages(t.knex, 'other', {}, { limit: 1, cursor: page.nextCursor ?? undefined }),
      );
    });
  });

  describe('findPackage', () => {
    it('returns the package with every version, newest first by semantic version', async () => {
      await configure('main');
      await replace(
        'main',
        catalogContents(
          aSpec('tool', '1.9.0'),
          aSpec('tool', '1.10.0'),
          aSpec('tool', '1.10.0-beta.2'),
          aSpec('tool', '2.0.0-rc.1'),
          aSpec('tool', '1.10.0-beta.10'),
        ),
      );
      const found = await findPackage(t.knex, 'main', 'tool');
      expect(found).toMatchObject({ catalogId: 'main', name: 'tool', latestVersion: '1.10.0' });
      expect(found?.versions).toEqual(
        ['2.0.0-rc.1', '1.10.0', '1.10.0-beta.10', '1.10.0-beta.2', '1.9.0'].map((version) => ({
          version,
          title: `tool ${version}`,
        })),
      );
    });

    it('returns null for an unknown package, or one of another catalog', async () => {
      await configure('main', 'other');
      await replace('other', catalogContents(aSpec('echo', '1.0.0')));
      expect(await findPackage(t.knex, 'main', 'echo')).toBeNull();
      expect(await findPackage(t.knex, 'other', 'missing')).toBeNull();
    });
  });

  describe('findPackageVersion', () => {
    it('returns the whole manifest of that version and where it was loaded from', async () => {
      await configure('main');
      const spec = aSpec('echo', '1.1.0', { keywords: ['http'], description: 'Echoes' });
      await replace('main', catalogContents(aSpec('echo', '1.0.0'), spec));
      expect(await findPackageVersion(t.knex, 'main', 'echo', '1.1.0')).toEqual({
        catalogId: 'main',
        spec,
        sourceDir: '/catalogs/echo/1.1.0',
      });
    });

    it('returns null for a version that does not exist', async () => {
      await configure('main');
      await replace('main', catalogContents(aSpec('echo', '1.0.0')));
      expect(await findPackageVersion(t.knex, 'main', 'echo', '1.0.1')).toBeNull();
      expect(await findPackageVersion(t.knex, 'main', 'other', '1.0.0')).toBeNull();
    });
  });

  describe('findLatestVersionName', () => {
    it('returns null for an unknown package', async () => {
      await configure('main');
      expect(await findLatestVersionName(t.knex, 'main', 'missing')).toBeNull();
    });
  });
});
