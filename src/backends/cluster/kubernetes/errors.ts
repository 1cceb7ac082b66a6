// Kubernetes errors end here: an ApiException (or a failed connection) becomes a DomainError with
// a detail a user can act on, and never reaches a client raw.
import { ApiException, FetchError } from '@kubernetes/client-node';
import { DomainError } from '../../../errors.js';

/** The `Status` document the API server answers errors with (what of it we read). */
export interface KubeStatus {
  kind?: string;
  status?: string;
  reason?: string;
  message?: string;
  code?: number;
  details?: { name?: string; kind?: string; group?: string };
}

/** The status code and Status body of a Kubernetes API error, or null when it is none. */
export function apiError(error: unknown): { code: number; status: KubeStatus } | null {
  if (!(error instanceof ApiException)) return null;
  const code = (error as ApiException<unknown>).code;
  const body: unknown = (error as ApiException<unknown>).body;
  let status: KubeStatus = {};
  if (typeof body === 'string') {
    try {
      status = JSON.parse(body) as KubeStatus;
    } catch {
      status = { message: body };
    }
  } else if (body !== null && typeof body === 'object') {
    status = body as KubeStatus;
  }
  return { code, status };
}

export const isNotFound = (error: unknown): boolean => apiError(error)?.code === 404;
/** A 404 for the namespace itself (deleted outside Atrium), not for an object in it. */
export const isMissingNamespace = (error: unknown): boolean => {
  const api = apiError(error);
  return api?.code === 404 && api.status.details?.kind === 'namespaces';
};
export const isAlreadyExists = (error: unknown): boolean =>
  apiError(error)?.code === 409 && apiError(error)?.status.reason === 'AlreadyExists';
export const isConflict = (error: unknown): boolean =>
  apiError(error)?.code === 409 && apiError(error)?.status.reason !== 'AlreadyExists';

/** What a quota refusal says: `exceeded quota: <name>, requested: <r>, used: <u>, limited: <l>`. */
export interface QuotaRefusal {
  quota: string;
  resources: { resource: string; requested: string; used: string; limited: string }[];
}

export function parseQuotaRefusal(message: string): QuotaRefusal | null {
  const match = /exceeded quota: ([^,]+), requested: (\S*), used: (\S*), limited: (\S*)/.exec(message);
  if (!match) return null;
  const [, quota = '', requested = '', used = '', limited = ''] = match;
  const amounts = (list: string) =>
    new Map(
      list
        .split(',')
        .filter(Boolean)
        .map((pair) => pair.split('=', 2) as [string, string]),
    );
  const usedBy = amounts(used);
  const limitedBy = amounts(limited);
  return {
    quota,
    resources: [...amounts(requested)].map(([resource, amount]) => ({
      resource,
      requested: amount,
      used: usedBy.get(resource) ?? '0',
      limited: limitedBy.get(resource) ?? '?',
    })),
  };
}

/** The quota-exceeded error of a refusal, naming each resource that has no room. */
export function quotaExceeded(refusal: QuotaRefusal): DomainError {
  const what = refusal.resources
    .map((r) => `${r.resource}: ${r.requested} requested, ${r.used} used of ${r.limited}`)
    .join('; ');
  return new DomainError(
    'quota-exceeded',
    `the cluster quota "${refusal.quota}" of this project has no room for it (${what})`,
    {
      quota: refusal.quota,
      resources: refusal.resources.map((r) => r.resource),
    },
  );
}

/** Whether `error` is a network failure reaching the API server (not an answer from it). */
function isUnreachable(error: unknown): boolean {
  if (error instanceof FetchError) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^E[A-Z]+$/.test(code);
}

/**
 * The DomainError standing for a failed Kubernetes call about `what` (for example `deployment
 * "x"`). DomainErrors pass through unchanged; anything unexpected becomes `internal`.
 */
export function translate(error: unknown, what: string): DomainError {
  if (error instanceof DomainError) return error;
  const api = apiError(error);
  if (!api) {
    if (isUnreachable(error)) {
      return new DomainError('unavailable', 'the Kubernetes API server of this region cannot be reached');
    }
    return new DomainError('internal', `the Kubernetes backend failed on ${what}`);
  }
  const message = api.status.message ?? '';
  switch (api.code) {
    case 404:
      return new DomainError('not-found', `${what} does not exist in the cluster`);
    case 409:
      return new DomainError(
        'conflict',
        api.status.reason === 'AlreadyExists'
          ? `${what} already exists in the cluster`
          : `${what} kept changing in the cluster while Atrium updated it; try again`,
      );
    case 403: {
      const refusal = parseQuotaRefusal(message);
      if (refusal) return quotaExceeded(refusal);
      return new DomainError('internal', `the cluster does not let Atrium act on ${what} (forbidden)`);
    }
    case 400:
    case 422:
      return new DomainError('unprocessable', `the cluster refused ${what}: ${message || 'invalid'}`);
    case 401:
      return new DomainError('internal', 'the cluster does not accept the credentials of this region');
    default:
      return new DomainError(
        'unavailable',
        `the Kubernetes API server answered ${api.code} on ${what}; try again later`,
      );
  }
}

/**
 * Runs `work`, translating whatever it throws; what the API server did not answer as expected is
 * logged with its cause (the client gets the translation only).
 */
export async function guarded<T>(
  what: string,
  work: () => Promise<T>,
  log?: { warn(details: object, message: string): void },
): Promise<T> {
  try {
    return await work();
  } catch (error) {
    const translated = translate(error, what);
    if (translated !== error && (translated.kind === 'internal' || translated.kind === 'unavailable')) {
      log?.warn({ err: error, what }, `kubernetes: ${translated.detail}`);
    }
    throw translated;
  }
}

/** Null for a 404, the result otherwise. */
export async function orNull<T>(read: Promise<T>): Promise<T | null> {
  try {
    return await read;
  } catch (error) {
    if (isNotFound(error)) return null;
    throw error;
  }
}

/** Ignores a 404 (deleting what is already gone). */
export async function ignoreNotFound(work: Promise<unknown>): Promise<void> {
  try {
    await work;
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
}

/**
 * Read-modify-write against optimistic concurrency: `attempt` reads the object and writes it with
 * the resourceVersion it read; when someone else wrote in between (409 Conflict), it is done again
 * on a fresh read, a bounded number of times.
 */
export async function retryOnConflict<T>(what: string, attempt: () => Promise<T>, attempts = 5): Promise<T> {
  for (let round = 1; ; round++) {
    try {
      return await attempt();
    } catch (error) {
      // Someone wrote (or created it) in between: read it again.
      if (apiError(error)?.code !== 409) throw error;
      if (round >= attempts) {
        throw new DomainError(
          'conflict',
          `${what} kept changing in the cluster while Atrium updated it (${attempts} attempts); try again`,
        );
      }
      await new Promise((r) => setTimeout(r, 20 * round));
    }
  }
}
