// The ml module's functions: train (a linear or logistic regression over a CSV) and predict (with
// the model train wrote). Run as `node ml.mjs <function>` in a work directory holding input.json
// (Atrium's execution contract). Plain arithmetic, no randomness: the same input gives the same model.
import { InputError, readOptions, round, runFunction } from './atrium.mjs';
import { checkShape, columnIndex, formatCsv, parseCsv, toNumber } from './table.mjs';

const modelFormat = 'atrium-demo-model/1';
const sigmoid = (z) => 1 / (1 + Math.exp(-z));
const dot = (a, b) => a.reduce((sum, v, j) => sum + v * b[j], 0);
const essence = (mediaType) => (mediaType ?? '').split(';')[0].trim().toLowerCase();

/** Every value of the columns as a number, or an InputError pointing at the first that is not. */
function numericMatrix(table, names, fileName) {
  const indexes = names.map((name) => columnIndex(table, name, fileName));
  return table.rows.map((row) =>
    indexes.map((j, k) => {
      const value = toNumber(row.fields[j]);
      if (value === null) {
        throw new InputError(
          `${fileName}: line ${row.line}: column "${names[k]}" holds "${row.fields[j]}", not a number (csv.clean drops such rows)`,
        );
      }
      return value;
    }),
  );
}

/** Numeric columns: those whose every value is a number. */
function numericColumnNames(table) {
  return table.header.filter((_, j) => table.rows.every((row) => toNumber(row.fields[j]) !== null));
}

/** Mean and population standard deviation per column; a constant column keeps std 1 (left unscaled). */
function standardization(matrix) {
  const n = matrix.length;
  const mean = matrix[0].map((_, j) => matrix.reduce((sum, row) => sum + row[j], 0) / n);
  const std = mean.map((m, j) => Math.sqrt(matrix.reduce((sum, row) => sum + (row[j] - m) ** 2, 0) / n) || 1);
  return { mean, std };
}

const standardize = (x, { mean, std }) => x.map((v, j) => (v - mean[j]) / std[j]);

/** Solves A·x = b by Gaussian elimination with partial pivoting; null when A is (nearly) singular. */
function solve(a, b) {
  const n = b.length;
  const m = a.map((row, i) => [...row, b[i]]);
  for (let col = 0; col < n; col++) {
    let pivot = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(m[r][col]) > Math.abs(m[pivot][col])) pivot = r;
    if (Math.abs(m[pivot][col]) < 1e-10) return null;
    [m[col], m[pivot]] = [m[pivot], m[col]];
    for (let r = 0; r < n; r++) {
      if (r === col) continue;
      const factor = m[r][col] / m[col][col];
      for (let c = col; c <= n; c++) m[r][c] -= factor * m[col][c];
    }
  }
  return m.map((row, i) => row[n] / row[i]);
}

/** Least squares with an L2 penalty on the weights (not the intercept): (XᵀX + λ·n·D)β = Xᵀy. */
function normalEquations(z, y, l2) {
  const rows = z.map((x) => [1, ...x]);
  const p = rows[0].length;
  const xtx = Array.from({ length: p }, (_, i) =>
    Array.from(
      { length: p },
      (_, j) => rows.reduce((sum, r) => sum + r[i] * r[j], 0) + (i === j && i > 0 ? l2 * z.length : 0),
    ),
  );
  const xty = Array.from({ length: p }, (_, i) => rows.reduce((sum, r, k) => sum + r[i] * y[k], 0));
  const beta = solve(xtx, xty);
  if (beta === null) {
    throw new InputError('the features are collinear or constant: drop one, or set l2 above 0');
  }
  return { intercept: beta[0], weights: beta.slice(1) };
}

/** Batch gradient descent on the mean loss (squared error, or log-loss through the sigmoid). */
function gradientDescent(z, y, { logistic, learningRate, iterations, l2 }) {
  const n = z.length;
  let weights = z[0].map(() => 0);
  let intercept = 0;
  for (let step = 0; step < iterations; step++) {
    const gradient = weights.map(() => 0);
    let gradientIntercept = 0;
    for (let k = 0; k < n; k++) {
      const linear = intercept + dot(weights, z[k]);
      const error = (logistic ? sigmoid(linear) : linear) - y[k];
      z[k].forEach((v, j) => (gradient[j] += error * v));
      gradientIntercept += error;
    }
    weights = weights.map((w, j) => w - learningRate * (gradient[j] / n + l2 * w));
    intercept -= (learningRate * gradientIntercept) / n;
    if (!Number.isFinite(intercept)) throw new InputError('gradient descent diverged: lower learning_rate');
  }
  return { intercept, weights };
}

function predictOne(model, x) {
  const linear = model.intercept + dot(model.weights, standardize(x, model.standardization));
  return model.kind === 'logistic-regression' ? sigmoid(linear) : linear;
}

function regressionMetrics(predicted, y) {
  const n = y.length;
  const mean = y.reduce((s, v) => s + v, 0) / n;
  const residual = y.reduce((s, v, k) => s + (v - predicted[k]) ** 2, 0);
  const total = y.reduce((s, v) => s + (v - mean) ** 2, 0);
  return {
    rmse: Math.sqrt(residual / n),
    mae: y.reduce((s, v, k) => s + Math.abs(v - predicted[k]), 0) / n,
    r2: total === 0 ? 0 : 1 - residual / total,
  };
}

function classificationMetrics(probabilities, y, threshold) {
  const n = y.length;
  const clipped = (p) => Math.min(Math.max(p, 1e-15), 1 - 1e-15);
  return {
    accuracy: y.filter((v, k) => (probabilities[k] >= threshold ? 1 : 0) === v).length / n,
    log_loss:
      -y.reduce(
        (s, v, k) =>
          s + v * Math.log(clipped(probabilities[k])) + (1 - v) * Math.log(1 - clipped(probabilities[k])),
        0,
      ) / n,
  };
}

const roundAll = (metrics) => Object.fromEntries(Object.entries(metrics).map(([k, v]) => [k, round(v)]));

function train({ options, files, read }) {
  const o = readOptions(options, {
    target: { type: 'string', required: true },
    features: { type: 'string[]', default: [] },
    model: { type: 'string', default: 'linear', choices: ['linear', 'logistic'] },
    method: { type: 'string', default: 'auto', choices: ['auto', 'normal-equations', 'gradient-descent'] },
    learning_rate: { type: 'number', default: 0.1, min: 1e-9, max: 10 },
    iterations: { type: 'integer', default: 2000, min: 1, max: 100000 },
    l2: { type: 'number', default: 0, min: 0 },
  });
  const logistic = o.model === 'logistic';
  const method = o.method === 'auto' ? (logistic ? 'gradient-descent' : 'normal-equations') : o.method;
  if (logistic && method === 'normal-equations') {
    throw new InputError('a logistic regression has no normal equations: use method gradient-descent');
  }
  const csvFiles = files.filter((f) => essence(f.media_type) === 'text/csv' || f.name.endsWith('.csv'));
  if (files.length !== 1 || csvFiles.length !== 1)
    throw new InputError(`takes one CSV file, got ${files.length} file(s)`);
  const file = csvFiles[0];
  const table = parseCsv(read(file), file.name);
  checkShape(table, file.name);
  if (table.rows.length < 2) throw new InputError(`${file.name}: needs at least 2 rows to train on`);
  columnIndex(table, o.target, file.name);
  const y = numericMatrix(table, [o.target], file.name).map(([v]) => v);
  if (logistic) {
    const bad = y.findIndex((v) => v !== 0 && v !== 1);
    if (bad !== -1)
      throw new InputError(
        `${file.name}: line ${table.rows[bad].line}: a logistic regression's target is 0 or 1, not ${y[bad]}`,
      );
  }
  const features =
    o.features.length > 0 ? o.features : numericColumnNames(table).filter((c) => c !== o.target);
  if (features.length === 0)
    throw new InputError(`${file.name}: no numeric feature columns besides the target`);
  if (features.includes(o.target)) throw new InputError(`the target "${o.target}" cannot also be a feature`);
  const x = numericMatrix(table, features, file.name);
  const scaling = standardization(x);
  const z = x.map((row) => standardize(row, scaling));
  const fitted =
    method === 'normal-equations'
      ? normalEquations(z, y, o.l2)
      : gradientDescent(z, y, {
          logistic,
          learningRate: o.learning_rate,
          iterations: o.iterations,
          l2: o.l2,
        });
  const model = {
    format: modelFormat,
    kind: logistic ? 'logistic-regression' : 'linear-regression',
    target: o.target,
    features,
    standardization: scaling,
    intercept: fitted.intercept,
    weights: fitted.weights,
    // The same model over unscaled features, for people reading it.
    coefficients: {
      intercept:
        fitted.intercept - fitted.weights.reduce((s, w, j) => s + (w * scaling.mean[j]) / scaling.std[j], 0),
      ...Object.fromEntries(features.map((name, j) => [name, fitted.weights[j] / scaling.std[j]])),
    },
    training: {
      file: file.name,
      rows: table.rows.length,
      method,
      ...(method === 'gradient-descent' ? { learning_rate: o.learning_rate, iterations: o.iterations } : {}),
      l2: o.l2,
    },
  };
  const predicted = x.map((row) => predictOne(model, row));
  const metrics = roundAll(
    logistic ? classificationMetrics(predicted, y, 0.5) : regressionMetrics(predicted, y),
  );
  model.training.metrics = metrics;
  console.log(`trained a ${model.kind} of ${o.target} on ${features.join(', ')}: ${JSON.stringify(metrics)}`);
  return {
    files: [
      {
        name: 'model.json',
        content: `${JSON.stringify(model, null, 2)}\n`,
        media_type: 'application/json',
        tags: { kind: model.kind, target: o.target },
        parent: file.name,
      },
      // The training data passes through, so that a next task (ml.predict) gets the model and a CSV.
      {
        name: file.name,
        content: read(file),
        media_type: 'text/csv',
        tags: { role: 'training-data' },
        parent: file.name,
      },
    ],
    tags: { model: model.kind, rows: table.rows.length, ...metrics },
  };
}

/** A model as train writes it, or an InputError saying what is wrong with it. */
function checkModel(model, fileName) {
  const wrong = (what) => new InputError(`${fileName}: not a model written by ml.train (${what})`);
  if (model?.format !== modelFormat) throw wrong(`format is not ${modelFormat}`);
  if (!['linear-regression', 'logistic-regression'].includes(model.kind)) throw wrong('unknown kind');
  const n = model.features?.length;
  const numbers = (list) => Array.isArray(list) && list.length === n && list.every(Number.isFinite);
  if (!Array.isArray(model.features) || !model.features.every((f) => typeof f === 'string'))
    throw wrong('features');
  if (
    !numbers(model.weights) ||
    !numbers(model.standardization?.mean) ||
    !numbers(model.standardization?.std)
  ) {
    throw wrong('weights and standardization must have one number per feature');
  }
  if (!Number.isFinite(model.intercept)) throw wrong('intercept');
  return model;
}

function pickInputs(files) {
  const models = files.filter(
    (f) => essence(f.media_type) === 'application/json' || f.name.endsWith('.json'),
  );
  const tables = files.filter((f) => essence(f.media_type) === 'text/csv' || f.name.endsWith('.csv'));
  if (files.length !== 2 || models.length !== 1 || tables.length !== 1) {
    throw new InputError(
      `takes two files, a model (application/json) and a CSV (text/csv); got ${files.map((f) => `${f.name} (${f.media_type})`).join(', ') || 'none'}`,
    );
  }
  return { modelFile: models[0], dataFile: tables[0] };
}

function predict({ options, files, read }) {
  const { threshold } = readOptions(options, { threshold: { type: 'number', default: 0.5, min: 0, max: 1 } });
  const { modelFile, dataFile } = pickInputs(files);
  let parsed;
  try {
    parsed = JSON.parse(read(modelFile));
  } catch (error) {
    throw new InputError(`${modelFile.name}: not JSON: ${error.message}`);
  }
  const model = checkModel(parsed, modelFile.name);
  const logistic = model.kind === 'logistic-regression';
  const table = parseCsv(read(dataFile), dataFile.name);
  checkShape(table, dataFile.name);
  const added = logistic ? ['prediction', 'probability'] : ['prediction'];
  const clash = added.find((c) => table.header.includes(c));
  if (clash) throw new InputError(`${dataFile.name}: already has a column "${clash}"`);
  const indexes = model.features.map((name) => columnIndex(table, name, dataFile.name));
  const targetIndex = table.header.indexOf(model.target);
  let unpredicted = 0;
  const scored = [];
  const rows = table.rows.map((row) => {
    const x = indexes.map((j) => toNumber(row.fields[j]));
    // A row with a missing feature keeps its place, with an empty prediction.
    if (x.some((v) => v === null)) {
      unpredicted++;
      return [...row.fields, ...added.map(() => '')];
    }
    const value = predictOne(model, x);
    const actual = targetIndex === -1 ? null : toNumber(row.fields[targetIndex]);
    if (actual !== null) scored.push({ value, actual });
    return logistic
      ? [...row.fields, value >= threshold ? 1 : 0, round(value)]
      : [...row.fields, round(value)];
  });
  const evaluation =
    scored.length === 0
      ? {}
      : logistic
        ? classificationMetrics(
            scored.map((s) => s.value),
            scored.map((s) => s.actual),
            threshold,
          )
        : regressionMetrics(
            scored.map((s) => s.value),
            scored.map((s) => s.actual),
          );
  return {
    files: [
      {
        name: 'predictions.csv',
        content: formatCsv([...table.header, ...added], rows),
        media_type: 'text/csv',
        tags: { model: model.kind, rows: rows.length },
        parent: dataFile.name,
      },
    ],
    tags: { rows: rows.length, rows_unpredicted: unpredicted, ...roundAll(evaluation) },
  };
}

runFunction({ train, predict });
