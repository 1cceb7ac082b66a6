// The one error middleware: every error leaves as RFC 9457 application/problem+json.
import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { error as eovErrors } from 'express-openapi-validator';
import { DomainError, problemKinds, problemTypeBase, type FieldError, type ProblemKind } from '../errors.js';
import { locals } from './locals.js';

type EovError = InstanceType<typeof eovErrors.BadRequest>;
// The validator's error classes; its common base class is not exported.
const eovErrorClasses = Object.values(eovErrors);

interface Translated {
  kind: ProblemKind;
  detail: string;
  extensions?: Record<string, unknown>;
  headers?: Record<string, string>;
  errors?: FieldError[];
}

const eovKinds: Record<number, ProblemKind> = {
  400: 'validation',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not-found',
  405: 'method-not-allowed',
  413: 'payload-too-large',
  415: 'unsupported-media-type',
};

const locations: Record<string, FieldError['location']> = {
  body: 'body',
  query: 'query',
  params: 'path',
  path: 'path',
  headers: 'header',
};

/** `/body/name` → {location: body, pointer: /name}. */
function fieldError(error: { path?: string; message: string; errorCode?: string }): FieldError {
  const [, first = '', ...rest] = (error.path ?? '').split('/');
  const location = locations[first] ?? 'body';
  const field: FieldError = { location, message: error.message };
  const pointer = locations[first] ? `/${rest.join('/')}` : error.path;
  if (pointer && pointer !== '/') field.pointer = pointer;
  if (error.errorCode) field.code = error.errorCode.replace(/\.openapi\.validation$/, '');
  return field;
}

function isEovError(error: unknown): error is EovError {
  return eovErrorClasses.some((errorClass) => error instanceof errorClass);
}

function translate(error: unknown, req: Request, res: Response): Translated | null {
  if (error instanceof DomainError) {
    return { kind: error.kind, detail: error.detail, extensions: error.extensions, headers: error.headers };
  }
  if (isEovError(error)) {
    const authError = locals(res).authError;
    if (
      (error.status === 401 || error.status === 403 || error.status >= 500) &&
      authError instanceof DomainError
    ) {
      return translate(authError, req, res);
    }
    const kind = eovKinds[error.status];
    if (kind === 'validation') {
      return { kind, detail: error.message, errors: (error.errors ?? []).map(fieldError) };
    }
    if (kind === 'unauthorized' && !req.headers.authorization) {
      return { kind, detail: 'send an API token as "Authorization: Bearer <token>"' };
    }
    if (kind)
      return {
        kind,
        detail: error.message,
        headers: (error.headers as Record<string, string> | undefined) ?? {},
      };
    // A multipart body the parser could not read is the client's fault, not ours.
    if (/multipart|boundary|unexpected end of form/i.test(error.message)) {
      return { kind: 'bad-request', detail: 'the multipart body is malformed' };
    }
    return null;
  }
  // A write anywhere else on a full disk (a log, a job's directory): the server's lack, not the client's fault.
  const code = (error as { code?: string } | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return {
      kind: 'insufficient-storage',
      detail: 'the server has no room left to keep this; nothing of it was kept',
      headers: { 'Retry-After': '60' },
    };
  }
  // body-parser's errors carry a `type`.
  const bodyError = error as { type?: string; status?: number; limit?: number };
  switch (bodyError.type) {
    case 'entity.too.large':
      return {
        kind: 'payload-too-large',
        detail: `the request body is larger than ${bodyError.limit} bytes`,
      };
    case 'entity.parse.failed':
      return { kind: 'bad-request', detail: 'the request body is not valid JSON' };
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return {
        kind: 'unsupported-media-type',
        detail: 'the request body encoding or charset is not supported',
      };
    case 'request.aborted':
    case 'request.size.invalid':
      return { kind: 'bad-request', detail: 'the request body was cut short' };
    default:
      return null;
  }
}

function bearerChallenge(kind: ProblemKind, detail: string): string {
  const quoted = detail.replace(/["\\]/g, '');
  if (kind === 'insufficient-scope')
    return `Bearer realm="atrium", error="insufficient_scope", error_description="${quoted}"`;
  return `Bearer realm="atrium", error="invalid_token", error_description="${quoted}"`;
}

/**
 * The validator wraps whatever our security handler threw into its own 401; the handler's error,
 * kept on res.locals, is the real cause (a domain error, or an unexpected failure that must be a 500).
 */
function cause(error: unknown, res: Response): unknown {
  const { authError } = locals(res);
  return authError !== undefined && isEovError(error) ? authError : error;
}

export function sendProblem(req: Request, res: Response, thrown: unknown): void {
  const { log, requestId } = locals(res);
  const error = cause(thrown, res);
  const translated = translate(error, req, res);
  const kind: ProblemKind = translated?.kind ?? 'internal';
  const { status, title } = problemKinds[kind];
  const document: Record<string, unknown> = {
    type: `${problemTypeBase}${kind}`,
    title,
    status,
    detail: translated?.detail ?? 'an unexpected error occurred; quote the log_id when reporting it',
    instance: req.originalUrl.split('?')[0],
    request_id: requestId,
    ...(translated?.extensions ?? {}),
  };
  if (translated?.errors?.length) document.errors = translated.errors;
  if (status >= 500) {
    const logId = randomUUID();
    document.log_id = logId;
    // An unexpected failure is an error, with its stack; a known unavailability (a dependency not
    // ready, catalogs still loading) is a warning with its reason.
    if (kind === 'internal') log.error({ err: error, log_id: logId }, 'request failed');
    else log.warn({ log_id: logId, kind, detail: document.detail }, 'request could not be served');
  }
  if (res.headersSent) {
    // A streamed response failed midway: all we can do is end it.
    res.destroy();
    return;
  }
  for (const [name, value] of Object.entries(translated?.headers ?? {})) res.setHeader(name, value);
  // A problem describes one request at one moment: never kept by a cache, and never shared when
  // the request carried credentials.
  res.setHeader('Cache-Control', req.headers.authorization ? 'private, no-store' : 'no-store');
  if (status === 503 && !res.hasHeader('Retry-After')) res.setHeader('Retry-After', '5');
  if (status === 401) {
    res.setHeader(
      'WWW-Authenticate',
      req.headers.authorization ? bearerChallenge(kind, document.detail as string) : 'Bearer realm="atrium"',
    );
  } else if (kind === 'insufficient-scope') {
    res.setHeader('WWW-Authenticate', bearerChallenge(kind, document.detail as string));
  }
  res.status(status).type('application/problem+json').json(document);
}

export function problemMiddleware(error: unknown, req: Request, res: Response, _next: NextFunction): void {
  sendProblem(req, res, error);
}

/** Outside the API base path, unknown URLs get the same problem document. */
export function notFoundHandler(req: Request, res: Response): void {
  sendProblem(req, res, new DomainError('not-found', `nothing at ${req.path}`));
}
