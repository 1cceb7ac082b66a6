import type { Handler } from '../http/operation.js';
import { serverSentEvents } from '../http/sse.js';
import { pageOf } from './paging.js';
import { page, presentOperation } from './present.js';
import { accepted, preferredWait } from './waiting.js';

export const listOperations: Handler<'listOperations'> = async ({ query }, { principal, services }) => ({
  status: 200,
  body: page(
    await services.operations.list(
      principal,
      { projectId: query.project_id, status: query.status, all: query.all },
      pageOf(query),
    ),
    presentOperation,
  ),
});

export const getOperation: Handler<'getOperation'> = async (
  { params, headers },
  { principal, services, signal },
) => {
  const operation = await services.operations.get(principal, params.operationId);
  const wait = preferredWait(headers);
  if (wait === null) return { status: 200, body: presentOperation(operation) };
  const current = (await services.operations.wait(operation.id, wait, signal)) ?? operation;
  return { status: 200, body: presentOperation(current), headers: { 'Preference-Applied': `wait=${wait}` } };
};

export const cancelOperation: Handler<'cancelOperation'> = async ({ params, headers }, ctx) =>
  accepted(await ctx.services.serviceManager.cancel(ctx.principal, params.operationId), headers, ctx);

export const followOperationEvents: Handler<'followOperationEvents'> = async (
  { params, query, headers },
  { principal, services, signal },
) => {
  // Asked now, so that a missing or hidden operation is a 404, not an empty stream.
  await services.operations.get(principal, params.operationId);
  return {
    status: 200,
    contentType: 'text/event-stream',
    stream: serverSentEvents(
      services.operations.events(principal, params.operationId, {
        afterSeq: Number(headers['last-event-id'] ?? 0),
        follow: query.follow ?? true,
        signal,
      }),
    ),
  };
};
