import type { IncomingHttpHeaders } from 'node:http';
import type { OperationRecord } from '../services/model.js';
import type { AuthenticatedContext } from '../http/operation.js';
import { apiBasePath } from '../services/platform.js';
import { presentOperation } from './present.js';

/** The seconds of `Prefer: wait=N` (RFC 7240), if the client asked to wait. */
export function preferredWait(headers: IncomingHttpHeaders): number | null {
  const match = /wait=(\d+)/.exec(String(headers.prefer ?? ''));
  return match ? Number(match[1]) : null;
}

/** The 202 answer of an operation as it is when created (and as kept for an Idempotency-Key). */
export function acceptedNow(operation: OperationRecord) {
  return {
    status: 202 as const,
    body: presentOperation(operation),
    location: `${apiBasePath}/operations/${operation.id}`,
  };
}

/** Keeps the 202 answer of the operation a request creates with it (see `answerWith`). */
export function answerAccepted(ctx: AuthenticatedContext): void {
  ctx.answerWith(acceptedNow);
}

/**
 * The 202 answer of an operation: its Location, and its state after waiting as long as
 * `Prefer: wait` asked (so that a client may get the outcome in the same round trip).
 */
export async function accepted(
  operation: OperationRecord,
  headers: IncomingHttpHeaders,
  ctx: AuthenticatedContext,
) {
  const wait = preferredWait(headers);
  const current =
    wait === null
      ? operation
      : ((await ctx.services.operations.wait(operation.id, wait, ctx.signal)) ?? operation);
  return {
    ...acceptedNow(current),
    location: `${apiBasePath}/operations/${operation.id}`,
    headers: (wait === null ? {} : { 'Preference-Applied': `wait=${wait}` }) as Record<string, string>,
  };
}
