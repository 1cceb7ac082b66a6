import { describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ManifestError, parseManifest } from '../../../src/backends/catalog/manifest.js';
import { compareVersionsDescending, latestVersion } from '../../../src/versions.js';
import { demoCatalogPath } from '../../../src/paths.js';

type Document = Record<string, unknown>;

/** Every YAML file under a directory, recursively. */
function yamlFilesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return yamlFilesUnder(path);
    return /\.ya?ml$/.test(entry.name) ? [path] : [];
  });
}

/** A valid manifest using every kind of placeholder, with both run specs; fresh on every call. */
function validManifest(): Document {
  return {
    name: 'demo-app',
    version: '1.2.0',
    title: 'Demo app',
    options: {
      type: 'object',
      properties: {
        greeting: { type: 'string', default: 'hi', maxLength: 50 },
        workers: { type: 'integer', minimum: 1, default: 2 },
        verbose: { type: 'boolean' },
      },
      required: ['greeting', 'workers'],
      additionalProperties: false,
    },
    run: {
      local: {
        command: ['node', 'app.mjs', '--workers=${options.workers}'],
        ports: [{ name: 'http' }, { name: 'metrics', protocol: 'tcp' }],
        health: { port: 'http', path: '/healthz' },
        env: {
          PORT: '${ports.http}',
          METRICS_PORT: '${ports.metrics}',
          GREETING: '${options.greeting}',
          SERVICE: '${service.id}/${service.name}',
          PROJECT: '${project.id}',
        },
      },
      cluster: {
        image: 'node:20-alpine',
        command: ['node', '/app/app.mjs'],
        args: ['--workers=${options.workers}', '--port=${ports.http}'],
        ports: [{ name: 'http', container_port: 8080 }],
        health: { port: 'http', path: '/healthz' },
        env: { GREETING: '${options.greeting}' },
        files: ['app.mjs'],
      },
    },
  };
}

/** A valid function of validManifest's service, with `changes` applied. */
function aFunction(changes: Document = {}): Document {
  return {
    name: 'greet',
    input: { type: 'object', properties: { name: { type: 'string' } }, additionalProperties: false },
    http: { port: 'http', method: 'POST', path: '/greet' },
    ...changes,
  };
}

function run(doc: Document): Document {
  return doc.run as Document;
}
function local(doc: Document): Document {
  return run(doc).local as Document;
}
function cluster(doc: Document): Document {
  return run(doc).cluster as Document;
}
function options(doc: Document): Document {
  return doc.options as Document;
}
function property(doc: Document, name: string): Document {
  return (options(doc).properties as Record<string, Document>)[name] as Document;
}

/** The message of the ManifestError that parsing `doc` throws; fails the test otherwise. */
function rejection(doc: unknown): string {
  try {
    parseManifest(doc);
  } catch (error) {
    expect(error).toBeInstanceOf(ManifestError);
    return (error as Error).message;
  }
  throw new Error('expected a ManifestError, but the manifest was accepted');
}

describe('parseManifest', () => {
  describe('the demo catalog', () => {
    const files = yamlFilesUnder(demoCatalogPath);

    it('has manifests to check', () => {
      expect(files.length).toBeGreaterThanOrEqual(5);
    });

    it.each(files.map((file) => [relative(demoCatalogPath, file), file]))('accepts %s', (_name, file) => {
      const spec = parseManifest(parseYaml(readFileSync(file, 'utf8')));
      expect(spec.name).toBe(basename(dirname(file)));
      expect(spec.version).toBe(basename(file).replace(/\.ya?ml$/, ''));
      // Every option of the demo packages has a default, and the defaults are what a launch gets.
      const properties = spec.options_schema.properties as Record<string, { default?: unknown }>;
      const expected = Object.fromEntries(Object.entries(properties).map(([key, p]) => [key, p.default]));
      expect(spec.defaults).toEqual(expected);
      expect(spec.run.local).not.toBeNull();
      expect(spec.run.cluster).not.toBeNull();
    });
  });

  describe('a valid manifest', () => {
    it('computes the options a launch gets by default', () => {
      expect(parseManifest(validManifest()).defaults).toEqual({ greeting: 'hi', workers: 2 });
    });

    it('fills every optional field with its default', () => {
      const spec = parseManifest({
        name: 'tiny',
        version: '0.1.0',
        title: 'Tiny',
        run: { local: { command: ['./tiny'] } },
      });
      expect(spec).toEqual({
        functions: [],
        name: 'tiny',
        version: '0.1.0',
        title: 'Tiny',
        description: '',
        icon: null,
        keywords: [],
        home: null,
        options_schema: { type: 'object', properties: {}, additionalProperties: false },
        defaults: {},
        resources: { cpu: '100m', memory: '128Mi', gpu: 0 },
        run: {
          local: { command: ['./tiny'], ports: [], health: null, env: {} },
          cluster: null,
        },
        app: { name: 'tiny', version: '0.1.0' },
      });
    });

    it('keeps the app a package names, for plugin drivers, and refuses a malformed one', () => {
      expect(parseManifest({ ...validManifest(), app: { name: 'redis', version: '7.2' } }).app).toEqual({
        name: 'redis',
        version: '7.2',
      });
      expect(() => parseManifest({ ...validManifest(), app: { name: 'Redis!', version: '7' } })).toThrow(
        /app\.name/,
      );
      expect(() => parseManifest({ ...validManifest(), app: { name: 'redis' } })).toThrow(/app\.version/);
    });

    it('fills the defaults of ports, health and cluster run fields', () => {
      const doc = validManifest();
      delete local(doc).health;
      delete cluster(doc).command;
      delete cluster(doc).args;
      delete cluster(doc).files;
      const spec = parseManifest(doc);
      expect(spec.run.local?.ports[0]).toEqual({ name: 'http', protocol: 'http' });
      expect(spec.run.local?.health).toBeNull();
      expect(spec.run.cluster).toMatchObject({ command: null, args: null, files: [] });
    });

    it('accepts a port made public by a boolean option', () => {
      const doc = validManifest();
      local(doc).ports = [
        { name: 'http', public_option: 'verbose' },
        { name: 'metrics', protocol: 'tcp' },
      ];
      expect(parseManifest(doc).run.local?.ports[0]).toEqual({
        name: 'http',
        protocol: 'http',
        public_option: 'verbose',
      });
    });

    it('accepts functions, with the defaults of what they leave out', () => {
      const doc = validManifest();
      doc.functions = [
        aFunction({
          http: { port: 'http', method: 'GET', path: '/greet/{name}' },
          idempotent: true,
          cache_ttl_s: 30,
        }),
      ];
      expect(parseManifest(doc).functions).toEqual([
        {
          name: 'greet',
          description: '',
          input: { type: 'object', properties: { name: { type: 'string' } }, additionalProperties: false },
          output: null,
          timeout_ms: 30_000,
          idempotent: true,
          cache_ttl_s: 30,
          driver: 'http-json',
          http: { port: 'http', method: 'GET', path: '/greet/{name}' },
        },
      ]);
    });

    it('accepts a manifest with only a cluster run spec', () => {
      const doc = validManifest();
      delete run(doc).local;
      expect(parseManifest(doc).run.local).toBeNull();
    });

    it('accepts a manifest with only a local run spec', () => {
      const doc = validManifest();
      run(doc).cluster = null;
      expect(parseManifest(doc).run.cluster).toBeNull();
    });

    it('accepts a pre-release version and a health check without a path', () => {
      const doc = validManifest();
      doc.version = '2.0.0-rc.1';
      local(doc).health = { port: 'metrics' };
      const spec = parseManifest(doc);
      expect(spec.version).toBe('2.0.0-rc.1');
      expect(spec.run.local?.health).toEqual({ port: 'metrics', path: null });
    });

    it('accepts options marked as passwords', () => {
      const doc = validManifest();
      property(doc, 'greeting').format = 'password';
      expect(parseManifest(doc).defaults.greeting).toBe('hi');
    });

    it('accepts nested defaults that validate against their schema', () => {
      const doc = validManifest();
      options(doc).properties = {
        tags: { type: 'array', items: { type: 'string', default: 'x' }, default: ['a', 'b'] },
        limits: {
          type: 'object',
          properties: { rps: { type: 'integer', default: 10 } },
          default: { rps: 5 },
        },
      };
      options(doc).required = [];
      local(doc).command = ['serve'];
      local(doc).env = {};
      cluster(doc).env = {};
      cluster(doc).args = [];
      expect(parseManifest(doc).defaults).toEqual({ tags: ['a', 'b'], limits: { rps: 5 } });
    });

    it('leaves text without placeholders alone, including a lone dollar sign', () => {
      const doc = validManifest();
      local(doc).env = { PRICE: '$5', HOME: '$HOME' };
      expect(parseManifest(doc).run.local?.env).toEqual({ PRICE: '$5', HOME: '$HOME' });
    });
  });

  describe('options schemas using $id and $ref', () => {
    const plain = (): Document => ({ ...validManifest(), run: { local: { command: ['node', 'app.mjs'] } } });
    const withId = (): Document => ({
      ...plain(),
      options: {
        $id: 'https://example.org/schemas/opts',
        type: 'object',
        properties: { size: { type: 'integer', default: 1 } },
      },
    });

    it('accepts the same $id in every manifest, however many times they are read', () => {
      for (let i = 0; i < 3; i++) expect(parseManifest(withId()).defaults).toEqual({ size: 1 });
    });

    it('checks a default against a subschema reached through $ref', () => {
      const options = {
        type: 'object',
        $defs: { level: { enum: ['info', 'debug'] } },
        properties: { level: { $ref: '#/$defs/level', default: 'info' } },
      };
      expect(parseManifest({ ...plain(), options }).defaults).toEqual({ level: 'info' });
      const bad = { ...options, properties: { level: { $ref: '#/$defs/level', default: 'loud' } } };
      expect(() => parseManifest({ ...plain(), options: bad })).toThrow(
        /^options\.level: default "loud" is invalid/,
      );
    });

    it('checks defaults inside anyOf, oneOf and $defs too', () => {
      const options = {
        type: 'object',
        properties: { n: { anyOf: [{ type: 'integer', default: 'zz' }, { type: 'null' }] } },
      };
      expect(() => parseManifest({ ...plain(), options })).toThrow(ManifestError);
      expect(() => parseManifest({ ...plain(), options })).toThrow(/default "zz" is invalid/);
    });
  });

  describe('a manifest it refuses', () => {
    it.each([
      ['a string', 'just text'],
      ['null', null],
      ['a list', [validManifest()]],
    ])('refuses %s instead of a mapping', (_what, doc) => {
      expect(rejection(doc)).toMatch(/^\(manifest\): /);
    });

    const cases: [string, (doc: Document) => void, RegExp][] = [
      [
        'a name with upper case and underscores',
        (doc) => (doc.name = 'Demo_App'),
        /^name: must be a lower-case/,
      ],
      ['a name ending with a dash', (doc) => (doc.name = 'demo-'), /^name: /],
      [
        'a version that is not semver',
        (doc) => (doc.version = '1.2'),
        /^version: must be a semantic version/,
      ],
      ['a version with a v prefix', (doc) => (doc.version = 'v1.2.0'), /^version: /],
      [
        'a valid semantic version longer than a database column holds',
        (doc) => (doc.version = `1.0.0-${'a'.repeat(100)}`),
        /^version: .*100/,
      ],
      ['a missing title', (doc) => delete doc.title, /^title: /],
      ['an icon that is not a URL', (doc) => (doc.icon = 'icon.png'), /^icon: /],
      ['an unknown top-level field', (doc) => (doc.maintainer = 'me'), /^\(manifest\): .*"maintainer"/],
      [
        'an unknown field in the local run spec',
        (doc) => (local(doc).shell = true),
        /^run\.local: .*"shell"/,
      ],
      [
        'a CPU request that is not a quantity',
        (doc) => (doc.resources = { cpu: '2 cores' }),
        /^resources\.cpu: /,
      ],
      [
        'a memory request that is not a size',
        (doc) => (doc.resources = { memory: '1GB' }),
        /^resources\.memory: /,
      ],
      ['a negative GPU count', (doc) => (doc.resources = { gpu: -1 }), /^resources\.gpu: /],
      [
        'an options schema of type array',
        (doc) => (options(doc).type = 'array'),
        /^options: the schema must have `type: object`/,
      ],
      [
        'an options schema without a type',
        (doc) => delete options(doc).type,
        /^options: the schema must have `type: object`/,
      ],
      [
        'an options schema with an unknown type',
        (doc) => (property(doc, 'greeting').type = 'strng'),
        /^options: not a valid JSON Schema: /,
      ],
      [
        'an options schema with an unknown keyword',
        (doc) => (property(doc, 'greeting').maxLenght = 5),
        /^options: not a valid JSON Schema: .*maxLenght/,
      ],
      [
        'a default that does not validate against its property schema',
        (doc) => (property(doc, 'workers').default = 0),
        /^options\.workers: default 0 is invalid: .*>= 1/,
      ],
      [
        'a default of the wrong type',
        (doc) => (property(doc, 'greeting').default = 42),
        /^options\.greeting: default 42 is invalid: .*string/,
      ],
      [
        'an invalid default of an array item',
        (doc) =>
          ((options(doc).properties as Document).tags = {
            type: 'array',
            items: { type: 'integer', default: 'x' },
          }),
        /^options\.tags\[\]: default "x" is invalid/,
      ],
      [
        'an invalid default of a nested property',
        (doc) =>
          ((options(doc).properties as Document).limits = {
            type: 'object',
            properties: { rps: { type: 'integer', default: 1.5 } },
          }),
        /^options\.limits\.rps: default 1\.5 is invalid/,
      ],
      [
        'a required option without a default',
        (doc) => (options(doc).required = ['greeting', 'workers', 'verbose']),
        /^options: the defaults do not validate \(.*'verbose'.*\); give every required option a default$/,
      ],
      [
        'an unknown option placeholder',
        (doc) => ((local(doc).env as Document).NOPE = '${options.nope}'),
        /^run\.local: unknown placeholder \$\{options\.nope\}/,
      ],
      [
        'an unknown port placeholder',
        (doc) => (cluster(doc).args = ['--port=${ports.nope}']),
        /^run\.cluster: unknown placeholder \$\{ports\.nope\}/,
      ],
      [
        'a placeholder of a port declared only in the other run spec',
        (doc) => ((cluster(doc).env as Document).METRICS = '${ports.metrics}'),
        /^run\.cluster: unknown placeholder \$\{ports\.metrics\}/,
      ],
      [
        'an unknown placeholder in a command',
        (doc) => (local(doc).command = ['node', '${service.owner}']),
        /^run\.local: unknown placeholder \$\{service\.owner\}/,
      ],
      [
        'a placeholder reaching into an option',
        (doc) => (local(doc).command = ['node', '${options.greeting.length}']),
        /^run\.local: unknown placeholder \$\{options\.greeting\.length\}/,
      ],
      [
        'an empty placeholder',
        (doc) => (local(doc).command = ['${}']),
        /^run\.local: unknown placeholder \$\{\}/,
      ],
      [
        'a health check on an undeclared port',
        (doc) => (local(doc).health = { port: 'admin', path: '/healthz' }),
        /^run\.local\.health: port "admin" is not declared in ports$/,
      ],
      [
        'a health path without a leading slash',
        (doc) => (local(doc).health = { port: 'http', path: 'healthz' }),
        /^run\.local\.health\.path: /,
      ],
      [
        'a port declared twice',
        (doc) => (local(doc).ports = [{ name: 'http' }, { name: 'http', protocol: 'tcp' }]),
        /^run\.local\.ports: port "http" is declared twice$/,
      ],
      [
        'a port name that is not a label',
        (doc) => (local(doc).ports = [{ name: 'HTTP' }]),
        /^run\.local\.ports\.0\.name: /,
      ],
      [
        'a cluster port without a container_port',
        (doc) => (cluster(doc).ports = [{ name: 'http' }]),
        /^run\.cluster\.ports: port "http" needs a container_port$/,
      ],
      [
        'a container_port out of range',
        (doc) => (cluster(doc).ports = [{ name: 'http', container_port: 70000 }]),
        /^run\.cluster\.ports\.0\.container_port: /,
      ],
      ['neither run spec', (doc) => (doc.run = {}), /^run: needs a `local` or a `cluster` run spec$/],
      [
        'both run specs null',
        (doc) => (doc.run = { local: null, cluster: null }),
        /^run: needs a `local` or a `cluster` run spec$/,
      ],
      ['an empty local command', (doc) => (local(doc).command = []), /^run\.local\.command: /],
      [
        'a cluster file outside the package directory',
        (doc) => (cluster(doc).files = ['../secrets.env']),
        /^run\.cluster\.files\.0: must be a file name in the package directory$/,
      ],
      [
        'a public_option that is not a boolean option',
        (doc) => (local(doc).ports = [{ name: 'http', public_option: 'greeting' }]),
        /^run\.local\.ports: port "http" has public_option "greeting", which is not a boolean option$/,
      ],
      [
        'a public_option that is no option',
        (doc) => (cluster(doc).ports = [{ name: 'http', container_port: 8080, public_option: 'open' }]),
        /^run\.cluster\.ports: port "http" has public_option "open", which is not a boolean option$/,
      ],
      [
        'two functions of one name',
        (doc) => (doc.functions = [aFunction(), aFunction()]),
        /^functions: "greet" is declared twice$/,
      ],
      [
        'a function on a port that is not an http port',
        (doc) => (doc.functions = [aFunction({ http: { port: 'metrics', path: '/greet' } })]),
        /^functions\.0\.http\.port: "metrics" is not an http port of the run specs$/,
      ],
      [
        'a function path naming no input field',
        (doc) => (doc.functions = [aFunction({ http: { port: 'http', path: '/greet/{who}' } })]),
        /^functions\.0\.http\.path: \{who\} is not a property of the input schema$/,
      ],
      [
        'a cached function that is not idempotent',
        (doc) => (doc.functions = [aFunction({ cache_ttl_s: 60 })]),
        /^functions\.0\.cache_ttl_s: only an idempotent function may be answered from a cache$/,
      ],
      [
        'a function input that is not a JSON Schema',
        (doc) => (doc.functions = [aFunction({ input: { type: 'object', required: 'name' } })]),
        /^functions\.0\.input: not a valid JSON Schema/,
      ],
      [
        'a function with an unknown driver',
        (doc) => (doc.functions = [aFunction({ driver: 'carrier-pigeon' })]),
        /^functions\.0\.driver: /,
      ],
      [
        'an unknown protocol',
        (doc) => (local(doc).ports = [{ name: 'http', protocol: 'udp' }]),
        /^run\.local\.ports\.0\.protocol: /,
      ],
    ];

    it.each(cases)('refuses %s, naming the field', (_what, change, message) => {
      const doc = validManifest();
      change(doc);
      expect(rejection(doc)).toMatch(message);
    });
  });
});

describe('compareVersionsDescending', () => {
  it('sorts newest first by semantic version precedence, not as text', () => {
    const versions = [
      '1.0.0',
      '1.10.0',
      '1.2.0',
      '2.0.0-rc.1',
      '2.0.0',
      '1.10.0-alpha',
      '2.0.0-beta.10',
      '2.0.0-beta.2',
    ];
    expect([...versions].sort(compareVersionsDescending)).toEqual([
      '2.0.0',
      '2.0.0-rc.1',
      '2.0.0-beta.10',
      '2.0.0-beta.2',
      '1.10.0',
      '1.10.0-alpha',
      '1.2.0',
      '1.0.0',
    ]);
  });

  it('answers zero for equal versions and a sign for the others', () => {
    expect(compareVersionsDescending('1.0.0', '1.0.0')).toBe(0);
    expect(compareVersionsDescending('2.0.0', '1.0.0')).toBeLessThan(0);
    expect(compareVersionsDescending('1.0.0', '2.0.0')).toBeGreaterThan(0);
  });
});

describe('latestVersion', () => {
  it('chooses the highest release', () => {
    expect(latestVersion(['1.0.0', '1.10.0', '1.9.0'])).toBe('1.10.0');
  });

  it('prefers a release over a higher pre-release', () => {
    expect(latestVersion(['1.0.0', '2.0.0-rc.1', '1.1.0', '3.0.0-alpha'])).toBe('1.1.0');
  });

  it('chooses the highest pre-release when there is no release', () => {
    expect(latestVersion(['2.0.0-beta.2', '2.0.0-rc.1', '1.0.0-alpha'])).toBe('2.0.0-rc.1');
  });

  it('chooses the only version there is', () => {
    expect(latestVersion(['0.1.0'])).toBe('0.1.0');
  });

  it('leaves the list it is given in its order', () => {
    const versions = ['1.0.0', '3.0.0', '2.0.0'];
    latestVersion(versions);
    expect(versions).toEqual(['1.0.0', '3.0.0', '2.0.0']);
  });
});
