import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { stringify } from 'yaml';
import {
  ConfigError,
  environmentVariables,
  loadConfig,
  mergeConfig,
  type Config,
  type ConfigInput,
} from '../../src/config.js';
import { demoCatalogPath } from '../../src/paths.js';

let scratch: string;
let fileCount = 0;

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'atrium-config-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Writes a configuration file in its own directory and returns its path. */
function configFile(content: ConfigInput | string): string {
  const dir = join(scratch, `case-${++fileCount}`);
  mkdirSync(dir);
  const file = join(dir, 'atrium.yaml');
  writeFileSync(file, typeof content === 'string' ? content : stringify(content));
  return file;
}

function valueAt(config: Config, path: string[]): unknown {
  return path.reduce<unknown>((node, key) => (node as Record<string, unknown>)[key], config);
}

/** The message of the ConfigError that `load` throws; fails the test if it throws anything else. */
function configErrorOf(load: () => unknown): string {
  try {
    load();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  throw new Error('expected a ConfigError, but the configuration loaded');
}

const validAdminToken = `atr_${'a1B2'.repeat(5)}`;
const issuer = 'https://id.example.org/realms/lab';

/** A valid value for every documented variable, and the value it must land as. */
const samples: Record<string, { raw: string; expected: unknown }> = {
  ATRIUM_HOST: { raw: '0.0.0.0', expected: '0.0.0.0' },
  ATRIUM_PORT: { raw: '9123', expected: 9123 },
  ATRIUM_DATA_DIR: { raw: '/var/lib/atrium', expected: '/var/lib/atrium' },
  ATRIUM_DATABASE_URL: {
    raw: 'postgres://atrium@db:5432/atrium',
    expected: 'postgres://atrium@db:5432/atrium',
  },
  ATRIUM_ADMIN_TOKEN: { raw: validAdminToken, expected: validAdminToken },
  ATRIUM_OIDC_ISSUER: { raw: issuer, expected: issuer },
  ATRIUM_OIDC_AUDIENCE: { raw: 'atrium', expected: 'atrium' },
  ATRIUM_OIDC_JWKS_URI: { raw: 'https://id.example.org/jwks', expected: 'https://id.example.org/jwks' },
  ATRIUM_OIDC_CLIENT_ID: { raw: 'atrium-cli', expected: 'atrium-cli' },
  ATRIUM_OIDC_USERNAME_CLAIM: { raw: 'sub', expected: 'sub' },
  ATRIUM_OIDC_GROUPS_CLAIM: { raw: 'roles', expected: 'roles' },
  ATRIUM_OIDC_ADMIN_GROUPS: { raw: ' admins, ops ,,lab-leads', expected: ['admins', 'ops', 'lab-leads'] },
  ATRIUM_TRUSTED_PROXIES: { raw: '10.0.0.0/8,127.0.0.1', expected: ['10.0.0.0/8', '127.0.0.1'] },
  ATRIUM_CORS_ORIGINS: {
    raw: 'https://a.example.org, https://b.example.org',
    expected: ['https://a.example.org', 'https://b.example.org'],
  },
  ATRIUM_EXTERNAL_BACKENDS_ALLOW: {
    raw: '127.0.0.1/32, 10.0.0.0/8',
    expected: ['127.0.0.1/32', '10.0.0.0/8'],
  },
  ATRIUM_LOG_LEVEL: { raw: 'debug', expected: 'debug' },
  ATRIUM_WORKERS: { raw: '0', expected: 0 },
  ATRIUM_MAX_UPLOAD_BYTES: { raw: '1048576', expected: 1048576 },
};

describe('loadConfig', () => {
  describe('defaults', () => {
    it('gives a complete configuration when nothing is set', () => {
      const config = loadConfig({ env: {} });
      expect(config.server).toEqual({
        host: '127.0.0.1',
        port: 8080,
        trustedProxies: [],
        corsOrigins: [],
        maxBodyBytes: 1024 * 1024,
        maxJsonDepth: 32,
        rateLimit: { enabled: true, requestsPerMinute: 1200, burst: 300 },
        shutdownGraceMs: 10_000,
      });
      expect(config.databaseUrl).toBeNull();
      expect(config.auth).toEqual({ adminToken: null, oidc: null });
      expect(config.log.level).toBe('info');
      expect(config.validateResponses).toBe(false);
    });

    it('resolves the data directory to an absolute path', () => {
      expect(loadConfig({ env: {} }).dataDir).toBe(resolve('./data'));
      expect(loadConfig({ env: {}, overrides: { dataDir: 'relative/dir' } }).dataDir).toBe(
        resolve('relative/dir'),
      );
    });

    it('has one local region with the default quota and the demo catalog', () => {
      const config = loadConfig({ env: {} });
      expect(config.regions).toHaveLength(1);
      expect(config.regions[0]).toMatchObject({
        id: 'local',
        backend: { type: 'local' },
        quotas: {
          default: { cpu: '4', memory: '8Gi', gpu: 0, services: 10, concurrent_jobs: 4, storage: '10Gi' },
        },
      });
      expect(config.catalogs).toEqual([expect.objectContaining({ id: 'demo', path: demoCatalogPath })]);
    });

    it('fills the defaults of a partially given region', () => {
      const config = loadConfig({ env: {}, overrides: { regions: [{ id: 'gpu-lab', name: 'GPU lab' }] } });
      expect(config.regions).toEqual([
        {
          id: 'gpu-lab',
          name: 'GPU lab',
          description: '',
          location: null,
          backend: { type: 'local' },
          quotas: {
            default: { cpu: '4', memory: '8Gi', gpu: 0, services: 10, concurrent_jobs: 4, storage: '10Gi' },
          },
          expose: null,
          gateway: null,
        },
      ]);
    });

    it('fills the defaults of OIDC when only the issuer and audience are given', () => {
      const config = loadConfig({ env: { ATRIUM_OIDC_ISSUER: issuer, ATRIUM_OIDC_AUDIENCE: 'atrium' } });
      expect(config.auth.oidc).toEqual({
        issuer,
        audience: 'atrium',
        jwksUri: null,
        clientId: null,
        usernameClaim: 'preferred_username',
        nameClaim: 'name',
        emailClaim: 'email',
        groupsClaim: 'groups',
        adminGroups: [],
        jwksCooldownMs: 30_000,
        clockToleranceSec: 30,
      });
    });
  });

  describe('precedence', () => {
    it('lets the file override defaults, the environment override the file and overrides win', () => {
      const file = configFile({
        server: { host: '0.0.0.0', port: 9000, corsOrigins: ['https://file.example.org'] },
        log: { level: 'warn' },
        validateResponses: true,
      });
      const env = { ATRIUM_CONFIG: file, ATRIUM_PORT: '9100', ATRIUM_LOG_LEVEL: 'debug' };

      const fileOnly = loadConfig({ env: { ATRIUM_CONFIG: file } });
      expect(fileOnly.server.port).toBe(9000);
      expect(fileOnly.log.level).toBe('warn');

      const withEnv = loadConfig({ env });
      expect(withEnv.server.port).toBe(9100);
      expect(withEnv.server.host).toBe('0.0.0.0');
      expect(withEnv.log.level).toBe('debug');
      expect(withEnv.validateResponses).toBe(true);

      const withOverrides = loadConfig({
        env,
        overrides: { server: { port: 9200 }, log: { level: 'error' } },
      });
      expect(withOverrides.server.port).toBe(9200);
      expect(withOverrides.server.host).toBe('0.0.0.0');
      expect(withOverrides.server.corsOrigins).toEqual(['https://file.example.org']);
      expect(withOverrides.log.level).toBe('error');
    });

    it('keeps the defaults of fields a file leaves out of a section it sets', () => {
      const file = configFile({ server: { rateLimit: { burst: 10 } } });
      const config = loadConfig({ env: { ATRIUM_CONFIG: file } });
      expect(config.server.rateLimit).toEqual({ enabled: true, requestsPerMinute: 1200, burst: 10 });
      expect(config.server.port).toBe(8080);
    });

    it('lets an environment variable fill in a section the file started', () => {
      const file = configFile({ auth: { oidc: { issuer, adminGroups: ['from-file'] } } });
      const config = loadConfig({ env: { ATRIUM_CONFIG: file, ATRIUM_OIDC_AUDIENCE: 'atrium' } });
      expect(config.auth.oidc).toMatchObject({ issuer, audience: 'atrium', adminGroups: ['from-file'] });
    });

    it('lets a comma list in the environment replace the list of the file', () => {
      const file = configFile({ server: { trustedProxies: ['192.168.0.0/16', '10.0.0.1'] } });
      const config = loadConfig({ env: { ATRIUM_CONFIG: file, ATRIUM_TRUSTED_PROXIES: '127.0.0.1' } });
      expect(config.server.trustedProxies).toEqual(['127.0.0.1']);
    });

    it('ignores environment variables set to the empty string', () => {
      const file = configFile({ server: { port: 9000 } });
      const config = loadConfig({ env: { ATRIUM_CONFIG: file, ATRIUM_PORT: '', ATRIUM_HOST: '' } });
      expect(config.server.port).toBe(9000);
      expect(config.server.host).toBe('127.0.0.1');
    });

    it('ignores undefined overrides instead of erasing lower layers', () => {
      const config = loadConfig({
        env: { ATRIUM_PORT: '9100' },
        overrides: { server: { port: undefined }, log: undefined },
      });
      expect(config.server.port).toBe(9100);
      expect(config.log.level).toBe('info');
    });
  });

  describe('environment variables', () => {
    it('has a sample in this test for every documented variable', () => {
      expect(Object.keys(samples).sort()).toEqual(Object.keys(environmentVariables).sort());
    });

    it.each(Object.keys(environmentVariables))('puts %s at its documented path', (name) => {
      const sample = samples[name];
      const variable = environmentVariables[name];
      if (!sample || !variable) throw new Error(`no sample for ${name}`);
      const env: Record<string, string> = { [name]: sample.raw };
      // The OIDC section needs an issuer, and an audience or a client id, to be valid at all.
      if (variable.path[1] === 'oidc') {
        env.ATRIUM_OIDC_ISSUER ??= issuer;
        if (name !== 'ATRIUM_OIDC_CLIENT_ID') env.ATRIUM_OIDC_AUDIENCE ??= 'atrium';
      }
      expect(valueAt(loadConfig({ env }), variable.path)).toEqual(sample.expected);
    });

    it('resolves a relative ATRIUM_DATA_DIR to an absolute path', () => {
      expect(loadConfig({ env: { ATRIUM_DATA_DIR: 'var/atrium' } }).dataDir).toBe(resolve('var/atrium'));
    });
  });

  describe('validation', () => {
    it('refuses a port that is not a number and names server.port', () => {
      expect(configErrorOf(() => loadConfig({ env: { ATRIUM_PORT: 'eighty' } }))).toMatch(/server\.port/);
    });

    it.each([' ', '1e3', '0x1F90', '80.5'])('refuses the port %j, which is not a whole number', (raw) => {
      expect(configErrorOf(() => loadConfig({ env: { ATRIUM_PORT: raw } }))).toMatch(/server\.port/);
    });

    it('refuses OIDC without an audience or a client id, which would accept tokens issued to any client', () => {
      expect(configErrorOf(() => loadConfig({ env: { ATRIUM_OIDC_ISSUER: issuer } }))).toMatch(
        /auth\.oidc\.audience: set an audience or a clientId/,
      );
      expect(
        loadConfig({ env: { ATRIUM_OIDC_ISSUER: issuer, ATRIUM_OIDC_CLIENT_ID: 'ui' } }).auth.oidc?.clientId,
      ).toBe('ui');
    });

    it('resolves a relative dataDir in the file against the file, like catalog paths', () => {
      const file = configFile({ dataDir: 'state' });
      expect(loadConfig({ env: { ATRIUM_CONFIG: file } }).dataDir).toBe(join(dirname(file), 'state'));
    });

    it('refuses a port out of range', () => {
      expect(configErrorOf(() => loadConfig({ env: {}, overrides: { server: { port: 70000 } } }))).toMatch(
        /server\.port/,
      );
    });

    it.each(['localhost', '10.0.0.0/33', '10.0.0.0/8/1', '::1/x'])(
      'refuses %j in the external backends allow-list and names it',
      (entry) => {
        expect(configErrorOf(() => loadConfig({ env: { ATRIUM_EXTERNAL_BACKENDS_ALLOW: entry } }))).toMatch(
          /functions\.externalBackends\.allow/,
        );
      },
    );

    it('refuses an unknown log level and names log.level', () => {
      expect(configErrorOf(() => loadConfig({ env: { ATRIUM_LOG_LEVEL: 'loud' } }))).toMatch(/log\.level/);
    });

    it('refuses an OIDC issuer that is not a URL', () => {
      expect(configErrorOf(() => loadConfig({ env: { ATRIUM_OIDC_ISSUER: 'not a url' } }))).toMatch(
        /auth\.oidc\.issuer/,
      );
    });

    it('refuses OIDC settings without an issuer', () => {
      expect(configErrorOf(() => loadConfig({ env: { ATRIUM_OIDC_AUDIENCE: 'atrium' } }))).toMatch(
        /auth\.oidc\.issuer/,
      );
    });

    it('lists every invalid path, one a line', () => {
      const message = configErrorOf(() =>
        loadConfig({ env: { ATRIUM_PORT: '-1', ATRIUM_LOG_LEVEL: 'loud' } }),
      );
      expect(message).toMatch(/^invalid configuration:\n/);
      expect(message).toMatch(/^ {2}server\.port: /m);
      expect(message).toMatch(/^ {2}log\.level: /m);
    });

    it('names the index of an invalid region', () => {
      const message = configErrorOf(() =>
        loadConfig({
          env: {},
          overrides: {
            regions: [
              { id: 'good', name: 'Good' },
              { id: 'Not_A_Label', name: 'Bad' },
            ],
          },
        }),
      );
      expect(message).toMatch(/regions\.1\.id/);
    });

    it('refuses an invalid quota value in a region', () => {
      const message = configErrorOf(() =>
        loadConfig({
          env: {},
          overrides: { regions: [{ id: 'r', name: 'R', quotas: { default: { memory: '8 gigabytes' } } }] },
        }),
      );
      expect(message).toMatch(/regions\.0\.quotas\.default\.memory/);
    });

    it('refuses unknown keys, naming them', () => {
      const file = configFile({ server: { port: 8080, colour: 'blue' }, extra: true });
      const message = configErrorOf(() => loadConfig({ env: { ATRIUM_CONFIG: file } }));
      expect(message).toMatch(/colour/);
      expect(message).toMatch(/extra/);
    });

    it('refuses an empty list of regions', () => {
      expect(configErrorOf(() => loadConfig({ env: {}, overrides: { regions: [] } }))).toMatch(/regions/);
    });

    it('refuses two regions with the same id', () => {
      const message = configErrorOf(() =>
        loadConfig({
          env: {},
          overrides: {
            regions: [
              { id: 'lab', name: 'Lab' },
              { id: 'cloud', name: 'Cloud' },
              { id: 'lab', name: 'Lab again' },
            ],
          },
        }),
      );
      expect(message).toMatch(/regions: duplicate id "lab"/);
    });

    it('refuses two catalogs with the same id', () => {
      const message = configErrorOf(() =>
        loadConfig({
          env: {},
          overrides: {
            catalogs: [
              { id: 'shared', name: 'One', path: '/srv/one' },
              { id: 'shared', name: 'Two', path: '/srv/two' },
            ],
          },
        }),
      );
      expect(message).toMatch(/catalogs: duplicate id "shared"/);
    });

    it('accepts a region and a catalog sharing an id', () => {
      const config = loadConfig({
        env: {},
        overrides: {
          regions: [{ id: 'lab', name: 'Lab' }],
          catalogs: [{ id: 'lab', name: 'Lab', path: '/srv/lab' }],
        },
      });
      expect(config.regions[0]?.id).toBe('lab');
      expect(config.catalogs[0]?.id).toBe('lab');
    });
  });

  describe('admin token', () => {
    it('accepts atr_ followed by at least 16 letters, digits, _ or -', () => {
      for (const token of [`atr_${'x'.repeat(16)}`, `atr_${'Ab-_9'.repeat(8)}`, validAdminToken]) {
        expect(loadConfig({ env: { ATRIUM_ADMIN_TOKEN: token } }).auth.adminToken).toBe(token);
      }
    });

    it.each([
      ['too short', `atr_${'x'.repeat(15)}`],
      ['without the atr_ prefix', 'x'.repeat(24)],
      ['with another prefix', `tok_${'x'.repeat(20)}`],
      ['with an upper-case prefix', `ATR_${'x'.repeat(20)}`],
      ['with a forbidden character', `atr_${'x'.repeat(16)}!`],
      ['with a space', `atr_${'x'.repeat(8)} ${'x'.repeat(8)}`],
    ])('refuses a token %s and names auth.adminToken', (_why, token) => {
      expect(configErrorOf(() => loadConfig({ env: { ATRIUM_ADMIN_TOKEN: token } }))).toMatch(
        /auth\.adminToken: an Atrium token/,
      );
    });
  });

  describe('configuration file', () => {
    it('resolves relative catalog paths against the directory of the file', () => {
      const file = configFile({
        catalogs: [
          { id: 'lab', name: 'Lab', path: 'catalogs/lab' },
          { id: 'parent', name: 'Parent', path: '../shared' },
          { id: 'absolute', name: 'Absolute', path: '/srv/catalog' },
        ],
      });
      const dir = resolve(file, '..');
      const config = loadConfig({ env: { ATRIUM_CONFIG: file } });
      expect(config.catalogs.map((c) => c.path)).toEqual([
        join(dir, 'catalogs', 'lab'),
        resolve(dir, '..', 'shared'),
        '/srv/catalog',
      ]);
    });

    it('resolves relative module directories and kubeconfig paths against the directory of the file', () => {
      const file = configFile({
        modules: [{ id: 'lab', name: 'Lab', path: 'modules' }],
        regions: [
          {
            id: 'cluster',
            name: 'Cluster',
            backend: { type: 'kubernetes', kubeconfig: 'kube/config' },
            quotas: { default: {} },
          },
        ],
      });
      const dir = resolve(file, '..');
      const config = loadConfig({ env: { ATRIUM_CONFIG: file } });
      expect(config.modules[0]?.path).toBe(join(dir, 'modules'));
      const backend = config.regions[0]?.backend;
      expect(backend?.type === 'kubernetes' ? backend.kubeconfig : null).toBe(join(dir, 'kube', 'config'));
    });

    it('fills the defaults of a catalog given in the file', () => {
      const file = configFile({ catalogs: [{ id: 'lab', name: 'Lab', path: '/srv/lab' }] });
      expect(loadConfig({ env: { ATRIUM_CONFIG: file } }).catalogs).toEqual([
        { id: 'lab', name: 'Lab', description: '', maintainer: null, path: '/srv/lab' },
      ]);
    });

    it('treats an empty file as no settings', () => {
      const file = configFile('');
      expect(loadConfig({ env: { ATRIUM_CONFIG: file } })).toEqual(loadConfig({ env: {} }));
    });

    it('refuses a file that does not exist, naming it', () => {
      const missing = join(scratch, 'missing.yaml');
      const message = configErrorOf(() => loadConfig({ env: { ATRIUM_CONFIG: missing } }));
      expect(message).toContain('cannot read configuration file');
      expect(message).toContain(missing);
    });

    it('refuses a file that is not YAML', () => {
      const file = configFile('server: {port: 8080\n');
      expect(configErrorOf(() => loadConfig({ env: { ATRIUM_CONFIG: file } }))).toContain(
        `cannot read configuration file ${file}`,
      );
    });

    it('refuses a file that holds a list rather than a mapping', () => {
      const file = configFile('- server\n- port\n');
      expect(configErrorOf(() => loadConfig({ env: { ATRIUM_CONFIG: file } }))).toBe(
        `configuration file ${file} must hold a mapping`,
      );
    });

    it('refuses a file with a value of the wrong type, naming its path', () => {
      const file = configFile({ server: { port: '8080' } });
      expect(configErrorOf(() => loadConfig({ env: { ATRIUM_CONFIG: file } }))).toMatch(/server\.port/);
    });
  });
});

describe('mergeConfig', () => {
  it('merges nested objects key by key', () => {
    expect(
      mergeConfig(
        { server: { host: 'a', rateLimit: { burst: 1, enabled: true } }, log: { level: 'info' } },
        { server: { rateLimit: { burst: 2 } } },
      ),
    ).toEqual({ server: { host: 'a', rateLimit: { burst: 2, enabled: true } }, log: { level: 'info' } });
  });

  it('replaces arrays instead of concatenating or merging them', () => {
    expect(
      mergeConfig(
        { regions: [{ id: 'a', name: 'A' }, { id: 'b' }], server: { corsOrigins: ['x', 'y'] } },
        { regions: [{ id: 'c' }], server: { corsOrigins: [] } },
      ),
    ).toEqual({ regions: [{ id: 'c' }], server: { corsOrigins: [] } });
  });

  it('ignores undefined values of the layer', () => {
    expect(mergeConfig({ a: 1, b: { c: 2 } }, { a: undefined, b: { c: undefined } })).toEqual({
      a: 1,
      b: { c: 2 },
    });
  });

  it('lets null replace a value', () => {
    expect(
      mergeConfig(
        { databaseUrl: 'postgres://x', auth: { oidc: { issuer } } },
        { databaseUrl: null, auth: { oidc: null } },
      ),
    ).toEqual({ databaseUrl: null, auth: { oidc: null } });
  });

  it('lets a scalar replace an object and an object replace a scalar', () => {
    expect(mergeConfig({ a: { b: 1 }, c: 2 }, { a: 3, c: { d: 4 } })).toEqual({ a: 3, c: { d: 4 } });
  });

  it('adds keys the base does not have', () => {
    expect(mergeConfig({ a: 1 }, { b: { c: 2 } })).toEqual({ a: 1, b: { c: 2 } });
  });

  it('changes neither of its arguments', () => {
    const base = { server: { host: 'a', rateLimit: { burst: 1 } } };
    const layer = { server: { rateLimit: { burst: 2 } } };
    const baseCopy = structuredClone(base);
    const layerCopy = structuredClone(layer);
    mergeConfig(base, layer);
    expect(base).toEqual(baseCopy);
    expect(layer).toEqual(layerCopy);
  });
});
