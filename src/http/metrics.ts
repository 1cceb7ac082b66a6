import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import type { GatewayObserver } from './gateway.js';
import { locals, openapiMatch } from './locals.js';
import type { RequestObserver } from './middleware.js';

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

  const gatewayRequests = new Counter({
    name: 'atrium_gateway_requests_total',
    help: 'Requests through the gateway (WebSocket upgrades as status 101), by service, port and status.',
    labelNames: ['project', 'service', 'port', 'status'] as const,
    registers: [registry],
  });
  const gatewayDuration = new Histogram({
    name: 'atrium_gateway_request_duration_seconds',
    help: 'How long requests through the gateway took, by service.',
    labelNames: ['project', 'service'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });

  /** Counts a request once answered (requestContext calls it). */
  const observe: RequestObserver = (req, res, seconds) => {
    const operation =
      openapiMatch(req)?.schema.operationId ??
      (locals(res).gateway ? 'gateway' : req.route ? String(req.route.path) : 'unmatched');
    requests.inc({ operation, method: req.method, status: String(res.statusCode) });
    duration.observe({ operation }, seconds);
  };

  /** Counts a request through the gateway, per service. */
  const observeGateway: GatewayObserver = (target, status, seconds) => {
    gatewayRequests.inc({
      project: target.projectId,
      service: target.serviceId,
      port: target.port,
      status: String(status),
    });
    if (status !== 101)
      gatewayDuration.observe({ project: target.projectId, service: target.serviceId }, seconds);
  };

  return { registry, observe, observeGateway };
}
