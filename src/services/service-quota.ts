// What services take from their project's quota and give back: admission of a launch (which
// resources a request would take past the limits, and the quota-exceeded problem that says which,
// how much was asked, used and allowed), what each status holds, and the release as they stop.
import type { Knex } from 'knex';
import { adjustQuotaUsage, findQuota, type UsageDelta } from '../db/quotas.js';
import type { ServiceRecord, ServiceStatus } from '../db/services.js';
import { conflict, DomainError } from '../errors.js';
import { formatBytes, formatCpu } from '../quantities.js';

type Quota = NonNullable<Awaited<ReturnType<typeof findQuota>>>;

const resourceNames: Record<keyof UsageDelta, string> = {
  services: 'services',
  cpuMillis: 'cpu',
  memoryBytes: 'memory',
  gpu: 'gpu',
};

function quotaAmount(resource: keyof UsageDelta, amount: number | null): string | number | null {
  if (amount === null) return null;
  if (resource === 'cpuMillis') return formatCpu(amount);
  if (resource === 'memoryBytes') return formatBytes(amount);
  return amount;
}

/** The resources (by their API names) the delta would take past the quota's limits. */
export function exceededResources(quota: Quota, delta: UsageDelta): string[] {
  return (Object.keys(resourceNames) as (keyof UsageDelta)[])
    .filter((r) => {
      const limit = quota.limits[r];
      return delta[r] > 0 && limit !== null && quota.usage[r] + delta[r] > limit;
    })
    .map((r) => resourceNames[r]);
}

/** The quota-exceeded problem of a refused delta, read in the transaction that refused it. */
export async function quotaExceeded(
  trx: Knex.Transaction,
  projectId: string,
  delta: UsageDelta,
): Promise<DomainError> {
  const quota = await findQuota(trx, projectId);
  const resource = (Object.keys(resourceNames) as (keyof UsageDelta)[]).find((r) => {
    const limit = quota?.limits[r] ?? null;
    return delta[r] > 0 && limit !== null && (quota?.usage[r] ?? 0) + delta[r] > limit;
  });
  if (!quota || !resource) return conflict('the quota changed meanwhile; try again');
  const name = resourceNames[resource];
  const requested = quotaAmount(resource, delta[resource]);
  const usage = quotaAmount(resource, quota.usage[resource]);
  const limit = quotaAmount(resource, quota.limits[resource]);
  return new DomainError(
    'quota-exceeded',
    `project ${projectId} has no room for ${requested} more ${name}: ${usage} used of ${limit}`,
    { resource: name, requested, usage, limit },
  );
}

/** What a service holds of its project's quota in each status it can settle in. */
export const holds: Record<ServiceStatus, { slot: boolean; compute: boolean } | null> = {
  pending: { slot: true, compute: true },
  starting: { slot: true, compute: true },
  running: { slot: true, compute: true },
  suspending: { slot: true, compute: true },
  suspended: { slot: true, compute: false },
  failed: { slot: false, compute: false },
  lost: { slot: false, compute: false },
  // While deleting, a service keeps what it held until it is gone.
  deleting: null,
};

/** Gives back to the project's quota the service slot and/or the compute the service held. */
export async function giveBack(
  trx: Knex.Transaction,
  service: ServiceRecord,
  release: { slot: boolean; compute: boolean },
  at: string,
): Promise<void> {
  if (!release.slot && !release.compute) return;
  const { cpuMillis, memoryBytes, gpu } = service.resources;
  await adjustQuotaUsage(
    trx,
    service.projectId,
    {
      services: release.slot ? -1 : 0,
      cpuMillis: release.compute ? -cpuMillis : 0,
      memoryBytes: release.compute ? -memoryBytes : 0,
      gpu: release.compute ? -gpu : 0,
    },
    at,
  );
}
