// Drivers: how service functions are performed. Native ones ship with Atrium (backends/drivers/);
// plugins are external HTTP services an administrator registers (backends/drivers/plugin.ts has
// their protocol), offered to every service whose app matches their rule, and health-checked: at
// registration, in the background every `functions.pluginHealthIntervalMs`, and when a call finds
// one unreachable.
import { Ajv2020, type AnySchema } from 'ajv/dist/2020.js';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import semver from 'semver';
import type { NativeDriver } from '../backends/drivers/http-json.js';
import { checkPlugin, pluginUrlProblem } from '../backends/drivers/plugin.js';
import { functionsOfScope, nativeDrivers } from '../backends/drivers/scopes.js';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { isUniqueViolation } from '../db/database.js';
import * as q from '../db/drivers.js';
import type { PluginDriver, PluginFunction, PluginHealth } from '../db/drivers.js';
import { conflict, DomainError, notFound, type FieldError } from '../errors.js';
import { requireAdmin, type Principal } from './principal.js';

export type { PluginDriver, PluginFunction, PluginHealth };

/** At most this many plugins: lists and health rounds stay small. */
const maxPlugins = 100;

export interface DriverSettings {
  pluginHealthIntervalMs: number;
  pluginHealthTimeoutMs: number;
}

interface DriverDeps {
  db: Knex;
  clock: Clock;
  log: Logger;
  settings: DriverSettings;
}

/** A driver as the API shows it, native or plugin. */
export interface DriverView {
  name: string;
  version: string;
  kind: 'native' | 'plugin';
  scope: string | null;
  definitions: PluginFunction[];
  description: string;
  app: { name: string; versions: string } | null;
  /** Null for native drivers, and for callers who are not administrators. */
  url: string | null;
  health: PluginHealth | null;
  createdAt: string | null;
}

/** What an administrator registers. */
export interface PluginRegistration {
  name: string;
  version: string;
  description?: string | undefined;
  scope?: string | null | undefined;
  app: { name: string; versions: string };
  url: string;
  functions: (Pick<PluginFunction, 'name'> & Partial<PluginFunction>)[];
}

/** A plugin's function, as a service whose app it serves offers it. */
export interface PluginOffer {
  plugin: PluginDriver;
  fn: PluginFunction;
}

/** The app a service runs: what plugins are matched against. */
export interface AppVersion {
  name: string;
  version: string;
}

/**
 * Whether a version satisfies a plugin's rule. A version that is not a full semantic version is
 * read as the first x.y.z in it (`7.2` as 7.2.0), so that backends named by their app's own
 * numbering (`redis 7.2`) match `>=7`.
 */
export function versionMatches(version: string, rule: string): boolean {
  const exact = semver.valid(version) ?? semver.coerce(version)?.version ?? null;
  return exact !== null && semver.satisfies(exact, rule);
}

const nativeDefinitions = (d: NativeDriver): PluginFunction[] =>
  d.scope ? functionsOfScope(d.scope, 'http').map(({ http: _http, driver: _driver, ...f }) => f) : [];

export class DriverService {
  private readonly natives = new Map<string, NativeDriver>(nativeDrivers.map((d) => [d.name, d]));
  private readonly checker = new Ajv2020({ strict: false });
  private timer: NodeJS.Timeout | null = null;
  private round: Promise<void> | null = null;
  private readonly closing = new AbortController();

  constructor(private readonly deps: DriverDeps) {}

  /** A native driver by name (those performing functions packages declare, or their scope's). */
  native(name: string): NativeDriver | undefined {
    return this.natives.get(name);
  }

  async list(principal: Principal): Promise<DriverView[]> {
    const plugins = await q.listPluginDrivers(this.deps.db);
    return [
      ...[...this.natives.values()].map((d) => this.nativeView(d)),
      ...plugins.map((p) => this.pluginView(p, principal)),
    ].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async get(principal: Principal, name: string): Promise<DriverView> {
    const native = this.natives.get(name);
    if (native) return this.nativeView(native);
    const plugin = await q.findPluginDriver(this.deps.db, name);
    if (!plugin) throw notFound('driver', name);
    return this.pluginView(plugin, principal);
  }

  /**
   * Registers a plugin (administrators). Its health is checked first, for a bounded time: one that
   * does not answer is registered all the same, `down` with why, since an administrator may well
   * register a plugin before starting it; the background checks see it come up.
   */
  async register(principal: Principal, request: PluginRegistration): Promise<DriverView> {
    requireAdmin(principal);
    const { db, clock } = this.deps;
    if (this.natives.has(request.name))
      throw conflict(`"${request.name}" is a native driver's name: choose another`);
    const functions = this.checkRegistration(request);
    if (await q.findPluginDriver(db, request.name))
      throw conflict(`a driver named "${request.name}" is registered already`);
    if ((await q.countPluginDrivers(db)) >= maxPlugins)
      throw conflict(`at most ${maxPlugins} plugin drivers may be registered: remove one first`);
    const url = request.url.replace(/\/+$/, '');
    const plugin: q.PluginDriver = {
      name: request.name,
      version: request.version,
      description: request.description ?? '',
      scope: request.scope ?? null,
      app: request.app,
      url,
      functions,
      health: await this.probe(url),
      createdBy: principal.user.id,
      createdAt: iso(clock()),
    };
    try {
      await q.insertPluginDriver(db, plugin);
    } catch (error) {
      if (isUniqueViolation(error)) throw conflict(`a driver named "${request.name}" is registered already`);
      throw error;
    }
    this.deps.log.info(
      { driver: plugin.name, url, health: plugin.health.status },
      'plugin driver registered',
    );
    return this.pluginView(plugin, principal);
  }

  /** Removes a plugin (administrators); native drivers ship with Atrium and stay (409). */
  async remove(principal: Principal, name: string): Promise<void> {
    requireAdmin(principal);
    if (this.natives.has(name))
      throw conflict(`${name} is a native driver: it ships with Atrium and cannot be removed`);
    if (!(await q.deletePluginDriver(this.deps.db, name))) throw notFound('driver', name);
    this.deps.log.info({ driver: name }, 'plugin driver removed');
  }

  /**
   * The functions plugins offer to a service of this app: those of every plugin registered for the
   * app's name whose version rule the version satisfies, up or down (a call through a down plugin
   * answers that it is down, which says more than a function gone missing). Plugins in name order;
   * a name two of them offer is the first's. The one place this rule lives: launched services and
   * external backends alike.
   */
  async functionsForApp(app: AppVersion): Promise<PluginOffer[]> {
    const offers: PluginOffer[] = [];
    const taken = new Set<string>();
    // Sorted here, by code point: a database's collation may order `kv-a` and `kva` either way.
    const plugins = (await q.listPluginDriversOfApp(this.deps.db, app.name)).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
    for (const plugin of plugins) {
      if (!versionMatches(app.version, plugin.app.versions)) continue;
      for (const fn of plugin.functions) {
        if (taken.has(fn.name)) continue;
        taken.add(fn.name);
        offers.push({ plugin, fn });
      }
    }
    return offers;
  }

  /**
   * Before a synchronous call through a plugin last seen down: asks it again (bounded by the
   * health timeout) and answers 503 when it still is, rather than let the call wait on it.
   */
  async ensureUp(plugin: PluginDriver): Promise<void> {
    if (plugin.health.status !== 'down') return;
    const health = await this.probe(plugin.url);
    await q.setPluginHealth(this.deps.db, plugin.name, plugin.createdAt, health);
    if (health.status === 'down') {
      throw new DomainError(
        'unavailable',
        `plugin driver ${plugin.name} is down: ${health.detail ?? 'it does not answer'}`,
        { driver: plugin.name },
        { 'Retry-After': String(Math.max(1, Math.ceil(this.deps.settings.pluginHealthIntervalMs / 1000))) },
      );
    }
  }

  /** A call found the plugin unreachable: it is down until a check sees it answer. */
  async noteDown(plugin: PluginDriver, detail: string): Promise<void> {
    await q.setPluginHealth(this.deps.db, plugin.name, plugin.createdAt, {
      status: 'down',
      checkedAt: iso(this.deps.clock()),
      detail,
    });
  }

  /** Starts the background health checks (one round at a time; stopped by close). */
  start(): void {
    if (this.timer || this.closing.signal.aborted) return;
    this.timer = setInterval(() => {
      this.round ??= this.checkAll()
        .catch((err: unknown) => this.deps.log.warn({ err }, 'plugin health checks failed'))
        .finally(() => {
          this.round = null;
        });
    }, this.deps.settings.pluginHealthIntervalMs);
    this.timer.unref();
  }

  /** Stops the background checks, aborting one under way, and waits for it to end. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.closing.abort();
    await this.round;
  }

  /** One round: every plugin checked at once (at most maxPlugins, each bounded by the timeout). */
  async checkAll(): Promise<void> {
    const plugins = await q.listPluginDrivers(this.deps.db);
    await Promise.all(
      plugins.map(async (plugin) => {
        const health = await this.probe(plugin.url);
        if (this.closing.signal.aborted) return;
        if (health.status !== plugin.health.status) {
          this.deps.log.info(
            { driver: plugin.name, health: health.status, detail: health.detail },
            'plugin health',
          );
        }
        await q.setPluginHealth(this.deps.db, plugin.name, plugin.createdAt, health);
      }),
    );
  }

  private async probe(url: string): Promise<PluginHealth> {
    const signal = AbortSignal.any([
      this.closing.signal,
      AbortSignal.timeout(this.deps.settings.pluginHealthTimeoutMs),
    ]);
    const { status, detail } = await checkPlugin(url, signal);
    return { status, detail, checkedAt: iso(this.deps.clock()) };
  }

  /** The registration's functions with their defaults, or a 422 naming every field Atrium cannot use. */
  private checkRegistration(request: PluginRegistration): PluginFunction[] {
    const errors: FieldError[] = [];
    const problem = (pointer: string, message: string) =>
      errors.push({ location: 'body', pointer, message, code: 'unprocessable' });
    if (semver.valid(request.version) !== request.version)
      problem('/version', 'must be a semantic version such as 1.2.0');
    if (semver.validRange(request.app.versions) === null)
      problem(
        '/app/versions',
        `"${request.app.versions}" is not a semver range (say >=1.0.0, ^7.2 or 1.4.2)`,
      );
    const urlProblem = pluginUrlProblem(request.url);
    if (urlProblem) problem('/url', urlProblem);
    const functions = request.functions.map((f, i): PluginFunction => {
      const fn: PluginFunction = {
        name: f.name,
        description: f.description ?? '',
        input: f.input ?? { type: 'object' },
        output: f.output ?? null,
        timeout_ms: f.timeout_ms ?? 30_000,
        idempotent: f.idempotent ?? false,
        cache_ttl_s: f.cache_ttl_s ?? 0,
      };
      if (request.functions.findIndex((g) => g.name === f.name) !== i)
        problem(`/functions/${i}/name`, `"${f.name}" is declared twice`);
      if (fn.cache_ttl_s > 0 && !fn.idempotent)
        problem(`/functions/${i}/cache_ttl_s`, 'only an idempotent function may be answered from a cache');
      for (const which of ['input', 'output'] as const) {
        const schema = fn[which];
        if (!schema) continue;
        const { $id: _ignored, ...rest } = schema;
        try {
          this.checker.compile(rest as AnySchema);
        } catch (error) {
          problem(`/functions/${i}/${which}`, `not a valid JSON Schema: ${(error as Error).message}`);
        } finally {
          // Checked, not kept: the calls compile their own (services/functions.ts).
          this.checker.removeSchema(rest as AnySchema);
        }
      }
      return fn;
    });
    if (errors.length > 0) {
      throw new DomainError(
        'unprocessable',
        `the plugin cannot be registered: ${errors.map((e) => `${e.pointer}: ${e.message}`).join('; ')}`,
        { errors },
      );
    }
    return functions;
  }

  private nativeView(d: NativeDriver): DriverView {
    return {
      name: d.name,
      version: d.version,
      kind: 'native',
      scope: d.scope,
      definitions: nativeDefinitions(d),
      description: d.description,
      app: null,
      url: null,
      health: null,
      createdAt: null,
    };
  }

  private pluginView(p: PluginDriver, principal: Principal): DriverView {
    return {
      name: p.name,
      version: p.version,
      kind: 'plugin',
      scope: p.scope,
      definitions: p.functions,
      description: p.description,
      app: p.app,
      url: principal.user.admin ? p.url : null,
      health: p.health,
      createdAt: p.createdAt,
    };
  }
}
