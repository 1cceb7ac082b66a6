// The house rules in scripts/redocly-rules.js must catch what they promise to catch.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { repoRoot } from '../../src/paths.js';

function lintWith(edit: (specDir: string) => void): { ok: boolean; output: string } {
  const dir = mkdtempSync(join(tmpdir(), 'atrium-lint-'));
  cpSync(join(repoRoot, 'spec'), join(dir, 'spec'), { recursive: true });
  edit(join(dir, 'spec'));
  const result = spawnSync(
    join(repoRoot, 'node_modules/.bin/redocly'),
    ['lint', '--config', join(repoRoot, 'scripts/redocly.yaml'), join(dir, 'spec/openapi.yaml')],
    { encoding: 'utf8', env: { ...process.env, REDOCLY_TELEMETRY: 'off' } },
  );
  return { ok: result.status === 0, output: `${result.stdout}${result.stderr}` };
}

function replaceIn(file: string, from: string, to: string): void {
  const text = readFileSync(file, 'utf8');
  if (!text.includes(from)) throw new Error(`${from} not in ${file}`);
  writeFileSync(file, text.replace(from, to));
}

describe('spec lint rules', () => {
  it('pass on the spec as it is', () => {
    expect(lintWith(() => undefined)).toMatchObject({ ok: true });
  }, 30_000);

  it('require a controller binding on every operation', () => {
    const result = lintWith((spec) => replaceIn(join(spec, 'paths/me.yaml'), '  x-controller: me\n', ''));
    expect(result.ok).toBe(false);
    expect(result.output).toContain('x-controller');
  }, 30_000);

  it('require camelCase verbNoun operationIds', () => {
    const result = lintWith((spec) =>
      replaceIn(join(spec, 'paths/me.yaml'), 'operationId: getMe', 'operationId: me_get'),
    );
    expect(result.ok).toBe(false);
    expect(result.output).toContain('verbNoun');
  }, 30_000);

  it('require problem+json on error responses', () => {
    const result = lintWith((spec) =>
      replaceIn(
        join(spec, 'components/responses/NotFound.yaml'),
        'application/problem+json',
        'application/json',
      ),
    );
    expect(result.ok).toBe(false);
    expect(result.output).toContain('must be application/problem+json');
  }, 30_000);

  it('require 401 on secured operations and 404 where there are path parameters', () => {
    const result = lintWith((spec) => {
      replaceIn(
        join(spec, 'paths/me.yaml'),
        "    '401':\n      $ref: ../components/responses/Unauthorized.yaml\n",
        '',
      );
      replaceIn(
        join(spec, 'paths/regions_{regionId}.yaml'),
        "    '404':\n      $ref: ../components/responses/NotFound.yaml\n",
        '',
      );
    });
    expect(result.ok).toBe(false);
    expect(result.output).toContain('GET /me needs authentication and must declare 401');
    expect(result.output).toContain('GET /regions/{regionId} has path parameters and must declare 404');
  }, 30_000);

  it('require 400 on every operation, and 507 on every one that may write', () => {
    const result = lintWith((spec) => {
      replaceIn(
        join(spec, 'paths/config.yaml'),
        "    '400':\n      $ref: ../components/responses/BadRequest.yaml\n",
        '',
      );
      replaceIn(
        join(spec, 'paths/me.yaml'),
        "    '507':\n      $ref: ../components/responses/InsufficientStorage.yaml\n",
        '',
      );
    });
    expect(result.ok).toBe(false);
    expect(result.output).toContain('GET /config refuses unknown query parameters and must declare 400');
    expect(result.output).toContain('GET /me may write and must declare 507 (insufficient-storage)');
  }, 30_000);

  it('require the list contract on list operations', () => {
    const result = lintWith((spec) =>
      replaceIn(join(spec, 'paths/regions.yaml'), '    - $ref: ../components/parameters/Cursor.yaml\n', ''),
    );
    expect(result.ok).toBe(false);
    expect(result.output).toContain('list operations take the shared Limit and Cursor parameters');
  }, 30_000);
});
