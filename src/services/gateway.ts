// The way in to what users launch: which service and port a gateway request is for, whether its
// caller may reach it, and where the backend has it now. The HTTP layer (http/gateway.ts) proxies.
import type { Knex } from 'knex';
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

export interface GatewayTarget {
  service: Pick<ServiceRecord, 'id' | 'projectId' | 'name'>;
  port: string;
  /** The backend's own address of the port (never shown to users). */
  address: string;
  /** Reachable without credentials (the package allows it and the launch asked for it). */
  public: boolean;
  /** Who is calling; null on a public port. */
  principal: Principal | null;
}

export interface GatewayRequest {
  projectId: string;
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
}

const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Whether a port of a service answers without credentials. */
export function isPublicPort(service: Pick<ServiceRecord, 'runSpec' | 'options'>, port: string): boolean {
  const spec = [...(service.runSpec.local?.ports ?? []), ...(service.runSpec.cluster?.ports ?? [])].find(
    (p) => p.name === port,
  );
  const option = spec?.public_option;
  return option !== undefined && service.options[option] === true;
}

export class GatewayService {
  constructor(private readonly deps: GatewayDeps) {}

  /**
   * Whether the gateway reaches the services of a region: those whose ports are on this machine's
   * loopback (the local runtime). A Kubernetes region's services are reached at their cluster
   * addresses (in the cluster, through the API server's service proxy, or the region's Ingress).
   */
  reaches(regionId: string): boolean {
    return this.deps.reconciler.backendOf(regionId)?.capabilities.endpoints === 'loopback';
  }

  /**
   * The target of a gateway request, or the problem to answer: 401 without valid credentials (on
   * a port that is not public), 404 for what the caller cannot see, 503 with Retry-After while the
   * service is not running.
   */
  async resolve(request: GatewayRequest): Promise<GatewayTarget> {
    const { projectId, serviceId, port } = request;
    const found = await q.findService(this.deps.db, serviceId);
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
      // The same rights as reading the service: 404 for whoever may not.
      service = await this.deps.serviceManager.get(principal, projectId, serviceId);
    }
    return {
      service,
      port,
      address: portAddress(service, port, this.reaches(service.regionId)),
      public: open,
      principal,
    };
  }
}

/**
 * Where a port of a service is now: its backend's address while it runs; the problem to answer
 * otherwise (404 for no such http port, 503 with Retry-After while it is not running).
 */
export function portAddress(service: ServiceRecord, port: string, reached: boolean): string {
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
