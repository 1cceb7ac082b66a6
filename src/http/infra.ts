// Endpoints outside the API base path: liveness, readiness, metrics, the spec and its docs.
import express, { type Router } from 'express';
import type { Database } from '../services/model.js';
import swaggerUiDist from 'swagger-ui-dist';
import type { Registry } from 'prom-client';
import { DomainError } from '../errors.js';
import { sendProblem } from './problem.js';

const docsPage = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Atrium API</title>
  <link rel="stylesheet" href="swagger-ui.css">
  <link rel="icon" type="image/png" href="favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="swagger-ui-bundle.js"></script>
  <script src="swagger-ui-standalone-preset.js"></script>
  <script src="atrium-docs.js"></script>
</body>
</html>
`;

const docsScript = `window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  persistAuthorization: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: 'StandaloneLayout',
});
`;

// Swagger UI needs its own scripts, styles and data: images; nothing from elsewhere.
const docsPolicy =
  "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";

export interface InfraDeps {
  apiDoc: object;
  database: Database;
  metrics: Registry;
  /** Ready to serve: migrated, catalogs loaded, not shutting down. */
  ready: () => Promise<{ ready: boolean; reason?: string }>;
}

const infraPaths = new Set(['/healthz', '/readyz', '/metrics', '/openapi.json', '/docs']);

/** Whether infraRouter answers `path` (the API's requests skip it). */
export function isInfraPath(path: string): boolean {
  return infraPaths.has(path) || path.startsWith('/docs/');
}

export function infraRouter({ apiDoc, database, metrics, ready }: InfraDeps): Router {
  const router = express.Router();
  const specText = JSON.stringify(apiDoc);

  router.get('/healthz', (_req, res) => {
    res.set('Cache-Control', 'no-store').json({ status: 'ok' });
  });

  router.get('/readyz', async (req, res) => {
    let state: { ready: boolean; reason?: string };
    try {
      await database.knex.raw('select 1');
      state = await ready();
    } catch {
      state = { ready: false, reason: 'the database does not answer' };
    }
    res.set('Cache-Control', 'no-store');
    if (state.ready) res.json({ status: 'ready' });
    else
      sendProblem(
        req,
        res,
        new DomainError('unavailable', state.reason ?? 'not ready', {}, { 'Retry-After': '1' }),
      );
  });

  router.get('/metrics', async (_req, res) => {
    res.set('Content-Type', metrics.contentType).send(await metrics.metrics());
  });

  router.get('/openapi.json', (_req, res) => {
    res.set('Cache-Control', 'no-cache').type('application/json').send(specText);
  });

  router.get('/docs', (req, res, next) => {
    if (req.originalUrl.endsWith('/')) return next();
    res.redirect(301, '/docs/');
  });
  router.get('/docs/', (_req, res) => {
    res.set('Content-Security-Policy', docsPolicy).type('html').send(docsPage);
  });
  router.get('/docs/atrium-docs.js', (_req, res) => {
    res.type('application/javascript').send(docsScript);
  });
  router.use(
    '/docs',
    (_req, res, next) => {
      res.set('Content-Security-Policy', docsPolicy);
      next();
    },
    express.static(swaggerUiDist.getAbsoluteFSPath(), { index: false, maxAge: '1h' }),
  );
  return router;
}
