// A service's logs on the cluster: its newest pod's (or a named task's) container log while it has
// pods, and, once it is scaled to zero (stopped or failed), the snapshot of its last lines kept in
// a ConfigMap when it was (its pods, and their logs, go with them).
import type { V1ConfigMap, V1Deployment, V1Pod } from '@kubernetes/client-node';
import { DomainError } from '../../../errors.js';
import type { LogOptions } from '../types.js';
import { toIso } from './describe.js';
import { orNull } from './errors.js';
import { isMissingLog, parseStamped, podLogLines, readPodLog, type StampedLine } from './logs.js';
import { annotationKeys, logsConfigMapName, mainContainer, serviceSelector } from './naming.js';
import type { KubernetesClients } from './settings.js';

/** How much of a parked service's log is kept. */
const logSnapshotBytes = 256 * 1024;

type LogClients = Pick<KubernetesClients, 'core' | 'log'>;

/** The latest lines of each pod's main container (the one that ran last, if it waits to restart). */
export async function captureLogs(
  log: KubernetesClients['log'],
  namespace: string,
  pods: V1Pod[],
): Promise<StampedLine[]> {
  const lines: StampedLine[] = [];
  // Best effort: a log that cannot be read now (its node's kubelet is out of reach: a 500) is not
  // kept, and never stops the suspension or failure that keeps what can be read.
  const read = (request: Parameters<typeof readPodLog>[1]) => readPodLog(log, request).catch(() => null);
  for (const pod of pods) {
    const name = pod.metadata?.name ?? '';
    const request = { namespace, pod: name, container: mainContainer, limitBytes: logSnapshotBytes };
    const current = await read(request);
    const previous = current && current.length > 0 ? null : await read({ ...request, previous: true });
    lines.push(...(current && current.length > 0 ? current : (previous ?? [])));
  }
  return lines.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
}

/** The ConfigMap that keeps a parked service's last lines, labelled as its Deployment is. */
export function renderLogSnapshot(
  namespace: string,
  serviceId: string,
  deployment: V1Deployment,
  lines: StampedLine[],
): V1ConfigMap {
  const text = lines.map((l) => `${l.at} ${l.text}\n`).join('');
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: logsConfigMapName(serviceId),
      namespace,
      labels: { ...deployment.metadata?.labels },
      annotations: { [annotationKeys.serviceId]: serviceId },
    },
    data: { [`${mainContainer}.log`]: text.slice(-logSnapshotBytes) },
  };
}

/** The lines of the log of a service living in `namespace`, formatted as `options` ask. */
export async function* serviceLogLines(
  clients: LogClients,
  namespace: string,
  serviceId: string,
  options: LogOptions,
): AsyncGenerator<string> {
  const format = (line: StampedLine) => `${options.timestamps && line.at ? `${line.at} ` : ''}${line.text}\n`;
  const pods = (
    await clients.core.listNamespacedPod({ namespace, labelSelector: serviceSelector(serviceId) })
  ).items.sort((a, b) =>
    (toIso(b.metadata?.creationTimestamp) ?? '').localeCompare(toIso(a.metadata?.creationTimestamp) ?? ''),
  );
  const pod = options.task ? pods.find((p) => p.metadata?.name === options.task) : pods[0];
  if (options.task && !pod) throw new DomainError('not-found', `task "${options.task}" does not exist`);
  if (!pod) {
    // Stopped or failed: what was kept when it was scaled to zero.
    for (const line of await savedLogs(clients, namespace, serviceId, options)) yield format(line);
    return;
  }
  const container = options.container ?? mainContainer;
  if (!(pod.spec?.containers ?? []).some((c) => c.name === container)) {
    throw new DomainError(
      'not-found',
      `container "${container}" does not exist in task "${pod.metadata?.name}"`,
    );
  }
  const request = {
    namespace,
    pod: pod.metadata?.name ?? '',
    container,
    ...(options.follow ? { follow: true } : {}),
    ...(options.tail ? { tail: options.tail } : {}),
    ...(options.since ? { since: options.since } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  };
  try {
    for await (const line of podLogLines(clients.log, request)) yield format(line);
  } catch (error) {
    if (!isMissingLog(error)) throw error;
    // Not started (again) yet: the container that ran before, if one did.
    const previous = await readPodLog(clients.log, { ...request, follow: false, previous: true });
    for (const line of previous ?? []) yield format(line);
  }
}

async function savedLogs(
  clients: LogClients,
  namespace: string,
  serviceId: string,
  options: LogOptions,
): Promise<StampedLine[]> {
  const saved = await orNull(
    clients.core.readNamespacedConfigMap({ name: logsConfigMapName(serviceId), namespace }),
  );
  const text = saved?.data?.[`${mainContainer}.log`] ?? '';
  const since = options.since?.getTime();
  const lines = text
    .split('\n')
    .filter(Boolean)
    .map(parseStamped)
    .filter((l) => since === undefined || Date.parse(l.at) >= since);
  return options.tail ? lines.slice(-options.tail) : lines;
}
