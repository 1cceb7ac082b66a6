import type { Handler } from '../http/operation.js';
import { presentProject, presentUser } from './present.js';

export const getMe: Handler<'getMe'> = async (_input, { principal, services, clientIp }) => ({
  status: 200,
  body: {
    user: presentUser(principal.user),
    auth: { method: principal.method, scopes: principal.scopes, token_id: principal.tokenId },
    projects: (await services.projects.profileProjects(principal)).map(presentProject),
    ip: clientIp,
  },
});
