// Writes students.csv: hours studied and slept before an exam, and whether it was passed, for 104
// students drawn with a fixed seed, then spoiled on purpose as real data is (missing and non-numeric
// values, a row cut short, duplicated rows, stray spaces) for csv.clean to repair.
// `node students.mjs` rewrites the same file byte for byte.
import { writeFileSync } from 'node:fs';

let seed = 20260517;
const random = () => (seed = (seed * 1664525 + 1013904223) % 2 ** 32) / 2 ** 32;
const gaussian = () => Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
const sigmoid = (z) => 1 / (1 + Math.exp(-z));

const rows = [];
for (let i = 1; i <= 104; i++) {
  const studied = Math.max(0, 5 + 2.5 * gaussian());
  const slept = Math.min(11, Math.max(3, 7 + 1.5 * gaussian()));
  const passed = random() < sigmoid(2 * (studied - 5) + 1.2 * (slept - 7)) ? 1 : 0;
  rows.push([`s${String(i).padStart(3, '0')}`, studied.toFixed(1), slept.toFixed(1), String(passed)]);
}

const spoil = (n, column, value) => (rows[n - 1][column] = value);
spoil(7, 2, '');
spoil(15, 1, 'n/a');
spoil(23, 2, 'abc');
spoil(31, 3, '');
spoil(88, 1, '');
rows[69] = rows[69].slice(0, 3);
for (const n of [12, 45, 90]) rows[n - 1][1] = ` ${rows[n - 1][1]} `;
const lines = rows.map((fields) => fields.map((f) => (/^\s|\s$/.test(f) ? `"${f}"` : f)).join(','));
// Two rows entered twice.
lines.splice(40, 0, lines[39]);
lines.splice(60, 0, lines[58]);

writeFileSync(
  new URL('./students.csv', import.meta.url),
  ['student,hours_studied,hours_slept,passed', ...lines].join('\n') + '\n',
);
