// Runs a module function for real, as the job runner does: options validated against the manifest,
// a work directory prepared, the local command spawned in it, the output read back through the contract.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type OutputResult,
  type Tags,
  prepareWorkDir,
  readOutput,
} from '../../../src/backends/modules/contract.js';
import { type LoadedModule, loadModuleDirectories } from '../../../src/backends/modules/directory-source.js';
import { demoModulesPath } from '../../../src/paths.js';
import { type ModuleFunction, validateFunctionOptions } from '../../../src/backends/modules/manifest.js';
import { localRunSpec } from '../../../src/backends/modules/run-spec.js';

/** An input given by content, or by the path of a file already on disk (another job's output). */
export type FunctionInput = { name: string; media_type: string; tags?: Tags } & (
  { content: string } | { path: string }
);

export interface FunctionRun {
  code: number | null;
  stdout: string;
  stderr: string;
  workDir: string;
  /** Null when the process failed. */
  output: OutputResult | null;
}

let demo: Promise<LoadedModule[]> | null = null;

/** The demo modules, loaded once per test file; a problem loading them fails the test. */
export async function demoModules(): Promise<LoadedModule[]> {
  demo ??= loadModuleDirectories([demoModulesPath]).then(({ modules, problems }) => {
    if (problems.length > 0) throw new Error(`demo modules: ${JSON.stringify(problems)}`);
    return modules;
  });
  return demo;
}

export async function demoFunction(
  moduleName: string,
  functionName: string,
): Promise<[LoadedModule, ModuleFunction]> {
  const module = (await demoModules()).find((m) => m.manifest.name === moduleName);
  const fn = module?.manifest.functions.find((f) => f.name === functionName);
  if (!module || !fn) throw new Error(`no demo function ${moduleName}.${functionName}`);
  return [module, fn];
}

const runTimeoutMs = 20_000;

export async function runFunction(
  root: string,
  [module, fn]: [LoadedModule, ModuleFunction],
  inputs: FunctionInput[],
  options: Record<string, unknown> = {},
  validate = true,
): Promise<FunctionRun> {
  const checked = validateFunctionOptions(fn, options);
  if (validate && !checked.ok) throw new Error(`invalid options: ${JSON.stringify(checked.errors)}`);
  const base = mkdtempSync(join(root, `${fn.name}-`));
  const sources = inputs.map((input, i) => {
    if ('path' in input) return { name: input.name, path: input.path };
    const path = join(base, `source-${i}`);
    writeFileSync(path, input.content);
    return { name: input.name, path };
  });
  const workDir = join(base, 'work');
  await prepareWorkDir(
    workDir,
    {
      function: fn.name,
      options: validate && checked.ok ? checked.value : options,
      files: inputs.map(({ name, media_type, tags }) => ({ name, media_type, tags: tags ?? {} })),
    },
    sources,
  );
  const spec = localRunSpec(fn, module.dir, workDir);
  const { code, stdout, stderr } = await spawnToEnd(spec);
  const output =
    code === 0 ? await readOutput(workDir, { output: fn.output, inputs: inputs.map((i) => i.name) }) : null;
  return { code, stdout, stderr, workDir, output };
}

function spawnToEnd(spec: {
  command: string[];
  cwd: string;
  env: Record<string, string>;
}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [program = '', ...args] = spec.command;
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { cwd: spec.cwd, env: { PATH: process.env.PATH ?? '', ...spec.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${spec.command.join(' ')} did not finish in ${runTimeoutMs} ms: ${stderr}`));
    }, runTimeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The outputs of one run as the inputs of the next, as the scheduler chains tasks. */
export function chained(run: FunctionRun): FunctionInput[] {
  if (!run.output) throw new Error(`the run failed (${run.code}): ${run.stderr}`);
  return run.output.files.map((f) => ({
    name: f.name,
    media_type: f.media_type,
    tags: f.tags,
    path: f.path,
  }));
}
