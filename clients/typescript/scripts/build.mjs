// Builds dist/ beside the old one and swaps it in with two renames, so that a process importing the
// package while it is rebuilt (`npm pack` runs this as prepack) finds a whole dist/ at every moment
// but the instant between the renames, and no stale file of an earlier build survives.
import { execFileSync } from 'node:child_process';
import { existsSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const next = join(root, 'dist.next');
const old = join(root, 'dist.old');
const dist = join(root, 'dist');
rmSync(next, { recursive: true, force: true });
rmSync(old, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json'), '--outDir', next], {
  stdio: 'inherit',
});
if (existsSync(dist)) renameSync(dist, old);
renameSync(next, dist);
rmSync(old, { recursive: true, force: true });
