// Pod logs as lines, always fetched with timestamps (so that `since` is exact to the millisecond,
// where the API's sinceTime has seconds), and shown with or without them as asked.
import { PassThrough } from 'node:stream';
import type { Log } from '@kubernetes/client-node';
import { apiError } from './errors.js';

export interface PodLogRequest {
  namespace: string;
  pod: string;
  container: string;
  follow?: boolean;
  tail?: number;
  since?: Date;
  previous?: boolean;
  limitBytes?: number;
  signal?: AbortSignal;
}

/** A log line: when it was written (RFC 3339, as the kubelet stamped it) and its text. */
export interface StampedLine {
  at: string;
  text: string;
}

export function parseStamped(line: string): StampedLine {
  const space = line.indexOf(' ');
  const at = space > 0 ? line.slice(0, space) : '';
  return /^\d{4}-\d\d-\d\dT/.test(at) ? { at, text: line.slice(space + 1) } : { at: '', text: line };
}

/** Whether a line stamped `at` (nanoseconds perhaps) is at or after `since`. */
export function isSince(at: string, since: Date | undefined): boolean {
  if (!since || !at) return true;
  return Date.parse(at) >= since.getTime();
}

/**
 * The lines of one container's log. A tail with a `since` is cut here, after filtering; following
 * ends when the container does, or when `signal` aborts.
 */
export async function* podLogLines(log: Log, request: PodLogRequest): AsyncGenerator<StampedLine> {
  if (request.signal?.aborted) return;
  if (request.since && request.since.getTime() > Date.now() && !request.follow) return;
  const stream = new PassThrough();
  const cutHere = request.since !== undefined && request.tail !== undefined && !request.follow;
  const controller = await log.log(request.namespace, request.pod, request.container, stream, {
    follow: request.follow ?? false,
    timestamps: true,
    previous: request.previous ?? false,
    ...(request.tail !== undefined && !cutHere ? { tailLines: request.tail } : {}),
    // The API takes whole seconds: from the second it falls in, the rest is filtered here.
    ...(request.since
      ? {
          sinceTime: new Date(Math.floor(request.since.getTime() / 1000) * 1000)
            .toISOString()
            .replace('.000Z', 'Z'),
        }
      : {}),
    ...(request.limitBytes ? { limitBytes: request.limitBytes } : {}),
  });
  const onAbort = () => {
    controller.abort();
    stream.end();
  };
  request.signal?.addEventListener('abort', onAbort, { once: true });
  const kept: StampedLine[] = [];
  try {
    let pending = '';
    for await (const chunk of stream) {
      pending += (chunk as Buffer).toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const raw of lines) {
        const line = parseStamped(raw.replace(/\r$/, ''));
        if (!isSince(line.at, request.since)) continue;
        if (cutHere) kept.push(line);
        else yield line;
      }
    }
    if (pending) {
      const line = parseStamped(pending);
      if (isSince(line.at, request.since)) {
        if (cutHere) kept.push(line);
        else yield line;
      }
    }
    if (cutHere) yield* request.tail ? kept.slice(-request.tail) : kept;
  } finally {
    request.signal?.removeEventListener('abort', onAbort);
    controller.abort();
  }
}

/**
 * Whether a failed log request means there is no such log: a container that has not run yet (400),
 * a pod or container gone (404), or a pod no node has taken (the API server answers 204, no content,
 * which client-node turns into an error).
 */
export function isMissingLog(error: unknown): boolean {
  const code = apiError(error)?.code;
  return code === 400 || code === 404 || code === 204;
}

/** All lines of a log, or none when there is no such log. */
export async function readPodLog(log: Log, request: PodLogRequest): Promise<StampedLine[] | null> {
  const lines: StampedLine[] = [];
  try {
    for await (const line of podLogLines(log, request)) lines.push(line);
  } catch (error) {
    if (isMissingLog(error)) return null;
    throw error;
  }
  return lines;
}
