// The package manifest: one YAML file per package version, written by package authors. Validated
// here in full, so that a launch never meets a manifest it cannot use.
import { Ajv2020, type AnySchema } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import semver from 'semver';
import { z } from 'zod';
import { byteQuantity, cpuQuantity, rfc1123Label } from '../manifest-fields.js';
import { parseBytes, parseCpu } from '../../quantities.js';
import { functionsOfScope } from '../drivers/scopes.js';

const slug = rfc1123Label;
const cpu = cpuQuantity;
const bytes = byteQuantity;

const port = z
  .object({
    name: slug,
    protocol: z.enum(['http', 'tcp']).default('http'),
    container_port: z.number().int().min(1).max(65535).optional(),
    // A boolean option of the package: launched with it true, the port is reachable through the
    // gateway without credentials (a public demo, a static site).
    public_option: z.string().min(1).max(100).optional(),
  })
  .strict();

const health = z
  .object({ port: z.string(), path: z.string().startsWith('/').nullable().default(null) })
  .strict()
  .nullable()
  .default(null);

const env = z.record(z.string(), z.string()).default({});

const localRun = z
  .object({
    command: z.array(z.string().min(1)).min(1),
    ports: z.array(port).default([]),
    health,
    env,
  })
  .strict();

const clusterRun = z
  .object({
    image: z.string().min(1),
    command: z.array(z.string()).nullable().default(null),
    args: z.array(z.string()).nullable().default(null),
    ports: z.array(port).default([]),
    health,
    env,
    // Files of the package directory to mount (read-only, at /app) into the container, so that a
    // stock image can run the package's own program.
    files: z
      .array(z.string().regex(/^[A-Za-z0-9._-]+$/, 'must be a file name in the package directory'))
      .max(20)
      .default([]),
  })
  .strict();

// A function of the service a package runs, called through Atrium (services/functions.ts): its
// input and output are JSON Schemas, its driver says how it is performed. `http-json`: a method and a
// path on one of the service's http ports; `{name}` in the path takes that (string or number) field
// of the input, the rest of the input is the JSON body (the query, for GET and DELETE).
const serviceFunction = z
  .object({
    name: z.string().regex(/^[a-z][a-z0-9_.-]{0,62}$/, 'a lower-case name (letters, digits, _ . -)'),
    description: z.string().max(2000).default(''),
    input: z.record(z.string(), z.unknown()).default({ type: 'object' }),
    output: z.record(z.string(), z.unknown()).nullable().default(null),
    timeout_ms: z.number().int().min(100).max(600_000).default(30_000),
    idempotent: z.boolean().default(false),
    cache_ttl_s: z.number().int().min(0).max(86_400).default(0),
    driver: z.enum(['http-json']).default('http-json'),
    http: z
      .object({
        port: slug,
        method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']).default('POST'),
        path: z.string().startsWith('/').max(500),
        // The input field sent as the whole body (the other fields, without those of the path, else).
        body: z.string().min(1).max(100).optional(),
      })
      .strict(),
  })
  .strict();

/** A function as a service offers it: one its manifest declares (http-json), or one of its scope's. */
export type ServiceFunctionSpec = Omit<z.infer<typeof serviceFunction>, 'driver'> & { driver: string };

export const manifestSchema = z
  .object({
    name: slug,
    version: z
      .string()
      .max(100)
      .refine((v) => semver.valid(v) === v, 'must be a semantic version such as 1.2.0'),
    title: z.string().min(1).max(200),
    description: z.string().max(5000).default(''),
    icon: z.string().url().nullable().default(null),
    keywords: z.array(z.string().min(1).max(100)).max(20).default([]),
    home: z.string().url().nullable().default(null),
    options: z
      .record(z.string(), z.unknown())
      .default({ type: 'object', properties: {}, additionalProperties: false }),
    resources: z
      .object({
        cpu: cpu.default('100m'),
        memory: bytes.default('128Mi'),
        gpu: z.number().int().min(0).default(0),
      })
      .strict()
      .prefault({}),
    run: z
      .object({ local: localRun.nullable().default(null), cluster: clusterRun.nullable().default(null) })
      .strict()
      .refine((run) => run.local !== null || run.cluster !== null, 'needs a `local` or a `cluster` run spec'),
    functions: z.array(serviceFunction).max(100).default([]),
    // The service speaks a scope's protocol on this port: it offers the scope's standard functions
    // (drivers/scopes.ts), performed by the scope's driver, next to those it declares.
    scope: z
      .object({ name: z.enum(['db', 'ai']), port: slug })
      .strict()
      .nullable()
      .default(null),
    // The app the package runs, when it is not the package itself (a `redis-cluster` package
    // running redis 7.2): plugin drivers are chosen by it (services/drivers.ts). Left out, the app
    // is the package, at the package's version.
    app: z
      .object({
        name: z
          .string()
          .max(63)
          .regex(/^[a-z0-9][a-z0-9._-]*$/, 'a lower-case name (letters, digits, . _ -)'),
        version: z.string().min(1).max(100),
      })
      .strict()
      .nullable()
      .default(null),
  })
  .strict();

type Manifest = z.infer<typeof manifestSchema>;
export type LocalRunSpec = NonNullable<Manifest['run']['local']>;
export type ClusterRunSpec = NonNullable<Manifest['run']['cluster']>;

/** A validated package version, normalised: every optional field present, defaults computed. */
export interface PackageVersionSpec {
  name: string;
  version: string;
  title: string;
  description: string;
  icon: string | null;
  keywords: string[];
  home: string | null;
  options_schema: Record<string, unknown>;
  defaults: Record<string, unknown>;
  resources: { cpu: string; memory: string; gpu: number };
  run: { local: LocalRunSpec | null; cluster: ClusterRunSpec | null };
  functions: ServiceFunctionSpec[];
  /** The app it runs, for plugin drivers: the package itself unless its manifest names another. */
  app: { name: string; version: string };
}

export class ManifestError extends Error {
  override name = 'ManifestError';
}

function newAjv(useDefaults = true): Ajv2020 {
  const ajv = new Ajv2020({ strict: true, allErrors: true, useDefaults });
  addFormats.default(ajv);
  // `format: password` marks secrets: valid as any string, never returned or logged.
  ajv.addFormat('password', true);
  return ajv;
}

const rootId = 'atrium:options';

// Two instances for every manifest: one applies defaults, the other (without useDefaults, which
// refuses a `default` at the root of what it compiles) checks each default in place. Building an
// instance compiles the draft 2020-12 meta-schema, so they are shared, and emptied after each
// manifest so that the same `$id` in two manifests (or one read twice) never collides.
const validator = newAjv(true);
const checker = newAjv(false);

/** Validates a JSON Schema for launch options and returns the options a launch gets by default. */
export function validateOptionsSchema(schema: Record<string, unknown>): Record<string, unknown> {
  if (schema.type !== 'object') throw new ManifestError('options: the schema must have `type: object`');
  const root = typeof schema.$id === 'string' ? schema : { ...schema, $id: rootId };
  try {
    let validate;
    try {
      validate = validator.compile(root as AnySchema);
      checker.compile(root as AnySchema);
    } catch (error) {
      throw new ManifestError(`options: not a valid JSON Schema: ${(error as Error).message}`);
    }
    checkDefaults(checker, root.$id as string, schema, '');
    const defaults: Record<string, unknown> = {};
    if (!validate(defaults)) {
      throw new ManifestError(
        `options: the defaults do not validate (${validator.errorsText(validate.errors, { dataVar: 'defaults' })}); ` +
          'give every required option a default',
      );
    }
    return defaults;
  } finally {
    validator.removeSchema();
    checker.removeSchema();
  }
}

const subschemaKeywords = ['items', 'additionalProperties', 'not', 'if', 'then', 'else', 'contains'];
const subschemaMaps = ['properties', '$defs', 'patternProperties'];
const subschemaLists = ['allOf', 'anyOf', 'oneOf', 'prefixItems'];

/** `/properties/limits/properties/rps` → `options.limits.rps`; `/properties/tags/items` → `options.tags[]`. */
function fieldName(pointer: string): string {
  const name = pointer
    .replace(/\/properties\//g, '.')
    .replace(/\/items/g, '[]')
    .replace(/~1/g, '/')
    .replace(/~0/g, '~');
  return `options${name}`;
}

const escapePointer = (key: string) => key.replace(/~/g, '~0').replace(/\//g, '~1');

/**
 * Every `default` in the schema must validate against the schema it sits in. Each is checked with
 * the subschema compiled in place (by JSON Pointer from the root), so `$ref`s resolve as they would.
 */
function checkDefaults(ajv: Ajv2020, id: string, node: unknown, pointer: string): void {
  if (node === null || typeof node !== 'object' || Array.isArray(node)) return;
  const schema = node as Record<string, unknown>;
  if ('default' in schema) {
    const check = ajv.getSchema(`${id}#${pointer}`);
    if (!check) throw new ManifestError(`${fieldName(pointer)}: its default cannot be checked`);
    if (!check(structuredClone(schema.default))) {
      throw new ManifestError(
        `${fieldName(pointer)}: default ${JSON.stringify(schema.default)} is invalid: ${ajv.errorsText(check.errors)}`,
      );
    }
  }
  for (const key of subschemaKeywords) checkDefaults(ajv, id, schema[key], `${pointer}/${key}`);
  for (const key of subschemaMaps) {
    const map = schema[key];
    if (map && typeof map === 'object') {
      for (const [name, sub] of Object.entries(map))
        checkDefaults(ajv, id, sub, `${pointer}/${key}/${escapePointer(name)}`);
    }
  }
  for (const key of subschemaLists) {
    const list = schema[key];
    if (Array.isArray(list)) list.forEach((sub, i) => checkDefaults(ajv, id, sub, `${pointer}/${key}/${i}`));
  }
}

const placeholder = /\$\{([^}]*)\}/g;

function checkPlaceholders(
  texts: string[],
  where: string,
  options: Set<string>,
  ports: Set<string>,
  local: boolean,
): void {
  for (const text of texts) {
    for (const [, ref = ''] of text.matchAll(placeholder)) {
      const [scope, name, ...rest] = ref.split('.');
      const ok =
        rest.length === 0 &&
        ((scope === 'options' && name !== undefined && options.has(name)) ||
          (scope === 'ports' && name !== undefined && ports.has(name)) ||
          (scope === 'service' && (name === 'id' || name === 'name')) ||
          (scope === 'project' && name === 'id') ||
          (local && scope === 'package' && name === 'dir'));
      if (!ok) {
        throw new ManifestError(
          `${where}: unknown placeholder \${${ref}} (use options.<option>, ports.<port>, service.id, service.name, project.id${local ? ' or package.dir' : ''})`,
        );
      }
    }
  }
}

function checkRun(
  run: {
    ports: { name: string; container_port?: number | undefined; public_option?: string | undefined }[];
    health: { port: string } | null;
    env: Record<string, string>;
  },
  texts: string[],
  where: string,
  options: Set<string>,
  booleanOptions: Map<string, boolean>,
): void {
  const names = run.ports.map((p) => p.name);
  const duplicate = names.find((name, i) => names.indexOf(name) !== i);
  if (duplicate) throw new ManifestError(`${where}.ports: port "${duplicate}" is declared twice`);
  if (run.health && !names.includes(run.health.port)) {
    throw new ManifestError(`${where}.health: port "${run.health.port}" is not declared in ports`);
  }
  for (const p of run.ports) {
    if (p.public_option !== undefined && booleanOptions.get(p.public_option) !== true) {
      throw new ManifestError(
        `${where}.ports: port "${p.name}" has public_option "${p.public_option}", which is not a boolean option`,
      );
    }
  }
  checkPlaceholders(
    [...texts, ...Object.values(run.env)],
    where,
    options,
    new Set(names),
    where === 'run.local',
  );
}

/** Parses and validates one manifest document; throws ManifestError with a message for its author. */
export function parseManifest(document: unknown): PackageVersionSpec {
  const parsed = manifestSchema.safeParse(document);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ManifestError(`${issue?.path.join('.') || '(manifest)'}: ${issue?.message ?? 'invalid'}`);
  }
  const m = parsed.data;
  const defaults = validateOptionsSchema(m.options);
  const optionNames = new Set(
    Object.keys((m.options.properties as Record<string, unknown> | undefined) ?? {}),
  );
  try {
    parseCpu(m.resources.cpu);
    parseBytes(m.resources.memory);
  } catch (error) {
    throw new ManifestError(`resources: ${(error as Error).message}`);
  }
  const properties = (m.options.properties as Record<string, { type?: unknown }> | undefined) ?? {};
  const booleanOptions = new Map(
    Object.entries(properties).map(([name, p]) => [name, p?.type === 'boolean']),
  );
  if (m.run.local) checkRun(m.run.local, m.run.local.command, 'run.local', optionNames, booleanOptions);
  if (m.run.cluster) {
    const cluster = m.run.cluster;
    const missing = cluster.ports.find((p) => p.container_port === undefined);
    if (missing) throw new ManifestError(`run.cluster.ports: port "${missing.name}" needs a container_port`);
    checkRun(
      cluster,
      [...(cluster.command ?? []), ...(cluster.args ?? [])],
      'run.cluster',
      optionNames,
      booleanOptions,
    );
  }
  const functions: ServiceFunctionSpec[] = [
    ...m.functions,
    ...(m.scope ? functionsOfScope(m.scope.name, m.scope.port) : []),
  ];
  checkFunctions(functions, m.run, m.scope ? `scope ${m.scope.name}` : null);
  return {
    name: m.name,
    version: m.version,
    title: m.title,
    description: m.description,
    icon: m.icon,
    keywords: m.keywords,
    home: m.home,
    options_schema: m.options,
    defaults,
    resources: m.resources,
    run: m.run,
    functions,
    app: m.app ?? { name: m.name, version: m.version },
  };
}

/** A JSON Schema of a function's input or output: it must compile (draft 2020-12). */
function checkFunctionSchema(schema: Record<string, unknown>, where: string): void {
  try {
    checker.compile({ ...schema, $id: 'atrium:function' } as AnySchema);
  } catch (error) {
    throw new ManifestError(`${where}: not a valid JSON Schema: ${(error as Error).message}`);
  } finally {
    checker.removeSchema();
  }
}

function checkFunctions(
  functions: ServiceFunctionSpec[],
  run: { local: LocalRunSpec | null; cluster: ClusterRunSpec | null },
  scope: string | null,
): void {
  const names = functions.map((f) => f.name);
  const duplicate = names.find((name, i) => names.indexOf(name) !== i);
  if (duplicate) {
    throw new ManifestError(
      `functions: "${duplicate}" is declared twice${scope ? ` (or is a function of the ${scope})` : ''}`,
    );
  }
  const httpPorts = new Set(
    [...(run.local?.ports ?? []), ...(run.cluster?.ports ?? [])]
      .filter((p) => p.protocol === 'http')
      .map((p) => p.name),
  );
  functions.forEach((f, i) => {
    const where = `functions.${i}`;
    checkFunctionSchema(f.input, `${where}.input`);
    if (f.output) checkFunctionSchema(f.output, `${where}.output`);
    if (f.cache_ttl_s > 0 && !f.idempotent) {
      throw new ManifestError(
        `${where}.cache_ttl_s: only an idempotent function may be answered from a cache`,
      );
    }
    if (!httpPorts.has(f.http.port)) {
      throw new ManifestError(
        f.driver === 'http-json'
          ? `${where}.http.port: "${f.http.port}" is not an http port of the run specs`
          : `scope.port: "${f.http.port}" is not an http port of the run specs`,
      );
    }
    const properties = (f.input.properties as Record<string, unknown> | undefined) ?? {};
    if (f.http.body !== undefined && !(f.http.body in properties)) {
      throw new ManifestError(`${where}.http.body: "${f.http.body}" is not a property of the input schema`);
    }
    for (const [, name] of f.http.path.matchAll(/\{([^}]*)\}/g)) {
      if (!name || !(name in properties)) {
        throw new ManifestError(`${where}.http.path: {${name ?? ''}} is not a property of the input schema`);
      }
    }
  });
}
