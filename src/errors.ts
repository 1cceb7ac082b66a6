// The closed set of errors the domain raises. Each kind has one status and one stable problem type;
// the error middleware (src/http/problem.ts) is the only place that turns them into responses.

export const problemKinds = {
  validation: { status: 400, title: 'The request does not match the API contract' },
  'bad-request': { status: 400, title: 'Bad request' },
  'invalid-cursor': { status: 400, title: 'Invalid pagination cursor' },
  unauthorized: { status: 401, title: 'Authentication required' },
  forbidden: { status: 403, title: 'Not allowed' },
  'insufficient-scope': { status: 403, title: 'The token lacks the required scope' },
  'not-found': { status: 404, title: 'Not found' },
  'method-not-allowed': { status: 405, title: 'Method not allowed' },
  conflict: { status: 409, title: 'Conflict with the current state' },
  'idempotency-in-progress': { status: 409, title: 'A request with this Idempotency-Key is in progress' },
  'quota-exceeded': { status: 409, title: "The project's quota has no room for this" },
  'precondition-failed': { status: 412, title: 'The resource has changed' },
  'payload-too-large': { status: 413, title: 'Request body too large' },
  'unsupported-media-type': { status: 415, title: 'Unsupported media type' },
  'range-not-satisfiable': { status: 416, title: 'The requested range is outside the content' },
  'idempotency-key-reuse': { status: 422, title: 'Idempotency-Key reused with a different request' },
  unprocessable: { status: 422, title: 'The request cannot be carried out' },
  'rate-limited': { status: 429, title: 'Too many requests' },
  internal: { status: 500, title: 'Internal error' },
  'bad-gateway': { status: 502, title: 'The service did not answer' },
  unavailable: { status: 503, title: 'Service unavailable' },
  'gateway-timeout': { status: 504, title: 'The service took too long to answer' },
  'insufficient-storage': { status: 507, title: 'Not enough storage to keep this' },
} as const;

export type ProblemKind = keyof typeof problemKinds;

// The kinds of failure only operations report (in their `error`), never a response; their status
// is what the request would have answered had it waited for the outcome.
export const operationProblemKinds = {
  'launch-failed': { status: 502, title: 'The service could not start' },
  cancelled: { status: 409, title: 'The operation was cancelled' },
  'task-failed': { status: 422, title: 'A task of the run failed' },
} as const;

export type OperationProblemKind = keyof typeof operationProblemKinds;
export const problemTypeBase = 'https://atrium.dev/problems/';

export interface FieldError {
  location: 'body' | 'query' | 'path' | 'header';
  pointer?: string;
  message: string;
  code?: string;
}

export class DomainError extends Error {
  override name = 'DomainError';
  constructor(
    readonly kind: ProblemKind,
    readonly detail: string,
    /** Extra members of the problem document (RFC 9457 extensions). */
    readonly extensions: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(detail);
  }

  get status(): number {
    return problemKinds[this.kind].status;
  }
}

export const notFound = (what: string, id: string) =>
  new DomainError('not-found', `${what} "${id}" does not exist`);
export const forbidden = (detail: string) => new DomainError('forbidden', detail);
export const conflict = (detail: string) => new DomainError('conflict', detail);
export const unprocessable = (detail: string) => new DomainError('unprocessable', detail);
export const unauthorized = (detail: string) => new DomainError('unauthorized', detail);
export const preconditionFailed = (what: string) =>
  new DomainError('precondition-failed', `${what} has changed since the version in If-Match; fetch it again`);
