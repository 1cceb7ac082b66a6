// Timing shared by the metrics: a monotonic clock in nanoseconds and a bounded "repeat for a
// duration" loop that honours the abort signal.

export const nowNs = (): bigint => process.hrtime.bigint();
export const secondsSince = (start: bigint): number => Number(nowNs() - start) / 1e9;

export interface Repetitions {
  count: number;
  seconds: number;
}

/**
 * Calls `work` until at least `durationMs` have passed (and at least once), checking the clock
 * and the signal between calls only, so that each call is timed whole.
 */
export function repeatFor(durationMs: number, signal: AbortSignal, work: () => void): Repetitions {
  const start = nowNs();
  const budget = BigInt(Math.round(durationMs * 1e6));
  let count = 0;
  let elapsed = 0n;
  do {
    signal.throwIfAborted();
    work();
    count++;
    elapsed = nowNs() - start;
  } while (elapsed < budget);
  return { count, seconds: Number(elapsed) / 1e9 };
}

export const MB = 1e6;
export const MiB = 1024 * 1024;
