import { describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { demoModulesPath } from '../../../src/paths.js';
import {
  type ModuleFunction,
  ModuleManifestError,
  acceptsMediaType,
  durationMs,
  functionResources,
  functionTimeoutMs,
  inputProblems,
  localCommand,
  localEnv,
  parseModuleManifest,
  validateFunctionOptions,
} from '../../../src/backends/modules/manifest.js';
import { clusterRunSpec, localRunSpec } from '../../../src/backends/modules/run-spec.js';

type Document = Record<string, unknown>;

/** A valid manifest with two functions; fresh on every call. */
function validManifest(): Document {
  return {
    name: 'tables',
    version: '1.2.0',
    title: 'Tables',
    functions: [
      {
        name: 'summary',
        title: 'Summary',
        options: {
          type: 'object',
          properties: {
            top: { type: 'integer', minimum: 0, default: 5 },
            columns: { type: 'array', items: { type: 'string' }, default: [] },
            mode: { type: 'string', enum: ['fast', 'exact'] },
          },
          required: ['mode'],
          additionalProperties: false,
        },
        inputs: { media_types: ['text/csv'], min: 1, max: 1 },
        output: 'creates',
        resources: { cpu: '250m', memory: '256Mi' },
        timeout: '5m',
        run: {
          local: {
            command: ['node', '${module.dir}/tables.mjs', 'summary'],
            env: { DATA: '${module.dir}/data' },
          },
          cluster: {
            image: 'node:20-alpine',
            command: ['node', '/app/tables.mjs', 'summary'],
            files: ['tables.mjs'],
          },
        },
      },
      {
        name: 'upper',
        title: 'Upper case',
        inputs: { media_types: ['text/*'] },
        output: 'modifies',
        run: { local: { command: ['./upper.sh'] } },
      },
    ],
  };
}

const fn = (doc: Document, i = 0) => (doc.functions as Document[])[i] as Document;

/** The problems of the ModuleManifestError that parsing `doc` throws; fails the test otherwise. */
function problems(doc: unknown): { path: string; message: string }[] {
  try {
    parseModuleManifest(doc);
  } catch (error) {
    expect(error).toBeInstanceOf(ModuleManifestError);
    return (error as ModuleManifestError).problems;
  }
  throw new Error('expected a ModuleManifestError, but the manifest was accepted');
}

const paths = (doc: unknown) => problems(doc).map((p) => p.path);

describe('parseModuleManifest', () => {
  describe('the demo modules', () => {
    const names = readdirSync(demoModulesPath);

    it('are text, csv and ml', () => {
      expect(names.sort()).toEqual(['csv', 'ml', 'text']);
    });

    it.each(names)('accepts %s/module.yaml, with both run specs for every function', (name) => {
      const manifest = parseModuleManifest(
        parseYaml(readFileSync(join(demoModulesPath, name, 'module.yaml'), 'utf8')),
      );
      expect(manifest.name).toBe(name);
      for (const f of manifest.functions) {
        expect(f.run.local).not.toBeNull();
        expect(f.run.cluster?.files.length).toBeGreaterThan(0);
        expect(f.description.length).toBeGreaterThan(0);
      }
    });
  });

  describe('a valid manifest', () => {
    it('fills every optional field with its default', () => {
      const manifest = parseModuleManifest(validManifest());
      expect(manifest.description).toBe('');
      expect(manifest.keywords).toEqual([]);
      expect(manifest.functions[1]).toEqual({
        name: 'upper',
        title: 'Upper case',
        description: '',
        options: { type: 'object', properties: {}, additionalProperties: false },
        inputs: { media_types: ['text/*'], min: 1, max: null },
        output: 'modifies',
        resources: { cpu: '100m', memory: '128Mi', gpu: 0 },
        timeout: '10m',
        run: { local: { command: ['./upper.sh'], env: {} }, cluster: null },
      });
      expect(manifest.functions[0]?.run.cluster).toMatchObject({ args: null, env: {} });
    });

    it('is itself a valid manifest, so that it can be stored as JSON and parsed again', () => {
      const manifest = parseModuleManifest(validManifest());
      expect(parseModuleManifest(JSON.parse(JSON.stringify(manifest)))).toEqual(manifest);
    });

    it('accepts a function with only a cluster run spec, and no inputs at all', () => {
      const doc = validManifest();
      fn(doc).run = { cluster: { image: 'busybox' } };
      fn(doc).inputs = { media_types: ['*/*'], min: 0, max: 0 };
      const [summary] = parseModuleManifest(doc).functions;
      expect(summary?.run.local).toBeNull();
      expect(summary?.inputs).toEqual({ media_types: ['*/*'], min: 0, max: 0 });
    });
  });

  describe('an invalid manifest', () => {
    it('lists every problem, each with its path', () => {
      const doc = validManifest();
      doc.name = 'Tables';
      doc.version = '1.2';
      doc.surprise = true;
      fn(doc).inputs = { media_types: ['CSV'], min: 2, max: 1 };
      fn(doc).output = 'deletes';
      fn(doc).timeout = '5 minutes';
      fn(doc, 1).name = 'summary';
      const error = problems(doc);
      expect(error.map((p) => p.path).sort()).toEqual([
        '',
        'functions[0].inputs.max',
        'functions[0].inputs.media_types[0]',
        'functions[0].output',
        'functions[0].timeout',
        'name',
        'version',
      ]);
      expect(error.find((p) => p.path === '')?.message).toMatch(/surprise/);
    });

    it('reports a function name declared twice', () => {
      const doc = validManifest();
      fn(doc, 1).name = 'summary';
      expect(problems(doc)).toEqual([
        { path: 'functions[1].name', message: 'function "summary" is declared twice' },
      ]);
    });

    it('puts every problem in the error message', () => {
      const doc = validManifest();
      doc.version = 'one';
      fn(doc).title = '';
      expect(() => parseModuleManifest(doc)).toThrow(/version: .*semantic.*; functions\[0\]\.title: /);
    });

    it('needs at least one function, and a run spec in each', () => {
      expect(paths({ ...validManifest(), functions: [] })).toEqual(['functions']);
      const doc = validManifest();
      fn(doc).run = {};
      expect(problems(doc)).toEqual([
        { path: 'functions[0].run', message: 'needs a `local` or a `cluster` run spec' },
      ]);
    });

    it('refuses an options schema that is not of an object', () => {
      const doc = validManifest();
      fn(doc).options = { type: 'string' };
      expect(problems(doc)).toEqual([
        { path: 'functions[0].options', message: 'the schema must have `type: object`' },
      ]);
    });

    it('refuses an options schema that is not a JSON Schema', () => {
      const doc = validManifest();
      fn(doc).options = { type: 'object', properties: { top: { type: 'int' } } };
      expect(problems(doc)[0]?.message).toMatch(/not a valid JSON Schema/);
      // The failed schema leaves nothing behind for the next manifest to collide with.
      expect(parseModuleManifest(validManifest()).name).toBe('tables');
    });

    it('refuses a default that does not validate, wherever it is, and checks every function', () => {
      const doc = validManifest();
      const properties = (fn(doc).options as Document).properties as Record<string, Document>;
      properties.top = { type: 'integer', minimum: 0, default: -1 };
      properties.columns = { type: 'array', items: { type: 'string', default: 3 } };
      fn(doc, 1).options = { type: 'object', properties: { x: { type: 'boolean', default: 'yes' } } };
      expect(paths(doc)).toEqual([
        'functions[0].options.properties.top.default',
        'functions[0].options.properties.columns.items.default',
        'functions[1].options.properties.x.default',
      ]);
    });

    it('allows the same $id in two functions', () => {
      const doc = validManifest();
      for (const i of [0, 1]) fn(doc, i).options = { $id: 'https://example.com/o', type: 'object' };
      expect(parseModuleManifest(doc).functions).toHaveLength(2);
    });

    it('knows only ${module.dir}, and only in a local run', () => {
      const doc = validManifest();
      const run = fn(doc).run as Record<string, Document>;
      (run.local as Document).command = ['node', '${options.top}'];
      (run.cluster as Document).env = { DIR: '${module.dir}' };
      expect(paths(doc)).toEqual(['functions[0].run.local.command[1]', 'functions[0].run.cluster.env.DIR']);
    });

    it('refuses cluster files that are paths', () => {
      const doc = validManifest();
      ((fn(doc).run as Record<string, Document>).cluster as Document).files = ['../secret'];
      expect(paths(doc)).toEqual(['functions[0].run.cluster.files[0]']);
    });

    it('refuses resources that are not quantities', () => {
      const doc = validManifest();
      fn(doc).resources = { cpu: 'lots', memory: '1 GB' };
      expect(paths(doc)).toEqual(['functions[0].resources.cpu', 'functions[0].resources.memory']);
    });

    it('refuses what is not a mapping', () => {
      expect(paths('name: x')).toEqual(['']);
      expect(paths(null)).toEqual(['']);
    });
  });
});

describe('durationMs', () => {
  it.each([
    ['90s', 90_000],
    ['5m', 300_000],
    ['1h30m', 5_400_000],
    ['1s500ms', 1500],
    ['24h', 86_400_000],
  ])('reads %s as %d ms', (text, ms) => {
    expect(durationMs(text)).toBe(ms);
  });

  it.each(['', '5', '500ms', '25h', '1m1h', '-5m', '5 m'])('refuses "%s"', (text) => {
    expect(durationMs(text)).toBeNull();
  });

  it('gives the timeout and resources of a function as numbers', () => {
    const [summary] = parseModuleManifest(validManifest()).functions as [ModuleFunction];
    expect(functionTimeoutMs(summary)).toBe(300_000);
    expect(functionResources(summary)).toEqual({ cpuMillis: 250, memoryBytes: 256 * 2 ** 20, gpu: 0 });
  });
});

describe('validateFunctionOptions', () => {
  const [summary, upper] = parseModuleManifest(validManifest()).functions as [ModuleFunction, ModuleFunction];

  it('applies the defaults, without changing what it was given', () => {
    const given = { mode: 'fast' };
    expect(validateFunctionOptions(summary, given)).toEqual({
      ok: true,
      value: { mode: 'fast', top: 5, columns: [] },
    });
    expect(given).toEqual({ mode: 'fast' });
  });

  it('keeps what was given over the defaults', () => {
    expect(validateFunctionOptions(summary, { mode: 'exact', top: 1, columns: ['a'] })).toEqual({
      ok: true,
      value: { mode: 'exact', top: 1, columns: ['a'] },
    });
  });

  it('points at every problem', () => {
    const result = validateFunctionOptions(summary, { top: -1, bogus: 1, columns: ['a', 2] });
    expect(result.ok).toBe(false);
    const pointers = result.ok ? [] : result.errors.map((e) => e.pointer).sort();
    expect(pointers).toEqual(['/bogus', '/columns/1', '/mode', '/top']);
    expect(result.ok ? null : result.errors.find((e) => e.pointer === '/bogus')?.message).toBe(
      'is not an option of this function',
    );
  });

  it('refuses options that are not an object, and takes none as {}', () => {
    expect(validateFunctionOptions(summary, [1]).ok).toBe(false);
    expect(validateFunctionOptions(upper, undefined)).toEqual({ ok: true, value: {} });
    expect(validateFunctionOptions(upper, { x: 1 })).toEqual({
      ok: false,
      errors: [{ pointer: '/x', message: 'is not an option of this function' }],
    });
  });

  it('validates with each function its own schema when two share an $id', () => {
    const doc = validManifest();
    fn(doc, 0).options = {
      $id: 'https://example.com/options',
      type: 'object',
      properties: { a: { type: 'string' } },
    };
    fn(doc, 1).options = {
      $id: 'https://example.com/options',
      type: 'object',
      properties: { a: { type: 'number' } },
    };
    const [first, second] = parseModuleManifest(doc).functions as [ModuleFunction, ModuleFunction];
    expect(validateFunctionOptions(first, { a: 'x' }).ok).toBe(true);
    expect(validateFunctionOptions(second, { a: 'x' }).ok).toBe(false);
    expect(validateFunctionOptions(second, { a: 1 }).ok).toBe(true);
  });
});

describe('inputs', () => {
  const [summary, upper] = parseModuleManifest(validManifest()).functions as [ModuleFunction, ModuleFunction];

  it('accepts exact media types, ranges, and ignores parameters and case', () => {
    expect(acceptsMediaType(summary, 'text/csv')).toBe(true);
    expect(acceptsMediaType(summary, 'Text/CSV; charset=utf-8')).toBe(true);
    expect(acceptsMediaType(summary, 'text/plain')).toBe(false);
    expect(acceptsMediaType(upper, 'text/markdown')).toBe(true);
    expect(acceptsMediaType(upper, 'application/json')).toBe(false);
    expect(acceptsMediaType(upper, 'textual/plain')).toBe(false);
  });

  it('accepts anything with */*', () => {
    const doc = validManifest();
    fn(doc).inputs = { media_types: ['*/*'] };
    const [any] = parseModuleManifest(doc).functions as [ModuleFunction];
    expect(acceptsMediaType(any, 'application/octet-stream')).toBe(true);
  });

  it('says what is wrong with a set of input files', () => {
    expect(inputProblems(summary, [{ name: 'a.csv', media_type: 'text/csv' }])).toEqual([]);
    expect(
      inputProblems(summary, [
        { name: 'a.csv', media_type: 'text/csv' },
        { name: 'b.json', media_type: 'application/json' },
      ]),
    ).toEqual(['takes 1 input file(s), got 2', '"b.json" is application/json, not one of text/csv']);
    expect(inputProblems(upper, [])).toEqual(['takes at least 1 input file(s), got 0']);
  });
});

describe('run specs', () => {
  const [summary, upper] = parseModuleManifest(validManifest()).functions as [ModuleFunction, ModuleFunction];

  it('runs `node` as the Node.js running Atrium, with ${module.dir} resolved', () => {
    expect(localCommand(summary, '/m/tables')).toEqual([process.execPath, '/m/tables/tables.mjs', 'summary']);
    expect(localEnv(summary, '/m/tables')).toEqual({ DATA: '/m/tables/data' });
    expect(localCommand(upper, '/m/tables')).toEqual(['./upper.sh']);
  });

  it('runs locally in the work directory, and names it in ATRIUM_WORK_DIR', () => {
    expect(localRunSpec(summary, '/m/tables', '/w/1')).toEqual({
      command: [process.execPath, '/m/tables/tables.mjs', 'summary'],
      cwd: '/w/1',
      env: { DATA: '/m/tables/data', ATRIUM_WORK_DIR: '/w/1' },
    });
  });

  it('gives a cluster run the content of the files to mount, and the work volume', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'atrium-module-'));
    writeFileSync(join(dir, 'tables.mjs'), 'console.log(1)');
    expect(await clusterRunSpec(summary, dir, 'runs/r1/jobs/j1')).toEqual({
      image: 'node:20-alpine',
      command: ['node', '/app/tables.mjs', 'summary'],
      args: null,
      env: { ATRIUM_WORK_DIR: '/work' },
      files: { 'tables.mjs': 'console.log(1)' },
      workSubPath: 'runs/r1/jobs/j1',
    });
    await expect(clusterRunSpec(upper, dir, 'x')).rejects.toThrow(/no cluster run spec/);
  });
});
