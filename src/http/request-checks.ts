// Checks, against the same schemas of the bundled spec, the request parts the validator cannot see:
// the fields of a streamed multipart body (the validator would have to buffer the file to read them),
// and values a controller takes from such a body in place of query parameters, so that an upload's
// name, media type and tags pass the same rules in either form.
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { DomainError, type FieldError } from '../errors.js';
import type { ApiDocument } from './spec-document.js';

const specId = 'urn:atrium:openapi';

interface Schema {
  $ref?: string;
  properties?: Record<string, unknown>;
  [key: string]: unknown;
}
interface ParameterObject {
  name: string;
  in: string;
  schema?: Schema;
}
interface OperationDoc {
  operationId?: string;
  parameters?: (ParameterObject | { $ref: string })[];
  requestBody?: { content?: Record<string, { schema?: Schema }> };
}

/** Makes the document's local `$ref`s point into the copy of it registered with Ajv. */
const absolute = <T>(schema: T): T =>
  JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', `"${specId}#/components/`)) as T;

function fieldErrors(
  errors: ErrorObject[] | null | undefined,
  pointers: Record<string, string>,
): FieldError[] {
  return (errors ?? []).map((error) => {
    const name =
      error.instancePath.split('/')[1] ??
      (error.params as { additionalProperty?: string }).additionalProperty;
    const pointer = (name && pointers[name]) ?? (error.instancePath || `/${name ?? ''}`);
    const message =
      error.keyword === 'additionalProperties'
        ? `is not a field of this form: ${(error.params as { additionalProperty: string }).additionalProperty}`
        : (error.message ?? 'is not valid');
    return { location: 'body', pointer, message };
  });
}

export class RequestChecks {
  private readonly ajv: Ajv2020;
  private readonly operations = new Map<string, OperationDoc>();
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(private readonly apiDoc: ApiDocument & Record<string, unknown>) {
    this.ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true });
    (addFormats as unknown as (ajv: Ajv2020) => void)(this.ajv);
    this.ajv.addSchema({ ...apiDoc, $id: specId });
    for (const item of Object.values(apiDoc.paths ?? {})) {
      for (const op of Object.values(item) as OperationDoc[]) {
        if (op && typeof op === 'object' && op.operationId) this.operations.set(op.operationId, op);
      }
    }
  }

  private validator(key: string, build: () => object): ValidateFunction {
    let validate = this.compiled.get(key);
    if (!validate) {
      validate = this.ajv.compile(absolute(build()));
      this.compiled.set(key, validate);
    }
    return validate;
  }

  private operation(operationId: string): OperationDoc {
    const op = this.operations.get(operationId);
    if (!op) throw new Error(`no operation ${operationId} in the spec`);
    return op;
  }

  /**
   * Checks the fields of a multipart body against the operation's form schema, without its file
   * part (which arrives as a stream). Throws a 400 `validation` problem naming each bad field.
   */
  multipartFields(operationId: string, fields: Record<string, string>): void {
    const validate = this.validator(`${operationId} multipart`, () => {
      const schema = this.operation(operationId).requestBody?.content?.['multipart/form-data']?.schema;
      if (!schema) throw new Error(`${operationId} takes no multipart body`);
      const schemas = (this.apiDoc.components as { schemas?: Record<string, Schema> } | undefined)?.schemas;
      const form = (schema.$ref ? schemas?.[schema.$ref.split('/').pop() as string] : schema) ?? {};
      const { file: _file, ...properties } = (form.properties ?? {}) as Record<string, unknown>;
      return { ...form, properties };
    });
    if (!validate(fields)) {
      throw new DomainError('validation', 'a field of the multipart body does not match the form', {
        errors: fieldErrors(validate.errors, {}),
      });
    }
  }

  /**
   * Checks values taken from the body in place of query parameters against those parameters'
   * schemas. `pointers` says where in the body each came from, for the errors.
   */
  asQueryParameters(
    operationId: string,
    values: Record<string, unknown>,
    pointers: Record<string, string>,
  ): void {
    const validate = this.validator(`${operationId} query`, () => {
      const parameters = this.apiDoc.components?.parameters ?? {};
      const properties: Record<string, unknown> = {};
      for (const p of this.operation(operationId).parameters ?? []) {
        const parameter = ('$ref' in p ? parameters[p.$ref.split('/').pop() as string] : p) as
          ParameterObject | undefined;
        if (parameter?.in === 'query') properties[parameter.name] = parameter.schema ?? {};
      }
      return { type: 'object', properties, additionalProperties: false };
    });
    const present = Object.fromEntries(
      Object.entries(values).filter(([, v]) => v !== undefined && v !== null),
    );
    if (!validate(present)) {
      throw new DomainError('validation', 'a value of the multipart body does not match the API contract', {
        errors: fieldErrors(validate.errors, pointers),
      });
    }
  }
}
