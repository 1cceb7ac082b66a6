// Projects' quotas: their limits, what is in use, and the guarded changes of usage (an adjustment
// that would pass a limit changes nothing).
import type { Knex } from 'knex';
import { toNullableNumber, toNumber } from './database.js';

/** Quota limits in base units (millicores, bytes, counts); null is unlimited. */
export interface QuotaAmounts {
  cpuMillis: number | null;
  memoryBytes: number | null;
  gpu: number | null;
  services: number | null;
  concurrentJobs: number | null;
  storageBytes: number | null;
}

export const quotaColumns: Record<keyof QuotaAmounts, string> = {
  cpuMillis: 'cpu_millis',
  memoryBytes: 'memory_bytes',
  gpu: 'gpu',
  services: 'services',
  concurrentJobs: 'concurrent_jobs',
  storageBytes: 'storage_bytes',
};

export interface Quota {
  projectId: string;
  limits: QuotaAmounts;
  usage: { [K in keyof QuotaAmounts]: number };
  version: number;
  updatedAt: string;
}

export async function findQuota(db: Knex, projectId: string): Promise<Quota | null> {
  const row = await db('project_quotas').where({ project_id: projectId }).first();
  if (!row) return null;
  const limits = {} as QuotaAmounts;
  const usage = {} as Quota['usage'];
  for (const [key, column] of Object.entries(quotaColumns) as [keyof QuotaAmounts, string][]) {
    limits[key] = toNullableNumber(row[`limit_${column}`]);
    usage[key] = toNumber(row[`used_${column}`]);
  }
  return { projectId, limits, usage, version: toNumber(row.version), updatedAt: row.updated_at };
}

export async function updateQuotaLimits(
  db: Knex,
  projectId: string,
  limits: Partial<QuotaAmounts>,
  expectedVersion: number | null,
  at: string,
): Promise<boolean> {
  const update: Record<string, unknown> = { updated_at: at, version: db.raw('version + 1') };
  for (const [key, value] of Object.entries(limits)) {
    update[`limit_${quotaColumns[key as keyof QuotaAmounts]}`] = value;
  }
  const query = db('project_quotas').where({ project_id: projectId });
  if (expectedVersion !== null) query.where({ version: expectedVersion });
  return (await query.update(update)) > 0;
}

/**
 * Serialises changes to one project's membership: on PostgreSQL, locks the project row until the
 * transaction ends. SQLite transactions are already serial (one writer).
 */
export interface UsageDelta {
  services: number;
  cpuMillis: number;
  memoryBytes: number;
  gpu: number;
}

const usageColumns: [keyof UsageDelta, string][] = [
  ['services', 'services'],
  ['cpuMillis', 'cpu_millis'],
  ['memoryBytes', 'memory_bytes'],
  ['gpu', 'gpu'],
];

/**
 * Changes a project's usage in one statement whose condition admits it only if every resource that
 * grows stays within its limit. The row lock the update takes makes concurrent admissions
 * serialise on both engines, so limits hold however many launches race. Returns false (nothing
 * changed) when the usage would go over a limit.
 */
export async function adjustQuotaUsage(
  db: Knex,
  projectId: string,
  delta: UsageDelta,
  at: string,
): Promise<boolean> {
  const update: Record<string, unknown> = { updated_at: at };
  const query = db('project_quotas').where({ project_id: projectId });
  for (const [key, column] of usageColumns) {
    const amount = delta[key];
    if (amount === 0) continue;
    update[`used_${column}`] = db.raw('?? + ?', [`used_${column}`, amount]);
    if (amount > 0) {
      query.where((w) =>
        w
          .whereNull(`limit_${column}`)
          .orWhereRaw('?? + ? <= ??', [`used_${column}`, amount, `limit_${column}`]),
      );
    }
  }
  return (await query.update(update)) > 0;
}

export async function adjustStorageUsage(
  db: Knex,
  projectId: string,
  bytes: number,
  at: string,
): Promise<boolean> {
  const query = db('project_quotas').where({ project_id: projectId });
  if (bytes > 0) {
    query.where((w) =>
      w.whereNull('limit_storage_bytes').orWhereRaw('used_storage_bytes + ? <= limit_storage_bytes', [bytes]),
    );
  }
  return (
    (await query.update({ used_storage_bytes: db.raw('used_storage_bytes + ?', [bytes]), updated_at: at })) >
    0
  );
}
