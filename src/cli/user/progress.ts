// What long commands share: how long they wait (`--timeout`, exit 7), and what they show on stderr
// while they work: a byte bar for uploads and downloads, and live status lines (a run's tasks, a
// benchmark's progress). On a terminal these redraw in place (cli-progress); otherwise nothing is
// redrawn and the commands print plain lines, so that logs and pipes stay readable.
import { InvalidArgumentError } from 'commander';
import cliProgress from 'cli-progress';
import { CliError, exitCodes, type CliIo } from './context.js';

/** Parses a `--timeout <seconds>` value (commander reports a bad one as a usage error). */
export function parseSeconds(value: string): number {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new InvalidArgumentError('not a number of seconds');
  return seconds;
}

/**
 * Runs `work` with a signal that aborts after `seconds` (none: no limit); when that abort ends the
 * work, it is a CliError with exit code 7 saying what was still not done.
 */
export async function withTimeout<T>(
  seconds: number | undefined,
  what: string,
  work: (signal: AbortSignal | undefined) => Promise<T>,
): Promise<T> {
  const signal = seconds === undefined ? undefined : AbortSignal.timeout(seconds * 1000);
  try {
    return await work(signal);
  } catch (error) {
    if (signal?.aborted)
      throw new CliError(
        `${what} after ${seconds} s`,
        exitCodes.timeout,
        'the work goes on: follow it again later',
      );
    throw error;
  }
}

/** A text bar for a percentage: [██████░░░░]. */
export function percentBar(percent: number, width = 20): string {
  const full = Math.round((Math.min(100, Math.max(0, percent)) / 100) * width);
  return `[${'█'.repeat(full)}${'░'.repeat(width - full)}]`;
}

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 → "1.5 KiB". */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export interface TransferProgress {
  /** `bytes` more went through. */
  advance(bytes: number): void;
  /** The transfer ended (or failed): the bar goes, so that the command's last line follows. */
  stop(): void;
}

/** A byte bar for a transfer of `total` bytes (undefined when unknown), on stderr when it is a terminal. */
export function transferProgress(io: CliIo, label: string, total: number | undefined): TransferProgress {
  if (!io.stderr.isTTY) return { advance: () => undefined, stop: () => undefined };
  const known = total !== undefined && total > 0;
  const bar = new cliProgress.SingleBar(
    {
      stream: io.stderr,
      format: known ? '{label} [{bar}] {percentage}% | {done} of {size} | {eta_formatted}' : '{label} {done}',
      clearOnComplete: true,
      hideCursor: true,
      barsize: 30,
    },
    cliProgress.Presets.shades_classic,
  );
  let done = 0;
  bar.start(known ? total : 1, 0, { label, done: formatBytes(0), size: formatBytes(total ?? 0) });
  return {
    advance(bytes) {
      done += bytes;
      bar.update(known ? done : 0, { done: formatBytes(done) });
    },
    stop: () => bar.stop(),
  };
}

export interface LiveStatus {
  /** Whether the lines redraw in place (a terminal), rather than print one after the other. */
  readonly live: boolean;
  /** Sets the status line named `key`: redrawn in place on a terminal, printed when it changes otherwise. */
  set(key: string, text: string): void;
  /** A line that stays (an event), printed above the status lines on a terminal. */
  log(text: string): void;
  stop(): void;
}

/** Status lines on stderr: live on a terminal, plain lines (each change once) otherwise. */
export function liveStatus(io: CliIo): LiveStatus {
  if (!io.stderr.isTTY) {
    const shown = new Map<string, string>();
    return {
      live: false,
      set(key, text) {
        if (shown.get(key) === text) return;
        shown.set(key, text);
        io.stderr.write(`${text}\n`);
      },
      log: (text) => io.stderr.write(`${text}\n`),
      stop: () => undefined,
    };
  }
  const board = new cliProgress.MultiBar({
    stream: io.stderr,
    format: (_options, _params, payload: { text: string }) => payload.text,
    hideCursor: true,
    linewrap: false,
    fps: 10,
  });
  const lines = new Map<string, cliProgress.SingleBar>();
  return {
    live: true,
    set(key, text) {
      const line = lines.get(key);
      if (line) line.update(0, { text });
      else lines.set(key, board.create(1, 0, { text }));
    },
    log: (text) => board.log(`${text}\n`),
    stop: () => board.stop(),
  };
}
