import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { DirectoryCatalogSource } from '../../../src/backends/catalog/directory-source.js';
import type { CatalogContents } from '../../../src/backends/catalog/source.js';
import { demoCatalogPath } from '../../../src/paths.js';

let root: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'atrium-catalog-'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

function manifest(
  name: string,
  version: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    name,
    version,
    title: `${name} ${version}`,
    run: { local: { command: ['node', 'main.mjs'] } },
    ...extra,
  };
}

/** Writes a file under the catalog root, creating its directories. */
function write(relativePath: string, content: string | Record<string, unknown>): void {
  const path = join(root, relativePath);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, typeof content === 'string' ? content : stringify(content));
}

function versionsOf(contents: CatalogContents, name: string): string[] {
  return (contents.packages.get(name) ?? []).map((v) => v.spec.version);
}

const load = () => new DirectoryCatalogSource(root).load();

describe('DirectoryCatalogSource', () => {
  it('loads every package and version, with the directory each version runs from', async () => {
    write('alpha/1.0.0.yaml', manifest('alpha', '1.0.0'));
    write('alpha/1.1.0.yml', manifest('alpha', '1.1.0'));
    write('beta/2.0.0.yaml', manifest('beta', '2.0.0', { description: 'Second' }));
    const contents = await load();
    expect(contents.issues).toEqual([]);
    expect([...contents.packages.keys()].sort()).toEqual(['alpha', 'beta']);
    expect(versionsOf(contents, 'alpha').sort()).toEqual(['1.0.0', '1.1.0']);
    const [beta] = contents.packages.get('beta') ?? [];
    expect(beta?.spec.description).toBe('Second');
    expect(beta?.sourceDir).toBe(join(root, 'beta'));
  });

  it('loads the demo catalog without issues', async () => {
    const contents = await new DirectoryCatalogSource(demoCatalogPath).load();
    expect(contents.issues).toEqual([]);
    expect([...contents.packages.keys()].sort()).toEqual([
      'echo',
      'kv-store',
      'model-server',
      'static-files',
    ]);
    expect(versionsOf(contents, 'echo').sort()).toEqual(['1.0.0', '1.1.0']);
  });

  it('gives an empty catalog for an empty directory', async () => {
    const contents = await load();
    expect(contents.packages.size).toBe(0);
    expect(contents.issues).toEqual([]);
  });

  it('ignores files that are not manifests, and hidden entries at the top level', async () => {
    write('alpha/1.0.0.yaml', manifest('alpha', '1.0.0'));
    write('alpha/README.md', '# Alpha');
    write('alpha/main.mjs', 'console.log(1)');
    write('.git/config.yaml', 'not: [valid');
    write('.hidden.yaml', 'not: [valid');
    write('NOTES.txt', 'notes');
    const contents = await load();
    expect(contents.issues).toEqual([]);
    expect(versionsOf(contents, 'alpha')).toEqual(['1.0.0']);
  });

  it('takes only files named after a version as manifests, so packages may ship YAML of their own', async () => {
    write('alpha/1.0.0.yaml', manifest('alpha', '1.0.0'));
    write('alpha/config.yaml', 'not: [a manifest');
    write('alpha/.1.1.0.yaml', 'not: [a manifest either');
    write('alpha/conf/2.0.0.yaml', manifest('alpha', '2.0.0'));
    const contents = await load();
    expect(contents.issues).toEqual([]);
    expect(versionsOf(contents, 'alpha')).toEqual(['1.0.0']);
  });

  it('reports a manifest whose version does not match its file name', async () => {
    write('alpha/1.0.0.yaml', manifest('alpha', '1.0.1'));
    const contents = await load();
    expect(contents.issues).toEqual([
      { file: join('alpha', '1.0.0.yaml'), message: 'version: 1.0.1 must match the file name "1.0.0.yaml"' },
    ]);
  });

  it('follows symbolic links, as in a catalog mounted from a ConfigMap', async () => {
    const real = mkdtempSync(join(tmpdir(), 'atrium-real-'));
    try {
      mkdirSync(join(real, 'data'));
      writeFileSync(join(real, 'data', '1.0.0.yaml'), stringify(manifest('linked', '1.0.0')));
      mkdirSync(join(root, 'linked'));
      symlinkSync(join(real, 'data', '1.0.0.yaml'), join(root, 'linked', '1.0.0.yaml'));
      symlinkSync(join(real, 'data'), join(root, 'alias'));
      writeFileSync(join(real, 'data', '1.0.0.yaml'), stringify(manifest('linked', '1.0.0')));
      const contents = await load();
      expect(versionsOf(contents, 'linked')).toEqual(['1.0.0']);
      expect(contents.issues).toEqual([
        { file: join('alias', '1.0.0.yaml'), message: 'name: "linked" must match its directory "alias"' },
      ]);
    } finally {
      rmSync(real, { recursive: true, force: true });
    }
  });

  it('throws when the root directory does not exist', async () => {
    await expect(new DirectoryCatalogSource(join(root, 'missing')).load()).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('throws when the root is a file', async () => {
    write('catalog.txt', 'not a directory');
    await expect(new DirectoryCatalogSource(join(root, 'catalog.txt')).load()).rejects.toMatchObject({
      code: 'ENOTDIR',
    });
  });

  describe('reports a broken manifest by its relative path, and still loads the valid ones', () => {
    beforeEach(() => {
      write('good/1.0.0.yaml', manifest('good', '1.0.0'));
      write('zeta/1.0.0.yaml', manifest('zeta', '1.0.0'));
    });

    async function loadWithOneIssue(): Promise<{ file: string; message: string }> {
      const contents = await load();
      expect(versionsOf(contents, 'good')).toEqual(['1.0.0']);
      expect(versionsOf(contents, 'zeta')).toEqual(['1.0.0']);
      expect(contents.issues).toHaveLength(1);
      return contents.issues[0] as { file: string; message: string };
    }

    it('a file that is not valid YAML', async () => {
      write('broken/1.0.0.yaml', 'name: broken\nversion: [1.0.0\n');
      const issue = await loadWithOneIssue();
      expect(issue.file).toBe(join('broken', '1.0.0.yaml'));
      expect(issue.message).toMatch(/^not valid YAML: /);
      expect(issue.message).not.toContain('\n');
    });

    it('a manifest that does not match the schema', async () => {
      write('broken/1.0.0.yaml', manifest('broken', 'one'));
      const issue = await loadWithOneIssue();
      expect(issue).toEqual({
        file: join('broken', '1.0.0.yaml'),
        message: 'version: must be a semantic version such as 1.2.0',
      });
    });

    it('a manifest with invalid options', async () => {
      write(
        'broken/1.0.0.yaml',
        manifest('broken', '1.0.0', {
          options: { type: 'object', properties: { n: { type: 'integer', default: 'x' } } },
        }),
      );
      const issue = await loadWithOneIssue();
      expect(issue.file).toBe(join('broken', '1.0.0.yaml'));
      expect(issue.message).toMatch(/^options\.n: default "x" is invalid/);
    });

    it('an empty manifest file', async () => {
      write('broken/1.0.0.yaml', '');
      const issue = await loadWithOneIssue();
      expect(issue.file).toBe(join('broken', '1.0.0.yaml'));
      expect(issue.message).toMatch(/^\(manifest\): /);
    });

    it('a manifest whose name does not match its directory', async () => {
      write('misplaced/1.0.0.yaml', manifest('other', '1.0.0'));
      const issue = await loadWithOneIssue();
      expect(issue).toEqual({
        file: join('misplaced', '1.0.0.yaml'),
        message: 'name: "other" must match its directory "misplaced"',
      });
    });

    it('a second manifest declaring a version already loaded', async () => {
      write('good/1.0.0.yml', manifest('good', '1.0.0', { title: 'Copy' }));
      const issue = await loadWithOneIssue();
      expect(issue).toEqual({
        file: join('good', '1.0.0.yml'),
        message: 'version: 1.0.0 of good is declared by another manifest too',
      });
      const contents = await load();
      expect(contents.packages.get('good')?.[0]?.spec.title).toBe('good 1.0.0');
    });

    it('a cluster run spec mounting a file that does not exist', async () => {
      write(
        'broken/1.0.0.yaml',
        manifest('broken', '1.0.0', {
          run: { cluster: { image: 'node:20', files: ['main.mjs', 'missing.mjs'] } },
        }),
      );
      write('broken/main.mjs', 'console.log(1)');
      const issue = await loadWithOneIssue();
      expect(issue).toEqual({
        file: join('broken', '1.0.0.yaml'),
        message: 'run.cluster.files: "missing.mjs" is not a file of the package directory',
      });
    });

    it('a cluster run spec mounting a directory', async () => {
      write(
        'broken/1.0.0.yaml',
        manifest('broken', '1.0.0', { run: { cluster: { image: 'node:20', files: ['lib'] } } }),
      );
      mkdirSync(join(root, 'broken', 'lib'));
      const issue = await loadWithOneIssue();
      expect(issue.message).toBe('run.cluster.files: "lib" is not a file of the package directory');
    });

    it('a cluster run spec mounting more than fits in a ConfigMap', async () => {
      write(
        'broken/1.0.0.yaml',
        manifest('broken', '1.0.0', { run: { cluster: { image: 'node:20', files: ['a.bin', 'b.bin'] } } }),
      );
      write('broken/a.bin', 'a'.repeat(500 * 1024));
      write('broken/b.bin', 'b'.repeat(500 * 1024));
      const issue = await loadWithOneIssue();
      expect(issue.message).toMatch(/^run\.cluster\.files: more than \d+ bytes in all$/);
    });

    it('a manifest larger than 256 KiB', async () => {
      write('broken/1.0.0.yaml', `${stringify(manifest('broken', '1.0.0'))}# ${'x'.repeat(256 * 1024)}\n`);
      const issue = await loadWithOneIssue();
      expect(issue).toEqual({ file: join('broken', '1.0.0.yaml'), message: 'larger than 262144 bytes' });
    });

    it('a manifest at the top level, outside any package directory', async () => {
      write('stray.yaml', manifest('stray', '1.0.0'));
      const issue = await loadWithOneIssue();
      expect(issue).toEqual({
        file: 'stray.yaml',
        message: 'manifests belong in a directory named after their package',
      });
    });
  });

  it('loads a cluster run spec whose files all exist', async () => {
    write(
      'clustered/1.0.0.yaml',
      manifest('clustered', '1.0.0', {
        run: { cluster: { image: 'node:20', files: ['main.mjs', 'model.json'] } },
      }),
    );
    write('clustered/main.mjs', 'console.log(1)');
    write('clustered/model.json', '{}');
    const contents = await load();
    expect(contents.issues).toEqual([]);
    expect(contents.packages.get('clustered')?.[0]?.spec.run.cluster?.files).toEqual([
      'main.mjs',
      'model.json',
    ]);
  });

  it('reports every broken manifest, not only the first', async () => {
    write('a/1.0.0.yaml', 'name: [');
    write('b/1.0.0.yaml', manifest('not-b', '1.0.0'));
    write('c.yml', manifest('c', '1.0.0'));
    write('ok/1.0.0.yaml', manifest('ok', '1.0.0'));
    const contents = await load();
    expect(contents.issues.map((i) => i.file).sort()).toEqual(
      [join('a', '1.0.0.yaml'), join('b', '1.0.0.yaml'), 'c.yml'].sort(),
    );
    expect([...contents.packages.keys()]).toEqual(['ok']);
  });
});
