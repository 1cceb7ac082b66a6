// The contract between the HTTP layer and controllers, typed from generated/: each controller
// function receives the validated input of its operation and returns one of its documented replies.
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { operations } from '../../generated/openapi.js';
import type { OperationId, operationIndex } from '../../generated/operations.js';
import type { Principal } from '../services/principal.js';
import type { MultipartFile } from './multipart.js';
import type { Services } from '../services/index.js';

export type { OperationId };
type Op<K extends OperationId> = operations[K];

type Empty = Record<string, never>;
type Part<T, Where extends string> = Where extends keyof T
  ? [NonNullable<T[Where]>] extends [never]
    ? Empty
    : NonNullable<T[Where]>
  : Empty;

export type PathParams<K extends OperationId> = Part<Op<K>['parameters'], 'path'>;
export type QueryParams<K extends OperationId> = Part<Op<K>['parameters'], 'query'>;
export type RequestBody<K extends OperationId> = [NonNullable<Op<K>['requestBody']>] extends [never]
  ? undefined
  : NonNullable<Op<K>['requestBody']> extends { content: { 'application/json': infer B } }
    ? B
    : never;

type Responses<K extends OperationId> = Op<K>['responses'];
type SuccessStatus<K extends OperationId> = Extract<keyof Responses<K>, 200 | 201 | 202 | 204 | 206>;
type JsonBody<R> = R extends { content: { 'application/json': infer B } } ? B : undefined;

interface ReplyMeta {
  headers?: Record<string, string>;
  /** The representation's version; sets `ETag` and answers 304 to a matching `If-None-Match`. */
  etag?: string;
  /** Sets `Location` (for 201 and 202). */
  location?: string;
  /** A streamed body (Server-Sent Events, followed logs, file content), written as it comes. */
  stream?: AsyncIterable<string | Uint8Array>;
  /** The media type of a streamed body. */
  contentType?: string;
}

/** Whether a response may also be sent in a media type other than JSON (CSV, say). */
type OtherMediaType<R> = R extends { content: infer C }
  ? Exclude<keyof C, 'application/json'> extends never
    ? false
    : true
  : false;

/** One of the operation's documented success responses, with its typed body. */
export type Reply<K extends OperationId> = {
  [S in SuccessStatus<K>]: JsonBody<Responses<K>[S]> extends undefined
    ? { status: S } & ReplyMeta
    : | ({ status: S; body: JsonBody<Responses<K>[S]> } & ReplyMeta)
      | (OtherMediaType<Responses<K>[S]> extends true
          ? { status: S; stream: AsyncIterable<string | Uint8Array>; contentType: string } & ReplyMeta
          : never);
}[SuccessStatus<K>];

export interface OperationInput<K extends OperationId> {
  params: PathParams<K>;
  query: QueryParams<K>;
  body: RequestBody<K>;
  headers: IncomingHttpHeaders;
  /** The request body as it arrives, unread: for uploads (only JSON bodies are parsed in `body`). */
  stream: Readable;
  /** Reads a multipart body: its fields, checked against the operation's form schema, then its file. */
  multipart(): Promise<MultipartFile>;
  /**
   * Checks values a multipart body gave in place of query parameters exactly as the query is
   * checked; `pointers` names where in the body each came from.
   */
  checkAsQuery(values: Record<string, unknown>, pointers: Record<string, string>): void;
}

interface BaseContext {
  services: Services;
  requestId: string;
  log: Logger;
  /** The client's address (X-Forwarded-For is believed only from trusted proxies). */
  clientIp: string;
  /** Where Atrium is reached, for the URLs it gives out (the gateway's): `https://host[:port]`. */
  origin: string;
  /** Aborted when the client goes away or the server shuts down: long waits and streams end then. */
  signal: AbortSignal;
  /**
   * How the reply is made from what the operation creates (the record a service reports with
   * `produced`): for an Idempotency-Key, the answer is then kept in the same transaction as the
   * change, and replayed even if this process dies before it answers.
   */
  answerWith<T>(present: (product: T) => { status: number; body?: unknown } & ReplyMeta): void;
}

export interface PublicContext extends BaseContext {
  principal: Principal | null;
}

export interface AuthenticatedContext extends BaseContext {
  principal: Principal;
}

/** Operations without security get a public context; all others an authenticated one. */
export type ContextOf<K extends OperationId> = (typeof operationIndex)[K]['public'] extends true
  ? PublicContext
  : AuthenticatedContext;

export type Handler<K extends OperationId> = (
  input: OperationInput<K>,
  ctx: ContextOf<K>,
) => Promise<Reply<K>>;

/** What the dispatcher calls: the same function with the types erased. */
export type AnyHandler = (
  input: OperationInput<OperationId>,
  ctx: PublicContext,
) => Promise<{ status: number; body?: unknown } & ReplyMeta>;
