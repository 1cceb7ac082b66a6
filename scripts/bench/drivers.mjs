// The SQLite driver comparison of `make bench` (figure 1, SQLite): knex's better-sqlite3 client next
// to the sqlite3 one Atrium uses, on the bare server (scripts/bench/server.mjs), same query, same
// database file. better-sqlite3 is not a dependency of Atrium: it is installed here, once, into
// .bench/drivers (npm builds it from source on this machine, a minute or two), for the benchmark
// only. Version 12: 13 crashes on Node 20.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { driversDir } from './harness.mjs';

const installTimeoutMs = 20 * 60_000;
export const betterSqlite3Version = '12';

/** Installs better-sqlite3 into .bench/drivers unless it is there; null when ready, else why not. */
export async function ensureBetterSqlite3() {
  const installed = join(
    driversDir,
    'node_modules',
    'better-sqlite3',
    'build',
    'Release',
    'better_sqlite3.node',
  );
  if (existsSync(installed)) return null;
  mkdirSync(driversDir, { recursive: true });
  const manifest = join(driversDir, 'package.json');
  if (!existsSync(manifest))
    writeFileSync(
      manifest,
      '{"name":"atrium-bench-drivers","private":true,"allowScripts":{"better-sqlite3":true}}\n',
    );
  console.log(
    `(installing better-sqlite3@${betterSqlite3Version} into .bench/drivers for the driver comparison)`,
  );
  try {
    await promisify(execFile)(
      'npm',
      ['install', '--no-audit', '--no-fund', '--no-save', `better-sqlite3@${betterSqlite3Version}`],
      { cwd: driversDir, timeout: installTimeoutMs, maxBuffer: 16 * 1024 * 1024 },
    );
  } catch (error) {
    return `npm install better-sqlite3@${betterSqlite3Version} failed: ${String(error.stderr ?? error.message)
      .trim()
      .split('\n')
      .slice(-3)
      .join(' ')}`;
  }
  return existsSync(installed) ? null : 'better-sqlite3 installed without its native module';
}
