// atrium modules, pipelines and runs: the functions one can chain, pipelines of them, and runs of a
// pipeline over files — started, followed live to their end (exit 0 finished, 1 failed or
// cancelled, 7 still running at --timeout), their logs, outputs, retries and cancellations.
import { mkdirSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { InvalidArgumentError, type Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { AtriumProblem, unwrap, type AtriumClient, type AtriumEvent, type Schemas } from '@atrium/client';
import type { RegisterCommands } from '../../program.js';
import { CliError, exitCodes, type CliContext } from '../context.js';
import { liveStatus, parseSeconds, withTimeout } from '../progress.js';
import { downloadFile, fileColumns } from './files.js';

type Pipeline = Schemas['Pipeline'];
type Run = Schemas['Run'];
type Job = Schemas['Job'];

const taskName = (task: { module: string; function: string }) => `${task.module}.${task.function}`;

/** A pipeline named by its id (pipe_…) or by its name, when exactly one pipeline of the project has it. */
export async function resolvePipeline(
  client: AtriumClient,
  projectId: string,
  reference: string,
): Promise<Pipeline> {
  if (/^pipe_[0-9A-Za-z]+$/.test(reference))
    return unwrap(
      await client.GET('/projects/{projectId}/pipelines/{pipelineId}', {
        params: { path: { projectId, pipelineId: reference } },
      }),
    );
  const found: Pipeline[] = [];
  for await (const pipeline of client.paginate('/projects/{projectId}/pipelines', {
    params: { path: { projectId } },
  }))
    if (pipeline.name === reference) found.push(pipeline);
  if (found.length === 0)
    throw new CliError(`${projectId} has no pipeline named ${reference}`, exitCodes.notFound);
  if (found.length > 1)
    throw new CliError(
      `${projectId} has several pipelines named ${reference}: use an id (${found.map((p) => p.id).join(', ')})`,
      exitCodes.usage,
    );
  return found[0]!;
}

/** A pipeline definition (PipelineCreate) from a YAML or JSON file, or standard input (`-`). */
function readPipelineFile(path: string): Schemas['PipelineCreate'] {
  let text: string;
  try {
    text = readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (error) {
    throw new CliError(`cannot read ${path}`, exitCodes.usage, (error as Error).message);
  }
  let value: unknown;
  try {
    // YAML is a superset of JSON: one parser reads both.
    value = parseYaml(text);
  } catch (error) {
    throw new CliError(`${path} is neither YAML nor JSON`, exitCodes.usage, (error as Error).message);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new CliError(
      `${path} must hold a pipeline: {name, description?, tasks: [{module, function, options?}]}`,
      exitCodes.usage,
    );
  // The server validates the rest against the spec (400) and each task's options (422).
  return value as Schemas['PipelineCreate'];
}

function showPipeline(ctx: CliContext, pipeline: Pipeline): void {
  ctx.fields(pipeline, [
    ['id', pipeline.id],
    ['name', pipeline.name],
    ['description', pipeline.description || '-'],
    ['enabled', pipeline.enabled],
    ['created', pipeline.created_at],
  ]);
  if (ctx.json) return;
  ctx.out('');
  ctx.table(
    pipeline.tasks.map((task, index) => ({ index, ...task })),
    [
      { header: 'TASK', value: (t) => t.index },
      { header: 'FUNCTION', value: (t) => taskName(t) },
      { header: 'OPTIONS', value: (t) => t.options ?? {} },
    ],
  );
}

/** Every output of the run, in task order. */
const outputIds = (run: Run) => run.jobs.flatMap((job) => job.output_file_ids);

function showRun(ctx: CliContext, run: Run): void {
  ctx.fields(run, [
    ['id', run.id],
    ['name', run.name],
    ['pipeline', run.pipeline_id],
    ['status', run.status],
    ['inputs', run.input_file_ids.join(' ')],
    ['outputs', outputIds(run).join(' ') || '-'],
    ['created', run.created_at],
    ['finished', run.finished_at],
  ]);
  if (ctx.json) return;
  ctx.out('');
  ctx.table(run.jobs, [
    { header: 'TASK', value: (j) => j.task_index },
    { header: 'JOB', value: (j) => j.id },
    { header: 'FUNCTION', value: (j) => taskName(j) },
    { header: 'STATUS', value: (j) => j.status },
    { header: 'ATTEMPTS', value: (j) => `${j.attempts}/${j.max_attempts}` },
    { header: 'OUTPUTS', value: (j) => j.output_file_ids.join(' ') || '-' },
  ]);
}

async function getRun(client: AtriumClient, projectId: string, runId: string, signal?: AbortSignal) {
  return unwrap(
    await client.GET('/projects/{projectId}/runs/{runId}', {
      params: { path: { projectId, runId } },
      ...(signal ? { signal } : {}),
    }),
  );
}

/** The live line of a run's event: its tasks each have one, the run's own events are logged. */
function showRunEvent(status: ReturnType<typeof liveStatus>, event: AtriumEvent): void {
  const taskIndex = event.data.data?.task_index;
  const text = event.data.message ?? event.event;
  if (event.event.startsWith('job-') && typeof taskIndex === 'number')
    status.set(`task ${taskIndex}`, `${event.event.slice('job-'.length).padEnd(9)} ${text}`);
  else status.log(`${event.event}: ${text}`);
}

/**
 * Follows a run's events until it has ended (the server ends the stream then; a stream that ends
 * early, as when the server restarts, is followed again after its last event). Answers the run.
 * `afterEventId` skips the events up to it (a retried run's earlier attempt).
 */
export async function watchRun(
  ctx: CliContext,
  projectId: string,
  runId: string,
  timeoutSeconds: number | undefined,
  afterEventId?: string,
): Promise<Run> {
  const client = ctx.client();
  const status = liveStatus(ctx.io);
  try {
    return await withTimeout(timeoutSeconds, `run ${runId} was still running`, async (signal) => {
      let lastEventId = afterEventId;
      for (let round = 0; round < 1000; round++) {
        for await (const event of client.events('/projects/{projectId}/runs/{runId}/events', {
          params: { path: { projectId, runId } },
          ...(lastEventId === undefined ? {} : { lastEventId }),
          ...(signal ? { signal } : {}),
        })) {
          lastEventId = event.id;
          showRunEvent(status, event);
        }
        const run = await getRun(client, projectId, runId, signal);
        if (run.status !== 'running') return run;
      }
      throw new CliError(`the events of run ${runId} keep ending while it runs`, exitCodes.unavailable);
    });
  } finally {
    status.stop();
  }
}

/** The id of the run's latest stored event (undefined when it has none). */
async function lastRunEventId(client: AtriumClient, projectId: string, runId: string) {
  let last: string | undefined;
  for await (const event of client.events('/projects/{projectId}/runs/{runId}/events', {
    params: { path: { projectId, runId } },
    follow: false,
  }))
    last = event.id;
  return last;
}

/** Shows how the run ended; a run that did not finish is exit code 1, with the failed task's error. */
function settleRun(ctx: CliContext, run: Run): void {
  showRun(ctx, run);
  if (run.status === 'finished') return;
  const failed =
    run.jobs.find((j) => j.status === 'failed') ?? run.jobs.find((j) => j.status === 'cancelled');
  const message = failed?.error?.message;
  throw new CliError(
    `run ${run.id} ${run.status}${failed ? ` at task ${failed.task_index} (${taskName(failed)})` : ''}`,
    exitCodes.failure,
    [
      typeof message === 'string' ? message : undefined,
      failed ? `its log: atrium runs logs ${run.id} --job ${failed.id}` : undefined,
      `run it again from there: atrium runs retry ${run.id} --watch`,
    ]
      .filter(Boolean)
      .join('\n'),
  );
}

/** The run's jobs `--job` names: a job id, or a task index; all of them when it names none. */
function selectJobs(run: Run, reference: string | undefined): Job[] {
  if (reference === undefined) return run.jobs;
  const job = run.jobs.find((j) => j.id === reference || String(j.task_index) === reference);
  if (!job)
    throw new CliError(
      `run ${run.id} has no job ${reference} (a job id or a task index)`,
      exitCodes.notFound,
    );
  return [job];
}

async function writeJobLog(
  ctx: CliContext,
  projectId: string,
  run: Run,
  job: Job,
  query: { tail?: number; follow?: boolean },
): Promise<void> {
  const { data, error, response } = await ctx
    .client()
    .GET('/projects/{projectId}/runs/{runId}/jobs/{jobId}/logs', {
      params: { path: { projectId, runId: run.id, jobId: job.id }, query },
      parseAs: 'stream',
    });
  if (!response.ok) throw AtriumProblem.fromResponse(error, response);
  if (!data) return;
  const stdout = ctx.io.stdout;
  for await (const chunk of data as AsyncIterable<Uint8Array>)
    if (!stdout.write(chunk)) await once(stdout, 'drain');
}

/** --watch and --timeout, for the commands that start a run. */
const withWatchOptions = (command: Command) =>
  command
    .option('-w, --watch', 'follow it to its end (exit 0 finished, 1 failed or cancelled)', false)
    .option('--timeout <seconds>', 'stop following after this long (exit 7)', parseSeconds);

function parseLineCount(value: string): number {
  const lines = Number(value);
  if (!Number.isInteger(lines) || lines < 1) throw new InvalidArgumentError('not a number of lines');
  return lines;
}

const runStatuses: Run['status'][] = ['running', 'finished', 'failed', 'cancelled'];

export const registerPipelines: RegisterCommands = (program, act) => {
  const modules = program.command('modules').description('the functions pipelines are made of');

  modules
    .command('ls')
    .alias('list')
    .description('list the modules and their functions')
    .action(
      act(async (ctx) => {
        const rows: Schemas['Module'][] = [];
        for await (const module of ctx.client({ anonymous: true }).paginate('/modules')) rows.push(module);
        ctx.table(rows, [
          { header: 'MODULE', value: (m) => m.name },
          { header: 'VERSION', value: (m) => m.version },
          { header: 'FUNCTIONS', value: (m) => m.functions.map((f) => f.name).join(',') },
          { header: 'TITLE', value: (m) => m.title },
        ]);
      }),
    );

  modules
    .command('show')
    .description("a module's functions, or one function's options (a JSON Schema), inputs and outputs")
    .argument('<module>', 'a module name')
    .argument('[function]', 'one of its functions')
    .action(
      act(async (ctx, [moduleName, functionName]) => {
        const client = ctx.client({ anonymous: true });
        if (functionName) {
          const fn = unwrap(
            await client.GET('/modules/{moduleName}/functions/{functionName}', {
              params: { path: { moduleName: moduleName!, functionName } },
            }),
          );
          ctx.result(fn, () => {
            ctx.out(`${taskName({ module: fn.module, function: fn.name })}: ${fn.title}`);
            if (fn.description) ctx.out(fn.description.trim());
            ctx.out(
              `inputs: ${fn.inputs.min} to ${fn.inputs.max ?? 'any number of'} files of ${fn.inputs.media_types.join(', ')}`,
            );
            ctx.out(
              `output: ${fn.output}; runs on ${fn.runs_on.join(', ')}; timeout ${fn.timeout_seconds} s`,
            );
            ctx.out(`options (JSON Schema):\n${JSON.stringify(fn.options_schema, null, 2)}`);
          });
          return;
        }
        const module = unwrap(
          await client.GET('/modules/{moduleName}', { params: { path: { moduleName: moduleName! } } }),
        );
        ctx.result(module, () => {
          ctx.out(`${module.name} ${module.version}: ${module.title}`);
          if (module.description) ctx.out(module.description.trim());
          ctx.out('');
          ctx.table(module.functions, [
            { header: 'FUNCTION', value: (f) => f.name },
            { header: 'INPUTS', value: (f) => f.inputs.media_types.join(',') },
            { header: 'OUTPUT', value: (f) => f.output },
            { header: 'TITLE', value: (f) => f.title },
          ]);
        });
      }),
    );

  const pipelines = program
    .command('pipelines')
    .description("a project's pipelines: tasks of module functions");

  pipelines
    .command('ls')
    .alias('list')
    .description("list the project's pipelines, newest first")
    .action(
      act(async (ctx) => {
        const projectId = await ctx.project();
        const rows: Pipeline[] = [];
        for await (const pipeline of ctx.client().paginate('/projects/{projectId}/pipelines', {
          params: { path: { projectId } },
        }))
          rows.push(pipeline);
        ctx.table(rows, [
          { header: 'ID', value: (p) => p.id },
          { header: 'NAME', value: (p) => p.name },
          { header: 'TASKS', value: (p) => p.tasks.map(taskName).join(' → ') },
          { header: 'ENABLED', value: (p) => p.enabled },
          { header: 'CREATED', value: (p) => p.created_at },
        ]);
      }),
    );

  pipelines
    .command('show')
    .description('one pipeline and its tasks')
    .argument('<pipeline>', 'a pipeline id, or its name')
    .action(
      act(async (ctx, [reference]) => {
        const projectId = await ctx.project();
        showPipeline(ctx, await resolvePipeline(ctx.client(), projectId, reference!));
      }),
    );

  pipelines
    .command('create')
    .description('create a pipeline from a YAML or JSON file')
    .addHelpText(
      'after',
      '\nThe file holds {name, description?, enabled?, tasks: [{module, function, options?}]}, for example:\n' +
        '  name: shout\n  tasks:\n    - { module: text, function: change-case, options: { case: upper } }\n    - { module: text, function: word-count }\n' +
        'Each task\'s options are checked against its function\'s schema ("atrium modules show MODULE FUNCTION").',
    )
    .requiredOption('-f, --file <path>', 'the pipeline, in YAML or JSON (- for standard input)')
    .option('--name <name>', "the pipeline's name (instead of the file's)")
    .action(
      act(async (ctx, _args, options) => {
        const body = readPipelineFile(options.file as string);
        if (options.name) body.name = options.name as string;
        const projectId = await ctx.project();
        const pipeline = unwrap(
          await ctx
            .client()
            .POST('/projects/{projectId}/pipelines', { params: { path: { projectId } }, body }),
        );
        showPipeline(ctx, pipeline);
      }),
    );

  pipelines
    .command('rm')
    .alias('delete')
    .description('delete pipelines (their runs stay)')
    .argument('<pipeline...>', 'pipeline ids or names')
    .action(
      act(async (ctx, _args, _options, command) => {
        const projectId = await ctx.project();
        const deleted: string[] = [];
        for (const reference of command.processedArgs[0] as string[]) {
          const pipeline = await resolvePipeline(ctx.client(), projectId, reference);
          unwrap(
            await ctx.client().DELETE('/projects/{projectId}/pipelines/{pipelineId}', {
              params: { path: { projectId, pipelineId: pipeline.id } },
            }),
          );
          deleted.push(pipeline.id);
          if (!ctx.json) ctx.out(`deleted ${pipeline.id} (${pipeline.name})`);
        }
        if (ctx.json) ctx.out(JSON.stringify({ deleted }));
      }),
    );

  const runs = program.command('runs').description('runs of pipelines over files');

  withWatchOptions(
    runs
      .command('start')
      .description(
        'run a pipeline over input files (the first task gets them, each next one the outputs before it)',
      )
      .argument('<pipeline>', 'a pipeline id, or its name')
      .requiredOption('-i, --input <file-id...>', 'input file ids, in order ("atrium files put" prints them)')
      .option('--name <name>', "the run's name (default: the pipeline's)"),
  ).action(
    act(async (ctx, [reference], options) => {
      const projectId = await ctx.project();
      const client = ctx.client();
      const pipeline = await resolvePipeline(client, projectId, reference!);
      const operation = unwrap(
        await client.POST('/projects/{projectId}/runs', {
          params: { path: { projectId } },
          body: {
            pipeline_id: pipeline.id,
            input_file_ids: options.input as string[],
            ...(options.name ? { name: options.name as string } : {}),
          },
        }),
      );
      const runId = operation.target?.id;
      if (!runId) throw new CliError('the server answered an operation without its run', exitCodes.failure);
      if (!options.watch) {
        showRun(ctx, await getRun(client, projectId, runId));
        return;
      }
      ctx.note(
        `run ${runId} of ${pipeline.name} started; following it (Ctrl-C stops following, not the run)`,
      );
      settleRun(ctx, await watchRun(ctx, projectId, runId, options.timeout as number | undefined));
    }),
  );

  runs
    .command('ls')
    .alias('list')
    .description("list the project's runs, newest first")
    .option('--pipeline <pipeline>', 'runs of this pipeline (an id or a name)')
    .option('--status <status>', `only runs in this status (${runStatuses.join(', ')})`)
    .action(
      act(async (ctx, _args, options) => {
        const projectId = await ctx.project();
        const client = ctx.client();
        const pipelineId = options.pipeline
          ? (await resolvePipeline(client, projectId, options.pipeline as string)).id
          : undefined;
        const rows: Run[] = [];
        for await (const run of client.paginate('/projects/{projectId}/runs', {
          params: {
            path: { projectId },
            query: {
              ...(pipelineId ? { pipeline_id: pipelineId } : {}),
              ...(options.status ? { status: options.status as Run['status'] } : {}),
            },
          },
        }))
          rows.push(run);
        ctx.table(rows, [
          { header: 'ID', value: (r) => r.id },
          { header: 'NAME', value: (r) => r.name },
          { header: 'STATUS', value: (r) => r.status },
          {
            header: 'TASKS',
            value: (r) => `${r.jobs.filter((j) => j.status === 'finished').length}/${r.jobs.length}`,
          },
          { header: 'CREATED', value: (r) => r.created_at },
          { header: 'FINISHED', value: (r) => r.finished_at },
        ]);
      }),
    );

  runs
    .command('show')
    .description('one run: its status, inputs, jobs and output files')
    .argument('<run>', 'a run id')
    .action(
      act(async (ctx, [runId]) => {
        const projectId = await ctx.project();
        showRun(ctx, await getRun(ctx.client(), projectId, runId!));
      }),
    );

  runs
    .command('watch')
    .description(
      "follow a run's tasks live until it ends (exit 0 finished, 1 failed or cancelled, 7 at --timeout)",
    )
    .argument('<run>', 'a run id')
    .option('--timeout <seconds>', 'stop following after this long (exit 7)', parseSeconds)
    .action(
      act(async (ctx, [runId], options) => {
        const projectId = await ctx.project();
        settleRun(ctx, await watchRun(ctx, projectId, runId!, options.timeout as number | undefined));
      }),
    );

  runs
    .command('logs')
    .description("what a run's jobs wrote (every attempt), task after task")
    .argument('<run>', 'a run id')
    .option('--job <job>', 'only this job (its id, or its task index)')
    .option('--tail <lines>', 'only the last lines of each job', parseLineCount)
    .option('-f, --follow', 'keep writing new lines until each job ends', false)
    .action(
      act(async (ctx, [runId], options) => {
        const projectId = await ctx.project();
        const run = await getRun(ctx.client(), projectId, runId!);
        const jobs = selectJobs(run, options.job as string | undefined);
        for (const job of jobs) {
          if (jobs.length > 1) ctx.out(`==> task ${job.task_index} (${taskName(job)}) ${job.id} <==`);
          await writeJobLog(ctx, projectId, run, job, {
            ...(options.tail ? { tail: options.tail as number } : {}),
            ...(options.follow ? { follow: true } : {}),
          });
        }
      }),
    );

  runs
    .command('outputs')
    .description('the files a run produced, and with --download, their content (sha256 checked)')
    .argument('<run>', 'a run id')
    .option('-d, --download <dir>', 'download every output into this directory')
    .option('--force', 'replace files of the same names there', false)
    .action(
      act(async (ctx, [runId], options) => {
        const projectId = await ctx.project();
        const client = ctx.client();
        const run = await getRun(client, projectId, runId!);
        const files: Schemas['File'][] = [];
        for await (const file of client.paginate('/projects/{projectId}/files', {
          params: { path: { projectId }, query: { run_id: run.id } },
        }))
          files.push(file);
        const taskOf = new Map(run.jobs.map((j) => [j.id, j.task_index]));
        files.sort((a, b) => (taskOf.get(a.job_id ?? '') ?? 0) - (taskOf.get(b.job_id ?? '') ?? 0));
        const directory = options.download as string | undefined;
        if (!directory) {
          ctx.table(files, [{ header: 'TASK', value: (f) => taskOf.get(f.job_id ?? '') }, ...fileColumns]);
          return;
        }
        mkdirSync(directory, { recursive: true });
        const written: { id: string; name: string; path: string }[] = [];
        for (const file of files) {
          const { path } = await downloadFile(ctx, projectId, file.id, {
            output: directory,
            force: options.force === true,
          });
          written.push({ id: file.id, name: file.name, path });
        }
        ctx.result(written, () => ctx.out(written.map((w) => w.path).join('\n')));
      }),
    );

  withWatchOptions(
    runs
      .command('retry')
      .description(
        'run a failed or cancelled run again from its failed task (the tasks before keep their outputs)',
      )
      .argument('<run>', 'a run id'),
  ).action(
    act(async (ctx, [runId], options) => {
      const projectId = await ctx.project();
      const client = ctx.client();
      // Followed from here on: what the attempt before did is already known.
      const seen = options.watch ? await lastRunEventId(client, projectId, runId!) : undefined;
      unwrap(
        await client.POST('/projects/{projectId}/runs/{runId}/retries', {
          params: { path: { projectId, runId: runId! } },
        }),
      );
      if (!options.watch) {
        showRun(ctx, await getRun(client, projectId, runId!));
        return;
      }
      ctx.note(`run ${runId} retried; following it`);
      settleRun(ctx, await watchRun(ctx, projectId, runId!, options.timeout as number | undefined, seen));
    }),
  );

  runs
    .command('cancel')
    .description('cancel a run (its running task is stopped; 409 when it has ended)')
    .argument('<run>', 'a run id')
    .action(
      act(async (ctx, [runId]) => {
        const projectId = await ctx.project();
        showRun(
          ctx,
          unwrap(
            await ctx.client().POST('/projects/{projectId}/runs/{runId}/cancellation', {
              params: { path: { projectId, runId: runId! } },
            }),
          ),
        );
      }),
    );

  runs
    .command('rm')
    .alias('delete')
    .description('delete ended runs, their logs and the files they produced')
    .argument('<run...>', 'run ids')
    .action(
      act(async (ctx, _args, _options, command) => {
        const projectId = await ctx.project();
        const ids = command.processedArgs[0] as string[];
        for (const runId of ids) {
          unwrap(
            await ctx.client().DELETE('/projects/{projectId}/runs/{runId}', {
              params: { path: { projectId, runId } },
            }),
          );
          if (!ctx.json) ctx.out(`deleted ${runId}`);
        }
        if (ctx.json) ctx.out(JSON.stringify({ deleted: ids }));
      }),
    );
};
