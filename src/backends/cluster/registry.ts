// The kinds of region backend Atrium knows, and the one place that builds a region's backends from
// its configuration. A kind says how its `backend:` section is configured (one zod schema: the
// configuration's types come from it), what it can do, and how its backends are made. Services
// ask a backend what it can do (`capabilities`), never which kind it is.
//
// Adding a kind: a folder beside local/ and kubernetes/ exporting a BackendKind, one line in
// `backendKinds` below, and a run of the cluster-backend conformance suite (test/conformance/).
import type { Logger } from 'pino';
import { z } from 'zod';
import { kubernetesKind } from './kubernetes/index.js';
import { localKind } from './local/index.js';
import type { LocalRuntimeSettings } from './local/settings.js';
import type { BackendCapabilities, BatchBackend, ClusterBackend } from './types.js';

/** What a kind's backends are made with, besides their own section of the configuration. */
export interface RegionBackendContext {
  regionId: string;
  /** The region's `expose.domain` (a public domain its services are reachable under), if any. */
  exposeDomain: string | null;
  dataDir: string;
  /** The machine-wide settings of the local runtime. */
  localRuntime: LocalRuntimeSettings;
  log: Logger;
}

/** Where a region's services run, and where its batch work (pipeline tasks, benchmarks) runs. */
export interface RegionBackends {
  services: ClusterBackend;
  batch: BatchBackend;
}

export interface BackendKind<Schema extends z.ZodType<{ type: string }>> {
  /** A region's `backend:` section of this kind; its `type` is the kind's key in `backendKinds`. */
  configSchema: Schema;
  capabilities: BackendCapabilities;
  create(config: z.output<Schema>, context: RegionBackendContext): RegionBackends;
}

/** Every kind, by the `type` a region's `backend:` names. One line per kind. */
export const backendKinds = {
  local: localKind,
  kubernetes: kubernetesKind,
} as const;

type Kinds = typeof backendKinds;
export type BackendType = keyof Kinds;
export type RegionBackendConfig = { [K in BackendType]: z.output<Kinds[K]['configSchema']> }[BackendType];

/** A region's `backend:` section: one of the kinds, told apart by `type`. */
export const regionBackendSchema = z.discriminatedUnion(
  'type',
  Object.values(backendKinds).map((kind) => kind.configSchema) as unknown as [
    Kinds[BackendType]['configSchema'],
    ...Kinds[BackendType]['configSchema'][],
  ],
) as unknown as z.ZodType<RegionBackendConfig, { type: BackendType } & Record<string, unknown>>;

export function createRegionBackend(
  config: RegionBackendConfig,
  context: RegionBackendContext,
): RegionBackends {
  const kind = backendKinds[config.type] as BackendKind<z.ZodType<RegionBackendConfig>>;
  return kind.create(config, context);
}
