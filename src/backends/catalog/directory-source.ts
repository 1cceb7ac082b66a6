import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ManifestError, parseManifest } from './manifest.js';
import type { CatalogContents, CatalogIssue, CatalogSource, LoadedVersion } from './source.js';

const maxManifestBytes = 256 * 1024;

/**
 * A catalog in a directory: `<root>/<package>/<version>.yaml`, one manifest per version, in a
 * directory named after the package. Other files of a package directory are the package's own
 * (its program, its data, its YAML configuration). Symbolic links are followed, so a catalog
 * mounted from a Kubernetes ConfigMap loads; dot-files are ignored. A manifest that cannot be used
 * is reported as an issue, never silently skipped.
 */
export class DirectoryCatalogSource implements CatalogSource {
  constructor(private readonly root: string) {}

  async load(): Promise<CatalogContents> {
    const packages = new Map<string, LoadedVersion[]>();
    const issues: CatalogIssue[] = [];
    for (const name of (await readdir(this.root)).sort()) {
      if (name.startsWith('.')) continue;
      const path = join(this.root, name);
      const info = await stat(path).catch(() => null);
      if (info?.isFile() && isYaml(name)) {
        issues.push({ file: name, message: 'manifests belong in a directory named after their package' });
      } else if (info?.isDirectory()) {
        await this.loadPackageDir(name, path, packages, issues);
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
    const files = (await readdir(dir)).filter(isManifestName).sort();
    for (const name of files) {
      const path = join(dir, name);
      const file = relative(this.root, path);
      try {
        const spec = parseManifest(await readManifest(path));
        if (spec.name !== dirName) {
          throw new ManifestError(`name: "${spec.name}" must match its directory "${dirName}"`);
        }
        if (spec.version !== name.replace(/\.ya?ml$/, '')) {
          throw new ManifestError(`version: ${spec.version} must match the file name "${name}"`);
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

const isYaml = (name: string) => /\.ya?ml$/.test(name);

/** A version manifest is named after its version: `1.2.0.yaml` (anything starting with a digit). */
const isManifestName = (name: string) => /^[0-9]/.test(name) && isYaml(name);

async function readManifest(path: string): Promise<unknown> {
  const info = await stat(path);
  if (!info.isFile()) throw new ManifestError('not a file');
  if (info.size > maxManifestBytes) throw new ManifestError(`larger than ${maxManifestBytes} bytes`);
  const text = await readFile(path, 'utf8');
  try {
    return parseYaml(text, { maxAliasCount: 100 });
  } catch (error) {
    throw new ManifestError(`not valid YAML: ${(error as Error).message.split('\n')[0]}`);
  }
}
