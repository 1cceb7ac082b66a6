// Names, labels and annotations of what Atrium creates in a cluster. Object names must be RFC 1123
// labels (lower case), while Atrium's ids are mixed-case: a name keeps the id readable and ends with
// a short hash of the exact id, so that two ids differing only in case never share a name.
import { createHash } from 'node:crypto';

export const labelKeys = {
  managedBy: 'app.kubernetes.io/managed-by',
  service: 'atrium.dev/service',
  project: 'atrium.dev/project',
  package: 'atrium.dev/package',
  job: 'atrium.dev/job',
} as const;

export const annotationKeys = {
  projectId: 'atrium.dev/project-id',
  serviceId: 'atrium.dev/service-id',
  serviceName: 'atrium.dev/service-name',
  packageRef: 'atrium.dev/package-ref',
  jobId: 'atrium.dev/job-id',
  /** On a batch Job: the labels its spec asked for, exactly (label values are restricted). */
  labels: 'atrium.dev/labels',
  generation: 'atrium.dev/generation',
  endpoints: 'atrium.dev/endpoints',
  /** Why a workload is scaled to zero (stopped or failed), with what it was when it stopped. */
  parked: 'atrium.dev/parked',
  /** On a ResourceQuota: `external` leaves it to the cluster's admins. */
  quotaManagedBy: 'atrium.dev/managed-by',
  /** On a batch Job's outcome record: why it was cancelled. */
  outcome: 'atrium.dev/outcome',
} as const;

export const managedByAtrium = 'atrium';
export const quotaName = 'atrium-quota';
export const roleBindingName = 'atrium-access';
export const mainContainer = 'main';

function shortHash(text: string, length: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, length);
}

/** Lower case, runs of anything but [a-z0-9] as one `-`, no `-` at either end. */
function sanitize(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
}

/** An RFC 1123 label of at most `max` characters naming `id`, starting with a letter. */
function dnsLabel(id: string, max: number): string {
  const hash = shortHash(id, 6);
  let readable = sanitize(id)
    .slice(0, max - hash.length - 1)
    .replace(/-+$/, '');
  if (!/^[a-z]/.test(readable)) readable = `x${readable}`.slice(0, max - hash.length - 1).replace(/-+$/, '');
  return `${readable}-${hash}`;
}

/** The namespace of a project: the region's prefix and the project id, 63 characters at most. */
export function namespaceName(prefix: string, projectId: string): string {
  const room = 63 - prefix.length;
  if (room < 8) throw new RangeError(`namespace prefix "${prefix}" leaves no room for project names`);
  const plain = sanitize(projectId);
  // A project id that is already a valid label is kept as it is, so that `kubectl get ns` reads well.
  if (plain === projectId && plain.length <= room && /^[a-z0-9]/.test(plain)) return `${prefix}${plain}`;
  return `${prefix}${dnsLabel(projectId, room)}`;
}

/** The name of a service's Deployment (and the stem of its other objects): pods add 17 characters. */
export function workloadName(serviceId: string): string {
  return dnsLabel(serviceId, 40);
}

/** The Service of one port: Service names are DNS-1035 labels of at most 63 characters. */
export function portServiceName(serviceId: string, port: string): string {
  return `${workloadName(serviceId)}-${port}`;
}

export function optionsSecretName(serviceId: string): string {
  return `${workloadName(serviceId)}-options`;
}

export function filesConfigMapName(serviceId: string): string {
  return `${workloadName(serviceId)}-files`;
}

/** Where a stopped or failed workload's last logs are kept, since its pods are gone. */
export function logsConfigMapName(serviceId: string): string {
  return `${workloadName(serviceId)}-logs`;
}

export function jobName(jobId: string): string {
  return dnsLabel(jobId, 52);
}

export function jobFilesConfigMapName(jobId: string): string {
  return `${jobName(jobId)}-files`;
}

export function jobOutcomeConfigMapName(jobId: string): string {
  return `${jobName(jobId)}-outcome`;
}

/** A valid label value (63 characters, alphanumeric at both ends) standing for `value`. */
export function labelValue(value: string): string {
  if (/^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/.test(value)) return value;
  const hash = shortHash(value, 8);
  const readable = value
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .slice(0, 63 - hash.length - 1)
    .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
  return readable ? `${readable}-${hash}` : hash;
}

export function serviceSelector(serviceId: string): string {
  return `${labelKeys.service}=${labelValue(serviceId)}`;
}

export function jobSelector(jobId: string): string {
  return `${labelKeys.job}=${labelValue(jobId)}`;
}

/** Whether `key` may be a label key (an optional DNS prefix, a name of 63 characters at most). */
export function isLabelKey(key: string): boolean {
  const [prefix, name] = key.includes('/') ? (key.split('/', 2) as [string, string]) : [null, key];
  const nameOk = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/.test(name);
  const prefixOk =
    prefix === null ||
    (prefix.length <= 253 &&
      /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(prefix));
  return nameOk && prefixOk;
}
