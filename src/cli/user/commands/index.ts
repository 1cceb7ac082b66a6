// The user commands of `atrium`, one module per group.
import type { RegisterCommands } from '../../program.js';
import { registerLogin } from './login.js';
import { registerCatalog } from './catalog.js';
import { registerServices } from './services.js';
import { registerAccount } from './account.js';
import { registerFiles } from './files.js';
import { registerPipelines } from './pipelines.js';
import { registerBench } from './bench.js';
import { registerCompletion } from './completion.js';

export const userCommands: RegisterCommands[] = [
  registerLogin,
  registerCatalog,
  registerServices,
  registerAccount,
  registerFiles,
  registerPipelines,
  registerBench,
  // Last: it describes every command registered before it.
  registerCompletion,
];
