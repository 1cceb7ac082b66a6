// The problem kinds the code raises and reports are exactly those the spec's Problem schema lists,
// with the same statuses: a client reading the spec can branch on every `type` it will meet.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { parse as parseYaml } from 'yaml';
import { operationProblemKinds, problemKinds } from '../../src/errors.js';
import { repoRoot } from '../../src/paths.js';

function specKinds(): Map<string, { status: number; operationOnly: boolean }> {
  const schema = parseYaml(readFileSync(join(repoRoot, 'spec/components/schemas/Problem.yaml'), 'utf8')) as {
    description: string;
  };
  const kinds = new Map<string, { status: number; operationOnly: boolean }>();
  for (const line of schema.description.split('\n')) {
    const row = /^\| `([a-z-]+)` \| (\d{3}) \| (.*) \|$/.exec(line.trim());
    if (row)
      kinds.set(row[1] as string, {
        status: Number(row[2]),
        operationOnly: (row[3] as string).startsWith("(in an operation's `error`)"),
      });
  }
  return kinds;
}

describe('problem kinds', () => {
  it('are the ones the Problem schema lists, with its statuses', () => {
    const inSpec = specKinds();
    expect(inSpec.size).toBeGreaterThan(10);
    const inCode = new Map<string, { status: number; operationOnly: boolean }>([
      ...Object.entries(problemKinds).map(
        ([k, v]) => [k, { status: v.status, operationOnly: false }] as const,
      ),
      ...Object.entries(operationProblemKinds).map(
        ([k, v]) => [k, { status: v.status, operationOnly: true }] as const,
      ),
    ]);
    expect(Object.fromEntries([...inCode].sort())).toEqual(Object.fromEntries([...inSpec].sort()));
  });

  it('keep the response kinds and the operation-only kinds apart', () => {
    const both = Object.keys(operationProblemKinds).filter((k) => k in problemKinds);
    expect(both).toEqual([]);
  });
});
