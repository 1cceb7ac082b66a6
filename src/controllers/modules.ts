import type { Handler } from '../http/operation.js';
import { pageOf } from './paging.js';
import { page, presentModule, presentModuleFunction, presentModuleSource } from './present.js';

export const listModules: Handler<'listModules'> = async ({ query }, { services }) => ({
  status: 200,
  body: page(await services.modules.list(pageOf(query)), presentModule),
});

export const getModule: Handler<'getModule'> = async ({ params }, { services }) => ({
  status: 200,
  body: presentModule(await services.modules.get(params.moduleName)),
});

export const getModuleFunction: Handler<'getModuleFunction'> = async ({ params }, { services }) => {
  const { fn } = await services.modules.function(params.moduleName, params.functionName);
  return { status: 200, body: presentModuleFunction(params.moduleName, fn) };
};

export const listModuleSources: Handler<'listModuleSources'> = async ({ query }, { services }) => ({
  status: 200,
  body: page(await services.modules.sources(pageOf(query)), presentModuleSource),
});

export const refreshModules: Handler<'refreshModules'> = async (_input, { principal, services }) => ({
  status: 200,
  body: { items: (await services.modules.refresh(principal)).map(presentModuleSource), next_cursor: null },
});
