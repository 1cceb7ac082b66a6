import type { Handler } from '../http/operation.js';
import { apiBasePath } from '../services/platform.js';
import type { ApiToken } from '../services/tokens.js';
import { pageOf } from './paging.js';
import { page, presentToken } from './present.js';

export const listMyTokens: Handler<'listMyTokens'> = async ({ query }, { principal, services }) => ({
  status: 200,
  body: page(await services.tokens.list(principal, pageOf(query)), presentToken),
});

export const createMyToken: Handler<'createMyToken'> = async ({ body }, ctx) => {
  const created = ({ token, secret }: { token: ApiToken; secret: string }) => ({
    status: 201 as const,
    body: { ...presentToken(token), secret },
    location: `${apiBasePath}/me/tokens/${token.id}`,
  });
  ctx.answerWith(created);
  return created(
    await ctx.services.tokens.create(ctx.principal, {
      name: body.name,
      scopes: body.scopes,
      expiresAt: body.expires_at,
    }),
  );
};

export const getMyToken: Handler<'getMyToken'> = async ({ params }, { principal, services }) => ({
  status: 200,
  body: presentToken(await services.tokens.get(principal, params.tokenId)),
});

export const revokeMyToken: Handler<'revokeMyToken'> = async ({ params }, { principal, services }) => {
  await services.tokens.revoke(principal, params.tokenId);
  return { status: 204 };
};
