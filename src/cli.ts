#!/usr/bin/env node
// The `atrium` command: the administrator's commands (serve, the default; worker; migrate; token
// create) and the user's, through the API (src/cli/program.ts).
import { runCli } from './cli/program.js';

runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env }).then(
  (code) => {
    if (code !== undefined) process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`atrium: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
