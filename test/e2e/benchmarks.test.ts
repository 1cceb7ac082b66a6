// End to end, through the real `atrium serve` and the generated client (@atrium/client): the
// built-in `quick` plan run twice through the API (the second waits, queued, for the first: one run
// per runner), progress per metric in the operation's events, results whose scores are recomputed
// here from the raw samples and baselines by the documented formula, the same results as CSV, and a
// comparison of the two runs.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { unwrap, type Schemas } from '@atrium/client';
import {
  expectAccepted,
  expectStatus,
  FollowedEvents,
  startedAtrium,
  type StartedAtrium,
} from '../fixtures/e2e.js';

const adminToken = 'atr_e2eBenchmarksAdmin0123456789';
const projectId = 'user-admin';

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}
const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));

describe('benchmarks end to end (sqlite)', () => {
  let atrium: StartedAtrium;

  beforeAll(async () => {
    atrium = await startedAtrium('sqlite', adminToken);
  }, 60_000);

  afterAll(async () => {
    await atrium?.stop();
  });

  const getRun = async (runId: string) =>
    unwrap(
      await atrium.client.GET('/projects/{projectId}/benchmark-runs/{runId}', {
        params: { path: { projectId, runId } },
      }),
    );
  const getResults = async (runId: string): Promise<Schemas['BenchmarkResults']> => {
    const results = unwrap(
      await atrium.client.GET('/projects/{projectId}/benchmark-runs/{runId}/results', {
        params: { path: { projectId, runId } },
      }),
    );
    if (typeof results === 'string') throw new Error(`results as text, not JSON: ${results.slice(0, 200)}`);
    return results;
  };

  it('runs the quick plan twice, one after the other, and scores follow from the raw values', async () => {
    const { client } = atrium;
    const create = () =>
      client.POST('/projects/{projectId}/benchmark-runs', {
        params: { path: { projectId } },
        body: { plan: 'quick', samples: 1, warmup: 0 },
      });
    const first = expectAccepted(await create());
    const second = expectAccepted(await create());

    // The first run's operation reports progress per metric, then ends.
    const stream = new FollowedEvents((signal) =>
      client.events('/operations/{operationId}/events', {
        params: { path: { operationId: first.id } },
        signal,
      }),
    );
    let events;
    try {
      events = await stream.readToEnd(120_000);
    } finally {
      stream.close();
    }
    const measured = events.filter((e) => e.event === 'progress' && /^measured /.test(e.data.message ?? ''));
    expect(measured.length).toBe(11);
    expect(events[events.length - 1]?.event).toBe('done');

    // While the first ran, the second waited in the queue: it started after the first finished.
    const waited = await client.waitForOperation(second, { timeoutMs: 90_000 });
    expect(waited.status).toBe('succeeded');
    const runA = await getRun(first.target?.id as string);
    const runB = await getRun(second.target?.id as string);
    expect(runA.status).toBe('succeeded');
    expect(runB.created_at >= runA.created_at).toBe(true);
    const resultsA = await getResults(runA.id);
    const resultsB = await getResults(runB.id);
    expect(Date.parse(resultsB.started_at)).toBeGreaterThanOrEqual(Date.parse(resultsA.finished_at));
    // The documented formula, recomputed from the raw samples and the baselines.
    for (const results of [resultsA, resultsB]) {
      const qpiScores = results.qpis.map((qpi) => {
        const sectionScores = qpi.sections.map((section) => {
          const scores = section.metrics.map((m) => {
            expect(close(m.value, median(m.samples))).toBe(true);
            const score = m.better === 'higher' ? m.value / m.baseline : m.baseline / m.value;
            expect(close(m.score, score)).toBe(true);
            return score;
          });
          expect(close(section.score, mean(scores))).toBe(true);
          return mean(scores);
        });
        const score = mean(sectionScores) * qpi.baseline_score;
        expect(close(qpi.score, score)).toBe(true);
        return score;
      });
      expect(results.qpis.map((q) => q.name)).toEqual(['compute', 'memory', 'storage', 'network']);
      expect(close(results.score, mean(qpiScores))).toBe(true);
    }
    expect(runA.score).toBeCloseTo(resultsA.score, 6);

    const csv = await client.GET('/projects/{projectId}/benchmark-runs/{runId}/results', {
      params: { path: { projectId, runId: runA.id }, query: { format: 'csv' } },
      parseAs: 'text',
    });
    const csvText = expectStatus(csv, 200);
    expect(csv.response.headers.get('content-type')).toMatch(/^text\/csv/);
    const lines = csvText.trim().split('\n');
    expect(lines[0]).toBe(
      'run_id,plan,qpi,section,metric,unit,better,baseline,value,spread,samples,metric_score,section_score,qpi_score,overall_score',
    );
    expect(lines).toHaveLength(12);

    const comparison = expectStatus(
      await client.GET('/projects/{projectId}/benchmark-comparisons', {
        params: { path: { projectId }, query: { base: runA.id, run: runB.id, threshold: 10 } },
      }),
      200,
    );
    expect(comparison.metrics).toHaveLength(11);
    const overall = comparison.overall;
    expect(close(overall.delta_percent, ((resultsB.score - resultsA.score) / resultsA.score) * 100)).toBe(
      true,
    );
    expect(overall.regression).toBe(overall.delta_percent < -10);
  }, 240_000);
});
