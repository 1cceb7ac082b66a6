// What a benchmark metric is: one thing measured on this machine, with its unit, the direction
// that is better, and its parameters as a JSON Schema (validated, defaults applied, before sampling).

export type MetricCategory = 'compute' | 'memory' | 'storage' | 'network';
export type Better = 'higher' | 'lower';
export type MetricParameters = Record<string, unknown>;

/** A JSON Schema for an object of parameters; every property has a default. */
export interface ParametersSchema {
  type: 'object';
  properties: Record<string, Record<string, unknown>>;
  additionalProperties: false;
}

/** What a sample may use besides its parameters. */
export interface SampleContext {
  /** A directory of its own, removed after the measurement. */
  tmpDir: string;
  /** Aborts the measurement: a sample in progress stops as soon as it can and throws. */
  signal: AbortSignal;
  /**
   * A resource shared by every sample of one measurement (a file to read, a peer to talk to),
   * created by the first sample that asks and disposed when the measurement ends, so that its
   * preparation is never timed.
   */
  shared<T>(key: string, create: () => Promise<T>, dispose?: (value: T) => Promise<void> | void): Promise<T>;
  /** Records how the measurement was made when it differs from the documented way. */
  note(message: string): void;
}

export interface Metric<P extends MetricParameters = MetricParameters> {
  name: string;
  title: string;
  description: string;
  category: MetricCategory;
  /** For example MB/s, ns, IOPS, GFLOP/s. MB is 10^6 bytes, as dd and openssl speed count. */
  unit: string;
  better: Better;
  parameters: ParametersSchema;
  /** Measures once and returns the value in `unit`; parameters are validated with defaults. */
  sample(params: P, ctx: SampleContext): Promise<number>;
}

/** A metric of the registry: its parameters are checked by the schema, not by the type. */
export type AnyMetric = Metric<MetricParameters>;

/**
 * Declares a metric whose sample receives its typed parameters. The cast is safe because every
 * caller resolves the parameters against `parameters` (resolveParameters) before sampling.
 */
export function defineMetric<P extends object>(metric: Metric<P & MetricParameters>): AnyMetric {
  return metric as unknown as AnyMetric;
}
