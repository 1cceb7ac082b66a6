// The only reader of process.env. Precedence: defaults ← YAML file (ATRIUM_CONFIG) ← environment ←
// explicit overrides. Everything is validated here, so the rest of the code receives typed values.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { regionBackendSchema } from './backends/cluster/registry.js';
import { localRuntimeSchema } from './backends/cluster/local/settings.js';
import { demoCatalogPath, demoModulesPath } from './paths.js';

/** An IPv4 or IPv6 address, or a CIDR of either. */
const cidr = z.string().refine((value) => {
  const [address = '', prefix, ...rest] = value.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  const bits = Number(prefix);
  return /^\d+$/.test(prefix) && bits <= (family === 4 ? 32 : 128);
}, 'must be an IP address or a CIDR (for example 10.0.0.0/8)');

const slug = z.string().regex(/^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/, 'a lower-case RFC 1123 label');
const cpu = z.string().regex(/^([0-9]+(\.[0-9]{1,3})?|[0-9]+m)$/, 'a CPU quantity such as 2, 0.5 or 500m');
const bytes = z
  .string()
  .regex(/^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/, 'a size such as 512Mi or 8Gi');

const quotaValues = z
  .object({
    cpu: cpu.nullable().default(null),
    memory: bytes.nullable().default(null),
    gpu: z.number().int().min(0).nullable().default(null),
    services: z.number().int().min(0).nullable().default(null),
    concurrent_jobs: z.number().int().min(0).nullable().default(null),
    storage: bytes.nullable().default(null),
  })
  .strict();

const defaultQuota = {
  cpu: '4',
  memory: '8Gi',
  gpu: 0,
  services: 10,
  concurrent_jobs: 4,
  storage: '10Gi',
};

const region = z
  .object({
    id: slug,
    name: z.string().min(1),
    description: z.string().default(''),
    location: z
      .object({ name: z.string(), lat: z.number().optional(), long: z.number().optional() })
      .strict()
      .nullable()
      .default(null),
    // The kinds and their sections: src/backends/cluster/registry.ts.
    backend: regionBackendSchema.default({ type: 'local' }),
    quotas: z
      .object({ default: quotaValues })
      .strict()
      .default({ default: quotaValues.parse(defaultQuota) }),
    expose: z
      .object({ domain: z.string().min(1) })
      .strict()
      .nullable()
      .default(null),
    // Host-based gateway URLs: `{port}-{service id in base32}.{domain}` (a wildcard DNS name and
    // certificate pointing at Atrium); null: path-based, /services/{project}/{service}/{port}/.
    gateway: z
      .object({
        domain: z
          .string()
          .regex(/^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/, 'a lower-case DNS name'),
      })
      .strict()
      .nullable()
      .default(null),
  })
  .strict();

const catalogSource = z
  .object({
    id: slug,
    name: z.string().min(1),
    description: z.string().default(''),
    maintainer: z.string().nullable().default(null),
    path: z.string().min(1),
  })
  .strict();

const oidc = z
  .object({
    issuer: z.url(),
    audience: z.string().nullable().default(null),
    jwksUri: z.url().nullable().default(null),
    clientId: z.string().nullable().default(null),
    usernameClaim: z.string().default('preferred_username'),
    nameClaim: z.string().default('name'),
    emailClaim: z.string().default('email'),
    groupsClaim: z.string().default('groups'),
    adminGroups: z.array(z.string()).default([]),
    jwksCooldownMs: z.number().int().min(0).default(30_000),
    clockToleranceSec: z.number().int().min(0).default(30),
  })
  .strict()
  .refine((o) => o.audience !== null || o.clientId !== null, {
    message:
      'set an audience or a clientId: otherwise tokens the provider issues to any of its clients would be accepted',
    path: ['audience'],
  });

const configSchema = z
  .object({
    server: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8080),
        trustedProxies: z.array(z.string()).default([]),
        corsOrigins: z.array(z.string()).default([]),
        maxBodyBytes: z
          .number()
          .int()
          .min(1024)
          .default(1024 * 1024),
        maxJsonDepth: z.number().int().min(2).default(32),
        rateLimit: z
          .object({
            enabled: z.boolean().default(true),
            requestsPerMinute: z.number().int().min(1).default(1200),
            burst: z.number().int().min(1).default(300),
          })
          .strict()
          .default({ enabled: true, requestsPerMinute: 1200, burst: 300 }),
        shutdownGraceMs: z.number().int().min(0).default(10_000),
      })
      .strict()
      .prefault({}),
    dataDir: z.string().default('./data'),
    databaseUrl: z.string().nullable().default(null),
    auth: z
      .object({
        adminToken: z
          .string()
          .regex(
            /^atr_[0-9A-Za-z_-]{16,200}$/,
            'an Atrium token: atr_ followed by at least 16 letters, digits, _ or -',
          )
          .nullable()
          .default(null),
        oidc: oidc.nullable().default(null),
      })
      .strict()
      .prefault({}),
    regions: z
      .array(region)
      .min(1)
      .default([
        {
          id: 'local',
          name: 'This machine',
          description: 'Services run as processes on the machine that runs Atrium.',
          location: null,
          backend: { type: 'local' },
          quotas: { default: quotaValues.parse(defaultQuota) },
          expose: null,
          gateway: null,
        },
      ]),
    catalogs: z.array(catalogSource).default([
      {
        id: 'demo',
        name: 'Demo catalog',
        description: 'Packages that run on any machine with Node.js.',
        maintainer: 'Atrium',
        path: demoCatalogPath,
      },
    ]),
    localRuntime: localRuntimeSchema,
    modules: z.array(catalogSource).default([
      {
        id: 'demo',
        name: 'Demo modules',
        description: 'Functions that transform text, CSV tables and train small models, in plain Node.js.',
        maintainer: 'Atrium',
        path: demoModulesPath,
      },
    ]),
    files: z
      .object({
        // The largest upload accepted (413 beyond it; nothing of it is kept).
        maxUploadBytes: z
          .number()
          .int()
          .min(1)
          .default(1024 * 1024 * 1024),
      })
      .strict()
      .prefault({}),
    // The way in to what users launch: /services/{projectId}/{serviceId}/{port}/… on Atrium's origin.
    gateway: z
      .object({
        // The origin of endpoints[].url (for example https://atrium.example.org behind a proxy);
        // each request's own origin when not set.
        publicUrl: z.url().nullable().default(null),
        // The largest request body passed to a service (413 beyond it).
        maxBodyBytes: z
          .number()
          .int()
          .min(1)
          .default(100 * 1024 * 1024),
        // A service that sends nothing (no headers, no byte of a body) for this long: 504.
        timeoutMs: z.number().int().min(100).default(300_000),
        // A connection to a service that is not made within this time: 502.
        connectTimeoutMs: z.number().int().min(100).default(10_000),
      })
      .strict()
      .prefault({}),
    // Calls of service functions (the functions packages declare).
    functions: z
      .object({
        // Queued calls of one service running at the same time, at most.
        concurrency: z.number().int().min(1).max(64).default(4),
        // How long a call's result (or problem) is kept after the call ended.
        resultTtlMs: z
          .number()
          .int()
          .min(1000)
          .default(24 * 60 * 60_000),
        // How often plugin drivers' health is checked in the background, and how long one check
        // may take (a plugin seen down makes a synchronous call wait at most this long to know).
        pluginHealthIntervalMs: z.number().int().min(100).default(30_000),
        pluginHealthTimeoutMs: z.number().int().min(100).max(30_000).default(2000),
        // Backends registered by URL (services Atrium did not launch): internal addresses
        // (loopback, link-local, private) are refused unless one of these CIDRs holds them.
        externalBackends: z
          .object({ allow: z.array(cidr).default([]) })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    benchmarks: z
      .object({
        // The image of benchmark runs on a cluster: Atrium's own, with /opt/atrium/dist in it.
        clusterImage: z.string().min(1).nullable().default(null),
      })
      .strict()
      .prefault({}),
    scheduler: z
      .object({
        // Workers inside the API process; 0 leaves the queue to `atrium worker` processes.
        workers: z.number().int().min(0).max(64).default(2),
        // A claimed job is given back to the queue when its worker has not renewed it for this long.
        leaseMs: z.number().int().min(500).default(30_000),
        // How often an idle worker looks at the queue (in-process enqueues wake it at once).
        pollMs: z.number().int().min(10).default(1000),
        maxAttempts: z.number().int().min(1).max(100).default(3),
        backoffMs: z.number().int().min(0).default(2000),
        maxBackoffMs: z
          .number()
          .int()
          .min(0)
          .default(5 * 60_000),
        // How long the workers of a stopping process let running jobs finish before giving them back.
        stopGraceMs: z.number().int().min(0).default(10_000),
        // Modules (absolute paths) registering more job kinds: `export function register(scheduler)`.
        handlerModules: z.array(z.string()).default([]),
      })
      .strict()
      .prefault({}),
    // What one API process keeps in memory between requests, and for how long at most. The process
    // that changes a thing forgets it at once; other processes sharing the database see the change
    // within these times (0: never kept, every request asks the database).
    cache: z
      .object({
        // Valid API tokens and their users (a revoke made by another process).
        credentialsMs: z.number().int().min(0).max(60_000).default(5_000),
        // A user's role in a project, for read access (writes always read it afresh).
        readRolesMs: z.number().int().min(0).max(60_000).default(2_000),
        // Public catalog package pages (a catalog refresh made by another process).
        catalogPagesMs: z.number().int().min(0).max(60_000).default(2_000),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .strict()
      .prefault({}),
    validateResponses: z.boolean().default(false),
  })
  .strict()
  .superRefine((config, ctx) => {
    for (const [field, items] of [
      ['regions', config.regions],
      ['catalogs', config.catalogs],
      ['modules', config.modules],
    ] as const) {
      const ids = items.map((item) => item.id);
      const duplicate = ids.find((id, index) => ids.indexOf(id) !== index);
      if (duplicate) ctx.addIssue({ code: 'custom', path: [field], message: `duplicate id "${duplicate}"` });
    }
  });

export type Config = z.infer<typeof configSchema>;
export type RegionConfig = Config['regions'][number];
export type QuotaValuesConfig = z.infer<typeof quotaValues>;
export type CatalogSourceConfig = Config['catalogs'][number];
export type SchedulerConfig = Config['scheduler'];
export type OidcConfig = NonNullable<Config['auth']['oidc']>;

/** A deep-partial configuration, as given by a file or by overrides (arrays replace, objects merge). */
export type ConfigInput = { [key: string]: unknown };

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

/** Whole numbers only: `Number()` would read " " as 0 and "1e3" as 1000. */
const integer = (value: string): unknown => (/^[0-9]+$/.test(value.trim()) ? Number(value) : value);

const list = (value: string) =>
  value
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);

/** The environment variables Atrium reads, and where each lands in the configuration. */
export const environmentVariables: Record<
  string,
  { path: string[]; parse?: (v: string) => unknown; doc: string }
> = {
  ATRIUM_HOST: { path: ['server', 'host'], doc: 'Address to listen on (127.0.0.1).' },
  ATRIUM_PORT: {
    path: ['server', 'port'],
    parse: integer,
    doc: 'Port to listen on (8080; 0 picks a free port).',
  },
  ATRIUM_DATA_DIR: { path: ['dataDir'], doc: 'Where the SQLite database, files and logs live (./data).' },
  ATRIUM_DATABASE_URL: {
    path: ['databaseUrl'],
    doc: 'postgres://… for PostgreSQL; unset for a SQLite file in the data directory.',
  },
  ATRIUM_ADMIN_TOKEN: {
    path: ['auth', 'adminToken'],
    doc: 'A fixed admin API token (atr_…, at least 20 characters); otherwise one is generated and printed once.',
  },
  ATRIUM_OIDC_ISSUER: {
    path: ['auth', 'oidc', 'issuer'],
    doc: 'OpenID Connect issuer URL; enables JWT sign-in.',
  },
  ATRIUM_OIDC_AUDIENCE: { path: ['auth', 'oidc', 'audience'], doc: 'Required `aud` of access tokens.' },
  ATRIUM_OIDC_JWKS_URI: {
    path: ['auth', 'oidc', 'jwksUri'],
    doc: 'JWKS URL; discovered from the issuer when unset.',
  },
  ATRIUM_OIDC_CLIENT_ID: {
    path: ['auth', 'oidc', 'clientId'],
    doc: 'Client id shown to clients in /config.',
  },
  ATRIUM_OIDC_USERNAME_CLAIM: {
    path: ['auth', 'oidc', 'usernameClaim'],
    doc: 'Claim holding the username (preferred_username).',
  },
  ATRIUM_OIDC_GROUPS_CLAIM: {
    path: ['auth', 'oidc', 'groupsClaim'],
    doc: 'Claim holding the groups (groups).',
  },
  ATRIUM_OIDC_ADMIN_GROUPS: {
    path: ['auth', 'oidc', 'adminGroups'],
    parse: list,
    doc: 'Comma-separated groups whose members are administrators.',
  },
  ATRIUM_TRUSTED_PROXIES: {
    path: ['server', 'trustedProxies'],
    parse: list,
    doc: 'Comma-separated proxy addresses or CIDRs whose X-Forwarded-For is believed.',
  },
  ATRIUM_EXTERNAL_BACKENDS_ALLOW: {
    path: ['functions', 'externalBackends', 'allow'],
    parse: list,
    doc: 'Comma-separated CIDRs that external backends may be at although internal (none).',
  },
  ATRIUM_CORS_ORIGINS: {
    path: ['server', 'corsOrigins'],
    parse: list,
    doc: 'Comma-separated origins allowed by CORS (none).',
  },
  ATRIUM_WORKERS: {
    path: ['scheduler', 'workers'],
    parse: integer,
    doc: 'Job workers inside the API process (2; 0 leaves jobs to `atrium worker` processes).',
  },
  ATRIUM_MAX_UPLOAD_BYTES: {
    path: ['files', 'maxUploadBytes'],
    parse: integer,
    doc: 'Largest file upload accepted, in bytes (1 GiB).',
  },
  ATRIUM_LOG_LEVEL: {
    path: ['log', 'level'],
    doc: 'fatal, error, warn, info (default), debug, trace or silent.',
  },
};

function setPath(target: ConfigInput, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    node = (next !== null && typeof next === 'object' ? next : (node[key] = {})) as ConfigInput;
  }
  node[path[path.length - 1] as string] = value;
}

function isPlainObject(value: unknown): value is ConfigInput {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export function mergeConfig(base: ConfigInput, layer: ConfigInput): ConfigInput {
  const merged: ConfigInput = { ...base };
  for (const [key, value] of Object.entries(layer)) {
    if (value === undefined) continue;
    const current = merged[key];
    merged[key] = isPlainObject(current) && isPlainObject(value) ? mergeConfig(current, value) : value;
  }
  return merged;
}

function readConfigFile(file: string): ConfigInput {
  let parsed: unknown;
  try {
    parsed = parseYaml(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigError(`cannot read configuration file ${file}: ${(error as Error).message}`);
  }
  if (parsed == null) return {};
  if (!isPlainObject(parsed)) throw new ConfigError(`configuration file ${file} must hold a mapping`);
  // Paths in a file are relative to the file.
  if (typeof parsed.dataDir === 'string' && !isAbsolute(parsed.dataDir)) {
    parsed.dataDir = resolve(dirname(file), parsed.dataDir);
  }
  // A region's kubeconfig, like the sources' paths, is relative to the file.
  const regions = parsed.regions;
  if (Array.isArray(regions)) {
    parsed.regions = regions.map((region: unknown) => {
      if (!isPlainObject(region) || !isPlainObject(region.backend)) return region;
      const kubeconfig = region.backend.kubeconfig;
      if (typeof kubeconfig !== 'string' || isAbsolute(kubeconfig)) return region;
      return { ...region, backend: { ...region.backend, kubeconfig: resolve(dirname(file), kubeconfig) } };
    });
  }
  for (const field of ['catalogs', 'modules'] as const) {
    const sources = parsed[field];
    if (!Array.isArray(sources)) continue;
    parsed[field] = sources.map((source: unknown) =>
      isPlainObject(source) && typeof source.path === 'string' && !isAbsolute(source.path)
        ? { ...source, path: resolve(dirname(file), source.path) }
        : source,
    );
  }
  return parsed;
}

export interface LoadConfigOptions {
  /** Environment to read; process.env when omitted. */
  env?: Env;
  /** Highest-precedence values, for tests and embedding. */
  overrides?: ConfigInput;
}

export function loadConfig({ env = process.env, overrides = {} }: LoadConfigOptions = {}): Config {
  const file = env.ATRIUM_CONFIG ? readConfigFile(env.ATRIUM_CONFIG) : {};
  const fromEnv: ConfigInput = {};
  for (const [name, { path, parse }] of Object.entries(environmentVariables)) {
    const raw = env[name];
    if (raw !== undefined && raw !== '') setPath(fromEnv, path, parse ? parse(raw) : raw);
  }
  const result = configSchema.safeParse(mergeConfig(mergeConfig(file, fromEnv), overrides));
  if (!result.success) {
    const lines = result.error.issues.map(
      (issue) => `  ${issue.path.join('.') || '(root)'}: ${issue.message}`,
    );
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const config = result.data;
  return { ...config, dataDir: resolve(config.dataDir) };
}
