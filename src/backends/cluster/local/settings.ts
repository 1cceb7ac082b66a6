// What the local runtime is configured with: a region's `backend: {type: local}` (nothing more),
// and the machine-wide `localRuntime` section every local region shares (README, "Configuration").
import { z } from 'zod';
import type { BackendCapabilities } from '../types.js';

export const localConfigSchema = z.object({ type: z.literal('local') }).strict();

export const localRuntimeSchema = z
  .object({
    readinessTimeoutMs: z.number().int().min(100).default(60_000),
    stopGraceMs: z.number().int().min(0).default(10_000),
    logMaxBytes: z
      .number()
      .int()
      .min(1024)
      .default(5 * 1024 * 1024),
    enforceLimits: z.boolean().default(true),
    restart: z
      .object({
        maxRestarts: z.number().int().min(0).default(5),
        windowMs: z
          .number()
          .int()
          .min(1000)
          .default(10 * 60_000),
        initialBackoffMs: z.number().int().min(10).default(1000),
        maxBackoffMs: z.number().int().min(10).default(30_000),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .prefault({});

export type LocalRuntimeSettings = z.output<typeof localRuntimeSchema>;

export const localCapabilities: BackendCapabilities = {
  runs: 'process',
  logs: { follow: true, previous: false },
  endpoints: 'loopback',
};
