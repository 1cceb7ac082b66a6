// Golden tests of what the Kubernetes backend renders. `UPDATE_GOLDEN=1` rewrites the golden files
// (review the diff: it is what clusters will get).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { KubernetesBackend } from '../../../src/backends/cluster/kubernetes/backend.js';
import { namespaceName, workloadName } from '../../../src/backends/cluster/kubernetes/naming.js';
import { renderJob, renderService } from '../../../src/backends/cluster/kubernetes/render.js';
import { createClients } from '../../../src/backends/cluster/kubernetes/settings.js';
import {
  defaultSettings,
  type KubernetesSettings,
} from '../../../src/backends/cluster/kubernetes/settings.js';
import type { BatchWorkloadSpec, WorkloadSpec } from '../../../src/backends/cluster/types.js';
import { DomainError } from '../../../src/errors.js';
import { createLogger } from '../../../src/log.js';
import { repoRoot } from '../../../src/paths.js';
import { KubeConfig } from '@kubernetes/client-node';

const updateGolden = process.env.UPDATE_GOLDEN === '1';
const goldenDir = join(repoRoot, 'test', 'fixtures', 'golden', 'kubernetes');
const packageDir = join(goldenDir, 'package');

function matchesGolden(name: string, value: unknown): void {
  const file = join(goldenDir, `${name}.json`);
  const text = `${JSON.stringify(value, null, 2)}\n`;
  if (updateGolden) {
    mkdirSync(goldenDir, { recursive: true });
    writeFileSync(file, text);
  }
  if (!existsSync(file)) throw new Error(`no golden file ${file}: run with UPDATE_GOLDEN=1 and review it`);
  expect(JSON.parse(text)).toEqual(JSON.parse(readFileSync(file, 'utf8')));
}

const settings: KubernetesSettings = {
  ...defaultSettings,
  exposeDomain: 'lab.example.org',
  ingressClass: 'nginx',
  roleBinding: {
    clusterRole: 'view',
    subjects: [{ kind: 'Group', name: 'project:${project.id}', namespace: null }],
  },
  workVolumeClaim: 'atrium-work',
};

function notebookSpec(overrides: Partial<WorkloadSpec> = {}): WorkloadSpec {
  return {
    serviceId: 'svc_Golden0Notebook0001',
    generation: 3,
    serviceName: 'my notebook',
    projectId: 'u-alice',
    package: { catalogId: 'demo', name: 'notebook', version: '2.1.0', sourceDir: packageDir },
    run: {
      local: null,
      cluster: {
        image: 'registry.example.org/lab/notebook:2.1',
        command: ['node', '/app/serve.mjs'],
        args: ['--token=${options.token}', '--title=${options.title}', '--literal=$(HOME)'],
        ports: [
          { name: 'http', protocol: 'http', container_port: 8888 },
          { name: 'metrics', protocol: 'tcp', container_port: 9100 },
        ],
        health: { port: 'http', path: '/api/status' },
        env: {
          PORT: '${ports.http}',
          TITLE: '${options.title}',
          DB_URL: 'postgres://lab:${options.password}@db:5432/lab',
          SERVICE: '${service.id}',
        },
        files: ['serve.mjs'],
      },
    },
    options: { token: 's3cret-token', title: 'Alice $(work)', password: 'hunter2' },
    secretOptions: ['token', 'password'],
    resources: { cpuMillis: 1500, memoryBytes: 2 * 1024 ** 3, gpu: 1 },
    quota: { cpuMillis: 4000, memoryBytes: 8 * 1024 ** 3, gpu: 1, services: 10 },
    ...overrides,
  };
}

function jobSpec(): BatchWorkloadSpec {
  return {
    jobId: 'job_Golden0Train0001',
    projectId: 'u-alice',
    run: {
      local: null,
      cluster: {
        image: 'node:20-alpine',
        command: ['node', '/app/train.mjs'],
        args: ['--epochs', '3'],
        env: { INPUT: '/work/in/data.csv', OUTPUT: '/work/out' },
        files: { 'train.mjs': "console.log('training');\n" },
        workSubPath: 'runs/run_1/task_2',
      },
    },
    resources: { cpuMillis: 500, memoryBytes: 256 * 1024 ** 2, gpu: 0 },
    timeoutMs: 90_500,
    labels: {
      'atrium.dev/run': 'run_1',
      'atrium.dev/scheduler-job': 'sj_42',
      'not a label key': 'kept in annotations',
    },
  };
}

function unreachableCluster(): KubeConfig {
  const config = new KubeConfig();
  config.loadFromOptions({
    clusters: [{ name: 'none', server: 'http://127.0.0.1:9', skipTLSVerify: true }],
    users: [{ name: 'none' }],
    contexts: [{ name: 'none', cluster: 'none', user: 'none' }],
    currentContext: 'none',
  });
  return config;
}

const files = { 'serve.mjs': readFileSync(join(packageDir, 'serve.mjs')) };

describe('rendering services', () => {
  it('renders a Deployment, a Service per port, an Ingress, a Secret and a ConfigMap', () => {
    const rendered = renderService(notebookSpec(), 'atrium-u-alice', settings, files, 'plain');
    matchesGolden('service-exposed', rendered);
  });

  it('keeps secret options out of the Deployment, in the Secret it refers to', () => {
    const rendered = renderService(notebookSpec(), 'atrium-u-alice', settings, files, 'plain');
    expect(JSON.stringify(rendered.deployment)).not.toContain('hunter2');
    expect(JSON.stringify(rendered.deployment)).not.toContain('s3cret-token');
    expect(rendered.secret?.stringData).toEqual({
      ATRIUM_OPTION_TOKEN: 's3cret-token',
      DB_URL: 'postgres://lab:hunter2@db:5432/lab',
    });
  });

  it('renders a service that is not exposed, without health check, GPU or files', () => {
    const spec = notebookSpec({
      secretOptions: [],
      resources: { cpuMillis: 250, memoryBytes: 128 * 1024 ** 2, gpu: 0 },
    });
    const cluster = spec.run.cluster;
    if (!cluster) throw new Error('no cluster run spec');
    spec.run = { local: null, cluster: { ...cluster, health: null, files: [], args: null } };
    const rendered = renderService(spec, 'atrium-u-alice', { ...settings, exposeDomain: null }, {}, 'plain');
    matchesGolden('service-internal', rendered);
  });

  it('renders a dry run with secrets masked and file contents summarised, onboarding included', () => {
    const backend = new KubernetesBackend({
      // Rendering talks to no cluster: this one does not exist.
      clients: createClients(unreachableCluster()),
      settings,
      log: createLogger('silent'),
    });
    const rendered = backend.render(notebookSpec());
    expect(JSON.stringify(rendered)).not.toContain('hunter2');
    expect(JSON.stringify(rendered)).not.toContain('s3cret-token');
    matchesGolden('dry-run', rendered);
  });

  it('refuses what Kubernetes could not run, saying why', () => {
    const spec = notebookSpec();
    const cluster = spec.run.cluster;
    if (!cluster) throw new Error('no cluster run spec');
    const longPort = {
      ...spec,
      run: {
        local: null,
        cluster: {
          ...cluster,
          ports: [{ name: 'a-very-long-port-name', protocol: 'http' as const, container_port: 80 }],
          health: null,
        },
      },
    };
    expect(() => renderService(longPort, 'ns', settings, files, 'plain')).toThrow(DomainError);
    expect(() =>
      renderService({ ...spec, run: { local: null, cluster: null } }, 'ns', settings, files, 'plain'),
    ).toThrow(/no cluster run spec/);
    expect(() => renderService(spec, 'ns', settings, {}, 'plain')).toThrow(/no file "serve.mjs"/);
  });
});

describe('rendering batch jobs', () => {
  it('renders a Job with its files, work directory, deadline and labels', () => {
    matchesGolden('job', renderJob(jobSpec(), 'atrium-u-alice', settings, 'plain'));
  });

  it('refuses a work directory where the region has no work volume', () => {
    expect(() => renderJob(jobSpec(), 'ns', { ...settings, workVolumeClaim: null }, 'plain')).toThrow(
      /work volume/,
    );
  });
});

describe('naming', () => {
  it('names namespaces after projects, within 63 characters, RFC 1123', () => {
    expect(namespaceName('atrium-', 'u-alice')).toBe('atrium-u-alice');
    const mixed = namespaceName('atrium-', 'Team_Vision');
    expect(mixed).toMatch(/^atrium-team-vision-[0-9a-f]{6}$/);
    expect(namespaceName('atrium-', 'team_vision')).not.toBe(namespaceName('atrium-', 'Team_Vision'));
    const long = namespaceName('atrium-', 'p'.repeat(100));
    expect(long.length).toBeLessThanOrEqual(63);
    expect(long).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  });

  it('names workloads after the service id, distinctly when ids differ only in case', () => {
    const a = workloadName('svc_AbCdEfGhIjKlMnOpQrSt');
    const b = workloadName('svc_abcdefghijklmnopqrst');
    expect(a).not.toBe(b);
    expect(a).toMatch(/^svc-abcdefghijklmnopqrst-[0-9a-f]{6}$/);
    expect(a.length + 17).toBeLessThanOrEqual(63);
  });
});
