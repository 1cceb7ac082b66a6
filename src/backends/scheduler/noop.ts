// The `noop` job kind: does nothing, optionally for a while or by failing. It measures the queue's
// own cost (make bench) and lets an operator check that workers are alive.
import { setTimeout as sleep } from 'node:timers/promises';
import { JobFailure, type JobHandler } from './scheduler.js';

export interface NoopPayload {
  /** How long to "work", honouring cancellation (at most a minute). */
  sleepMs?: number;
  /** Fails instead of finishing. */
  fail?: 'retriable' | 'permanent';
}

export const noopHandler: JobHandler = {
  async run(job, { signal }) {
    const payload = job.payload as NoopPayload;
    const ms = Math.min(60_000, Math.max(0, Number(payload.sleepMs ?? 0)));
    if (ms > 0) await sleep(ms, undefined, { signal }).catch(() => undefined);
    if (payload.fail) throw new JobFailure('asked to fail', payload.fail === 'retriable');
    return { sleptMs: ms };
  },
};
