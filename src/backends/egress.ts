// Where Atrium may send requests on a user's behalf (external backends: services it did not launch,
// registered by URL). A URL is a way to make Atrium's host call its own loopback, its cloud's
// metadata service or the lab's private network (SSRF), so the addresses a name resolves to are
// checked, not the name: loopback, link-local, private, shared, multicast and reserved ranges are
// refused unless an administrator allows them (`functions.externalBackends.allow`, CIDRs). Every
// connection is checked when it is made, after DNS, so a redirect, a name that resolves elsewhere
// next time (DNS rebinding) or an IP literal in any spelling cannot get round it.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP, Socket, type LookupFunction } from 'node:net';
import type { Duplex } from 'node:stream';
import { Agent as HttpAgent, type AgentOptions } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { Agent as UndiciAgent, buildConnector } from 'undici';

export interface EgressPolicy {
  /** CIDRs (or single addresses) allowed although they are internal. */
  allow: string[];
}

/** A destination the policy refuses, or one that cannot be resolved. */
export class EgressRefused extends Error {
  constructor(
    message: string,
    readonly reason: 'internal-address' | 'unresolvable' | 'bad-url',
  ) {
    super(message);
    this.name = 'EgressRefused';
  }
}

const internalRanges: [string, number, 'ipv4' | 'ipv6'][] = [
  ['0.0.0.0', 8, 'ipv4'], // "this network"
  ['10.0.0.0', 8, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'], // carrier-grade NAT
  ['127.0.0.0', 8, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'], // link-local, cloud metadata services
  ['172.16.0.0', 12, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'], // benchmarking
  ['224.0.0.0', 4, 'ipv4'], // multicast
  ['240.0.0.0', 4, 'ipv4'], // reserved, broadcast
  ['::', 128, 'ipv6'],
  ['::1', 128, 'ipv6'],
  ['64:ff9b::', 96, 'ipv6'], // NAT64 (embeds IPv4)
  ['100::', 64, 'ipv6'], // discard
  ['fc00::', 7, 'ipv6'], // unique local
  ['fe80::', 10, 'ipv6'], // link-local
  ['fec0::', 10, 'ipv6'], // site-local (deprecated)
  ['ff00::', 8, 'ipv6'], // multicast
];

const internal = new BlockList();
for (const [network, prefix, family] of internalRanges) internal.addSubnet(network, prefix, family);

/** An IPv4 address an IPv6 one carries (mapped `::ffff:a.b.c.d`, or compatible), to judge it as IPv4. */
function embeddedIpv4(address: string): string | null {
  const mapped = /^::(?:ffff:)?(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1] as string;
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
  if (!hex) return null;
  const high = parseInt(hex[1] as string, 16);
  const low = parseInt(hex[2] as string, 16);
  return [high >> 8, high & 255, low >> 8, low & 255].join('.');
}

/** Checks addresses against a policy; made once per policy. */
export class EgressGuard {
  private readonly allowed = new BlockList();

  constructor(readonly policy: EgressPolicy) {
    for (const entry of policy.allow) {
      const [network, prefix] = entry.split('/');
      const family = isIP(network ?? '');
      if (!network || family === 0)
        throw new Error(`egress allow-list: "${entry}" is not an address or CIDR`);
      const bits = prefix === undefined ? (family === 4 ? 32 : 128) : Number(prefix);
      if (!Number.isInteger(bits) || bits < 0 || bits > (family === 4 ? 32 : 128))
        throw new Error(`egress allow-list: "${entry}" has a bad prefix length`);
      this.allowed.addSubnet(network, bits, family === 4 ? 'ipv4' : 'ipv6');
    }
  }

  /** Why an address may not be reached, or null when it may. */
  refusal(address: string): string | null {
    const bare = address.replace(/^\[|\]$/g, '');
    const family = isIP(bare);
    if (family === 0) return `"${address}" is not an IP address`;
    const v4 = family === 6 ? embeddedIpv4(bare) : bare;
    const [ip, type] = v4 ? [v4, 'ipv4' as const] : [bare, 'ipv6' as const];
    if (!internal.check(ip, type)) return null;
    if (this.allowed.check(ip, type) || (ip !== bare && this.allowed.check(bare, 'ipv6'))) return null;
    return `${bare} is an internal address (loopback, link-local or private), which is not on the administrator's allow-list`;
  }

  /** A `lookup` for sockets that resolves as usual and fails on any address the policy refuses. */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (error, addresses: LookupAddress[]) => {
      if (error) return callback(error, '', 0);
      const refused = addresses.map((a) => this.refusal(a.address)).find((r) => r !== null);
      if (refused) return callback(new EgressRefused(`${hostname}: ${refused}`, 'internal-address'), '', 0);
      if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
      const first = addresses[0];
      if (!first) return callback(new EgressRefused(`${hostname} has no address`, 'unresolvable'), '', 0);
      callback(null, first.address, first.family);
    });
  };

  /** Checks a host before connecting: an IP literal at once (sockets never look those up), a name on lookup. */
  private checkLiteral(host: string): void {
    const bare = host.replace(/^\[|\]$/g, '');
    if (isIP(bare) === 0) return;
    const refused = this.refusal(bare);
    if (refused) throw new EgressRefused(refused, 'internal-address');
  }

  /**
   * Checks a URL as registered: http(s), no credentials in it, and every address its host resolves
   * to now allowed. (Connections are checked again when made.)
   */
  async checkUrl(raw: string): Promise<URL> {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new EgressRefused(`"${raw}" is not a URL`, 'bad-url');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new EgressRefused(`${url.protocol} URLs are not reached: use http or https`, 'bad-url');
    if (url.username || url.password)
      throw new EgressRefused('a location may not carry credentials in its URL', 'bad-url');
    this.checkLiteral(url.hostname);
    if (isIP(url.hostname.replace(/^\[|\]$/g, '')) === 0) {
      await new Promise<void>((resolve, reject) => {
        this.lookup(url.hostname, { all: true }, (error) => {
          if (!error) return resolve();
          reject(
            error instanceof EgressRefused
              ? error
              : new EgressRefused(`${url.hostname} cannot be resolved (${error.message})`, 'unresolvable'),
          );
        });
      });
    }
    return url;
  }

  /** A fetch dispatcher whose every connection (redirects too) is checked. */
  dispatcher(options: { connectTimeoutMs: number }): UndiciAgent {
    const connect = buildConnector({ timeout: options.connectTimeoutMs, lookup: this.lookup });
    return new UndiciAgent({
      connect: (opts, callback) => {
        try {
          this.checkLiteral(opts.hostname);
        } catch (error) {
          return callback(error as Error, null);
        }
        return connect(opts, callback);
      },
    });
  }

  /** node:http(s) agents (for the gateway's proxy) whose every connection is checked. */
  agents(options: AgentOptions = {}): { http: HttpAgent; https: HttpsAgent } {
    const guard = (agent: HttpAgent) => {
      const create = agent.createConnection.bind(agent) as (o: unknown, c: unknown) => Duplex;
      agent.createConnection = ((opts: { host?: string }, callback: unknown) => {
        try {
          this.checkLiteral(opts.host ?? '');
        } catch (error) {
          // Refused as a connection error (the request's `error`), never thrown at its caller.
          const refused = new Socket();
          process.nextTick(() => refused.destroy(error as Error));
          return refused;
        }
        return create(opts, callback);
      }) as typeof agent.createConnection;
      return agent;
    };
    return {
      http: guard(new HttpAgent({ ...options, lookup: this.lookup } as AgentOptions)),
      https: guard(
        new HttpsAgent({ ...options, lookup: this.lookup } as AgentOptions) as HttpAgent,
      ) as HttpsAgent,
    };
  }
}
