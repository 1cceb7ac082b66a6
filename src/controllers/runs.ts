import { serverSentEvents } from '../http/sse.js';
import type { Handler } from '../http/operation.js';
import { pageOf } from './paging.js';
import { page, presentRun } from './present.js';
import { accepted, answerAccepted } from './waiting.js';

export const listRuns: Handler<'listRuns'> = async ({ params, query }, { principal, services }) => ({
  status: 200,
  body: page(
    await services.runs.list(
      principal,
      params.projectId,
      { pipelineId: query.pipeline_id, status: query.status },
      pageOf(query),
    ),
    presentRun,
  ),
});

export const createRun: Handler<'createRun'> = async ({ params, body, headers }, ctx) => {
  answerAccepted(ctx);
  return accepted(
    await ctx.services.runs.create(ctx.principal, params.projectId, {
      pipelineId: body.pipeline_id,
      inputFileIds: body.input_file_ids,
      name: body.name,
    }),
    headers,
    ctx,
  );
};

export const getRun: Handler<'getRun'> = async ({ params }, { principal, services }) => ({
  status: 200,
  body: presentRun(await services.runs.get(principal, params.projectId, params.runId)),
});

export const deleteRun: Handler<'deleteRun'> = async ({ params }, { principal, services }) => {
  await services.runs.delete(principal, params.projectId, params.runId);
  return { status: 204 };
};

export const cancelRun: Handler<'cancelRun'> = async ({ params }, { principal, services }) => ({
  status: 200,
  body: presentRun(await services.runs.cancel(principal, params.projectId, params.runId)),
});

export const retryRun: Handler<'retryRun'> = async ({ params, headers }, ctx) =>
  accepted(await ctx.services.runs.retry(ctx.principal, params.projectId, params.runId), headers, ctx);

export const followRunEvents: Handler<'followRunEvents'> = async ({ params, query, headers }, ctx) => {
  const afterSeq = Number(headers['last-event-id'] ?? 0);
  await ctx.services.runs.get(ctx.principal, params.projectId, params.runId);
  return {
    status: 200,
    stream: serverSentEvents(
      ctx.services.runs.events(ctx.principal, params.projectId, params.runId, {
        afterSeq,
        follow: query.follow ?? true,
        signal: ctx.signal,
      }),
    ),
    contentType: 'text/event-stream',
  };
};

export const getJobLogs: Handler<'getJobLogs'> = async ({ params, query }, ctx) => ({
  status: 200,
  stream: await ctx.services.runs.jobLogs(ctx.principal, params.projectId, params.runId, params.jobId, {
    tail: query.tail,
    follow: query.follow ?? false,
    signal: ctx.signal,
  }),
  contentType: 'text/plain; charset=utf-8',
});
