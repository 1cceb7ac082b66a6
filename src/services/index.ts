import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Database } from '../db/database.js';
import { DirectoryCatalogSource } from '../backends/catalog/directory-source.js';
import { Authenticator } from '../auth/authenticator.js';
import { OidcVerifier } from '../auth/oidc.js';
import { AuditService } from './audit.js';
import { CatalogService } from './catalogs.js';
import { IdempotencyService } from './idempotency.js';
import { PlatformService, type BuildInfo } from './platform.js';
import { ProjectService } from './projects.js';
import { QuotaService } from './quotas.js';
import { RegionService } from './regions.js';
import { TokenService } from './tokens.js';
import { UserService } from './users.js';

export interface Services {
  audit: AuditService;
  authenticator: Authenticator;
  catalogs: CatalogService;
  idempotency: IdempotencyService;
  platform: PlatformService;
  projects: ProjectService;
  quotas: QuotaService;
  regions: RegionService;
  tokens: TokenService;
  users: UserService;
}

export interface ServiceDeps {
  config: Config;
  database: Database;
  clock: Clock;
  log: Logger;
  build: BuildInfo;
}

/** Wires every service to its dependencies; the one place that knows the whole graph. */
export function createServices({ config, database, clock, log, build }: ServiceDeps): Services {
  const db = database.knex;
  const regions = new RegionService(config.regions);
  const projects = new ProjectService({ db, clock, regions });
  const users = new UserService({ db, clock, projects, adminGroups: config.auth.oidc?.adminGroups ?? [] });
  const tokens = new TokenService({ db, clock });
  const oidc = config.auth.oidc ? new OidcVerifier(config.auth.oidc) : null;
  return {
    audit: new AuditService({ db, clock, log }),
    authenticator: new Authenticator({ tokens, users, oidc }),
    catalogs: new CatalogService({
      db,
      engine: database.engine,
      clock,
      log,
      catalogs: config.catalogs,
      openSource: (catalog) => new DirectoryCatalogSource(catalog.path),
    }),
    idempotency: new IdempotencyService({ db, clock }),
    platform: new PlatformService({ config, build }),
    projects,
    quotas: new QuotaService({ db, clock, projects }),
    regions,
    tokens,
    users,
  };
}
