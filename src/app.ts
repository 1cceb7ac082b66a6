// Builds the Express app: middleware, the validator, operation binding and the error handler.
import { readFileSync } from 'node:fs';
import express, { type Express, type Request } from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import type { Database } from './db/database.js';
import { controllers } from './controllers/index.js';
import {
  bindOperations,
  createDispatcher,
  type ApiDocument,
  type ControllerModules,
} from './http/dispatch.js';
import { createGateway, type Gateway } from './http/gateway.js';
import { infraRouter, isInfraPath } from './http/infra.js';
import { locals, openapiMatch } from './http/locals.js';
import { createMetrics } from './http/metrics.js';
import {
  auditTrail,
  cors,
  jsonBodyLimits,
  rateLimit,
  nonFiniteParameters,
  requestContext,
  securityHeaders,
} from './http/middleware.js';
import { notFoundHandler, problemMiddleware } from './http/problem.js';
import { RequestChecks } from './http/request-checks.js';
import { bundledSpecPath } from './paths.js';
import { DomainError } from './errors.js';
import type { Services } from './services/index.js';

const safeMethods = new Set(['GET', 'HEAD']);

export function loadBundledSpec(): ApiDocument & Record<string, unknown> {
  return JSON.parse(readFileSync(bundledSpecPath, 'utf8'));
}

export interface AppDeps {
  config: Config;
  database: Database;
  services: Services;
  log: Logger;
  /** Readiness beyond the database: catalogs loaded, not shutting down. */
  ready: () => Promise<{ ready: boolean; reason?: string }>;
  /** Aborted when the server shuts down: open streams and waits end then. */
  shutdown?: AbortSignal;
  /** The spec and the controllers, replaceable to test binding and to benchmark larger specs. */
  apiDoc?: ApiDocument & Record<string, unknown>;
  controllers?: ControllerModules;
}

interface AppLocals {
  gateway: Gateway;
}

/** The gateway of an app: its `upgrade` listener goes on the HTTP server that serves the app. */
export const gatewayOf = (app: Express): Gateway => (app.locals as AppLocals).gateway;

export function createApp(deps: AppDeps): Express {
  const { config, database, services, log } = deps;
  const apiDoc = deps.apiDoc ?? loadBundledSpec();
  // Refuses to build (and so the server to start) unless spec and controllers agree exactly.
  const operations = bindOperations(apiDoc, deps.controllers ?? controllers);
  const metrics = createMetrics();

  const app = express();
  app.disable('x-powered-by');
  // Our ETags come from row versions; Express's body hashing would cost every response a digest.
  app.set('etag', false);
  app.set('trust proxy', config.server.trustedProxies.length > 0 ? config.server.trustedProxies : false);
  app.set('query parser', 'extended');

  // Every middleware below runs on every request: each is a layer Express walks, so the cheap ones
  // are kept few (make bench-profile shows what a request costs).
  app.use(requestContext(log, metrics.observe));
  // The gateway answers for the services it reaches: their own headers, not the API's policy.
  const gateway = createGateway({
    services,
    settings: config.gateway,
    log,
    observe: metrics.observeGateway,
  });
  (app.locals as AppLocals).gateway = gateway;
  app.use(gateway.handle);
  app.use(securityHeaders);
  if (config.server.corsOrigins.length > 0) app.use(cors(config.server.corsOrigins));
  const infra = infraRouter({ apiDoc, database, metrics: metrics.registry, ready: deps.ready });
  app.use((req, res, next) => (isInfraPath(req.path) ? infra(req, res, next) : next()));

  if (config.server.rateLimit.enabled) app.use(rateLimit(config.server.rateLimit));
  const parseJson = express.json({
    limit: config.server.maxBodyBytes,
    type: ['application/json', 'application/*+json'],
  });
  const limitJson = jsonBodyLimits(config.server.maxJsonDepth);
  app.use((req, res, next) => {
    // A request without a body (most GETs) has nothing to parse.
    if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined)
      return next();
    parseJson(req, res, (error?: unknown) => (error ? next(error) : limitJson(req, res, next)));
  });
  app.use(auditTrail(services.audit));
  app.use(
    OpenApiValidator.middleware({
      apiSpec: structuredClone(apiDoc) as never,
      validateApiSpec: true,
      validateRequests: { allowUnknownQueryParameters: false, coerceTypes: false, allErrors: true },
      validateResponses: config.validateResponses ? { removeAdditional: false } : false,
      validateSecurity: {
        handlers: {
          bearerAuth: async (req: Request) => {
            const res = req.res as express.Response;
            try {
              const principal = await services.authenticator.authenticate(req.headers.authorization);
              const needed = safeMethods.has(req.method) ? 'read' : 'write';
              if (!principal.scopes.includes(needed)) {
                throw new DomainError(
                  'insufficient-scope',
                  `this token's scopes are ${principal.scopes.join(', ')}; ${req.method} needs "${needed}"`,
                );
              }
              locals(res).principal = principal;
              return true;
            } catch (error) {
              locals(res).authError = error;
              throw error;
            }
          },
        },
      },
      ignoreUndocumented: false,
      fileUploader: false,
    }),
  );
  const dispatch = createDispatcher(
    operations,
    services,
    config.gateway.publicUrl,
    deps.shutdown ?? new AbortController().signal,
    new RequestChecks(apiDoc),
  );
  app.use((req, res, next) => {
    if (!openapiMatch(req)) return next();
    // The validator coerces `limit=Infinity` into a number that passes `maximum`: refused here.
    const fault = nonFiniteParameters(req);
    return fault ? next(fault) : dispatch(req, res);
  });
  app.use(notFoundHandler);
  app.use(problemMiddleware);
  return app;
}
