// Quota admission under concurrency (launchService): launches that race for the last places of a
// quota are admitted exactly as many times as there is room, on every database engine. The echo
// services admitted really start; they are deleted (and checked gone) at the end of each case.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Response } from 'supertest';
import type { components } from '../../generated/openapi.js';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { eventually, processesOfService } from '../fixtures/service-processes.js';

type Schemas = components['schemas'];
type Login = Awaited<ReturnType<TestApp['login']>>;

const launches = 50;
const zeroUsage = { cpu: '0', memory: '0', gpu: 0, services: 0, concurrent_jobs: 0, storage: '0' };

describe.each(testEngines())('launchService admission under concurrency (%s)', (engine) => {
  let t: TestApp;
  let admin: Login;

  beforeAll(async () => {
    t = await createTestApp(engine);
    admin = await t.login('root', { admin: true });
  });
  afterAll(() => t?.close());

  /** A user with a personal project whose limits the administrator has just set. */
  async function projectWithLimits(username: string, limits: Schemas['QuotaLimitsUpdate']) {
    const user = await t.login(username);
    const projectId = `user-${username}`;
    await t.http.get('/api/v1/me').set('Authorization', user.auth).expect(200);
    const quota = await t.http
      .patch(`/api/v1/projects/${projectId}/quota`)
      .set('Authorization', admin.auth)
      .send({ limits })
      .expect(200);
    expect(quota.body.usage).toEqual(zeroUsage);
    return { user, projectId };
  }

  /** Fires every launch at once; returns the answers split into admissions and refusals. */
  async function launchConcurrently(auth: string, projectId: string) {
    const answers: Response[] = await Promise.all(
      Array.from({ length: launches }, (_, i) =>
        t.http
          .post(`/api/v1/projects/${projectId}/services`)
          .set('Authorization', auth)
          .send({ catalog_id: 'demo', package: 'echo', version: '1.0.0', name: `echo-${i}` }),
      ),
    );
    const admitted = answers.filter((a) => a.status === 202);
    const refused = answers.filter((a) => a.status !== 202);
    const ids = admitted.map((a) => (a.body as Schemas['Operation']).target?.id as string);
    return { admitted, refused, ids };
  }

  /** The quota holds the five admitted services, and the project lists exactly them. */
  async function expectFiveHeld(auth: string, projectId: string, ids: string[]) {
    const quota = await t.http
      .get(`/api/v1/projects/${projectId}/quota`)
      .set('Authorization', auth)
      .expect(200);
    expect(quota.body.usage).toMatchObject({ services: 5, cpu: '500m', memory: '640Mi' });
    const list = await t.http
      .get(`/api/v1/projects/${projectId}/services?limit=200`)
      .set('Authorization', auth)
      .expect(200);
    expect((list.body as Schemas['ServiceList']).items.map((s) => s.id).sort()).toEqual([...ids].sort());
  }

  /**
   * Waits for the admitted services to run (a deletion racing a supervisor's start can fail, which
   * is not what this file tests), then deletes them in one operation and checks nothing remains.
   */
  async function deleteAll(auth: string, projectId: string, ids: string[]) {
    await eventually('the admitted services to run', async () => {
      const list = await t.http.get(`/api/v1/projects/${projectId}/services`).set('Authorization', auth);
      const items = (list.body as Schemas['ServiceList']).items;
      return items.length === ids.length && items.every((s) => s.status === 'running');
    });
    const res = await t.http
      .delete(`/api/v1/projects/${projectId}/services`)
      .set('Authorization', auth)
      .set('Prefer', 'wait=30')
      .expect(202);
    const op = res.body as Schemas['Operation'];
    expect(op).toMatchObject({ kind: 'delete-services', status: 'succeeded', done: true });
    expect([...((op.result?.done as string[]) ?? [])].sort()).toEqual([...ids].sort());
    for (const id of ids) {
      await eventually(`every process of ${id} to exit`, () => processesOfService(id).length === 0);
    }
    const quota = await t.http
      .get(`/api/v1/projects/${projectId}/quota`)
      .set('Authorization', auth)
      .expect(200);
    expect(quota.body.usage).toEqual(zeroUsage);
    const list = await t.http
      .get(`/api/v1/projects/${projectId}/services`)
      .set('Authorization', auth)
      .expect(200);
    expect(list.body.items).toEqual([]);
  }

  it('admits exactly 5 of 50 concurrent launches against a quota of 5 services; the 45 others are quota-exceeded (409)', async () => {
    const { user, projectId } = await projectWithLimits('ada', { services: 5, cpu: '64', memory: '64Gi' });

    const { admitted, refused, ids } = await launchConcurrently(user.auth, projectId);

    expect(admitted).toHaveLength(5);
    expect(refused).toHaveLength(45);
    for (const answer of admitted) {
      expect(answer.body).toMatchObject({ kind: 'launch-service', project_id: projectId });
      expect(answer.headers.location).toBe(`/api/v1/operations/${answer.body.id}`);
    }
    expect(new Set(ids).size).toBe(5);
    for (const answer of refused) {
      expectProblem(answer, 409, 'quota-exceeded');
      expect(answer.body).toMatchObject({ resource: 'services', requested: 1, usage: 5, limit: 5 });
    }

    await expectFiveHeld(user.auth, projectId, ids);

    await deleteAll(user.auth, projectId, ids);
  }, 60_000);

  it('admits exactly 5 launches of 100m against a cpu quota of 500m; the refusals name cpu (409)', async () => {
    const { user, projectId } = await projectWithLimits('bea', {
      services: 100,
      cpu: '500m',
      memory: '64Gi',
    });

    const { admitted, refused, ids } = await launchConcurrently(user.auth, projectId);

    expect(admitted).toHaveLength(5);
    expect(refused).toHaveLength(45);
    for (const answer of refused) {
      expectProblem(answer, 409, 'quota-exceeded');
      expect(answer.body).toMatchObject({ resource: 'cpu', requested: '100m', usage: '500m', limit: '500m' });
    }
    await expectFiveHeld(user.auth, projectId, ids);

    await deleteAll(user.auth, projectId, ids);
  }, 60_000);
});
