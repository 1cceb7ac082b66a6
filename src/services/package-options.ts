// A package's options: validated against its options schema (defaults applied), and which of them
// are secrets.
import { Ajv2020, type AnySchema, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { StoredPackageVersion } from '../db/catalogs.js';
import { DomainError, type FieldError } from '../errors.js';

/** Compiles options schemas once per package version (a bounded cache). */
export class OptionsValidator {
  private readonly ajv = new Ajv2020({ strict: false, allErrors: true, useDefaults: true });
  private readonly cache = new Map<string, ValidateFunction>();

  constructor() {
    addFormats.default(this.ajv);
    this.ajv.addFormat('password', true);
  }

  /** The options with defaults applied; a 400 listing every field that fails otherwise. */
  validate(version: StoredPackageVersion, options: Record<string, unknown>): Record<string, unknown> {
    const { spec } = version;
    const key = `${version.catalogId}/${spec.name}@${spec.version}`;
    let validate = this.cache.get(key);
    if (!validate) {
      const { $id: _ignored, ...schema } = spec.options_schema;
      validate = this.ajv.compile(schema as AnySchema);
      if (this.cache.size >= 500) this.cache.delete(this.cache.keys().next().value as string);
      this.cache.set(key, validate);
    }
    const candidate = structuredClone(options);
    if (!validate(candidate)) {
      const errors: FieldError[] = (validate.errors ?? []).map((e) => ({
        location: 'body',
        pointer: `/options${e.instancePath}${e.keyword === 'additionalProperties' ? `/${String(e.params.additionalProperty)}` : ''}`,
        message: e.message ?? 'invalid',
        code: e.keyword,
      }));
      throw new DomainError(
        'validation',
        `the options do not match the options schema of ${spec.name} ${spec.version}`,
        { errors },
      );
    }
    return candidate;
  }
}

/** Options declared `format: password` (at the top level of the schema) are secrets. */
export function secretOptionsOf(version: StoredPackageVersion, options: Record<string, unknown>): string[] {
  const properties = (version.spec.options_schema.properties ?? {}) as Record<string, { format?: unknown }>;
  return Object.keys(options).filter((name) => properties[name]?.format === 'password');
}
