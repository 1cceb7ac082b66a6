import type { Handler } from '../http/operation.js';
import { pageOf } from './paging.js';
import { page, presentUser } from './present.js';

export const listUsers: Handler<'listUsers'> = async ({ query }, { principal, services }) => ({
  status: 200,
  body: page(await services.users.list(principal, { q: query.q }, pageOf(query)), presentUser),
});

export const getUser: Handler<'getUser'> = async ({ params }, { principal, services }) => ({
  status: 200,
  body: presentUser(await services.users.get(principal, params.userId)),
});

export const updateUser: Handler<'updateUser'> = async ({ params, body }, { principal, services }) => ({
  status: 200,
  body: presentUser(await services.users.update(principal, params.userId, body)),
});
