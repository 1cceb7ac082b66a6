// A metric's parameters: checked against its JSON Schema, with the schema's defaults filled in.
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import type { AnyMetric, MetricParameters } from './types.js';

const ajv = new Ajv2020({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: false });
const validators = new WeakMap<AnyMetric, ValidateFunction>();

function validatorOf(metric: AnyMetric): ValidateFunction {
  let validate = validators.get(metric);
  if (!validate) {
    validate = ajv.compile(metric.parameters);
    validators.set(metric, validate);
  }
  return validate;
}

/** Problems with `params` for `metric` ("size: must be >= 4096"), empty when they are valid. */
export function parameterProblems(metric: AnyMetric, params: MetricParameters): string[] {
  const validate = validatorOf(metric);
  if (validate(structuredClone(params))) return [];
  return (validate.errors ?? []).map((error) => {
    const where = error.instancePath.replace(/^\//, '').replaceAll('/', '.');
    const extra =
      error.keyword === 'additionalProperties'
        ? ` (${String((error.params as { additionalProperty: string }).additionalProperty)})`
        : '';
    return `${where || 'parameters'}: ${error.message ?? 'is invalid'}${extra}`;
  });
}

/** `params` with every default filled in; throws when they are invalid. */
export function resolveParameters(metric: AnyMetric, params: MetricParameters = {}): MetricParameters {
  const resolved = structuredClone(params);
  const validate = validatorOf(metric);
  if (!validate(resolved)) {
    throw new Error(`invalid parameters for ${metric.name}: ${parameterProblems(metric, params).join('; ')}`);
  }
  return resolved;
}
