// The `http-json` driver: a service function is a method and a path on one of the service's http
// ports. `{name}` in the path takes that field of the input; the other fields are the JSON body (the
// query string, for GET and DELETE). A 2xx answer's JSON is the result.
import type { ServiceFunctionSpec } from '../catalog/manifest.js';

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
  /** Performs the function on the service at `baseUrl` (its port's address); rejects with a DriverError. */
  call(fn: ServiceFunctionSpec, input: unknown, baseUrl: string, signal: AbortSignal): Promise<unknown>;
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

async function readAnswer(res: Response): Promise<unknown> {
  const text = await res.text();
  if (text.length > maxAnswerBytes)
    throw new DriverError('bad-answer', `the answer is larger than ${maxAnswerBytes} bytes`);
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

export const httpJsonDriver: NativeDriver = {
  name: 'http-json',
  version: '1.0.0',
  scope: null,
  functions: [],
  description: 'A function is a method and a path on an http port of the service: JSON in, JSON out.',
  async call(fn, input, baseUrl, signal) {
    const { url, body } = request(fn, input, baseUrl);
    let res: Response;
    try {
      res = await fetch(url, {
        method: fn.http.method,
        headers: {
          Accept: 'application/json',
          ...(body === null ? {} : { 'Content-Type': 'application/json' }),
        },
        body,
        signal,
        redirect: 'manual',
      });
    } catch (error) {
      if (signal.aborted) throw new DriverError('timeout', `${fn.name} did not answer in time`);
      const code = (error as { cause?: { code?: string } }).cause?.code;
      throw new DriverError(
        'unreachable',
        `the service could not be reached (${code ?? (error as Error).message})`,
      );
    }
    let answer: unknown;
    try {
      answer = await readAnswer(res);
    } catch (error) {
      if (signal.aborted) throw new DriverError('timeout', `${fn.name} did not answer in time`);
      throw error;
    }
    if (!res.ok) {
      throw new DriverError('refused', `${fn.name}: the service answered ${res.status}`, {
        status: res.status,
        body: answer,
      });
    }
    return answer;
  },
};

/** Whether the service answers on its port (its health path, or the port's root). */
export async function ping(baseUrl: string, path: string, signal: AbortSignal): Promise<{ status: number }> {
  try {
    const res = await fetch(new URL(path, `${baseUrl.replace(/\/$/, '')}/`), { signal, redirect: 'manual' });
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
