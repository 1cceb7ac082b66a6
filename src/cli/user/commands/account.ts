// atrium quota, tokens ls/create/revoke: what the project may still take, and your own API tokens.
// (`atrium token create`, singular, is the administrator's: it writes to the database directly.)
import { unwrap, type Schemas } from '@atrium/client';
import { InvalidArgumentError } from 'commander';
import type { RegisterCommands } from '../../program.js';
import { age, parseCount } from '../context.js';

type Token = Schemas['Token'];
type TokenScope = Schemas['TokenScope'];

const quotaResources = ['cpu', 'memory', 'gpu', 'services', 'concurrent_jobs', 'storage'] as const;
const tokenScopes: readonly TokenScope[] = ['read', 'write'];

function parseScopes(value: string): TokenScope[] {
  const scopes = [...new Set(value.split(',').map((s) => s.trim()))];
  const unknown = scopes.filter((s) => !tokenScopes.includes(s as TokenScope));
  if (scopes.length === 0 || unknown.length > 0)
    throw new InvalidArgumentError(`a list of ${tokenScopes.join(', ')} (not ${unknown.join(', ')})`);
  return scopes as TokenScope[];
}

function tokenState(token: Token, now: number): string {
  if (token.revoked_at) return 'revoked';
  if (token.expires_at && Date.parse(token.expires_at) <= now) return 'expired';
  return 'active';
}

export const registerAccount: RegisterCommands = (program, act) => {
  program
    .command('quota')
    .description("the project's limits and what its services and jobs use of them now")
    .action(
      act(async (ctx) => {
        const quota = unwrap(
          await ctx.client().GET('/projects/{projectId}/quota', {
            params: { path: { projectId: await ctx.project() } },
          }),
        );
        ctx.result(quota, () =>
          ctx.table(
            quotaResources.map((resource) => ({
              resource,
              used: quota.usage[resource],
              limit: quota.limits[resource] ?? 'unlimited',
            })),
            [
              { header: 'RESOURCE', value: (r) => r.resource },
              { header: 'USED', value: (r) => r.used ?? 0 },
              { header: 'LIMIT', value: (r) => r.limit },
            ],
          ),
        );
      }),
    );

  const tokens = program.command('tokens').description('your API tokens');

  tokens
    .command('ls')
    .alias('list')
    .description('your tokens, newest first, revoked and expired ones too (never their secrets)')
    .action(
      act(async (ctx) => {
        const rows: Token[] = [];
        for await (const token of ctx.client().paginate('/me/tokens')) rows.push(token);
        const now = Date.now();
        ctx.table(rows, [
          { header: 'ID', value: (t) => t.id },
          { header: 'NAME', value: (t) => t.name },
          { header: 'PREFIX', value: (t) => t.prefix },
          { header: 'SCOPES', value: (t) => t.scopes.join(',') },
          { header: 'STATE', value: (t) => tokenState(t, now) },
          { header: 'CREATED', value: (t) => age(t.created_at, now) },
          { header: 'EXPIRES', value: (t) => t.expires_at ?? 'never' },
          { header: 'LAST USED', value: (t) => (t.last_used_at ? age(t.last_used_at, now) : 'never') },
        ]);
      }),
    );

  tokens
    .command('create')
    .description('create a token and print its secret (shown this once)')
    .requiredOption('--name <label>', 'what the token is for (laptop, ci …)')
    .option('--scopes <list>', 'read,write or read (at most those of the token you use)', parseScopes)
    .option('--expires-in-days <n>', 'when it stops working (default: never)', parseCount)
    .addHelpText(
      'after',
      '\nOnly the secret goes to standard output: TOKEN=$(atrium tokens create --name ci)',
    )
    .action(
      act(async (ctx, _args, options) => {
        const days = options.expiresInDays as number | undefined;
        const created = unwrap(
          await ctx.client().POST('/me/tokens', {
            body: {
              name: options.name as string,
              ...(options.scopes ? { scopes: options.scopes as TokenScope[] } : {}),
              ...(days ? { expires_at: new Date(Date.now() + days * 86_400_000).toISOString() } : {}),
            },
          }),
        );
        ctx.result(created, () => {
          ctx.note(
            `Created token ${created.id} (${created.name}, ${created.scopes.join(',')}, ` +
              `expires ${created.expires_at ?? 'never'}). Its secret is shown this once:`,
          );
          ctx.out(created.secret);
        });
      }),
    );

  tokens
    .command('revoke')
    .description('revoke one of your tokens: it stops working at once')
    .argument('<id>', 'the token (tokens ls shows them)')
    .action(
      act(async (ctx, [tokenId]) => {
        unwrap(
          await ctx.client().DELETE('/me/tokens/{tokenId}', { params: { path: { tokenId: tokenId! } } }),
        );
        ctx.result({ id: tokenId, revoked: true }, () => ctx.out(`Revoked ${tokenId}`));
      }),
    );
};
