import { serverSentEvents } from '../http/sse.js';
import { apiBasePath } from '../services/platform.js';
import type { Handler } from '../http/operation.js';
import { serviceEtag } from '../services/services.js';
import { pageOf } from './paging.js';
import type { Services } from '../services/index.js';
import { page, presentDryRun, presentService, type EndpointUrl } from './present.js';
import { accepted, answerAccepted } from './waiting.js';

/** An http port through the gateway (host- or path-based on the origin the client used), where it reaches it. */
const endpointUrl =
  (services: Services, origin: string): EndpointUrl =>
  (s, e) =>
    e.protocol === 'http' && services.gateway.reaches(s.regionId)
      ? services.gateway.urlOf(s, e.port, origin)
      : e.url;

export const listServices: Handler<'listServices'> = async (
  { params, query },
  { principal, services, origin },
) => ({
  status: 200,
  body: page(
    await services.serviceManager.list(
      principal,
      params.projectId,
      { statuses: query.status, packageName: query.package },
      pageOf(query),
    ),
    (s) => presentService(s, endpointUrl(services, origin)),
  ),
});

export const launchService: Handler<'launchService'> = async ({ params, query, body, headers }, ctx) => {
  answerAccepted(ctx);
  const outcome = await ctx.services.serviceManager.launch(
    ctx.principal,
    params.projectId,
    {
      catalogId: body.catalog_id,
      packageName: body.package,
      version: body.version,
      name: body.name,
      options: body.options,
      shared: body.shared,
    },
    { dryRun: query.dryRun ?? false },
  );
  if ('dryRun' in outcome) return { status: 200, body: presentDryRun(outcome.dryRun) };
  return accepted(outcome.operation, headers, ctx);
};

type ServiceRecord = Awaited<ReturnType<Services['backends']['register']>>;

export const createBackend: Handler<'createBackend'> = async ({ params, body }, ctx) => {
  const created = (service: ServiceRecord) => ({
    status: 201 as const,
    body: presentService(service, endpointUrl(ctx.services, ctx.origin)),
    etag: serviceEtag(service),
    location: `${apiBasePath}/projects/${service.projectId}/services/${service.id}`,
  });
  ctx.answerWith(created);
  return created(
    await ctx.services.backends.register(ctx.principal, params.projectId, {
      name: body.name,
      app: body.app,
      version: body.version,
      locations: body.locations,
      healthPath: body.health_path ?? '/',
      scope: body.scope,
      metadata: body.metadata ?? {},
      shared: body.shared ?? false,
    }),
  );
};

export const deleteServices: Handler<'deleteServices'> = async ({ params, query, headers }, ctx) =>
  accepted(
    await ctx.services.serviceManager.deleteMany(ctx.principal, params.projectId, {
      statuses: query.status,
      packageName: query.package,
    }),
    headers,
    ctx,
  );

export const getService: Handler<'getService'> = async ({ params }, { principal, services, origin }) => {
  const service = await services.serviceManager.get(principal, params.projectId, params.serviceId);
  return {
    status: 200,
    body: presentService(service, endpointUrl(services, origin)),
    etag: serviceEtag(service),
  };
};

export const updateService: Handler<'updateService'> = async ({ params, body, headers }, ctx) => {
  const outcome = await ctx.services.serviceManager.update(
    ctx.principal,
    params.projectId,
    params.serviceId,
    body,
    headers['if-match'],
  );
  if ('operation' in outcome) return accepted(outcome.operation, headers, ctx);
  return {
    status: 200,
    body: presentService(outcome.service, endpointUrl(ctx.services, ctx.origin)),
    etag: serviceEtag(outcome.service),
  };
};

export const deleteService: Handler<'deleteService'> = async ({ params, headers }, ctx) =>
  accepted(
    await ctx.services.serviceManager.delete(
      ctx.principal,
      params.projectId,
      params.serviceId,
      headers['if-match'],
    ),
    headers,
    ctx,
  );

export const getServiceLogs: Handler<'getServiceLogs'> = async (
  { params, query },
  { principal, services, signal },
) => {
  const lines = services.serviceManager.logs(principal, params.projectId, params.serviceId, {
    task: query.task,
    container: query.container,
    tail: query.tail,
    since: query.since === undefined ? undefined : new Date(query.since),
    timestamps: query.timestamps,
    follow: query.follow,
    signal,
  });
  // Access is checked before the first byte, so that a refusal is still a problem response.
  const iterator = lines[Symbol.asyncIterator]();
  const first = await iterator.next();
  async function* rest(): AsyncIterable<string> {
    if (!first.done) yield first.value;
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value;
  }
  return { status: 200, stream: rest(), contentType: 'text/plain; charset=utf-8' };
};

export const followServiceEvents: Handler<'followServiceEvents'> = async (
  { params, query, headers },
  { principal, services, signal },
) => {
  const afterSeq = Number(headers['last-event-id'] ?? 0);
  await services.serviceManager.get(principal, params.projectId, params.serviceId);
  return {
    status: 200,
    stream: serverSentEvents(
      services.serviceManager.events(principal, params.projectId, params.serviceId, {
        afterSeq,
        follow: query.follow ?? true,
        signal,
      }),
    ),
    contentType: 'text/event-stream',
  };
};
