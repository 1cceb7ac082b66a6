import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import { DomainError } from '../errors.js';
import type { AuditService } from '../services/audit.js';
import { afterResponse, locals, openapiMatch } from './locals.js';

const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/;

/** What happened to a request, once it has been answered (metrics). */
export type RequestObserver = (req: Request, res: Response, seconds: number) => void;

/**
 * Gives every request an id (the client's `X-Request-Id` when it is sane), a child logger (made
 * the first time something logs), and one structured log line when it ends; `observe` (metrics)
 * hears of it then too. Authorization headers and query strings are never logged.
 */
export function requestContext(log: Logger, observe?: RequestObserver): RequestHandler {
  return (req, res, next) => {
    const incoming = req.get('X-Request-Id');
    const requestId = incoming && requestIdPattern.test(incoming) ? incoming : randomUUID();
    const started = process.hrtime.bigint();
    res.setHeader('X-Request-Id', requestId);
    let child: Logger | undefined;
    const childLog = () => (child ??= log.child({ request_id: requestId }));
    const state = locals(res);
    state.requestId = requestId;
    Object.defineProperty(state, 'log', { get: childLog, configurable: true, enumerable: true });
    state.clientIp = req.ip ?? '';
    afterResponse(res, () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      observe?.(req, res, seconds);
      const level = res.statusCode === 500 ? 'error' : res.statusCode >= 500 ? 'warn' : 'info';
      if (!log.isLevelEnabled(level)) return;
      childLog()[level](
        {
          method: req.method,
          path: req.path,
          operation: openapiMatch(req)?.schema.operationId,
          status: res.statusCode,
          duration_ms: seconds * 1000,
          user_id: locals(res).principal?.user.id,
        },
        'request',
      );
    });
    next();
  };
}

const apiPolicy = "default-src 'none'; frame-ancestors 'none'";

export function securityHeaders(req: Request, res: Response, next: NextFunction): void {
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
  res.setHeader('Content-Security-Policy', apiPolicy);
  next();
}

const exposedHeaders = 'ETag, Link, Location, Retry-After, X-Request-Id, Idempotent-Replayed';
const allowedHeaders =
  'Authorization, Content-Type, If-Match, If-None-Match, Idempotency-Key, Prefer, Last-Event-ID, X-Request-Id';

/** CORS for the configured origins only; none by default. */
export function cors(origins: readonly string[]): RequestHandler {
  const allowed = new Set(origins);
  return (req, res, next) => {
    if (allowed.size === 0) return next();
    // Responses differ by Origin, allowed or not: caches must keep them apart.
    res.vary('Origin');
    const origin = req.get('Origin');
    if (!origin || !allowed.has(origin)) return next();
    res.setHeader('Access-Control-Allow-Origin', origin);
    res.setHeader('Access-Control-Expose-Headers', exposedHeaders);
    if (req.method === 'OPTIONS' && req.get('Access-Control-Request-Method')) {
      res.setHeader('Access-Control-Allow-Methods', 'GET, POST, PUT, PATCH, DELETE');
      res.setHeader('Access-Control-Allow-Headers', allowedHeaders);
      res.setHeader('Access-Control-Max-Age', '600');
      res.status(204).end();
      return;
    }
    next();
  };
}

/**
 * Token-bucket rate limiting per client address: `burst` requests at once, refilled at
 * `requestsPerMinute`. Buckets live in memory (per API process) and are bounded in number.
 */
export function rateLimit(options: {
  requestsPerMinute: number;
  burst: number;
  now?: () => number;
}): RequestHandler {
  // A monotonic clock: a wall-clock step backwards must not lock clients out.
  const now = options.now ?? (() => performance.now());
  const perMs = options.requestsPerMinute / 60_000;
  const buckets = new Map<string, { tokens: number; at: number }>();
  const maxBuckets = 50_000;
  return (_req, res, next) => {
    const key = locals(res).clientIp || 'unknown';
    const t = now();
    const bucket = buckets.get(key) ?? { tokens: options.burst, at: t };
    bucket.tokens = Math.min(options.burst, bucket.tokens + (t - bucket.at) * perMs);
    bucket.at = t;
    if (bucket.tokens < 1) {
      const retryAfter = Math.ceil((1 - bucket.tokens) / perMs / 1000);
      next(
        new DomainError(
          'rate-limited',
          `slow down: at most ${options.requestsPerMinute} requests a minute`,
          {},
          { 'Retry-After': String(retryAfter) },
        ),
      );
      return;
    }
    bucket.tokens -= 1;
    if (!buckets.has(key) && buckets.size >= maxBuckets)
      buckets.delete(buckets.keys().next().value as string);
    buckets.set(key, bucket);
    next();
  };
}

/**
 * What is wrong with a parsed JSON body, if anything: nesting deeper than `limit` (a scalar is 0,
 * `{}` is 1, `{"a": [1]}` is 2), or a number JSON.parse made infinite (`1e999`). Walks the value
 * with its own stack and stops at the first fault, so no depth reaches the call stack.
 */
export function jsonBodyFault(
  body: unknown,
  limit: number,
): { kind: 'depth' | 'non-finite'; pointer: string; message: string } | null {
  const stack: { value: unknown; depth: number; pointer: string }[] = [
    { value: body, depth: 0, pointer: '' },
  ];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const { value, depth, pointer } = item;
    if (typeof value === 'number' && !Number.isFinite(value)) {
      return { kind: 'non-finite', pointer: pointer || '/', message: 'must be a finite number' };
    }
    if (value === null || typeof value !== 'object') continue;
    if (depth + 1 > limit) {
      return { kind: 'depth', pointer: pointer || '/', message: `nests deeper than ${limit} levels` };
    }
    for (const [key, child] of Object.entries(value)) {
      stack.push({
        value: child,
        depth: depth + 1,
        pointer: `${pointer}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`,
      });
    }
  }
  return null;
}

/**
 * Refuses JSON bodies nested deeper than `limit`, or holding a number too large to be finite,
 * before any validator walks them (and before authentication: the check costs no more than the
 * parse that preceded it).
 */
export function jsonBodyLimits(limit: number): RequestHandler {
  return (req, _res, next) => {
    if (req.body === null || typeof req.body !== 'object') return next();
    const fault = jsonBodyFault(req.body, limit);
    if (!fault) return next();
    if (fault.kind === 'depth') {
      next(new DomainError('bad-request', `the JSON body is nested deeper than ${limit} levels`));
      return;
    }
    next(
      new DomainError('validation', `${fault.pointer}: ${fault.message}`, {
        errors: [{ location: 'body', pointer: fault.pointer, message: fault.message }],
      }),
    );
  };
}

/**
 * The validation problem for query and path parameters the validator coerced into a number that is
 * not finite (`Infinity`, `1e999`), if there are any.
 */
export function nonFiniteParameters(req: Request): DomainError | null {
  const faults: { location: 'query' | 'path'; pointer: string; message: string }[] = [];
  const scan = (location: 'query' | 'path', values: Record<string, unknown> | undefined) => {
    for (const name in values) {
      const value = values[name];
      const list = Array.isArray(value) ? value : [value];
      if (list.some((v) => typeof v === 'number' && !Number.isFinite(v))) {
        faults.push({ location, pointer: `/${name}`, message: 'must be a finite number' });
      }
    }
  };
  scan('query', req.query as Record<string, unknown>);
  scan('path', openapiMatch(req)?.pathParams);
  if (faults.length === 0) return null;
  return new DomainError(
    'validation',
    `${faults.map((f) => f.pointer.slice(1)).join(', ')}: must be a finite number`,
    { errors: faults },
  );
}

const mutating = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * An audit record for every mutating request that reached an operation, whatever its outcome: the
 * dispatcher writes it with the request's change (and it is completed here with the final status);
 * a request refused before (validation, authentication) is recorded here once answered.
 */
export function auditTrail(audit: AuditService): RequestHandler {
  return (req, res, next) => {
    if (mutating.has(req.method)) {
      afterResponse(res, () => {
        const draft = locals(res).audit;
        if (draft) return audit.finish(draft, res.statusCode);
        const match = openapiMatch(req);
        if (!match) return;
        const projectId = match.pathParams.projectId;
        audit.record({
          requestId: locals(res).requestId,
          userId: locals(res).principal?.user.id ?? null,
          operationId: match.schema.operationId,
          method: req.method,
          path: req.originalUrl.split('?')[0] as string,
          status: res.statusCode,
          projectId: typeof projectId === 'string' ? projectId : null,
          ip: locals(res).clientIp,
        });
      });
    }
    next();
  };
}
