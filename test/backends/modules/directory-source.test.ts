import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { directoryDigest, loadModuleDirectories } from '../../../src/backends/modules/directory-source.js';
import { demoModulesPath } from '../../../src/paths.js';

let base: string;
let root: string;

beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), 'atrium-modules-'));
  root = join(base, 'one');
  mkdirSync(root);
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

function manifest(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    version: '1.0.0',
    title: name,
    functions: [
      {
        name: 'run',
        title: 'Run',
        inputs: { media_types: ['*/*'] },
        output: 'creates',
        run: {
          local: { command: ['node', '${module.dir}/main.mjs'] },
          cluster: { image: 'node:20-alpine', files: ['main.mjs'] },
        },
      },
    ],
    ...extra,
  };
}

/** Writes a file under `dir` (the first root by default), creating its directories. */
function write(relativePath: string, content: string | Record<string, unknown>, dir = root): void {
  const path = join(dir, relativePath);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, typeof content === 'string' ? content : stringify(content));
}

function writeModule(name: string, dir = root, extra: Record<string, unknown> = {}): void {
  write(`${name}/module.yaml`, manifest(name, extra), dir);
  write(`${name}/main.mjs`, `console.log('${name}')`, dir);
}

describe('loadModuleDirectories', () => {
  it('loads the demo modules without problems', async () => {
    const { modules, problems } = await loadModuleDirectories([demoModulesPath]);
    expect(problems).toEqual([]);
    expect(modules.map((m) => m.manifest.name)).toEqual(['csv', 'ml', 'text']);
    expect(modules.map((m) => m.dir)).toEqual(['csv', 'ml', 'text'].map((n) => join(demoModulesPath, n)));
  });

  it('keeps the valid modules next to broken manifests, and says what is wrong with each', async () => {
    writeModule('alpha');
    writeModule('omega');
    write('broken/module.yaml', 'name: [unclosed');
    write('invalid/module.yaml', manifest('invalid', { version: 'one' }));
    write('misnamed/module.yaml', manifest('other-name'));
    write('misnamed/main.mjs', '');
    write('no-files/module.yaml', manifest('no-files'));
    const { modules, problems } = await loadModuleDirectories([root]);
    expect(modules.map((m) => m.manifest.name)).toEqual(['alpha', 'omega']);
    expect(modules[0]).toMatchObject({ dir: join(root, 'alpha'), root });
    expect(problems.map((p) => [p.file, p.root])).toEqual([
      ['broken/module.yaml', root],
      ['invalid/module.yaml', root],
      ['misnamed/module.yaml', root],
      ['no-files/module.yaml', root],
    ]);
    const message = (file: string) => problems.find((p) => p.file === file)?.message;
    expect(message('broken/module.yaml')).toMatch(/not valid YAML/);
    expect(message('invalid/module.yaml')).toMatch(/^version: must be a semantic version/);
    expect(message('misnamed/module.yaml')).toBe('name: "other-name" must match its directory "misnamed"');
    expect(message('no-files/module.yaml')).toBe(
      'functions[0].run.cluster.files: "main.mjs" is not a file of the module directory; ' +
        'functions[0].run.local.command: "main.mjs" is not a file of the module directory',
    );
  });

  it('lets the first directory win when two define a module of the same name', async () => {
    const second = join(base, 'two');
    writeModule('alpha');
    writeModule('alpha', second, { title: 'Second alpha' });
    writeModule('beta', second);
    const { modules, problems } = await loadModuleDirectories([root, second]);
    expect(modules.map((m) => [m.manifest.name, m.manifest.title, m.root])).toEqual([
      ['alpha', 'alpha', root],
      ['beta', 'beta', second],
    ]);
    expect(problems).toEqual([
      {
        root: second,
        file: 'alpha/module.yaml',
        message: `name: module "alpha" is already defined in ${join(root, 'alpha')}`,
      },
    ]);
  });

  it('reports a directory that cannot be read, and loads the others', async () => {
    writeModule('alpha');
    const missing = join(base, 'missing');
    const { modules, problems } = await loadModuleDirectories([missing, root]);
    expect(modules.map((m) => m.manifest.name)).toEqual(['alpha']);
    expect(problems).toEqual([
      { root: missing, file: '.', message: expect.stringMatching(/^cannot be read: ENOENT/) },
    ]);
  });

  it('ignores hidden entries, loose files and directories without a manifest', async () => {
    writeModule('alpha');
    write('.hidden/module.yaml', 'not: [valid');
    write('notes.yaml', 'anything');
    write('shared/lib.mjs', '');
    const { modules, problems } = await loadModuleDirectories([root]);
    expect(modules.map((m) => m.manifest.name)).toEqual(['alpha']);
    expect(problems).toEqual([]);
  });

  it('reports a module.yaml that is not a file, or too large', async () => {
    writeModule('alpha');
    mkdirSync(join(root, 'dir', 'module.yaml'), { recursive: true });
    write('huge/module.yaml', `# ${'x'.repeat(300 * 1024)}\n`);
    const { modules, problems } = await loadModuleDirectories([root]);
    expect(modules.map((m) => m.manifest.name)).toEqual(['alpha']);
    expect(problems).toEqual([
      { root, file: 'dir/module.yaml', message: 'not a file' },
      { root, file: 'huge/module.yaml', message: 'larger than 262144 bytes' },
    ]);
  });
});

describe('module digests', () => {
  it('change when the manifest or any file of the module changes, and only then', async () => {
    writeModule('alpha');
    writeModule('beta');
    const digests = async () =>
      Object.fromEntries(
        (await loadModuleDirectories([root])).modules.map((m) => [m.manifest.name, m.digest]),
      );
    const first = await digests();
    expect(first.alpha).toMatch(/^[0-9a-f]{64}$/);
    expect(first.alpha).not.toBe(first.beta);
    expect(await digests()).toEqual(first);

    write('alpha/main.mjs', "console.log('changed')");
    const second = await digests();
    expect(second.alpha).not.toBe(first.alpha);
    expect(second.beta).toBe(first.beta);

    write('alpha/data/extra.json', '{}');
    const third = await digests();
    expect(third.alpha).not.toBe(second.alpha);

    write('alpha/module.yaml', manifest('alpha', { description: 'new' }));
    expect((await digests()).alpha).not.toBe(third.alpha);
  });

  it('depend on the names and contents of the files, not on where the directory is', async () => {
    write('a/x.txt', 'one');
    write('b/x.txt', 'one');
    write('c/y.txt', 'one');
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((d) => directoryDigest(join(root, d))));
    expect(a).toBe(b);
    expect(c).not.toBe(a);
  });
});
