// The administrator's commands of `atrium`: serve (the default), worker, migrate, token create. They
// work on the database and the configuration directly; the user commands (src/cli/user) go through
// the API with the typed client.
import type { Config } from '../config.js';
import { migrate, openDatabase } from '../db/database.js';
import { createLogger } from '../log.js';
import { readBuildInfo } from '../build-info.js';
import { systemClock } from '../clock.js';
import { createServices } from '../services/index.js';
import { startServer } from '../server.js';
import { loadHandlerModules } from '../backends/scheduler/handler-modules.js';
import { Worker } from '../backends/scheduler/worker.js';

export async function serve(config: Config): Promise<void> {
  const log = createLogger(config.log.level);
  const server = await startServer(config, { log });
  const banner = [
    `Atrium is listening on ${server.url}  (API ${server.url}/api/v1, docs ${server.url}/docs/)`,
  ];
  if (server.adminSecret) {
    banner.push(
      '',
      'An administrator token was created. It is shown this once; store it now:',
      '',
      `    ${server.adminSecret}`,
      '',
      `Try: curl -H "Authorization: Bearer ${server.adminSecret}" ${server.url}/api/v1/me`,
    );
  }
  process.stderr.write(`\n${banner.join('\n')}\n\n`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** A worker process: claims and runs jobs until SIGTERM, then lets them finish or gives them back. */
export async function work(config: Config, values: { concurrency: string; kinds?: string }): Promise<void> {
  const concurrency = Number(values.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1)
    throw new Error('--concurrency takes a positive whole number');
  const log = createLogger(config.log.level);
  const database = openDatabase(config.databaseUrl, config.dataDir);
  await migrate(database);
  const services = createServices({ config, database, clock: systemClock, log, build: readBuildInfo() });
  await loadHandlerModules(services.scheduler, config.scheduler.handlerModules, { db: database.knex, log });
  const kinds = values.kinds
    ?.split(',')
    .map((k) => k.trim())
    .filter(Boolean);
  const unknown = kinds?.filter((k) => !services.scheduler.kinds().includes(k)) ?? [];
  if (unknown.length > 0) throw new Error(`unknown job kinds: ${unknown.join(', ')}`);
  const worker = new Worker(
    { scheduler: services.scheduler, notifier: services.notifier, log },
    { concurrency, pollMs: config.scheduler.pollMs, ...(kinds ? { kinds } : {}) },
  );
  worker.start();
  // The worker's waits do not hold the process open (they are unref'd); this does, until SIGTERM.
  const keepAlive = setInterval(() => undefined, 60_000);
  log.info({ worker: worker.id, concurrency, kinds: kinds ?? services.scheduler.kinds() }, 'worker started');
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, running: worker.busy }, 'worker stopping');
    clearInterval(keepAlive);
    worker
      .stop(config.scheduler.stopGraceMs)
      .then(() => database.close())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          log.error({ err }, 'worker shutdown failed');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

export async function withServices<T>(
  config: Config,
  work: (services: ReturnType<typeof createServices>) => Promise<T>,
): Promise<T> {
  const log = createLogger(config.log.level === 'info' ? 'warn' : config.log.level);
  const database = openDatabase(config.databaseUrl, config.dataDir);
  try {
    await migrate(database);
    return await work(createServices({ config, database, clock: systemClock, log, build: readBuildInfo() }));
  } finally {
    await database.close();
  }
}

export interface TokenCreateOptions {
  user: string;
  name: string;
  scopes: string;
  expiresInDays?: string;
  admin: boolean;
}

export async function tokenCreate(config: Config, values: TokenCreateOptions): Promise<void> {
  const scopes = values.scopes.split(',').map((s) => s.trim());
  if (!scopes.every((s) => s === 'read' || s === 'write'))
    throw new Error('--scopes takes read and/or write');
  const days = values.expiresInDays === undefined ? null : Number(values.expiresInDays);
  if (days !== null && !(days > 0)) throw new Error('--expires-in-days takes a positive number');
  const secret = await withServices(config, async (services) => {
    const { user } = await services.users.ensureLocalUser(values.user, { admin: values.admin });
    const { secret } = await services.tokens.issue(user, {
      name: values.name,
      scopes: scopes as ('read' | 'write')[],
      expiresAt: days === null ? undefined : new Date(Date.now() + days * 86_400_000).toISOString(),
    });
    return secret;
  });
  process.stdout.write(`${secret}\n`);
}
