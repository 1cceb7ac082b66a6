// The real spec padded with synthetic operations, and the controller that serves them: to show
// whether the cost of one request grows with the number of paths an app has to route among.

export const benchTag = 'Bench';

/** A copy of `apiDoc` with `extraPaths` more paths, /bench/p{i}/items/{id}, one GET each. */
export function padSpec(apiDoc, extraPaths) {
  const doc = structuredClone(apiDoc);
  if (extraPaths === 0) return doc;
  doc.tags = [...(doc.tags ?? []), { name: benchTag, description: 'Synthetic operations for benchmarks.' }];
  for (let i = 0; i < extraPaths; i++) {
    doc.paths[`/bench/p${i}/items/{id}`] = {
      get: {
        operationId: `getBenchItem${i}`,
        'x-controller': 'bench',
        tags: [benchTag],
        summary: `Get a synthetic item (${i})`,
        security: [],
        parameters: [
          { name: 'id', in: 'path', required: true, schema: { type: 'string', minLength: 1, maxLength: 64 } },
        ],
        responses: {
          200: {
            description: 'The item.',
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  properties: { id: { type: 'string' } },
                  required: ['id'],
                  additionalProperties: false,
                },
              },
            },
          },
          default: { $ref: '#/components/responses/Error' },
        },
      },
    };
  }
  return doc;
}

/** The `bench` controller module: one handler per synthetic operation, as bindOperations requires. */
export function benchController(extraPaths) {
  const getItem = async ({ params }) => ({ status: 200, body: { id: params.id } });
  return Object.fromEntries(Array.from({ length: extraPaths }, (_, i) => [`getBenchItem${i}`, getItem]));
}
