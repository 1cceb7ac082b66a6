// External backends: services Atrium did not launch (a lab's database, a model server run by
// another team), registered by URL so that they are used like launched ones — listed with the
// project's services, their functions called through drivers, reached through the gateway. Their
// URLs are checked against the egress policy when registered and on every connection after.
import type { Knex } from 'knex';
import { fetch } from 'undici';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { appendEvent } from '../db/events.js';
import * as q from '../db/services.js';
import type { ServiceRecord } from '../db/services.js';
import { functionsOfScope, type ScopeName } from '../backends/drivers/scopes.js';
import { EgressRefused, type EgressGuard } from '../backends/egress.js';
import { DomainError, unprocessable } from '../errors.js';
import { newId } from '../ids.js';
import { topics, type Notifier } from '../notifier.js';
import type { Principal } from './principal.js';
import type { ProjectService } from './projects.js';

/** The catalog an external backend is listed under (it comes from none). */
export const externalCatalogId = 'external';

export interface BackendRegistration {
  name: string;
  app: string;
  version: string;
  locations: { name: string; url: string }[];
  healthPath: string;
  scope?: { name: ScopeName; port: string } | undefined;
  metadata: Record<string, unknown>;
  shared: boolean;
}

interface ExternalBackendDeps {
  db: Knex;
  clock: Clock;
  projects: ProjectService;
  notifier: Notifier;
  egress: EgressGuard;
  /** How long the check of a new backend may take before it is reported unreachable. */
  probeTimeoutMs: number;
}

export class ExternalBackendService {
  constructor(private readonly deps: ExternalBackendDeps) {}

  /** Registers the backend as a service of the project; 422 for a location the policy refuses. */
  async register(
    principal: Principal,
    projectId: string,
    request: BackendRegistration,
  ): Promise<ServiceRecord> {
    const project = await this.deps.projects.access(principal, projectId, 'member');
    const names = new Set<string>();
    for (const [i, location] of request.locations.entries()) {
      if (names.has(location.name)) throw unprocessable(`locations: "${location.name}" is named twice`);
      names.add(location.name);
      try {
        await this.deps.egress.checkUrl(location.url);
      } catch (error) {
        if (!(error instanceof EgressRefused)) throw error;
        throw new DomainError('unprocessable', `locations[${i}]: ${error.message}`, {
          errors: [{ location: 'body', pointer: `/locations/${i}/url`, message: error.message }],
        });
      }
    }
    if (request.scope && !names.has(request.scope.port)) {
      throw unprocessable(`scope.port: "${request.scope.port}" is not one of the locations`);
    }
    const first = request.locations[0] as { name: string; url: string };
    const reachable = await this.probe(new URL(request.healthPath.replace(/^\//, ''), withSlash(first.url)));
    const id = newId('svc');
    const now = iso(this.deps.clock());
    await this.deps.db.transaction(async (trx) => {
      await q.insertService(trx, {
        id,
        projectId,
        regionId: project.regionId,
        name: request.name,
        catalogId: externalCatalogId,
        packageName: request.app,
        packageVersion: request.version,
        ownerUserId: principal.user.id,
        shared: request.shared,
        options: {},
        secretOptions: [],
        runSpec: { local: null, cluster: null },
        sourceDir: '',
        functions: request.scope ? functionsOfScope(request.scope.name, request.scope.port) : [],
        app: { name: request.app, version: request.version },
        origin: 'external',
        external: {
          locations: request.locations.map((l) => ({ name: l.name, url: withSlash(l.url) })),
          healthPath: request.healthPath,
          metadata: request.metadata,
        },
        resources: { cpuMillis: 0, memoryBytes: 0, gpu: 0 },
        status: 'running',
        desiredState: 'running',
        holdsSlot: false,
        holdsCompute: false,
        message: reachable === null ? null : `not reachable when registered: ${reachable}`,
        exitCode: null,
        logTail: [],
        tasks: [],
        endpoints: request.locations.map((l) => ({ port: l.name, protocol: 'http', url: withSlash(l.url) })),
        createdAt: now,
        updatedAt: now,
        startedAt: now,
      });
      await appendEvent(trx, 'service', id, {
        at: now,
        type: 'registered',
        message: `registered as an external backend (${request.app} ${request.version})${
          reachable === null ? '' : `; not reachable: ${reachable}`
        }`,
        data: { status: 'running' },
      });
    });
    this.deps.notifier.notify(topics.service(id));
    return (await q.findService(this.deps.db, id)) as ServiceRecord;
  }

  /** Null when the backend answers (any HTTP status); why not otherwise. Never waits past the timeout. */
  private async probe(url: URL): Promise<string | null> {
    // Its own connection, closed after: nothing of a registration lingers.
    const dispatcher = this.deps.egress.dispatcher({ connectTimeoutMs: this.deps.probeTimeoutMs });
    try {
      const response = await fetch(url, {
        dispatcher,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.deps.probeTimeoutMs),
      });
      await response.body?.cancel();
      return null;
    } catch (error) {
      const cause = (error as { cause?: unknown }).cause;
      if (cause instanceof EgressRefused) return cause.message;
      if ((error as Error).name === 'TimeoutError') return `no answer within ${this.deps.probeTimeoutMs} ms`;
      return (cause as Error | undefined)?.message ?? (error as Error).message;
    } finally {
      await dispatcher.destroy();
    }
  }
}

/** A base URL ends with a slash, so that relative paths resolve under it. */
function withSlash(url: string): string {
  const parsed = new URL(url);
  if (!parsed.pathname.endsWith('/')) parsed.pathname += '/';
  return parsed.toString();
}
