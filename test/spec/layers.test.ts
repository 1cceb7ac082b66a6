// The layer rules of scripts/eslint.config.js must fail an import that crosses a layer the wrong
// way, and let the right ones through (the tree itself passes `make lint`).
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { ESLint } from 'eslint';
import { repoRoot } from '../../src/paths.js';

const eslint = new ESLint({ cwd: repoRoot, overrideConfigFile: join(repoRoot, 'scripts/eslint.config.js') });

/** The messages of the layer rule for `code` as if it were the file `path` of src/. */
async function layerErrors(path: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: join(repoRoot, path) });
  return (result?.messages ?? [])
    .filter((m) => m.ruleId === '@typescript-eslint/no-restricted-imports')
    .map((m) => m.message);
}

describe('the layer rules of the lint', () => {
  it.each([
    [
      'a controller importing db',
      'src/controllers/probe.ts',
      "import { findUser } from '../db/users.js';\nexport const f = findUser;\n",
    ],
    [
      'a controller importing a backend',
      'src/controllers/probe.ts',
      "import { LocalBackend } from '../backends/cluster/local/backend.js';\nexport const b = LocalBackend;\n",
    ],
    [
      'a controller importing db types',
      'src/controllers/probe.ts',
      "import type { User } from '../db/users.js';\nexport type U = User;\n",
    ],
    [
      'http importing a controller',
      'src/http/probe.ts',
      "import { getMe } from '../controllers/me.js';\nexport const g = getMe;\n",
    ],
    [
      'a service importing a controller',
      'src/services/probe.ts',
      "import { page } from '../controllers/present.js';\nexport const p = page;\n",
    ],
    [
      'a service importing Express',
      'src/services/probe.ts',
      "import express from 'express';\nexport const e = express;\n",
    ],
    [
      'a backend importing a service',
      'src/backends/cluster/kubernetes/probe.ts',
      "import { RunService } from '../../../services/runs.js';\nexport const r = RunService;\n",
    ],
    [
      'a backend other than the scheduler using db',
      'src/backends/cluster/probe.ts',
      "import { findJob } from '../../db/jobs.js';\nexport const f = findJob;\n",
    ],
    [
      'db running backend code',
      'src/db/probe.ts',
      "import { parseManifest } from '../backends/catalog/manifest.js';\nexport const p = parseManifest;\n",
    ],
    [
      'db importing a service',
      'src/db/probe.ts',
      "import { RunService } from '../services/runs.js';\nexport const r = RunService;\n",
    ],
    [
      'auth importing a service',
      'src/auth/probe.ts',
      "import type { Principal } from '../services/principal.js';\nexport type P = Principal;\n",
    ],
    [
      'a shared module importing a layer',
      'src/notifier.ts',
      "import { RunService } from './services/runs.js';\nexport const r = RunService;\n",
    ],
  ])('fails %s', async (_what, path, code) => {
    expect(await layerErrors(path, code)).toHaveLength(1);
  });

  it.each([
    [
      'a controller importing a service',
      'src/controllers/probe.ts',
      "import { pageSizeDefault } from '../services/platform.js';\nexport const p = pageSizeDefault;\n",
    ],
    [
      'a controller importing the shapes of services/model.ts',
      'src/controllers/probe.ts',
      "import type { User } from '../services/model.js';\nexport type U = User;\n",
    ],
    [
      'a service importing db and backends',
      'src/services/probe.ts',
      "import { findUser } from '../db/users.js';\nimport { LocalBackend } from '../backends/cluster/local/backend.js';\nexport const f = [findUser, LocalBackend];\n",
    ],
    [
      'the scheduler using db',
      'src/backends/scheduler/probe.ts',
      "import { findJob } from '../../db/jobs.js';\nexport const f = findJob;\n",
    ],
    [
      'db naming the shapes of a backend',
      'src/db/probe.ts',
      "import type { PackageVersionSpec } from '../backends/catalog/manifest.js';\nexport type S = PackageVersionSpec;\n",
    ],
    [
      'a backend importing a shared module',
      'src/backends/scheduler/probe.ts',
      "import { Notifier } from '../../notifier.js';\nexport const n = Notifier;\n",
    ],
  ])('lets through %s', async (_what, path, code) => {
    expect(await layerErrors(path, code)).toEqual([]);
  });
});
