// Every controller module, keyed by the `x-controller` name the spec uses. The type below makes a
// missing or mistyped handler a compile error; bindOperations checks the rest at start-up.
import type { ControllerName, OperationId, operationIndex } from '../../generated/operations.js';
import type { Handler } from '../http/operation.js';
import * as audit from './audit.js';
import * as benchmarks from './benchmarks.js';
import * as catalogs from './catalogs.js';
import * as drivers from './drivers.js';
import * as files from './files.js';
import * as functions from './functions.js';
import * as me from './me.js';
import * as modules from './modules.js';
import * as operations from './operations.js';
import * as pipelines from './pipelines.js';
import * as platform from './platform.js';
import * as projects from './projects.js';
import * as quotas from './quotas.js';
import * as regions from './regions.js';
import * as runs from './runs.js';
import * as services from './services.js';
import * as tokens from './tokens.js';
import * as users from './users.js';

type OperationsOf<C extends ControllerName> = {
  [K in OperationId]: (typeof operationIndex)[K]['controller'] extends C ? K : never;
}[OperationId];

type ControllerMap = { [C in ControllerName]: { [K in OperationsOf<C>]: Handler<K> } };

export const controllers = {
  audit,
  benchmarks,
  catalogs,
  drivers,
  files,
  functions,
  me,
  modules,
  operations,
  pipelines,
  platform,
  projects,
  quotas,
  regions,
  runs,
  services,
  tokens,
  users,
} satisfies ControllerMap;
