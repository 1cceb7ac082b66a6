// Plugin drivers: external HTTP services an administrator registers (`POST /api/v1/drivers`) to
// perform functions for the services of an app — every service whose app (its package's name and
// version) matches the plugin's `app` rule (a name and a semver range) offers the plugin's
// functions. The protocol, all JSON over HTTP, Atrium being the client:
//
//   GET  {url}/healthz
//        → any 2xx: up. Anything else, or nothing within `functions.pluginHealthTimeoutMs`: down.
//        Asked at registration, then every `functions.pluginHealthIntervalMs`, and again before a
//        synchronous call through a plugin last seen down.
//
//   POST {url}/functions/{name}
//        { "function": name,
//          "input": <the call's input, valid for the function's input schema>,
//          "service": { "id", "project_id", "app": {"name", "version"},
//                       "endpoints": { <port name>: <base URL of that http port> } } }
//        → 2xx { "result": <the result> }   checked against the function's output schema
//        → 4xx problem+json (or any JSON)   the plugin refuses the input: the call fails with 422,
//                                           the plugin's status and answer in the problem
//        → 5xx, not JSON, no `result`       the call fails with 502
//        nothing within the function's timeout_ms: 504 (a queued call fails, or is tried again if
//        the function is idempotent).
//
// The endpoints are the service's own addresses, reached from where Atrium runs: a plugin calls
// the service's API there, with no Atrium credentials (it never needs them). Redirects are answers,
// never followed; answers are read up to 10 MiB.
import { DriverError, exchange, ping } from './http-json.js';

/** What a call through a plugin tells it of the service it is for. */
export interface CalledService {
  id: string;
  projectId: string;
  app: { name: string; version: string };
  /** The base URL of each http port of the service, by port name. */
  endpoints: Record<string, string>;
}

/** Where a plugin is, and its name (for the messages). */
export interface PluginTarget {
  name: string;
  url: string;
}

const base = (url: string) => url.replace(/\/+$/, '');

/** Why a plugin's base URL cannot be used (null: it can), for the administrator who gave it. */
export function pluginUrlProblem(url: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `"${url}" is not a URL`;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    return `a plugin is reached over http or https, not ${parsed.protocol.replace(/:$/, '')}`;
  if (parsed.username || parsed.password) return 'a plugin URL may not carry credentials';
  if (parsed.search || parsed.hash) return 'a plugin URL may not have a query or a fragment';
  return null;
}

/** Performs a plugin's function for a service; rejects with a DriverError. */
export async function callPlugin(
  plugin: PluginTarget,
  name: string,
  input: unknown,
  service: CalledService,
  signal: AbortSignal,
): Promise<unknown> {
  const url = new URL(`${base(plugin.url)}/functions/${encodeURIComponent(name)}`);
  const body = JSON.stringify({
    function: name,
    input,
    service: {
      id: service.id,
      project_id: service.projectId,
      app: service.app,
      endpoints: service.endpoints,
    },
  });
  let answer: Awaited<ReturnType<typeof exchange>>;
  try {
    answer = await exchange(url, { method: 'POST', body }, signal, name);
  } catch (error) {
    if (error instanceof DriverError && error.reason === 'unreachable') {
      const why = error.message.replace(/^the service could not be reached\s*/, '');
      throw new DriverError('unreachable', `plugin ${plugin.name} could not be reached ${why}`.trim());
    }
    throw error;
  }
  if (!answer.ok) {
    throw new DriverError('refused', `${name}: plugin ${plugin.name} answered ${answer.status}`, {
      status: answer.status,
      body: answer.body,
    });
  }
  const reply = answer.body;
  if (reply === null || typeof reply !== 'object' || Array.isArray(reply) || !('result' in reply)) {
    throw new DriverError('bad-answer', `plugin ${plugin.name} answered ${name} without a result`, {
      status: answer.status,
      body: reply,
    });
  }
  return (reply as { result: unknown }).result;
}

/** A plugin's health: up when `GET {url}/healthz` answers 2xx before `signal` aborts. */
export async function checkPlugin(
  url: string,
  signal: AbortSignal,
): Promise<{ status: 'up' | 'down'; detail: string | null }> {
  try {
    const { status } = await ping(base(url), 'healthz', signal);
    return status >= 200 && status < 300
      ? { status: 'up', detail: null }
      : { status: 'down', detail: `GET /healthz answered ${status}` };
  } catch (error) {
    if (!(error instanceof DriverError)) throw error;
    return {
      status: 'down',
      detail:
        error.reason === 'timeout'
          ? 'GET /healthz did not answer in time'
          : error.message.replace('the service', 'the plugin'),
    };
  }
}
