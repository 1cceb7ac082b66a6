import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ManifestError, parseManifest } from './manifest.js';
import type { CatalogContents, CatalogIssue, CatalogSource, LoadedVersion } from './source.js';

const maxManifestBytes = 256 * 1024;

/**
 * A catalog in a directory: `<root>/<package>/<any>.yaml`, one manifest per version, named after the
 * package's directory. Anything else that looks like a manifest is reported, never silently skipped.
 */
export class DirectoryCatalogSource implements CatalogSource {
  constructor(private readonly root: string) {}

  async load(): Promise<CatalogContents> {
    const packages = new Map<string, LoadedVersion[]>();
    const issues: CatalogIssue[] = [];
    const entries = await readdir(this.root, { withFileTypes: true });
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (entry.name.startsWith('.')) continue;
      const path = join(this.root, entry.name);
      if (entry.isFile() && isManifestName(entry.name)) {
        issues.push({
          file: entry.name,
          message: 'manifests belong in a directory named after their package',
        });
      } else if (entry.isDirectory()) {
        await this.loadPackageDir(entry.name, path, packages, issues);
      }
    }
    return { packages, issues };
  }

  private async loadPackageDir(
    dirName: string,
    dir: string,
    packages: Map<string, LoadedVersion[]>,
    issues: CatalogIssue[],
  ): Promise<void> {
    const files = (await readdir(dir, { withFileTypes: true }))
      .filter((f) => f.isFile() && isManifestName(f.name))
      .map((f) => f.name)
      .sort();
    for (const name of files) {
      const path = join(dir, name);
      const file = relative(this.root, path);
      try {
        const spec = parseManifest(await readManifest(path));
        if (spec.name !== dirName) {
          throw new ManifestError(`name: "${spec.name}" must match its directory "${dirName}"`);
        }
        await checkClusterFiles(dir, spec.run.cluster?.files ?? []);
        const versions = packages.get(spec.name) ?? [];
        if (versions.some((v) => v.spec.version === spec.version)) {
          throw new ManifestError(
            `version: ${spec.version} of ${spec.name} is declared by another manifest too`,
          );
        }
        versions.push({ spec, sourceDir: dir });
        packages.set(spec.name, versions);
      } catch (error) {
        issues.push({ file, message: (error as Error).message });
      }
    }
  }
}

const maxClusterFilesBytes = 900 * 1024;

/** Files a cluster run mounts into its container must exist and fit in one ConfigMap. */
async function checkClusterFiles(dir: string, files: string[]): Promise<void> {
  let total = 0;
  for (const name of files) {
    const info = await stat(join(dir, name)).catch(() => null);
    if (!info?.isFile())
      throw new ManifestError(`run.cluster.files: "${name}" is not a file of the package directory`);
    total += info.size;
  }
  if (total > maxClusterFilesBytes)
    throw new ManifestError(`run.cluster.files: more than ${maxClusterFilesBytes} bytes in all`);
}

function isManifestName(name: string): boolean {
  return name.endsWith('.yaml') || name.endsWith('.yml');
}

async function readManifest(path: string): Promise<unknown> {
  const info = await stat(path);
  if (info.size > maxManifestBytes) throw new ManifestError(`larger than ${maxManifestBytes} bytes`);
  const text = await readFile(path, 'utf8');
  try {
    return parseYaml(text, { maxAliasCount: 100 });
  } catch (error) {
    throw new ManifestError(`not valid YAML: ${(error as Error).message.split('\n')[0]}`);
  }
}
