// Modules from directories: `<root>/<module>/module.yaml`, the rest of a module's directory being
// its own files (its programs, their data). Symbolic links are followed, so that a directory mounted
// from a Kubernetes ConfigMap loads; dot-files are ignored. A manifest that cannot be used is
// reported as a problem, never silently skipped, and never hides the valid ones.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parse as parseYaml } from 'yaml';

import { type ModuleManifest, ModuleManifestError, parseModuleManifest } from './manifest.js';

export const manifestFileName = 'module.yaml';

export interface LoadedModule {
  manifest: ModuleManifest;
  /** The module's directory: where its functions run from, and what `${module.dir}` means. */
  dir: string;
  /** The configured directory it was found in. */
  root: string;
  /** sha256 (hex) of the manifest and every file of the module directory: changes when any of them does. */
  digest: string;
}

export interface ModuleProblem {
  root: string;
  /** Relative to the root (`csv/module.yaml`); `.` when the root itself cannot be read. */
  file: string;
  message: string;
}

export interface ModuleDirectoryContents {
  /** Valid modules, in the order of the roots, then by name. */
  modules: LoadedModule[];
  problems: ModuleProblem[];
}

/**
 * Loads every module of every root. When two roots define a module of the same name, the first
 * root wins and the later one is a problem. Never throws for a root or a module that cannot be read.
 */
export async function loadModuleDirectories(roots: string[]): Promise<ModuleDirectoryContents> {
  const modules: LoadedModule[] = [];
  const problems: ModuleProblem[] = [];
  const byName = new Map<string, LoadedModule>();
  for (const root of roots) {
    const loaded = await loadModuleDirectory(root);
    problems.push(...loaded.problems);
    for (const module of loaded.modules) {
      const first = byName.get(module.manifest.name);
      if (first) {
        problems.push({
          root,
          file: relative(root, join(module.dir, manifestFileName)),
          message: `name: module "${module.manifest.name}" is already defined in ${first.dir}`,
        });
        continue;
      }
      byName.set(module.manifest.name, module);
      modules.push(module);
    }
  }
  return { modules, problems };
}

/** Loads the modules of one root. */
export async function loadModuleDirectory(root: string): Promise<ModuleDirectoryContents> {
  const modules: LoadedModule[] = [];
  const problems: ModuleProblem[] = [];
  let names: string[];
  try {
    names = (await readdir(root)).sort();
  } catch (error) {
    return {
      modules,
      problems: [{ root, file: '.', message: `cannot be read: ${(error as Error).message}` }],
    };
  }
  for (const name of names) {
    if (name.startsWith('.')) continue;
    const dir = join(root, name);
    if (!(await stat(dir).catch(() => null))?.isDirectory()) continue;
    const manifestPath = join(dir, manifestFileName);
    if (!(await stat(manifestPath).catch(() => null))) continue;
    try {
      modules.push(await loadModule(root, dir, name));
    } catch (error) {
      problems.push({ root, file: relative(root, manifestPath), message: (error as Error).message });
    }
  }
  return { modules, problems };
}

async function loadModule(root: string, dir: string, dirName: string): Promise<LoadedModule> {
  const manifest = parseModuleManifest(await readManifest(join(dir, manifestFileName)));
  const problems = [
    ...(manifest.name === dirName ? [] : [`name: "${manifest.name}" must match its directory "${dirName}"`]),
    ...(await missingFiles(manifest, dir)),
  ];
  if (problems.length > 0) throw new Error(problems.join('; '));
  return { manifest, dir, root, digest: await directoryDigest(dir) };
}

const maxManifestBytes = 256 * 1024;
const maxClusterFilesBytes = 900 * 1024;

async function readManifest(path: string): Promise<unknown> {
  const info = await stat(path);
  if (!info.isFile()) throw new Error('not a file');
  if (info.size > maxManifestBytes) throw new Error(`larger than ${maxManifestBytes} bytes`);
  try {
    return parseYaml(await readFile(path, 'utf8'), { maxAliasCount: 100 });
  } catch (error) {
    throw new ModuleManifestError([
      { path: '', message: `not valid YAML: ${(error as Error).message.split('\n')[0]}` },
    ]);
  }
}

/**
 * Files the run specs name must be there: what a cluster run mounts (and fits in one ConfigMap),
 * and the `${module.dir}/…` files of a local command.
 */
async function missingFiles(manifest: ModuleManifest, dir: string): Promise<string[]> {
  const problems: string[] = [];
  for (const [i, fn] of manifest.functions.entries()) {
    let total = 0;
    for (const name of fn.run.cluster?.files ?? []) {
      const info = await stat(join(dir, name)).catch(() => null);
      if (info?.isFile()) total += info.size;
      else
        problems.push(`functions[${i}].run.cluster.files: "${name}" is not a file of the module directory`);
    }
    if (total > maxClusterFilesBytes) {
      problems.push(`functions[${i}].run.cluster.files: more than ${maxClusterFilesBytes} bytes in all`);
    }
    for (const part of fn.run.local?.command ?? []) {
      const match = /^\$\{module\.dir\}\/([^$]+)$/.exec(part);
      if (match?.[1] && !(await stat(join(dir, match[1])).catch(() => null))?.isFile()) {
        problems.push(
          `functions[${i}].run.local.command: "${match[1]}" is not a file of the module directory`,
        );
      }
    }
  }
  return problems;
}

const maxDigestFiles = 1000;
const maxDigestDepth = 8;

/**
 * sha256 over every file's path and content hash, in path order: the same bytes give the same
 * digest on every machine, whatever the order the file system lists them in.
 */
export async function directoryDigest(dir: string): Promise<string> {
  const files = (await listFiles(dir, '', 0)).sort();
  const digest = createHash('sha256');
  for (const file of files) digest.update(`${file}\0${await fileSha256(join(dir, file))}\n`);
  return digest.digest('hex');
}

async function listFiles(dir: string, prefix: string, depth: number): Promise<string[]> {
  if (depth > maxDigestDepth)
    throw new Error(`${prefix}: directories nested more than ${maxDigestDepth} deep`);
  const files: string[] = [];
  for (const name of await readdir(join(dir, prefix))) {
    if (name.startsWith('.')) continue;
    const path = prefix ? `${prefix}/${name}` : name;
    const info = await stat(join(dir, path)).catch(() => null);
    if (info?.isDirectory()) files.push(...(await listFiles(dir, path, depth + 1)));
    else if (info?.isFile()) files.push(path);
    if (files.length > maxDigestFiles)
      throw new Error(`more than ${maxDigestFiles} files in the module directory`);
  }
  return files;
}

function fileSha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => hash.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(hash.digest('hex')));
  });
}
