import { describe, expect, it } from '@jest/globals';
import {
  compareRuns,
  mean,
  metricScore,
  scorePlan,
  scoreQpi,
  type QpiInput,
} from '../../../src/backends/benchmark/scoring.js';

const compute: QpiInput = {
  name: 'compute',
  formula: 'arithmetic',
  baseline_score: 2048,
  sections: [
    {
      name: 'integer',
      metrics: [
        { metric: 'ops', better: 'higher', baseline: 100, value: 150 }, // 1.5
        { metric: 'lat', better: 'lower', baseline: 20, value: 40 }, //   0.5 (twice as slow)
      ],
    },
    { name: 'float', metrics: [{ metric: 'flops', better: 'higher', baseline: 4, value: 3 }] }, // 0.75
  ],
};

describe('metric scores', () => {
  it('are measured / baseline, inverted where lower is better', () => {
    expect(metricScore(150, 100, 'higher')).toBe(1.5);
    expect(metricScore(40, 20, 'lower')).toBe(0.5);
    expect(metricScore(10, 20, 'lower')).toBe(2);
    expect(() => metricScore(0, 20, 'lower')).toThrow();
  });
});

describe('means', () => {
  it('are arithmetic by default and geometric on request', () => {
    expect(mean([1, 2, 6])).toBe(3);
    expect(mean([1, 2, 4], 'geometric')).toBeCloseTo(2, 12);
    expect(() => mean([])).toThrow();
    expect(() => mean([1, 0], 'geometric')).toThrow();
  });
});

describe('QPI and plan scores (QTIP formula)', () => {
  it('average metric scores into sections, sections into the QPI, times the baseline score', () => {
    const scored = scoreQpi(compute);
    // integer: (1.5 + 0.5) / 2 = 1; float: 0.75; QPI: (1 + 0.75) / 2 × 2048 = 1792
    expect(scored.sections.map((s) => s.score)).toEqual([1, 0.75]);
    expect(scored.ratio).toBe(0.875);
    expect(scored.score).toBe(1792);
    expect(scored.sections[0]?.metrics.map((m) => [m.id, m.score])).toEqual([
      ['compute/integer/ops', 1.5],
      ['compute/integer/lat', 0.5],
    ]);
  });

  it('use geometric means with the option', () => {
    const scored = scoreQpi({ ...compute, formula: 'geometric' });
    // integer: √(1.5 × 0.5) = 0.8660…; QPI: √(0.8660… × 0.75) × 2048
    expect(scored.sections[0]?.score).toBeCloseTo(Math.sqrt(0.75), 12);
    expect(scored.score).toBeCloseTo(Math.sqrt(Math.sqrt(0.75) * 0.75) * 2048, 9);
  });

  it('average QPI scores into the plan score', () => {
    const memory: QpiInput = {
      name: 'memory',
      formula: 'arithmetic',
      baseline_score: 2048,
      sections: [
        { name: 'bandwidth', metrics: [{ metric: 'copy', better: 'higher', baseline: 10, value: 10 }] },
      ],
    };
    expect(scorePlan([compute, memory]).score).toBe((1792 + 2048) / 2);
    expect(scorePlan([compute, memory], 'geometric').score).toBeCloseTo(Math.sqrt(1792 * 2048), 9);
  });

  it('tells apart a metric listed twice in one section', () => {
    const twice = scoreQpi({
      ...compute,
      sections: [
        {
          name: 's',
          metrics: [
            { metric: 'm', better: 'higher', baseline: 1, value: 1 },
            { metric: 'm', better: 'higher', baseline: 1, value: 2 },
          ],
        },
      ],
    });
    expect(twice.sections[0]?.metrics.map((m) => m.id)).toEqual(['compute/s/m', 'compute/s/m#2']);
  });
});

describe('compareRuns', () => {
  const before = scorePlan([compute]);
  const after = scorePlan([
    {
      ...compute,
      sections: [
        {
          name: 'integer',
          metrics: [
            { metric: 'ops', better: 'higher', baseline: 100, value: 120 }, // −20 %: worse
            { metric: 'lat', better: 'lower', baseline: 20, value: 44 }, //    +10 %: worse, at the threshold
          ],
        },
        { name: 'float', metrics: [{ metric: 'flops', better: 'higher', baseline: 4, value: 3.3 }] }, // +10 %
      ],
    },
  ]);

  it('reports deltas in % and flags regressions beyond the threshold in the better direction', () => {
    const comparison = compareRuns(before, after, 10);
    const byId = Object.fromEntries(comparison.metrics.map((m) => [m.id, m]));
    expect(byId['compute/integer/ops']).toMatchObject({ a: 150, b: 120, regression: true });
    expect(byId['compute/integer/ops']?.delta_percent).toBeCloseTo(-20, 12);
    expect(byId['compute/integer/lat']?.delta_percent).toBeCloseTo(10, 12);
    expect(byId['compute/integer/lat']?.regression).toBe(false);
    expect(byId['compute/float/flops']?.regression).toBe(false);
    // QPI: (((1.2 + 20/44) / 2) + 0.825) / 2 × 2048 against 1792
    const afterScore = (((1.2 + 20 / 44) / 2 + 0.825) / 2) * 2048;
    expect(comparison.qpis[0]?.b).toBeCloseTo(afterScore, 9);
    expect(comparison.qpis[0]?.delta_percent).toBeCloseTo(((afterScore - 1792) / 1792) * 100, 9);
    expect(comparison.overall.regression).toBe(false);
    expect(comparison.unmatched).toEqual([]);
  });

  it('flags a slower latency as a regression and a lower score too', () => {
    const comparison = compareRuns(before, after, 5);
    expect(comparison.metrics.find((m) => m.metric === 'lat')?.regression).toBe(true);
    expect(compareRuns(after, before, 5).metrics.find((m) => m.metric === 'lat')?.regression).toBe(false);
    const worse = scorePlan([{ ...compute, baseline_score: 1000 }]);
    expect(compareRuns(before, worse, 10).overall.regression).toBe(true);
  });

  it('lists what only one run has', () => {
    const other = scorePlan([{ ...compute, name: 'cpu' }]);
    const comparison = compareRuns(before, other, 10);
    expect(comparison.metrics).toEqual([]);
    expect(comparison.unmatched).toEqual(
      expect.arrayContaining(['compute/integer/ops', 'cpu/float/flops', 'cpu']),
    );
  });
});
