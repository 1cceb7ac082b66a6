// CSV as RFC 4180 has it (quoted fields, doubled quotes, CRLF or LF, newlines inside quotes), and
// numbers as people write them in one. The same file is in the csv and ml modules (each module
// directory is self-contained); a test keeps the copies identical.
import { InputError } from './atrium.mjs';

/**
 * Parses CSV text into a header and records, each with the line it starts on. Blank lines are
 * skipped. Records may have a different number of fields than the header: see `checkShape`.
 */
export function parseCsv(text, fileName) {
  const records = [];
  let fields = [];
  let field = '';
  let quoted = false;
  let line = 1;
  let recordLine = 1;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  const endRecord = () => {
    fields.push(field);
    if (!(fields.length === 1 && fields[0] === '')) records.push({ line: recordLine, fields });
    fields = [];
    field = '';
  };
  for (; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else {
        if (c === '\n') line++;
        field += c;
      }
    } else if (c === '"' && field === '') quoted = true;
    else if (c === ',') {
      fields.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      endRecord();
      line++;
      recordLine = line;
    } else field += c;
  }
  if (quoted) throw new InputError(`${fileName}: a quoted field starting on line ${recordLine} never ends`);
  if (field !== '' || fields.length > 0) endRecord();
  const [header, ...rows] = records;
  if (!header) throw new InputError(`${fileName}: empty, a CSV file needs a header line`);
  const names = header.fields.map((name) => name.trim());
  const duplicate = names.find((name, j) => names.indexOf(name) !== j);
  if (duplicate !== undefined)
    throw new InputError(`${fileName}: column "${duplicate}" appears twice in the header`);
  return { header: names, rows };
}

/** Every row must have as many fields as the header (csv.clean drops those that do not). */
export function checkShape(table, fileName) {
  const bad = table.rows.find((row) => row.fields.length !== table.header.length);
  if (bad) {
    throw new InputError(
      `${fileName}: line ${bad.line} has ${bad.fields.length} fields, the header has ${table.header.length} (csv.clean drops such rows)`,
    );
  }
}

const quoteNeeded = /[",\r\n]|^\s|\s$/;
const formatField = (value) => {
  const text = String(value);
  return quoteNeeded.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
};

/** CSV text with LF line ends; fields quoted only when they must be. */
export function formatCsv(header, rows) {
  return [header, ...rows].map((fields) => fields.map(formatField).join(',')).join('\n') + '\n';
}

const numberPattern = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;

/** The number a field holds (surrounding spaces allowed), or null when it is empty or not a number. */
export function toNumber(field) {
  const text = field.trim();
  return numberPattern.test(text) ? Number(text) : null;
}

export const isMissing = (field) => field.trim() === '';

/** A column's index, or an InputError naming the columns there are. */
export function columnIndex(table, name, fileName) {
  const index = table.header.indexOf(name);
  if (index === -1) {
    throw new InputError(`${fileName}: no column "${name}" (the columns are ${table.header.join(', ')})`);
  }
  return index;
}
