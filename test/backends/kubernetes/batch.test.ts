// Batch workloads as Kubernetes Jobs, against the fake API server (whose kubelet runs `node`
// images as real processes): outcome and exit code, logs, files, work directory, cancel, timeout.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { KubernetesBatchBackend } from '../../../src/backends/cluster/kubernetes/batch.js';
import { createClients, loadKubeConfig } from '../../../src/backends/cluster/kubernetes/settings.js';
import type { BatchStatus, BatchWorkloadSpec } from '../../../src/backends/cluster/types.js';
import { createLogger } from '../../../src/log.js';
import { randomBase62 } from '../../../src/ids.js';
import { FakeKube } from '../../fixtures/fake-kube/index.js';

const script = `
import { mkdirSync, writeFileSync } from 'node:fs';
console.log('job starting with ' + process.argv.slice(2).join(' '));
if (process.env.OUTPUT) { mkdirSync(process.env.OUTPUT, { recursive: true }); writeFileSync(process.env.OUTPUT + '/result.txt', 'done'); }
setTimeout(() => { console.log('job ending'); process.exit(Number(process.env.CODE ?? 0)); }, Number(process.env.SLEEP_MS ?? 0));
`;

function jobSpec(env: Record<string, string>, overrides: Partial<BatchWorkloadSpec> = {}): BatchWorkloadSpec {
  return {
    jobId: `job_${randomBase62(12)}`,
    projectId: 'pipelines',
    run: {
      local: null,
      cluster: {
        image: 'node:20-alpine',
        command: ['node', '/app/job.mjs'],
        args: ['--epochs', '2'],
        env,
        files: { 'job.mjs': script },
        workSubPath: 'runs/run_1',
      },
    },
    resources: { cpuMillis: 100, memoryBytes: 64 * 1024 ** 2, gpu: 0 },
    timeoutMs: 30_000,
    labels: { 'atrium.dev/run': 'run_1' },
    ...overrides,
  };
}

describe('batch workloads as Kubernetes Jobs', () => {
  let fake: FakeKube;
  let batch: KubernetesBatchBackend;

  const settle = async (jobId: string, timeoutMs = 15_000): Promise<BatchStatus | null> => {
    const deadline = Date.now() + timeoutMs;
    let status: BatchStatus | null = null;
    for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
      status = await batch.status(jobId);
      if (status?.phase === 'succeeded' || status?.phase === 'failed') return status;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`job ${jobId} did not end; last: ${JSON.stringify(status)}`);
  };
  const lines = async (jobId: string, options: { tail?: number; follow?: boolean } = {}) => {
    const out: string[] = [];
    for await (const line of batch.logs(jobId, options)) out.push(line.trimEnd());
    return out;
  };

  beforeAll(async () => {
    fake = await FakeKube.start();
    batch = new KubernetesBatchBackend({
      clients: createClients(loadKubeConfig(fake.kubeconfigPath, null)),
      settings: { workVolumeClaim: 'atrium-work', stopGraceSeconds: 1 },
      log: createLogger('silent'),
    });
  });
  afterAll(() => fake.close());

  it('runs a Job to success: exit code 0, its logs, its output in the work directory, labelled', async () => {
    const spec = jobSpec({ OUTPUT: '/work/out' });
    await batch.start(spec);
    const status = await settle(spec.jobId);
    expect(status).toMatchObject({ phase: 'succeeded', exitCode: 0, message: null });
    expect(status?.startedAt).not.toBeNull();
    expect(status?.finishedAt).not.toBeNull();
    expect(await lines(spec.jobId)).toEqual(['job starting with --epochs 2', 'job ending']);
    expect(await lines(spec.jobId, { tail: 1 })).toEqual(['job ending']);
    const output = join(
      fake.root,
      'claims',
      'atrium-pipelines',
      'atrium-work',
      'runs',
      'run_1',
      'out',
      'result.txt',
    );
    expect(existsSync(output) && readFileSync(output, 'utf8')).toBe('done');
    const [job] = fake.objects('jobs', 'atrium-pipelines', `atrium.dev/job=${spec.jobId}`);
    expect(job?.metadata.labels).toMatchObject({
      'atrium.dev/run': 'run_1',
      'atrium.dev/project': 'pipelines',
    });
    expect(job?.spec).toMatchObject({ backoffLimit: 0, activeDeadlineSeconds: 30 });
  });

  it('never starts a Job twice', async () => {
    const spec = jobSpec({});
    await batch.start(spec);
    await batch.start(spec);
    expect(fake.objects('jobs', 'atrium-pipelines', `atrium.dev/job=${spec.jobId}`)).toHaveLength(1);
    await settle(spec.jobId);
  });

  it('reports a failed Job with the exit code of its container', async () => {
    const spec = jobSpec({ CODE: '3' });
    await batch.start(spec);
    expect(await settle(spec.jobId)).toMatchObject({
      phase: 'failed',
      exitCode: 3,
      message: 'exited with code 3',
    });
  });

  it('follows the log of a running Job until it ends', async () => {
    const spec = jobSpec({ SLEEP_MS: '600' });
    await batch.start(spec);
    expect(await lines(spec.jobId, { follow: true })).toEqual(['job starting with --epochs 2', 'job ending']);
  });

  it('fails a Job that outlives its timeout, as deadline exceeded', async () => {
    const spec = jobSpec({ SLEEP_MS: '20000' }, { timeoutMs: 1000 });
    await batch.start(spec);
    const status = await settle(spec.jobId, 10_000);
    expect(status?.phase).toBe('failed');
    expect(status?.message).toMatch(/^deadline exceeded/);
  });

  it('cancels a running Job: deleted in the background, failed "cancelled" from then on', async () => {
    const spec = jobSpec({ SLEEP_MS: '20000' });
    await batch.start(spec);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && (await batch.status(spec.jobId))?.phase !== 'running') {
      await new Promise((r) => setTimeout(r, 100));
    }
    await batch.cancel(spec.jobId);
    expect(await batch.status(spec.jobId)).toMatchObject({ phase: 'failed', message: 'cancelled' });
    const deletion = fake.requests.find((r) => r.method === 'DELETE' && r.path.includes('/jobs/'));
    expect(deletion?.query.get('propagationPolicy')).toBe('Background');
    const gone = Date.now() + 10_000;
    while (Date.now() < gone && fake.pods(`atrium.dev/job=${spec.jobId}`).length > 0) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(fake.pods(`atrium.dev/job=${spec.jobId}`)).toEqual([]);
  });

  it('removes everything a Job had', async () => {
    const spec = jobSpec({});
    await batch.start(spec);
    await settle(spec.jobId);
    await batch.remove(spec.jobId);
    expect(await batch.status(spec.jobId)).toBeNull();
    expect(fake.objects('configmaps', 'atrium-pipelines', `atrium.dev/job=${spec.jobId}`)).toEqual([]);
    expect(fake.objects('jobs', 'atrium-pipelines', `atrium.dev/job=${spec.jobId}`)).toEqual([]);
    await batch.remove(spec.jobId);
  });
});
