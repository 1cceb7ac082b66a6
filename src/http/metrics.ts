import type { RequestHandler } from 'express';
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import { afterResponse, openapiMatch } from './locals.js';

/**
 * Prometheus metrics of one app: requests labelled by operationId (never by raw URL, which would
 * make a series per resource id), plus the process's own metrics.
 */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'atrium_' });
  const requests = new Counter({
    name: 'atrium_http_requests_total',
    help: 'HTTP requests by operation, method and status.',
    labelNames: ['operation', 'method', 'status'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'atrium_http_request_duration_seconds',
    help: 'HTTP request duration by operation.',
    labelNames: ['operation'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });

  const middleware: RequestHandler = (req, res, next) => {
    const stop = duration.startTimer();
    afterResponse(res, () => {
      const operation =
        openapiMatch(req)?.schema.operationId ?? (req.route ? String(req.route.path) : 'unmatched');
      requests.inc({ operation, method: req.method, status: String(res.statusCode) });
      stop({ operation });
    });
    next();
  };

  return { registry, middleware };
}
