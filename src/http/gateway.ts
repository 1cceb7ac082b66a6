// The gateway: /services/{projectId}/{serviceId}/{port}/… reaches that port of the service, with
// the caller's Atrium credentials checked here and never passed on. HTTP of every method with
// streamed bodies both ways, WebSocket upgrades and Server-Sent Events go through http-proxy-3.
// Browsers sign in once (/services/_login) and carry an HttpOnly cookie scoped to the gateway.
import { Agent, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Transform } from 'node:stream';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { createProxyServer } from 'http-proxy-3';
import type { Logger } from 'pino';
import { DomainError, problemKinds, problemTypeBase } from '../errors.js';
import { gatewayBasePath, type GatewayTarget } from '../services/gateway.js';
import type { Services } from '../services/index.js';
import { afterResponse, locals } from './locals.js';

export const gatewayCookie = 'atrium_gateway';

export interface GatewaySettings {
  maxBodyBytes: number;
  timeoutMs: number;
  connectTimeoutMs: number;
}

/** Counts one request through the gateway, by service and port. */
export type GatewayObserver = (
  target: { projectId: string; serviceId: string; port: string },
  status: number,
  seconds: number,
) => void;

export interface Gateway {
  /** Express middleware: answers every request under /services, passes the others on. */
  handle: RequestHandler;
  /** The HTTP server's `upgrade` listener: WebSocket through the gateway, nothing else. */
  upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  close: () => void;
}

interface GatewayDeps {
  services: Pick<Services, 'gateway' | 'authenticator' | 'audit'>;
  settings: GatewaySettings;
  log: Logger;
  observe?: GatewayObserver;
}

const pathPattern =
  /^\/services\/([a-z][a-z0-9-]{0,62})\/([A-Za-z0-9_-]{1,64})\/([a-z0-9-]{1,63})(\/[^?#]*)?(\?.*)?$/;
const mutating = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
// Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own: never passed to the service.
const hopByHop = [
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
];

interface Parsed {
  /** Null for a host-based URL: the service's own project. */
  projectId: string | null;
  serviceId: string;
  port: string;
  /** The path and query the service sees. */
  rest: string | null;
  /** The path the service's root is at (empty for a host-based URL). */
  prefix: string;
  /** The wildcard domain of a host-based URL. */
  domain?: string;
}

/** Where sign-in lives and what the cookie is scoped to: Atrium's /services/, or a service's own host. */
interface Site {
  login: string;
  logout: string;
  cookiePath: string;
  /** Whether `next` is somewhere on this site a sign-in may send the browser back to. */
  isOwn(next: string): boolean;
}

const pathSite: Site = {
  login: `${gatewayBasePath}/_login`,
  logout: `${gatewayBasePath}/_logout`,
  cookiePath: `${gatewayBasePath}/`,
  isOwn: (next) => parse(next) !== null,
};

/** On a service's own host every path is the service's, but for these two (JupyterHub keeps /hub/). */
const hostSite: Site = {
  login: '/_atrium/login',
  logout: '/_atrium/logout',
  cookiePath: '/',
  isOwn: (next) => /^\/(?![/\\])/.test(next),
};

function parse(url: string): Parsed | null {
  const m = pathPattern.exec(url);
  if (!m) return null;
  const [, projectId, serviceId, port, path, query] = m as unknown as [
    string,
    string,
    string,
    string,
    string?,
    string?,
  ];
  return {
    projectId,
    serviceId,
    port,
    rest: path === undefined ? null : `${path}${query ?? ''}`,
    prefix: `${gatewayBasePath}/${projectId}/${serviceId}/${port}`,
  };
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** The Cookie header without the gateway's own cookie (null when nothing is left). */
function withoutGatewayCookie(header: string | undefined): string | null {
  if (!header) return null;
  const kept = header
    .split(';')
    .filter((part) => part.split('=')[0]?.trim() !== gatewayCookie)
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
  return kept.length > 0 ? kept.join('; ') : null;
}

/** The credentials of a request: its Authorization header, else the sign-in cookie's token. */
function credentialsOf(headers: IncomingHttpHeaders): {
  value: string | undefined;
  from: 'header' | 'cookie' | null;
} {
  if (headers.authorization) return { value: headers.authorization, from: 'header' };
  const token = cookieValue(headers.cookie, gatewayCookie);
  return token ? { value: `Bearer ${token}`, from: 'cookie' } : { value: undefined, from: null };
}

interface Forwarding {
  prefix: string;
  clientIp: string;
  proto: string;
  host: string;
  /** The caller's Authorization was Atrium's credential (not the service's own): removed. */
  consumedAuthorization: boolean;
  upgrade: boolean;
}

/** The headers the service receives: hop-by-hop and Atrium's credentials removed, X-Forwarded-* set. */
function forwardedHeaders(headers: IncomingHttpHeaders, f: Forwarding): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = { ...headers };
  const named = String(headers.connection ?? '')
    .split(',')
    .map((token) => token.trim().toLowerCase())
    .filter((token) => token.length > 0 && token !== 'upgrade');
  for (const name of [...hopByHop, ...named]) delete out[name];
  if (f.upgrade) {
    out.connection = 'Upgrade';
    out.upgrade = headers.upgrade;
  }
  if (f.consumedAuthorization) delete out.authorization;
  const cookie = withoutGatewayCookie(headers.cookie);
  if (cookie === null) delete out.cookie;
  else out.cookie = cookie;
  // Set here, not appended to what the client sent: a client cannot forge who it is.
  out['x-forwarded-for'] = f.clientIp;
  out['x-forwarded-proto'] = f.proto;
  out['x-forwarded-host'] = f.host;
  if (f.prefix) out['x-forwarded-prefix'] = f.prefix;
  else delete out['x-forwarded-prefix'];
  return out;
}

const wantsHtml = (req: IncomingMessage) =>
  (req.method === 'GET' || req.method === 'HEAD') && /text\/html/.test(String(req.headers.accept ?? ''));

/** Where a browser goes back to after signing in: somewhere on the same site, nothing else. */
function safeNext(next: unknown, site: Site): string {
  return typeof next === 'string' && site.isOwn(next)
    ? next
    : site === pathSite
      ? `${gatewayBasePath}/`
      : '/';
}

const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  );

function loginPage(next: string, error: string | null, site: Site): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in to Atrium</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}
input{width:100%;padding:.5rem;margin:.5rem 0;box-sizing:border-box}button{padding:.5rem 1rem}
.error{color:#b00020}</style></head>
<body><h1>Sign in to Atrium</h1>
<p>To reach this service, paste an Atrium API token (<code>atr_…</code>) or your identity
provider's access token. It is kept in a cookie that only this browser sends, only to
<code>${site === pathSite ? `${gatewayBasePath}/` : 'this service'}</code>, and that scripts cannot read.</p>
${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="${site.login}">
<input type="hidden" name="next" value="${escapeHtml(next)}">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<button type="submit">Sign in</button>
</form></body></html>
`;
}

const pagePolicy =
  "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

function sendPage(res: Response, status: number, html: string): void {
  res
    .status(status)
    .set({ 'Content-Security-Policy': pagePolicy, 'Cache-Control': 'no-store', 'X-Frame-Options': 'DENY' })
    .type('text/html')
    .send(html);
}

function readForm(req: Request, limit: number): Promise<URLSearchParams> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new DomainError('payload-too-large', `a sign-in form is at most ${limit} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

/** A problem written straight onto a socket (a refused WebSocket upgrade), then closed. */
function refuseUpgrade(socket: Duplex, error: unknown): void {
  const known = error instanceof DomainError ? error : new DomainError('bad-gateway', 'the upgrade failed');
  const { status, title } = problemKinds[known.kind];
  const body = JSON.stringify({
    type: `${problemTypeBase}${known.kind}`,
    title,
    status,
    detail: known.detail,
  });
  const headers = {
    'Content-Type': 'application/problem+json',
    'Content-Length': String(Buffer.byteLength(body)),
    'Cache-Control': 'no-store',
    Connection: 'close',
    ...known.headers,
    ...(status === 401 ? { 'WWW-Authenticate': 'Bearer realm="atrium"' } : {}),
  };
  const head = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}`)
    .join('\r\n');
  if (socket.writable) socket.end(`HTTP/1.1 ${status} ${title}\r\n${head}\r\n\r\n${body}`);
  else socket.destroy();
}

interface Watched {
  refusal: NonNullable<GatewayTarget['reach']['refusal']>;
  fail: (error: DomainError) => void;
}

/** An error answer of at most this size may be the way in's own (read whole before it is judged). */
const maxRefusalBytes = 64 * 1024;
const responseHopByHop = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'trailer',
]);

function relayHead(proxyRes: IncomingMessage, res: ServerResponse): void {
  res.statusCode = proxyRes.statusCode ?? 502;
  if (proxyRes.statusMessage) res.statusMessage = proxyRes.statusMessage;
  for (const [name, value] of Object.entries(proxyRes.headers)) {
    if (value !== undefined && !responseHopByHop.has(name)) res.setHeader(name, value);
  }
}

/**
 * A response through a way in with errors of its own: streamed as it comes, but for a small JSON
 * error answer, read whole and judged by `refusal` (the way in's: a problem; else passed on).
 */
function relayWatched(proxyRes: IncomingMessage, res: ServerResponse, watch: Watched): void {
  proxyRes.on('error', () => res.destroy());
  const status = proxyRes.statusCode ?? 0;
  const declared = proxyRes.headers['content-length'];
  const suspect =
    status >= 400 &&
    /^application\/json/.test(proxyRes.headers['content-type'] ?? '') &&
    (declared === undefined || Number(declared) <= maxRefusalBytes);
  if (!suspect) {
    relayHead(proxyRes, res);
    proxyRes.pipe(res);
    return;
  }
  let chunks: Buffer[] = [];
  let size = 0;
  let streaming = false;
  proxyRes.on('data', (chunk: Buffer) => {
    if (streaming) {
      res.write(chunk);
      return;
    }
    chunks.push(chunk);
    size += chunk.length;
    if (size > maxRefusalBytes) {
      // Too large to be the way in's own: the service's, passed on.
      streaming = true;
      relayHead(proxyRes, res);
      for (const buffered of chunks) res.write(buffered);
      chunks = [];
    }
  });
  proxyRes.on('end', () => {
    if (streaming) {
      res.end();
      return;
    }
    const body = Buffer.concat(chunks);
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      parsed = null;
    }
    const problem = watch.refusal(status, parsed);
    if (problem) {
      watch.fail(problem);
      return;
    }
    relayHead(proxyRes, res);
    res.end(body);
  });
}

export function createGateway(deps: GatewayDeps): Gateway {
  const { services, settings, log, observe } = deps;
  // Connections to services are kept alive and reused, as a browser would.
  const agent = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 32, timeout: 60_000 });
  const proxy = createProxyServer({ agent, ws: true, connectTimeout: settings.connectTimeoutMs });
  // A service that sends nothing for this long: its request is ended (504 if nothing was answered).
  proxy.on('proxyReq', (proxyReq) => {
    proxyReq.setTimeout(settings.timeoutMs, () => {
      const error = Object.assign(new Error('the service sent nothing in time'), { code: 'EGATEWAYTIMEOUT' });
      proxyReq.destroy(error);
    });
  });
  // A way in that answers errors of its own (an API server): its responses are relayed here, so
  // that its own error answers become problems (PortReach.refusal); the service's pass as they are.
  const watched = new WeakMap<IncomingMessage, Watched>();
  proxy.on('proxyRes', (proxyRes, req, res) => {
    const watch = watched.get(req);
    if (watch) relayWatched(proxyRes, res, watch);
  });
  // Errors nobody is left to answer (a client gone mid-way): logged, never thrown.
  proxy.on('error', (err) => log.debug({ err }, 'gateway connection ended'));
  proxy.on('econnreset', () => undefined);

  const failed = (err: unknown, target: GatewayTarget): DomainError => {
    const code = (err as { code?: string }).code;
    if (code === 'EGATEWAYTIMEOUT')
      return new DomainError(
        'gateway-timeout',
        `${target.service.name} sent nothing for ${settings.timeoutMs} ms`,
      );
    return new DomainError(
      'bad-gateway',
      `${target.service.name} could not be reached on its port "${target.port}" (${code ?? 'error'})`,
    );
  };

  const audit = (
    target: Pick<GatewayTarget, 'principal'> | null,
    parsed: { projectId: string | null; serviceId: string; port: string },
    req: IncomingMessage,
    status: number,
    requestId: string,
    ip: string,
  ) => {
    services.audit.record({
      requestId,
      userId: target?.principal?.user.id ?? null,
      operationId: 'gateway',
      method: req.headers.upgrade ? 'UPGRADE' : (req.method ?? 'GET'),
      path: parsed.projectId
        ? `${gatewayBasePath}/${parsed.projectId}/${parsed.serviceId}/${parsed.port}`
        : `${parsed.port}-${parsed.serviceId}`,
      status,
      projectId: parsed.projectId,
      ip,
    });
  };

  async function login(req: Request, res: Response, site: Site): Promise<void> {
    if (req.method === 'GET' || req.method === 'HEAD') {
      sendPage(res, 200, loginPage(safeNext(req.query.next, site), null, site));
      return;
    }
    if (req.method !== 'POST') throw new DomainError('method-not-allowed', 'sign in with GET or POST');
    const form = await readForm(req, 16 * 1024);
    const next = safeNext(form.get('next'), site);
    const token = (form.get('token') ?? '').trim();
    try {
      if (!token) throw new DomainError('unauthorized', 'no token');
      await services.authenticator.authenticate(`Bearer ${token}`);
    } catch {
      sendPage(res, 401, loginPage(next, 'That token is not valid (unknown, expired or revoked).', site));
      return;
    }
    // No Domain attribute: on a service's host, the cookie is that host's only.
    res.cookie(gatewayCookie, token, {
      httpOnly: true,
      sameSite: 'lax',
      secure: req.secure,
      path: site.cookiePath,
    });
    res.set('Cache-Control', 'no-store').redirect(303, next);
  }

  function logout(req: Request, res: Response, site: Site): void {
    if (req.method !== 'POST') throw new DomainError('method-not-allowed', 'sign out with POST');
    res.clearCookie(gatewayCookie, {
      path: site.cookiePath,
      httpOnly: true,
      sameSite: 'lax',
      secure: req.secure,
    });
    res.set('Cache-Control', 'no-store').redirect(303, site.login);
  }

  /** The service and port of a request: by its Host under a wildcard domain, else by its path. */
  const parseRequest = (
    url: string,
    host: string | undefined,
  ): { site: Site; parsed: Parsed | null; hosted: boolean } => {
    const hosted = services.gateway.hostTarget(host);
    if (!hosted) return { site: pathSite, parsed: parse(url), hosted: false };
    return {
      site: hostSite,
      hosted: true,
      parsed: { projectId: null, ...hosted, rest: url.startsWith('/') ? url : `/${url}`, prefix: '' },
    };
  };

  /** What a resolve needs of a parsed request. */
  const requestOf = (parsed: Parsed, method: string, credentials: string | undefined) => ({
    projectId: parsed.projectId,
    domain: parsed.domain,
    serviceId: parsed.serviceId,
    port: parsed.port,
    method,
    credentials,
  });

  /** A browser's cookie is sent by any page of the same site: a cookie-signed write must come from this origin. */
  const checkOrigin = (req: IncomingMessage, from: 'header' | 'cookie' | null, what: string) => {
    if (from !== 'cookie' || req.headers.origin === undefined) return;
    let origin: string;
    try {
      origin = new URL(req.headers.origin).host;
    } catch {
      origin = req.headers.origin;
    }
    if (origin !== req.headers.host)
      throw new DomainError(
        'forbidden',
        `${what} signed in by cookie must come from this origin, not ${origin}`,
      );
  };

  async function web(
    req: Request,
    res: Response,
    next: NextFunction,
    found: ReturnType<typeof parseRequest>,
  ) {
    const url = req.originalUrl;
    const { site, parsed } = found;
    if (url === site.login || url.startsWith(`${site.login}?`)) return login(req, res, site);
    if (url === site.logout) return logout(req, res, site);
    if (!parsed)
      throw new DomainError(
        'not-found',
        `nothing at ${req.path}: gateway URLs are ${gatewayBasePath}/{projectId}/{serviceId}/{port}/`,
      );
    if (parsed.rest === null) {
      // The service's root is the prefix with a slash: relative links resolve under it.
      res.redirect(308, `${parsed.prefix}/`);
      return;
    }
    const started = process.hrtime.bigint();
    const credentials = credentialsOf(req.headers);
    let target: GatewayTarget;
    try {
      if (found.hosted && mutating.has(req.method)) checkOrigin(req, credentials.from, 'a write');
      target = await services.gateway.resolve(requestOf(parsed, req.method, credentials.value));
    } catch (error) {
      if (error instanceof DomainError && error.kind === 'unauthorized' && wantsHtml(req)) {
        if (credentials.from === 'cookie') res.clearCookie(gatewayCookie, { path: site.cookiePath });
        res.set('Cache-Control', 'no-store').redirect(302, `${site.login}?next=${encodeURIComponent(url)}`);
        return;
      }
      throw error;
    }
    const labels = { projectId: target.service.projectId, serviceId: parsed.serviceId, port: parsed.port };
    if (target.principal) locals(res).principal = target.principal;
    locals(res).gateway = true;
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > settings.maxBodyBytes) {
      throw new DomainError(
        'payload-too-large',
        `the gateway passes bodies of at most ${settings.maxBodyBytes} bytes`,
      );
    }
    const requestId = locals(res).requestId;
    const clientIp = locals(res).clientIp;
    afterResponse(res, () => {
      observe?.(labels, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9);
      if (mutating.has(req.method)) audit(target, labels, req, res.statusCode, requestId, clientIp);
    });
    req.headers = forwardedHeaders(req.headers, {
      prefix: parsed.prefix,
      clientIp,
      proto: req.protocol,
      host: req.get('host') ?? '',
      consumedAuthorization: !target.public && credentials.from === 'header',
      upgrade: false,
    });
    req.url = parsed.rest;
    const reach = target.reach;
    // A body larger than the limit, sent without a length: cut where it crosses the limit.
    let size = 0;
    const limited = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        size += chunk.length;
        if (size > settings.maxBodyBytes) {
          done(
            new DomainError(
              'payload-too-large',
              `the gateway passes bodies of at most ${settings.maxBodyBytes} bytes`,
            ),
          );
          return;
        }
        done(null, chunk);
      },
    });
    limited.on('error', (error) => {
      req.unpipe(limited);
      if (!res.headersSent) next(error);
      else res.destroy();
      req.resume();
    });
    req.pipe(limited);
    if (reach.refusal) {
      watched.set(req, {
        refusal: reach.refusal,
        fail: (error) => (res.headersSent ? res.destroy() : next(error)),
      });
    }
    const options = {
      target: reach.url,
      headers: reach.headers,
      changeOrigin: reach.targetHost,
      agent: reach.agent ?? agent,
      buffer: limited,
      selfHandleResponse: reach.refusal !== undefined,
    };
    proxy.web(req, res as ServerResponse, options, (err) => {
      if (res.headersSent || res.writableEnded) {
        res.destroy();
        return;
      }
      if (size > settings.maxBodyBytes) return;
      next(failed(err, target));
    });
  }

  const handle: RequestHandler = (req, res, next) => {
    const found = parseRequest(req.originalUrl, req.headers.host);
    if (!found.hosted && req.path !== gatewayBasePath && !req.path.startsWith(`${gatewayBasePath}/`))
      return next();
    web(req, res, next, found).catch(next);
  };

  const upgraded = new Set<Duplex>();
  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => undefined);
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
    const { parsed } = parseRequest(req.url ?? '', req.headers.host);
    if (!parsed || parsed.rest === null) {
      refuseUpgrade(socket, new DomainError('not-found', `no WebSocket at ${req.url ?? ''}`));
      return;
    }
    const clientIp = req.socket.remoteAddress ?? '';
    const requestId = String(req.headers['x-request-id'] ?? '');
    const credentials = credentialsOf(req.headers);
    void (async () => {
      let target: GatewayTarget | null = null;
      try {
        // A browser's cookie is sent by any page that opens a WebSocket: only this origin may.
        checkOrigin(req, credentials.from, 'a WebSocket');
        target = await services.gateway.resolve(requestOf(parsed, 'GET', credentials.value));
      } catch (error) {
        audit(null, parsed, req, error instanceof DomainError ? error.status : 500, requestId, clientIp);
        refuseUpgrade(socket, error);
        return;
      }
      const reached = target;
      const labels = { projectId: reached.service.projectId, serviceId: parsed.serviceId, port: parsed.port };
      audit(reached, labels, req, 101, requestId, clientIp);
      observe?.(labels, 101, 0);
      req.headers = forwardedHeaders(req.headers, {
        prefix: parsed.prefix,
        clientIp,
        proto: 'encrypted' in req.socket && req.socket.encrypted ? 'https' : 'http',
        host: req.headers.host ?? '',
        consumedAuthorization: !reached.public && credentials.from === 'header',
        upgrade: true,
      });
      req.url = parsed.rest as string;
      const reach = reached.reach;
      const options = {
        target: reach.url.replace(/^http/, 'ws'),
        headers: reach.headers,
        changeOrigin: reach.targetHost,
        agent: reach.agent ?? agent,
      };
      proxy.ws(req, socket, head, options, (err) => {
        // Before the service's 101, the client still waits for an HTTP answer; after it, only closing is left.
        if ((socket as Socket).bytesWritten === 0) refuseUpgrade(socket, failed(err, reached));
        else socket.destroy();
      });
    })().catch((err: unknown) => {
      log.error({ err }, 'gateway upgrade failed');
      socket.destroy();
    });
  };

  return {
    handle,
    upgrade,
    close: () => {
      for (const socket of upgraded) socket.destroy();
      proxy.close();
      agent.destroy();
    },
  };
}
