import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';
import type { BuildInfo } from './services/platform.js';

/** The package version, and the commit and time written by `npm run build` (absent when run from source). */
export function readBuildInfo(): BuildInfo {
  const { version } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const file = join(repoRoot, 'dist', 'build-info.json');
  const built = existsSync(file)
    ? (JSON.parse(readFileSync(file, 'utf8')) as { commit?: string; builtAt?: string })
    : {};
  return { version, commit: built.commit ?? null, builtAt: built.builtAt ?? null };
}
