import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { isUniqueViolation } from '../../src/db/database.js';
import {
  countPluginDrivers,
  deletePluginDriver,
  findPluginDriver,
  insertPluginDriver,
  listPluginDrivers,
  listPluginDriversOfApp,
  setPluginHealth,
  type PluginDriver,
} from '../../src/db/drivers.js';
import { testEngines } from '../fixtures/databases.js';
import { instant, openMigratedDatabase, rejectionOf, uniqueId, type MigratedDatabase } from './builders.js';

function aPlugin(overrides: Partial<PluginDriver> = {}): PluginDriver {
  return {
    name: uniqueId('plugin'),
    version: '1.0.0',
    description: 'counts keys',
    scope: null,
    app: { name: 'kv-store', versions: '>=1.0.0' },
    url: 'http://127.0.0.1:9999',
    functions: [
      {
        name: 'keys.count',
        description: '',
        input: { type: 'object' },
        output: null,
        timeout_ms: 5000,
        idempotent: true,
        cache_ttl_s: 0,
      },
    ],
    health: { status: 'unknown', checkedAt: null, detail: null },
    createdBy: 'usr_root',
    createdAt: instant(0),
    ...overrides,
  };
}

describe.each(testEngines())('plugin drivers (%s)', (engine) => {
  let t: MigratedDatabase;

  beforeAll(async () => {
    t = await openMigratedDatabase(engine);
  });
  afterAll(() => t.close());

  describe('insertPluginDriver', () => {
    it('stores every field, read back unchanged', async () => {
      const plugin = aPlugin({
        scope: 'db',
        description: 'exports',
        health: { status: 'down', checkedAt: instant(5), detail: 'ECONNREFUSED' },
        createdAt: instant(4),
      });
      await insertPluginDriver(t.knex, plugin);
      expect(await findPluginDriver(t.knex, plugin.name)).toEqual(plugin);
    });

    it('refuses a second plugin of the same name', async () => {
      const plugin = aPlugin();
      await insertPluginDriver(t.knex, plugin);
      expect(isUniqueViolation(await rejectionOf(insertPluginDriver(t.knex, plugin)))).toBe(true);
    });
  });

  describe('findPluginDriver', () => {
    it('is null for a name nobody registered', async () => {
      expect(await findPluginDriver(t.knex, 'nobody')).toBeNull();
    });
  });

  describe('listPluginDrivers and listPluginDriversOfApp', () => {
    it('list by name, every plugin or those of one app', async () => {
      const redis = aPlugin({ name: 'zz-redis', app: { name: 'redis', versions: '^7.2' } });
      const kv = aPlugin({ name: 'aa-kv' });
      await insertPluginDriver(t.knex, redis);
      await insertPluginDriver(t.knex, kv);
      const all = (await listPluginDrivers(t.knex)).map((d) => d.name);
      expect(all).toEqual([...all].sort());
      expect(all).toEqual(expect.arrayContaining(['aa-kv', 'zz-redis']));
      expect(await countPluginDrivers(t.knex)).toBe(all.length);
      expect((await listPluginDriversOfApp(t.knex, 'redis')).map((d) => d.name)).toEqual(['zz-redis']);
      expect((await listPluginDriversOfApp(t.knex, 'kv-store')).map((d) => d.name)).toContain('aa-kv');
      expect(await listPluginDriversOfApp(t.knex, 'postgres')).toEqual([]);
    });
  });

  describe('setPluginHealth', () => {
    it('records a check of this registration, and not of an earlier one of the same name', async () => {
      const plugin = aPlugin({ createdAt: instant(10) });
      await insertPluginDriver(t.knex, plugin);
      const up = { status: 'up' as const, checkedAt: instant(11), detail: null };
      expect(await setPluginHealth(t.knex, plugin.name, plugin.createdAt, up)).toBe(true);
      expect((await findPluginDriver(t.knex, plugin.name))?.health).toEqual(up);
      const stale = { status: 'down' as const, checkedAt: instant(12), detail: 'gone' };
      expect(await setPluginHealth(t.knex, plugin.name, instant(9), stale)).toBe(false);
      expect((await findPluginDriver(t.knex, plugin.name))?.health).toEqual(up);
      expect(await setPluginHealth(t.knex, 'nobody', instant(9), stale)).toBe(false);
    });
  });

  describe('deletePluginDriver', () => {
    it('removes a plugin once', async () => {
      const plugin = aPlugin();
      await insertPluginDriver(t.knex, plugin);
      expect(await deletePluginDriver(t.knex, plugin.name)).toBe(true);
      expect(await findPluginDriver(t.knex, plugin.name)).toBeNull();
      expect(await deletePluginDriver(t.knex, plugin.name)).toBe(false);
    });
  });
});
