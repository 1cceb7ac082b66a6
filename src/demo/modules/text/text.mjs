// The text module's functions: word-count, change-case, sentiment. Run as
// `node text.mjs <function>` in a work directory holding input.json (Atrium's execution contract).
import { InputError, readOptions, round, runFunction } from './atrium.mjs';

/** A word: letters and digits, with inner apostrophes (don't, l'eau). */
const wordPattern = /[\p{L}\p{N}]+(?:['’][\p{L}\p{N}]+)*/gu;
const words = (text) => text.match(wordPattern) ?? [];

/** Lines as `wc -l` would count them, plus a last line without a newline. */
function countLines(text) {
  if (text === '') return 0;
  const newlines = text.split('\n').length - 1;
  return text.endsWith('\n') ? newlines : newlines + 1;
}

/** Most frequent first; ties in alphabetical order, so the result never depends on input order. */
function topWords(counts, top) {
  return [...counts.entries()]
    .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0))
    .slice(0, top)
    .map(([word, count]) => ({ word, count }));
}

function wordCount({ options, files, read }) {
  const { top, case_sensitive } = readOptions(options, {
    top: { type: 'integer', default: 10, min: 0, max: 1000 },
    case_sensitive: { type: 'boolean', default: false },
  });
  const total = { lines: 0, words: 0, characters: 0 };
  const allCounts = new Map();
  const perFile = files.map((file) => {
    const text = read(file);
    const counts = new Map();
    for (const word of words(text)) {
      const key = case_sensitive ? word : word.toLowerCase();
      counts.set(key, (counts.get(key) ?? 0) + 1);
      allCounts.set(key, (allCounts.get(key) ?? 0) + 1);
    }
    const stats = {
      lines: countLines(text),
      words: [...counts.values()].reduce((sum, n) => sum + n, 0),
      characters: [...text].length,
    };
    for (const key of Object.keys(total)) total[key] += stats[key];
    return { name: file.name, ...stats, top_words: topWords(counts, top) };
  });
  const report = { files: perFile, total: { ...total, top_words: topWords(allCounts, top) } };
  return {
    files: [
      {
        name: 'word-count.json',
        content: `${JSON.stringify(report, null, 2)}\n`,
        media_type: 'application/json',
        ...(files.length === 1 ? { parent: files[0].name } : {}),
      },
    ],
    tags: total,
  };
}

const caseChanges = {
  upper: (text) => text.toUpperCase(),
  lower: (text) => text.toLowerCase(),
  title: (text) =>
    text.toLowerCase().replace(wordPattern, (word) => word.charAt(0).toUpperCase() + word.slice(1)),
};

function changeCase({ options, files, read }) {
  const { case: to } = readOptions(options, {
    case: { type: 'string', required: true, choices: Object.keys(caseChanges) },
  });
  return {
    files: files.map((file) => ({
      name: file.name,
      content: caseChanges[to](read(file)),
      media_type: file.media_type,
      parent: file.name,
    })),
    tags: { case: to },
  };
}

// A small hand-made lexicon, in the spirit of AFINN: words by weight, -3 (very negative) to +3.
const wordsByWeight = {
  3: 'amazing awesome best brilliant delighted excellent fantastic love outstanding perfect wonderful',
  2: 'better enjoy glad good great happy helpful like nice pleased success',
  1: 'calm clean easy fast fine ok useful',
  '-1': 'bug bugs difficult error errors hard problem problems slow',
  '-2': 'annoying bad boring broken confusing crash crashed disappointed fail failed poor sad unhappy ugly worse wrong',
  '-3': 'angry awful hate horrible terrible worst',
};
const lexicon = new Map(
  Object.entries(wordsByWeight).flatMap(([weight, list]) =>
    list.split(' ').map((word) => [word, Number(weight)]),
  ),
);
const negations = new Set([
  'not',
  'no',
  'never',
  "don't",
  'don’t',
  "isn't",
  "wasn't",
  "doesn't",
  "didn't",
  'hardly',
]);

/** A line's score: the sum of its words' weights, a weight flipped when one of the two words before negates it. */
function scoreLine(line) {
  const tokens = words(line).map((w) => w.toLowerCase());
  const positive = [];
  const negative = [];
  let score = 0;
  tokens.forEach((token, i) => {
    const weight = lexicon.get(token);
    if (weight === undefined) return;
    const negated = tokens.slice(Math.max(0, i - 2), i).some((t) => negations.has(t));
    const value = negated ? -weight : weight;
    score += value;
    (value > 0 ? positive : negative).push(negated ? `not ${token}` : token);
  });
  return { score, words: tokens.length, positive, negative };
}

const label = (score, band) => (score > band ? 'positive' : score < -band ? 'negative' : 'neutral');

function sentiment({ options, files, read }) {
  const { neutral_band, per_line } = readOptions(options, {
    neutral_band: { type: 'number', default: 0, min: 0 },
    per_line: { type: 'boolean', default: true },
  });
  let totalScore = 0;
  let totalWords = 0;
  const perFile = files.map((file) => {
    const lines = read(file)
      .split(/\r?\n/)
      .map((text, i) => ({ line: i + 1, ...scoreLine(text) }))
      .filter((line) => line.words > 0);
    const score = lines.reduce((sum, line) => sum + line.score, 0);
    const wordTotal = lines.reduce((sum, line) => sum + line.words, 0);
    totalScore += score;
    totalWords += wordTotal;
    const comparative = wordTotal === 0 ? 0 : round(score / wordTotal);
    return {
      name: file.name,
      score,
      comparative,
      label: label(comparative, neutral_band),
      ...(per_line
        ? {
            lines: lines.map((l) => ({
              ...l,
              comparative: round(l.score / l.words),
              label: label(l.score / l.words, neutral_band),
            })),
          }
        : {}),
    };
  });
  const comparative = totalWords === 0 ? 0 : round(totalScore / totalWords);
  const overall = {
    score: totalScore,
    words: totalWords,
    comparative,
    label: label(comparative, neutral_band),
  };
  if (files.length === 0) throw new InputError('no input files');
  return {
    files: [
      {
        name: 'sentiment.json',
        content: `${JSON.stringify({ files: perFile, overall }, null, 2)}\n`,
        media_type: 'application/json',
        ...(files.length === 1 ? { parent: files[0].name } : {}),
      },
    ],
    tags: { score: overall.score, comparative: overall.comparative, label: overall.label },
  };
}

runFunction({ 'word-count': wordCount, 'change-case': changeCase, sentiment });
