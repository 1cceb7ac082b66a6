// Modules and their functions: loaded from the configured directories into the database (so that
// every API and worker process sees the same set), listed publicly, refreshed by administrators.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import type { CatalogSourceConfig } from '../config.js';
import { loadModuleDirectories } from '../backends/modules/directory-source.js';
import {
  parseModuleManifest,
  validateFunctionOptions,
  type ModuleFunction,
  type ModuleManifest,
  type OptionError,
} from '../backends/modules/manifest.js';
import * as q from '../db/modules.js';
import type { ModuleSourceStatus, StoredModule } from '../db/modules.js';
import type { Page, PageRequest } from '../db/pagination.js';
import { notFound } from '../errors.js';
import { requireAdmin, type Principal } from './principal.js';

export interface LoadedModuleView {
  stored: StoredModule;
  manifest: ModuleManifest;
}

export interface ResolvedFunction {
  module: LoadedModuleView;
  fn: ModuleFunction;
}

export class ModuleService {
  /** Parsed manifests by module name and digest: parsing (and compiling option schemas) once. */
  private readonly parsed = new Map<string, { digest: string; manifest: ModuleManifest }>();

  constructor(
    private readonly deps: {
      db: Knex;
      clock: Clock;
      log: Logger;
      sources: readonly CatalogSourceConfig[];
    },
  ) {}

  /** Reads every configured directory and replaces the stored modules with what it found. */
  async loadAll(): Promise<ModuleSourceStatus[]> {
    const { db, clock, log, sources } = this.deps;
    const now = iso(clock());
    const { modules, problems } = await loadModuleDirectories(sources.map((s) => s.path));
    const sourceOf = (root: string) =>
      sources.find((s) => s.path === root)?.id ?? sources[0]?.id ?? 'unknown';
    const stored: StoredModule[] = modules.map((m) => ({
      name: m.manifest.name,
      sourceId: sourceOf(m.root),
      version: m.manifest.version,
      title: m.manifest.title,
      description: m.manifest.description,
      manifest: m.manifest,
      dir: m.dir,
      digest: m.digest,
      loadedAt: now,
    }));
    const statuses: ModuleSourceStatus[] = sources.map((source, position) => {
      const issues = problems
        .filter((p) => p.root === source.path)
        .map((p) => ({ file: p.file, message: p.message }));
      const unreadable = issues.some((i) => i.file === '.');
      return {
        id: source.id,
        position,
        path: source.path,
        status: unreadable ? 'failed' : 'loaded',
        moduleCount: stored.filter((m) => m.sourceId === source.id).length,
        issues,
        refreshedAt: now,
      };
    });
    await q.replaceModules(db, stored, statuses);
    for (const problem of problems) log.warn({ problem }, 'a module manifest was not loaded');
    return statuses;
  }

  async refresh(principal: Principal): Promise<ModuleSourceStatus[]> {
    requireAdmin(principal);
    return this.loadAll();
  }

  sources(page: PageRequest): Promise<Page<ModuleSourceStatus>> {
    return q.listModuleSources(this.deps.db, page);
  }

  private view(stored: StoredModule): LoadedModuleView {
    const cached = this.parsed.get(stored.name);
    if (cached && cached.digest === stored.digest) return { stored, manifest: cached.manifest };
    const manifest = parseModuleManifest(stored.manifest);
    this.parsed.set(stored.name, { digest: stored.digest, manifest });
    return { stored, manifest };
  }

  async list(page: PageRequest): Promise<Page<LoadedModuleView>> {
    const result = await q.listModules(this.deps.db, page);
    return { items: result.items.map((m) => this.view(m)), nextCursor: result.nextCursor };
  }

  async get(name: string): Promise<LoadedModuleView> {
    const stored = await q.findModule(this.deps.db, name);
    if (!stored) throw notFound('module', name);
    return this.view(stored);
  }

  async function(moduleName: string, functionName: string): Promise<ResolvedFunction> {
    const module = await this.get(moduleName);
    const fn = module.manifest.functions.find((f) => f.name === functionName);
    if (!fn) throw notFound('function', `${moduleName}.${functionName}`);
    return { module, fn };
  }

  /**
   * Checks a function's options; resolves the function and the options with defaults applied, or
   * the errors with JSON pointers inside the options.
   */
  async validateOptions(
    moduleName: string,
    functionName: string,
    options: Record<string, unknown>,
  ): Promise<{ resolved: ResolvedFunction; value: Record<string, unknown> } | { errors: OptionError[] }> {
    const resolved = await this.function(moduleName, functionName);
    const outcome = validateFunctionOptions(resolved.fn, options);
    if (!outcome.ok) return { errors: outcome.errors };
    return { resolved, value: outcome.value as Record<string, unknown> };
  }
}
