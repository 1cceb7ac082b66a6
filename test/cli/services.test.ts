// The user's `atrium` command line, end to end: the built CLI run as a child process against a
// started server (SQLite, the demo catalog and the test one) — login, the catalog, a service
// launched, followed, opened, suspended, resumed and removed, the quota, tokens, a package that
// fails to start, and errors as exit codes with the problem's title and detail.
import { mkdtempSync, rmSync, statSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { cliUser, type CliResult, type CliUser } from '../fixtures/cli.js';
import { startedAtrium, writeTestCatalogsConfig, type StartedAtrium } from '../fixtures/e2e.js';

const adminToken = 'atr_cliServicesAdmin0123456789';
const project = '/api/v1/projects/user-admin';

interface ServiceJson {
  id: string;
  name: string;
  package: string;
  status: string;
  options: Record<string, unknown>;
  endpoints: { url: string }[];
}

/** The exit code, with stderr and stdout beside it so that a failure shows why. */
function expectExit(result: CliResult, code: number): void {
  expect({ code: result.code, stderr: result.stderr, stdout: result.stdout }).toMatchObject({ code });
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('atrium, the command line for users, against a server', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'atrium-cli-services-'));
  let atrium: StartedAtrium;
  let user: CliUser;
  // Every service a test launched: deleted at the end whatever happened (they outlive the server).
  const launched = new Set<string>();
  let echoId = '';
  let echoUrl = '';

  const idsOf = async (pkg: string) =>
    (await user.json<ServiceJson[]>(['services', 'ls', '--package', pkg])).map((s) => s.id);

  beforeAll(async () => {
    atrium = await startedAtrium('sqlite', adminToken, { ATRIUM_CONFIG: writeTestCatalogsConfig(scratch) });
    user = cliUser();
  }, 90_000);

  afterAll(async () => {
    if (atrium) {
      const listed = await atrium.call('GET', `${project}/services`).catch(() => null);
      for (const s of (listed?.body?.items ?? []) as { id: string }[]) launched.add(s.id);
      for (const id of launched)
        await atrium
          .call('DELETE', `${project}/services/${id}`, undefined, { Prefer: 'wait=20' })
          .catch(() => undefined);
      await atrium.stop();
    }
    rmSync(scratch, { recursive: true, force: true });
    if (user) rmSync(user.home, { recursive: true, force: true });
  });

  describe('login, whoami', () => {
    it('refuses a wrong token with exit 3 and stores nothing', async () => {
      const refused = await user.run([
        'login',
        '--server',
        atrium.server.url,
        '--token',
        'atr_notAToken000000',
      ]);
      expectExit(refused, 3);
      expect(refused.stderr).toContain('atrium: Authentication required');
      expect(existsSync(user.configFile)).toBe(false);
    });

    it('says "not logged in" with exit 3 before any login', async () => {
      const result = await user.run(['whoami']);
      expectExit(result, 3);
      expect(result.stderr).toContain('not logged in');
    });

    it('stores the server and a good token in a file of mode 0600, read by whoami', async () => {
      const login = await user.run(['login', '--server', atrium.server.url], { input: `${adminToken}\n` });
      expectExit(login, 0);
      expect(login.stdout).toContain('as admin');
      expect(statSync(user.configFile).mode & 0o777).toBe(0o600);
      const whoami = await user.run(['whoami']);
      expectExit(whoami, 0);
      expect(whoami.stdout).toContain(`admin (admin) on ${atrium.server.url}`);
      expect(whoami.stdout).toContain('projects: user-admin');
    });
  });

  describe('catalog', () => {
    it('lists the packages of every catalog, as a table and as JSON', async () => {
      const table = await user.run(['catalog', 'ls']);
      expectExit(table, 0);
      expect(table.stdout).toMatch(/^PACKAGE\s+VERSION\s+TITLE/);
      expect(table.stdout).toMatch(/^demo\/echo\s+1\.1\.0\s+HTTP echo/m);
      expect(table.stdout).toMatch(/^test\/probe\s/m);
      const rows = await user.json<{ catalog_id: string; name: string }[]>([
        'catalog',
        'ls',
        '--catalog',
        'demo',
      ]);
      expect(rows.map((p) => p.name)).toEqual(expect.arrayContaining(['echo', 'kv-store']));
      expect(rows.every((p) => p.catalog_id === 'demo')).toBe(true);
    });

    it('shows one package, named with or without its catalog', async () => {
      const shown = await user.run(['catalog', 'show', 'demo/echo']);
      expectExit(shown, 0);
      expect(shown.stdout).toContain('"title": "HTTP echo"');
      expect(await user.json(['catalog', 'show', 'probe'])).toMatchObject({
        catalog_id: 'test',
        name: 'probe',
      });
    });
  });

  describe('launch, services, open', () => {
    it('launches demo/echo with options and waits until it runs, printing its id, status and URL', async () => {
      const result = await user.run([
        'launch',
        'demo/echo',
        '--option',
        'greeting=bonjour',
        '-o',
        'delay_ms=5',
        '--wait',
        '--timeout',
        '90',
      ]);
      echoId = /^id:\s+(\S+)$/m.exec(result.stdout)?.[1] ?? '';
      if (echoId) launched.add(echoId);
      expectExit(result, 0);
      expect(result.stdout).toMatch(/^status:\s+running$/m);
      echoUrl = /^url:\s+(\S+)$/m.exec(result.stdout)?.[1] ?? '';
      expect(echoUrl).toBe(`${atrium.server.url}/services/user-admin/${echoId}/http/`);
      // The progress, as plain lines (stderr is not a terminal here): the operation's events.
      expect(result.stderr).toContain('launch echo: created');
      expect(result.stderr).toContain('launch echo: done: echo is running');
    });

    it('launches without --wait: prints the service and the operation', async () => {
      const result = await user.run(['launch', 'echo', '--name', 'second-echo', '--version', '1.0.0']);
      const id = /^service:\s+(\S+)$/m.exec(result.stdout)?.[1] ?? '';
      if (id) launched.add(id);
      expectExit(result, 0);
      expect(id).toMatch(/^svc_/);
      expect(result.stdout).toMatch(/^operation:\s+op_\S+$/m);
    });

    it('lists the services as a table and as JSON', async () => {
      const table = await user.run(['services', 'ls']);
      expectExit(table, 0);
      expect(table.stdout).toMatch(/^ID\s+NAME\s+PACKAGE\s+VERSION\s+STATUS\s+URL\s+AGE$/m);
      expect(table.stdout).toMatch(
        new RegExp(
          `^${echoId}\\s+echo\\s+demo/echo\\s+1\\.1\\.0\\s+running\\s+${echoUrl}\\s+\\d+[smhd]$`,
          'm',
        ),
      );
      expect(table.stdout).toMatch(/^svc_\S+\s+second-echo\s+demo\/echo\s+1\.0\.0\s/m);
      const rows = await user.json<ServiceJson[]>([
        'services',
        'ls',
        '--status',
        'running',
        'starting',
        'pending',
      ]);
      expect(rows.map((s) => s.id)).toContain(echoId);
    });

    it('shows one service, with the options it was launched with (JSON values parsed)', async () => {
      const shown = await user.run(['services', 'show', echoId]);
      expectExit(shown, 0);
      expect(shown.stdout).toMatch(/^package:\s+demo\/echo 1\.1\.0$/m);
      expect(shown.stdout).toMatch(new RegExp(`^endpoints:\\s+http: ${echoUrl}$`, 'm'));
      const service = await user.json<ServiceJson>(['services', 'show', echoId]);
      expect(service.options).toMatchObject({ greeting: 'bonjour', delay_ms: 5 });
    });

    it('prints its logs, and only the last lines with --tail', async () => {
      const logs = await user.run(['services', 'logs', echoId]);
      expectExit(logs, 0);
      expect(logs.stdout).toContain('echo listening');
      const tail = await user.run(['services', 'logs', echoId, '--tail', '1']);
      expectExit(tail, 0);
      expect(tail.stdout.trimEnd().split('\n')).toHaveLength(1);
    });

    it('prints its events, as lines and as JSON lines', async () => {
      const events = await user.run(['services', 'events', echoId]);
      expectExit(events, 0);
      expect(events.stdout).toMatch(/^\S+\s+admitted\s+/m);
      expect(events.stdout).toMatch(/^\S+\s+running\s+/m);
      const lines = (await user.run(['--json', 'services', 'events', echoId])).stdout.trim().split('\n');
      const parsed = lines.map((l) => JSON.parse(l) as { seq: number; type: string });
      expect(parsed.map((e) => e.type)).toContain('running');
      expect(parsed.map((e) => e.seq)).toEqual([...parsed.map((e) => e.seq)].sort((a, b) => a - b));
    });

    it('opens it: prints the gateway URL, which answers over HTTP with the token', async () => {
      const opened = await user.run(['open', echoId, '--print']);
      expectExit(opened, 0);
      expect(opened.stdout.trim()).toBe(echoUrl);
      // Not a terminal: the URL is printed and no browser is started.
      const plain = await user.run(['open', echoId, '--wait']);
      expectExit(plain, 0);
      expect(plain.stdout.trim()).toBe(echoUrl);
      const answer = await fetch(`${echoUrl}hello`, { headers: { Authorization: `Bearer ${adminToken}` } });
      expect(answer.status).toBe(200);
      expect(await answer.json()).toMatchObject({ greeting: 'bonjour' });
    });

    it('suspends it (no URL then) and resumes it at the same URL', async () => {
      const suspended = await user.run(['services', 'suspend', echoId, '--wait']);
      expectExit(suspended, 0);
      expect(suspended.stdout).toMatch(/^status:\s+suspended$/m);
      const closed = await user.run(['open', echoId, '--print']);
      expectExit(closed, 5);
      expect(closed.stderr).toContain(`${echoId} has no URL yet (it is suspended)`);
      const resumed = await user.run(['services', 'resume', echoId, '--wait']);
      expectExit(resumed, 0);
      expect(resumed.stdout).toMatch(/^status:\s+running$/m);
      expect(resumed.stdout).toMatch(new RegExp(`^url:\\s+${echoUrl}$`, 'm'));
    });
  });

  describe('quota, tokens', () => {
    it('shows the quota as resource, used and limit', async () => {
      const table = await user.run(['quota']);
      expectExit(table, 0);
      expect(table.stdout).toMatch(/^RESOURCE\s+USED\s+LIMIT$/m);
      expect(table.stdout).toMatch(/^services\s+2\s+\d+$/m);
      expect(table.stdout).toMatch(/^cpu\s+200m\s+\S+$/m);
      expect(await user.json(['quota'])).toMatchObject({ project_id: 'user-admin', usage: { services: 2 } });
    });

    it('creates a token (its secret alone on stdout), lists it, and revokes it: then it gets exit 3', async () => {
      const created = await user.run([
        'tokens',
        'create',
        '--name',
        'ci',
        '--scopes',
        'read',
        '--expires-in-days',
        '2',
      ]);
      expectExit(created, 0);
      const secret = created.stdout.trim();
      expect(secret).toMatch(/^atr_[0-9A-Za-z]+$/);
      expect(created.stderr).toContain('shown this once');
      const asCi = await user.run(['whoami', '--token', secret]);
      expectExit(asCi, 0);
      expect(asCi.stdout).toContain('scopes: read');

      const listed = await user.run(['tokens', 'ls']);
      expectExit(listed, 0);
      expect(listed.stdout).toMatch(/^ID\s+NAME\s+PREFIX\s+SCOPES\s+STATE/m);
      const tokens = await user.json<{ id: string; name: string; prefix: string }[]>(['tokens', 'ls']);
      const ci = tokens.find((t) => t.name === 'ci');
      expect(secret.startsWith(ci?.prefix ?? '-')).toBe(true);
      expect(listed.stdout).toMatch(new RegExp(`^${ci?.id}\\s+ci\\s+\\S+\\s+read\\s+active`, 'm'));

      expectExit(await user.run(['tokens', 'revoke', ci!.id]), 0);
      const refused = await user.run(['whoami', '--token', secret]);
      expectExit(refused, 3);
      expect(refused.stderr).toContain('atrium: Authentication required');
      expect(
        (await user.json<{ id: string; revoked_at: string | null }[]>(['tokens', 'ls'])).find(
          (t) => t.id === ci!.id,
        )?.revoked_at,
      ).not.toBeNull();
    });

    it('refuses bad token options with exit 2', async () => {
      expectExit(await user.run(['tokens', 'create']), 2);
      expectExit(await user.run(['tokens', 'create', '--name', 'x', '--scopes', 'admin']), 2);
      expectExit(await user.run(['tokens', 'create', '--name', 'x', '--expires-in-days', 'soon']), 2);
    });
  });

  describe('a package that fails to start', () => {
    it('launch --wait exits 1 with the problem title, its detail and the log tail', async () => {
      const result = await user.run([
        'launch',
        'test/probe',
        '-o',
        'mode=crash',
        '-o',
        'exit_code=42',
        '--wait',
      ]);
      for (const id of await idsOf('probe')) launched.add(id);
      expectExit(result, 1);
      expect(result.stderr).toContain('atrium: The service could not start\n  exited with code 42');
      expect(result.stderr).toContain('log tail:');
      expect(result.stderr).toContain('probe crashing now');
      expect(result.stderr).toMatch(/svc_\S+ did not start/);
    });

    it('keeps the failed service to read: show says why, logs --follow ends at once', async () => {
      const [failedId] = await idsOf('probe');
      const shown = await user.json<ServiceJson & { exit_code: number }>(['services', 'show', failedId!]);
      expect(shown).toMatchObject({ status: 'failed', exit_code: 42 });
      const logs = await user.run(['services', 'logs', failedId!, '--follow'], { timeoutMs: 60_000 });
      expectExit(logs, 0);
      expect(logs.stdout).toContain('probe crashing now');
    });

    it('launch --wait exits 7 when --timeout passes before the service is ready', async () => {
      const result = await user.run([
        'launch',
        'test/probe',
        '--name',
        'slow-probe',
        '-o',
        'mode=never-ready',
        '--wait',
        '--timeout',
        '1',
      ]);
      for (const id of await idsOf('probe')) launched.add(id);
      expectExit(result, 7);
      expect(result.stderr).toContain('atrium: timed out waiting');
    });
  });

  describe('errors', () => {
    it('a missing service: exit 4, with the title and the detail', async () => {
      const result = await user.run(['services', 'show', 'svc_doesNotExist0000']);
      expectExit(result, 4);
      expect(result.stderr).toBe('atrium: Not found\n  service "svc_doesNotExist0000" does not exist\n');
      const json = await user.run(['--json', 'services', 'show', 'svc_doesNotExist0000']);
      expectExit(json, 4);
      expect(JSON.parse(json.stderr)).toMatchObject({
        status: 404,
        type: 'https://atrium.dev/problems/not-found',
      });
      expectExit(await user.run(['catalog', 'show', 'demo/nothing-here']), 4);
    });

    it('the wrong command line: exit 2', async () => {
      const unknown = await user.run(['services', 'frobnicate']);
      expectExit(unknown, 2);
      expect(unknown.stderr).toContain("unknown command 'frobnicate'");
      expectExit(await user.run(['launch']), 2);
      expectExit(await user.run(['launch', 'demo/echo', '--option', 'no-equals-sign']), 2);
      expectExit(await user.run(['launch', 'demo/echo', '--wait', '--timeout', 'soon']), 2);
      expectExit(await user.run(['services', 'logs', echoId, '--tail', '0']), 2);
      expectExit(await user.run(['completion', 'fish']), 2);
    });

    it('options the package refuses: the field errors, exit 2', async () => {
      const result = await user.run(['launch', 'demo/echo', '-o', 'delay_ms=slow']);
      expectExit(result, 2);
      expect(result.stderr).toContain('delay_ms');
    });

    it('a server that cannot be reached: exit 6', async () => {
      const result = await user.run(['whoami', '--server', `http://127.0.0.1:${await closedPort()}`]);
      expectExit(result, 6);
      expect(result.stderr).toContain('atrium: cannot reach the server');
    });
  });

  describe('services rm', () => {
    it('deletes every service it is given and waits until they are gone: show then exits 4', async () => {
      const ids = (await user.json<ServiceJson[]>(['services', 'ls'])).map((s) => s.id);
      expect(ids).toContain(echoId);
      const removed = await user.run(['services', 'rm', ...ids, '--wait', '--timeout', '90']);
      expectExit(removed, 0);
      for (const id of ids) expect(removed.stdout).toContain(`deleted ${id}`);
      expectExit(await user.run(['services', 'show', echoId]), 4);
      expect(await user.json(['services', 'ls'])).toEqual([]);
      const quota = await user.json<{ usage: { services: number } }>(['quota']);
      expect(quota.usage.services).toBe(0);
    });
  });
});
