import { describe, expect, it } from '@jest/globals';
import { createApp, loadBundledSpec } from '../../src/app.js';
import { controllers } from '../../src/controllers/index.js';
import {
  bindOperations,
  BindingError,
  specOperations,
  type ControllerModules,
} from '../../src/http/dispatch.js';
import { operationIndex } from '../../generated/operations.js';
import { createTestApp } from '../fixtures/app.js';
import { createLogger } from '../../src/log.js';

const apiDoc = loadBundledSpec();

describe('operation binding', () => {
  it('binds exactly the operations of the spec to exactly the exported controller functions', () => {
    const fromSpec = specOperations(apiDoc)
      .map((op) => `${op.controller}.${op.operationId}`)
      .sort();
    const fromControllers = Object.entries(controllers as unknown as ControllerModules)
      .flatMap(([name, module]) => Object.keys(module).map((fn) => `${name}.${fn}`))
      .sort();
    expect(fromControllers).toEqual(fromSpec);
    expect(bindOperations(apiDoc, controllers as unknown as ControllerModules).size).toBe(fromSpec.length);
  });

  it('agrees with the generated operation index', () => {
    expect(Object.keys(operationIndex).sort()).toEqual(
      specOperations(apiDoc)
        .map((op) => op.operationId)
        .sort(),
    );
  });

  it('refuses an operation without a handler, naming it', () => {
    const { getMe: _dropped, ...me } = controllers.me;
    const partial = { ...controllers, me } as unknown as ControllerModules;
    expect(() => bindOperations(apiDoc, partial)).toThrow(BindingError);
    expect(() => bindOperations(apiDoc, partial)).toThrow(
      /getMe .* has no handler: src\/controllers\/me\.ts must export getMe/,
    );
  });

  it('refuses a handler without an operation, naming it', () => {
    const extra = {
      ...controllers,
      me: { ...controllers.me, getMyself: async () => ({ status: 200 }) },
    } as unknown as ControllerModules;
    expect(() => bindOperations(apiDoc, extra)).toThrow(/me\.ts exports getMyself, but no operation/);
  });

  it('refuses a handler exported by another module than the one its operation names', () => {
    const { getMe, ...rest } = controllers.me;
    const moved = {
      ...controllers,
      me: rest,
      tokens: { ...controllers.tokens, getMe },
    } as unknown as ControllerModules;
    expect(() => bindOperations(apiDoc, moved)).toThrow(/getMe .* has no handler/);
  });

  it('makes the app refuse to start when spec and controllers disagree', async () => {
    const t = await createTestApp('sqlite');
    try {
      const { listRegions: _gone, ...regions } = controllers.regions;
      expect(() =>
        createApp({
          config: t.config,
          database: t.database,
          services: t.services,
          log: createLogger('silent'),
          ready: async () => ({ ready: true }),
          controllers: { ...controllers, regions } as unknown as ControllerModules,
        }),
      ).toThrow(BindingError);
    } finally {
      await t.close();
    }
  });
});
