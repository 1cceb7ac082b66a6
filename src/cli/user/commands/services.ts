// atrium launch, services ls/show/logs/events/suspend/resume/rm, open: the services of a project,
// launched and followed through the API (launching, suspending and deleting are operations).
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { AtriumProblem, unwrap, type Operation, type Schemas } from '@atrium/client';
import type { Command } from 'commander';
import type { RegisterCommands } from '../../program.js';
import { age, CliError, exitCodes, parseCount, parseSeconds, type CliContext } from '../context.js';
import { resolvePackage } from './catalog.js';

type Service = Schemas['Service'];

const defaultTimeoutSeconds = 300;

/** `--option a.b=3` → `{a: {b: 3}}`: JSON values (numbers, booleans, lists) as such, anything else a string. */
export function parseLaunchOptions(pairs: string[]): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const pair of pairs) {
    const equals = pair.indexOf('=');
    if (equals <= 0) throw new CliError(`--option ${pair}: expected KEY=VALUE`, exitCodes.usage);
    const path = pair.slice(0, equals).split('.');
    if (path.some((part) => part === ''))
      throw new CliError(`--option ${pair}: an empty part in the key`, exitCodes.usage);
    let target = options;
    for (const part of path.slice(0, -1)) {
      const next = target[part];
      if (next !== undefined && (typeof next !== 'object' || next === null || Array.isArray(next)))
        throw new CliError(`--option ${pair}: ${part} is already a value`, exitCodes.usage);
      target = (next as Record<string, unknown> | undefined) ?? (target[part] = {});
    }
    target[path[path.length - 1]!] = optionValue(pair.slice(equals + 1));
  }
  return options;
}

function optionValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** The URL people open: the first HTTP endpoint's (through the gateway), else the first one's. */
function serviceUrl(service: Service): string | null {
  return (service.endpoints.find((e) => e.protocol === 'http') ?? service.endpoints[0])?.url ?? null;
}

async function getService(ctx: CliContext, serviceId: string): Promise<Service> {
  return unwrap(
    await ctx.client().GET('/projects/{projectId}/services/{serviceId}', {
      params: { path: { projectId: await ctx.project(), serviceId } },
    }),
  );
}

function printService(ctx: CliContext, service: Service): void {
  ctx.fields(service, [
    ['id', service.id],
    ['name', service.name],
    ['status', service.status],
    ['url', serviceUrl(service)],
  ]);
}

/** A 202 answers the operation; a change with nothing to wait for answers the service itself. */
function isOperation(body: Operation | Service): body is Operation {
  return 'kind' in body;
}

/** Follows an operation to its end when asked to (`--wait`), else says how to follow it. */
async function settle(
  ctx: CliContext,
  operation: Operation,
  options: Record<string, unknown>,
  label: string,
): Promise<boolean> {
  if (!options.wait) {
    ctx.note(`${label}: under way (operation ${operation.id}); --wait waits for it`);
    return false;
  }
  await ctx.follow(operation, { timeoutMs: timeoutMs(options), label });
  return true;
}

function timeoutMs(options: Record<string, unknown>): number {
  return ((options.timeout as number | undefined) ?? defaultTimeoutSeconds) * 1000;
}

function withWait(command: Command, what: string): Command {
  return command
    .option('--wait', `wait until ${what}, showing its progress`)
    .option(
      '--timeout <seconds>',
      `how long --wait waits (exit 7 after; default ${defaultTimeoutSeconds})`,
      parseSeconds,
    );
}

export const registerServices: RegisterCommands = (program, act) => {
  withWait(
    program
      .command('launch')
      .description('launch a package into the project as a service')
      .argument('<package>', 'CATALOG/PACKAGE, or PACKAGE when one catalog has it')
      .option('--version <version>', 'a version of the package (default: its newest)')
      .option('--name <name>', "a display name (default: the package's name)")
      .option(
        '-o, --option <key=value>',
        'an option of the package (repeatable): values that parse as JSON (3, true, [1,2]) are taken as such, others as text; a.b=c sets b inside a',
        collect,
        [],
      )
      .option('--shared', 'visible to every member of the project', false)
      .addHelpText(
        'after',
        '\nWithout --wait it prints the service and the operation launching it; with --wait it follows the\n' +
          'launch to the running service and prints its URL (exit 1 with the reason and the log tail when it\n' +
          'fails to start, 7 when --timeout passes first).',
      ),
    'the service runs',
  ).action(
    act(async (ctx, [reference], options) => {
      const client = ctx.client();
      const { catalogId, packageName } = await resolvePackage(client, reference!);
      const projectId = await ctx.project();
      const operation = unwrap(
        await client.POST('/projects/{projectId}/services', {
          params: { path: { projectId } },
          body: {
            catalog_id: catalogId,
            package: packageName,
            ...(options.version ? { version: options.version as string } : {}),
            ...(options.name ? { name: options.name as string } : {}),
            options: parseLaunchOptions(options.option as string[]),
            shared: options.shared === true,
          },
        }),
      );
      // The spec answers a dry run with 200: this command never asks for one.
      if (!('kind' in operation)) throw new CliError('the server answered a dry run', exitCodes.failure);
      const serviceId = operation.target?.id ?? '';
      if (!options.wait) {
        ctx.fields(operation, [
          ['service', serviceId],
          ['operation', operation.id],
          ['status', operation.status],
        ]);
        return;
      }
      try {
        await ctx.follow(operation, { timeoutMs: timeoutMs(options), label: `launch ${packageName}` });
      } catch (error) {
        // A service that failed to start stays, to be read (services show, logs) and removed.
        if (error instanceof AtriumProblem && error.operation)
          ctx.note(
            `${serviceId} did not start: see "atrium services logs ${serviceId}", remove it with "atrium services rm ${serviceId}"`,
          );
        throw error;
      }
      printService(ctx, await getService(ctx, serviceId));
    }),
  );

  const services = program.command('services').description("the project's services");

  services
    .command('ls')
    .alias('list')
    .description("list the project's services, newest first")
    .option('--status <status...>', 'only services in these statuses (running, failed …)')
    .option('--package <name>', 'only services of this package')
    .action(
      act(async (ctx, _args, options) => {
        const rows: Service[] = [];
        for await (const service of ctx.client().paginate('/projects/{projectId}/services', {
          params: {
            path: { projectId: await ctx.project() },
            query: {
              ...(options.status ? { status: options.status as Service['status'][] } : {}),
              ...(options.package ? { package: options.package as string } : {}),
            },
          },
        }))
          rows.push(service);
        const now = Date.now();
        ctx.table(rows, [
          { header: 'ID', value: (s) => s.id },
          { header: 'NAME', value: (s) => s.name },
          { header: 'PACKAGE', value: (s) => `${s.catalog_id}/${s.package}` },
          { header: 'VERSION', value: (s) => s.version },
          { header: 'STATUS', value: (s) => s.status },
          { header: 'URL', value: (s) => serviceUrl(s) },
          { header: 'AGE', value: (s) => age(s.created_at, now) },
        ]);
      }),
    );

  services
    .command('show')
    .description('one service: its status, endpoints, options, resources, and why it failed')
    .argument('<id>', 'the service')
    .action(
      act(async (ctx, [serviceId]) => {
        const s = await getService(ctx, serviceId!);
        ctx.fields(s, [
          ['id', s.id],
          ['name', s.name],
          ['project', s.project_id],
          ['package', `${s.catalog_id}/${s.package} ${s.version}`],
          ['status', s.desired_state === s.status ? s.status : `${s.status} (to ${s.desired_state})`],
          ['message', s.message],
          ['owner', s.owner.username],
          ['shared', s.shared],
          ['region', s.region_id],
          ['resources', s.resources],
          ['options', s.options],
          ['endpoints', s.endpoints.map((e) => `${e.port}: ${e.url}`).join(', ') || null],
          ['created', s.created_at],
          ['started', s.started_at],
          ...(s.exit_code === null ? [] : [['exit code', s.exit_code] as [string, unknown]]),
          ...(s.log_tail.length === 0
            ? []
            : [['log tail', `\n  ${s.log_tail.join('\n  ')}`] as [string, unknown]]),
        ]);
      }),
    );

  services
    .command('logs')
    .description('what the service wrote to stdout and stderr')
    .argument('<id>', 'the service')
    .option('-f, --follow', 'keep printing new lines until the service stops (or Ctrl-C)', false)
    .option('--tail <n>', 'only the last N lines', parseCount)
    .option('--timestamps', 'start every line with the time it was written', false)
    .option('--task <name>', 'the task to read (its only one by default)')
    .action(
      act(async (ctx, [serviceId], options) => {
        const { data, error, response } = await ctx
          .client()
          .GET('/projects/{projectId}/services/{serviceId}/logs', {
            params: {
              path: { projectId: await ctx.project(), serviceId: serviceId! },
              query: {
                follow: options.follow === true,
                timestamps: options.timestamps === true,
                ...(options.tail ? { tail: options.tail as number } : {}),
                ...(options.task ? { task: options.task as string } : {}),
              },
            },
            parseAs: 'stream',
          });
        if (!response.ok) throw AtriumProblem.fromResponse(error, response);
        // The server ends the response when the service stops (with --follow) or at the last line.
        if (data) for await (const chunk of data) ctx.io.stdout.write(chunk);
      }),
    );

  services
    .command('events')
    .description('what happened to the service (admitted, starting, running, failed …), oldest first')
    .argument('<id>', 'the service')
    .option('-f, --follow', 'keep printing new events until the service is deleted (or Ctrl-C)', false)
    .action(
      act(async (ctx, [serviceId], options) => {
        const events = ctx.client().events('/projects/{projectId}/services/{serviceId}/events', {
          params: { path: { projectId: await ctx.project(), serviceId: serviceId! } },
          follow: options.follow === true,
        });
        // One line per event: with --json a JSON document per line, for `jq`.
        for await (const event of events)
          ctx.out(
            ctx.json
              ? JSON.stringify(event.data)
              : `${event.data.at}  ${event.event.padEnd(10)} ${event.data.message ?? ''}`.trimEnd(),
          );
      }),
    );

  for (const [verb, suspended, goal] of [
    ['suspend', true, 'the service is suspended'],
    ['resume', false, 'the service runs again'],
  ] as const)
    withWait(
      services
        .command(verb)
        .description(
          suspended
            ? 'stop the service and free its cpu, memory and gpu, keeping its settings and URL'
            : 'start a suspended service again (its resources are admitted against the quota)',
        )
        .argument('<id>', 'the service'),
      goal,
    ).action(
      act(async (ctx, [serviceId], options) => {
        const answer = unwrap(
          await ctx.client().PATCH('/projects/{projectId}/services/{serviceId}', {
            params: { path: { projectId: await ctx.project(), serviceId: serviceId! } },
            body: { suspended },
          }),
        );
        if (isOperation(answer) && !(await settle(ctx, answer, options, `${verb} ${serviceId}`))) {
          ctx.result(answer, () => ctx.out(answer.id));
          return;
        }
        printService(ctx, await getService(ctx, serviceId!));
      }),
    );

  withWait(
    services
      .command('rm')
      .alias('delete')
      .description('delete services: stop them, release their quota and remove them')
      .argument('<id...>', 'the services'),
    'they are gone',
  ).action(
    act(async (ctx, [ids], options) => {
      const projectId = await ctx.project();
      const serviceIds = ids as unknown as string[];
      const operations: Operation[] = [];
      for (const serviceId of serviceIds)
        operations.push(
          unwrap(
            await ctx.client().DELETE('/projects/{projectId}/services/{serviceId}', {
              params: { path: { projectId, serviceId } },
            }),
          ),
        );
      if (options.wait)
        await Promise.all(
          operations.map((operation, i) =>
            ctx.follow(operation, { timeoutMs: timeoutMs(options), label: `rm ${serviceIds[i]}` }),
          ),
        );
      ctx.result(operations, () => {
        for (const [i, operation] of operations.entries())
          ctx.out(
            options.wait
              ? `deleted ${serviceIds[i]}`
              : `deleting ${serviceIds[i]} (operation ${operation.id})`,
          );
      });
    }),
  );

  withWait(
    program
      .command('open')
      .description("print a service's URL (through Atrium's gateway) and open it in a browser")
      .argument('<id>', 'the service'),
    'the service runs and has its URL',
  )
    .option('--print', 'only print the URL, open no browser', false)
    .addHelpText(
      'after',
      '\nThe browser is opened (xdg-open, or open on macOS) only when standard output is a terminal;\n' +
        'the gateway asks it for the token once.',
    )
    .action(
      act(async (ctx, [serviceId], options) => {
        const service = options.wait
          ? await untilReachable(ctx, serviceId!, timeoutMs(options))
          : await getService(ctx, serviceId!);
        const url = serviceUrl(service);
        if (!url)
          throw new CliError(
            `${service.id} has no URL yet (it is ${service.status})`,
            exitCodes.conflict,
            'run "atrium open --wait" to wait for it',
          );
        ctx.result({ id: service.id, url }, () => ctx.out(url));
        if (!options.print && !ctx.json && ctx.io.stdout.isTTY) openInBrowser(url);
      }),
    );
};

/** Polls the service until it runs with its URL; a service that fails or is deleted ends the wait. */
async function untilReachable(ctx: CliContext, serviceId: string, timeoutMs: number): Promise<Service> {
  const deadline = Date.now() + timeoutMs;
  for (let round = 0; ; round++) {
    const service = await getService(ctx, serviceId);
    if (service.status === 'running' && serviceUrl(service)) return service;
    if (['failed', 'lost', 'deleting'].includes(service.status) || service.desired_state !== 'running')
      throw new CliError(
        `${service.id} is ${service.status}${service.desired_state === 'running' ? '' : ` (to ${service.desired_state})`}`,
        exitCodes.failure,
        service.message ?? undefined,
      );
    if (Date.now() + 1000 > deadline || round > timeoutMs / 1000)
      throw new CliError('timed out waiting', exitCodes.timeout, `${service.id} is still ${service.status}`);
    await sleep(1000);
  }
}

function openInBrowser(url: string): void {
  const opener =
    process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open';
  const child = spawn(opener, [url], { detached: true, stdio: 'ignore' });
  child.on('error', () => undefined);
  child.unref();
}
