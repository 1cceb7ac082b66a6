// Per-request state carried on res.locals, typed in one place.
import type { Response } from 'express';
import type { Logger } from 'pino';
import type { AuditDraft } from '../services/audit.js';
import type { Principal } from '../services/principal.js';

interface AtriumLocals {
  requestId: string;
  log: Logger;
  /**
   * The client's address, read when the request arrived: once a failed upload has destroyed the
   * socket, `req.ip` throws.
   */
  clientIp: string;
  principal?: Principal;
  /** The domain error of a failed authentication, which the validator wraps in its own error. */
  authError?: unknown;
  /** The request went through the gateway to a service (metrics label it `gateway`). */
  gateway?: boolean;
  /** The audit record of a mutating request that reached its operation. */
  audit?: AuditDraft;
}

export const locals = (res: Response): AtriumLocals => res.locals as AtriumLocals;

/**
 * Runs `work` once the response has been sent. It runs outside any request handler, where a throw
 * would stop the process: whatever goes wrong there is logged, never thrown.
 */
export function afterResponse(res: Response, work: () => void): void {
  res.on('finish', () => {
    try {
      work();
    } catch (err) {
      locals(res).log?.error({ err }, 'work after a response failed');
    }
  });
}

/** What express-openapi-validator attaches to a request it has matched to an operation. */
export interface OpenApiMatch {
  openApiRoute: string;
  pathParams: Record<string, unknown>;
  schema: { operationId: string; [key: string]: unknown };
}

export const openapiMatch = (req: object): OpenApiMatch | undefined =>
  (req as { openapi?: OpenApiMatch }).openapi;
