// End to end, through the real `atrium serve`: the built-in `quick` plan run twice through the API
// (the second waits, queued, for the first: one run per runner), progress per metric in the
// operation's events, results whose scores are recomputed here from the raw samples and baselines
// by the documented formula, the same results as CSV, and a comparison of the two runs.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestDatabase, type TestDatabase } from '../fixtures/databases.js';
import { EventStream } from '../fixtures/event-stream.js';
import { requireBuild, startAtrium, type AtriumProcess } from '../fixtures/process.js';

const adminToken = 'atr_e2eBenchmarksAdmin0123456789';
const project = '/api/v1/projects/user-admin';

interface Results {
  score: number;
  formula: string;
  qpis: {
    name: string;
    baseline_score: number;
    score: number;
    sections: {
      name: string;
      score: number;
      metrics: {
        id: string;
        better: string;
        baseline: number;
        value: number;
        samples: number[];
        score: number;
      }[];
    }[];
  }[];
}

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
  let db: TestDatabase;
  let server: AtriumProcess;

  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${adminToken}`,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      },
      body: body === undefined ? null : JSON.stringify(body),
      signal: AbortSignal.timeout(120_000),
    });
    const text = await res.text();
    return {
      status: res.status,
      type: res.headers.get('content-type') ?? '',
      text,
      body: /json/.test(res.headers.get('content-type') ?? '') ? JSON.parse(text) : null,
    };
  };

  beforeAll(async () => {
    requireBuild();
    db = await createTestDatabase('sqlite');
    server = await startAtrium({
      ATRIUM_DATA_DIR: db.dataDir,
      ATRIUM_DATABASE_URL: db.url,
      ATRIUM_ADMIN_TOKEN: adminToken,
      ATRIUM_LOG_LEVEL: 'warn',
    });
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    await db?.drop();
  });

  it('runs the quick plan twice, one after the other, and scores follow from the raw values', async () => {
    const first = await call('POST', `${project}/benchmark-runs`, { plan: 'quick', samples: 1, warmup: 0 });
    const second = await call('POST', `${project}/benchmark-runs`, { plan: 'quick', samples: 1, warmup: 0 });
    expect([first.status, second.status]).toEqual([202, 202]);

    // The first run's operation reports progress per metric, then ends.
    const stream = await EventStream.open(`${server.url}/api/v1/operations/${first.body.id}/events`, {
      token: adminToken,
    });
    let frames;
    try {
      frames = await stream.readToEnd(120_000);
    } finally {
      stream.close();
    }
    const measured = frames.filter((f) => f.event === 'progress' && /^measured /.test(f.data.message));
    expect(measured.length).toBe(11);
    expect(frames[frames.length - 1]?.event).toBe('done');

    // While the first ran, the second waited in the queue: it started after the first finished.
    const waited = await fetch(`${server.url}/api/v1/operations/${second.body.id}`, {
      headers: { Authorization: `Bearer ${adminToken}`, Prefer: 'wait=60' },
      signal: AbortSignal.timeout(90_000),
    });
    expect(((await waited.json()) as { status: string }).status).toBe('succeeded');
    const runA = (await call('GET', `${project}/benchmark-runs/${first.body.target.id}`)).body;
    const runB = (await call('GET', `${project}/benchmark-runs/${second.body.target.id}`)).body;
    expect(runA.status).toBe('succeeded');
    expect(runB.created_at >= runA.created_at).toBe(true);
    const resultsA = (await call('GET', `${project}/benchmark-runs/${runA.id}/results`)).body as Results;
    const resultsB = (await call('GET', `${project}/benchmark-runs/${runB.id}/results`)).body as Results;
    expect(Date.parse((resultsB as unknown as { started_at: string }).started_at)).toBeGreaterThanOrEqual(
      Date.parse((resultsA as unknown as { finished_at: string }).finished_at),
    );

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

    const csv = await call('GET', `${project}/benchmark-runs/${runA.id}/results?format=csv`);
    expect(csv.status).toBe(200);
    expect(csv.type).toMatch(/^text\/csv/);
    const lines = csv.text.trim().split('\n');
    expect(lines[0]).toBe(
      'run_id,plan,qpi,section,metric,unit,better,baseline,value,spread,samples,metric_score,section_score,qpi_score,overall_score',
    );
    expect(lines).toHaveLength(12);

    const comparison = await call(
      'GET',
      `${project}/benchmark-comparisons?base=${runA.id}&run=${runB.id}&threshold=10`,
    );
    expect(comparison.status).toBe(200);
    expect(comparison.body.metrics).toHaveLength(11);
    const overall = comparison.body.overall as {
      a: number;
      b: number;
      delta_percent: number;
      regression: boolean;
    };
    expect(close(overall.delta_percent, ((resultsB.score - resultsA.score) / resultsA.score) * 100)).toBe(
      true,
    );
    expect(overall.regression).toBe(overall.delta_percent < -10);
  }, 240_000);
});
