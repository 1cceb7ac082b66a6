// The conformance suite of cluster backends: what every backend (local processes, Kubernetes) must
// do, through the ClusterBackend interface only. Each backend's test file runs it with a harness.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parse as parseYaml } from 'yaml';
import { parseManifest } from '../../src/backends/catalog/manifest.js';
import type {
  ClusterBackend,
  WorkloadEvent,
  WorkloadSpec,
  WorkloadStatus,
} from '../../src/backends/cluster/types.js';
import { randomBase62 } from '../../src/ids.js';
import { repoRoot } from '../../src/paths.js';

export const probeDir = join(repoRoot, 'test', 'fixtures', 'packages', 'probe');
const probe = parseManifest(parseYaml(readFileSync(join(probeDir, '1.0.0.yaml'), 'utf8')));

export interface BackendHarness {
  /** A backend over the harness's state; a second call is what the API gets after a restart. */
  create(): ClusterBackend;
  /** Whether the test can reach workload endpoints over HTTP. */
  reachable: boolean;
  /** Makes a running workload vanish behind the backend's back. */
  sabotage(serviceId: string): Promise<void>;
  /** True when nothing of the workload runs any more. */
  isGone(serviceId: string): Promise<boolean>;
  cleanup(): Promise<void>;
}

export function probeSpec(
  options: Record<string, unknown> = {},
  serviceId = `svc_${randomBase62(20)}`,
): WorkloadSpec {
  return {
    serviceId,
    generation: 1,
    serviceName: 'probe',
    projectId: 'conformance',
    package: { catalogId: 'test', name: 'probe', version: '1.0.0', sourceDir: probeDir },
    run: probe.run,
    options: { ...probe.defaults, ...options },
    secretOptions: ['secret'],
    resources: { cpuMillis: 100, memoryBytes: 128 * 1024 * 1024, gpu: 0 },
  };
}

/** Polls until `predicate` holds on the workload's status, for at most `timeoutMs`. */
export async function waitForStatus(
  backend: ClusterBackend,
  serviceId: string,
  predicate: (status: WorkloadStatus | null) => boolean,
  timeoutMs = 20_000,
): Promise<WorkloadStatus | null> {
  const deadline = Date.now() + timeoutMs;
  let last: WorkloadStatus | null = null;
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    last = await backend.status(serviceId);
    if (predicate(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`status of ${serviceId} never matched; last: ${JSON.stringify(last)}`);
}

async function collect(iterable: AsyncIterable<string>): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of iterable) lines.push(line.replace(/\n$/, ''));
  return lines;
}

export function describeClusterBackend(name: string, makeHarness: () => Promise<BackendHarness>): void {
  describe(`cluster backend conformance: ${name}`, () => {
    let harness: BackendHarness;
    let backend: ClusterBackend;
    const events: WorkloadEvent[] = [];
    const started: string[] = [];

    const launch = async (options: Record<string, unknown> = {}) => {
      const spec = probeSpec(options);
      started.push(spec.serviceId);
      await backend.apply(spec);
      return spec;
    };

    beforeAll(async () => {
      harness = await makeHarness();
      backend = harness.create();
      backend.onEvent((event) => events.push(event));
    });
    afterAll(async () => {
      for (const id of started) await backend.delete(id).catch(() => undefined);
      await backend.close();
      await harness.cleanup();
    });

    it('renders what it would run, secrets masked, creating nothing', async () => {
      const spec = probeSpec({ secret: 'hunter2' });
      const rendered = backend.render(spec);
      expect(rendered.backend).toBe(backend.type);
      expect(JSON.stringify(rendered)).not.toContain('hunter2');
      expect(JSON.stringify(rendered)).toContain('********');
      expect(await backend.status(spec.serviceId)).toBeNull();
    });

    it('starts a workload and reports it running, ready, with its endpoints', async () => {
      const spec = await launch({ label: 'first' });
      const status = await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      expect(status?.tasks).toHaveLength(1);
      expect(status?.tasks[0]).toMatchObject({ status: 'running', ready: true, restarts: 0 });
      expect(status?.endpoints).toEqual([expect.objectContaining({ port: 'http', protocol: 'http' })]);
      expect(status?.startedAt).not.toBeNull();
      if (harness.reachable) {
        const answer = await fetch(`${status?.endpoints[0]?.url}/hello`);
        expect(await answer.json()).toMatchObject({ probe: 'first' });
      }
      // The status may say running a poll before the event that says so is told.
      const deadline = Date.now() + 5000;
      while (
        Date.now() < deadline &&
        !events.some((e) => e.serviceId === spec.serviceId && e.type === 'running')
      ) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const mine = events.filter((e) => e.serviceId === spec.serviceId);
      expect(mine.map((e) => e.type)).toContain('running');
      const seqs = mine.map((e) => e.sourceSeq).filter((s): s is number => s !== null);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    });

    it('never starts a workload twice: applying it again leaves it as it is', async () => {
      const spec = await launch();
      const first = await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      await backend.apply(spec);
      const again = await backend.status(spec.serviceId);
      expect(again?.tasks[0]?.containers[0]?.startedAt).toBe(first?.tasks[0]?.containers[0]?.startedAt);
      expect(again?.endpoints).toEqual(first?.endpoints);
    });

    it('keeps what the workload writes, with tail, since and timestamps', async () => {
      const spec = await launch();
      const status = await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      if (harness.reachable) await fetch(`${status?.endpoints[0]?.url}/logged`);
      const deadline = Date.now() + 5000;
      let lines: string[] = [];
      // Written when it is: the request's line may come a moment after its answer.
      const complete = (seen: string[]) =>
        seen.some((l) => l.includes('probe listening')) &&
        (!harness.reachable || seen.some((l) => l.includes('/logged')));
      while (Date.now() < deadline && !complete(lines)) {
        lines = await collect(backend.logs(spec.serviceId, {}));
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(lines[0]).toMatch(/^probe starting in mode serve/);
      expect(lines).toContain('probe writes to stderr too');
      const last = await collect(backend.logs(spec.serviceId, { tail: 1 }));
      expect(last).toEqual([lines[lines.length - 1]]);
      const stamped = await collect(backend.logs(spec.serviceId, { timestamps: true, tail: 1 }));
      expect(stamped[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z /);
      const future = await collect(backend.logs(spec.serviceId, { since: new Date(Date.now() + 60_000) }));
      expect(future).toEqual([]);
    });

    it('follows the log as the workload writes, until asked to stop', async () => {
      const spec = await launch();
      const status = await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      const controller = new AbortController();
      const seen: string[] = [];
      const following = (async () => {
        for await (const line of backend.logs(spec.serviceId, {
          follow: true,
          signal: controller.signal,
          tail: 1,
        })) {
          seen.push(line);
          if (line.includes('/followed')) controller.abort();
        }
      })();
      if (harness.reachable) await fetch(`${status?.endpoints[0]?.url}/followed`);
      else {
        // Nothing to make it write: what it wrote so far is followed for a moment.
        await new Promise((r) => setTimeout(r, 500));
        controller.abort();
      }
      const timeout = setTimeout(() => controller.abort(), 10_000);
      await following;
      clearTimeout(timeout);
      if (harness.reachable) expect(seen.some((l) => l.includes('probe served GET /followed'))).toBe(true);
      else expect(seen.length).toBeGreaterThan(0);
    });

    it('stops a workload (suspension), keeping its logs, and starts it again', async () => {
      const spec = await launch();
      await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      await backend.stop(spec.serviceId);
      const stopped = await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'stopped');
      expect(stopped?.endpoints).toEqual([]);
      expect(stopped?.tasks[0]?.status).toBe('terminated');
      expect(await harness.isGone(spec.serviceId)).toBe(true);
      expect((await collect(backend.logs(spec.serviceId, {}))).length).toBeGreaterThan(0);
      await backend.apply(spec);
      await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
    });

    it('deletes a workload with everything it had', async () => {
      const spec = await launch();
      await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      await backend.delete(spec.serviceId);
      expect(await backend.status(spec.serviceId)).toBeNull();
      expect(await harness.isGone(spec.serviceId)).toBe(true);
      await backend.delete(spec.serviceId);
    });

    it('reports a workload that exits at once as failed, with its exit code and log tail', async () => {
      const spec = await launch({ mode: 'crash', exit_code: 42 });
      const status = await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'failed');
      expect(status?.exitCode).toBe(42);
      expect(status?.message).toMatch(/42/);
      expect(status?.logTail).toContain('probe crashing now');
      expect(status?.endpoints).toEqual([]);
      expect(await harness.isGone(spec.serviceId)).toBe(true);
    });

    it('restarts a workload that crashes after it was ready, then gives up', async () => {
      // Ready for 1.5 s before each crash: long enough for a backend on a loaded machine to see it
      // ready (one that never saw it ready calls it a failure to start, rightly).
      const spec = await launch({ mode: 'crash-later', crash_after_ms: 1500, exit_code: 9 });
      const status = await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'failed', 60_000);
      expect(status?.exitCode).toBe(9);
      expect(status?.tasks[0]?.restarts).toBeGreaterThanOrEqual(1);
      expect(status?.message).toMatch(/giving up/);
      const types = events.filter((e) => e.serviceId === spec.serviceId).map((e) => e.type);
      expect(types).toContain('restarting');
    });

    it('fails a workload that never becomes ready in time', async () => {
      const spec = await launch({ mode: 'never-ready' });
      const status = await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'failed', 30_000);
      expect(status?.message).toMatch(/not ready/);
      expect(await harness.isGone(spec.serviceId)).toBe(true);
    });

    it('kills a workload that ignores SIGTERM once the grace period is over', async () => {
      const spec = await launch({ mode: 'ignore-term' });
      await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'running');
      await backend.stop(spec.serviceId);
      await waitForStatus(backend, spec.serviceId, (s) => s?.phase === 'stopped');
      expect(await harness.isGone(spec.serviceId)).toBe(true);
    });

    it('after a restart, adopts what runs, reports what vanished, stops what should not run, removes leftovers', async () => {
      const adopted = await launch();
      const vanished = await launch();
      const unwanted = await launch();
      const leftover = await launch();
      for (const id of [adopted, vanished, unwanted, leftover].map((s) => s.serviceId)) {
        await waitForStatus(backend, id, (s) => s?.phase === 'running');
      }
      const running = await backend.status(adopted.serviceId);
      const lastSeq = Math.max(
        ...events.filter((e) => e.serviceId === adopted.serviceId).map((e) => e.sourceSeq ?? 0),
      );
      await backend.close();
      await harness.sabotage(vanished.serviceId);

      backend = harness.create();
      const replayed: WorkloadEvent[] = [];
      backend.onEvent((event) => {
        events.push(event);
        replayed.push(event);
      });
      const report = await backend.reconcile([
        { serviceId: adopted.serviceId, shouldRun: true, afterSeq: lastSeq },
        { serviceId: vanished.serviceId, shouldRun: true },
        { serviceId: unwanted.serviceId, shouldRun: false },
        ...started
          .filter((id) => ![adopted, vanished, unwanted, leftover].some((s) => s.serviceId === id))
          .map((serviceId) => ({ serviceId, shouldRun: false })),
      ]);
      expect(report.adopted).toContain(adopted.serviceId);
      expect(report.lost).toEqual([vanished.serviceId]);
      expect(report.removed).toEqual([leftover.serviceId]);
      expect(await harness.isGone(leftover.serviceId)).toBe(true);
      expect(await harness.isGone(unwanted.serviceId)).toBe(true);
      expect(await harness.isGone(vanished.serviceId)).toBe(true);

      const stillRunning = await backend.status(adopted.serviceId);
      expect(stillRunning?.phase).toBe('running');
      expect(stillRunning?.endpoints).toEqual(running?.endpoints);
      const lost = await waitForStatus(backend, vanished.serviceId, (s) => s?.phase === 'lost');
      expect(lost?.message).not.toBeNull();
      // Events already seen before the restart are not told again.
      await new Promise((r) => setTimeout(r, 500));
      expect(
        replayed.filter((e) => e.serviceId === adopted.serviceId && (e.sourceSeq ?? 0) <= lastSeq),
      ).toEqual([]);
      await backend.stop(adopted.serviceId);
    });
  });
}
