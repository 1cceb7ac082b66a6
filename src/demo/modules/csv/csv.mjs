// The csv module's functions: summary, filter-rows, clean. Run as `node csv.mjs <function>` in a
// work directory holding input.json (Atrium's execution contract).
import { InputError, readOptions, runFunction, stem } from './atrium.mjs';
import { checkShape, columnIndex, formatCsv, isMissing, parseCsv, toNumber } from './table.mjs';

function readTable(file, read) {
  return parseCsv(read(file), file.name);
}

function onlyInput(files) {
  if (files.length !== 1) throw new InputError(`takes one CSV file, got ${files.length}`);
  return files[0];
}

/** The p-quantile by linear interpolation between closest ranks (R's type 7, numpy's default). */
function quantile(sorted, p) {
  const h = (sorted.length - 1) * p;
  const low = Math.floor(h);
  const high = Math.min(low + 1, sorted.length - 1);
  return sorted[low] + (h - low) * (sorted[high] - sorted[low]);
}

function numericSummary(values) {
  const n = values.length;
  const mean = values.reduce((sum, v) => sum + v, 0) / n;
  const variance = n > 1 ? values.reduce((sum, v) => sum + (v - mean) ** 2, 0) / (n - 1) : null;
  const sorted = [...values].sort((a, b) => a - b);
  return {
    mean,
    std: variance === null ? null : Math.sqrt(variance),
    min: sorted[0],
    q1: quantile(sorted, 0.25),
    median: quantile(sorted, 0.5),
    q3: quantile(sorted, 0.75),
    max: sorted[n - 1],
  };
}

function textSummary(values, top) {
  const counts = new Map();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  const ranked = [...counts.entries()].sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0));
  return { distinct: counts.size, top: ranked.slice(0, top).map(([value, count]) => ({ value, count })) };
}

function summary({ options, files, read }) {
  const { columns, top } = readOptions(options, {
    columns: { type: 'string[]', default: [] },
    top: { type: 'integer', default: 5, min: 0, max: 100 },
  });
  const file = onlyInput(files);
  const table = readTable(file, read);
  checkShape(table, file.name);
  const selected = columns.length > 0 ? columns : table.header;
  const report = selected.map((name) => {
    const index = columnIndex(table, name, file.name);
    const present = table.rows.map((row) => row.fields[index].trim()).filter((v) => v !== '');
    const numbers = present.map(toNumber);
    const common = { name, count: present.length, missing: table.rows.length - present.length };
    if (present.length > 0 && numbers.every((v) => v !== null)) {
      return { ...common, type: 'numeric', ...numericSummary(numbers) };
    }
    return { ...common, type: 'text', ...textSummary(present, top) };
  });
  return {
    files: [
      {
        name: `${stem(file.name)}-summary.json`,
        content: `${JSON.stringify({ file: file.name, rows: table.rows.length, columns: report }, null, 2)}\n`,
        media_type: 'application/json',
        parent: file.name,
      },
    ],
    tags: { rows: table.rows.length, columns: report.length },
  };
}

const numericOperators = {
  lt: (a, b) => a < b,
  le: (a, b) => a <= b,
  gt: (a, b) => a > b,
  ge: (a, b) => a >= b,
};

/** A predicate over a field: numeric comparisons when both sides are numbers, text otherwise. */
function rowPredicate(operator, value) {
  if (operator === 'empty') return (field) => isMissing(field);
  if (operator === 'not-empty') return (field) => !isMissing(field);
  if (value === undefined) throw new InputError(`option "value" is required with operator "${operator}"`);
  const text = String(value);
  const number = typeof value === 'number' ? value : toNumber(text);
  if (operator === 'contains') return (field) => field.includes(text);
  if (operator === 'eq' || operator === 'ne') {
    const equal = (field) => {
      const n = toNumber(field);
      return number !== null && n !== null ? n === number : field.trim() === text.trim();
    };
    return operator === 'eq' ? equal : (field) => !equal(field);
  }
  if (number === null)
    throw new InputError(`operator "${operator}" compares numbers, and "${text}" is not one`);
  const compare = numericOperators[operator];
  return (field) => {
    const n = toNumber(field);
    return n !== null && compare(n, number);
  };
}

function filterRows({ options, files, read }) {
  const { column, operator, value } = readOptions(options, {
    column: { type: 'string', required: true },
    operator: {
      type: 'string',
      default: 'eq',
      choices: ['eq', 'ne', 'lt', 'le', 'gt', 'ge', 'contains', 'empty', 'not-empty'],
    },
    value: { type: 'scalar' },
  });
  const file = onlyInput(files);
  const table = readTable(file, read);
  checkShape(table, file.name);
  const index = columnIndex(table, column, file.name);
  const keep = rowPredicate(operator, value);
  const rows = table.rows.filter((row) => keep(row.fields[index])).map((row) => row.fields);
  return {
    files: [
      {
        name: `${stem(file.name)}-filtered.csv`,
        content: formatCsv(table.header, rows),
        media_type: 'text/csv',
        parent: file.name,
      },
    ],
    tags: { rows_in: table.rows.length, rows_out: rows.length },
  };
}

/** A column is numeric when more than half of its non-empty values are numbers (the rest are errors). */
function numericColumns(table) {
  return table.header.filter((_, j) => {
    const present = table.rows
      .filter((row) => row.fields.length === table.header.length && !isMissing(row.fields[j]))
      .map((row) => row.fields[j]);
    const numbers = present.filter((v) => toNumber(v) !== null).length;
    return present.length > 0 && numbers * 2 > present.length;
  });
}

function clean({ options, files, read }) {
  const { columns, trim, drop_duplicates } = readOptions(options, {
    columns: { type: 'string[]', default: [] },
    trim: { type: 'boolean', default: true },
    drop_duplicates: { type: 'boolean', default: true },
  });
  const file = onlyInput(files);
  const table = readTable(file, read);
  const checked = (columns.length > 0 ? columns : numericColumns(table)).map((name) =>
    columnIndex(table, name, file.name),
  );
  const dropped = { malformed: 0, missing: 0, non_numeric: 0, duplicates: 0 };
  const seen = new Set();
  const kept = [];
  for (const row of table.rows) {
    const fields = trim ? row.fields.map((f) => f.trim()) : row.fields;
    if (fields.length !== table.header.length) dropped.malformed++;
    else if (checked.some((j) => isMissing(fields[j]))) dropped.missing++;
    else if (checked.some((j) => toNumber(fields[j]) === null)) dropped.non_numeric++;
    else {
      const key = JSON.stringify(fields);
      if (drop_duplicates && seen.has(key)) dropped.duplicates++;
      else {
        seen.add(key);
        kept.push(fields);
      }
    }
  }
  const tags = {
    rows_in: table.rows.length,
    rows_out: kept.length,
    rows_dropped: table.rows.length - kept.length,
    ...Object.fromEntries(Object.entries(dropped).map(([why, n]) => [`dropped_${why}`, n])),
    checked_columns: checked.map((j) => table.header[j]).join(','),
  };
  console.log(`kept ${kept.length} of ${table.rows.length} rows (${JSON.stringify(dropped)})`);
  return {
    files: [
      {
        name: `${stem(file.name)}-clean.csv`,
        content: formatCsv(table.header, kept),
        media_type: 'text/csv',
        tags: { rows: kept.length },
        parent: file.name,
      },
    ],
    tags,
  };
}

runFunction({ summary, 'filter-rows': filterRows, clean });
