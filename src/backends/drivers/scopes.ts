// Scope drivers: a standard set of functions for every service of a kind, so that a client calls
// any database with `records.get`, any model server with `predict`, whatever package runs it. A
// package says `scope: {name: db, port: http}` in its manifest and its services speak the scope's
// protocol on that port (below); the manifest then carries the scope's functions, performed by the
// scope's driver. The protocols are plain JSON over HTTP:
//
// db — tables of records, each record a JSON value under an id:
//   GET    /db/tables                          → {tables: [{name, records}]}
//   GET    /db/tables/{table}/records/{id}     → {table, id, value}        (404: no such record)
//   PUT    /db/tables/{table}/records/{id}     value → {table, id, value}
//   DELETE /db/tables/{table}/records/{id}     → {table, id, deleted}
//   POST   /db/tables/{table}/query            {prefix, limit} → {records: [{id, value}]}
//
// ai — models served by name (the Open Inference Protocol's shape, trimmed to JSON instances):
//   POST   /ai/models                          {name, model} → {name, kind, features, target}
//   POST   /ai/models/{name}/predict           {instances} → {model, predictions: [...]}
//   GET    /ai/usage                           → {models: [{name, kind, predictions}], predictions}
//
// `serve` takes a file of the project (`model_file`, written by a pipeline's ml.train, say): the
// driver reads it and sends its JSON as `model`, so a service never needs Atrium's credentials.
import type { ServiceFunctionSpec } from '../catalog/manifest.js';
import { DriverError, httpJsonDriver, type NativeDriver } from './http-json.js';

export type ScopeName = 'db' | 'ai';

// A path segment: never `.` or `..` (a URL would resolve them away).
const name = { type: 'string', minLength: 1, maxLength: 63, pattern: '^(?!\\.{1,2}$)[A-Za-z0-9_.-]+$' };
const id = { type: 'string', minLength: 1, maxLength: 200 };

type ScopeFunction = Omit<ServiceFunctionSpec, 'driver' | 'http'> & {
  http: Omit<ServiceFunctionSpec['http'], 'port'>;
};

const record = (extra: Record<string, unknown> = {}) => ({
  type: 'object',
  required: ['table', 'id'],
  properties: { table: { type: 'string' }, id: { type: 'string' }, ...extra },
});

/** The input naming one record (table and id), with more fields, all required. */
const recordInput = (extra: Record<string, unknown> = {}) => ({
  type: 'object',
  required: ['table', 'id', ...Object.keys(extra)],
  properties: { table: name, id, ...extra },
  additionalProperties: false,
});

const scopeFunctions: Record<ScopeName, ScopeFunction[]> = {
  db: [
    {
      name: 'tables',
      description: 'The tables of the database, with how many records each holds.',
      input: { type: 'object', additionalProperties: false },
      output: {
        type: 'object',
        required: ['tables'],
        properties: {
          tables: {
            type: 'array',
            items: {
              type: 'object',
              required: ['name', 'records'],
              properties: { name: { type: 'string' }, records: { type: 'integer', minimum: 0 } },
            },
          },
        },
      },
      timeout_ms: 10_000,
      idempotent: true,
      cache_ttl_s: 0,
      http: { method: 'GET', path: '/db/tables' },
    },
    {
      name: 'records.get',
      description: 'The record of a table with this id (fails with the database’s 404 when there is none).',
      input: recordInput(),
      output: record({ value: {} }),
      timeout_ms: 10_000,
      idempotent: true,
      cache_ttl_s: 0,
      http: { method: 'GET', path: '/db/tables/{table}/records/{id}' },
    },
    {
      name: 'records.put',
      description:
        'Stores a JSON value as the record of a table with this id (the table is created if need be).',
      input: recordInput({ value: {} }),
      output: record({ value: {} }),
      timeout_ms: 10_000,
      idempotent: true,
      cache_ttl_s: 0,
      http: { method: 'PUT', path: '/db/tables/{table}/records/{id}', body: 'value' },
    },
    {
      name: 'records.delete',
      description: 'Removes the record of a table with this id (deleted: false when there was none).',
      input: recordInput(),
      output: record({ deleted: { type: 'boolean' } }),
      timeout_ms: 10_000,
      idempotent: true,
      cache_ttl_s: 0,
      http: { method: 'DELETE', path: '/db/tables/{table}/records/{id}' },
    },
    {
      name: 'records.query',
      description: 'The records of a table whose id starts with `prefix`, in id order, at most `limit`.',
      input: {
        type: 'object',
        required: ['table'],
        properties: {
          table: name,
          prefix: { type: 'string', maxLength: 200 },
          limit: { type: 'integer', minimum: 1, maximum: 1000 },
        },
        additionalProperties: false,
      },
      output: {
        type: 'object',
        required: ['records'],
        properties: {
          records: {
            type: 'array',
            items: { type: 'object', required: ['id'], properties: { id: { type: 'string' }, value: {} } },
          },
        },
      },
      timeout_ms: 10_000,
      idempotent: true,
      cache_ttl_s: 0,
      http: { method: 'POST', path: '/db/tables/{table}/query' },
    },
  ],
  ai: [
    {
      name: 'serve',
      description:
        'Loads a model from a file of the project (a model.json written by ml.train) and serves it under a name.',
      input: {
        type: 'object',
        required: ['name', 'model_file'],
        properties: { name, model_file: { type: 'string', minLength: 1, maxLength: 46 } },
        additionalProperties: false,
      },
      output: {
        type: 'object',
        required: ['name', 'kind', 'features'],
        properties: {
          name: { type: 'string' },
          kind: { type: 'string' },
          features: { type: 'array', items: { type: 'string' } },
          target: { anyOf: [{ type: 'string' }, { type: 'null' }] },
        },
      },
      timeout_ms: 30_000,
      idempotent: true,
      cache_ttl_s: 0,
      http: { method: 'POST', path: '/ai/models' },
    },
    {
      name: 'predict',
      description:
        'Predictions of a served model for instances (each an array in feature order, or an object by feature name).',
      input: {
        type: 'object',
        required: ['model', 'instances'],
        properties: {
          model: name,
          instances: {
            type: 'array',
            minItems: 1,
            maxItems: 10_000,
            items: { anyOf: [{ type: 'array' }, { type: 'object' }] },
          },
        },
        additionalProperties: false,
      },
      output: {
        type: 'object',
        required: ['model', 'predictions'],
        properties: { model: { type: 'string' }, predictions: { type: 'array' } },
      },
      timeout_ms: 30_000,
      idempotent: true,
      cache_ttl_s: 0,
      http: { method: 'POST', path: '/ai/models/{model}/predict' },
    },
    {
      name: 'usage',
      description: 'The models served and how many predictions each made.',
      input: { type: 'object', additionalProperties: false },
      output: {
        type: 'object',
        required: ['models', 'predictions'],
        properties: {
          models: {
            type: 'array',
            items: {
              type: 'object',
              required: ['name', 'predictions'],
              properties: { name: { type: 'string' }, predictions: { type: 'integer', minimum: 0 } },
            },
          },
          predictions: { type: 'integer', minimum: 0 },
        },
      },
      timeout_ms: 10_000,
      idempotent: true,
      cache_ttl_s: 0,
      http: { method: 'GET', path: '/ai/usage' },
    },
  ],
};

/** The functions a service of the scope offers, on its `port`. */
export function functionsOfScope(scope: ScopeName, port: string): ServiceFunctionSpec[] {
  return scopeFunctions[scope].map((f) => ({
    ...structuredClone(f),
    driver: scope,
    http: { ...f.http, port },
  }));
}

export interface ScopeDriver extends NativeDriver {
  scope: ScopeName;
}

const maxModelBytes = 10 * 1024 * 1024;

/** A scope's driver: its standard functions, performed as http-json performs declared ones. */
const scopeDriver = (
  scope: ScopeName,
  description: string,
  extra: Pick<NativeDriver, 'prepare'> = {},
): ScopeDriver => ({
  name: scope,
  version: '1.0.0',
  scope,
  functions: scopeFunctions[scope].map((f) => f.name),
  description,
  call: (fn, input, baseUrl, signal) => httpJsonDriver.call(fn, input, baseUrl, signal),
  ...extra,
});

export const dbDriver = scopeDriver(
  'db',
  'Tables of JSON records: tables, records.get, records.put, records.delete, records.query.',
);

export const aiDriver = scopeDriver(
  'ai',
  'Models served by name: serve (a model file of the project), predict, usage.',
  {
    async prepare(fn, input, ctx) {
      if (fn.name !== 'serve') return input;
      const { name: modelName, model_file: fileId } = input as { name: string; model_file: string };
      const content = await ctx.readFile(fileId, maxModelBytes);
      let model: unknown;
      try {
        model = JSON.parse(content.toString('utf8'));
      } catch {
        throw new DriverError('refused', `file ${fileId} is not a JSON model`, {
          status: 400,
          body: { error: `file ${fileId} is not JSON` },
        });
      }
      return { name: modelName, model };
    },
  },
);

/** The drivers that ship with Atrium. */
export const nativeDrivers: NativeDriver[] = [httpJsonDriver, dbDriver, aiDriver];
