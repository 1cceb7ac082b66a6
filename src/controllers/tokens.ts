import type { Handler } from '../http/operation.js';
import { apiBasePath } from '../services/platform.js';
import { pageOf } from './paging.js';
import { page, presentToken } from './present.js';

export const listMyTokens: Handler<'listMyTokens'> = async ({ query }, { principal, services }) => ({
  status: 200,
  body: page(await services.tokens.list(principal, pageOf(query)), presentToken),
});

export const createMyToken: Handler<'createMyToken'> = async ({ body }, { principal, services }) => {
  const { token, secret } = await services.tokens.create(principal, {
    name: body.name,
    scopes: body.scopes,
    expiresAt: body.expires_at,
  });
  return {
    status: 201,
    body: { ...presentToken(token), secret },
    location: `${apiBasePath}/me/tokens/${token.id}`,
  };
};

export const getMyToken: Handler<'getMyToken'> = async ({ params }, { principal, services }) => ({
  status: 200,
  body: presentToken(await services.tokens.get(principal, params.tokenId)),
});

export const revokeMyToken: Handler<'revokeMyToken'> = async ({ params }, { principal, services }) => {
  await services.tokens.revoke(principal, params.tokenId);
  return { status: 204 };
};
