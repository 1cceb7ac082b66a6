// Trains the demo model: a logistic regression, by batch gradient descent on standardised features,
// over a synthetic data set drawn with a fixed seed (so `node train.mjs` reproduces model.json).
// The data: hours studied and hours slept before an exam, and whether the exam was passed.
import { writeFileSync } from 'node:fs';

let seed = 20261124;
const random = () => (seed = (seed * 1664525 + 1013904223) % 2 ** 32) / 2 ** 32;
const gaussian = () => Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
const sigmoid = (z) => 1 / (1 + Math.exp(-z));

const features = ['hours_studied', 'hours_slept'];
const rows = [];
for (let i = 0; i < 500; i++) {
  const studied = Math.max(0, 5 + 2.5 * gaussian());
  const slept = Math.max(0, 7 + 1.5 * gaussian());
  const passed = random() < sigmoid(1.3 * (studied - 5) + 0.9 * (slept - 7)) ? 1 : 0;
  rows.push({ x: [studied, slept], y: passed });
}

const mean = features.map((_, j) => rows.reduce((s, r) => s + r.x[j], 0) / rows.length);
const std = features.map((_, j) =>
  Math.sqrt(rows.reduce((s, r) => s + (r.x[j] - mean[j]) ** 2, 0) / rows.length),
);
const z = (x) => x.map((v, j) => (v - mean[j]) / std[j]);

let weights = features.map(() => 0);
let bias = 0;
for (let epoch = 0; epoch < 2000; epoch++) {
  const gradW = features.map(() => 0);
  let gradB = 0;
  for (const r of rows) {
    const xs = z(r.x);
    const error = sigmoid(bias + xs.reduce((s, v, j) => s + v * weights[j], 0)) - r.y;
    xs.forEach((v, j) => (gradW[j] += error * v));
    gradB += error;
  }
  weights = weights.map((w, j) => w - (0.5 * gradW[j]) / rows.length);
  bias -= (0.5 * gradB) / rows.length;
}

const correct = rows.filter(
  (r) => (sigmoid(bias + z(r.x).reduce((s, v, j) => s + v * weights[j], 0)) >= 0.5 ? 1 : 0) === r.y,
).length;
const model = {
  kind: 'logistic-regression',
  target: 'passed',
  features,
  mean,
  std,
  weights,
  bias,
  training: { rows: rows.length, accuracy: correct / rows.length, seed: 20261124 },
};
writeFileSync(new URL('model.json', import.meta.url), `${JSON.stringify(model, null, 2)}\n`);
console.log(`trained on ${rows.length} rows, accuracy ${(100 * model.training.accuracy).toFixed(1)}%`);
