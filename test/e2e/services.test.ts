// Services end to end, with the real command: the API runs as `atrium serve` (dist/) and is driven
// through the generated client (@atrium/client), services run as real processes under their
// supervisors, and what the API says is checked against the operating system. Launch, serve, log,
// stream events, suspend, resume, delete; survive the API being killed (adoption, loss, event
// streams resumed with Last-Event-ID); a package that crashes ends failed.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createAtriumClient, unwrap, type AtriumClient, type Schemas } from '@atrium/client';
import { createTestDatabase, testEngines, type TestDatabase } from '../fixtures/databases.js';
import { requireBuild, startAtrium, waitForStatus, type AtriumProcess } from '../fixtures/process.js';
import {
  collect,
  eventSummary,
  expectAccepted,
  expectStatus,
  FollowedEvents,
  writeTestCatalogsConfig,
} from '../fixtures/e2e.js';
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

const adminToken = 'atr_e2eServicesAdmin0123456789';
const zeroUsage = { cpu: '0', memory: '0', gpu: 0, services: 0, concurrent_jobs: 0, storage: '0' };

/** The ids of events, as numbers (they are sequence numbers). */
const idsOf = (events: { id: string }[]) => events.map((e) => Number(e.id));

/** The supervisor and child of a service, as its state file names them (both must exist). */
function workloadOf(state: SupervisorStateFile | null): { supervisor: ProcessRef; child: ProcessRef } {
  if (!state?.child) throw new Error(`no running child in ${JSON.stringify(state)}`);
  return { supervisor: state.supervisor, child: state.child };
}

describe.each(testEngines())('services on the local runtime, end to end (%s)', (engine) => {
  let db: TestDatabase;
  let server: AtriumProcess;
  /** The client of the running server (a new one after a restart: the port changes). */
  let client: AtriumClient;
  let env: Record<string, string>;
  /** Every service launched here, so that none survives the tests whatever happens. */
  const launched = new Set<string>();
  /** The project of the running test: each test has its own, so that one failing leaves the others be. */
  let projectId = '';
  const servicePath = (serviceId: string) => ({ path: { projectId, serviceId } });

  async function useNewProject(id: string): Promise<void> {
    expectStatus(await client.POST('/projects', { body: { id, name: id } }), 201);
    projectId = id;
  }

  async function launch(body: Schemas['ServiceLaunch']): Promise<Schemas['Operation']> {
    const res = await client.POST('/projects/{projectId}/services', {
      params: { path: { projectId }, header: { Prefer: 'wait=30' } },
      body,
    });
    const op = expectAccepted(res);
    expect(res.response.headers.get('location')).toBe(`/api/v1/operations/${op.id}`);
    expect(res.response.headers.get('preference-applied')).toBe('wait=30');
    if (op.target?.type === 'service') launched.add(op.target.id);
    return op;
  }

  const getService = async (serviceId: string) =>
    unwrap(
      await client.GET('/projects/{projectId}/services/{serviceId}', { params: servicePath(serviceId) }),
    );
  const serviceStatusCode = async (serviceId: string) =>
    (await client.GET('/projects/{projectId}/services/{serviceId}', { params: servicePath(serviceId) }))
      .response.status;
  const listServices = () =>
    collect(client.paginate('/projects/{projectId}/services', { params: { path: { projectId } } }));
  const getQuota = async () =>
    unwrap(await client.GET('/projects/{projectId}/quota', { params: { path: { projectId } } }));
  const serviceState = (id: string) => readServiceState(db.dataDir, id);
  const setSuspended = async (serviceId: string, suspended: boolean, wait = true) =>
    expectAccepted(
      await client.PATCH('/projects/{projectId}/services/{serviceId}', {
        params: { ...servicePath(serviceId), header: wait ? { Prefer: 'wait=30' } : {} },
        body: { suspended },
      }),
    );
  const deleteService = async (serviceId: string) =>
    expectAccepted(
      await client.DELETE('/projects/{projectId}/services/{serviceId}', {
        params: { ...servicePath(serviceId), header: { Prefer: 'wait=30' } },
      }),
    );

  /**
   * The service's events, followed live (after `lastEventId` when given). `maxRetries: 0` shows a
   * dropped connection as the end of the stream instead of reconnecting.
   */
  function events(
    serviceId: string,
    { lastEventId, maxRetries }: { lastEventId?: number; maxRetries?: number } = {},
  ) {
    return new FollowedEvents((signal) =>
      client.events('/projects/{projectId}/services/{serviceId}/events', {
        params: servicePath(serviceId),
        signal,
        ...(lastEventId === undefined ? {} : { lastEventId: String(lastEventId) }),
        ...(maxRetries === undefined ? {} : { maxRetries }),
      }),
    );
  }

  async function storedEvents(serviceId: string) {
    const stream = new FollowedEvents((signal) =>
      client.events('/projects/{projectId}/services/{serviceId}/events', {
        params: servicePath(serviceId),
        follow: false,
        signal,
      }),
    );
    try {
      return await stream.readToEnd(10_000);
    } finally {
      stream.close();
    }
  }

  /**
   * A GET to an echo service (with the token: the gateway asks for it, the service ignores it). The
   * gateway's URLs are the service's own API, not paths of Atrium's: plain fetch.
   */
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
    client = createAtriumClient({ baseUrl: started.url, token: adminToken });
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

    const running = await getService(id);
    expect(running.status).toBe('running');
    // Reached through the gateway, at a URL of Atrium's: the service's own port stays internal.
    expect(running.endpoints).toEqual([
      { port: 'http', protocol: 'http', url: `${server.url}/services/${projectId}/${id}/http/` },
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
      const res = await client.GET('/projects/{projectId}/services/{serviceId}/logs', {
        params: servicePath(id),
        parseAs: 'text',
      });
      const text = expectStatus(res, 200);
      expect(res.response.headers.get('content-type')).toMatch(/^text\/plain/);
      return text.includes('GET /hello/e2e') && text;
    });
    expect(logs).toContain('echo listening on 127.0.0.1:');

    // The stream is served as Server-Sent Events.
    const head = await client.GET('/projects/{projectId}/services/{serviceId}/events', {
      params: servicePath(id),
      headers: { Accept: 'text/event-stream' },
      parseAs: 'stream',
    });
    expect(head.response.status).toBe(200);
    expect(head.response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    await head.data?.cancel();

    // Followed live over a real connection: the history first, then what happens next.
    const stream = events(id);
    try {
      const history = await stream.readUntil((e) => e.event === 'running', 10_000);
      expect(idsOf(history)).toEqual(history.map((_, i) => i + 1));
      expect(history.every((e) => String(e.data.seq) === e.id && e.data.type === e.event)).toBe(true);
      expect(history[0]?.event).toBe('admitted');
      const statuses = history.map((e) => e.data.data?.status);
      expect(statuses.filter((s, i) => s !== statuses[i - 1])).toEqual(['pending', 'starting', 'running']);

      const first = workloadOf(serviceState(id));
      expect(processRuns(first.supervisor) && processRuns(first.child)).toBe(true);
      expect(processesOfService(id).sort()).toEqual([first.supervisor.pid, first.child.pid].sort());

      const suspend = await setSuspended(id, true);
      expect(suspend).toMatchObject({ kind: 'suspend-service', status: 'succeeded' });
      const live = await stream.readUntil((e) => e.event === 'suspended', 10_000);
      const lastSeen = Number(history.at(-1)?.id);
      expect(idsOf(live)).toEqual(live.map((_, i) => lastSeen + 1 + i));

      const suspended = await getService(id);
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

    const resume = await setSuspended(id, false);
    expect(resume).toMatchObject({ kind: 'resume-service', status: 'succeeded' });
    const resumed = await getService(id);
    expect(resumed.status).toBe('running');
    // The same URL as before the suspension, though the service listens on a new port now.
    expect(resumed.endpoints[0]?.url).toBe(`${url}/`);
    expect(await echo(url, '/again')).toMatchObject({ greeting: 'bonjour', path: '/again' });
    expect((await getQuota()).usage).toEqual({ ...zeroUsage, cpu: '100m', memory: '128Mi', services: 1 });
    const second = workloadOf(serviceState(id));
    expect(processRuns(second.child)).toBe(true);
    // The whole story, each event told once: the first run's are not told again for the second.
    const story = await storedEvents(id);
    expect(idsOf(story)).toEqual(story.map((_, i) => i + 1));
    const told = story.map((e) => `${e.data.at} ${e.event} ${e.data.message}`);
    expect(told.filter((line, i) => told.indexOf(line) !== i)).toEqual([]);
    expect(story.map((e) => e.event).slice(story.findIndex((e) => e.event === 'resume-requested'))).toEqual(
      expect.arrayContaining(['resume-requested', 'running']),
    );

    const removal = await deleteService(id);
    expect(removal).toMatchObject({ kind: 'delete-service', status: 'succeeded' });
    await gone('the resumed echo process', second.child);
    await gone('its supervisor', second.supervisor);
    await nothingLeftOf(id);
    expect((await getQuota()).usage).toEqual(zeroUsage);
    expect(await listServices()).toEqual([]);
    expect(await serviceStatusCode(id)).toBe(404);
  }, 60_000);

  it('adopts services that still run after the API is killed, marks lost the one whose supervisor died, and resumes event streams after Last-Event-ID', async () => {
    await useNewProject('e2e-restart');
    const adoptedId = (await launch({ catalog_id: 'demo', package: 'echo', name: 'adopted' })).target
      ?.id as string;
    const lostId = (await launch({ catalog_id: 'demo', package: 'echo', name: 'lost' })).target?.id as string;
    const adoptedPath = new URL((await getService(adoptedId)).endpoints[0]?.url as string).pathname;
    const adoptedUrl = backendUrl(db.dataDir, adoptedId);
    const adopted = workloadOf(serviceState(adoptedId));
    const lost = workloadOf(serviceState(lostId));

    // Clients follow both services when the API dies under them; they see the drop (no retries):
    // they reconnect themselves below, after the restart, with the last id they saw.
    const adoptedStream = events(adoptedId, { maxRetries: 0 });
    const lostStream = events(lostId, { maxRetries: 0 });
    const seenAdopted = Number(
      (await adoptedStream.readUntil((e) => e.event === 'running', 10_000)).at(-1)?.id,
    );
    const seenLost = Number((await lostStream.readUntil((e) => e.event === 'running', 10_000)).at(-1)?.id);

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

    const adoptedNow = await getService(adoptedId);
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
      const service = await getService(lostId);
      return service.status === 'lost' && service;
    });
    expect(lostNow.endpoints).toEqual([]);
    expect(lostNow.message).toEqual(expect.any(String));
    // The restarted API stopped what the dead supervisor left: nothing of the service runs.
    await gone('the orphaned echo process', lost.child);
    await nothingLeftOf(lostId);
    expect((await getQuota()).usage).toEqual({ ...zeroUsage, cpu: '100m', memory: '128Mi', services: 1 });

    // A client reconnecting with the last id it saw gets the rest, without a gap or a repeat.
    const lostResumed = events(lostId, { lastEventId: seenLost });
    const afterLost = await lostResumed
      .readUntil((e) => e.event === 'lost', 10_000)
      .finally(() => lostResumed.close());
    expect(idsOf(afterLost)).toEqual(afterLost.map((_, i) => seenLost + 1 + i));
    expect(afterLost.at(-1)?.data.data?.status).toBe('lost');
    // Only what happened since: nothing replayed from before the kill.
    expect(afterLost.filter((e) => e.data.at < killedAt)).toEqual([]);
    const lostHistory = await storedEvents(lostId);
    expect(idsOf(lostHistory)).toEqual(lostHistory.map((_, i) => i + 1));
    expect(eventSummary(lostHistory.filter((e) => Number(e.id) > seenLost))).toBe(eventSummary(afterLost));

    const adoptedResumed = events(adoptedId, { lastEventId: seenAdopted });
    try {
      await setSuspended(adoptedId, true, false);
      const afterAdopted = await adoptedResumed.readUntil((e) => e.event === 'suspended', 15_000);
      expect(afterAdopted.filter((e) => e.data.at < killedAt)).toEqual([]);
      expect(idsOf(afterAdopted)).toEqual(afterAdopted.map((_, i) => seenAdopted + 1 + i));
      expect(afterAdopted.map((e) => e.event)).toEqual(
        expect.arrayContaining(['suspend-requested', 'suspended']),
      );
    } finally {
      adoptedResumed.close();
    }
    await gone('the adopted echo process, once suspended', adopted.child);

    const removal = expectAccepted(
      await client.DELETE('/projects/{projectId}/services', {
        params: { path: { projectId }, header: { Prefer: 'wait=30' } },
      }),
    );
    expect(removal).toMatchObject({ kind: 'delete-services', status: 'succeeded' });
    expect([...((removal.result?.done as string[]) ?? [])].sort()).toEqual([adoptedId, lostId].sort());
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

    const failed = await getService(id);
    expect(failed).toMatchObject({ status: 'failed', exit_code: 42, endpoints: [] });
    expect(failed.log_tail).toContain('probe crashing now');
    expect(failed.message).toMatch(/exited with code 42/);
    expect((await getQuota()).usage).toEqual(zeroUsage);
    await nothingLeftOf(id);

    const removal = await deleteService(id);
    expect(removal).toMatchObject({ kind: 'delete-service', status: 'succeeded' });
    expect(await serviceStatusCode(id)).toBe(404);
    expect(await listServices()).toEqual([]);
    expect((await getQuota()).usage).toEqual(zeroUsage);
  }, 60_000);
});
