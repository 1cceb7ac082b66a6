// Atrium's house rules for the spec, as a Redocly plugin (see scripts/redocly.yaml).
// Each rule reports on one operation; `npm run lint:spec` fails on any of them.

const verbs = [
  'get',
  'list',
  'create',
  'update',
  'delete',
  'set',
  'remove',
  'revoke',
  'refresh',
  'cancel',
  'retry',
  'call',
  'compare',
  'download',
  'upload',
  'follow',
  'launch',
];
const isError = (code) => code === 'default' || /^[45]\d\d$/.test(code);
const usesShared = (params, name) =>
  (params ?? []).some(
    (p) => typeof p.$ref === 'string' && new RegExp(`parameters/${name}(\\.yaml)?$`).test(p.$ref),
  );

function operationBinding() {
  return {
    Operation: {
      enter(op, ctx) {
        const id = op.operationId;
        if (typeof id !== 'string' || !new RegExp(`^(${verbs.join('|')})[A-Z][A-Za-z0-9]*$`).test(id)) {
          ctx.report({
            message: `operationId must be camelCase verbNoun starting with one of: ${verbs.join(', ')}`,
            location: ctx.location.child('operationId'),
          });
        }
        if (typeof op['x-controller'] !== 'string' || !/^[a-z][a-zA-Z0-9]*$/.test(op['x-controller'])) {
          ctx.report({
            message:
              'every operation names its controller module in `x-controller` (src/controllers/<name>.ts)',
            location: ctx.location,
          });
        }
        if (!Array.isArray(op.tags) || op.tags.length === 0) {
          ctx.report({ message: 'every operation has a tag', location: ctx.location });
        }
      },
    },
  };
}

function problemResponses() {
  return {
    Operation: {
      enter(op, ctx) {
        const responses = op.responses ?? {};
        if (!responses.default) {
          ctx.report({
            message: 'every operation declares `default: $ref: …/responses/Error.yaml`',
            location: ctx.location.child('responses'),
          });
        }
        for (const [code, response] of Object.entries(responses)) {
          if (!isError(code)) continue;
          const resolved = ctx.resolve(response).node ?? {};
          const types = Object.keys(resolved.content ?? {});
          if (types.length !== 1 || types[0] !== 'application/problem+json') {
            ctx.report({
              message: `error response ${code} must be application/problem+json only (use components/responses)`,
              location: ctx.location.child(['responses', code]),
            });
          }
        }
      },
    },
  };
}

function declaredErrors() {
  return {
    Root: {
      enter(root, ctx) {
        const globalSecurity = root.security ?? [];
        for (const [path, pathItem] of Object.entries(root.paths ?? {})) {
          const item = ctx.resolve(pathItem).node ?? {};
          const pathParams = /\{[^}]+\}/.test(path);
          for (const method of ['get', 'put', 'post', 'patch', 'delete']) {
            const op = item[method];
            if (!op) continue;
            const security = op.security ?? globalSecurity;
            const secured = security.some((req) => Object.keys(req).length > 0);
            const codes = Object.keys(op.responses ?? {});
            const where = `${method.toUpperCase()} ${path}`;
            if (secured && !codes.includes('401')) {
              ctx.report({
                message: `${where} needs authentication and must declare 401`,
                location: ctx.location.child(['paths', path]),
              });
            }
            if (pathParams && !codes.includes('404')) {
              ctx.report({
                message: `${where} has path parameters and must declare 404`,
                location: ctx.location.child(['paths', path]),
              });
            }
            // Unknown query parameters are refused everywhere, so every operation can answer 400.
            if (!codes.includes('400')) {
              ctx.report({
                message: `${where} refuses unknown query parameters and must declare 400`,
                location: ctx.location.child(['paths', path]),
              });
            }
            // Anything but a public read may write (a first request onboards its user): a full
            // disk or database is then a 507.
            if ((secured || method !== 'get') && !codes.includes('507')) {
              ctx.report({
                message: `${where} may write and must declare 507 (insufficient-storage)`,
                location: ctx.location.child(['paths', path]),
              });
            }
            if (usesShared(op.parameters, 'IfMatch') && !codes.includes('412')) {
              ctx.report({
                message: `${where} accepts If-Match and must declare 412`,
                location: ctx.location.child(['paths', path]),
              });
            }
          }
        }
      },
    },
  };
}

function listContract() {
  return {
    Operation: {
      enter(op, ctx) {
        if (!/^list[A-Z]/.test(op.operationId ?? '')) return;
        if (!usesShared(op.parameters, 'Limit') || !usesShared(op.parameters, 'Cursor')) {
          ctx.report({
            message: 'list operations take the shared Limit and Cursor parameters',
            location: ctx.location.child('parameters'),
          });
        }
        const ok = ctx.resolve(op.responses?.['200']).node;
        const schemaRef = ok?.content?.['application/json']?.schema;
        const schema = schemaRef ? ctx.resolve(schemaRef).node : undefined;
        const props = schema?.properties ?? {};
        if (!props.items || !props.next_cursor || !(ok?.headers ?? {}).Link) {
          ctx.report({
            message: 'list operations answer {items, next_cursor} with a Link header',
            location: ctx.location.child('responses'),
          });
        }
      },
    },
  };
}

export default function atriumPlugin() {
  return {
    id: 'atrium',
    rules: {
      oas3: {
        'operation-binding': operationBinding,
        'problem-responses': problemResponses,
        'declared-errors': declaredErrors,
        'list-contract': listContract,
      },
    },
  };
}
