// The built-in metrics, by name.
import type { AnyMetric } from '../types.js';
import { computeMetrics } from './compute.js';
import { memoryMetrics } from './memory.js';
import { networkMetrics } from './network.js';
import { storageMetrics } from './storage.js';

export const builtinMetrics: readonly AnyMetric[] = [
  ...computeMetrics,
  ...memoryMetrics,
  ...storageMetrics,
  ...networkMetrics,
];

const byName = new Map(builtinMetrics.map((metric) => [metric.name, metric]));

export function findMetric(name: string): AnyMetric | undefined {
  return byName.get(name);
}
