// The `atrium` command line as one commander program: the administrator's commands (admin.ts) and
// the user's (user/commands/*), each with its --help, global options, and errors as exit codes.
import { Command, CommanderError, Option } from 'commander';
import type { TokenCreateOptions } from './admin.js';
import { CliContext, exitCodes, reportError, type CliIo, type GlobalOptions } from './user/context.js';
import { userCommands } from './user/commands/index.js';

/** A command's action: the context (client, project, output), its arguments and its own options. */
export type ActionFn = (
  ctx: CliContext,
  args: string[],
  options: Record<string, unknown>,
  command: Command,
) => Promise<void>;

/** Wraps a command's action so that it gets a CliContext built from the global options. */
export type Act = (fn: ActionFn) => (...received: unknown[]) => Promise<void>;

// The administrator's commands load the server (its configuration, database, backends): loaded
// when one of them runs, so that the user's commands start in a fraction of the time.
async function admin() {
  const [commands, { loadConfig }] = await Promise.all([import('./admin.js'), import('../config.js')]);
  return { ...commands, config: loadConfig() };
}

/** Every user command module exports one of these: it adds its commands to the program. */
export type RegisterCommands = (program: Command, act: Act) => void;

export function buildProgram(io: CliIo): Command {
  const program = new Command('atrium')
    .description(
      'Atrium: the catalog, services, files, pipelines and benchmarks of your lab, from the shell.',
    )
    .addOption(new Option('--json', 'print results as JSON (for scripts)'))
    .addOption(new Option('--server <url>', "Atrium's URL (default: the stored login, or ATRIUM_SERVER)"))
    .addOption(new Option('--token <token>', 'an API token (default: the stored login, or ATRIUM_TOKEN)'))
    .addOption(
      new Option('-p, --project <id>', 'the project (default: the stored one, or your personal project)'),
    )
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
    })
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  const act: Act =
    (fn) =>
    async (...received) => {
      const command = received[received.length - 1] as Command;
      const ctx = new CliContext(io, command.optsWithGlobals<GlobalOptions>());
      await fn(ctx, command.processedArgs as string[], command.opts(), command);
    };

  program
    .command('serve')
    .description('(admin) run the API server (the default command)')
    .action(async () => {
      const { serve, config } = await admin();
      await serve(config);
    });
  program
    .command('worker')
    .description('(admin) run scheduler jobs (pipelines, benchmarks, queued calls) without the API')
    .option('--concurrency <n>', 'jobs at once', '4')
    .option('--kinds <list>', 'only these job kinds (default: all)')
    .action(async (options: { concurrency: string; kinds?: string }) => {
      const { work, config } = await admin();
      await work(config, options);
    });
  program
    .command('migrate')
    .description('(admin) bring the database schema up to date, then exit')
    .action(async () => {
      const { withServices, config } = await admin();
      await withServices(config, async () => undefined);
      io.stderr.write('database is up to date\n');
    });
  program
    .command('token')
    .description('(admin) API tokens, created on the database directly')
    .command('create')
    .description('create an API token and print its secret')
    .option('--user <name>', 'the user (created if missing)', 'admin')
    .option('--name <label>', 'what the token is for', 'cli')
    .option('--scopes <list>', 'read,write or read', 'read,write')
    .option('--expires-in-days <n>', 'expiry (default: never)')
    .option('--admin', 'make the user an administrator', false)
    .action(async (options: TokenCreateOptions) => {
      const { tokenCreate, config } = await admin();
      await tokenCreate(config, options);
    });

  for (const register of userCommands) register(program, act);
  program.addHelpText(
    'after',
    '\nConfiguration of the server comes from ATRIUM_* environment variables and the YAML file named by\n' +
      'ATRIUM_CONFIG (see README.md). Exit codes: 0 done, 1 failed, 2 usage, 3 not logged in or not allowed,\n' +
      '4 not found, 5 conflict or quota, 6 server unavailable, 7 timed out waiting, 130 interrupted.',
  );
  return program;
}

/** Runs `atrium` with these arguments; answers the exit code (undefined: a server keeps running). */
export async function runCli(argv: string[], io: CliIo): Promise<number | undefined> {
  const program = buildProgram(io);
  try {
    // No command at all is `serve`, as it always was (`make run`, the container's entry point).
    await program.parseAsync(argv.length === 0 ? ['serve'] : argv, { from: 'user' });
    return undefined;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return exitCodes.ok;
      if (error.code === 'commander.help') return exitCodes.ok;
      return exitCodes.usage;
    }
    return reportError(error, io, argv.includes('--json'));
  }
}
