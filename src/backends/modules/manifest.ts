// The module manifest: `<dir>/<module>/module.yaml`, written by module authors. A module exposes
// functions that run to completion over input files (MLsploit's modules). Every problem of a
// manifest is reported at once, each with its path, so that an author fixes them in one pass.
import { Ajv2020, type AnySchema, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import semver from 'semver';
import { z } from 'zod';
import { byteQuantity, cpuQuantity, rfc1123Label } from '../manifest-fields.js';
import { parseBytes, parseCpu } from '../../quantities.js';

const label = rfc1123Label;
const cpu = cpuQuantity;
const bytes = byteQuantity;
/** `text/csv`, `text/*` or `*\/*`, without parameters. */
const mediaRange = z
  .string()
  .regex(
    /^(\*\/\*|[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/(\*|[a-z0-9][a-z0-9!#$&^_.+-]{0,126}))$/,
    'must be a lower-case media type such as text/csv, a range such as text/*, or */*',
  );
const duration = z
  .string()
  .refine((v) => durationMs(v) !== null, 'must be a duration such as 90s, 5m or 1h30m (1s to 24h)');
const env = z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).default({});
const moduleFileName = z
  .string()
  .regex(/^[A-Za-z0-9._-]+$/, 'must be a file name in the module directory')
  .refine((v) => v !== '.' && v !== '..', 'must be a file name in the module directory');

const localRun = z.object({ command: z.array(z.string().min(1)).min(1).max(100), env }).strict();

const clusterRun = z
  .object({
    image: z.string().min(1).max(500),
    command: z.array(z.string()).max(100).nullable().default(null),
    args: z.array(z.string()).max(100).nullable().default(null),
    env,
    // Files of the module directory, mounted read-only at /app, so that a stock image runs them.
    files: z.array(moduleFileName).max(20).default([]),
  })
  .strict();

const inputs = z
  .object({
    media_types: z.array(mediaRange).min(1).max(20),
    min: z.number().int().min(0).max(1000).default(1),
    max: z.number().int().min(0).max(1000).nullable().default(null),
  })
  .strict()
  .refine((i) => i.max === null || i.max >= i.min, { message: 'max must be at least min', path: ['max'] });

const functionSchema = z
  .object({
    name: label,
    title: z.string().min(1).max(200),
    description: z.string().max(5000).default(''),
    options: z
      .record(z.string(), z.unknown())
      .default({ type: 'object', properties: {}, additionalProperties: false }),
    inputs,
    output: z.enum(['creates', 'modifies', 'none']),
    resources: z
      .object({
        cpu: cpu.default('100m'),
        memory: bytes.default('128Mi'),
        gpu: z.number().int().min(0).default(0),
      })
      .strict()
      .prefault({}),
    timeout: duration.default('10m'),
    run: z
      .object({ local: localRun.nullable().default(null), cluster: clusterRun.nullable().default(null) })
      .strict()
      .refine((run) => run.local !== null || run.cluster !== null, 'needs a `local` or a `cluster` run spec'),
  })
  .strict();

export const moduleManifestSchema = z
  .object({
    name: label,
    version: z
      .string()
      .max(100)
      .refine((v) => semver.valid(v) === v, 'must be a semantic version such as 1.2.0'),
    title: z.string().min(1).max(200),
    description: z.string().max(5000).default(''),
    keywords: z.array(z.string().min(1).max(100)).max(20).default([]),
    functions: z.array(functionSchema).min(1).max(100),
  })
  .strict()
  .superRefine((m, ctx) => {
    const seen = new Set<string>();
    m.functions.forEach((fn, i) => {
      if (seen.has(fn.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['functions', i, 'name'],
          message: `function "${fn.name}" is declared twice`,
        });
      }
      seen.add(fn.name);
    });
  });

/**
 * A validated module manifest with every optional field filled in. It is itself a valid manifest
 * document: `parseModuleManifest(JSON.parse(JSON.stringify(m)))` gives `m` back, so it can be stored
 * as JSON and read again.
 */
export type ModuleManifest = z.infer<typeof moduleManifestSchema>;
export type ModuleFunction = ModuleManifest['functions'][number];
export type FunctionOutputKind = ModuleFunction['output'];
export type ModuleLocalRunSpec = NonNullable<ModuleFunction['run']['local']>;
export type ModuleClusterRunSpec = NonNullable<ModuleFunction['run']['cluster']>;

export interface ManifestProblem {
  /** Where, for the author: `functions[0].options.properties.top`. */
  path: string;
  message: string;
}

export class ModuleManifestError extends Error {
  override name = 'ModuleManifestError';
  constructor(readonly problems: ManifestProblem[]) {
    super(problems.map((p) => `${p.path || '(manifest)'}: ${p.message}`).join('; '));
  }
}

/** Parses and validates one module manifest document; throws ModuleManifestError listing every problem. */
export function parseModuleManifest(raw: unknown): ModuleManifest {
  const parsed = moduleManifestSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ModuleManifestError(
      parsed.error.issues.map((issue) => ({ path: formatPath(issue.path), message: issue.message })),
    );
  }
  const problems: ManifestProblem[] = [];
  parsed.data.functions.forEach((fn, i) => {
    const where = `functions[${i}]`;
    problems.push(...checkOptionsSchema(fn.options, `${where}.options`));
    problems.push(...checkResources(fn.resources, `${where}.resources`));
    if (fn.run.local) problems.push(...checkPlaceholders(fn.run.local, `${where}.run.local`, true));
    if (fn.run.cluster) problems.push(...checkPlaceholders(fn.run.cluster, `${where}.run.cluster`, false));
  });
  if (problems.length > 0) throw new ModuleManifestError(problems);
  return parsed.data;
}

function formatPath(path: PropertyKey[]): string {
  return path.reduce<string>((text, key) => {
    if (typeof key === 'number') return `${text}[${key}]`;
    return text ? `${text}.${String(key)}` : String(key);
  }, '');
}

function checkResources(resources: ModuleFunction['resources'], where: string): ManifestProblem[] {
  try {
    parseCpu(resources.cpu);
    parseBytes(resources.memory);
    return [];
  } catch (error) {
    return [{ path: where, message: (error as Error).message }];
  }
}

const placeholder = /\$\{([^}]*)\}/g;

/** Only `${module.dir}` exists, and only locally: a container sees the module's files at /app. */
function checkPlaceholders(
  run: { command?: string[] | null; args?: string[] | null; env: Record<string, string> },
  where: string,
  local: boolean,
): ManifestProblem[] {
  const texts: [string, string][] = [
    ...(run.command ?? []).map((text, i): [string, string] => [`${where}.command[${i}]`, text]),
    ...(run.args ?? []).map((text, i): [string, string] => [`${where}.args[${i}]`, text]),
    ...Object.entries(run.env).map(([key, text]): [string, string] => [`${where}.env.${key}`, text]),
  ];
  const problems: ManifestProblem[] = [];
  for (const [path, text] of texts) {
    for (const [, ref = ''] of text.matchAll(placeholder)) {
      if (local && ref === 'module.dir') continue;
      problems.push({
        path,
        message: local
          ? `unknown placeholder \${${ref}} (only \${module.dir} exists)`
          : `unknown placeholder \${${ref}} (a cluster run has none: the module's files are at /app)`,
      });
    }
  }
  return problems;
}

// ---- Options schemas ----

function newAjv(useDefaults: boolean, addUsedSchema: boolean): Ajv2020 {
  const ajv = new Ajv2020({ strict: true, allErrors: true, useDefaults, addUsedSchema });
  addFormats.default(ajv);
  return ajv;
}

const rootId = 'atrium:module-options';

// Checks schemas at parse time; emptied after each schema so that the same `$id` in two
// functions never collides. Without useDefaults, which refuses a `default` at a compiled root.
const checker = newAjv(false, true);
// Validates options at run time. Schemas are not registered by `$id`, so two functions may share one.
const validator = newAjv(true, false);

function checkOptionsSchema(schema: Record<string, unknown>, where: string): ManifestProblem[] {
  if (schema.type !== 'object') return [{ path: where, message: 'the schema must have `type: object`' }];
  const root = typeof schema.$id === 'string' ? schema : { ...schema, $id: rootId };
  try {
    try {
      checker.compile(root as AnySchema);
    } catch (error) {
      return [{ path: where, message: `not a valid JSON Schema: ${(error as Error).message}` }];
    }
    return checkDefaults(root.$id as string, schema, '', where);
  } finally {
    // Also after a failed compile, which leaves the schema registered under its $id.
    checker.removeSchema();
  }
}

const subschemaKeywords = ['items', 'additionalProperties', 'not', 'if', 'then', 'else', 'contains'];
const subschemaMaps = ['properties', '$defs', 'patternProperties'];
const subschemaLists = ['allOf', 'anyOf', 'oneOf', 'prefixItems'];
const escapePointer = (key: string) => key.replace(/~/g, '~0').replace(/\//g, '~1');

/** Every `default` must validate against the subschema it sits in (compiled in place, so `$ref`s resolve). */
function checkDefaults(id: string, node: unknown, pointer: string, where: string): ManifestProblem[] {
  if (node === null || typeof node !== 'object' || Array.isArray(node)) return [];
  const schema = node as Record<string, unknown>;
  const problems: ManifestProblem[] = [];
  if ('default' in schema) {
    const check = checker.getSchema(`${id}#${pointer}`);
    const path = `${where}${pointer.replace(/\//g, '.')}.default`;
    if (!check) problems.push({ path, message: 'cannot be checked' });
    else if (!check(structuredClone(schema.default))) {
      problems.push({
        path,
        message: `${JSON.stringify(schema.default)} is invalid: ${checker.errorsText(check.errors, { dataVar: 'default' })}`,
      });
    }
  }
  const children: [unknown, string][] = [];
  for (const key of subschemaKeywords) children.push([schema[key], `${pointer}/${key}`]);
  for (const key of subschemaMaps) {
    const map = schema[key];
    if (map && typeof map === 'object') {
      for (const [name, sub] of Object.entries(map))
        children.push([sub, `${pointer}/${key}/${escapePointer(name)}`]);
    }
  }
  for (const key of subschemaLists) {
    const list: unknown = schema[key];
    if (Array.isArray(list)) list.forEach((sub, i) => children.push([sub, `${pointer}/${key}/${i}`]));
  }
  for (const [child, childPointer] of children)
    problems.push(...checkDefaults(id, child, childPointer, where));
  return problems;
}

export interface OptionError {
  /** JSON Pointer into the options: `/column`, `/columns/2`. */
  pointer: string;
  message: string;
}

export type OptionsValidation =
  { ok: true; value: Record<string, unknown> } | { ok: false; errors: OptionError[] };

const compiled = new WeakMap<ModuleFunction, ValidateFunction>();

function compiledOptionsValidator(fn: ModuleFunction): ValidateFunction {
  let validate = compiled.get(fn);
  if (!validate) {
    validate = validator.compile(fn.options as AnySchema);
    compiled.set(fn, validate);
  }
  return validate;
}

/** Validates a task's arguments against the function's options schema; returns them with defaults applied. */
export function validateFunctionOptions(fn: ModuleFunction, options: unknown): OptionsValidation {
  const validate = compiledOptionsValidator(fn);
  const value: unknown = structuredClone(options ?? {});
  if (validate(value)) return { ok: true, value: value as Record<string, unknown> };
  return { ok: false, errors: (validate.errors ?? []).map(optionError) };
}

function optionError(error: ErrorObject): OptionError {
  const params = error.params as Record<string, unknown>;
  const child =
    typeof params.missingProperty === 'string'
      ? params.missingProperty
      : typeof params.additionalProperty === 'string'
        ? params.additionalProperty
        : null;
  const pointer = child === null ? error.instancePath : `${error.instancePath}/${escapePointer(child)}`;
  const message =
    child !== null && error.keyword === 'additionalProperties'
      ? 'is not an option of this function'
      : (error.message ?? 'is invalid');
  return { pointer: pointer || '/', message };
}

// ---- Inputs, timeouts, commands ----

/** The media type without parameters, lower-cased: `Text/CSV; charset=utf-8` → `text/csv`. */
export function essence(mediaType: string): string {
  return (mediaType.split(';')[0] ?? '').trim().toLowerCase();
}

/** Whether a file of this media type can be an input of the function. */
export function acceptsMediaType(fn: ModuleFunction, mediaType: string): boolean {
  const type = essence(mediaType);
  const [major] = type.split('/');
  return fn.inputs.media_types.some(
    (range) => range === '*/*' || range === type || (range.endsWith('/*') && range === `${major}/*`),
  );
}

/** Why these input files cannot go to the function (count, media types); empty when they can. */
export function inputProblems(fn: ModuleFunction, files: { name: string; media_type: string }[]): string[] {
  const problems: string[] = [];
  const { min, max } = fn.inputs;
  if (files.length < min || (max !== null && files.length > max)) {
    const wanted = max === null ? `at least ${min}` : min === max ? `${min}` : `${min} to ${max}`;
    problems.push(`takes ${wanted} input file(s), got ${files.length}`);
  }
  for (const file of files) {
    if (!acceptsMediaType(fn, file.media_type)) {
      problems.push(`"${file.name}" is ${file.media_type}, not one of ${fn.inputs.media_types.join(', ')}`);
    }
  }
  return problems;
}

const maxDurationMs = 24 * 3_600_000;

/** `90s` → 90000, `1h30m` → 5400000; null when not a duration from 1 s to 24 h. */
export function durationMs(text: string): number | null {
  const match = /^(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$/.exec(text);
  if (!match || text === '') return null;
  const [, h = 0, m = 0, s = 0, ms = 0] = match;
  const total = Number(h) * 3_600_000 + Number(m) * 60_000 + Number(s) * 1000 + Number(ms);
  return total >= 1000 && total <= maxDurationMs ? total : null;
}

/** How long a job of the function may run before it is killed and failed. */
export function functionTimeoutMs(fn: ModuleFunction): number {
  const ms = durationMs(fn.timeout);
  if (ms === null) throw new RangeError(`"${fn.timeout}" is not a duration`);
  return ms;
}

export function functionResources(fn: ModuleFunction): {
  cpuMillis: number;
  memoryBytes: number;
  gpu: number;
} {
  return {
    cpuMillis: parseCpu(fn.resources.cpu),
    memoryBytes: parseBytes(fn.resources.memory),
    gpu: fn.resources.gpu,
  };
}

const resolveModuleDir = (text: string, moduleDir: string) => text.replace(/\$\{module\.dir\}/g, moduleDir);

/**
 * The argv of the function's local run: `${module.dir}` resolved, and `node` as the program means
 * the Node.js running Atrium (so no PATH lookup, and the same version everywhere).
 */
export function localCommand(fn: ModuleFunction, moduleDir: string): string[] {
  const local = fn.run.local;
  if (!local) throw new RangeError(`function ${fn.name} has no local run spec`);
  const [program = '', ...args] = local.command.map((part) => resolveModuleDir(part, moduleDir));
  return [program === 'node' ? process.execPath : program, ...args];
}

/** The environment of the function's local run, placeholders resolved (without the work dir). */
export function localEnv(fn: ModuleFunction, moduleDir: string): Record<string, string> {
  const local = fn.run.local;
  if (!local) throw new RangeError(`function ${fn.name} has no local run spec`);
  return Object.fromEntries(
    Object.entries(local.env).map(([key, value]) => [key, resolveModuleDir(value, moduleDir)]),
  );
}
