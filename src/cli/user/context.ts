// What every user command of `atrium` shares: the stored login (server URL and token in the user's
// config dir, mode 0600), the typed client built from it, the output (tables for people, `--json`
// for scripts), and errors as exit codes that mean something.
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Writable } from 'node:stream';
import Table from 'cli-table3';
import { MultiBar, Presets } from 'cli-progress';
import { InvalidArgumentError } from 'commander';
import {
  AtriumProblem,
  createAtriumClient,
  OperationTimeoutError,
  type AtriumClient,
  type AtriumEvent,
  type Operation,
} from '@atrium/client';

/** The exit codes of `atrium` (README, "Command line"). */
export const exitCodes = {
  ok: 0,
  /** Anything else: the server said no for a reason not below, or the command's work failed. */
  failure: 1,
  /** The command line is wrong (unknown command, missing argument, bad option value). */
  usage: 2,
  /** Not logged in, the token is refused (401), or it lacks the right (403). */
  auth: 3,
  /** The thing named does not exist (404). */
  notFound: 4,
  /** It conflicts with the current state, or a precondition or the quota refuses it (409, 412). */
  conflict: 5,
  /** The server cannot be reached or is unavailable (connection refused, 5xx). */
  unavailable: 6,
  /** A wait (`--wait`, `watch`) ran out of time before the thing was done. */
  timeout: 7,
  /** Interrupted (Ctrl-C) while waiting: the work goes on on the server. 128 + SIGINT, as shells do. */
  interrupted: 130,
} as const;

/** An error the command line explains itself: its message is printed, its code is the exit code. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: number = exitCodes.failure,
    readonly detail?: string,
  ) {
    super(message);
  }
}

export interface CliLogin {
  /** Atrium's URL, for example http://127.0.0.1:8080. */
  server: string;
  token: string;
  /** The project commands use when they are given none (`--project`). */
  project?: string;
}

export interface CliIo {
  stdout: Writable & { isTTY?: boolean; columns?: number };
  stderr: Writable & { isTTY?: boolean; columns?: number };
  env: NodeJS.ProcessEnv;
}

/** Where the login is stored: $ATRIUM_CLI_CONFIG, else $XDG_CONFIG_HOME/atrium/config.json, else ~/.config/atrium/config.json. */
export function loginPath(env: NodeJS.ProcessEnv): string {
  if (env.ATRIUM_CLI_CONFIG) return env.ATRIUM_CLI_CONFIG;
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'atrium', 'config.json');
}

export function readLogin(env: NodeJS.ProcessEnv): CliLogin | null {
  let text: string;
  try {
    text = readFileSync(loginPath(env), 'utf8');
  } catch {
    return null;
  }
  try {
    const value = JSON.parse(text) as Partial<CliLogin>;
    if (typeof value.server !== 'string' || typeof value.token !== 'string') return null;
    return {
      server: value.server,
      token: value.token,
      ...(typeof value.project === 'string' ? { project: value.project } : {}),
    };
  } catch {
    throw new CliError(`${loginPath(env)} is not valid JSON: run "atrium login" again`, exitCodes.auth);
  }
}

/** Writes the login with mode 0600 (its directory 0700), replacing the file in one rename. */
export function writeLogin(env: NodeJS.ProcessEnv, login: CliLogin): string {
  const file = loginPath(env);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(login, null, 2)}\n`, { mode: 0o600 });
  chmodSync(temporary, 0o600);
  renameSync(temporary, file);
  return file;
}

/** The options every user command takes (program.ts declares them once, globally). */
export interface GlobalOptions {
  json?: boolean;
  server?: string;
  token?: string;
  project?: string;
}

export interface Column<Row> {
  header: string;
  value: (row: Row) => unknown;
}

/** What a command's action gets: the client, the project, and the output. */
export class CliContext {
  private cached: AtriumClient | undefined;

  constructor(
    readonly io: CliIo,
    readonly options: GlobalOptions,
  ) {}

  get json(): boolean {
    return this.options.json === true;
  }

  /** The server and token: --server/--token, then ATRIUM_SERVER/ATRIUM_TOKEN, then the stored login. */
  login(): CliLogin {
    const login = this.maybeLogin();
    if (!login.server || !login.token)
      throw new CliError(
        'not logged in',
        exitCodes.auth,
        'run "atrium login --server URL --token TOKEN" first',
      );
    return login as CliLogin;
  }

  private maybeLogin(): Partial<CliLogin> {
    const stored = readLogin(this.io.env);
    const server = this.options.server ?? this.io.env.ATRIUM_SERVER ?? stored?.server;
    const token = this.options.token ?? this.io.env.ATRIUM_TOKEN ?? stored?.token;
    return {
      ...(server ? { server: server.replace(/\/+$/, '') } : {}),
      ...(token ? { token } : {}),
      ...(stored?.project ? { project: stored.project } : {}),
    };
  }

  /**
   * The typed client, with the login's token. `{ anonymous: true }` is for the public endpoints (the
   * catalog): it needs only a server, and sends the token when there is one.
   */
  client(options: { anonymous?: boolean } = {}): AtriumClient {
    if (!this.cached) {
      const login = options.anonymous ? this.maybeLogin() : this.login();
      if (!login.server)
        throw new CliError(
          'no server',
          exitCodes.auth,
          'run "atrium login --server URL --token TOKEN" first, or pass --server',
        );
      this.cached = createAtriumClient({
        baseUrl: login.server,
        ...(login.token ? { token: login.token } : {}),
      });
    }
    return this.cached;
  }

  /** The project: --project, then ATRIUM_PROJECT, then the stored default, then your personal project. */
  async project(): Promise<string> {
    const named = this.options.project ?? this.io.env.ATRIUM_PROJECT ?? this.login().project;
    if (named) return named;
    const { data, error, response } = await this.client().GET('/me');
    if (!response.ok) throw AtriumProblem.fromResponse(error, response);
    const personal = data?.projects[0]?.id;
    if (!personal)
      throw new CliError('you are a member of no project: name one with --project', exitCodes.usage);
    return personal;
  }

  /**
   * Waits until an operation is done, showing its events on stderr as they come: a spinner and a
   * progress bar when stderr is a terminal, one line per event otherwise. Resolves with the
   * succeeded operation; throws its problem when it failed, an OperationTimeoutError after
   * `timeoutMs`, a CliError (exit 130) on Ctrl-C — the operation itself goes on.
   */
  async follow(
    operation: Operation,
    { timeoutMs, label }: { timeoutMs: number; label: string },
  ): Promise<Operation> {
    const client = this.client();
    const display = progressDisplay(this.io.stderr, label);
    const stopEvents = new AbortController();
    const interrupt = new AbortController();
    const onInterrupt = () => interrupt.abort();
    process.once('SIGINT', onInterrupt);
    // The display is best effort: the outcome is the operation's, read by waitForOperation.
    const shown = (async () => {
      for await (const event of client.events('/operations/{operationId}/events', {
        params: { path: { operationId: operation.id } },
        signal: stopEvents.signal,
      }))
        display.event(event);
    })().catch(() => undefined);
    // The stream ends with the operation's `done` event: a moment to print it, no more.
    const lastEvents = () => Promise.race([shown, sleepUnref(2_000)]);
    try {
      const done = await client.waitForOperation(operation, { timeoutMs, signal: interrupt.signal });
      await lastEvents();
      return done;
    } catch (error) {
      if (interrupt.signal.aborted)
        throw new CliError(
          'interrupted',
          exitCodes.interrupted,
          `stopped waiting; operation ${operation.id} goes on`,
        );
      if (error instanceof AtriumProblem && error.operation) await lastEvents();
      throw error;
    } finally {
      stopEvents.abort();
      process.off('SIGINT', onInterrupt);
      display.stop();
    }
  }

  out(text: string): void {
    this.io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /** A message for people (progress, hints): to stderr, so that stdout stays the command's result. */
  note(text: string): void {
    this.io.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /** `data` as JSON with --json; otherwise what `human` prints. */
  result(data: unknown, human: () => void): void {
    if (this.json) this.out(JSON.stringify(data, null, 2));
    else human();
  }

  /** Rows as a table (or, with --json, as a JSON array of the rows themselves). */
  table<Row>(rows: Row[], columns: Column<Row>[]): void {
    if (this.json) {
      this.out(JSON.stringify(rows, null, 2));
      return;
    }
    if (rows.length === 0) {
      this.note('(none)');
      return;
    }
    const table = new Table({
      head: columns.map((c) => c.header),
      style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
      chars: plainTableChars,
    });
    for (const row of rows) table.push(columns.map((c) => cell(c.value(row))));
    // cli-table3 pads the last column too: trailing blanks only get in the way of `cut` and tests.
    this.out(
      table
        .toString()
        .split('\n')
        .map((line) => line.trimEnd())
        .join('\n'),
    );
  }

  /** Fields of one thing as "name: value" lines (or, with --json, the thing itself). */
  fields(data: unknown, lines: [string, unknown][]): void {
    this.result(data, () => {
      const width = Math.max(...lines.map(([name]) => name.length));
      this.out(lines.map(([name, value]) => `${`${name}:`.padEnd(width + 2)}${cell(value)}`).join('\n'));
    });
  }
}

/** Borderless columns, like kubectl's: easy to read and to cut. */
const plainTableChars = {
  top: '',
  'top-mid': '',
  'top-left': '',
  'top-right': '',
  bottom: '',
  'bottom-mid': '',
  'bottom-left': '',
  'bottom-right': '',
  left: '',
  'left-mid': '',
  mid: '',
  'mid-mid': '',
  right: '',
  'right-mid': '',
  middle: '  ',
};

interface ProgressDisplay {
  event(event: AtriumEvent): void;
  stop(): void;
}

const spinnerFrames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** Events as lines above a spinner and a bar on a terminal; as plain lines anywhere else (a log, a pipe). */
function progressDisplay(stream: CliIo['stderr'], label: string): ProgressDisplay {
  const line = (event: AtriumEvent) =>
    `${label}: ${event.event}${event.data.message ? `: ${event.data.message}` : ''}`;
  if (!stream.isTTY)
    return {
      event: (event) => stream.write(`${line(event)}\n`),
      stop: () => undefined,
    };
  const bars = new MultiBar(
    {
      stream,
      format: '{spinner} {label} [{bar}] {percentage}% {message}',
      barsize: 24,
      hideCursor: true,
      clearOnComplete: true,
      fps: 10,
    },
    Presets.shades_classic,
  );
  const bar = bars.create(100, 0, { spinner: spinnerFrames[0], label, message: '' });
  let frame = 0;
  const spin = setInterval(() => bar.update({ spinner: spinnerFrames[++frame % spinnerFrames.length] }), 100);
  return {
    event(event) {
      bars.log(`${line(event)}\n`);
      const progress = event.data.data?.progress;
      const payload = { message: event.data.message ?? '' };
      if (typeof progress === 'number') bar.update(progress, payload);
      else if (event.event === 'done' && event.data.data?.status === 'succeeded') bar.update(100, payload);
      else bar.update(payload);
    },
    stop() {
      clearInterval(spin);
      // Lines logged since the last redraw are written by the next one: draw once more.
      bars.update();
      bars.stop();
    },
  };
}

function sleepUnref(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** A commander parser for a number of seconds (`--timeout 90`, `--timeout 0.5`). */
export function parseSeconds(value: string): number {
  const seconds = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || !(seconds > 0))
    throw new InvalidArgumentError('a positive number of seconds');
  return seconds;
}

/** A commander parser for a whole number from 1 (`--tail 20`). */
export function parseCount(value: string): number {
  if (!/^[1-9]\d*$/.test(value)) throw new InvalidArgumentError('a whole number from 1');
  return Number(value);
}

/** How long ago a time was, the way people read it in a table: 5s, 3m, 2h, 4d. */
export function age(timestamp: string | null | undefined, now = Date.now()): string {
  if (!timestamp) return '-';
  const seconds = Math.max(0, Math.floor((now - Date.parse(timestamp)) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

function cell(value: unknown): string {
  if (value === null || value === undefined) return '-';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

/** The exit code of a problem's HTTP status. */
export function exitCodeOfStatus(status: number): number {
  if (status === 401 || status === 403) return exitCodes.auth;
  if (status === 404) return exitCodes.notFound;
  if (status === 409 || status === 412) return exitCodes.conflict;
  if (status === 400) return exitCodes.usage;
  if (status >= 500) return exitCodes.unavailable;
  return exitCodes.failure;
}

/** Prints an error as the problem's title and detail (JSON on stderr with --json); answers the exit code. */
export function reportError(error: unknown, io: CliIo, json: boolean): number {
  let code: number = exitCodes.failure;
  let title: string;
  let detail: string | undefined;
  let document: unknown;
  if (error instanceof AtriumProblem) {
    // An operation that failed (a launch that crashed, a cancelled run) is the work failing: 1;
    // unless the quota refused it, which is what 5 says.
    if (!error.operation) code = exitCodeOfStatus(error.status);
    else if (error.kind === 'quota-exceeded') code = exitCodes.conflict;
    title = error.title;
    // A validation problem's detail repeats its field errors in one line: those are shown, one a
    // line (the first ten), instead.
    const fields = error.errors.map((e) => `${e.pointer ?? e.location}: ${e.message}`);
    if (fields.length > 10) fields.splice(10, fields.length - 10, `… and ${fields.length - 10} more`);
    detail =
      [fields.length > 0 ? undefined : error.detail, ...fields, ...logTailLines(error.problem)]
        .filter(Boolean)
        .join('\n') || undefined;
    document = error.problem;
  } else if (error instanceof OperationTimeoutError) {
    code = exitCodes.timeout;
    title = 'timed out waiting';
    detail = error.message;
  } else if (error instanceof CliError) {
    code = error.exitCode;
    title = error.message;
    detail = error.detail;
  } else if (isConnectionError(error)) {
    code = exitCodes.unavailable;
    title = 'cannot reach the server';
    detail = connectionDetail(error);
  } else {
    title = error instanceof Error ? error.message : String(error);
  }
  if (json)
    io.stderr.write(
      `${JSON.stringify(document ?? { title, ...(detail ? { detail } : {}), exit_code: code })}\n`,
    );
  else io.stderr.write(`atrium: ${title}${detail ? `\n  ${detail.replace(/\n/g, '\n  ')}` : ''}\n`);
  return code;
}

/** The last lines of a log that a problem carries (a launch that failed, a task that failed). */
function logTailLines(problem: Record<string, unknown>): string[] {
  const nested = problem.job_error as Record<string, unknown> | undefined;
  const tail = problem.log_tail ?? nested?.log_tail;
  if (!Array.isArray(tail) || tail.length === 0) return [];
  const lines = tail.filter((l): l is string => typeof l === 'string').slice(-20);
  return ['log tail:', ...lines.map((l) => `  ${l}`)];
}

function isConnectionError(error: unknown): error is Error {
  return error instanceof TypeError && /fetch failed/i.test(error.message);
}

function connectionDetail(error: Error): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.message ?? cause?.code ?? error.message;
}
