// Benchmark results for people: every scored metric joined with its raw measurement, and the
// results as CSV rows.
import type { BenchmarkRunRecord } from '../services/benchmarks.js';
import type { PlanResults } from '../services/model.js';

/** One row of a run's results: a metric of a section of a QPI, with every number that scores it. */
export interface ResultRow extends Omit<MetricDetail, 'score'> {
  qpi: string;
  section: string;
  metricScore: number;
  sectionScore: number;
  qpiScore: number;
}

/** What one scored metric of a run measured: its score joined with its raw measurement. */
export interface MetricDetail {
  id: string;
  metric: string;
  unit: string;
  better: 'higher' | 'lower';
  parameters: Record<string, unknown>;
  baseline: number;
  value: number;
  spread: number;
  samples: number[];
  score: number;
}

/** Every metric's detail, by id. */
export function metricDetails(results: PlanResults): Map<string, MetricDetail> {
  const measured = new Map(results.measurements.map((m) => [m.id, m]));
  const details = new Map<string, MetricDetail>();
  for (const m of results.scores.qpis.flatMap((q) => q.sections.flatMap((s) => s.metrics))) {
    const measurement = measured.get(m.id);
    details.set(m.id, {
      id: m.id,
      metric: m.metric,
      unit: measurement?.unit ?? m.unit ?? '',
      better: m.better,
      parameters: measurement?.parameters ?? m.parameters ?? {},
      baseline: m.baseline,
      value: m.value,
      spread: measurement?.spread ?? 0,
      samples: measurement?.samples ?? [],
      score: m.score,
    });
  }
  return details;
}

/** A run's results, flattened for tables (CSV) and checks. */
export function resultRows(results: PlanResults): ResultRow[] {
  const details = metricDetails(results);
  return results.scores.qpis.flatMap((qpi) =>
    qpi.sections.flatMap((section) =>
      section.metrics.map((m) => {
        const { score, ...detail } = details.get(m.id) as MetricDetail;
        return {
          ...detail,
          qpi: qpi.name,
          section: section.name,
          metricScore: score,
          sectionScore: section.score,
          qpiScore: qpi.score,
        };
      }),
    ),
  );
}

const csvCell = (value: string | number) => {
  const text = String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
};

/** The results as CSV: one line per metric, with its samples, scores and the overall score. */
export function resultsCsv(run: BenchmarkRunRecord, results: PlanResults): string {
  const header = [
    'run_id',
    'plan',
    'qpi',
    'section',
    'metric',
    'unit',
    'better',
    'baseline',
    'value',
    'spread',
    'samples',
    'metric_score',
    'section_score',
    'qpi_score',
    'overall_score',
  ];
  const lines = resultRows(results).map((r) =>
    [
      run.id,
      run.planName,
      r.qpi,
      r.section,
      r.metric,
      r.unit,
      r.better,
      r.baseline,
      r.value,
      r.spread,
      r.samples.join(' '),
      r.metricScore,
      r.sectionScore,
      r.qpiScore,
      results.scores.score,
    ]
      .map(csvCell)
      .join(','),
  );
  return `${[header.join(','), ...lines].join('\n')}\n`;
}
