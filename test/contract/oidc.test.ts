// OpenID Connect bearer authentication against a real provider on loopback: discovery, JWKS caching
// and key rotation, the claims that make a user, and every way a token is refused.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { exportSPKI, SignJWT, UnsecuredJWT, type JWTPayload } from 'jose';
import type { ConfigInput } from '../../src/config.js';
import { createTestApp, expectProblem, type TestApp } from '../fixtures/app.js';
import { testEngines } from '../fixtures/databases.js';
import { OidcProvider } from '../fixtures/oidc-provider.js';

type Reply = { status: number; headers: Record<string, string>; body: Record<string, unknown> };

const adminGroup = 'atrium-admins';

function oidcConfig(provider: OidcProvider, overrides: Record<string, unknown> = {}): ConfigInput {
  return {
    auth: {
      oidc: {
        issuer: provider.issuer,
        audience: provider.audience,
        adminGroups: [adminGroup],
        jwksCooldownMs: 0,
        ...overrides,
      },
    },
  };
}

/** A 401 problem whose detail says why, with the Bearer challenge RFC 6750 asks for. */
function expectRefused(res: Reply, detail: RegExp): void {
  expectProblem(res, 401, 'unauthorized');
  expect(res.body.detail).toMatch(detail);
  expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="atrium", error="invalid_token"/);
}

describe.each(testEngines())('OIDC bearer authentication (%s)', (engine) => {
  describe('getMe with an access token of the identity provider', () => {
    let provider: OidcProvider;
    let t: TestApp;
    const me = (token: string) => t.http.get('/api/v1/me').set('Authorization', `Bearer ${token}`);

    beforeAll(async () => {
      provider = await OidcProvider.start();
      t = await createTestApp(engine, { config: oidcConfig(provider) });
    });
    afterAll(async () => {
      await t.close();
      await provider.stop();
    });

    it('signs in the user its claims describe and gives them a personal project (200)', async () => {
      const token = await provider.sign({
        sub: 'f3b1c2d4-ada',
        preferred_username: 'ada.lovelace',
        name: 'Ada Lovelace',
        email: 'ada@lab.test',
        groups: ['analysts', 'ml'],
      });
      const res = await me(token).expect(200);
      expect(res.body.user).toMatchObject({
        username: 'ada.lovelace',
        name: 'Ada Lovelace',
        email: 'ada@lab.test',
        groups: ['analysts', 'ml'],
        admin: false,
      });
      expect(res.body.user.id).toMatch(/^usr_/);
      expect(res.body.auth).toEqual({ method: 'oidc', scopes: ['read', 'write'], token_id: null });
      expect(res.body.projects).toHaveLength(1);
      expect(res.body.projects[0]).toMatchObject({
        id: 'user-ada-lovelace',
        kind: 'personal',
        role: 'owner',
      });
    });

    it('finds the same user on a later sign-in and updates their profile from the new claims', async () => {
      const claims = { sub: 'f3b1c2d4-bob', preferred_username: 'bob', name: 'Bob', groups: ['analysts'] };
      const first = await me(await provider.sign(claims)).expect(200);
      const second = await me(
        await provider.sign({ ...claims, name: 'Robert Jones', email: 'bob@lab.test', groups: ['ml'] }),
      ).expect(200);
      expect(second.body.user).toMatchObject({
        id: first.body.user.id,
        username: 'bob',
        name: 'Robert Jones',
        email: 'bob@lab.test',
        groups: ['ml'],
      });
      expect(second.body.projects.map((p: { id: string }) => p.id)).toEqual(['user-bob']);
    });

    it('keys users by subject, so another subject claiming a taken username is someone else', async () => {
      const owner = await me(await provider.sign({ sub: 'sub-carol-1', preferred_username: 'carol' })).expect(
        200,
      );
      const other = await me(await provider.sign({ sub: 'sub-carol-2', preferred_username: 'carol' })).expect(
        200,
      );
      expect(other.body.user.id).not.toBe(owner.body.user.id);
      expect(other.body.user.username).toMatch(/^carol-[a-z0-9]{4}$/);
    });

    it('falls back to the subject when the token has no username claim', async () => {
      const res = await me(await provider.sign({ sub: 'service-account-7' })).expect(200);
      expect(res.body.user).toMatchObject({
        username: 'service-account-7',
        name: null,
        email: null,
        groups: [],
      });
    });

    it('makes members of an admin group administrators, as of their latest sign-in (200, 403)', async () => {
      const users = (token: string) => t.http.get('/api/v1/users').set('Authorization', `Bearer ${token}`);
      const grace = { sub: 'sub-grace', preferred_username: 'grace' };

      const asAdmin = await provider.sign({ ...grace, groups: ['ml', adminGroup] });
      expect((await me(asAdmin).expect(200)).body.user.admin).toBe(true);
      const list = await users(asAdmin).expect(200);
      expect(list.body.items.map((u: { username: string }) => u.username)).toContain('grace');

      const outsider = await provider.sign({ sub: 'sub-linus', preferred_username: 'linus', groups: ['ml'] });
      expectProblem(await users(outsider), 403, 'forbidden');

      const demoted = await provider.sign({ ...grace, groups: ['ml'] });
      expectProblem(await users(demoted), 403, 'forbidden');
      expect((await me(demoted).expect(200)).body.user.admin).toBe(false);
    });

    it('accepts a token without a key id when a single published key fits it (200)', async () => {
      const token = await provider.sign({ sub: 'sub-no-kid', preferred_username: 'nokid' }, { kid: null });
      expect((await me(token).expect(200)).body.user.username).toBe('nokid');
    });

    it('accepts a token expired by less than the clock tolerance (200)', async () => {
      const token = await provider.sign({ sub: 'sub-skewed' }, { expiresInSec: -5 });
      await me(token).expect(200);
    });

    it('refuses an expired token and says so (401)', async () => {
      const token = await provider.sign({ sub: 'sub-late' }, { expiresInSec: -3600 });
      expectRefused(await me(token), /expired/);
    });

    it('refuses a token for another audience (401)', async () => {
      const token = await provider.sign({ sub: 'sub-ada', aud: 'another-client' });
      expectRefused(await me(token), /"aud"/);
    });

    it('refuses a token of another issuer, even signed with a published key (401)', async () => {
      const token = await provider.sign({ sub: 'sub-ada', iss: 'http://127.0.0.1:1/realms/elsewhere' });
      expectRefused(await me(token), /"iss"/);
    });

    it('refuses a token without a subject, or with one that is not a string (401)', async () => {
      expectRefused(await me(await provider.sign({ preferred_username: 'nobody' })), /"sub"/);
      expectRefused(await me(await provider.sign({ sub: 42, preferred_username: 'number' })), /"sub"/);
      expectRefused(await me(await provider.sign({ sub: '', preferred_username: 'empty' })), /"sub"/);
    });

    it('refuses a token without an expiry (401)', async () => {
      expectRefused(await me(await provider.sign({ sub: 'sub-forever', exp: undefined })), /"exp"/);
    });

    it('refuses a token signed by a key the provider never published (401)', async () => {
      const stranger = await OidcProvider.generateKey('RS256');
      expectRefused(await me(await provider.sign({ sub: 'sub-ada' }, { key: stranger })), /unknown key/);
    });

    it("refuses a token signed by another key under a published key's id (401)", async () => {
      const impostor = await OidcProvider.generateKey('RS256', provider.signingKey.kid);
      expectRefused(await me(await provider.sign({ sub: 'sub-ada' }, { key: impostor })), /signature/);
    });

    it('refuses an unsigned token (alg "none") (401)', async () => {
      const claims: JWTPayload = { sub: 'sub-ada', iss: provider.issuer, aud: provider.audience };
      const token = new UnsecuredJWT(claims).setExpirationTime('5m').encode();
      expectRefused(await me(token), /algorithm that is not accepted/);
    });

    it("refuses an HS256 token keyed with the provider's public key (401)", async () => {
      const secret = new TextEncoder().encode(await exportSPKI(provider.signingKey.publicKey));
      const token = await new SignJWT({ sub: 'sub-ada', iss: provider.issuer, aud: provider.audience })
        .setProtectedHeader({ alg: 'HS256', kid: provider.signingKey.kid })
        .setExpirationTime('5m')
        .sign(secret);
      expectRefused(await me(token), /algorithm that is not accepted/);
    });

    it('refuses a bearer value that is not a JWT (401)', async () => {
      for (const garbage of ['not-a-jwt', 'a.b.c', 'x.y', '%%%']) {
        expectRefused(await me(garbage), /not a valid JWT/);
      }
    });

    it('accepts a token signed with an ES256 key the provider publishes (200)', async () => {
      const ecKey = await OidcProvider.generateKey('ES256');
      provider.publish(ecKey);
      const res = await me(
        await provider.sign({ sub: 'sub-edsger', preferred_username: 'edsger' }, { key: ecKey }),
      ).expect(200);
      expect(res.body.user.username).toBe('edsger');
    });
  });

  describe('a provider configured with a client id instead of an audience', () => {
    let provider: OidcProvider;
    let t: TestApp;
    const me = (token: string) => t.http.get('/api/v1/me').set('Authorization', `Bearer ${token}`);

    beforeAll(async () => {
      provider = await OidcProvider.start();
      t = await createTestApp(engine, {
        config: oidcConfig(provider, { audience: null, clientId: 'atrium-ui' }),
      });
    });
    afterAll(async () => {
      await t.close();
      await provider.stop();
    });

    it('accepts tokens issued to that client, by azp or by aud (200)', async () => {
      await me(await provider.sign({ sub: 'sub-azp', aud: 'account', azp: 'atrium-ui' })).expect(200);
      await me(await provider.sign({ sub: 'sub-aud', aud: ['account', 'atrium-ui'], azp: undefined })).expect(
        200,
      );
    });

    it('refuses tokens the provider issued to its other clients (401)', async () => {
      expectRefused(
        await me(await provider.sign({ sub: 'sub-x', aud: 'account', azp: 'grafana' })),
        /not issued to client "atrium-ui"/,
      );
      expectRefused(
        await me(await provider.sign({ sub: 'sub-y', aud: 'grafana', azp: undefined })),
        /not issued to client/,
      );
    });
  });

  describe('finding the keys', () => {
    let provider: OidcProvider;
    const apps: TestApp[] = [];
    const appWith = async (overrides: Record<string, unknown>) => {
      const app = await createTestApp(engine, { config: oidcConfig(provider, overrides) });
      apps.push(app);
      return app;
    };
    const me = (t: TestApp, token: string) =>
      t.http.get('/api/v1/me').set('Authorization', `Bearer ${token}`);

    beforeAll(async () => {
      provider = await OidcProvider.start();
    });
    afterAll(async () => {
      for (const app of apps) await app.close();
      await provider.stop();
    });

    it("discovers the JWKS from the issuer's well-known document, once, and caches the keys", async () => {
      const before = { ...provider.fetches };
      const t = await appWith({});
      await me(t, await provider.sign({ sub: 'sub-discover' })).expect(200);
      await me(t, await provider.sign({ sub: 'sub-discover-2' })).expect(200);
      expect(provider.fetches.discovery - before.discovery).toBe(1);
      expect(provider.fetches.jwks - before.jwks).toBe(1);
    });

    it('discovers once for concurrent first requests', async () => {
      const before = { ...provider.fetches };
      const t = await appWith({});
      const tokens = await Promise.all(
        ['a', 'b', 'c', 'd', 'e'].map((who) => provider.sign({ sub: `sub-concurrent-${who}` })),
      );
      const replies = await Promise.all(tokens.map((token) => me(t, token)));
      expect(replies.map((res) => res.status)).toEqual([200, 200, 200, 200, 200]);
      expect(provider.fetches.discovery - before.discovery).toBe(1);
      expect(provider.fetches.jwks - before.jwks).toBe(1);
    });

    it('uses a configured JWKS URI directly, without discovery', async () => {
      const before = { ...provider.fetches };
      const t = await appWith({ jwksUri: provider.jwksUri });
      await me(t, await provider.sign({ sub: 'sub-direct' })).expect(200);
      expect(provider.fetches.discovery).toBe(before.discovery);
      expect(provider.fetches.jwks - before.jwks).toBe(1);
    });

    it('refuses to use a discovery document that names another issuer (503)', async () => {
      const t = await appWith({ issuer: `${provider.origin}/realms/atrium/` });
      const token = await provider.sign({ sub: 'sub-ada', iss: `${provider.origin}/realms/atrium/` });
      const res = await me(t, token);
      expectProblem(res, 503, 'unavailable');
      expect(res.body.detail).toMatch(/issuer/);
    });
  });

  describe('key rotation at the provider', () => {
    let provider: OidcProvider;
    const apps: TestApp[] = [];
    const me = (t: TestApp, token: string) =>
      t.http.get('/api/v1/me').set('Authorization', `Bearer ${token}`);

    beforeAll(async () => {
      provider = await OidcProvider.start();
    });
    afterAll(async () => {
      for (const app of apps) await app.close();
      await provider.stop();
    });

    it('accepts tokens of a new key id without a restart, by fetching the JWKS again', async () => {
      const t = await createTestApp(engine, { config: oidcConfig(provider) });
      apps.push(t);
      const first = provider.signingKey;
      await me(t, await provider.sign({ sub: 'sub-rotation' })).expect(200);
      const fetched = provider.fetches.jwks;

      const second = await provider.rotate({ alg: 'ES256' });
      await me(t, await provider.sign({ sub: 'sub-rotation' })).expect(200);
      expect(provider.fetches.jwks).toBe(fetched + 1);
      // The previous key stays published, and its tokens are still good, from the cache.
      await me(t, await provider.sign({ sub: 'sub-rotation' }, { key: first })).expect(200);
      expect(provider.fetches.jwks).toBe(fetched + 1);

      await provider.rotate({ retirePrevious: true });
      await me(t, await provider.sign({ sub: 'sub-rotation' })).expect(200);
      expect(provider.fetches.jwks).toBe(fetched + 2);
      expect(provider.publishedKids).toEqual([provider.signingKey.kid]);
      // Once the JWKS without them has been read, tokens of retired keys are refused.
      expectRefused(
        await me(t, await provider.sign({ sub: 'sub-rotation' }, { key: second })),
        /unknown key/,
      );
      expectRefused(await me(t, await provider.sign({ sub: 'sub-rotation' }, { key: first })), /unknown key/);
    });

    it('fetches the JWKS at most once per cooldown, however many unknown key ids arrive', async () => {
      const t = await createTestApp(engine, { config: oidcConfig(provider, { jwksCooldownMs: 60_000 }) });
      apps.push(t);
      await me(t, await provider.sign({ sub: 'sub-cooldown' })).expect(200);
      const fetched = provider.fetches.jwks;
      for (let i = 0; i < 3; i++) {
        const stranger = await OidcProvider.generateKey('RS256');
        expectRefused(
          await me(t, await provider.sign({ sub: 'sub-cooldown' }, { key: stranger })),
          /unknown key/,
        );
      }
      // A rotation within the cooldown is not seen yet: the cooldown bounds the load on the provider.
      await provider.rotate();
      expectRefused(await me(t, await provider.sign({ sub: 'sub-cooldown' })), /unknown key/);
      expect(provider.fetches.jwks).toBe(fetched);
    });
  });

  describe('an identity provider that cannot be reached', () => {
    const apps: TestApp[] = [];
    const providers: OidcProvider[] = [];
    const me = (t: TestApp, token: string) =>
      t.http.get('/api/v1/me').set('Authorization', `Bearer ${token}`);

    /** A provider that is already down, and an app configured for it. */
    async function downProvider(overrides: (p: OidcProvider) => Record<string, unknown>) {
      const provider = await OidcProvider.start();
      providers.push(provider);
      await provider.stop();
      const t = await createTestApp(engine, { config: oidcConfig(provider, overrides(provider)) });
      apps.push(t);
      return { provider, t };
    }

    afterAll(async () => {
      for (const app of apps) await app.close();
      for (const provider of providers) await provider.stop();
    });

    it('answers 503, not 500, when discovery fails as keys are first needed', async () => {
      const { provider, t } = await downProvider(() => ({}));
      const res = await me(t, await provider.sign({ sub: 'sub-ada' }));
      expectProblem(res, 503, 'unavailable');
      expect(res.body.detail).toMatch(/identity provider/);
      expect(res.headers['retry-after']).toBe('5');
    });

    it('answers 503, not 500, when the configured JWKS cannot be fetched', async () => {
      const { provider, t } = await downProvider((p) => ({ jwksUri: p.jwksUri }));
      const res = await me(t, await provider.sign({ sub: 'sub-ada' }));
      expectProblem(res, 503, 'unavailable');
      expect(res.body.detail).toMatch(/identity provider/);
    });

    it('still refuses a malformed token with 401 while the provider is down', async () => {
      const { t } = await downProvider(() => ({}));
      expectRefused(await me(t, 'not-a-jwt'), /not a valid JWT/);
    });

    it('answers 503 while the JWKS endpoint fails, and recovers when it answers again', async () => {
      const provider = await OidcProvider.start();
      providers.push(provider);
      const t = await createTestApp(engine, { config: oidcConfig(provider) });
      apps.push(t);
      provider.fail('jwks', 500);
      const token = await provider.sign({ sub: 'sub-patient' });
      expectProblem(await me(t, token), 503, 'unavailable');
      provider.fail('jwks', null);
      await me(t, token).expect(200);
    });

    it('tries discovery again on the next request after it failed', async () => {
      const provider = await OidcProvider.start();
      providers.push(provider);
      const t = await createTestApp(engine, { config: oidcConfig(provider) });
      apps.push(t);
      provider.fail('discovery', 404);
      const token = await provider.sign({ sub: 'sub-persistent' });
      const res = await me(t, token);
      expectProblem(res, 503, 'unavailable');
      expect(res.body.detail).toMatch(/HTTP 404/);
      provider.fail('discovery', null);
      await me(t, token).expect(200);
      expect(provider.fetches.discovery).toBe(2);
    });
  });
});
