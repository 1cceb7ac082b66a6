// Pipeline task throughput on the local backend: one-task runs of the demo function text.word-count
// over an uploaded file, through the real `atrium serve` (its own workers off) and separate
// `atrium worker` processes, as a lab runs them; next to the same function's workload started
// directly, one process per task, at the same concurrency.
//
// Atrium: BENCH_TASK_WORKERS `atrium worker --concurrency BENCH_TASK_SLOTS` processes share the
// server's database and data directory. Runs are submitted (POST …/runs) in a closed loop that
// keeps twice as many runs open as there are slots, so that a slot that frees finds work queued
// (what an idle worker's poll costs is the scheduler's figure, not this one). BENCH_TASKS runs per
// round. tasks/s is the steady state: from the moment as many runs finished as there are slots
// until the window of open runs stops being full (the start, where idle workers find their first
// jobs on their poll, and the last 2 × slots runs draining are left out). Every run must finish (a
// figure with failures means nothing): the bench fails otherwise, with the job's error.
// "submit → done" is the run's created_at → finished_at; "running" is its job's started_at →
// finished_at, what a worker spends on it (the rest is waiting in the queue).
// Baseline: `node text.mjs word-count` spawned directly in a prepared work directory (the
// execution contract's input.json and input/), the same number at once as Atrium has slots, timed
// from the spawn to the exit; each must exit 0 and write output.json. Its tasks/s leaves out the
// first and the last as many as run at once. "ratio" is Atrium's tasks/s over the baseline's: 1.00
// would be a task costing no more than starting its program. "CPU ms/task" is the CPU time per task
// of every process involved (/proc, 10 ms ticks): the API server, the workers, and the task
// processes (runners and workloads, ended or still running).
// The cases take turns over BENCH_TASK_ROUNDS rounds; the median round (by tasks/s) is shown.
//
// Standalone: `node scripts/bench/tasks.mjs` (after `npm run build`): SQLite in a temporary
// directory, and PostgreSQL too when ATRIUM_BENCH_DATABASE_URL is an admin postgres:// URL (a
// scratch database is created there and dropped afterwards).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, sep } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  BenchFailure,
  callApi,
  cleanUp,
  count,
  ms,
  onCleanUp,
  printTable,
  ratio,
  signal,
  sleep,
  withPostgresDatabase,
  withTimeout,
  standaloneScratch,
} from './harness.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const cliScript = join(repo, 'dist', 'src', 'cli.js');
const textScript = join(repo, 'src', 'demo', 'modules', 'text', 'text.mjs');
const databaseModule = join(repo, 'dist', 'src', 'db', 'database.js');

const projectPath = '/api/v1/projects/user-admin';
const sampleText = 'The quick brown fox jumps over the lazy dog.\nThe dog sleeps; the fox runs on.\n';
const startupTimeoutMs = 60_000;
// Above the worker's own grace for running jobs (scheduler.stopGraceMs, 10 s).
const stopTimeoutMs = 20_000;
const taskTimeoutMs = 120_000;
const donePollMs = 10;
const leftoverGraceMs = 3_000;

// ---- Processes ------------------------------------------------------------------------------------

/** The PIDs of processes working in `dir` or naming it on their command line (Linux /proc). */
function processesUnder(dir) {
  const found = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cwd = readlinkSync(`/proc/${entry}/cwd`);
      const commandLine = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cwd === dir || cwd.startsWith(`${dir}${sep}`) || commandLine.includes(dir))
        found.push(Number(entry));
    } catch {
      // Gone meanwhile, or a zombie.
    }
  }
  return found;
}

/**
 * A process's CPU time (ms) and its parent, from /proc/<pid>/stat (clock ticks of 10 ms): `own`,
 * and `children`: that of the children it has waited for (which includes theirs).
 */
function statOf(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  const tick = 10;
  return {
    parent: fields[1],
    own: (fields[11] + fields[12]) * tick,
    children: (fields[13] + fields[14]) * tick,
  };
}

/** The CPU time (ms) of what runs under `pid`: its children that ended and those that still run. */
function childrenCpu(pid) {
  let total = statOf(pid).children;
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      const child = statOf(Number(entry));
      if (child.parent === pid) total += child.own + child.children;
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}

/**
 * What the lab's processes used: the API server, the workers, and the task processes they run
 * (runners and workloads, whether a worker waits for them or a runner of its own does).
 */
function labCpu(lab) {
  const [server, ...workers] = lab.processes.map((p) => p.child.pid);
  return {
    server: statOf(server).own,
    workers: workers.reduce((sum, pid) => sum + statOf(pid).own, 0),
    tasks: workers.reduce((sum, pid) => sum + childrenCpu(pid), 0),
  };
}

const exitOf = (child) =>
  new Promise((resolve) => {
    child.once('exit', (code, signalName) => resolve({ code, signal: signalName }));
    child.once('error', (error) => resolve({ error }));
  });

/** An `atrium` command (serve, worker …) with the bench's environment; its output is kept. */
function startAtrium(args, env) {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('ATRIUM_')),
  );
  const child = spawn(process.execPath, [cliScript, ...args], {
    env: { ...inherited, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = exitOf(child);
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk.toString('utf8')).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  return {
    child,
    exited,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
      signal(child.pid, 'SIGTERM');
      const gone = await Promise.race([exited.then(() => true), sleep(stopTimeoutMs).then(() => false)]);
      if (!gone) {
        signal(child.pid, 'SIGKILL');
        await exited;
      }
    },
  };
}

/** `atrium serve` without workers, and `workers` × `atrium worker --concurrency slots`. */
async function startLab(dataDir, databaseUrl, { workers, slots }) {
  const token = `atr_${randomBytes(16).toString('hex')}`;
  const configFile = join(dataDir, 'atrium.yaml');
  // One project takes every slot: its concurrent-jobs quota is above them, and the rate limiter
  // is off (the bench submits faster than a person).
  writeFileSync(
    configFile,
    [
      'server:',
      '  rateLimit: { enabled: false }',
      'regions:',
      '  - id: local',
      '    name: This machine',
      '    backend: { type: local }',
      '    quotas:',
      `      default: { cpu: '64', memory: 64Gi, gpu: 0, services: 10, concurrent_jobs: ${4 * workers * slots}, storage: 10Gi }`,
      '',
    ].join('\n'),
  );
  const env = {
    ATRIUM_CONFIG: configFile,
    ATRIUM_DATA_DIR: dataDir,
    ...(databaseUrl ? { ATRIUM_DATABASE_URL: databaseUrl } : {}),
    ATRIUM_ADMIN_TOKEN: token,
    ATRIUM_LOG_LEVEL: 'warn',
    ATRIUM_HOST: '127.0.0.1',
    ATRIUM_PORT: '0',
    ATRIUM_WORKERS: '0',
  };
  const processes = [];
  const lab = {
    token,
    port: 0,
    processes,
    async stop() {
      await Promise.all(processes.map((p) => p.stop()));
    },
  };
  try {
    const server = startAtrium(['serve'], env);
    processes.push(server);
    const listening = (async () => {
      for (;;) {
        const match = /listening on http:\/\/127\.0\.0\.1:([0-9]+)/.exec(server.output());
        if (match) return Number(match[1]);
        if (server.child.exitCode !== null) {
          throw new BenchFailure(`atrium serve exited before listening:\n${server.output()}`);
        }
        await sleep(20);
      }
    })();
    lab.port = await withTimeout(listening, startupTimeoutMs, 'starting atrium serve');
    const deadline = performance.now() + startupTimeoutMs;
    while ((await callApi(lab.port, 'GET', '/readyz')).status !== 200) {
      if (performance.now() > deadline) throw new BenchFailure('atrium serve did not become ready');
      await sleep(20);
    }
    // The server has migrated the database: the workers start on a schema that is there.
    for (let i = 0; i < workers; i++) {
      processes.push(startAtrium(['worker', '--concurrency', String(slots)], env));
    }
    return lab;
  } catch (error) {
    await lab.stop();
    throw error;
  }
}

// ---- Atrium: one-task runs ------------------------------------------------------------------------

async function uploadText(lab) {
  const response = await fetch(`http://127.0.0.1:${lab.port}${projectPath}/files?name=fox.txt`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${lab.token}`, 'Content-Type': 'application/octet-stream' },
    body: sampleText,
    signal: AbortSignal.timeout(startupTimeoutMs),
  });
  const body = await response.text();
  if (response.status !== 201)
    throw new BenchFailure(`uploading the input answered ${response.status}: ${body}`);
  const file = JSON.parse(body);
  if (!file.media_type.startsWith('text/'))
    throw new BenchFailure(`the input is ${file.media_type}, not text`);
  return file.id;
}

/** Why a run did not finish, from its jobs. */
async function describeRun(lab, runId) {
  const run = await callApi(lab.port, 'GET', `${projectPath}/runs/${runId}`, { token: lab.token });
  return JSON.stringify(run.body).slice(0, 1500);
}

/**
 * `total` runs of the one-task pipeline, `open` of them submitted and unfinished at any time;
 * resolves with tasks/s and each run's timings, once every run has finished.
 */
async function atriumRound(lab, knex, { pipelineId, fileId }, total, { open, slots }) {
  const pending = new Set();
  const finished = [];
  let submitted = 0;
  const cpuBefore = labCpu(lab);
  const started = performance.now();
  const submit = async () => {
    submitted += 1;
    const response = await callApi(lab.port, 'POST', `${projectPath}/runs`, {
      token: lab.token,
      body: { pipeline_id: pipelineId, input_file_ids: [fileId] },
      expect: [202],
    });
    pending.add(response.body.target.id);
  };
  const deadline = performance.now() + taskTimeoutMs + total * 1000;
  while (finished.length < total) {
    const submitting = [];
    while (submitted < total && pending.size + submitting.length < open) submitting.push(submit());
    await Promise.all(submitting);
    if (performance.now() > deadline) {
      throw new BenchFailure(
        `${pending.size} runs did not end in time; one: ${await describeRun(lab, [...pending][0])}`,
      );
    }
    await sleep(donePollMs);
    const ended = await knex('runs')
      .whereIn('id', [...pending])
      .whereIn('status', ['finished', 'failed', 'cancelled'])
      .select('id', 'status');
    for (const run of ended) {
      if (run.status !== 'finished') {
        throw new BenchFailure(`run ${run.id} ended ${run.status}: ${await describeRun(lab, run.id)}`);
      }
      pending.delete(run.id);
      finished.push(run.id);
    }
  }
  const elapsed = performance.now() - started;
  const cpuAfter = labCpu(lab);
  const rows = await knex('jobs')
    .join('runs', 'runs.id', 'jobs.run_id')
    .whereIn('runs.id', finished)
    .select('runs.created_at', 'runs.finished_at', 'jobs.started_at', { jobFinishedAt: 'jobs.finished_at' });
  return {
    tasksPerSecond: steadyRate(
      rows.map((r) => Date.parse(r.finished_at)),
      { skip: slots, tail: open },
      (total * 1000) / elapsed,
    ),
    latencies: rows.map((r) => Date.parse(r.finished_at) - Date.parse(r.created_at)),
    running: rows.map((r) => Date.parse(r.jobFinishedAt) - Date.parse(r.started_at)),
    cpu: Object.fromEntries(
      Object.keys(cpuAfter).map((part) => [part, (cpuAfter[part] - cpuBefore[part]) / total]),
    ),
  };
}

// ---- The baseline: the workload spawned directly ---------------------------------------------------

/** A work directory as the execution contract prepares it: input.json and input/fox.txt. */
function prepareWorkDir(dir) {
  mkdirSync(join(dir, 'input'), { recursive: true });
  writeFileSync(join(dir, 'input', 'fox.txt'), sampleText);
  writeFileSync(
    join(dir, 'input.json'),
    JSON.stringify({
      function: 'word-count',
      options: {},
      files: [{ name: 'fox.txt', path: 'input/fox.txt', media_type: 'text/plain', tags: {} }],
    }),
  );
}

function spawnWorkload(dir, children) {
  const started = performance.now();
  const child = spawn(process.execPath, [textScript, 'word-count'], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: dir, ATRIUM_WORK_DIR: dir },
    stdio: 'ignore',
  });
  children.add(child);
  return exitOf(child).then((how) => {
    children.delete(child);
    if (how.code !== 0) throw new BenchFailure(`text.mjs word-count ended ${JSON.stringify(how)} in ${dir}`);
    JSON.parse(readFileSync(join(dir, 'output.json'), 'utf8'));
    const ended = performance.now();
    return { latency: ended - started, ended };
  });
}

async function baselineRound(scratch, total, concurrency, children) {
  const dirs = Array.from({ length: total }, (_, i) => join(scratch, `w${i}`));
  for (const dir of dirs) prepareWorkDir(dir);
  const latencies = [];
  const ends = [];
  let next = 0;
  const cpuBefore = statOf(process.pid).children;
  const started = performance.now();
  const lane = async () => {
    while (next < total) {
      const { latency, ended } = await spawnWorkload(dirs[next++], children);
      latencies.push(latency);
      ends.push(ended);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  const elapsed = performance.now() - started;
  const cpu = { tasks: (statOf(process.pid).children - cpuBefore) / total };
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  const tasksPerSecond = steadyRate(ends, { skip: concurrency, tail: concurrency }, (total * 1000) / elapsed);
  return { tasksPerSecond, latencies, cpu };
}

// ---- The figure -------------------------------------------------------------------------------------

/**
 * Tasks/s in the steady state: between the `skip`-th end and the one `tail` before the last, when
 * every slot had work (not while the first ones start, nor while the last ones drain); `whole`
 * (over the whole round) when the round is too short to have such a window.
 */
function steadyRate(endTimes, { skip, tail }, whole) {
  const ends = [...endTimes].sort((a, b) => a - b);
  const first = skip - 1;
  const last = ends.length - 1 - tail;
  if (last - first < skip || ends[last] <= ends[first]) return whole;
  return ((last - first) * 1000) / (ends[last] - ends[first]);
}

/** The nearest-rank percentile of `values`. */
function percentile(values, fraction) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted[Math.max(0, Math.ceil(fraction * sorted.length) - 1)];
}

/** The median round by tasks/s, with the latencies of every round. */
function summary(rounds) {
  const sorted = [...rounds].sort((a, b) => a.tasksPerSecond - b.tasksPerSecond);
  return {
    tasksPerSecond: sorted[Math.floor((sorted.length - 1) / 2)].tasksPerSecond,
    low: sorted[0].tasksPerSecond,
    high: sorted[sorted.length - 1].tasksPerSecond,
    latencies: rounds.flatMap((r) => r.latencies),
    running: rounds.flatMap((r) => r.running ?? []),
    // CPU ms per task, by part, over all rounds.
    cpu: Object.fromEntries(
      Object.keys(rounds[0].cpu).map((part) => [
        part,
        rounds.reduce((sum, r) => sum + r.cpu[part], 0) / rounds.length,
      ]),
    ),
  };
}

async function figureEngine(settings, { label, databaseUrl, dataDir }, rows) {
  const { tasks, taskWorkers: workers, taskSlots: slots, taskRounds: rounds } = settings;
  const scratch = mkdtempSync(join(dataDir, 'tasks-'));
  const labDir = join(scratch, 'atrium');
  mkdirSync(labDir);
  const children = new Set();
  let left = [];
  let lab = null;
  let database = null;
  const stopEverything = async () => {
    for (const child of children) signal(child.pid, 'SIGKILL');
    await lab?.stop();
    lab = null;
    await database?.close();
    database = null;
    await settle(scratch);
    const left = processesUnder(scratch);
    for (const pid of left) signal(pid, 'SIGKILL');
    return left;
  };
  const forget = onCleanUp(async () => {
    await stopEverything();
    rmSync(scratch, { recursive: true, force: true });
  });
  try {
    const postgres = /^postgres(ql)?:\/\//i.test(databaseUrl ?? '');
    lab = await startLab(labDir, postgres ? databaseUrl : null, { workers, slots });
    const { openDatabase } = await import(pathToFileURL(databaseModule).href);
    database = openDatabase(postgres ? databaseUrl : null, labDir);
    const fileId = await uploadText(lab);
    const pipeline = await callApi(lab.port, 'POST', `${projectPath}/pipelines`, {
      token: lab.token,
      body: { name: 'word count', tasks: [{ module: 'text', function: 'word-count' }] },
      expect: [201],
    });
    const inputs = { pipelineId: pipeline.body.id, fileId };
    const open = 2 * workers * slots;
    // Warm-up, not counted: every worker has claimed, every code path has run once.
    await atriumRound(lab, database.knex, inputs, workers * slots, { open, slots: workers * slots });
    await baselineRound(scratch, workers * slots, workers * slots, children);
    const results = { atrium: [], baseline: [] };
    for (let round = 0; round < rounds; round++) {
      const cases = [
        async () =>
          results.atrium.push(
            await atriumRound(lab, database.knex, inputs, tasks, { open, slots: workers * slots }),
          ),
        async () => results.baseline.push(await baselineRound(scratch, tasks, workers * slots, children)),
      ];
      if (round % 2 === 1) cases.reverse();
      for (const run of cases) await run();
    }
    const atrium = summary(results.atrium);
    const baseline = summary(results.baseline);
    rows.push(
      [
        label,
        'direct spawn of text.mjs',
        count(baseline.tasksPerSecond),
        `${count(baseline.low)}–${count(baseline.high)}`,
        ms(percentile(baseline.latencies, 0.5)),
        ms(percentile(baseline.latencies, 0.95)),
        '',
        '',
        count(baseline.cpu.tasks),
        `process ${count(baseline.cpu.tasks)}`,
        '',
      ],
      [
        '',
        'Atrium one-task runs',
        count(atrium.tasksPerSecond),
        `${count(atrium.low)}–${count(atrium.high)}`,
        ms(percentile(atrium.latencies, 0.5)),
        ms(percentile(atrium.latencies, 0.95)),
        ms(percentile(atrium.running, 0.5)),
        ms(percentile(atrium.running, 0.95)),
        count(atrium.cpu.server + atrium.cpu.workers + atrium.cpu.tasks),
        `server ${count(atrium.cpu.server)} + workers ${count(atrium.cpu.workers)} + processes ${count(atrium.cpu.tasks)}`,
        ratio(atrium.tasksPerSecond / baseline.tasksPerSecond),
      ],
    );
  } finally {
    left = await stopEverything();
    forget();
    rmSync(scratch, { recursive: true, force: true });
  }
  // A task's process outlives the workers that ran it: that is a failure, whatever the figure.
  if (left.length > 0) {
    throw new BenchFailure(
      `${left.length} processes were still running under ${scratch} after the workers stopped`,
    );
  }
}

/**
 * The figure, on each of `engines` ({label, databaseUrl, dataDir}: a sqlite:// or postgres:// URL
 * and a directory for scratch data). Settings: tasks (per round), taskWorkers, taskSlots, taskRounds.
 */
export async function figurePipelineTasks(settings, engines) {
  const { tasks, taskWorkers: workers, taskSlots: slots, taskRounds: rounds } = settings;
  console.log(
    `Pipeline tasks: one-task runs of text.word-count, ${workers} \`atrium worker\` × ${slots} slots, ` +
      `${2 * workers * slots} runs open; ${rounds} rounds of ${tasks} runs, median round shown`,
  );
  const rows = [];
  for (const engine of engines) await figureEngine(settings, engine, rows);
  printTable(
    [
      'database',
      'tasks',
      'tasks/s',
      'range',
      'submit→done p50 ms',
      'p95 ms',
      'running p50 ms',
      'p95 ms',
      'CPU ms/task',
      'of which',
      'ratio',
    ],
    rows,
    2,
  );
}

// Waits for the processes left behind a moment before calling them left (a worker's SIGTERM lets its
// tasks end on their own first).
async function settle(dir) {
  const deadline = performance.now() + leftoverGraceMs;
  while (processesUnder(dir).length > 0 && performance.now() < deadline) await sleep(50);
}

function integerSetting(name, fallback, min, max) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new BenchFailure(`${name}=${raw}: expected an integer in [${min}, ${max}]`);
  }
  return value;
}

async function main() {
  const settings = {
    tasks: integerSetting('BENCH_TASKS', 120, 1, 100_000),
    taskWorkers: integerSetting('BENCH_TASK_WORKERS', 3, 1, 64),
    taskSlots: integerSetting('BENCH_TASK_SLOTS', 4, 1, 64),
    taskRounds: integerSetting('BENCH_TASK_ROUNDS', 3, 1, 100),
  };
  const scratch = standaloneScratch('atrium-bench-tasks-');
  console.log(`Node ${process.version}, ${availableParallelism()} CPUs\n`);
  try {
    const sqlite = { label: 'SQLite', databaseUrl: null, dataDir: scratch };
    const adminUrl = process.env.ATRIUM_BENCH_DATABASE_URL || null;
    if (adminUrl) {
      await withPostgresDatabase(adminUrl, scratch, ({ databaseUrl }) =>
        figurePipelineTasks(settings, [sqlite, { label: 'PostgreSQL', databaseUrl, dataDir: scratch }]),
      );
    } else {
      await figurePipelineTasks(settings, [sqlite]);
      console.log(
        '(PostgreSQL skipped: set ATRIUM_BENCH_DATABASE_URL to an admin postgres:// URL to include it)',
      );
    }
  } finally {
    await cleanUp();
  }
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  main().catch((error) => {
    console.error(
      `\nBENCH FAILED: ${error instanceof BenchFailure ? error.message : (error?.stack ?? error)}`,
    );
    cleanUp().finally(() => process.exit(1));
  });
}
