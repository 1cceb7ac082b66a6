// The Atrium client: openapi-fetch over the spec's generated types, with the helpers the contract
// needs (lists, operations, event streams, files), so that no caller rewrites them.
import createClient, { type Client, type MaybeOptionalInit, type ParseAs } from 'openapi-fetch';
import { parseEventStream } from './event-stream.js';
import type { components, paths } from './generated/openapi.js';
import { AtriumProblem, unwrap, type Operation } from './problem.js';

export type Schemas = components['schemas'];
export type AtriumFile = Schemas['File'];

/** The spec's `servers[0].url`: every path of the spec lives under it. */
export const apiBasePath = '/api/v1';

export interface AtriumClientOptions {
  /** Atrium's URL, for example `http://127.0.0.1:8080` (the API is under `/api/v1` there). */
  baseUrl: string;
  /** An Atrium API token (`atr_…`) or an OIDC access token; public endpoints need none. */
  token?: string;
  /** Another fetch (a proxy-aware one, a test's); defaults to the global fetch. */
  fetch?: (input: Request) => Promise<Response>;
}

type JsonOk<P extends keyof paths> = paths[P] extends {
  get: { responses: { 200: { content: { 'application/json': infer Body } } } };
}
  ? Body
  : never;

/** The paths whose GET answers a page: `{items, next_cursor}`. */
export type ListPath = {
  [P in keyof paths]: JsonOk<P> extends { items: unknown[]; next_cursor: string | null } ? P : never;
}[keyof paths];

export type ListItem<P extends ListPath> = JsonOk<P> extends { items: (infer Item)[] } ? Item : never;

/** The paths whose GET answers Server-Sent Events (an operation's, a service's, a run's). */
export type EventStreamPath = {
  [P in keyof paths]: paths[P] extends {
    get: { responses: { 200: { content: { 'text/event-stream': unknown } } } };
  }
    ? P
    : never;
}[keyof paths];

type GetInit<P extends keyof paths> = MaybeOptionalInit<paths[P], 'get'>;
/** The init argument: optional when the path needs no parameters, required when it does. */
type InitArgs<Init> = undefined extends Init ? [init?: Init] : [init: Init];

/** The `data` of every Atrium event (spec/components/schemas/EventStream.yaml). */
export interface AtriumEventData {
  seq: number;
  at: string;
  type: string;
  message: string | null;
  data?: Record<string, unknown>;
}

export interface AtriumEvent {
  /** Its sequence number, as sent (`Last-Event-ID` resumes after it). */
  id: string;
  /** Its type: `admitted`, `running`, `progress`, `done` … */
  event: string;
  data: AtriumEventData;
}

export interface EventsOptions<P extends EventStreamPath> {
  params: NonNullable<GetInit<P>>['params'];
  /** Start after this event id (as a reconnecting EventSource would). */
  lastEventId?: string;
  /** Keep following new events (the default), or end after the stored ones. */
  follow?: boolean;
  signal?: AbortSignal;
  /** Reconnections in a row without a new event before giving up (default 5). */
  maxRetries?: number;
}

export interface WaitForOperationOptions {
  /** How long to wait in all (default 5 minutes); then an OperationTimeoutError. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** The least time between two requests, when the server does not hold them (default 500 ms). */
  pollIntervalMs?: number;
}

export interface UploadFileOptions {
  name: string;
  /** Guessed by the server from the name when left out. */
  mediaType?: string;
  tags?: string[];
  /** A file of the project this one derives from. */
  parentId?: string;
  signal?: AbortSignal;
}

export interface AtriumHelpers {
  /** Every item of a list, page after page (following `next_cursor`). */
  paginate<P extends ListPath>(path: P, ...init: InitArgs<GetInit<P>>): AsyncGenerator<ListItem<P>>;
  /**
   * The operation once it is done: resolves when it succeeded, throws its problem (an AtriumProblem
   * with `operation` set) when it failed or was cancelled.
   */
  waitForOperation(operation: string | Operation, options?: WaitForOperationOptions): Promise<Operation>;
  /** The events of a stream, resuming with `Last-Event-ID` when the connection drops. */
  events<P extends EventStreamPath>(path: P, options: EventsOptions<P>): AsyncGenerator<AtriumEvent>;
  /** Streams content into a project (raw `application/octet-stream`, the name in the query). */
  uploadFile(
    projectId: string,
    body: Blob | ReadableStream<Uint8Array> | Uint8Array,
    options: UploadFileOptions,
  ): Promise<AtriumFile>;
  /** A file's content as a stream. */
  downloadFile(
    projectId: string,
    fileId: string,
    options?: { signal?: AbortSignal },
  ): Promise<ReadableStream<Uint8Array>>;
}

export type AtriumClient = Client<paths> & AtriumHelpers;

export class OperationTimeoutError extends Error {
  override readonly name = 'OperationTimeoutError';
  constructor(
    readonly operation: Operation | null,
    readonly timeoutMs: number,
  ) {
    super(`operation ${operation?.id ?? ''} was not done after ${timeoutMs} ms`);
  }
}

// The server holds `Prefer: wait` for at most 60 s; asking for less keeps each request well under
// the idle timeouts of proxies in between.
const maxPreferWaitSeconds = 30;
// A list longer than this is a server that keeps answering a cursor: stop rather than loop forever.
const maxPages = 100_000;
const maxRetryDelayMs = 10_000;

/** What the helpers need of openapi-fetch's GET, for a path chosen at run time. */
interface LooseInit {
  params?: {
    path?: Record<string, unknown>;
    query?: Record<string, unknown>;
    header?: Record<string, unknown>;
  };
  parseAs?: ParseAs;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}
type LooseGet = (
  path: string,
  init: LooseInit,
) => Promise<{ data?: unknown; error?: unknown; response: Response }>;

export function createAtriumClient(options: AtriumClientOptions): AtriumClient {
  const root = options.baseUrl.replace(/\/+$/, '');
  const api = createClient<paths>({
    baseUrl: root.endsWith(apiBasePath) ? root : `${root}${apiBasePath}`,
    headers: options.token ? { Authorization: `Bearer ${options.token}` } : {},
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  // The typed GET cannot be called with a path that is a type parameter; the helpers' own
  // signatures carry the types, this carries the request.
  const get = api.GET as unknown as LooseGet;

  async function* paginate<P extends ListPath>(
    path: P,
    ...[init]: InitArgs<GetInit<P>>
  ): AsyncGenerator<ListItem<P>> {
    const first = (init ?? {}) as LooseInit;
    let cursor = first.params?.query?.cursor;
    for (let page = 0; page < maxPages; page++) {
      const query = { ...first.params?.query, cursor };
      const { data, error, response } = await get(path, { ...first, params: { ...first.params, query } });
      if (!response.ok) throw AtriumProblem.fromResponse(error, response);
      const list = data as { items: ListItem<P>[]; next_cursor: string | null };
      yield* list.items;
      if (!list.next_cursor) return;
      cursor = list.next_cursor;
    }
    throw new Error(`${path}: more than ${maxPages} pages`);
  }

  async function waitForOperation(
    operation: string | Operation,
    { timeoutMs = 300_000, signal, pollIntervalMs = 500 }: WaitForOperationOptions = {},
  ): Promise<Operation> {
    let last = typeof operation === 'string' ? null : operation;
    const operationId = typeof operation === 'string' ? operation : operation.id;
    const deadline = Date.now() + timeoutMs;
    const intervalMs = Math.max(100, pollIntervalMs);
    // Each round lasts at least intervalMs, so the deadline bounds the count too.
    for (let round = 0; round <= timeoutMs / intervalMs + 1; round++) {
      if (last?.done) return settled(last);
      signal?.throwIfAborted();
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) break;
      const started = Date.now();
      const waitSeconds = Math.min(maxPreferWaitSeconds, Math.floor(remainingMs / 1000));
      const timeout = AbortSignal.timeout(remainingMs + 5_000);
      last = unwrap(
        await api.GET('/operations/{operationId}', {
          params: {
            path: { operationId },
            header: waitSeconds > 0 ? { Prefer: `wait=${waitSeconds}` } : {},
          },
          signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
        }),
      );
      if (!last.done)
        await delay(Math.min(intervalMs - (Date.now() - started), deadline - Date.now()), signal);
    }
    if (last?.done) return settled(last);
    throw new OperationTimeoutError(last, timeoutMs);
  }

  async function* events<P extends EventStreamPath>(
    path: P,
    { params, lastEventId, follow, signal, maxRetries = 5 }: EventsOptions<P>,
  ): AsyncGenerator<AtriumEvent> {
    const base = params as NonNullable<LooseInit['params']>;
    let resumeAfter = lastEventId;
    let retryDelayMs = 500;
    // Counts connections in a row that brought no event; an event resets it.
    for (let failures = 0; failures <= maxRetries;) {
      signal?.throwIfAborted();
      try {
        const { data, error, response } = await get(path, {
          params: {
            ...base,
            query: { ...base.query, ...(follow === undefined ? {} : { follow }) },
            header: resumeAfter === undefined ? {} : { 'Last-Event-ID': resumeAfter },
          },
          headers: { Accept: 'text/event-stream' },
          parseAs: 'stream',
          ...(signal ? { signal } : {}),
        });
        if (!response.ok) throw AtriumProblem.fromResponse(error, response);
        if (!data) return;
        const stream = parseEventStream(data as ReadableStream<Uint8Array>, {
          ...(resumeAfter === undefined ? {} : { lastEventId: resumeAfter }),
          onRetry: (ms) => (retryDelayMs = Math.min(ms, maxRetryDelayMs)),
        });
        for await (const raw of stream) {
          resumeAfter = raw.id;
          failures = 0;
          yield { id: raw.id, event: raw.event, data: JSON.parse(raw.data) as AtriumEventData };
        }
        // The server closed the stream: the operation is done, the service deleted, or `follow=false`.
        return;
      } catch (error) {
        // A problem is the server's answer, an abort the caller's wish, a SyntaxError an event whose
        // data is not JSON: none of them is a dropped connection, and reconnecting would not help.
        const final = error instanceof AtriumProblem || error instanceof SyntaxError || signal?.aborted;
        if (final || failures >= maxRetries) throw error;
        failures++;
        await delay(retryDelayMs * failures, signal);
      }
    }
  }

  async function uploadFile(
    projectId: string,
    body: Blob | ReadableStream<Uint8Array> | Uint8Array,
    { name, mediaType, tags, parentId, signal }: UploadFileOptions,
  ): Promise<AtriumFile> {
    return unwrap(
      await api.POST('/projects/{projectId}/files', {
        params: {
          path: { projectId },
          query: { name, media_type: mediaType, tag: tags, parent_id: parentId },
        },
        // The spec's binary body is typed as a string; fetch sends a Blob, a stream or bytes as they are.
        body: body as unknown as string,
        bodySerializer: (content: unknown) => content,
        headers: { 'Content-Type': 'application/octet-stream' },
        // fetch sends a stream body only half-duplex (and asks to be told so).
        duplex: 'half',
        ...(signal ? { signal } : {}),
      }),
    );
  }

  async function downloadFile(
    projectId: string,
    fileId: string,
    { signal }: { signal?: AbortSignal } = {},
  ): Promise<ReadableStream<Uint8Array>> {
    const { data, error, response } = await api.GET('/projects/{projectId}/files/{fileId}/content', {
      params: { path: { projectId, fileId } },
      parseAs: 'stream',
      ...(signal ? { signal } : {}),
    });
    if (!response.ok) throw AtriumProblem.fromResponse(error, response);
    // openapi-fetch answers no body for an empty file (Content-Length: 0).
    return data ?? new Blob([]).stream();
  }

  const helpers: AtriumHelpers = { paginate, waitForOperation, events, uploadFile, downloadFile };
  return Object.assign(api, helpers);
}

function settled(operation: Operation): Operation {
  if (operation.status === 'succeeded') return operation;
  throw new AtriumProblem(
    operation.error ?? {
      type: 'about:blank',
      title: `Operation ${operation.status}`,
      status: 500,
      ...(operation.message ? { detail: operation.message } : {}),
    },
    operation,
  );
}

/** Waits `ms` (nothing when it is not positive), or less when `signal` aborts. */
function delay(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
