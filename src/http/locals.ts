// Per-request state carried on res.locals, typed in one place.
import type { Response } from 'express';
import type { Logger } from 'pino';
import type { Principal } from '../services/principal.js';

interface AtriumLocals {
  requestId: string;
  log: Logger;
  principal?: Principal;
  /** The domain error of a failed authentication, which the validator wraps in its own error. */
  authError?: unknown;
}

export const locals = (res: Response): AtriumLocals => res.locals as AtriumLocals;

/** What express-openapi-validator attaches to a request it has matched to an operation. */
export interface OpenApiMatch {
  openApiRoute: string;
  pathParams: Record<string, unknown>;
  schema: { operationId: string; [key: string]: unknown };
}

export const openapiMatch = (req: object): OpenApiMatch | undefined =>
  (req as { openapi?: OpenApiMatch }).openapi;
