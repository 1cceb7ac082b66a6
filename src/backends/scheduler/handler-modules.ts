// Job kinds from outside Atrium: a configured module exporting `register(scheduler, context)` adds
// its kinds to the scheduler of every API and worker process that loads it.
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { ConfigError } from '../../config.js';
import type { Scheduler } from './scheduler.js';

export interface HandlerModuleContext {
  db: Knex;
  log: Logger;
}

type Register = (scheduler: Scheduler, context: HandlerModuleContext) => void | Promise<void>;

export async function loadHandlerModules(
  scheduler: Scheduler,
  paths: string[],
  context: HandlerModuleContext,
): Promise<void> {
  for (const path of paths) {
    const url = pathToFileURL(isAbsolute(path) ? path : resolve(path)).href;
    let loaded: { register?: unknown };
    try {
      loaded = (await import(url)) as { register?: unknown };
    } catch (error) {
      throw new ConfigError(`cannot load the job handler module ${path}: ${(error as Error).message}`);
    }
    if (typeof loaded.register !== 'function') {
      throw new ConfigError(`the job handler module ${path} exports no register(scheduler) function`);
    }
    await (loaded.register as Register)(scheduler, context);
  }
}
