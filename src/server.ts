import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createApp, gatewayOf } from './app.js';
import { bootstrapAdmin } from './bootstrap.js';
import { readBuildInfo } from './build-info.js';
import { systemClock, type Clock } from './clock.js';
import type { Config } from './config.js';
import { migrate, openDatabase, type Database } from './db/database.js';
import { createLogger } from './log.js';
import { createServices, type Services } from './services/index.js';
import { loadHandlerModules } from './backends/scheduler/handler-modules.js';
import { Worker } from './backends/scheduler/worker.js';

export interface RunningServer {
  url: string;
  port: number;
  /** The admin token generated on first start, when no ATRIUM_ADMIN_TOKEN was configured. */
  adminSecret: string | null;
  services: Services;
  database: Database;
  /** Resolves once every catalog has been loaded (readiness). */
  catalogsLoaded: Promise<void>;
  close(): Promise<void>;
}

export interface StartOptions {
  log?: Logger;
  clock?: Clock;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * Opens and migrates the database, wires the services, makes sure there is an administrator, and
 * listens. Catalogs load after listening: /healthz answers at once, /readyz once they are loaded.
 */
export async function startServer(config: Config, options: StartOptions = {}): Promise<RunningServer> {
  const log = options.log ?? createLogger(config.log.level);
  const clock = options.clock ?? systemClock;
  const database = openDatabase(config.databaseUrl, config.dataDir);
  let services: Services;
  let adminSecret: string | null;
  try {
    await migrate(database);
    services = createServices({ config, database, clock, log, build: readBuildInfo() });
    adminSecret = await bootstrapAdmin(services, config.auth.adminToken);
    await loadHandlerModules(services.scheduler, config.scheduler.handlerModules, { db: database.knex, log });
    // Adopt what runs, report what vanished, resume unfinished work: before taking requests.
    await services.serviceReconciler.start();
  } catch (error) {
    await database.close();
    throw error;
  }

  let shuttingDown = false;
  let loaded = false;
  const shutdown = new AbortController();
  const app = createApp({
    config,
    database,
    services,
    log,
    shutdown: shutdown.signal,
    ready: async () =>
      shuttingDown
        ? { ready: false, reason: 'shutting down' }
        : loaded
          ? { ready: true }
          : { ready: false, reason: 'catalogs and modules are loading' },
  });
  const server = createServer();
  // Responses not yet begun: told to close their connection once shutdown begins, so that a
  // keep-alive client finishes the request it has in flight and then goes elsewhere.
  const unanswered = new Set<ServerResponse>();
  server.on('request', (_req, res: ServerResponse) => {
    if (shuttingDown) {
      res.setHeader('Connection', 'close');
      return;
    }
    unanswered.add(res);
    const done = () => unanswered.delete(res);
    res.once('finish', done);
    res.once('close', done);
  });
  server.on('request', app);
  // WebSocket upgrades: the gateway's (to services); anything else is refused there.
  server.on('upgrade', gatewayOf(app).upgrade);
  try {
    await listen(server, config.server.port, config.server.host);
  } catch (error) {
    await database.close();
    throw error;
  }
  const { port } = server.address() as AddressInfo;
  const url = `http://${config.server.host.includes(':') ? `[${config.server.host}]` : config.server.host}:${port}`;
  log.info({ url, database: database.location }, 'listening');

  const catalogsLoaded = Promise.all([services.catalogs.loadAll(), services.modules.loadAll()])
    .then(() => undefined)
    .catch((err: unknown) => log.error({ err }, 'catalogs or modules failed to load'))
    .finally(() => {
      loaded = true;
    });
  const worker = new Worker(
    { scheduler: services.scheduler, notifier: services.notifier, log },
    { concurrency: config.scheduler.workers, pollMs: config.scheduler.pollMs },
  );
  worker.start();
  services.drivers.start();
  const purge = setInterval(() => {
    services.serviceManager
      .purgeDeletedEvents()
      .catch((err: unknown) => log.warn({ err }, "purge of deleted services' events failed"));
    services.functions
      .purgeExpired()
      .catch((err: unknown) => log.warn({ err }, 'purge of expired calls failed'));
    services.idempotency
      .purgeExpired()
      .catch((err: unknown) => log.warn({ err }, 'idempotency purge failed'));
    services.files
      .collectGarbage()
      .then(() => services.files.store.removeLeftovers())
      .catch((err: unknown) => log.warn({ err }, 'file garbage collection failed'));
  }, 60 * 60_000);
  purge.unref();

  let closing: Promise<void> | null = null;
  const close = () =>
    (closing ??= (async () => {
      shuttingDown = true;
      for (const res of unanswered) if (!res.headersSent) res.setHeader('Connection', 'close');
      unanswered.clear();
      clearInterval(purge);
      // Event streams and Prefer: wait end now, so that their connections can close.
      shutdown.abort();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Connections go as soon as they are idle: now, or once the response they carry has ended
      // (one begun before the signal could not be told to close its connection).
      server.closeIdleConnections();
      const idle = setInterval(() => server.closeIdleConnections(), 100);
      const grace = setTimeout(() => server.closeAllConnections(), config.server.shutdownGraceMs);
      await closed;
      // WebSockets through the gateway left the server's connections when they upgraded.
      gatewayOf(app).close();
      clearInterval(idle);
      clearTimeout(grace);
      await catalogsLoaded;
      // Running jobs get a grace period, then go back to the queue for another worker.
      await worker.stop(config.scheduler.stopGraceMs);
      await services.drivers.close();
      // Services keep running; the next start adopts them.
      await services.serviceReconciler.close();
      await services.audit.flush();
      services.idempotency.close();
      await database.close();
      log.info('stopped');
    })());

  return { url, port, adminSecret, services, database, catalogsLoaded, close };
}
