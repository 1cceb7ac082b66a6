import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import { DomainError } from '../errors.js';
import type { AuditService } from '../services/audit.js';
import { locals, openapiMatch } from './locals.js';

const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Gives every request an id (the client's `X-Request-Id` when it is sane), a child logger, and one
 * structured log line when it ends. Authorization headers and query strings are never logged.
 */
export function requestContext(log: Logger): RequestHandler {
  return (req, res, next) => {
    const incoming = req.get('X-Request-Id');
    const requestId = incoming && requestIdPattern.test(incoming) ? incoming : randomUUID();
    const started = process.hrtime.bigint();
    res.setHeader('X-Request-Id', requestId);
    const child = log.child({ request_id: requestId });
    locals(res).requestId = requestId;
    locals(res).log = child;
    res.on('finish', () => {
      const level = res.statusCode === 500 ? 'error' : res.statusCode >= 500 ? 'warn' : 'info';
      child[level](
        {
          method: req.method,
          path: req.path,
          operation: openapiMatch(req)?.schema.operationId,
          status: res.statusCode,
          duration_ms: Number(process.hrtime.bigint() - started) / 1e6,
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
  return (req, _res, next) => {
    const key = req.ip ?? 'unknown';
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

/** How deeply containers nest: a scalar is 0, `{}` is 1, `{"a": [1]}` is 2. Stops counting past `limit`. */
function depthOf(value: unknown, limit: number): number {
  if (value === null || typeof value !== 'object') return 0;
  let deepest = 0;
  for (const child of Object.values(value)) {
    deepest = Math.max(deepest, depthOf(child, limit - 1));
    if (deepest >= limit) break;
  }
  return deepest + 1;
}

/** Refuses JSON bodies nested deeper than `limit`, before any validator walks them. */
export function jsonDepthLimit(limit: number): RequestHandler {
  return (req, _res, next) => {
    if (req.body !== null && typeof req.body === 'object' && depthOf(req.body, limit) > limit) {
      next(new DomainError('bad-request', `the JSON body is nested deeper than ${limit} levels`));
      return;
    }
    next();
  };
}

const mutating = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** An audit record for every mutating request that reached an operation, whatever its outcome. */
export function auditTrail(audit: AuditService): RequestHandler {
  return (req, res, next) => {
    if (mutating.has(req.method)) {
      res.on('finish', () => {
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
          ip: req.ip ?? '',
        });
      });
    }
    next();
  };
}
