// QPIs and plans: their documents (YAML files for the built-in ones, JSON bodies for a project's
// plans), validated in full — shape by zod, then every metric known and every parameter valid
// against its metric's schema — so that a run never meets a definition it cannot carry out.
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { findMetric } from './metrics/index.js';
import { parameterProblems } from './parameters.js';
import type { MetricParameters } from './types.js';

export class BenchmarkDefinitionError extends Error {
  override name = 'BenchmarkDefinitionError';
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`${source}: ${problems.join('; ')}`);
  }
}

const slug = z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be lower-case letters, digits, - or _');
const parameters = z.record(z.string(), z.unknown());
const formula = z.enum(['arithmetic', 'geometric']);

const qpiMetricSchema = z
  .object({
    metric: z.string().min(1),
    parameters: parameters.default({}),
    /** The value measured on the reference machine with these parameters, in the metric's unit. */
    baseline: z.number().positive().finite(),
  })
  .strict();

const sectionSchema = z
  .object({
    name: slug,
    title: z.string().min(1).max(200).optional(),
    metrics: z.array(qpiMetricSchema).min(1).max(50),
  })
  .strict();

export const qpiSchema = z
  .object({
    name: slug,
    title: z.string().min(1).max(200),
    description: z.string().max(5000).default(''),
    formula: formula.default('arithmetic'),
    baseline_score: z.number().positive().finite().default(2048),
    /** Where the baselines come from. */
    reference_run: z
      .object({
        machine: z.string().min(1).max(1000),
        date: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date such as 2025-01-31'),
        method: z.string().max(5000).default(''),
      })
      .strict(),
    sections: z.array(sectionSchema).min(1).max(50),
  })
  .strict();

export type QpiDefinition = z.infer<typeof qpiSchema>;

export const planSchema = z
  .object({
    name: slug,
    title: z.string().min(1).max(200),
    description: z.string().max(5000).default(''),
    /** `local`: a process on the API's machine; `cluster`: a Job in a region's cluster. */
    runner: z.enum(['local', 'cluster']).default('local'),
    qpis: z.array(slug).min(1).max(20),
    /** How the QPI scores make the plan's score. */
    formula: formula.default('arithmetic'),
    samples: z.number().int().min(1).max(50).default(5),
    warmup: z.number().int().min(0).max(10).default(1),
    /** Per metric name: parameters that replace the QPIs' own wherever the metric is used. */
    parameters: z.record(z.string(), parameters).default({}),
  })
  .strict();

export type PlanDefinition = z.infer<typeof planSchema>;

/** A plan with the QPIs it names, as a run receives it (input.json's `options.plan`). */
export const resolvedPlanSchema = planSchema.extend({ qpis: z.array(qpiSchema).min(1).max(20) });
export type ResolvedPlan = z.infer<typeof resolvedPlanSchema>;

function zodProblems(error: z.ZodError): string[] {
  return error.issues.map((issue) => `${issue.path.join('.') || '(document)'}: ${issue.message}`);
}

function metricProblems(where: string, name: string, params: MetricParameters): string[] {
  const metric = findMetric(name);
  if (!metric) return [`${where}: unknown metric "${name}"`];
  return parameterProblems(metric, params).map((problem) => `${where} (${name}): ${problem}`);
}

function duplicates(names: string[]): string[] {
  return names.filter((name, i) => names.indexOf(name) !== i);
}

/** The parameters a metric of a QPI is run with: its own, then the plan's overrides. */
export function effectiveParameters(
  plan: Pick<PlanDefinition, 'parameters'>,
  metric: { metric: string; parameters: MetricParameters },
): MetricParameters {
  return { ...metric.parameters, ...(plan.parameters[metric.metric] ?? {}) };
}

function qpiProblems(qpi: QpiDefinition, overrides: PlanDefinition['parameters'] = {}): string[] {
  const problems = duplicates(qpi.sections.map((s) => s.name)).map((n) => `sections: "${n}" is listed twice`);
  qpi.sections.forEach((section, s) =>
    section.metrics.forEach((entry, m) => {
      const where = `sections.${s}.metrics.${m}`;
      problems.push(
        ...metricProblems(where, entry.metric, effectiveParameters({ parameters: overrides }, entry)),
      );
    }),
  );
  return problems;
}

/** Validates a QPI document (parsed YAML or JSON); throws BenchmarkDefinitionError. */
export function parseQpi(document: unknown, source = 'QPI'): QpiDefinition {
  const parsed = qpiSchema.safeParse(document);
  if (!parsed.success) throw new BenchmarkDefinitionError(source, zodProblems(parsed.error));
  const problems = qpiProblems(parsed.data);
  if (problems.length > 0) throw new BenchmarkDefinitionError(source, problems);
  return parsed.data;
}

/**
 * Validates a plan document against the QPIs it may name: every QPI exists, every override names a
 * metric of one of them and is valid for it, merged with each use's own parameters.
 */
export function parsePlan(
  document: unknown,
  qpis: ReadonlyMap<string, QpiDefinition>,
  source = 'plan',
): PlanDefinition {
  const parsed = planSchema.safeParse(document);
  if (!parsed.success) throw new BenchmarkDefinitionError(source, zodProblems(parsed.error));
  const plan = parsed.data;
  const problems = duplicates(plan.qpis).map((name) => `qpis: "${name}" is listed twice`);
  const named = plan.qpis.flatMap((name) => {
    const qpi = qpis.get(name);
    if (!qpi) problems.push(`qpis: unknown QPI "${name}"`);
    return qpi ? [qpi] : [];
  });
  const used = new Set(named.flatMap((q) => q.sections.flatMap((s) => s.metrics.map((m) => m.metric))));
  for (const name of Object.keys(plan.parameters)) {
    if (!used.has(name)) problems.push(`parameters: "${name}" is not a metric of the plan's QPIs`);
  }
  for (const qpi of named) {
    problems.push(...qpiProblems(qpi, plan.parameters).map((p) => `QPI ${qpi.name}: ${p}`));
  }
  if (problems.length > 0) throw new BenchmarkDefinitionError(source, problems);
  return plan;
}

/** The plan with its QPIs in its own order, ready to be sent to a runner. */
export function resolvePlan(plan: PlanDefinition, qpis: ReadonlyMap<string, QpiDefinition>): ResolvedPlan {
  const checked = parsePlan(plan, qpis, `plan ${plan.name}`);
  return { ...checked, qpis: checked.qpis.map((name) => qpis.get(name) as QpiDefinition) };
}

/** Validates a resolved plan received by a runner, as parsePlan does with the QPIs it carries. */
export function parseResolvedPlan(document: unknown, source = 'plan'): ResolvedPlan {
  const parsed = resolvedPlanSchema.safeParse(document);
  if (!parsed.success) throw new BenchmarkDefinitionError(source, zodProblems(parsed.error));
  const qpis = new Map(parsed.data.qpis.map((qpi) => [qpi.name, qpi]));
  parsePlan({ ...parsed.data, qpis: parsed.data.qpis.map((q) => q.name) }, qpis, source);
  return parsed.data;
}

export function parseYamlDocument(text: string, source: string): unknown {
  try {
    return parseYaml(text) as unknown;
  } catch (error) {
    throw new BenchmarkDefinitionError(source, [`not valid YAML: ${(error as Error).message}`]);
  }
}
