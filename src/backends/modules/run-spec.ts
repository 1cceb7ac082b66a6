// How a module function runs on each backend: the `run` of a BatchWorkloadSpec
// (src/backends/cluster/types.ts), from the function's manifest and its prepared work directory.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { workDirEnvName } from './contract.js';
import { type ModuleFunction, localCommand, localEnv } from './manifest.js';

/** Where a cluster Job sees its work directory (the region's shared work volume, at its sub-path). */
export const clusterWorkDir = '/work';

/** An argv, run with the work directory as its current directory. */
export function localRunSpec(
  fn: ModuleFunction,
  moduleDir: string,
  workDir: string,
): { command: string[]; cwd: string; env: Record<string, string> } {
  return {
    command: localCommand(fn, moduleDir),
    cwd: workDir,
    env: { ...localEnv(fn, moduleDir), [workDirEnvName]: workDir },
  };
}

/** The image and the module's files (name → content) to mount at /app; the work volume at /work. */
export async function clusterRunSpec(
  fn: ModuleFunction,
  moduleDir: string,
  workSubPath: string,
): Promise<{
  image: string;
  command: string[] | null;
  args: string[] | null;
  env: Record<string, string>;
  files: Record<string, string>;
  workSubPath: string;
}> {
  const cluster = fn.run.cluster;
  if (!cluster) throw new RangeError(`function ${fn.name} has no cluster run spec`);
  const files: Record<string, string> = {};
  for (const name of cluster.files) files[name] = await readFile(join(moduleDir, name), 'utf8');
  return {
    image: cluster.image,
    command: cluster.command,
    args: cluster.args,
    env: { ...cluster.env, [workDirEnvName]: clusterWorkDir },
    files,
    workSubPath,
  };
}
