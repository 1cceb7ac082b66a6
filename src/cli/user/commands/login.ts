// atrium login / logout / whoami: the server URL and token, checked against the server, stored in
// the user's config dir with mode 0600.
import { rmSync } from 'node:fs';
import { unwrap } from '@atrium/client';
import type { RegisterCommands } from '../../program.js';
import { CliError, exitCodes, loginPath, writeLogin } from '../context.js';

async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
}

export const registerLogin: RegisterCommands = (program, act) => {
  program
    .command('login')
    .description('check a server URL and token, and store them (mode 0600) for the other commands')
    .addHelpText(
      'after',
      '\nThe token comes from --token, ATRIUM_TOKEN, or standard input (echo "$TOKEN" | atrium login --server URL).\n' +
        'The login is stored in $ATRIUM_CLI_CONFIG, or $XDG_CONFIG_HOME/atrium/config.json, or ~/.config/atrium/config.json.',
    )
    .option('--default-project <id>', 'the project commands use when given no --project')
    .action(
      act(async (ctx, _args, options) => {
        const server = ctx.options.server ?? ctx.io.env.ATRIUM_SERVER;
        if (!server) throw new CliError('login needs --server URL', exitCodes.usage);
        let token = ctx.options.token ?? ctx.io.env.ATRIUM_TOKEN;
        if (!token && !process.stdin.isTTY) token = await readStdinLine();
        if (!token)
          throw new CliError('login needs a token: --token, ATRIUM_TOKEN or standard input', exitCodes.usage);
        ctx.options.server = server;
        ctx.options.token = token;
        const me = unwrap(await ctx.client().GET('/me'));
        const project = options.defaultProject as string | undefined;
        if (project)
          unwrap(
            await ctx.client().GET('/projects/{projectId}', { params: { path: { projectId: project } } }),
          );
        const file = writeLogin(ctx.io.env, {
          server: server.replace(/\/+$/, ''),
          token,
          ...(project ? { project } : {}),
        });
        ctx.result({ server, user: me.user, config: file }, () =>
          ctx.out(
            `Logged in to ${server} as ${me.user.username}${project ? ` (project ${project})` : ''}; stored in ${file}`,
          ),
        );
      }),
    );

  program
    .command('logout')
    .description('forget the stored login')
    .action(
      act(async (ctx) => {
        const file = loginPath(ctx.io.env);
        rmSync(file, { force: true });
        ctx.result({ config: file }, () => ctx.out(`Removed ${file}`));
      }),
    );

  program
    .command('whoami')
    .description('who the stored token is, and your projects')
    .action(
      act(async (ctx) => {
        const me = unwrap(await ctx.client().GET('/me'));
        ctx.result(me, () => {
          ctx.out(`${me.user.username}${me.user.admin ? ' (admin)' : ''} on ${ctx.login().server}`);
          ctx.out(`scopes: ${me.auth.scopes.join(', ')}`);
          ctx.out(`projects: ${me.projects.map((p) => p.id).join(', ') || '(none)'}`);
        });
      }),
    );
};
