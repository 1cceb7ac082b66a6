// A region configured with `backend: {type: kubernetes}` gets the Kubernetes backend.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { KubernetesBackend } from '../../../src/backends/cluster/kubernetes/backend.js';
import { settingsOf } from '../../../src/backends/cluster/kubernetes/index.js';
import { ConfigError, loadConfig } from '../../../src/config.js';
import { createLogger } from '../../../src/log.js';
import { createRegionBackends } from '../../../src/services/index.js';
import { FakeKube } from '../../fixtures/fake-kube/index.js';

describe('Kubernetes regions in the configuration', () => {
  let fake: FakeKube;
  beforeAll(async () => {
    fake = await FakeKube.start();
  });
  afterAll(() => fake.close());

  const region = (backend: Record<string, unknown>) => ({
    regions: [
      { id: 'lab', name: 'Lab cluster', backend, expose: { domain: 'apps.lab.example.org' } },
      { id: 'here', name: 'This machine' },
    ],
  });

  it('reads a kubernetes backend with its defaults, and builds the Kubernetes backend for it', async () => {
    const config = loadConfig({
      env: {},
      overrides: region({ type: 'kubernetes', kubeconfig: fake.kubeconfigPath }),
    });
    const backend = config.regions[0]?.backend;
    expect(backend).toEqual({
      type: 'kubernetes',
      kubeconfig: fake.kubeconfigPath,
      context: null,
      namespace_prefix: 'atrium-',
      expose_domain: null,
      ingress_class: null,
      role_binding: null,
      work_volume_claim: null,
      reconcile_interval_ms: 30_000,
      readiness_timeout_ms: 300_000,
      max_restarts: 5,
      stop_grace_seconds: 30,
    });
    if (backend?.type !== 'kubernetes') throw new Error('not a kubernetes backend');
    // The region's expose domain serves when the backend names none.
    expect(settingsOf(backend, 'apps.lab.example.org').exposeDomain).toBe('apps.lab.example.org');
    const { services: backends, batches } = createRegionBackends(config, createLogger('silent'));
    expect(batches.get('lab')?.type).toBe('kubernetes');
    expect(batches.get('here')?.type).toBe('local');
    const lab = backends.get('lab');
    expect(lab).toBeInstanceOf(KubernetesBackend);
    expect(backends.get('here')?.type).toBe('local');
    expect(await lab?.status('svc_Nothing0000000000000')).toBeNull();
    await lab?.close();
  });

  it('refuses what a kubernetes backend cannot have', () => {
    expect(() =>
      loadConfig({ env: {}, overrides: region({ type: 'kubernetes', namespace_prefix: 'Atrium_' }) }),
    ).toThrow(ConfigError);
    expect(() => loadConfig({ env: {}, overrides: region({ type: 'kubernetes', replicas: 3 }) })).toThrow(
      /replicas/,
    );
    expect(() => loadConfig({ env: {}, overrides: region({ type: 'local', kubeconfig: '/x' }) })).toThrow(
      ConfigError,
    );
  });
});
