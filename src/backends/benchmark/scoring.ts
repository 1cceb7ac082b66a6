// Scores, as QTIP defines them, as pure functions that keep every intermediate number:
//
//   metric score  = measured / baseline          (baseline / measured where lower is better)
//   section score = mean of its metric scores
//   QPI score     = mean of its section scores × baseline_score (2048)
//   plan score    = mean of its QPI scores
//
// "mean" is arithmetic (QTIP's formula, the default) or geometric (the option: one metric far
// above its baseline cannot hide another far below). A machine equal to the reference machine
// scores baseline_score.
import type { Better, MetricParameters } from './types.js';

export type Formula = 'arithmetic' | 'geometric';

export function mean(values: readonly number[], formula: Formula = 'arithmetic'): number {
  if (values.length === 0) throw new Error('the mean of no values');
  if (formula === 'arithmetic') return values.reduce((sum, value) => sum + value, 0) / values.length;
  if (values.some((value) => !(value > 0))) throw new Error('a geometric mean needs positive values');
  return Math.exp(values.reduce((sum, value) => sum + Math.log(value), 0) / values.length);
}

export function metricScore(value: number, baseline: number, better: Better): number {
  if (!(value > 0) || !(baseline > 0)) throw new Error('a score needs a positive value and baseline');
  return better === 'higher' ? value / baseline : baseline / value;
}

/** A metric of a QPI section with what was measured. */
export interface MetricScoreInput {
  metric: string;
  better: Better;
  baseline: number;
  value: number;
  unit?: string;
  parameters?: MetricParameters;
}

export interface SectionInput {
  name: string;
  metrics: MetricScoreInput[];
}

export interface QpiInput {
  name: string;
  formula: Formula;
  baseline_score: number;
  sections: SectionInput[];
}

export interface ScoredMetric extends MetricScoreInput {
  /** `qpi/section/metric`, with `#2`, `#3`… for a metric listed again in the same section. */
  id: string;
  score: number;
}

export interface ScoredSection {
  name: string;
  /** The mean of the metric scores (a ratio: 1 is the reference machine). */
  score: number;
  metrics: ScoredMetric[];
}

export interface ScoredQpi {
  name: string;
  formula: Formula;
  baseline_score: number;
  /** The mean of the section scores, before the baseline score multiplies it. */
  ratio: number;
  score: number;
  sections: ScoredSection[];
}

export interface PlanScore {
  formula: Formula;
  score: number;
  qpis: ScoredQpi[];
}

function scoreSection(qpi: QpiInput, section: SectionInput): ScoredSection {
  const seen = new Map<string, number>();
  const metrics = section.metrics.map((entry) => {
    const occurrence = (seen.get(entry.metric) ?? 0) + 1;
    seen.set(entry.metric, occurrence);
    const suffix = occurrence > 1 ? `#${occurrence}` : '';
    return {
      ...entry,
      id: `${qpi.name}/${section.name}/${entry.metric}${suffix}`,
      score: metricScore(entry.value, entry.baseline, entry.better),
    };
  });
  return {
    name: section.name,
    score: mean(
      metrics.map((m) => m.score),
      qpi.formula,
    ),
    metrics,
  };
}

export function scoreQpi(qpi: QpiInput): ScoredQpi {
  const sections = qpi.sections.map((section) => scoreSection(qpi, section));
  const ratio = mean(
    sections.map((s) => s.score),
    qpi.formula,
  );
  return {
    name: qpi.name,
    formula: qpi.formula,
    baseline_score: qpi.baseline_score,
    ratio,
    score: ratio * qpi.baseline_score,
    sections,
  };
}

export function scorePlan(qpis: readonly QpiInput[], formula: Formula = 'arithmetic'): PlanScore {
  const scored = qpis.map(scoreQpi);
  return {
    formula,
    score: mean(
      scored.map((q) => q.score),
      formula,
    ),
    qpis: scored,
  };
}

// ---- Comparing two runs ----

export interface Delta {
  a: number;
  b: number;
  /** (b − a) / a × 100. */
  delta_percent: number;
  /** b is worse than a by more than the threshold, in the metric's better direction. */
  regression: boolean;
}

export interface MetricDelta extends Delta {
  id: string;
  metric: string;
  unit: string | null;
  better: Better;
}

export interface RunComparison {
  threshold_percent: number;
  overall: Delta;
  qpis: (Delta & { name: string })[];
  metrics: MetricDelta[];
  /** Metric ids and QPI names found in only one of the runs (not compared). */
  unmatched: string[];
}

function delta(a: number, b: number, better: Better, thresholdPercent: number): Delta {
  const deltaPercent = ((b - a) / a) * 100;
  const worseBy = better === 'higher' ? -deltaPercent : deltaPercent;
  return { a, b, delta_percent: deltaPercent, regression: worseBy > thresholdPercent };
}

/** Compares run b with run a (the reference): per metric value, per QPI score and overall. */
export function compareRuns(a: PlanScore, b: PlanScore, thresholdPercent: number): RunComparison {
  if (!(thresholdPercent >= 0)) throw new Error('the threshold must be a percentage ≥ 0');
  const metricsOf = (run: PlanScore) =>
    new Map(run.qpis.flatMap((q) => q.sections.flatMap((s) => s.metrics)).map((m) => [m.id, m]));
  const [metricsA, metricsB] = [metricsOf(a), metricsOf(b)];
  const qpisB = new Map(b.qpis.map((q) => [q.name, q]));
  const qpisA = new Set(a.qpis.map((q) => q.name));
  const metrics: MetricDelta[] = [];
  for (const [id, ma] of metricsA) {
    const mb = metricsB.get(id);
    if (mb) {
      metrics.push({
        id,
        metric: ma.metric,
        unit: ma.unit ?? null,
        better: ma.better,
        ...delta(ma.value, mb.value, ma.better, thresholdPercent),
      });
    }
  }
  const qpis = a.qpis.flatMap((qa) => {
    const qb = qpisB.get(qa.name);
    return qb ? [{ name: qa.name, ...delta(qa.score, qb.score, 'higher', thresholdPercent) }] : [];
  });
  const unmatched = [
    ...[...metricsA.keys(), ...metricsB.keys()].filter((id) => !(metricsA.has(id) && metricsB.has(id))),
    ...[...qpisA, ...qpisB.keys()].filter((name) => !(qpisA.has(name) && qpisB.has(name))),
  ];
  return {
    threshold_percent: thresholdPercent,
    overall: delta(a.score, b.score, 'higher', thresholdPercent),
    qpis,
    metrics,
    unmatched,
  };
}
