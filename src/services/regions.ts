import type { QuotaValuesConfig, RegionConfig } from '../config.js';
import { notFound } from '../errors.js';
import { arrayPage, type Page, type PageRequest } from '../db/pagination.js';
import type { QuotaAmounts } from '../db/quotas.js';
import { parseBytes, parseCpu } from '../quantities.js';

export class RegionService {
  constructor(private readonly regions: readonly RegionConfig[]) {}

  list(page: PageRequest): Page<RegionConfig> {
    return arrayPage('regions', this.regions, (r) => r.id, page);
  }

  all(): readonly RegionConfig[] {
    return this.regions;
  }

  get(id: string): RegionConfig {
    const region = this.regions.find((r) => r.id === id);
    if (!region) throw notFound('region', id);
    return region;
  }

  /** Where projects go when their creator names no region: the first configured. */
  defaultRegion(): RegionConfig {
    return this.regions[0] as RegionConfig;
  }

  defaultQuota(regionId: string): QuotaAmounts {
    return quotaAmounts(this.get(regionId).quotas.default);
  }
}

export function quotaAmounts(values: Partial<QuotaValuesConfig>): QuotaAmounts {
  const amounts = {} as QuotaAmounts;
  const set = <K extends keyof QuotaAmounts>(key: K, value: QuotaAmounts[K] | undefined) => {
    if (value !== undefined) amounts[key] = value;
  };
  set('cpuMillis', values.cpu === undefined ? undefined : values.cpu === null ? null : parseCpu(values.cpu));
  set(
    'memoryBytes',
    values.memory === undefined ? undefined : values.memory === null ? null : parseBytes(values.memory),
  );
  set('gpu', values.gpu);
  set('services', values.services);
  set('concurrentJobs', values.concurrent_jobs);
  set(
    'storageBytes',
    values.storage === undefined ? undefined : values.storage === null ? null : parseBytes(values.storage),
  );
  return amounts;
}
