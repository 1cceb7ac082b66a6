// The user's `atrium` command line for data work, end to end against a started server: files put
// and get (content checked by sha256 both ways), a pipeline made from a YAML file, runs started and
// followed to their end (exit 0), failing (exit 1), retried, cancelled and timed out (exit 7), their
// logs and outputs downloaded; two benchmark runs, their results and their comparison as tables and
// as JSON; and files deleted (then exit 4).
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { demoModulesPath, repoRoot } from '../../src/paths.js';
import { cliUser, type CliUser } from '../fixtures/cli.js';
import { startedAtrium, type StartedAtrium } from '../fixtures/e2e.js';

const adminToken = 'atr_cliDataAdmin0123456789abcd';

interface FileJson {
  id: string;
  name: string;
  size: number;
  sha256: string;
  kind: string;
  tags: string[];
}
interface JobJson {
  id: string;
  task_index: number;
  status: string;
  output_file_ids: string[];
}
interface RunJson {
  id: string;
  status: string;
  jobs: JobJson[];
}
interface BenchmarkRunJson {
  id: string;
  status: string;
  score: number | null;
}

const sha256 = (content: Buffer | string) => createHash('sha256').update(content).digest('hex');

describe('atrium files, pipelines, runs and bench (sqlite)', () => {
  let atrium: StartedAtrium;
  let user: CliUser;
  let scratch: string;
  const notes = 'the cat sat on the mat\nthe end\n';
  let notesId: string;
  let blob: Buffer;
  let blobId: string;

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'atrium-cli-data-'));
    const configFile = join(scratch, 'atrium.yaml');
    writeFileSync(
      configFile,
      JSON.stringify({
        server: { rateLimit: { enabled: false } },
        modules: [
          { id: 'demo', name: 'Demo', path: demoModulesPath },
          { id: 'testing', name: 'Test modules', path: join(repoRoot, 'test', 'fixtures', 'modules') },
        ],
        // A failing task fails at once rather than after retries with backoff.
        scheduler: { maxAttempts: 1, pollMs: 50 },
      }),
    );
    atrium = await startedAtrium('sqlite', adminToken, { ATRIUM_CONFIG: configFile });
    user = cliUser();
    const login = await user.run(['login', '--server', atrium.server.url, '--token', adminToken]);
    expect(login.code).toBe(0);
  }, 90_000);

  afterAll(async () => {
    await atrium?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
    if (user) rmSync(user.home, { recursive: true, force: true });
  });

  describe('files put', () => {
    it('uploads files whose stored sha256 is the one of their content, with the tags given', async () => {
      writeFileSync(join(user.home, 'notes.txt'), notes);
      blob = randomBytes(3 * 1024 * 1024 + 17);
      writeFileSync(join(user.home, 'blob.bin'), blob);
      const uploaded = await user.json<FileJson[]>(['files', 'put', 'notes.txt', 'blob.bin', '--tag', 'cli']);
      expect(uploaded.map((f) => f.name)).toEqual(['notes.txt', 'blob.bin']);
      const [text, binary] = uploaded as [FileJson, FileJson];
      expect(text.sha256).toBe(sha256(notes));
      expect(binary.sha256).toBe(sha256(blob));
      expect(binary.size).toBe(blob.length);
      expect(binary.tags).toEqual(['cli']);
      notesId = text.id;
      blobId = binary.id;
    });

    it('prints the id of what it uploaded and says on stderr that the sha256 was verified', async () => {
      const result = await user.run(['files', 'put', '-', '--name', 'piped.txt'], { input: 'from a pipe\n' });
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/^file_\w+\n$/);
      const shown = await user.json<FileJson>(['files', 'show', result.stdout.trim()]);
      expect(shown).toMatchObject({ name: 'piped.txt', size: 12 });
      expect(result.stderr).toMatch(/uploaded - as file_\w+ \(12 B, sha256 [0-9a-f]{12}… verified\)/);
    });

    it('is a usage error (exit 2) for a path that does not exist', async () => {
      const result = await user.run(['files', 'put', 'missing.txt']);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('missing.txt: no such file');
    });
  });

  describe('files ls and files show', () => {
    it('lists the files carrying a tag, as a table and as JSON', async () => {
      const table = await user.run(['files', 'ls', '--tag', 'cli']);
      expect(table.code).toBe(0);
      expect(table.stdout.split('\n')[0]).toMatch(/^ID\s+NAME\s+SIZE\s+KIND\s+TAGS\s+CREATED/);
      expect(table.stdout).toContain(notesId);
      expect(table.stdout).not.toContain('piped.txt');
      const listed = await user.json<FileJson[]>(['files', 'ls', '--tag', 'cli']);
      expect(listed.map((f) => f.id).sort()).toEqual([notesId, blobId].sort());
    });

    it("shows one file's metadata", async () => {
      const shown = await user.run(['files', 'show', blobId]);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toMatch(new RegExp(`sha256:\\s+${sha256(blob)}`));
      expect((await user.json<FileJson>(['files', 'show', blobId])).size).toBe(blob.length);
    });
  });

  describe('files get', () => {
    it('downloads a file under its name, content checked, leaving no temporary file behind', async () => {
      const dir = mkdtempSync(join(user.home, 'get-'));
      const result = await user.run(['files', 'get', blobId, '-o', dir]);
      expect(result.code).toBe(0);
      expect(result.stderr).toContain('verified');
      expect(readdirSync(dir)).toEqual(['blob.bin']);
      expect(readFileSync(join(dir, 'blob.bin')).equals(blob)).toBe(true);
    });

    it('writes to standard output with -o -', async () => {
      const result = await user.run(['files', 'get', notesId, '-o', '-']);
      expect(result.code).toBe(0);
      expect(result.stdout).toBe(notes);
    });

    it('refuses to replace a file it was not told to (exit 5), and replaces it with --force', async () => {
      const dir = mkdtempSync(join(user.home, 'clobber-'));
      writeFileSync(join(dir, 'notes.txt'), 'mine');
      const refused = await user.run(['files', 'get', notesId, '-o', dir]);
      expect(refused.code).toBe(5);
      expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe('mine');
      expect((await user.run(['files', 'get', notesId, '-o', dir, '--force'])).code).toBe(0);
      expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe(notes);
    });
  });

  describe('pipelines create, ls, show', () => {
    it('creates a pipeline from a YAML file, its options stored with their defaults', async () => {
      writeFileSync(
        join(user.home, 'shout.yaml'),
        [
          'name: shout',
          'description: upper-case the text, then count its words',
          'tasks:',
          '  - { module: text, function: change-case, options: { case: upper } }',
          '  - { module: text, function: word-count, options: { top: 2 } }',
          '',
        ].join('\n'),
      );
      const pipeline = await user.json<{ id: string; tasks: { options: Record<string, unknown> }[] }>([
        'pipelines',
        'create',
        '--file',
        'shout.yaml',
      ]);
      expect(pipeline.id).toMatch(/^pipe_/);
      expect(pipeline.tasks[1]?.options).toEqual({ top: 2, case_sensitive: false });
      const table = await user.run(['pipelines', 'ls']);
      expect(table.stdout).toMatch(/shout\s+text\.change-case → text\.word-count\s+true/);
      const shown = await user.run(['pipelines', 'show', 'shout']);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toContain(pipeline.id);
    });

    it("refuses a task whose options do not fit its function's schema", async () => {
      writeFileSync(
        join(user.home, 'bad.json'),
        JSON.stringify({ name: 'bad', tasks: [{ module: 'text', function: 'change-case', options: {} }] }),
      );
      const result = await user.run(['pipelines', 'create', '--file', 'bad.json']);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('/tasks/0/options');
    });
  });

  describe('runs start --watch, runs logs, runs outputs', () => {
    let run: RunJson;

    it('follows a run to its end (exit 0), showing each task live on stderr', async () => {
      const result = await user.run([
        'runs',
        'start',
        'shout',
        '--input',
        notesId,
        '--watch',
        '--timeout',
        '90',
      ]);
      expect(result.code).toBe(0);
      expect(result.stderr).toMatch(/running\s+task 0 \(text\.change-case\)/);
      expect(result.stderr).toMatch(/finished\s+task 1 \(text\.word-count\)/);
      expect(result.stderr).toContain('run-finished');
      expect(result.stdout).toMatch(/status:\s+finished/);
      const runs = await user.json<RunJson[]>(['runs', 'ls', '--pipeline', 'shout']);
      expect(runs).toHaveLength(1);
      run = runs[0] as RunJson;
      expect(run.jobs.map((j) => j.status)).toEqual(['finished', 'finished']);
      const shown = await user.run(['runs', 'show', run.id]);
      for (const id of run.jobs.flatMap((j) => j.output_file_ids)) expect(shown.stdout).toContain(id);
    });

    it("prints every job's log, or one job's", async () => {
      const all = await user.run(['runs', 'logs', run.id]);
      expect(all.code).toBe(0);
      expect(all.stdout).toContain('==> task 0 (text.change-case)');
      expect(all.stdout).toContain('==> task 1 (text.word-count)');
      const one = await user.run(['runs', 'logs', run.id, '--job', '1']);
      expect(one.code).toBe(0);
      expect(one.stdout).not.toContain('==>');
      expect(one.stdout.length).toBeGreaterThan(0);
    });

    it('downloads the outputs with files get, their content what the functions make of the input', async () => {
      const [shouted] = run.jobs[0]?.output_file_ids ?? [];
      const [counted] = run.jobs[1]?.output_file_ids ?? [];
      const upper = await user.run(['files', 'get', shouted!, '-o', '-']);
      expect(upper.code).toBe(0);
      expect(upper.stdout).toBe(notes.toUpperCase());
      const dir = mkdtempSync(join(user.home, 'outputs-'));
      expect((await user.run(['files', 'get', counted!, '-o', join(dir, 'count.json')])).code).toBe(0);
      const count = JSON.parse(readFileSync(join(dir, 'count.json'), 'utf8')) as {
        total: { lines: number; words: number; top_words: { word: string; count: number }[] };
      };
      expect(count.total.lines).toBe(2);
      expect(count.total.words).toBe(8);
      expect(count.total.top_words[0]).toEqual({ word: 'the', count: 3 });
    });

    it('lists the outputs of a run and downloads all of them with --download', async () => {
      const dir = join(user.home, 'all-outputs');
      const result = await user.run(['runs', 'outputs', run.id, '--download', dir]);
      expect(result.code).toBe(0);
      expect(readdirSync(dir).sort()).toEqual(['notes.txt', 'word-count.json']);
      expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe(notes.toUpperCase());
      const table = await user.run(['runs', 'outputs', run.id]);
      expect(table.stdout.split('\n')[0]).toMatch(/^TASK\s+ID\s+NAME/);
    });
  });

  describe('runs watch, runs retry', () => {
    it('exits 1 for a failed run, naming the task, and 0 once retried from it', async () => {
      const marker = join(scratch, 'marker');
      writeFileSync(
        join(user.home, 'flaky.json'),
        JSON.stringify({
          name: 'flaky',
          tasks: [
            { module: 'text', function: 'change-case', options: { case: 'lower' } },
            { module: 'testing', function: 'flaky', options: { marker } },
          ],
        }),
      );
      expect((await user.run(['pipelines', 'create', '-f', 'flaky.json'])).code).toBe(0);
      const started = await user.json<RunJson>(['runs', 'start', 'flaky', '-i', notesId]);
      const failed = await user.run(['runs', 'watch', started.id, '--timeout', '90']);
      expect(failed.code).toBe(1);
      expect(failed.stderr).toContain(`run ${started.id} failed at task 1 (testing.flaky)`);
      expect(failed.stderr).toContain(`atrium runs logs ${started.id} --job`);
      const log = await user.run(['runs', 'logs', started.id, '--job', '1']);
      expect(log.stdout).toContain('no marker at');

      writeFileSync(marker, '');
      const retried = await user.run(['runs', 'retry', started.id, '--watch', '--timeout', '90']);
      expect(retried.code).toBe(0);
      // Followed from the retry on: the first attempt's failure is not shown again.
      expect(retried.stderr).not.toContain('run-failed');
      const run = await user.json<RunJson>(['runs', 'show', started.id]);
      expect(run.status).toBe('finished');
      expect(run.jobs.map((j) => j.status)).toEqual(['finished', 'finished']);
      expect((await user.run(['runs', 'retry', started.id])).code).toBe(5);
    });
  });

  describe('runs watch --timeout, runs cancel', () => {
    it('exits 7 when the run still runs at the timeout, then 1 once it is cancelled', async () => {
      writeFileSync(
        join(user.home, 'sleepy.json'),
        JSON.stringify({
          name: 'sleepy',
          tasks: [{ module: 'testing', function: 'sleepy', options: { seconds: 60 } }],
        }),
      );
      expect((await user.run(['pipelines', 'create', '-f', 'sleepy.json'])).code).toBe(0);
      const started = await user.json<RunJson>(['runs', 'start', 'sleepy', '-i', notesId]);
      const timedOut = await user.run(['runs', 'watch', started.id, '--timeout', '1']);
      expect(timedOut.code).toBe(7);
      expect(timedOut.stderr).toContain('was still running after 1 s');

      const cancelled = await user.run(['runs', 'cancel', started.id]);
      expect(cancelled.code).toBe(0);
      const watched = await user.run(['runs', 'watch', started.id, '--timeout', '60']);
      expect(watched.code).toBe(1);
      expect(watched.stderr).toContain(`run ${started.id} cancelled`);
      expect((await user.json<RunJson>(['runs', 'show', started.id])).status).toBe('cancelled');
      expect((await user.run(['runs', 'cancel', started.id])).code).toBe(5);
    });
  });

  describe('bench', () => {
    let first: BenchmarkRunJson;
    let second: BenchmarkRunJson;

    it('lists the built-in plans', async () => {
      const result = await user.run(['bench', 'plans']);
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/quick\s+built-in\s+local/);
    });

    it('runs a plan to its end with --wait, showing progress per metric, twice', async () => {
      const run = await user.run(
        ['bench', 'run', 'quick', '--samples', '1', '--warmup', '0', '--wait', '--timeout', '180'],
        {
          timeoutMs: 200_000,
        },
      );
      expect(run.code).toBe(0);
      expect(run.stderr).toMatch(/\d+% measured \w+ \(1 of \d+\)/);
      expect(run.stdout).toMatch(/status:\s+succeeded/);
      first = (await user.json<BenchmarkRunJson[]>(['bench', 'runs']))[0] as BenchmarkRunJson;
      second = await user.json<BenchmarkRunJson>(
        ['bench', 'run', 'quick', '--samples', '1', '--warmup', '0', '--wait', '--timeout', '180'],
        { timeoutMs: 200_000 },
      );
      expect([first.status, second.status]).toEqual(['succeeded', 'succeeded']);
      expect(second.score).toBeGreaterThan(0);
    }, 420_000);

    it("prints a run's results as a table of metrics and scores, and as JSON", async () => {
      const table = await user.run(['bench', 'results', first.id]);
      expect(table.code).toBe(0);
      expect(table.stdout.split('\n')[0]).toMatch(
        /^QPI\s+SECTION\s+METRIC\s+UNIT\s+BETTER\s+BASELINE\s+VALUE/,
      );
      expect(table.stdout).toMatch(/overall score \(arithmetic mean\): [\d.]+/);
      const results = await user.json<{ score: number; qpis: { name: string }[] }>([
        'bench',
        'results',
        first.id,
      ]);
      expect(results.qpis.map((q) => q.name)).toEqual(['compute', 'memory', 'storage', 'network']);
      expect(results.score).toBeCloseTo(first.score ?? 0, 6);
    });

    it('compares two runs metric by metric, as a table and as JSON', async () => {
      const table = await user.run(['bench', 'compare', first.id, second.id, '--threshold', '1000']);
      expect(table.code).toBe(0);
      const lines = table.stdout.split('\n');
      expect(lines[0]).toMatch(/^METRIC\s+UNIT\s+A\s+B\s+DELTA\s+CHANGE/);
      expect(table.stdout).toMatch(
        /\noverall\s+score\s+[\d.]+\s+[\d.]+\s+[+-]?\d+\.\d%\s+(better|worse|same)/,
      );
      expect(table.stdout).toContain('no regression beyond 1000%');
      const comparison = await user.json<{
        base_run_id: string;
        run_id: string;
        regression: boolean;
        metrics: { id: string; delta_percent: number }[];
        overall: { a: number; b: number; delta_percent: number };
      }>(['bench', 'compare', first.id, second.id]);
      expect([comparison.base_run_id, comparison.run_id]).toEqual([first.id, second.id]);
      expect(comparison.metrics).toHaveLength(11);
      for (const metric of comparison.metrics) expect(table.stdout).toContain(metric.id);
      const { a, b, delta_percent } = comparison.overall;
      expect(delta_percent).toBeCloseTo(((b - a) / a) * 100, 6);
      // With no tolerance at all, any metric that got worse is a regression, and --fail-on-regression says so.
      const strict = await user.run([
        'bench',
        'compare',
        first.id,
        second.id,
        '--threshold',
        '0',
        '--fail-on-regression',
      ]);
      const anyWorse = await user.json<{ regression: boolean }>([
        'bench',
        'compare',
        first.id,
        second.id,
        '--threshold',
        '0',
      ]);
      expect(strict.code).toBe(anyWorse.regression ? 1 : 0);
    });

    it('deletes a run (then it is not found: exit 4)', async () => {
      expect((await user.run(['bench', 'rm', first.id])).code).toBe(0);
      expect((await user.run(['bench', 'show', first.id])).code).toBe(4);
    });
  });

  describe('files rm', () => {
    it('deletes files; showing one then is not found (exit 4)', async () => {
      const result = await user.run(['files', 'rm', blobId]);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain(`deleted ${blobId}`);
      const shown = await user.run(['files', 'show', blobId]);
      expect(shown.code).toBe(4);
      expect(shown.stderr).toContain('Not found');
      expect((await user.run(['files', 'get', blobId, '-o', '-'])).code).toBe(4);
    });
  });
});
