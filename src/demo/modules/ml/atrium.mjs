// Atrium's execution contract, seen from a module function: read input.json and input/, write
// output/ and output.json, log to stdout/stderr, exit non-zero on failure. The same file is in every
// demo module directory, so that each module is self-contained (a cluster Job mounts only its own
// module's files); a test keeps the copies identical.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const workDir = process.env.ATRIUM_WORK_DIR || process.cwd();

/** A problem with the inputs or the options: reported on stderr, exit code 2. */
export class InputError extends Error {}

export function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

/**
 * Runs the function named by the first argument over input.json, and writes what it returns:
 * {files: [{name, content, media_type?, tags?, parent?}], tags?}.
 */
export function runFunction(functions) {
  const name = process.argv[2];
  const fn = Object.hasOwn(functions, name) ? functions[name] : undefined;
  if (!fn) fail(`unknown function "${name}" (this module has ${Object.keys(functions).join(', ')})`);
  let input;
  try {
    input = JSON.parse(readFileSync(join(workDir, 'input.json'), 'utf8'));
  } catch (error) {
    fail(`cannot read input.json in ${workDir}: ${error.message}`);
  }
  if (input.function !== name) fail(`input.json is for function "${input.function}", not "${name}"`);
  if (!Array.isArray(input.files)) fail('input.json has no list of files');
  try {
    const result = fn({
      options: input.options ?? {},
      files: input.files,
      read: (file) => readFileSync(join(workDir, file.path), 'utf8'),
    });
    writeOutput(result);
  } catch (error) {
    if (error instanceof InputError) fail(error.message);
    throw error;
  }
}

function writeOutput({ files, tags }) {
  const outputDir = join(workDir, 'output');
  mkdirSync(outputDir, { recursive: true });
  for (const file of files) writeFileSync(join(outputDir, file.name), file.content);
  const listed = files.map(({ name, media_type, tags: fileTags, parent }) => ({
    name,
    ...(media_type ? { media_type } : {}),
    ...(fileTags ? { tags: fileTags } : {}),
    ...(parent ? { parent } : {}),
  }));
  writeFileSync(
    join(workDir, 'output.json'),
    `${JSON.stringify({ files: listed, tags: tags ?? {} }, null, 2)}\n`,
  );
  console.log(`wrote ${files.length} file(s): ${files.map((f) => f.name).join(', ')}`);
}

const checks = {
  string: (v) => typeof v === 'string',
  number: (v) => typeof v === 'number' && Number.isFinite(v),
  integer: (v) => Number.isInteger(v),
  boolean: (v) => typeof v === 'boolean',
  'string[]': (v) => Array.isArray(v) && v.every((s) => typeof s === 'string'),
  scalar: (v) => typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v)),
};

/**
 * Checks options again, defensively (Atrium validated them against the manifest's schema, but a
 * function may be run by hand): spec = {name: {type, default?, required?, choices?, min?, max?}}.
 */
export function readOptions(options, spec) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new InputError('options must be an object');
  }
  for (const key of Object.keys(options)) {
    if (!Object.hasOwn(spec, key)) throw new InputError(`unknown option "${key}"`);
  }
  const values = {};
  for (const [key, rule] of Object.entries(spec)) {
    const value = options[key] ?? rule.default;
    if (value === undefined) {
      if (rule.required) throw new InputError(`option "${key}" is required`);
      continue;
    }
    if (!checks[rule.type](value)) throw new InputError(`option "${key}" must be of type ${rule.type}`);
    if (rule.choices && !rule.choices.includes(value)) {
      throw new InputError(`option "${key}" must be one of ${rule.choices.join(', ')}`);
    }
    if (rule.min !== undefined && value < rule.min)
      throw new InputError(`option "${key}" must be at least ${rule.min}`);
    if (rule.max !== undefined && value > rule.max)
      throw new InputError(`option "${key}" must be at most ${rule.max}`);
    values[key] = value;
  }
  return values;
}

/** The file name without its extension: `data.v2.csv` → `data.v2`. */
export function stem(name) {
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(0, dot) : name;
}

export const round = (value, digits = 6) => Number(value.toFixed(digits));
