// Binding operations to controllers (the custom resolver) and running them (the dispatcher).
import type { Request, Response } from 'express';
import { withChangeRecords, type ChangeRecord } from '../services/changes.js';
import type { Services } from '../services/index.js';
import { IdempotencyService } from '../services/idempotency.js';
import type { AnyHandler, PublicContext } from './operation.js';
import { locals, openapiMatch } from './locals.js';
import { readMultipartFile } from './multipart.js';
import type { RequestChecks } from './request-checks.js';
import { methods, type ApiDocument, type ParameterObject, type ParameterOrRef } from './spec-document.js';

export type { ApiDocument } from './spec-document.js';

export interface SpecOperation {
  operationId: string;
  controller: string;
  method: (typeof methods)[number];
  path: string;
  public: boolean;
  idempotencyKey: boolean;
  /** The status it answers when it succeeds (its first documented 2xx). */
  successStatus: number;
}

/** Every operation of a (bundled) spec, with what binding and dispatch need to know of it. */
export function specOperations(apiDoc: ApiDocument): SpecOperation[] {
  const parameters = apiDoc.components?.parameters ?? {};
  const resolve = (p: ParameterOrRef): ParameterObject | undefined =>
    '$ref' in p ? parameters[p.$ref.split('/').pop() as string] : p;
  const result: SpecOperation[] = [];
  for (const [path, item] of Object.entries(apiDoc.paths ?? {})) {
    for (const method of methods) {
      const op = item[method];
      if (!op) continue;
      const security = op.security ?? apiDoc.security ?? [];
      const params = [...(item.parameters ?? []), ...(op.parameters ?? [])].map(resolve);
      result.push({
        operationId: op.operationId ?? '',
        controller: op['x-controller'] ?? '',
        method,
        path,
        public: !security.some((requirement) => Object.keys(requirement).length > 0),
        idempotencyKey: params.some((p) => p?.in === 'header' && p.name === 'Idempotency-Key'),
        successStatus: Number(Object.keys(op.responses ?? {}).find((code) => /^2\d\d$/.test(code)) ?? 200),
      });
    }
  }
  return result;
}

export class BindingError extends Error {
  override name = 'BindingError';
  constructor(readonly problems: string[]) {
    super(`the spec and the controllers disagree:\n  ${problems.join('\n  ')}`);
  }
}

export interface BoundOperation extends SpecOperation {
  handler: AnyHandler;
}

export type ControllerModules = Record<string, Record<string, unknown>>;

/**
 * The custom resolver: binds each operationId to the function of that name exported by the module
 * its `x-controller` names. Refuses (throws) unless every operation has a handler and every handler
 * an operation, so the app cannot start half-bound.
 */
export function bindOperations(
  apiDoc: ApiDocument,
  controllers: ControllerModules,
): Map<string, BoundOperation> {
  const problems: string[] = [];
  const bound = new Map<string, BoundOperation>();
  const operations = specOperations(apiDoc);
  for (const op of operations) {
    const handler = controllers[op.controller]?.[op.operationId];
    if (!op.operationId || !op.controller) {
      problems.push(`${op.method.toUpperCase()} ${op.path} lacks an operationId or an x-controller`);
    } else if (typeof handler !== 'function') {
      problems.push(
        `${op.operationId} (${op.method.toUpperCase()} ${op.path}) has no handler: src/controllers/${op.controller}.ts must export ${op.operationId}`,
      );
    } else if (bound.has(op.operationId)) {
      problems.push(`operationId ${op.operationId} is used twice`);
    } else {
      bound.set(op.operationId, { ...op, handler: handler as AnyHandler });
    }
  }
  for (const [controller, module] of Object.entries(controllers)) {
    for (const [name, value] of Object.entries(module)) {
      if (typeof value !== 'function') continue;
      const op = bound.get(name);
      if (!op || op.controller !== controller) {
        problems.push(
          `src/controllers/${controller}.ts exports ${name}, but no operation with x-controller ${controller} has that operationId`,
        );
      }
    }
  }
  if (problems.length > 0) throw new BindingError(problems);
  return bound;
}

const safeMethods = new Set(['GET', 'HEAD']);
const mutating = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** `Link: <…>; rel="next"`: the request's own URL with the next cursor. */
function nextLink(req: Request, cursor: string): string {
  const url = new URL(req.originalUrl, 'http://atrium.invalid');
  url.searchParams.set('cursor', cursor);
  return `<${url.pathname}${url.search}>; rel="next"`;
}

function etagMatches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(',').some((tag) => {
    const t = tag.trim();
    return t === '*' || t.replace(/^W\//, '') === etag;
  });
}

/** Writes a streamed body as it comes, minding backpressure; ends it when the stream does. */
async function writeStream(
  res: Response,
  stream: AsyncIterable<string | Uint8Array>,
  signal: AbortSignal,
): Promise<void> {
  res.flushHeaders();
  for await (const chunk of stream) {
    if (signal.aborted) break;
    // A client that went away never drains: its close ends the wait as well.
    if (!res.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.once('drain', done);
        res.once('close', done);
      });
    }
  }
  res.end();
}

type AnyReply = Awaited<ReturnType<AnyHandler>>;

/** The headers every reply of `op` carries, besides its own. */
function replyHeaders(op: BoundOperation, req: Request, reply: AnyReply): Record<string, string> {
  const headers: Record<string, string> = { ...reply.headers };
  headers['Cache-Control'] = op.public ? 'no-cache' : 'private, no-store';
  if (reply.etag) headers.ETag = reply.etag;
  if (reply.location) headers.Location = reply.location;
  const cursor = (reply.body as { next_cursor?: unknown } | undefined)?.next_cursor;
  if (typeof cursor === 'string') headers.Link = nextLink(req, cursor);
  return headers;
}

/** A reply as kept for an Idempotency-Key's replays. */
function stored(reply: AnyReply, headers: Record<string, string>) {
  return {
    status: reply.status,
    headers,
    body: reply.body === undefined ? null : JSON.stringify(reply.body),
  };
}

/** Runs the controller of the matched operation and writes its reply. */
export function createDispatcher(
  operations: Map<string, BoundOperation>,
  services: Services,
  /** The origin of gateway URLs; each request's own when null. */
  publicUrl: string | null,
  shutdown: AbortSignal,
  checks: RequestChecks,
) {
  return async function dispatch(req: Request, res: Response): Promise<void> {
    const match = openapiMatch(req);
    const op = match ? operations.get(match.schema.operationId) : undefined;
    if (!match || !op) throw new Error(`no operation bound for ${req.method} ${req.path}`);
    const { requestId, log, principal } = locals(res);
    // Ends waits and streams when the client goes away, or the server stops; made only for the
    // operations that wait or stream (most never ask for it).
    let signal: AbortSignal | undefined;
    const signalOf = () => {
      if (!signal) {
        const aborter = new AbortController();
        res.once('close', () => aborter.abort());
        signal = AbortSignal.any([aborter.signal, shutdown]);
      }
      return signal;
    };
    const ctx: PublicContext = {
      services,
      requestId,
      log,
      principal: principal ?? null,
      clientIp: locals(res).clientIp,
      get origin() {
        return publicUrl?.replace(/\/+$/, '') ?? `${req.protocol}://${req.get('host') ?? 'localhost'}`;
      },
      get signal() {
        return signalOf();
      },
      answerWith: () => undefined,
    };
    const input = {
      params: match.pathParams,
      query: req.query,
      body: req.body,
      headers: req.headers,
      stream: req,
      multipart: () =>
        readMultipartFile(req, req.headers, (fields) => checks.multipartFields(op.operationId, fields)),
      checkAsQuery: (values: Record<string, unknown>, pointers: Record<string, string>) =>
        checks.asQueryParameters(op.operationId, values, pointers),
    } as unknown as Parameters<AnyHandler>[0];

    const key = op.idempotencyKey && principal ? req.get('Idempotency-Key') : undefined;
    if (key && principal) {
      const fingerprint = IdempotencyService.fingerprint(op.operationId, req.path, req.body);
      const decision = await services.idempotency.begin(principal.user.id, key, fingerprint);
      if (decision.kind === 'replay') {
        const { status, headers, body } = decision.response;
        res.status(status).set(headers).set('Idempotent-Replayed', 'true');
        if (body === null) res.end();
        else res.type('application/json').send(body);
        return;
      }
    }

    // Written with the request's first change, in its transaction (services/changes.ts): the
    // audit record of a mutating request, and the answer of a create with an Idempotency-Key.
    const draft =
      mutating.has(req.method) && principal
        ? services.audit.begin({
            requestId,
            userId: principal.user.id,
            operationId: op.operationId,
            method: req.method,
            path: req.originalUrl.split('?')[0] as string,
            status: op.successStatus,
            projectId: typeof match.pathParams.projectId === 'string' ? match.pathParams.projectId : null,
            ip: ctx.clientIp,
          })
        : null;
    if (draft) locals(res).audit = draft;
    let present: ((product: never) => AnyReply) | null = null;
    ctx.answerWith = (answer) => {
      present = answer as (product: never) => AnyReply;
    };
    const records = (product: unknown): ChangeRecord[] => {
      const rows = draft ? draft.records() : [];
      if (key && principal && present && product !== undefined) {
        const answer = (present as (product: unknown) => AnyReply)(product);
        rows.push(
          services.idempotency.answerRecord(
            principal.user.id,
            key,
            stored(answer, replyHeaders(op, req, answer)),
          ),
        );
      }
      return rows;
    };
    let reply;
    try {
      reply =
        draft || key
          ? await withChangeRecords(
              records,
              () => op.handler(input, ctx),
              (written) => {
                if (draft) draft.written = written;
              },
            )
          : await op.handler(input, ctx);
    } catch (error) {
      if (key && principal) await services.idempotency.abandon(principal.user.id, key);
      throw error;
    }

    const headers = replyHeaders(op, req, reply);
    const body = 'body' in reply ? reply.body : undefined;
    res.set(headers);

    if (key && principal) await services.idempotency.complete(principal.user.id, key, stored(reply, headers));
    if (reply.etag && safeMethods.has(req.method) && etagMatches(req.get('If-None-Match'), reply.etag)) {
      // Not modified: a stream prepared for the body is never read.
      const unread = reply.stream as { destroy?: () => void } | undefined;
      unread?.destroy?.();
      res.status(304).end();
    } else if (reply.stream) {
      res.status(reply.status).type(reply.contentType ?? 'text/plain');
      if (reply.contentType === 'text/event-stream')
        res.set({ 'Cache-Control': 'no-cache', 'X-Accel-Buffering': 'no' });
      await writeStream(res, reply.stream, signalOf());
    } else if (body === undefined) {
      res.status(reply.status).end();
    } else {
      res.status(reply.status).json(body);
    }
  };
}
