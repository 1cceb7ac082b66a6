import { describe, expect, it } from '@jest/globals';
import { loadBenchmarkDefinitions } from '../../../src/backends/benchmark/builtin.js';
import {
  BenchmarkDefinitionError,
  parsePlan,
  parseQpi,
  parseResolvedPlan,
  parseYamlDocument,
  resolvePlan,
  type QpiDefinition,
} from '../../../src/backends/benchmark/definitions.js';

const qpiYaml = `
name: tiny
title: Tiny
reference_run: { machine: test machine, date: '2026-01-31' }
sections:
  - name: hashing
    metrics:
      - metric: sha256_throughput
        parameters: { block_size: 4096 }
        baseline: 1000
`;

function problemsOf(run: () => unknown): string[] {
  try {
    run();
  } catch (error) {
    if (error instanceof BenchmarkDefinitionError) return error.problems;
    throw error;
  }
  throw new Error('expected a BenchmarkDefinitionError');
}

describe('the built-in QPIs and plans', () => {
  const { qpis, plans } = loadBenchmarkDefinitions();

  it('load and validate', () => {
    expect([...qpis.keys()].sort()).toEqual(['compute', 'memory', 'network', 'storage']);
    expect([...plans.keys()].sort()).toEqual(['full', 'quick']);
  });

  it('state their reference run and use the QTIP defaults', () => {
    for (const qpi of qpis.values()) {
      expect(qpi.reference_run.machine).toMatch(/EPYC/);
      expect(qpi.baseline_score).toBe(2048);
      expect(qpi.formula).toBe('arithmetic');
    }
  });

  it('measure every built-in metric somewhere', () => {
    const used = [...qpis.values()].flatMap((q) => q.sections.flatMap((s) => s.metrics.map((m) => m.metric)));
    expect(used).toHaveLength(11);
    expect(new Set(used).size).toBe(11);
  });

  it('resolve a plan with its QPIs in order', () => {
    const quick = plans.get('quick');
    if (!quick) throw new Error('no quick plan');
    const resolved = resolvePlan(quick, qpis);
    expect(resolved.qpis.map((q) => q.name)).toEqual(['compute', 'memory', 'storage', 'network']);
    expect(parseResolvedPlan(JSON.parse(JSON.stringify(resolved)))).toEqual(resolved);
  });
});

describe('parseQpi', () => {
  it('fills in the defaults', () => {
    const qpi = parseQpi(parseYamlDocument(qpiYaml, 'tiny.yaml'));
    expect(qpi).toMatchObject({ formula: 'arithmetic', baseline_score: 2048, description: '' });
  });

  it('rejects an unknown metric', () => {
    const document = parseYamlDocument(qpiYaml.replace('sha256_throughput', 'sha1_speed'), 'x');
    expect(problemsOf(() => parseQpi(document))).toEqual([
      'sections.0.metrics.0: unknown metric "sha1_speed"',
    ]);
  });

  it('rejects parameters that fail the metric schema', () => {
    const document = parseYamlDocument(
      qpiYaml.replace('block_size: 4096', 'block_size: 8, colour: red'),
      'x',
    );
    const problems = problemsOf(() => parseQpi(document));
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/metrics\.0 \(sha256_throughput\): block_size: must be >= 16/),
        expect.stringMatching(/colour/),
      ]),
    );
  });

  it('rejects a bad shape, a bad baseline and unknown fields', () => {
    const document = parseYamlDocument(
      qpiYaml.replace('baseline: 1000', 'baseline: -3').replace('title: Tiny', 'title: Tiny\nowner: me'),
      'x',
    );
    const problems = problemsOf(() => parseQpi(document));
    expect(problems.join('\n')).toMatch(/baseline/);
    expect(problems.join('\n')).toMatch(/owner/);
  });

  it('rejects invalid YAML', () => {
    expect(problemsOf(() => parseYamlDocument('a: [1,', 'broken.yaml'))[0]).toMatch(/not valid YAML/);
  });
});

describe('parsePlan', () => {
  const tiny = parseQpi(parseYamlDocument(qpiYaml, 'tiny.yaml'));
  const qpis = new Map<string, QpiDefinition>([['tiny', tiny]]);

  it('accepts overrides of the metrics of its QPIs', () => {
    const plan = parsePlan(
      { name: 'p', title: 'P', qpis: ['tiny'], parameters: { sha256_throughput: { duration_ms: 5 } } },
      qpis,
    );
    expect(plan).toMatchObject({ runner: 'local', samples: 5, warmup: 1, formula: 'arithmetic' });
  });

  it('rejects an unknown QPI, an override of a metric it does not use and an invalid override', () => {
    const problems = problemsOf(() =>
      parsePlan(
        {
          name: 'p',
          title: 'P',
          qpis: ['tiny', 'gpu'],
          parameters: { float_matmul: { n: 8 }, sha256_throughput: { duration_ms: 0 } },
        },
        qpis,
      ),
    );
    expect(problems).toEqual([
      'qpis: unknown QPI "gpu"',
      'parameters: "float_matmul" is not a metric of the plan\'s QPIs',
      'QPI tiny: sections.0.metrics.0 (sha256_throughput): duration_ms: must be >= 1',
    ]);
  });

  it('rejects an unknown runner', () => {
    expect(
      problemsOf(() => parsePlan({ name: 'p', title: 'P', qpis: ['tiny'], runner: 'gpu' }, qpis))[0],
    ).toMatch(/runner/);
  });
});
