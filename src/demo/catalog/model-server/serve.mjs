// Serves the logistic-regression model in model.json: POST /predict scores instances. It speaks
// Atrium's `ai` scope too: POST /ai/models loads a model under a name (model.json's format, or what
// the demo module ml.train writes), POST /ai/models/{name}/predict, GET /ai/usage. model.json is
// served as `default`.
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 8080);
const threshold = Number(process.env.THRESHOLD ?? 0.5);
const model = JSON.parse(
  await readFile(process.env.MODEL_FILE ?? new URL('model.json', import.meta.url), 'utf8'),
);
const maxInstances = 10000;

const json = (res, status, body) =>
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));

/** An instance is an array in feature order, or an object keyed by feature name. */
function vector(instance) {
  const values = Array.isArray(instance) ? instance : model.features.map((f) => instance?.[f]);
  if (
    values.length !== model.features.length ||
    !values.every((v) => typeof v === 'number' && Number.isFinite(v))
  ) {
    throw new Error(`each instance needs numbers for ${model.features.join(', ')}`);
  }
  return values;
}

export function predict(values) {
  const z = values.reduce(
    (s, v, j) => s + ((v - model.mean[j]) / model.std[j]) * model.weights[j],
    model.bias,
  );
  const probability = 1 / (1 + Math.exp(-z));
  return { probability, label: probability >= threshold ? 1 : 0 };
}

// The `ai` scope: models by name, each a scorer over standardised features.
const served = new Map();
let predictions = 0;

/** A scorer from model.json's format or ml.train's (format atrium.ml/…); throws what is wrong. */
function load(doc) {
  const numbers = (list, n) => Array.isArray(list) && list.length === n && list.every(Number.isFinite);
  if (!doc || !Array.isArray(doc.features) || !doc.features.every((f) => typeof f === 'string'))
    throw new Error('a model needs its features');
  const n = doc.features.length;
  const trained = doc.standardization !== undefined;
  const mean = trained ? doc.standardization?.mean : doc.mean;
  const std = trained ? doc.standardization?.std : doc.std;
  const bias = trained ? doc.intercept : doc.bias;
  if (!['linear-regression', 'logistic-regression'].includes(doc.kind))
    throw new Error(`unknown kind ${doc.kind}`);
  if (!numbers(doc.weights, n) || !numbers(mean, n) || !numbers(std, n) || !Number.isFinite(bias))
    throw new Error('weights, means and deviations need one number per feature, and an intercept');
  const logistic = doc.kind === 'logistic-regression';
  return {
    kind: doc.kind,
    target: typeof doc.target === 'string' ? doc.target : null,
    features: doc.features,
    predictions: 0,
    score(instance) {
      const values = Array.isArray(instance) ? instance : doc.features.map((f) => instance?.[f]);
      if (values.length !== n || !values.every((v) => typeof v === 'number' && Number.isFinite(v)))
        throw new Error(`each instance needs numbers for ${doc.features.join(', ')}`);
      const z = values.reduce((s, v, j) => s + ((v - mean[j]) / std[j]) * doc.weights[j], bias);
      if (!logistic) return { value: z };
      const probability = 1 / (1 + Math.exp(-z));
      return { probability, label: probability >= threshold ? 1 : 0 };
    },
  };
}
served.set('default', load({ ...model, kind: model.kind }));

async function readJson(req, limit) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit)
      throw Object.assign(new Error(`the body is larger than ${limit} bytes`), { status: 413 });
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw Object.assign(new Error('the body must be JSON'), { status: 400 });
  }
}

async function ai(req, res, url) {
  try {
    if (url.pathname === '/ai/usage' && req.method === 'GET') {
      return json(res, 200, {
        models: [...served].map(([name, m]) => ({ name, kind: m.kind, predictions: m.predictions })),
        predictions,
      });
    }
    if (url.pathname === '/ai/models' && req.method === 'POST') {
      const { name, model: doc } = await readJson(req, 10 * 1024 * 1024);
      if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,63}$/.test(name))
        throw Object.assign(new Error('a model needs a name'), { status: 400 });
      let loaded;
      try {
        loaded = load(doc);
      } catch (error) {
        return json(res, 400, { error: error.message });
      }
      served.set(name, loaded);
      return json(res, 200, { name, kind: loaded.kind, features: loaded.features, target: loaded.target });
    }
    const match = /^\/ai\/models\/([^/]+)\/predict$/.exec(url.pathname);
    if (match && req.method === 'POST') {
      const name = decodeURIComponent(match[1]);
      const m = served.get(name);
      if (!m) return json(res, 404, { error: `no model ${name} (serve it first)` });
      const { instances } = await readJson(req, 10 * 1024 * 1024);
      if (!Array.isArray(instances) || instances.length === 0 || instances.length > maxInstances)
        return json(res, 400, { error: `send {"instances": [...]} with 1 to ${maxInstances} instances` });
      let scored;
      try {
        scored = instances.map((i) => m.score(i));
      } catch (error) {
        return json(res, 400, { error: error.message });
      }
      m.predictions += scored.length;
      predictions += scored.length;
      return json(res, 200, { model: name, predictions: scored });
    }
    return json(res, 404, { error: 'not found' });
  } catch (error) {
    return json(res, error.status ?? 500, { error: error.message });
  }
}

async function answer(req, res) {
  const url = new URL(req.url ?? '/', 'http://model');
  if (url.pathname === '/healthz') return json(res, 200, { status: 'ok' });
  if (url.pathname.startsWith('/ai/')) return ai(req, res, url);
  if (url.pathname === '/model' && req.method === 'GET') {
    return json(res, 200, {
      kind: model.kind,
      target: model.target,
      features: model.features,
      threshold,
      training: model.training,
    });
  }
  if (url.pathname !== '/predict') return json(res, 404, { error: 'not found' });
  if (req.method !== 'POST') return json(res, 405, { error: 'POST instances to /predict' });
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  let instances;
  try {
    ({ instances } = JSON.parse(Buffer.concat(chunks).toString('utf8')));
    if (!Array.isArray(instances) || instances.length === 0 || instances.length > maxInstances) {
      throw new Error(`send {"instances": [...]} with 1 to ${maxInstances} instances`);
    }
    return json(res, 200, { target: model.target, predictions: instances.map((i) => predict(vector(i))) });
  } catch (error) {
    return json(res, 400, { error: error.message });
  }
}

const server = createServer((req, res) => {
  console.log(`${req.method} ${req.url}`);
  answer(req, res).catch((error) => {
    console.error(error);
    if (!res.headersSent) json(res, 500, { error: 'internal error' });
  });
});
server.listen(port, host, () =>
  console.log(`model server on ${host}:${port} (${model.kind}, features ${model.features.join(', ')})`),
);
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
