import { apiBasePath } from '../services/platform.js';
import type { Handler, Reply } from '../http/operation.js';
import { arrayPage, type PlanDefinition, type PlanResults, type AnyMetric } from '../services/model.js';
import type { components } from '../../generated/openapi.js';
import {
  benchmarkPlanEtag,
  type BenchmarkPlanRecord,
  type BenchmarkRunRecord,
} from '../services/benchmarks.js';
import { metricDetails, resultsCsv, type MetricDetail } from './present-benchmarks.js';
import { pageOf } from './paging.js';
import { page } from './present.js';
import { accepted, answerAccepted } from './waiting.js';

type Schemas = components['schemas'];

const presentMetric = (m: AnyMetric): Schemas['BenchmarkMetric'] => ({
  name: m.name,
  title: m.title,
  description: m.description,
  category: m.category,
  unit: m.unit,
  better: m.better,
  parameters_schema: m.parameters as unknown as Record<string, unknown>,
});

const presentDefinition = (
  d: PlanDefinition,
): Omit<Schemas['BenchmarkPlan'], 'id' | 'project_id' | 'builtin' | 'created_at' | 'updated_at'> => ({
  name: d.name,
  title: d.title,
  description: d.description,
  runner: d.runner,
  qpis: d.qpis,
  formula: d.formula,
  samples: d.samples,
  warmup: d.warmup,
  parameters: d.parameters,
});

const presentBuiltinPlan = (d: PlanDefinition): Schemas['BenchmarkPlan'] => ({
  id: null,
  project_id: null,
  builtin: true,
  ...presentDefinition(d),
  created_at: null,
  updated_at: null,
});

const presentPlan = (p: BenchmarkPlanRecord): Schemas['BenchmarkPlan'] => ({
  id: p.id,
  project_id: p.projectId,
  builtin: false,
  ...presentDefinition(p.definition),
  created_at: p.createdAt,
  updated_at: p.updatedAt,
});

const presentRun = (r: BenchmarkRunRecord): Schemas['BenchmarkRun'] => {
  const { results } = r;
  return {
    id: r.id,
    project_id: r.projectId,
    plan_name: r.planName,
    runner: r.runner,
    status: r.status,
    operation_id: r.operationId,
    score: r.score,
    qpi_scores: Object.fromEntries((results?.scores.qpis ?? []).map((q) => [q.name, q.score])),
    error: r.error,
    created_by: r.createdBy,
    created_at: r.createdAt,
    updated_at: r.updatedAt,
    finished_at: r.finishedAt,
  };
};

const presentResults = (run: BenchmarkRunRecord, results: PlanResults): Schemas['BenchmarkResults'] => {
  const details = metricDetails(results);
  return {
    run_id: run.id,
    plan: results.plan as unknown as Record<string, unknown>,
    environment: results.environment as unknown as Record<string, unknown>,
    started_at: results.started_at,
    finished_at: results.finished_at,
    formula: results.scores.formula,
    score: results.scores.score,
    qpis: results.scores.qpis.map((q) => ({
      name: q.name,
      formula: q.formula,
      baseline_score: q.baseline_score,
      ratio: q.ratio,
      score: q.score,
      sections: q.sections.map((s) => ({
        name: s.name,
        score: s.score,
        metrics: s.metrics.map((m) => details.get(m.id) as MetricDetail),
      })),
    })),
  };
};

export const listBenchmarkMetrics: Handler<'listBenchmarkMetrics'> = async ({ query }, { services }) => ({
  status: 200,
  body: page(
    arrayPage('benchmark-metrics', services.benchmarks.metrics(), (m) => m.name, pageOf(query)),
    presentMetric,
  ),
});

export const getBenchmarkMetric: Handler<'getBenchmarkMetric'> = async ({ params }, { services }) => ({
  status: 200,
  body: presentMetric(services.benchmarks.metric(params.metricName)),
});

export const listBenchmarkQpis: Handler<'listBenchmarkQpis'> = async ({ query }, { services }) => ({
  status: 200,
  body: page(
    arrayPage('benchmark-qpis', services.benchmarks.qpis(), (q) => q.name, pageOf(query)),
    (q) => q as unknown as Schemas['BenchmarkQpi'],
  ),
});

export const getBenchmarkQpi: Handler<'getBenchmarkQpi'> = async ({ params }, { services }) => ({
  status: 200,
  body: services.benchmarks.qpi(params.qpiName) as unknown as Schemas['BenchmarkQpi'],
});

export const listBenchmarkPlans: Handler<'listBenchmarkPlans'> = async ({ query }, { services }) => ({
  status: 200,
  body: page(
    arrayPage('benchmark-plans', services.benchmarks.builtinPlans(), (p) => p.name, pageOf(query)),
    presentBuiltinPlan,
  ),
});

export const getBenchmarkPlan: Handler<'getBenchmarkPlan'> = async ({ params }, { services }) => ({
  status: 200,
  body: presentBuiltinPlan(services.benchmarks.builtinPlan(params.planName)),
});

export const listProjectBenchmarkPlans: Handler<'listProjectBenchmarkPlans'> = async (
  { params, query },
  { principal, services },
) => ({
  status: 200,
  body: page(await services.benchmarks.listPlans(principal, params.projectId, pageOf(query)), presentPlan),
});

export const createBenchmarkPlan: Handler<'createBenchmarkPlan'> = async ({ params, body }, ctx) => {
  const created = (plan: BenchmarkPlanRecord) => ({
    status: 201 as const,
    body: presentPlan(plan),
    etag: benchmarkPlanEtag(plan),
    location: `${apiBasePath}/projects/${plan.projectId}/benchmark-plans/${plan.id}`,
  });
  ctx.answerWith(created);
  return created(await ctx.services.benchmarks.createPlan(ctx.principal, params.projectId, body));
};

export const getProjectBenchmarkPlan: Handler<'getProjectBenchmarkPlan'> = async (
  { params },
  { principal, services },
) => {
  const plan = await services.benchmarks.getPlan(principal, params.projectId, params.planId);
  return { status: 200, body: presentPlan(plan), etag: benchmarkPlanEtag(plan) };
};

export const updateBenchmarkPlan: Handler<'updateBenchmarkPlan'> = async (
  { params, body, headers },
  { principal, services },
) => {
  const plan = await services.benchmarks.updatePlan(
    principal,
    params.projectId,
    params.planId,
    body,
    headers['if-match'],
  );
  return { status: 200, body: presentPlan(plan), etag: benchmarkPlanEtag(plan) };
};

export const deleteBenchmarkPlan: Handler<'deleteBenchmarkPlan'> = async (
  { params, headers },
  { principal, services },
) => {
  await services.benchmarks.deletePlan(principal, params.projectId, params.planId, headers['if-match']);
  return { status: 204 };
};

export const listBenchmarkRuns: Handler<'listBenchmarkRuns'> = async (
  { params, query },
  { principal, services },
) => ({
  status: 200,
  body: page(
    await services.benchmarks.listRuns(
      principal,
      params.projectId,
      { planName: query.plan, status: query.status },
      pageOf(query),
    ),
    presentRun,
  ),
});

export const createBenchmarkRun: Handler<'createBenchmarkRun'> = async ({ params, body, headers }, ctx) => {
  answerAccepted(ctx);
  return accepted(
    await ctx.services.benchmarks.createRun(ctx.principal, params.projectId, body),
    headers,
    ctx,
  );
};

export const getBenchmarkRun: Handler<'getBenchmarkRun'> = async ({ params }, { principal, services }) => ({
  status: 200,
  body: presentRun(await services.benchmarks.getRun(principal, params.projectId, params.runId)),
});

export const deleteBenchmarkRun: Handler<'deleteBenchmarkRun'> = async (
  { params },
  { principal, services },
) => {
  await services.benchmarks.deleteRun(principal, params.projectId, params.runId);
  return { status: 204 };
};

export const cancelBenchmarkRun: Handler<'cancelBenchmarkRun'> = async (
  { params },
  { principal, services },
) => ({
  status: 200,
  body: presentRun(await services.benchmarks.cancelRun(principal, params.projectId, params.runId)),
});

export const getBenchmarkResults: Handler<'getBenchmarkResults'> = async (
  { params, query },
  { principal, services },
): Promise<Reply<'getBenchmarkResults'>> => {
  const { run, results } = await services.benchmarks.results(principal, params.projectId, params.runId);
  if (query.format === 'csv') {
    const csv = resultsCsv(run, results);
    return {
      status: 200,
      stream: (async function* () {
        yield csv;
      })(),
      contentType: 'text/csv; charset=utf-8',
      headers: { 'Content-Disposition': `attachment; filename="${run.id}.csv"` },
    };
  }
  return { status: 200, body: presentResults(run, results) };
};

export const compareBenchmarkRuns: Handler<'compareBenchmarkRuns'> = async (
  { params, query },
  { principal, services },
) => {
  const { base, other, comparison } = await services.benchmarks.compare(
    principal,
    params.projectId,
    query.base,
    query.run,
    query.threshold ?? 5,
  );
  return {
    status: 200,
    body: {
      base_run_id: base.id,
      run_id: other.id,
      threshold_percent: comparison.threshold_percent,
      regression:
        comparison.overall.regression ||
        comparison.qpis.some((q) => q.regression) ||
        comparison.metrics.some((m) => m.regression),
      overall: { ...comparison.overall },
      qpis: comparison.qpis.map((q) => ({ ...q })),
      metrics: comparison.metrics.map((m) => ({ ...m })),
      unmatched: comparison.unmatched,
    },
  };
};
