// What Atrium records of services across its own restarts: a service whose supervisor died while
// Atrium was down is found lost once, and that transition is one event however often Atrium starts.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { listEvents } from '../../src/db/events.js';
import { createLogger } from '../../src/log.js';
import { createServices } from '../../src/services/index.js';
import { systemClock } from '../../src/clock.js';
import { createTestApp, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { processRuns, readServiceState } from '../fixtures/service-processes.js';
import { echo, launch, quickRuntime, serviceTestConfig, waitForService } from '../fixtures/services.js';

type Login = Awaited<ReturnType<TestApp['login']>>;

describe.each(testEngines())('services across restarts of Atrium (%s)', (engine) => {
  let t: TestApp;
  let alice: Login;

  beforeAll(async () => {
    t = await createTestApp(engine, { config: { ...serviceTestConfig, localRuntime: quickRuntime } });
    alice = await t.login('alice');
  });
  afterAll(() => t.close());

  /** Atrium starting again over the same database and data directory: a new set of services. */
  const restart = async (serviceId: string) => {
    const again = createServices({
      config: t.config,
      database: t.database,
      clock: systemClock,
      log: createLogger('silent'),
      build: { version: '0.0.0-test', commit: null, builtAt: null },
    });
    await again.serviceReconciler.start();
    await again.serviceReconciler.settled(serviceId);
    await again.serviceReconciler.close();
  };

  it('records a service lost once, not again at every start', async () => {
    const { serviceId } = await launch(t, alice.auth, 'user-alice', echo);
    await waitForService(t, alice.auth, 'user-alice', serviceId, (s) => s.status === 'running');
    // Atrium stops (its workloads keep running); then the service's supervisor dies.
    await t.services.serviceReconciler.close();
    const state = readServiceState(t.config.dataDir, serviceId);
    if (!state) throw new Error('the service has no supervisor state');
    process.kill(state.supervisor.pid, 'SIGKILL');
    for (let i = 0; i < 2400 && processRuns(state.supervisor); i++) await sleep(25);

    for (let start = 0; start < 3; start++) await restart(serviceId);

    const events = await listEvents(t.database.knex, 'service', serviceId, 0, 1000);
    expect(events.filter((e) => e.type === 'lost')).toHaveLength(1);
    const service = await t.http
      .get(`/api/v1/projects/user-alice/services/${serviceId}`)
      .set('Authorization', alice.auth)
      .expect(200);
    expect(service.body.status).toBe('lost');
  }, 60_000);
});
