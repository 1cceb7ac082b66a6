// The way in to what users launch: which service and port a gateway request is for, whether its
// caller may reach it, and where the backend has it now. The HTTP layer (http/gateway.ts) proxies.
import type { Knex } from 'knex';
import type { PortReach } from '../backends/cluster/types.js';
import type { EgressGuard } from '../backends/egress.js';
import { DomainError, notFound, unauthorized } from '../errors.js';
import * as q from '../db/services.js';
import type { ServiceRecord } from '../db/services.js';
import type { Authenticator } from './authenticator.js';
import type { Principal } from './principal.js';
import type { ServiceReconciler } from './service-reconciler.js';
import type { ServiceManager } from './services.js';

/** Where gateway URLs start, on Atrium's origin (outside /api/v1). */
export const gatewayBasePath = '/services';

/** The path of one port of a service through the gateway; it never changes for the service. */
export const gatewayPath = (projectId: string, serviceId: string, port: string): string =>
  `${gatewayBasePath}/${projectId}/${serviceId}/${port}/`;

const base32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** RFC 4648 base32, lower case, unpadded: a DNS label keeps a mixed-case id apart from its twins. */
function base32Encode(text: string): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    value = (value << 8) | byte;
    bits += 8;
    for (; bits >= 5; bits -= 5) out += base32[(value >>> (bits - 5)) & 31];
    value &= (1 << bits) - 1;
  }
  return bits > 0 ? out + base32[(value << (5 - bits)) & 31] : out;
}

function base32Decode(text: string): string | null {
  let bits = 0;
  let value = 0;
  const bytes: number[] = [];
  for (const char of text) {
    const digit = base32.indexOf(char);
    if (digit < 0) return null;
    value = (value << 5) | digit;
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >>> (bits - 8)) & 255);
      bits -= 8;
      value &= (1 << bits) - 1;
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/**
 * The host of one port of a service under a region's wildcard domain: `{port}-{id}.{domain}`, the
 * id in lower-case base32 (ids are mixed-case; host names are not), the port before the last `-`.
 * Null when it would not fit one DNS label (63 characters): that port keeps its path URL.
 */
export function gatewayHost(serviceId: string, port: string, domain: string): string | null {
  const label = `${port}-${base32Encode(serviceId)}`;
  return label.length <= 63 ? `${label}.${domain}` : null;
}

/** The service and port a gateway host names, under one of `domains`; null for any other host. */
export function parseGatewayHost(
  host: string | undefined,
  domains: Iterable<string>,
): { serviceId: string; port: string; domain: string } | null {
  if (!host) return null;
  const name = host.toLowerCase().replace(/:\d+$/, '');
  for (const domain of domains) {
    if (!name.endsWith(`.${domain}`)) continue;
    const label = name.slice(0, -domain.length - 1);
    const m = /^([a-z0-9-]{1,63})-([a-z2-7]{2,60})$/.exec(label);
    if (!m) return null;
    const serviceId = base32Decode(m[2] as string);
    if (!serviceId || !/^[A-Za-z0-9_-]{1,64}$/.test(serviceId)) return null;
    // Only the canonical spelling: one service and port, one host.
    if (gatewayHost(serviceId, m[1] as string, domain) !== name) return null;
    return { serviceId, port: m[1] as string, domain };
  }
  return null;
}

export interface GatewayTarget {
  service: Pick<ServiceRecord, 'id' | 'projectId' | 'name'>;
  port: string;
  /** How the backend has the port now (its address and credentials are never shown to users). */
  reach: PortReach;
  /** Reachable without credentials (the package allows it and the launch asked for it). */
  public: boolean;
  /** Who is calling; null on a public port. */
  principal: Principal | null;
}

export interface GatewayRequest {
  /** The project the path names; null for a host-based URL (the service's own project). */
  projectId: string | null;
  /** The wildcard domain a host-based URL is under (the service's region must have it). */
  domain?: string | undefined;
  serviceId: string;
  port: string;
  method: string;
  /** An `Authorization` header value (a bearer token, or the sign-in cookie's token). */
  credentials: string | undefined;
}

interface GatewayDeps {
  db: Knex;
  authenticator: Authenticator;
  serviceManager: ServiceManager;
  reconciler: Pick<ServiceReconciler, 'backendOf'>;
  /** The regions that configure a wildcard domain for host-based gateway URLs (region id → domain). */
  domains?: ReadonlyMap<string, string>;
  /** Where external backends may be reached (every connection to one is checked). */
  egress: EgressGuard;
}

const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The port and path that tell whether a service answers (its heartbeat pings them). */
export function healthOf(
  service: Pick<ServiceRecord, 'runSpec' | 'external'>,
): { port: string; path: string } | null {
  if (service.external) {
    const first = service.external.locations[0];
    return first ? { port: first.name, path: service.external.healthPath } : null;
  }
  const run = service.runSpec.local ?? service.runSpec.cluster;
  const port = run?.health?.port ?? run?.ports.find((p) => p.protocol === 'http')?.name;
  return port ? { port, path: run?.health?.path ?? '/' } : null;
}

/** Whether a port of a service answers without credentials. */
export function isPublicPort(service: Pick<ServiceRecord, 'runSpec' | 'options'>, port: string): boolean {
  const spec = [...(service.runSpec.local?.ports ?? []), ...(service.runSpec.cluster?.ports ?? [])].find(
    (p) => p.name === port,
  );
  const option = spec?.public_option;
  return option !== undefined && service.options[option] === true;
}

export class GatewayService {
  private readonly domains: ReadonlyMap<string, string>;

  /** Connections to external backends, each checked by the egress policy when it is made. */
  private readonly external: Pick<PortReach, 'dispatcher'> & ReturnType<EgressGuard['agents']>;

  constructor(private readonly deps: GatewayDeps) {
    this.domains = deps.domains ?? new Map();
    this.external = {
      ...deps.egress.agents({ keepAlive: true }),
      dispatcher: deps.egress.dispatcher({ connectTimeoutMs: 10_000 }),
    };
  }

  /** Whether the gateway reaches the services of a region: every backend says how (`reach`). */
  reaches(regionId: string): boolean {
    return this.deps.reconciler.backendOf(regionId) !== undefined;
  }

  /**
   * The gateway URL of a port: host-based under the region's wildcard domain when it has one (on
   * the scheme of `origin`), else path-based on `origin`, Atrium's origin as the client used it.
   */
  urlOf(service: Pick<ServiceRecord, 'id' | 'projectId' | 'regionId'>, port: string, origin: string): string {
    const domain = this.domains.get(service.regionId);
    const host = domain ? gatewayHost(service.id, port, domain) : null;
    if (host) return `${new URL(origin).protocol}//${host}/`;
    return `${origin}${gatewayPath(service.projectId, service.id, port)}`;
  }

  /** The service and port a request's Host names, when it is a host-based gateway URL. */
  hostTarget(host: string | undefined): { serviceId: string; port: string; domain: string } | null {
    return this.domains.size === 0 ? null : parseGatewayHost(host, new Set(this.domains.values()));
  }

  /**
   * How to reach a port of a service now: the problem to answer when it cannot be (see
   * portAddress), else what its backend says.
   */
  async reach(service: ServiceRecord, port: string): Promise<PortReach> {
    if (service.external) return this.externalReach(service, port);
    const backend = this.deps.reconciler.backendOf(service.regionId);
    const endpointUrl = portAddress(service, port, backend !== undefined);
    if (!backend) throw new DomainError('not-found', `region ${service.regionId} is not configured`);
    return backend.reach({ serviceId: service.id, projectId: service.projectId, port, endpointUrl });
  }

  /** An external backend's location, through connections the egress policy checks. */
  private externalReach(service: ServiceRecord, port: string): PortReach {
    const url = externalLocation(service, port);
    return {
      url,
      headers: {},
      // Its own host name: it may be one of several sites behind one address.
      targetHost: true,
      agent: url.startsWith('https:') ? this.external.https : this.external.http,
      dispatcher: this.external.dispatcher,
    };
  }

  /**
   * The target of a gateway request, or the problem to answer: 401 without valid credentials (on
   * a port that is not public), 404 for what the caller cannot see, 503 with Retry-After while the
   * service is not running.
   */
  async resolve(request: GatewayRequest): Promise<GatewayTarget> {
    const { serviceId, port } = request;
    const found = await q.findService(this.deps.db, serviceId);
    // A host-based URL names no project: the service's own; and only under its own region's domain.
    const projectId =
      request.projectId ??
      (found && request.domain !== undefined && this.domains.get(found.regionId) === request.domain
        ? found.projectId
        : null);
    const open = found !== null && found.projectId === projectId && isPublicPort(found, port);
    let principal: Principal | null = null;
    let service: ServiceRecord;
    if (open) {
      service = found;
    } else {
      // Credentials first: without them, nobody learns whether the service exists.
      if (!request.credentials) throw unauthorized('sign in, or send a bearer token, to reach this service');
      principal = await this.deps.authenticator.authenticate(request.credentials);
      const needed = safeMethods.has(request.method) ? 'read' : 'write';
      if (!principal.scopes.includes(needed)) {
        throw new DomainError(
          'insufficient-scope',
          `this token's scopes are ${principal.scopes.join(', ')}; ${request.method} through the gateway needs "${needed}"`,
        );
      }
      if (projectId === null) throw notFound('service', serviceId);
      // The same rights as reading the service: 404 for whoever may not.
      service = await this.deps.serviceManager.get(principal, projectId, serviceId);
    }
    return { service, port, reach: await this.reach(service, port), public: open, principal };
  }
}

/** The URL an external backend's port was registered at; 404 for no such port, or once it is being deleted. */
function externalLocation(service: ServiceRecord, port: string): string {
  if (service.status === 'deleting' || service.desiredState === 'deleted')
    throw notFound('service', service.id);
  const location = service.external?.locations.find((l) => l.name === port);
  if (!location) throw notFound(`port of service ${service.id}`, port);
  return location.url;
}

/**
 * Where a port of a service is now: its backend's address while it runs; the problem to answer
 * otherwise (404 for no such http port, 503 with Retry-After while it is not running).
 */
export function portAddress(service: ServiceRecord, port: string, reached: boolean): string {
  // An external backend is where it was registered, whatever the region (nothing runs it there).
  if (service.external) return externalLocation(service, port);
  if (!reached) {
    throw new DomainError(
      'not-found',
      `the gateway does not reach the services of region ${service.regionId}: use the endpoint's own URL`,
    );
  }
  const declared = [...(service.runSpec.local?.ports ?? []), ...(service.runSpec.cluster?.ports ?? [])].find(
    (p) => p.name === port,
  );
  if (!declared) throw notFound(`port of service ${service.id}`, port);
  if (declared.protocol !== 'http') {
    throw new DomainError(
      'not-found',
      `port "${port}" speaks tcp: the gateway reaches http ports (see the service's endpoints)`,
    );
  }
  const unavailable = (detail: string, retryAfter: number) =>
    new DomainError(
      'unavailable',
      detail,
      { service_status: service.status },
      { 'Retry-After': String(retryAfter) },
    );
  switch (service.status) {
    case 'running': {
      const endpoint = service.endpoints.find((e) => e.port === port);
      if (!endpoint)
        throw unavailable(`${service.name} is running but its port "${port}" is not ready yet`, 1);
      return endpoint.url;
    }
    case 'pending':
    case 'starting':
      throw unavailable(`${service.name} is starting`, 2);
    case 'suspending':
    case 'suspended':
      throw unavailable(`${service.name} is suspended: resume it to reach it again`, 10);
    case 'deleting':
      throw notFound('service', service.id);
    default:
      throw unavailable(`${service.name} is ${service.status}: ${service.message ?? 'it does not run'}`, 10);
  }
}
