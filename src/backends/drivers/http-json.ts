// The `http-json` driver: a service function is a method and a path on one of the service's http
// ports. `{name}` in the path takes that field of the input; the other fields are the JSON body (the
// query string, for GET and DELETE). A 2xx answer's JSON is the result.
import type { ServiceFunctionSpec } from '../catalog/manifest.js';
import type { PortReach } from '../cluster/types.js';

/** Why a call did not give a result: the service could not be reached, said no, or took too long. */
export class DriverError extends Error {
  override name = 'DriverError';
  constructor(
    readonly reason: 'unreachable' | 'timeout' | 'refused' | 'bad-answer',
    message: string,
    /** The service's HTTP status and answer, when it answered. */
    readonly answer: { status: number; body: unknown } | null = null,
  ) {
    super(message);
  }

  /** Whether trying again may help (never a 4xx: the same input would be refused again). */
  get retriable(): boolean {
    return this.reason === 'unreachable' || this.reason === 'timeout' || (this.answer?.status ?? 0) >= 500;
  }
}

/** What a driver may read of the project the called service is in. */
export interface DriverContext {
  /** The content of a file of the project, at most `maxBytes` (a DriverError 'refused' otherwise). */
  readFile(fileId: string, maxBytes: number): Promise<Buffer>;
}

export interface NativeDriver {
  name: string;
  version: string;
  description: string;
  /** The scope whose standard functions it performs (null: any function a manifest declares). */
  scope: 'db' | 'ai' | null;
  /** The standard functions of its scope (none for a driver of declared functions). */
  functions: string[];
  /** Performs the function on the service's port as its backend reaches it; rejects with a DriverError. */
  call(fn: ServiceFunctionSpec, input: unknown, target: PortReach, signal: AbortSignal): Promise<unknown>;
  /** Turns a call's input into what is sent (reading files of the project, say), before `call`. */
  prepare?(fn: ServiceFunctionSpec, input: unknown, ctx: DriverContext): Promise<unknown>;
}

const maxAnswerBytes = 10 * 1024 * 1024;

function request(
  fn: ServiceFunctionSpec,
  input: unknown,
  baseUrl: string,
): { url: URL; body: string | null } {
  const fields =
    input !== null && typeof input === 'object' && !Array.isArray(input)
      ? { ...(input as Record<string, unknown>) }
      : {};
  const path = fn.http.path.replace(/\{([^}]+)\}/g, (_m, name: string) => {
    const value = fields[name];
    delete fields[name];
    const segment = encodeURIComponent(typeof value === 'string' ? value : JSON.stringify(value ?? ''));
    // `.` and `..` (however encoded) are resolved away by URLs: they would reach another path.
    if (/^(\.|%2e){1,2}$/i.test(segment)) {
      throw new DriverError('refused', `${name} may not be "${String(value)}" (a path segment)`, {
        status: 400,
        body: { error: `${name} may not be "${String(value)}"` },
      });
    }
    return segment;
  });
  const url = new URL(`${baseUrl.replace(/\/$/, '')}${path}`);
  if (fn.http.method === 'GET' || fn.http.method === 'DELETE') {
    for (const [name, value] of Object.entries(fields)) {
      url.searchParams.set(name, typeof value === 'string' ? value : JSON.stringify(value));
    }
    return { url, body: null };
  }
  const isObject = input !== null && typeof input === 'object' && !Array.isArray(input);
  const body = fn.http.body !== undefined ? fields[fn.http.body] : isObject ? fields : input;
  return { url, body: JSON.stringify(body ?? null) };
}

/**
 * Reads a body, at most `maxBytes` of it: past that a DriverError 'bad-answer', the rest left
 * unread (a service answering without end cannot fill Atrium's memory).
 */
export async function readBounded(res: Response, maxBytes: number): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  // Each read gives at least one byte: the loop ends by the size cap, or by the caller's signal.
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new DriverError('bad-answer', `the answer is larger than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A JSON answer, parsed (null when empty); the text, trimmed, of a failure that is not JSON. */
export async function readAnswer(res: Response, maxBytes = maxAnswerBytes): Promise<unknown> {
  const text = await readBounded(res, maxBytes);
  if (text.trim() === '') return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    if (res.ok)
      throw new DriverError('bad-answer', 'the service answered with something that is not JSON', {
        status: res.status,
        body: text.slice(0, 2000),
      });
    return text.slice(0, 2000);
  }
}

/**
 * One HTTP exchange of a driver with what performs a function: the status and the JSON answer, or
 * a DriverError — 'unreachable' when nothing answered, 'timeout' once `signal` aborted (before or
 * while the answer was read). Redirects are not followed: they are answers (never another address).
 */
export async function exchange(
  url: URL,
  init: { method: string; body: string | null },
  signal: AbortSignal,
  what: string,
  /** What the backend's way in needs (its credentials and TLS), for a service's port. */
  via: Pick<PortReach, 'headers' | 'dispatcher'> = { headers: {} },
): Promise<{ status: number; ok: boolean; body: unknown }> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: init.method,
      ...(via.dispatcher ? { dispatcher: via.dispatcher } : {}),
      headers: {
        ...via.headers,
        Accept: 'application/json',
        ...(init.body === null ? {} : { 'Content-Type': 'application/json' }),
      },
      body: init.body,
      signal,
      redirect: 'manual',
    });
  } catch (error) {
    if (signal.aborted) throw new DriverError('timeout', `${what} did not answer in time`);
    const code = (error as { cause?: { code?: string } }).cause?.code;
    throw new DriverError(
      'unreachable',
      `the service could not be reached (${code ?? (error as Error).message})`,
    );
  }
  try {
    return { status: res.status, ok: res.ok, body: await readAnswer(res) };
  } catch (error) {
    if (signal.aborted) throw new DriverError('timeout', `${what} did not answer in time`);
    throw error;
  }
}

export const httpJsonDriver: NativeDriver = {
  name: 'http-json',
  version: '1.0.0',
  scope: null,
  functions: [],
  description: 'A function is a method and a path on an http port of the service: JSON in, JSON out.',
  async call(fn, input, target, signal) {
    const { url, body } = request(fn, input, target.url);
    const answer = await exchange(url, { method: fn.http.method, body }, signal, fn.name, target);
    if (answer.status >= 300 && answer.status < 400) {
      // Not the service refusing the input: it sends the call elsewhere, where a driver never goes.
      throw new DriverError(
        'bad-answer',
        `${fn.name}: the service answered a redirect (${answer.status}), which drivers do not follow`,
      );
    }
    if (!answer.ok) {
      throw new DriverError('refused', `${fn.name}: the service answered ${answer.status}`, {
        status: answer.status,
        body: answer.body,
      });
    }
    return answer.body;
  },
};

/** Whether the service answers on its port (its health path, or the port's root). */
export async function ping(
  to: string | PortReach,
  path: string,
  signal: AbortSignal,
): Promise<{ status: number }> {
  const target = typeof to === 'string' ? { url: to, headers: {}, dispatcher: undefined } : to;
  try {
    // Under the port's root, which may have a path of its own (an API server's service proxy).
    const url = new URL(path.replace(/^\/+/, ''), `${target.url.replace(/\/$/, '')}/`);
    const res = await fetch(url, {
      signal,
      redirect: 'manual',
      headers: target.headers,
      ...(target.dispatcher ? { dispatcher: target.dispatcher } : {}),
    });
    await res.body?.cancel();
    return { status: res.status };
  } catch (error) {
    if (signal.aborted) throw new DriverError('timeout', 'the service did not answer its ping in time');
    throw new DriverError(
      'unreachable',
      `the service could not be reached (${(error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message})`,
    );
  }
}
