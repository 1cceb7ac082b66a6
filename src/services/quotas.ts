import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { iso } from '../clock.js';
import { notFound, preconditionFailed } from '../errors.js';
import { findQuota, updateQuotaLimits, type Quota } from '../db/quotas.js';
import type { QuotaValuesConfig } from '../config.js';
import { checkIfMatch, etagFor } from './etag.js';
import { requireAdmin, type Principal } from './principal.js';
import type { ProjectService } from './projects.js';
import { quotaAmounts } from './regions.js';

export function quotaEtag(quota: Quota): string {
  return etagFor(quota.version, quota.updatedAt);
}

export class QuotaService {
  constructor(private readonly deps: { db: Knex; clock: Clock; projects: ProjectService }) {}

  async get(principal: Principal, projectId: string): Promise<Quota> {
    await this.deps.projects.readable(principal, projectId);
    return this.read(projectId);
  }

  async updateLimits(
    principal: Principal,
    projectId: string,
    limits: Partial<QuotaValuesConfig>,
    ifMatch: string | undefined,
  ): Promise<Quota> {
    await this.deps.projects.readable(principal, projectId);
    requireAdmin(principal);
    const current = await this.read(projectId);
    checkIfMatch(ifMatch, quotaEtag(current), `the quota of project "${projectId}"`);
    const updated = await updateQuotaLimits(
      this.deps.db,
      projectId,
      quotaAmounts(limits),
      current.version,
      iso(this.deps.clock()),
    );
    if (!updated) throw preconditionFailed(`the quota of project "${projectId}"`);
    return this.read(projectId);
  }

  private async read(projectId: string): Promise<Quota> {
    const quota = await findQuota(this.deps.db, projectId);
    if (!quota) throw notFound('project', projectId);
    return quota;
  }
}
