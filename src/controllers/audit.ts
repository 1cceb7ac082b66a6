import type { Handler } from '../http/operation.js';
import { pageOf } from './paging.js';
import { page, presentAuditEvent } from './present.js';

export const listAuditEvents: Handler<'listAuditEvents'> = async ({ query }, { principal, services }) => ({
  status: 200,
  body: page(
    await services.audit.list(
      principal,
      { userId: query.user_id, projectId: query.project_id, operationId: query.operation_id },
      pageOf(query),
    ),
    presentAuditEvent,
  ),
});
