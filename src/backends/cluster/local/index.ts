// The local runtime as a kind of region backend (see ../registry.ts): services are supervised
// processes on this machine, batch work runs as process groups.
import { join } from 'node:path';
import type { BackendKind } from '../registry.js';
import { LocalBackend } from './backend.js';
import { LocalBatchBackend } from './batch.js';
import { localCapabilities, localConfigSchema } from './settings.js';

export { LocalBackend } from './backend.js';
export { LocalBatchBackend } from './batch.js';

export const localKind: BackendKind<typeof localConfigSchema> = {
  configSchema: localConfigSchema,
  capabilities: localCapabilities,
  create(_config, { regionId, dataDir, localRuntime, log }) {
    return {
      services: new LocalBackend({
        root: join(dataDir, 'regions', regionId, 'services'),
        log,
        ...localRuntime,
      }),
      // Every local region's batch work shares one directory: a job's id is unique anywhere.
      batch: new LocalBatchBackend({ root: join(dataDir, 'jobs') }),
    };
  },
};
