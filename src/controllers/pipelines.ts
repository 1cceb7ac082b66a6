import { apiBasePath } from '../services/platform.js';
import type { Handler } from '../http/operation.js';
import { pipelineEtag } from '../services/pipelines.js';
import { pageOf } from './paging.js';
import { page, presentPipeline } from './present.js';
import type { PipelineRecord } from '../services/pipelines.js';

export const listPipelines: Handler<'listPipelines'> = async (
  { params, query },
  { principal, services },
) => ({
  status: 200,
  body: page(
    await services.pipelines.list(principal, params.projectId, { enabled: query.enabled }, pageOf(query)),
    presentPipeline,
  ),
});

export const createPipeline: Handler<'createPipeline'> = async ({ params, body }, ctx) => {
  const created = (pipeline: PipelineRecord) => ({
    status: 201 as const,
    body: presentPipeline(pipeline),
    etag: pipelineEtag(pipeline),
    location: `${apiBasePath}/projects/${pipeline.projectId}/pipelines/${pipeline.id}`,
  });
  ctx.answerWith(created);
  return created(await ctx.services.pipelines.create(ctx.principal, params.projectId, body));
};

export const getPipeline: Handler<'getPipeline'> = async ({ params }, { principal, services }) => {
  const pipeline = await services.pipelines.get(principal, params.projectId, params.pipelineId);
  return { status: 200, body: presentPipeline(pipeline), etag: pipelineEtag(pipeline) };
};

export const updatePipeline: Handler<'updatePipeline'> = async (
  { params, body, headers },
  { principal, services },
) => {
  const pipeline = await services.pipelines.update(
    principal,
    params.projectId,
    params.pipelineId,
    body,
    headers['if-match'],
  );
  return { status: 200, body: presentPipeline(pipeline), etag: pipelineEtag(pipeline) };
};

export const deletePipeline: Handler<'deletePipeline'> = async (
  { params, headers },
  { principal, services },
) => {
  await services.pipelines.delete(principal, params.projectId, params.pipelineId, headers['if-match']);
  return { status: 204 };
};
