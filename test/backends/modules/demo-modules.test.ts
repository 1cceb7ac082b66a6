// Every demo function, run for real as a child process through the execution contract.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { demoModulesPath } from '../../../src/paths.js';
import { type FunctionInput, type FunctionRun, chained, demoFunction, runFunction } from './run-function.js';

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'atrium-demo-modules-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const run = async (
  module: string,
  fn: string,
  inputs: FunctionInput[],
  options: Record<string, unknown> = {},
) => runFunction(root, await demoFunction(module, fn), inputs, options);

/** The content of an output file of a successful run. */
function outputText(result: FunctionRun, name: string): string {
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  const file = result.output?.files.find((f) => f.name === name);
  if (!file) throw new Error(`no output ${name} in ${JSON.stringify(result.output)}`);
  return readFileSync(file.path, 'utf8');
}

const outputJson = (result: FunctionRun, name: string) =>
  JSON.parse(outputText(result, name)) as Record<string, unknown>;

/** Rows of a CSV without quoted fields (what the demo functions write for plain data). */
const csvRows = (text: string) =>
  text
    .trimEnd()
    .split('\n')
    .map((line) => line.split(','));

const text = (name: string, content: string): FunctionInput => ({ name, media_type: 'text/plain', content });
const csv = (name: string, content: string): FunctionInput => ({ name, media_type: 'text/csv', content });

describe('the demo module directories', () => {
  it.each([
    ['atrium.mjs', ['text', 'csv', 'ml']],
    ['table.mjs', ['csv', 'ml']],
  ])('share identical copies of %s', (file, modules) => {
    const [first, ...others] = modules.map((m) => readFileSync(join(demoModulesPath, m, file), 'utf8'));
    for (const other of others) expect(other).toBe(first);
  });
});

describe('text', () => {
  const counts = { alpha: 5, beta: 3, gamma: 3, delta: 1 };
  /** Three words a line, in a fixed shuffle, one "Alpha" capitalised, and a smiley that is no word. */
  function document(): { content: string; lines: number } {
    const words = Object.entries(counts).flatMap(([word, n]) => Array<string>(n).fill(word));
    words.sort((a, b) => ((a.length * 7 + a.charCodeAt(1)) % 5) - ((b.length * 7 + b.charCodeAt(1)) % 5));
    words.push('Alpha', 'café', '🙂');
    const lines: string[] = [];
    for (let i = 0; i < words.length; i += 3) lines.push(words.slice(i, i + 3).join(' '));
    return { content: `${lines.join('\n')}\n`, lines: lines.length };
  }

  it('word-count counts lines, words, characters and the most frequent words, per file and in all', async () => {
    const one = document();
    const two = 'one line without newline';
    const result = await run('text', 'word-count', [text('one.txt', one.content), text('two.txt', two)], {
      top: 3,
    });
    const report = outputJson(result, 'word-count.json') as {
      files: { name: string; lines: number; words: number; characters: number; top_words: unknown[] }[];
      total: Record<string, unknown>;
    };
    const wordsInOne = Object.values(counts).reduce((a, b) => a + b, 0) + 2;
    expect(report.files[0]).toEqual({
      name: 'one.txt',
      lines: one.lines,
      words: wordsInOne,
      characters: Array.from(one.content).length,
      top_words: [
        { word: 'alpha', count: counts.alpha + 1 },
        { word: 'beta', count: 3 },
        { word: 'gamma', count: 3 },
      ],
    });
    expect(report.files[1]).toMatchObject({ lines: 1, words: 4, characters: two.length });
    expect(report.total).toMatchObject({
      lines: one.lines + 1,
      words: wordsInOne + 4,
      characters: Array.from(one.content).length + two.length,
    });
    expect(result.output?.tags).toEqual({
      lines: one.lines + 1,
      words: wordsInOne + 4,
      characters: report.total.characters,
    });
    expect(result.output?.files[0]?.media_type).toBe('application/json');
  });

  it('word-count tells "Alpha" from "alpha" when asked', async () => {
    const result = await run('text', 'word-count', [text('a.txt', 'Alpha alpha alpha')], {
      case_sensitive: true,
    });
    expect((outputJson(result, 'word-count.json').total as { top_words: unknown }).top_words).toEqual([
      { word: 'alpha', count: 2 },
      { word: 'Alpha', count: 1 },
    ]);
  });

  it.each([
    ['upper', "HELLO WORLD, IT'S FINE.\nSECOND LINE\n"],
    ['lower', "hello world, it's fine.\nsecond line\n"],
    ['title', "Hello World, It's Fine.\nSecond Line\n"],
  ])('change-case %s rewrites each file under its own name', async (to, expected) => {
    const original = "hello wORLD, it's fine.\nSecond line\n";
    const result = await run(
      'text',
      'change-case',
      [{ name: 'a.md', media_type: 'text/markdown', content: original }, text('b.txt', 'x')],
      { case: to },
    );
    expect(outputText(result, 'a.md')).toBe(expected);
    expect(result.output?.files.map((f) => [f.name, f.parent, f.media_type])).toEqual([
      ['a.md', 'a.md', 'text/markdown'],
      ['b.txt', 'b.txt', 'text/plain'],
    ]);
  });

  it('sentiment scores lines by the lexicon, negations counting the other way, and sums them', async () => {
    const lines = [
      'I love this great tool',
      'it is not good',
      'the weather is grey',
      'terrible crash and awful bugs',
      'good',
    ];
    const result = await run('text', 'sentiment', [text('review.txt', `${lines.join('\n')}\n\n`)]);
    const report = outputJson(result, 'sentiment.json') as {
      files: {
        score: number;
        label: string;
        lines: { line: number; score: number; words: number; label: string }[];
      }[];
      overall: { score: number; words: number; label: string; comparative: number };
    };
    const scored = report.files[0]?.lines ?? [];
    expect(scored.map((l) => l.line)).toEqual([1, 2, 3, 4, 5]);
    expect(scored.map((l) => l.label)).toEqual(['positive', 'negative', 'neutral', 'negative', 'positive']);
    const [loved, notGood, neutral, awful, good] = scored.map((l) => l.score);
    expect(notGood).toBe(-(good ?? 0));
    expect(neutral).toBe(0);
    expect(loved).toBeGreaterThan(good ?? 0);
    expect(awful).toBeLessThan(notGood ?? 0);
    const sum = scored.reduce((s, l) => s + l.score, 0);
    const words = lines.join(' ').split(' ').length;
    expect(report.overall).toMatchObject({
      score: sum,
      words,
      label: sum > 0 ? 'positive' : sum < 0 ? 'negative' : 'neutral',
    });
    expect(report.overall.comparative).toBeCloseTo(sum / words, 5);
    expect(result.output?.tags).toMatchObject({ score: sum });
  });

  it('refuses bad options with a message on stderr and exit code 2, even when Atrium did not check them', async () => {
    const result = await runFunction(
      root,
      await demoFunction('text', 'word-count'),
      [text('a.txt', 'x')],
      { top: 'x' },
      false,
    );
    expect(result.code).toBe(2);
    expect(result.stderr).toBe('error: option "top" must be of type integer\n');
    expect(result.output).toBeNull();
  });
});

/** A deterministic table: an id, two numeric columns (one with gaps), a category. */
function measurements(): { header: string[]; rows: string[][] } {
  const rows: string[][] = [];
  for (let i = 1; i <= 41; i++) {
    const x = ((i * 37) % 23) + i / 8;
    const y = i % 6 === 0 ? '' : String((i * i) % 17);
    rows.push([
      `r${i}`,
      x.toFixed(3),
      y,
      ['red', 'green', 'blue'][i % 3 === 0 ? 0 : i % 5 === 0 ? 1 : 2] as string,
    ]);
  }
  return { header: ['id', 'x', 'y', 'colour'], rows };
}
const toCsv = (t: { header: string[]; rows: string[][] }) =>
  [t.header, ...t.rows].map((r) => r.join(',')).join('\n') + '\n';

/** Statistics recomputed here, from the input, to check the module's. */
function expectedStatistics(values: number[]) {
  const sorted = [...values].sort((a, b) => a - b);
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const at = (p: number) => {
    const position = p * (n - 1);
    const below = sorted[Math.floor(position)] as number;
    const above = sorted[Math.ceil(position)] as number;
    return below + (above - below) * (position - Math.floor(position));
  };
  return {
    count: n,
    mean,
    std: Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1)),
    min: sorted[0],
    q1: at(0.25),
    median: at(0.5),
    q3: at(0.75),
    max: sorted[n - 1],
  };
}

describe('csv', () => {
  const table = measurements();

  it('summary computes the statistics of numeric columns and counts the values of the others', async () => {
    const result = await run('csv', 'summary', [csv('m.csv', toCsv(table))]);
    const report = outputJson(result, 'm-summary.json') as {
      rows: number;
      columns: Record<string, unknown>[];
    };
    expect(report.rows).toBe(table.rows.length);
    const column = (name: string) => report.columns.find((c) => c.name === name) as Record<string, number>;
    for (const [name, index] of [
      ['x', 1],
      ['y', 2],
    ] as const) {
      const present = table.rows.map((r) => r[index] as string).filter((v) => v !== '');
      const expected = expectedStatistics(present.map(Number));
      expect(column(name).type).toBe('numeric');
      expect(column(name).missing).toBe(table.rows.length - present.length);
      for (const [key, value] of Object.entries(expected))
        expect(column(name)[key]).toBeCloseTo(value as number, 9);
    }
    const colours = table.rows.map((r) => r[3]);
    expect(column('colour')).toMatchObject({
      type: 'text',
      count: colours.length,
      distinct: new Set(colours).size,
    });
    expect(column('id')).toMatchObject({ type: 'text', distinct: table.rows.length });
    expect(result.output?.files[0]?.parent).toBe('m.csv');
  });

  it('summary reports on the selected columns only', async () => {
    const result = await run('csv', 'summary', [csv('m.csv', toCsv(table))], { columns: ['colour'], top: 1 });
    const report = outputJson(result, 'm-summary.json') as { columns: { name: string; top: unknown[] }[] };
    expect(report.columns.map((c) => c.name)).toEqual(['colour']);
    expect(report.columns[0]?.top).toHaveLength(1);
  });

  it('summary refuses a row with a wrong number of fields, saying where', async () => {
    const result = await run('csv', 'summary', [csv('bad.csv', 'a,b\n1,2\n3\n')]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/bad\.csv: line 3 has 1 fields, the header has 2/);
  });

  it.each([
    ['gt', 10, (r: string[]) => Number(r[1]) > 10],
    ['le', '5.5', (r: string[]) => Number(r[1]) <= 5.5],
    ['eq', 'red', (r: string[]) => r[3] === 'red'],
    ['ne', 4, (r: string[]) => r[2] !== '4'],
    ['contains', 'ee', (r: string[]) => (r[3] as string).includes('ee')],
    ['empty', undefined, (r: string[]) => r[2] === ''],
  ] as const)('filter-rows %s %j keeps exactly the matching rows', async (operator, value, keep) => {
    const column = { gt: 'x', le: 'x', eq: 'colour', ne: 'y', contains: 'colour', empty: 'y' }[operator];
    const options = value === undefined ? { column, operator } : { column, operator, value };
    const result = await run('csv', 'filter-rows', [csv('m.csv', toCsv(table))], options);
    const expected = table.rows.filter((r) => keep(r));
    expect(expected.length).toBeGreaterThan(0);
    expect(expected.length).toBeLessThan(table.rows.length);
    expect(csvRows(outputText(result, 'm-filtered.csv'))).toEqual([table.header, ...expected]);
    expect(result.output?.tags).toEqual({ rows_in: table.rows.length, rows_out: expected.length });
  });

  it('filter-rows refuses an unknown column and a numeric comparison with text', async () => {
    const unknown = await run('csv', 'filter-rows', [csv('m.csv', toCsv(table))], { column: 'z', value: 1 });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/no column "z" \(the columns are id, x, y, colour\)/);
    const text = await run('csv', 'filter-rows', [csv('m.csv', toCsv(table))], {
      column: 'x',
      operator: 'gt',
      value: 'big',
    });
    expect(text.code).toBe(2);
    expect(text.stderr).toMatch(/"big" is not one/);
  });

  const messy = [
    'name,a,b',
    ' p ,1,2', // kept, trimmed
    'q,,3', // missing a
    'r,x,4', // a is not a number
    's,5', // too few fields
    'p,1, 2', // the first row again, once trimmed
    '"t, the second",6,7', // kept
    'u,8,', // missing b
  ].join('\n');

  it('clean trims, then drops malformed, missing, non-numeric and repeated rows, and counts them', async () => {
    const result = await run('csv', 'clean', [csv('messy.csv', messy)]);
    expect(outputText(result, 'messy-clean.csv')).toBe('name,a,b\np,1,2\n"t, the second",6,7\n');
    expect(result.output?.tags).toEqual({
      rows_in: 7,
      rows_out: 2,
      rows_dropped: 5,
      dropped_malformed: 1,
      dropped_missing: 2,
      dropped_non_numeric: 1,
      dropped_duplicates: 1,
      checked_columns: 'a,b',
    });
    expect(result.output?.files[0]).toMatchObject({ parent: 'messy.csv', media_type: 'text/csv' });
  });

  it('clean checks only the selected columns, and keeps repeats when asked', async () => {
    const result = await run('csv', 'clean', [csv('messy.csv', messy)], {
      columns: ['b'],
      drop_duplicates: false,
    });
    expect(outputText(result, 'messy-clean.csv')).toBe(
      'name,a,b\np,1,2\nq,,3\nr,x,4\np,1,2\n"t, the second",6,7\n',
    );
    expect(result.output?.tags).toMatchObject({
      dropped_missing: 1,
      dropped_duplicates: 0,
      checked_columns: 'b',
    });
  });
});

/** y = 3 + 2·a − 0.5·b exactly, over 30 rows of spread-out a and b. */
function linearData(): string {
  const rows = ['a,b,y'];
  for (let i = 0; i < 30; i++) {
    const a = (i * 7) % 11;
    const b = (i * 5) % 13;
    rows.push(`${a},${b},${3 + 2 * a - 0.5 * b}`);
  }
  return `${rows.join('\n')}\n`;
}

describe('ml', () => {
  it.each([
    ['normal-equations', 1e-9],
    ['gradient-descent', 1e-3],
  ])('train fits a linear regression by %s', async (method, tolerance) => {
    const options = { target: 'y', method, iterations: 5000 };
    const result = await run('ml', 'train', [csv('lin.csv', linearData())], options);
    const model = outputJson(result, 'model.json') as {
      kind: string;
      features: string[];
      coefficients: Record<string, number>;
      training: { metrics: Record<string, number> };
    };
    expect(model.kind).toBe('linear-regression');
    expect(model.features).toEqual(['a', 'b']);
    expect(Math.abs((model.coefficients.intercept as number) - 3)).toBeLessThan(tolerance * 10);
    expect(Math.abs((model.coefficients.a as number) - 2)).toBeLessThan(tolerance);
    expect(Math.abs((model.coefficients.b as number) + 0.5)).toBeLessThan(tolerance);
    expect(model.training.metrics.r2).toBeGreaterThan(0.999999);
    expect(result.output?.tags).toMatchObject({
      model: 'linear-regression',
      rows: 30,
      r2: model.training.metrics.r2,
    });
    // The CSV passes through for a next predict task.
    expect(outputText(result, 'lin.csv')).toBe(linearData());
  });

  it('predict applies a linear model to new rows, leaving a row without features unpredicted', async () => {
    const trained = await run('ml', 'train', [csv('lin.csv', linearData())], {
      target: 'y',
      features: ['a', 'b'],
    });
    const model = trained.output?.files.find((f) => f.name === 'model.json');
    const fresh = 'id,a,b\nn1,20,1\nn2,-4,10\nn3,,2\n';
    const result = await run('ml', 'predict', [
      csv('fresh.csv', fresh),
      { name: 'model.json', media_type: 'application/json', path: model?.path as string },
    ]);
    const rows = csvRows(outputText(result, 'predictions.csv'));
    expect(rows[0]).toEqual(['id', 'a', 'b', 'prediction']);
    expect(Number(rows[1]?.[3])).toBeCloseTo(3 + 40 - 0.5, 5);
    expect(Number(rows[2]?.[3])).toBeCloseTo(3 - 8 - 5, 5);
    expect(rows[3]).toEqual(['n3', '', '2', '']);
    expect(result.output?.tags).toEqual({ rows: 3, rows_unpredicted: 1 });
    expect(result.output?.files[0]?.parent).toBe('fresh.csv');
  });

  it.each([
    [{ target: 'y' }, 'a,b,y\n1,2,3\n2,3,high\n', /line 3: column "y" holds "high", not a number/],
    [{ target: 'y', model: 'logistic' }, 'a,y\n1,0\n2,2\n', /target is 0 or 1, not 2/],
    [
      { target: 'y', model: 'logistic', method: 'normal-equations' },
      'a,y\n1,0\n2,1\n',
      /no normal equations/,
    ],
    [{ target: 'z' }, 'a,y\n1,0\n2,1\n', /no column "z"/],
    [{ target: 'y' }, 'a,b,y\n1,2,3\n2,4,5\n3,6,7\n', /collinear/],
  ])('train refuses %j on unsuitable data, saying why', async (options, data, message) => {
    const result = await run('ml', 'train', [csv('d.csv', data)], options);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
  });

  it('predict needs a model and a CSV', async () => {
    const result = await run('ml', 'predict', [csv('a.csv', 'a\n1\n'), csv('b.csv', 'a\n1\n')]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/takes two files, a model \(application\/json\) and a CSV/);
    const notModel = await run('ml', 'predict', [
      csv('a.csv', 'a\n1\n'),
      { name: 'm.json', media_type: 'application/json', content: '{"kind": "forest"}' },
    ]);
    expect(notModel.code).toBe(2);
    expect(notModel.stderr).toMatch(/m\.json: not a model written by ml\.train/);
  });

  it('train is deterministic: the same input gives the same model, byte for byte', async () => {
    const data = csv('d.csv', 'a,y\n1,0\n2,0\n3,1\n4,1\n2.5,1\n2.6,0\n');
    const options = { target: 'y', model: 'logistic', iterations: 300 };
    const [first, second] = [
      await run('ml', 'train', [data], options),
      await run('ml', 'train', [data], options),
    ];
    expect(outputText(first, 'model.json')).toBe(outputText(second, 'model.json'));
  });
});

describe('the demo pipeline csv.clean → ml.train → ml.predict', () => {
  it('predicts who passes from students.csv, one prediction per clean row', async () => {
    const students = readFileSync(join(demoModulesPath, 'ml', 'samples', 'students.csv'), 'utf8');
    const cleaned = await run('csv', 'clean', [csv('students.csv', students)]);
    expect(cleaned.code).toBe(0);
    const rowsIn = students.trimEnd().split('\n').length - 1;
    expect(cleaned.output?.tags).toMatchObject({ rows_in: rowsIn });
    expect(Number(cleaned.output?.tags.rows_dropped)).toBeGreaterThanOrEqual(5);

    const trained = await run('ml', 'train', chained(cleaned), {
      target: 'passed',
      features: ['hours_studied', 'hours_slept'],
      model: 'logistic',
    });
    expect(trained.code).toBe(0);
    expect(trained.output?.files.map((f) => [f.name, f.media_type])).toEqual([
      ['model.json', 'application/json'],
      ['students-clean.csv', 'text/csv'],
    ]);
    const accuracy = Number(trained.output?.tags.accuracy);
    expect(accuracy).toBeGreaterThan(0.8);

    const predicted = await run('ml', 'predict', chained(trained));
    const [header, ...rows] = csvRows(outputText(predicted, 'predictions.csv'));
    const cleanRows = csvRows(outputText(cleaned, 'students-clean.csv'));
    expect(header).toEqual([...(cleanRows[0] as string[]), 'prediction', 'probability']);
    expect(rows).toHaveLength(Number(cleaned.output?.tags.rows_out));
    expect(rows.map((r) => r.slice(0, 4))).toEqual(cleanRows.slice(1));
    for (const row of rows) {
      const probability = Number(row[5]);
      expect(probability).toBeGreaterThanOrEqual(0);
      expect(probability).toBeLessThanOrEqual(1);
      expect(row[4]).toBe(probability >= 0.5 ? '1' : '0');
    }
    // The accuracy recomputed from the predictions is the one train reported.
    const correct = rows.filter((r) => r[4] === r[3]).length;
    expect(correct / rows.length).toBeCloseTo(accuracy, 5);
    expect(predicted.output?.tags).toMatchObject({ rows: rows.length, rows_unpredicted: 0 });
  });
});
