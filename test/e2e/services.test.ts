// Services end to end, with the real command: the API runs as `atrium serve` (dist/), services run as
// real processes under their supervisors, and what the API says is checked against the operating
// system. Launch, serve, log, stream events, suspend, resume, delete; survive the API being killed
// (adoption, loss, event streams resumed with Last-Event-ID); a package that crashes ends failed.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { components } from '../../generated/openapi.js';
import { createTestDatabase, testEngines, type TestDatabase } from '../fixtures/databases.js';
import { EventStream, frameSummary, type SseFrame } from '../fixtures/event-stream.js';
import { requireBuild, startAtrium, waitForStatus, type AtriumProcess } from '../fixtures/process.js';
import { writeTestCatalogsConfig } from '../fixtures/e2e.js';
import {
  backendUrl,
  eventually,
  killServiceProcesses,
  processesOfService,
  processRuns,
  readServiceState,
  type ProcessRef,
  type SupervisorStateFile,
} from '../fixtures/service-processes.js';

type Schemas = components['schemas'];
/** What a client sends to launch (the options and shared flag have defaults). */
type LaunchBody = Omit<Schemas['ServiceLaunch'], 'options' | 'shared'> &
  Partial<Pick<Schemas['ServiceLaunch'], 'options' | 'shared'>>;

const adminToken = 'atr_e2eServicesAdmin0123456789';
const zeroUsage = { cpu: '0', memory: '0', gpu: 0, services: 0, concurrent_jobs: 0, storage: '0' };

interface Reply<T> {
  status: number;
  headers: Headers;
  body: T;
}

/** The supervisor and child of a service, as its state file names them (both must exist). */
function workloadOf(state: SupervisorStateFile | null): { supervisor: ProcessRef; child: ProcessRef } {
  if (!state?.child) throw new Error(`no running child in ${JSON.stringify(state)}`);
  return { supervisor: state.supervisor, child: state.child };
}

describe.each(testEngines())('services on the local runtime, end to end (%s)', (engine) => {
  let db: TestDatabase;
  let server: AtriumProcess;
  let env: Record<string, string>;
  /** Every service launched here, so that none survives the tests whatever happens. */
  const launched = new Set<string>();
  /** The project of the running test: each test has its own, so that one failing leaves the others be. */
  let project = '';
  const servicesPath = () => `/api/v1/projects/${project}/services`;

  async function useNewProject(id: string): Promise<void> {
    const res = await call<Schemas['Project']>('POST', '/api/v1/projects', { body: { id, name: id } });
    expect(res.status).toBe(201);
    project = id;
  }

  async function call<T>(
    method: string,
    path: string,
    {
      body,
      headers = {},
      timeoutMs = 40_000,
    }: { body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {},
  ): Promise<Reply<T>> {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${adminToken}`,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? null : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    const json = /json/.test(res.headers.get('content-type') ?? '');
    return { status: res.status, headers: res.headers, body: (json ? JSON.parse(text) : text) as T };
  }

  async function launch(body: LaunchBody): Promise<Schemas['Operation']> {
    const res = await call<Schemas['Operation']>('POST', servicesPath(), {
      body,
      headers: { Prefer: 'wait=30' },
    });
    expect(res.status).toBe(202);
    expect(res.headers.get('location')).toBe(`/api/v1/operations/${res.body.id}`);
    expect(res.headers.get('preference-applied')).toBe('wait=30');
    if (res.body.target?.type === 'service') launched.add(res.body.target.id);
    return res.body;
  }

  const getService = (id: string) => call<Schemas['Service']>('GET', `${servicesPath()}/${id}`);
  const getQuota = async () =>
    (await call<Schemas['Quota']>('GET', `/api/v1/projects/${project}/quota`)).body;
  const serviceState = (id: string) => readServiceState(db.dataDir, id);

  function events(id: string, lastEventId?: number): Promise<EventStream> {
    const options = lastEventId === undefined ? { token: adminToken } : { token: adminToken, lastEventId };
    return EventStream.open(`${server.url}${servicesPath()}/${id}/events`, options);
  }

  async function storedEvents(id: string): Promise<SseFrame[]> {
    const stream = await EventStream.open(`${server.url}${servicesPath()}/${id}/events?follow=false`, {
      token: adminToken,
    });
    try {
      return await stream.readToEnd(10_000);
    } finally {
      stream.close();
    }
  }

  /** A GET to an echo service (with the token: the gateway asks for it, the service ignores it). */
  async function echo(url: string, path: string): Promise<Record<string, unknown>> {
    const res = await fetch(`${url}${path}`, {
      headers: { Authorization: `Bearer ${adminToken}` },
      signal: AbortSignal.timeout(5000),
    });
    expect(res.status).toBe(200);
    return (await res.json()) as Record<string, unknown>;
  }

  const gone = (what: string, ref: ProcessRef) =>
    eventually(`${what} (pid ${ref.pid}) to exit`, () => !processRuns(ref), 15_000);
  const nothingLeftOf = (id: string) =>
    eventually(`every process of ${id} to exit`, () => processesOfService(id).length === 0, 15_000);

  /** Starts the API and waits until it is ready (catalogs load after it listens). */
  async function start(): Promise<AtriumProcess> {
    const started = await startAtrium(env);
    await waitForStatus(`${started.url}/readyz`, 200);
    return started;
  }

  beforeAll(async () => {
    requireBuild();
    db = await createTestDatabase(engine);
    const configFile = writeTestCatalogsConfig(db.dataDir);
    env = {
      ATRIUM_CONFIG: configFile,
      ATRIUM_DATA_DIR: db.dataDir,
      ATRIUM_DATABASE_URL: db.url,
      ATRIUM_ADMIN_TOKEN: adminToken,
      ATRIUM_LOG_LEVEL: 'warn',
    };
    server = await start();
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    const leftovers = [...launched].flatMap((id) => killServiceProcesses(id));
    await db?.drop();
    // A test that passed deleted its services; anything left is a failure of the test or of Atrium.
    expect(leftovers).toEqual([]);
  });

  it('launches the echo, serves, logs and streams its events, suspends, resumes and deletes it', async () => {
    await useNewProject('e2e-lifecycle');
    const op = await launch({ catalog_id: 'demo', package: 'echo', options: { greeting: 'bonjour' } });
    expect(op).toMatchObject({ kind: 'launch-service', status: 'succeeded', done: true, error: null });
    const id = op.target?.id as string;
    expect(op.result).toEqual({ service_id: id });

    const running = (await getService(id)).body;
    expect(running.status).toBe('running');
    // Reached through the gateway, at a URL of Atrium's: the service's own port stays internal.
    expect(running.endpoints).toEqual([
      { port: 'http', protocol: 'http', url: `${server.url}/services/${project}/${id}/http/` },
    ]);
    const url = (running.endpoints[0]?.url as string).replace(/\/$/, '');
    const ownUrl = backendUrl(db.dataDir, id);
    expect(await echo(url, '/hello/e2e?probe=1')).toMatchObject({
      greeting: 'bonjour',
      service: id,
      method: 'GET',
      path: '/hello/e2e',
      query: { probe: '1' },
    });

    const logs = await eventually('the request in the logs', async () => {
      const res = await call<string>('GET', `${servicesPath()}/${id}/logs`);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
      return res.body.includes('GET /hello/e2e') && res.body;
    });
    expect(logs).toContain('echo listening on 127.0.0.1:');

    // Followed live over a real connection: the history first, then what happens next.
    const stream = await events(id);
    try {
      expect(stream.response.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const history = await stream.readUntil((f) => f.event === 'running', 10_000);
      expect(history.map((f) => f.id)).toEqual(history.map((_, i) => i + 1));
      expect(history.every((f) => f.data.seq === f.id && f.data.type === f.event)).toBe(true);
      expect(history[0]?.event).toBe('admitted');
      const statuses = history.map((f) => f.data.data?.status);
      expect(statuses.filter((s, i) => s !== statuses[i - 1])).toEqual(['pending', 'starting', 'running']);

      const first = workloadOf(serviceState(id));
      expect(processRuns(first.supervisor) && processRuns(first.child)).toBe(true);
      expect(processesOfService(id).sort()).toEqual([first.supervisor.pid, first.child.pid].sort());

      const suspend = await call<Schemas['Operation']>('PATCH', `${servicesPath()}/${id}`, {
        body: { suspended: true },
        headers: { Prefer: 'wait=30' },
      });
      expect(suspend.status).toBe(202);
      expect(suspend.body).toMatchObject({ kind: 'suspend-service', status: 'succeeded' });
      const live = await stream.readUntil((f) => f.event === 'suspended', 10_000);
      const lastSeen = history.at(-1)?.id as number;
      expect(live.map((f) => f.id)).toEqual(live.map((_, i) => lastSeen + 1 + i));

      const suspended = (await getService(id)).body;
      expect(suspended).toMatchObject({ status: 'suspended', desired_state: 'suspended', endpoints: [] });
      await gone('the echo process', first.child);
      await gone('its supervisor', first.supervisor);
      expect(processesOfService(id)).toEqual([]);
      await expect(fetch(ownUrl, { signal: AbortSignal.timeout(5000) })).rejects.toThrow();
      const unavailable = await fetch(`${url}/`, { headers: { Authorization: `Bearer ${adminToken}` } });
      expect(unavailable.status).toBe(503);
      expect((await getQuota()).usage).toEqual({ ...zeroUsage, services: 1 });
    } finally {
      stream.close();
    }

    const resume = await call<Schemas['Operation']>('PATCH', `${servicesPath()}/${id}`, {
      body: { suspended: false },
      headers: { Prefer: 'wait=30' },
    });
    expect(resume.status).toBe(202);
    expect(resume.body).toMatchObject({ kind: 'resume-service', status: 'succeeded' });
    const resumed = (await getService(id)).body;
    expect(resumed.status).toBe('running');
    // The same URL as before the suspension, though the service listens on a new port now.
    expect(resumed.endpoints[0]?.url).toBe(`${url}/`);
    expect(await echo(url, '/again')).toMatchObject({ greeting: 'bonjour', path: '/again' });
    expect((await getQuota()).usage).toEqual({ ...zeroUsage, cpu: '100m', memory: '128Mi', services: 1 });
    const second = workloadOf(serviceState(id));
    expect(processRuns(second.child)).toBe(true);
    // The whole story, each event told once: the first run's are not told again for the second.
    const story = await storedEvents(id);
    expect(story.map((f) => f.id)).toEqual(story.map((_, i) => i + 1));
    const told = story.map((f) => `${f.data.at} ${f.event} ${f.data.message}`);
    expect(told.filter((line, i) => told.indexOf(line) !== i)).toEqual([]);
    expect(story.map((f) => f.event).slice(story.findIndex((f) => f.event === 'resume-requested'))).toEqual(
      expect.arrayContaining(['resume-requested', 'running']),
    );

    const removal = await call<Schemas['Operation']>('DELETE', `${servicesPath()}/${id}`, {
      headers: { Prefer: 'wait=30' },
    });
    expect(removal.status).toBe(202);
    expect(removal.body).toMatchObject({ kind: 'delete-service', status: 'succeeded' });
    await gone('the resumed echo process', second.child);
    await gone('its supervisor', second.supervisor);
    await nothingLeftOf(id);
    expect((await getQuota()).usage).toEqual(zeroUsage);
    expect((await call<Schemas['ServiceList']>('GET', servicesPath())).body.items).toEqual([]);
    expect((await getService(id)).status).toBe(404);
  }, 60_000);

  it('adopts services that still run after the API is killed, marks lost the one whose supervisor died, and resumes event streams after Last-Event-ID', async () => {
    await useNewProject('e2e-restart');
    const adoptedId = (await launch({ catalog_id: 'demo', package: 'echo', name: 'adopted' })).target
      ?.id as string;
    const lostId = (await launch({ catalog_id: 'demo', package: 'echo', name: 'lost' })).target?.id as string;
    const adoptedPath = new URL((await getService(adoptedId)).body.endpoints[0]?.url as string).pathname;
    const adoptedUrl = backendUrl(db.dataDir, adoptedId);
    const adopted = workloadOf(serviceState(adoptedId));
    const lost = workloadOf(serviceState(lostId));

    // Clients follow both services when the API dies under them.
    const adoptedStream = await events(adoptedId);
    const lostStream = await events(lostId);
    const seenAdopted = (await adoptedStream.readUntil((f) => f.event === 'running', 10_000)).at(-1)
      ?.id as number;
    const seenLost = (await lostStream.readUntil((f) => f.event === 'running', 10_000)).at(-1)?.id as number;

    const killedAt = new Date().toISOString();
    server.proc.kill('SIGKILL');
    await server.stop();
    expect(server.proc.signalCode).toBe('SIGKILL');
    for (const stream of [adoptedStream, lostStream]) {
      expect(await stream.readToEnd(10_000)).toEqual([]);
      expect(stream.ended).not.toBeNull();
      stream.close();
    }

    // While the API is down: services keep serving; one supervisor dies, orphaning its child.
    expect(await echo(adoptedUrl, '/while-down')).toMatchObject({ service: adoptedId });
    process.kill(lost.supervisor.pid, 'SIGKILL');
    await gone('the killed supervisor', lost.supervisor);
    expect(processRuns(lost.child)).toBe(true);

    server = await start();

    const adoptedNow = (await getService(adoptedId)).body;
    expect(adoptedNow.status).toBe('running');
    // The same gateway path on the new API process, and the very same service behind it.
    expect(new URL(adoptedNow.endpoints[0]?.url as string).pathname).toBe(adoptedPath);
    expect(backendUrl(db.dataDir, adoptedId)).toBe(adoptedUrl);
    expect(await echo(`${server.url}${adoptedPath.replace(/\/$/, '')}`, '/after-restart')).toMatchObject({
      service: adoptedId,
    });
    // Adopted, not restarted: the very same processes.
    expect(workloadOf(serviceState(adoptedId))).toEqual(adopted);
    expect(processRuns(adopted.supervisor) && processRuns(adopted.child)).toBe(true);

    const lostNow = await eventually('the service to be lost', async () => {
      const service = (await getService(lostId)).body;
      return service.status === 'lost' && service;
    });
    expect(lostNow.endpoints).toEqual([]);
    expect(lostNow.message).toEqual(expect.any(String));
    // The restarted API stopped what the dead supervisor left: nothing of the service runs.
    await gone('the orphaned echo process', lost.child);
    await nothingLeftOf(lostId);
    expect((await getQuota()).usage).toEqual({ ...zeroUsage, cpu: '100m', memory: '128Mi', services: 1 });

    // A client reconnecting with the last id it saw gets the rest, without a gap or a repeat.
    const lostResumed = await events(lostId, seenLost);
    const afterLost = await lostResumed
      .readUntil((f) => f.event === 'lost', 10_000)
      .finally(() => lostResumed.close());
    expect(afterLost.map((f) => f.id)).toEqual(afterLost.map((_, i) => seenLost + 1 + i));
    expect(afterLost.at(-1)?.data.data?.status).toBe('lost');
    // Only what happened since: nothing replayed from before the kill.
    expect(afterLost.filter((f) => f.data.at < killedAt)).toEqual([]);
    const lostHistory = await storedEvents(lostId);
    expect(lostHistory.map((f) => f.id)).toEqual(lostHistory.map((_, i) => i + 1));
    expect(frameSummary(lostHistory.filter((f) => f.id > seenLost))).toBe(frameSummary(afterLost));

    const adoptedResumed = await events(adoptedId, seenAdopted);
    try {
      const suspend = await call<Schemas['Operation']>('PATCH', `${servicesPath()}/${adoptedId}`, {
        body: { suspended: true },
      });
      expect(suspend.status).toBe(202);
      const afterAdopted = await adoptedResumed.readUntil((f) => f.event === 'suspended', 15_000);
      expect(afterAdopted.filter((f) => f.data.at < killedAt)).toEqual([]);
      expect(afterAdopted.map((f) => f.id)).toEqual(afterAdopted.map((_, i) => seenAdopted + 1 + i));
      expect(afterAdopted.map((f) => f.event)).toEqual(
        expect.arrayContaining(['suspend-requested', 'suspended']),
      );
    } finally {
      adoptedResumed.close();
    }
    await gone('the adopted echo process, once suspended', adopted.child);

    const removal = await call<Schemas['Operation']>('DELETE', servicesPath(), {
      headers: { Prefer: 'wait=30' },
    });
    expect(removal.status).toBe(202);
    expect(removal.body).toMatchObject({ kind: 'delete-services', status: 'succeeded' });
    expect([...((removal.body.result?.done as string[]) ?? [])].sort()).toEqual([adoptedId, lostId].sort());
    await nothingLeftOf(adoptedId);
    expect((await getQuota()).usage).toEqual(zeroUsage);
  }, 60_000);

  it('ends a crashing package failed, with its exit code and last log lines, and gives its quota back', async () => {
    await useNewProject('e2e-crash');
    const op = await launch({
      catalog_id: 'test',
      package: 'probe',
      options: { mode: 'crash', exit_code: 42 },
    });
    const id = op.target?.id as string;
    expect(op).toMatchObject({ kind: 'launch-service', status: 'failed', done: true, result: null });
    expect(op.error).toMatchObject({
      type: 'https://atrium.dev/problems/launch-failed',
      service_id: id,
      exit_code: 42,
      log_tail: expect.arrayContaining(['probe crashing now']),
    });

    const failed = (await getService(id)).body;
    expect(failed).toMatchObject({ status: 'failed', exit_code: 42, endpoints: [] });
    expect(failed.log_tail).toContain('probe crashing now');
    expect(failed.message).toMatch(/exited with code 42/);
    expect((await getQuota()).usage).toEqual(zeroUsage);
    await nothingLeftOf(id);

    const removal = await call<Schemas['Operation']>('DELETE', `${servicesPath()}/${id}`, {
      headers: { Prefer: 'wait=30' },
    });
    expect(removal.status).toBe(202);
    expect(removal.body).toMatchObject({ kind: 'delete-service', status: 'succeeded' });
    expect((await getService(id)).status).toBe(404);
    expect((await call<Schemas['ServiceList']>('GET', servicesPath())).body.items).toEqual([]);
    expect((await getQuota()).usage).toEqual(zeroUsage);
  }, 60_000);
});
