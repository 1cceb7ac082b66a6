import type { Config, RegionConfig } from '../config.js';
import { tokenPrefix } from '../auth/secrets.js';

export interface BuildInfo {
  version: string;
  commit: string | null;
  builtAt: string | null;
}

export interface PlatformSettings {
  build: BuildInfo;
  apiBasePath: string;
  oidc: { issuer: string; audience: string | null; clientId: string | null } | null;
  tokenPrefix: string;
  regions: readonly RegionConfig[];
  limits: { pageSizeDefault: number; pageSizeMax: number; maxBodyBytes: number };
}

export const apiBasePath = '/api/v1';
export const pageSizeDefault = 20;
export const pageSizeMax = 200;

/** What a client may know before signing in. */
export class PlatformService {
  constructor(private readonly deps: { config: Config; build: BuildInfo }) {}

  settings(): PlatformSettings {
    const { config, build } = this.deps;
    const oidc = config.auth.oidc;
    return {
      build,
      apiBasePath,
      oidc: oidc ? { issuer: oidc.issuer, audience: oidc.audience, clientId: oidc.clientId } : null,
      tokenPrefix,
      regions: config.regions,
      limits: { pageSizeDefault, pageSizeMax, maxBodyBytes: config.server.maxBodyBytes },
    };
  }
}
