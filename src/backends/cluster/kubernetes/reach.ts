// How Atrium reaches the http port of a service in the cluster (the gateway, service functions).
// Outside the cluster (the default), through the API server's service proxy
// (/api/v1/namespaces/{ns}/services/{name}:{port}/proxy/…), with the region's kubeconfig
// credentials and TLS: the API server authenticates the request, takes its Authorization header
// off and passes the rest, upgrades (WebSocket) included, to the Service's pods. Inside the cluster
// (`gateway: in-cluster`), straight to the Service's DNS name.
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent, type AgentOptions, type RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { Agent as UndiciAgent } from 'undici';
import { DomainError } from '../../../errors.js';
import type { PortReach, ReachRequest } from '../types.js';
import { guarded } from './errors.js';
import { namespaceName, portServiceName } from './naming.js';
import type { KubernetesClients, KubernetesSettings } from './settings.js';

/** At most this many Service port numbers are remembered (in-cluster); more start the memory afresh. */
const maxRemembered = 10_000;

type TlsOptions = Pick<AgentOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized' | 'servername'>;

interface Transport {
  agent: HttpAgent;
  dispatcher: UndiciAgent;
}

/** The TLS settings of the kubeconfig's cluster and user, and its authorization headers (now). */
async function kubeconfigOptions(
  config: KubeConfig,
): Promise<{ tls: TlsOptions; headers: Record<string, string> }> {
  const options: RequestOptions = {};
  await config.applyToHTTPSOptions(options);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    if (typeof value === 'string' || typeof value === 'number') headers[name.toLowerCase()] = String(value);
  }
  if (options.auth) headers.authorization = `Basic ${Buffer.from(options.auth).toString('base64')}`;
  const tls: TlsOptions = {
    ...(options.ca === undefined ? {} : { ca: options.ca }),
    ...(options.cert === undefined ? {} : { cert: options.cert }),
    ...(options.key === undefined ? {} : { key: options.key }),
    ...(options.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: options.rejectUnauthorized }),
    ...(options.servername === undefined ? {} : { servername: options.servername }),
  };
  return { tls, headers };
}

/**
 * What an error answer of the service proxy means when it is the API server's own (a `Status`),
 * for the gateway's caller: its message (naming Atrium's identity, the namespace) is not passed on.
 */
export function proxyRefusal(status: number, body: unknown): DomainError | null {
  const isStatus =
    body !== null &&
    typeof body === 'object' &&
    (body as { kind?: unknown }).kind === 'Status' &&
    (body as { apiVersion?: unknown }).apiVersion === 'v1';
  if (!isStatus) return null;
  if (status === 503)
    return new DomainError(
      'unavailable',
      'the service has no ready pod right now',
      {},
      { 'Retry-After': '2' },
    );
  if (status === 401 || status === 403)
    return new DomainError(
      'bad-gateway',
      "the region's API server does not let Atrium reach its services (its ClusterRole needs services/proxy)",
    );
  if (status === 404) return new DomainError('bad-gateway', "the service's port is missing in the cluster");
  return new DomainError('bad-gateway', 'the API server of the region could not reach the service');
}

export class ServiceReach {
  private transport: Transport | null = null;
  private readonly portNumbers = new Map<string, number>();

  constructor(
    private readonly clients: KubernetesClients,
    private readonly settings: KubernetesSettings,
    private readonly log?: { warn(details: object, message: string): void },
  ) {}

  async reach(request: ReachRequest): Promise<PortReach> {
    const namespace = namespaceName(this.settings.namespacePrefix, request.projectId);
    const service = portServiceName(request.serviceId, request.port);
    if (this.settings.gateway === 'in-cluster') {
      const port = await this.portNumber(namespace, service, request.port);
      return { url: `http://${service}.${namespace}.svc:${port}`, headers: {}, targetHost: false };
    }
    const cluster = this.clients.config.getCurrentCluster();
    if (!cluster) throw new DomainError('internal', 'the kubeconfig of this region names no cluster');
    const { tls, headers } = await kubeconfigOptions(this.clients.config);
    const server = cluster.server.replace(/\/+$/, '');
    const transport = this.transportOf(server, tls);
    return {
      url: `${server}/api/v1/namespaces/${namespace}/services/${service}:${request.port}/proxy`,
      headers,
      targetHost: true,
      agent: transport.agent,
      dispatcher: transport.dispatcher,
      refusal: proxyRefusal,
    };
  }

  /** Closes the connections kept to the API server. */
  close(): void {
    this.transport?.agent.destroy();
    void this.transport?.dispatcher.close().catch(() => undefined);
    this.transport = null;
  }

  /**
   * One pair of connection pools to the API server for every request (made on the first, with the
   * kubeconfig's TLS settings: a changed CA or client certificate needs a restart, as for the
   * backend's own API clients).
   */
  private transportOf(server: string, tls: TlsOptions): Transport {
    if (this.transport) return this.transport;
    const pool = { keepAlive: true, maxSockets: 256, maxFreeSockets: 32, timeout: 60_000 };
    const secure = server.startsWith('https:');
    this.transport = {
      agent: secure ? new HttpsAgent({ ...pool, ...tls }) : new HttpAgent(pool),
      dispatcher: new UndiciAgent({
        keepAliveTimeout: 30_000,
        connect: {
          ...(tls.ca === undefined ? {} : { ca: tls.ca }),
          ...(tls.cert === undefined ? {} : { cert: tls.cert }),
          ...(tls.key === undefined ? {} : { key: tls.key }),
          ...(tls.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: tls.rejectUnauthorized }),
          ...(tls.servername === undefined ? {} : { servername: tls.servername }),
        },
      }),
    };
    return this.transport;
  }

  /** The number of the Service's port (its Service is read once). */
  private async portNumber(namespace: string, service: string, port: string): Promise<number> {
    const key = `${namespace}/${service}`;
    const known = this.portNumbers.get(key);
    if (known !== undefined) return known;
    const found = await guarded(
      `service ${service}`,
      () => this.clients.core.readNamespacedService({ name: service, namespace }),
      this.log,
    );
    const number = found.spec?.ports?.find((p) => p.name === port)?.port;
    if (number === undefined)
      throw new DomainError('bad-gateway', `the Service ${namespace}/${service} has no port "${port}"`);
    if (this.portNumbers.size >= maxRemembered) this.portNumbers.clear();
    this.portNumbers.set(key, number);
    return number;
  }
}
