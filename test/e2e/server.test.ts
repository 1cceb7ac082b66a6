// The newcomer's path, with the real command: start on embedded defaults, get an admin token once,
// browse, sign in, stop cleanly, start again, mint tokens from the command line; and on PostgreSQL.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createTestDatabase, testEngines } from '../fixtures/databases.js';
import { requireBuild, runCli, startAtrium, waitForStatus, type AtriumProcess } from '../fixtures/process.js';

const bearer = (token: string) => ({ headers: { Authorization: `Bearer ${token}` } });

describe('atrium serve on embedded defaults', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'atrium-e2e-'));
  let server: AtriumProcess;

  beforeAll(async () => {
    requireBuild();
    server = await startAtrium({ ATRIUM_DATA_DIR: dataDir });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('listens on loopback, prints an admin token once, and becomes ready', async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(server.token).toMatch(/^atr_/);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    await waitForStatus(`${server.url}/readyz`, 200);
  });

  it('refuses /api/v1/me without a token and welcomes the admin token', async () => {
    const anonymous = await fetch(`${server.url}/api/v1/me`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const me = await fetch(`${server.url}/api/v1/me`, bearer(server.token as string));
    expect(me.status).toBe(200);
    expect(await me.json()).toMatchObject({
      user: { username: 'admin', admin: true },
      projects: [{ id: 'user-admin' }],
    });
  });

  it('serves the demo catalog with pagination, and the docs', async () => {
    const page = (await (await fetch(`${server.url}/api/v1/catalogs/demo/packages?limit=3`)).json()) as {
      items: { name: string }[];
      next_cursor: string;
    };
    expect(page.items.map((p) => p.name)).toEqual(['echo', 'kv-store', 'model-server']);
    const rest = (await (
      await fetch(`${server.url}/api/v1/catalogs/demo/packages?limit=3&cursor=${page.next_cursor}`)
    ).json()) as {
      items: { name: string }[];
    };
    expect(rest.items.map((p) => p.name)).toEqual(['static-files']);
    expect((await fetch(`${server.url}/docs/`)).status).toBe(200);
  });

  it('logs JSON lines with request ids, and never the token', () => {
    const lines = server
      .stdout()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.some((l) => l.msg === 'request' && typeof l.request_id === 'string')).toBe(true);
    expect(server.stdout()).not.toContain(server.token as string);
  });

  it('stops on SIGTERM with exit code 0, then starts again without printing a new token', async () => {
    expect(await server.stop()).toBe(0);
    const token = server.token as string;
    server = await startAtrium({ ATRIUM_DATA_DIR: dataDir });
    expect(server.token).toBeNull();
    expect((await fetch(`${server.url}/api/v1/me`, bearer(token))).status).toBe(200);
  });

  it('mints tokens from the command line for new and existing users', async () => {
    const created = await runCli(
      ['token', 'create', '--user', 'carol', '--name', 'laptop', '--scopes', 'read'],
      {
        ATRIUM_DATA_DIR: dataDir,
      },
    );
    expect(created.code).toBe(0);
    const secret = created.stdout.trim();
    expect(secret).toMatch(/^atr_[0-9A-Za-z]{40}$/);
    const me = (await (await fetch(`${server.url}/api/v1/me`, bearer(secret))).json()) as {
      user: { username: string; admin: boolean };
      auth: { scopes: string[] };
    };
    expect(me).toMatchObject({ user: { username: 'carol', admin: false }, auth: { scopes: ['read'] } });
    const write = await fetch(`${server.url}/api/v1/me/tokens`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${secret}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'x' }),
    });
    expect(write.status).toBe(403);
  });

  it('refuses bad configuration with a clear message and exit code 1, an unknown command with 2', async () => {
    const result = await runCli(['serve'], { ATRIUM_DATA_DIR: dataDir, ATRIUM_PORT: 'eighty' });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('server.port');
    const unknown = await runCli(['frobnicate'], { ATRIUM_DATA_DIR: dataDir });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command');
  });
});

describe('atrium serve with a fixed admin token', () => {
  it('registers ATRIUM_ADMIN_TOKEN instead of generating one', async () => {
    requireBuild();
    const dataDir = mkdtempSync(join(tmpdir(), 'atrium-e2e-'));
    const token = 'atr_automation0123456789abcdefXYZ';
    const server = await startAtrium({ ATRIUM_DATA_DIR: dataDir, ATRIUM_ADMIN_TOKEN: token });
    try {
      expect(server.token).toBeNull();
      expect((await fetch(`${server.url}/api/v1/users`, bearer(token))).status).toBe(200);
    } finally {
      expect(await server.stop()).toBe(0);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe.each(testEngines().filter((e) => e === 'postgres'))('atrium serve on %s', (engine) => {
  it('migrates and serves with ATRIUM_DATABASE_URL', async () => {
    requireBuild();
    const db = await createTestDatabase(engine);
    const server = await startAtrium({ ATRIUM_DATA_DIR: db.dataDir, ATRIUM_DATABASE_URL: db.url });
    try {
      await waitForStatus(`${server.url}/readyz`, 200);
      const me = await fetch(`${server.url}/api/v1/me`, bearer(server.token as string));
      expect(me.status).toBe(200);
      const catalogs = (await (await fetch(`${server.url}/api/v1/catalogs`)).json()) as {
        items: { status: string }[];
      };
      expect(catalogs.items[0]?.status).toBe('ok');
    } finally {
      expect(await server.stop()).toBe(0);
      await db.drop();
    }
  });
});
