import type { Handler } from '../http/operation.js';
import { quotaEtag } from '../services/quotas.js';
import { presentQuota } from './present.js';

export const getProjectQuota: Handler<'getProjectQuota'> = async ({ params }, { principal, services }) => {
  const quota = await services.quotas.get(principal, params.projectId);
  return { status: 200, body: presentQuota(quota), etag: quotaEtag(quota) };
};

export const updateProjectQuota: Handler<'updateProjectQuota'> = async (
  { params, body, headers },
  { principal, services },
) => {
  const quota = await services.quotas.updateLimits(
    principal,
    params.projectId,
    body.limits,
    headers['if-match'],
  );
  return { status: 200, body: presentQuota(quota), etag: quotaEtag(quota) };
};
