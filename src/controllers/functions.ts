import type { Handler } from '../http/operation.js';
import { arrayPage } from '../services/model.js';
import type { CallView, ServiceFunctionView } from '../services/functions.js';
import { apiBasePath } from '../services/platform.js';
import { pageOf } from './paging.js';
import { page } from './present.js';
import { preferredWait } from './waiting.js';

const presentFunction = (f: ServiceFunctionView) => ({
  name: f.name,
  service_id: f.serviceId,
  description: f.description,
  input: f.input,
  output: f.output,
  timeout_ms: f.timeout_ms,
  idempotent: f.idempotent,
  cache_ttl_s: f.cache_ttl_s,
  driver: f.driver,
});

const presentCall = (c: CallView) => ({
  id: c.id,
  service_id: c.serviceId,
  function: c.function,
  status: c.status,
  sync: c.sync,
  position: c.position,
  input: c.input,
  result: c.result ?? null,
  error: c.error,
  created_by: c.userId,
  created_at: c.createdAt,
  started_at: c.startedAt,
  finished_at: c.finishedAt,
  expires_at: c.expiresAt,
});

const callPath = (projectId: string, serviceId: string, callId: string) =>
  `${apiBasePath}/projects/${projectId}/services/${serviceId}/calls/${callId}`;

export const listServiceFunctions: Handler<'listServiceFunctions'> = async (
  { params, query },
  { principal, services },
) => {
  const all = await services.functions.list(principal, params.projectId, params.serviceId);
  return {
    status: 200,
    body: page(
      arrayPage(`functions:${params.serviceId}`, all, (f) => f.name, pageOf(query)),
      presentFunction,
    ),
  };
};

export const getServiceFunction: Handler<'getServiceFunction'> = async (
  { params },
  { principal, services },
) => ({
  status: 200,
  body: presentFunction(
    await services.functions.get(principal, params.projectId, params.serviceId, params.functionName),
  ),
});

export const callServiceFunction: Handler<'callServiceFunction'> = async (
  { params, query, body, headers },
  { principal, services, signal },
) => {
  const sync = query.sync ?? false;
  const outcome = await services.functions.call(
    principal,
    params.projectId,
    params.serviceId,
    params.functionName,
    body.input ?? {},
    { sync, signal },
  );
  const cacheStatus: Record<string, string> =
    outcome.cache === 'hit'
      ? { 'Cache-Status': 'atrium; hit' }
      : outcome.cache === 'miss'
        ? { 'Cache-Status': 'atrium; fwd=miss' }
        : {};
  if (outcome.cache === 'hit' || sync) {
    return { status: 200, body: presentCall(outcome.call), headers: cacheStatus };
  }
  const wait = preferredWait(headers);
  const call =
    wait === null
      ? outcome.call
      : await services.functions.getCall(principal, params.projectId, params.serviceId, outcome.call.id, {
          seconds: wait,
          signal,
        });
  return {
    status: 202,
    body: presentCall(call),
    location: callPath(params.projectId, params.serviceId, call.id),
    headers: { ...cacheStatus, ...(wait === null ? {} : { 'Preference-Applied': `wait=${wait}` }) },
  };
};

export const listServiceCalls: Handler<'listServiceCalls'> = async (
  { params, query },
  { principal, services },
) => ({
  status: 200,
  body: page(
    await services.functions.listCalls(principal, params.projectId, params.serviceId, pageOf(query)),
    presentCall,
  ),
});

export const getServiceCall: Handler<'getServiceCall'> = async (
  { params, headers },
  { principal, services, signal },
) => {
  const wait = preferredWait(headers);
  const call = await services.functions.getCall(
    principal,
    params.projectId,
    params.serviceId,
    params.callId,
    wait === null ? null : { seconds: wait, signal },
  );
  return {
    status: 200,
    body: presentCall(call),
    headers: (wait === null ? {} : { 'Preference-Applied': `wait=${wait}` }) as Record<string, string>,
  };
};

export const cancelServiceCall: Handler<'cancelServiceCall'> = async (
  { params },
  { principal, services },
) => ({
  status: 200,
  body: presentCall(
    await services.functions.cancelCall(principal, params.projectId, params.serviceId, params.callId),
  ),
});

export const getServiceHeartbeat: Handler<'getServiceHeartbeat'> = async (
  { params },
  { principal, services, signal },
) => {
  const beat = await services.functions.heartbeat(principal, params.projectId, params.serviceId, signal);
  return {
    status: 200,
    body: { status: beat.status, http_status: beat.httpStatus, latency_ms: beat.latencyMs, at: beat.at },
  };
};
