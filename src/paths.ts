import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the nearest directory above this module holding generated/openapi.json. */
function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'generated', 'openapi.json'))) return dir;
    dir = dirname(dir);
  }
  throw new Error('cannot find the Atrium repository root (generated/openapi.json)');
}

export const repoRoot = findRepoRoot();
export const bundledSpecPath = join(repoRoot, 'generated', 'openapi.json');
export const demoCatalogPath = join(repoRoot, 'src', 'demo', 'catalog');
export const demoModulesPath = join(repoRoot, 'src', 'demo', 'modules');
export const demoDriversPath = join(repoRoot, 'src', 'demo', 'drivers');
