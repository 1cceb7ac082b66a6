// Serves the logistic-regression model in model.json: POST /predict scores instances.
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

async function answer(req, res) {
  const url = new URL(req.url ?? '/', 'http://model');
  if (url.pathname === '/healthz') return json(res, 200, { status: 'ok' });
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
