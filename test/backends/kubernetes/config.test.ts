// A region configured with `backend: {type: kubernetes}` gets the Kubernetes backend.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { KubernetesBackend } from '../../../src/backends/cluster/kubernetes/backend.js';
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
      settings: {
        namespacePrefix: 'atrium-',
        exposeDomain: null,
        ingressClass: null,
        gateway: 'apiserver-proxy',
        roleBinding: null,
        workVolumeClaim: null,
        reconcileIntervalMs: 30_000,
        readinessTimeoutMs: 300_000,
        maxRestarts: 5,
        stopGraceSeconds: 30,
      },
    });
    const { services: backends, batches } = createRegionBackends(config, createLogger('silent'));
    expect(batches.get('lab')?.capabilities.runs).toBe('image');
    expect(batches.get('here')?.capabilities.runs).toBe('process');
    const lab = backends.get('lab');
    expect(lab).toBeInstanceOf(KubernetesBackend);
    // The region's expose domain serves when the backend names none.
    expect((lab as KubernetesBackend).settings.exposeDomain).toBe('apps.lab.example.org');
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
