// Chaos: a thousand jobs with an effect, in chains, worked by `atrium worker` processes that are
// SIGKILLed at random and restarted. Every job must end, finished, with exactly one effect each,
// and no job may start before the one it depends on finished.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Knex } from 'knex';
import { noopHandler } from '../../src/backends/scheduler/noop.js';
import { Scheduler } from '../../src/backends/scheduler/scheduler.js';
import { migrate, openDatabase, type Database } from '../../src/db/database.js';
import { createLogger } from '../../src/log.js';
import { repoRoot } from '../../src/paths.js';
import { systemClock } from '../../src/clock.js';
import { Notifier } from '../../src/notifier.js';
import { createTestDatabase, testEngines, type TestDatabase } from '../fixtures/databases.js';
import { cliPath, requireBuild } from '../fixtures/process.js';

const kindsModule = join(repoRoot, 'test', 'fixtures', 'jobs', 'chaos-kinds.mjs');
const chains = 200;
const chainLength = 5;
const workers = 3;

interface Chaos {
  testDatabase: TestDatabase;
  database: Database;
  knex: Knex;
  configFile: string;
}

describe.each(testEngines())('scheduler under SIGKILL (%s)', (engine) => {
  let chaos: Chaos;
  const procs = new Set<ChildProcess>();

  beforeAll(async () => {
    requireBuild();
    const testDatabase = await createTestDatabase(engine);
    const database = openDatabase(testDatabase.url, testDatabase.dataDir);
    await migrate(database);
    const knex = database.knex;
    await knex.schema.createTable('chaos_effects', (t) => {
      // No unique key on purpose: a job whose effect happened twice must show as two rows.
      t.string('job_id', 46).notNullable();
      t.integer('chain').notNullable();
      t.integer('step').notNullable();
    });
    await knex.schema.createTable('chaos_violations', (t) => {
      t.string('job_id', 46).notNullable();
      t.string('upstream_id', 46).notNullable();
      t.string('upstream_status', 12).notNullable();
    });
    const configFile = join(testDatabase.dataDir, 'atrium.yaml');
    writeFileSync(
      configFile,
      JSON.stringify({
        scheduler: {
          leaseMs: 1000,
          pollMs: 50,
          maxAttempts: 100,
          backoffMs: 10,
          maxBackoffMs: 200,
          stopGraceMs: 0,
          handlerModules: [kindsModule],
        },
        log: { level: 'error' },
      }),
    );
    chaos = { testDatabase, database, knex, configFile };
  });

  afterAll(async () => {
    for (const proc of procs) proc.kill('SIGKILL');
    await chaos.database.close();
    await chaos.testDatabase.drop();
  });

  function startWorker(): ChildProcess {
    const proc = spawn(process.execPath, [cliPath, 'worker', '--concurrency', '4'], {
      env: {
        PATH: process.env.PATH ?? '',
        ATRIUM_CONFIG: chaos.configFile,
        ATRIUM_DATA_DIR: chaos.testDatabase.dataDir,
        ATRIUM_DATABASE_URL: chaos.testDatabase.url,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    proc.stderr?.on('data', (d) => (stderr = (stderr + String(d)).slice(-4000)));
    proc.on('exit', (code, signal) => {
      procs.delete(proc);
      if (signal !== 'SIGKILL' && code !== 0) process.stderr.write(`worker exited with ${code}: ${stderr}\n`);
    });
    procs.add(proc);
    return proc;
  }

  it('gives running jobs back when an `atrium worker` gets SIGTERM, and exits cleanly', async () => {
    const scheduler = new Scheduler({
      db: chaos.knex,
      clock: systemClock,
      log: createLogger('silent'),
      notifier: new Notifier(),
      options: { leaseMs: 1000, maxAttempts: 100, backoffMs: 10, maxBackoffMs: 200 },
    });
    scheduler.register('noop', noopHandler);
    const job = await chaos.knex.transaction((trx) =>
      scheduler.enqueue(trx, { kind: 'noop', projectId: null, payload: { sleepMs: 30_000 } }),
    );
    const worker = startWorker();
    const exited = new Promise<number | null>((resolve) => worker.on('exit', (code) => resolve(code)));
    for (let i = 0; i < 1200 && (await scheduler.find(job.id))?.status !== 'running'; i++) await sleep(50);
    expect((await scheduler.find(job.id))?.status).toBe('running');
    worker.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(await scheduler.find(job.id)).toMatchObject({ status: 'queued', attempts: 0, leaseOwner: null });
    await chaos.knex.transaction((trx) => scheduler.cancel(trx, job.id, 'done with it'));
  }, 60_000);

  it('ends every job exactly once, in chain order, while workers are killed', async () => {
    const scheduler = new Scheduler({
      db: chaos.knex,
      clock: systemClock,
      log: createLogger('silent'),
      notifier: new Notifier(),
      options: { leaseMs: 1000, maxAttempts: 100, backoffMs: 10, maxBackoffMs: 200 },
    });
    const { register } = (await import(kindsModule)) as {
      register: (s: Scheduler, c: { db: Knex }) => void;
    };
    register(scheduler, { db: chaos.knex });
    await chaos.knex.transaction(async (trx) => {
      for (let chain = 0; chain < chains; chain++) {
        let previous: string | null = null;
        for (let step = 0; step < chainLength; step++) {
          const job = await scheduler.enqueue(trx, {
            kind: 'effect',
            projectId: null,
            payload: { chain, step },
            dependsOn: previous,
          });
          previous = job.id;
        }
      }
    });

    for (let i = 0; i < workers; i++) startWorker();
    // Bounded by progress, not by a fixed time: on a loaded machine the jobs take as long as they
    // take, and the run ends when they are done, or when nothing has ended for stallMs (a real
    // stall), or at the hard bound.
    const stallMs = 180_000;
    const hardDeadline = Date.now() + 1_500_000;
    let lastProgressAt = Date.now();
    let kills = 0;
    let open = chains * chainLength;
    let openAtLastKill = open;
    let lastOpen = open;
    const countOpen = async () =>
      Number(
        (
          (await chaos
            .knex('jobs')
            .where({ kind: 'effect' })
            .whereIn('status', ['pending', 'queued', 'running'])
            .count({ n: '*' })
            .first()) as { n: number | string }
        ).n,
      );
    for (
      let round = 0;
      round < 20_000 && open > 0 && Date.now() < hardDeadline && Date.now() - lastProgressAt < stallMs;
      round++
    ) {
      await sleep(200 + Math.floor(Math.random() * 300));
      open = await countOpen();
      if (open < lastOpen) {
        lastOpen = open;
        lastProgressAt = Date.now();
      }
      // A worker is killed once work has moved since the last kill: on a loaded machine a new
      // worker takes longer to start than a fixed kill rate would let it live.
      if (open === openAtLastKill) continue;
      openAtLastKill = open;
      const victims = [...procs];
      const victim = victims[Math.floor(Math.random() * victims.length)];
      if (victim) {
        victim.kill('SIGKILL');
        kills += 1;
      }
      startWorker();
    }

    const statuses = (await chaos
      .knex('jobs')
      .where({ kind: 'effect' })
      .select('status')
      .count({ n: '*' })
      .groupBy('status')) as {
      status: string;
      n: number | string;
    }[];
    expect(Object.fromEntries(statuses.map((s) => [s.status, Number(s.n)]))).toEqual({
      finished: chains * chainLength,
    });
    const effects = (await chaos.knex('chaos_effects').count({ n: '*' }).first()) as { n: number | string };
    expect(Number(effects.n)).toBe(chains * chainLength);
    const distinct = (await chaos.knex('chaos_effects').countDistinct({ n: 'job_id' }).first()) as {
      n: number | string;
    };
    expect(Number(distinct.n)).toBe(chains * chainLength);
    expect(await chaos.knex('chaos_violations').select('*')).toEqual([]);
    // The recorded history agrees: each step started after the previous one finished.
    const events = (await chaos
      .knex('job_events as e')
      .join('jobs as j', 'j.id', 'e.job_id')
      .select('j.id', 'j.depends_on', 'e.type', 'e.at')
      .whereIn('e.type', ['running', 'finished'])) as {
      id: string;
      depends_on: string | null;
      type: string;
      at: string;
    }[];
    const finishedAt = new Map(events.filter((e) => e.type === 'finished').map((e) => [e.id, e.at]));
    for (const e of events.filter((x) => x.type === 'running' && x.depends_on)) {
      expect(e.at >= (finishedAt.get(e.depends_on as string) ?? '~')).toBe(true);
    }
    expect(kills).toBeGreaterThan(3);
    // The kills did interrupt jobs: some needed more than one attempt.
    const retried = (await chaos.knex('jobs').where('attempts', '>', 1).count({ n: '*' }).first()) as {
      n: number | string;
    };
    expect(Number(retried.n)).toBeGreaterThan(0);
  }, 1_800_000);
});
