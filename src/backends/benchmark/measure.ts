// Repeated samples of one metric and their statistics.
//
// The value of a measurement is the median of its samples: one sample disturbed by other work on
// the machine moves it little. Its spread is the relative median absolute deviation,
//   spread = median(|x_i - median|) / median
// a fraction (0.03: a typical sample is 3 % from the median), robust in the same way; 0 with one
// sample. Warm-up samples (JIT tiering, page faults, caches, TCP slow start) are taken first and
// reported apart; they count for nothing.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveParameters } from './parameters.js';
import type { AnyMetric, Better, MetricParameters, SampleContext } from './types.js';

export interface Statistics {
  median: number;
  /** Relative median absolute deviation (see above). */
  spread: number;
  min: number;
  max: number;
}

export interface Measurement extends Statistics {
  metric: string;
  unit: string;
  better: Better;
  /** As sampled: the given parameters with every default filled in. */
  parameters: MetricParameters;
  samples: number[];
  warmup_samples: number[];
  /** How the measurement departed from the documented method, if it did. */
  notes: string[];
}

export interface SampleEvent {
  metric: string;
  /** 0-based, counted separately for warm-up and measured samples. */
  index: number;
  warmup: boolean;
  value: number;
}

export interface MeasureOptions {
  samples?: number;
  warmup?: number;
  signal?: AbortSignal;
  onSample?: (event: SampleEvent) => void;
  /** Where the measurement's temporary directory is made (the storage measured); os.tmpdir(). */
  tmpRoot?: string;
}

export const defaultSamples = 5;
export const defaultWarmup = 1;

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('the median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const upper = sorted[middle] as number;
  return sorted.length % 2 === 1 ? upper : ((sorted[middle - 1] as number) + upper) / 2;
}

export function summarize(values: readonly number[]): Statistics {
  const center = median(values);
  const deviation = median(values.map((value) => Math.abs(value - center)));
  return {
    median: center,
    spread: center === 0 ? 0 : deviation / Math.abs(center),
    min: Math.min(...values),
    max: Math.max(...values),
  };
}

export interface SampleSession {
  ctx: SampleContext;
  notes: string[];
  /** Disposes the shared resources, newest first, then removes the temporary directory. */
  close(): Promise<void>;
}

/** A context for the samples of one measurement, in a new temporary directory under `tmpRoot`. */
export async function openSampleSession(signal: AbortSignal, tmpRoot = tmpdir()): Promise<SampleSession> {
  const tmpDir = await mkdtemp(join(tmpRoot, 'atrium-bench-'));
  const resources = new Map<string, { value: Promise<unknown>; dispose: () => Promise<void> | void }>();
  const notes: string[] = [];
  const ctx: SampleContext = {
    tmpDir,
    signal,
    shared<T>(key: string, create: () => Promise<T>, dispose?: (value: T) => Promise<void> | void) {
      const existing = resources.get(key);
      if (existing) return existing.value as Promise<T>;
      const value = create();
      resources.set(key, {
        value,
        dispose: async () => {
          // A resource whose creation failed has nothing to dispose (its error was thrown already).
          const created = await value.then(
            (v) => ({ ok: true as const, v }),
            () => ({ ok: false as const }),
          );
          if (created.ok && dispose) await dispose(created.v);
        },
      });
      return value;
    },
    note(message) {
      if (!notes.includes(message)) notes.push(message);
    },
  };
  return {
    ctx,
    notes,
    async close() {
      for (const resource of [...resources.values()].reverse()) await resource.dispose();
      resources.clear();
      await rm(tmpDir, { recursive: true, force: true });
    },
  };
}

function checkValue(metric: AnyMetric, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`${metric.name} measured ${value} ${metric.unit}: not a positive finite number`);
  }
  return value;
}

/** Measures `metric` `samples` times after `warmup` discarded samples. */
export async function measure(
  metric: AnyMetric,
  params: MetricParameters = {},
  options: MeasureOptions = {},
): Promise<Measurement> {
  const samples = options.samples ?? defaultSamples;
  const warmup = options.warmup ?? defaultWarmup;
  if (!Number.isInteger(samples) || samples < 1) throw new Error('samples must be an integer ≥ 1');
  if (!Number.isInteger(warmup) || warmup < 0) throw new Error('warmup must be an integer ≥ 0');
  const signal = options.signal ?? new AbortController().signal;
  const parameters = resolveParameters(metric, params);
  const session = await openSampleSession(signal, options.tmpRoot);
  const taken: Record<'warmup' | 'measured', number[]> = { warmup: [], measured: [] };
  try {
    for (const [phase, count] of [
      ['warmup', warmup],
      ['measured', samples],
    ] as const) {
      for (let index = 0; index < count; index++) {
        signal.throwIfAborted();
        const value = checkValue(metric, await metric.sample(parameters, session.ctx));
        taken[phase].push(value);
        options.onSample?.({ metric: metric.name, index, warmup: phase === 'warmup', value });
      }
    }
  } finally {
    await session.close();
  }
  return {
    metric: metric.name,
    unit: metric.unit,
    better: metric.better,
    parameters,
    samples: taken.measured,
    warmup_samples: taken.warmup,
    ...summarize(taken.measured),
    notes: session.notes,
  };
}
