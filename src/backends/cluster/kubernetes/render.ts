// Pure functions from what Atrium wants to what the cluster gets: a service's cluster run spec
// becomes a Deployment, a Service per port, an Ingress when the region exposes services, a Secret
// for its secret options and a ConfigMap for its files; a batch workload becomes a Job. The same
// functions render dry runs (secrets masked, file contents summarised) and what is applied.
import { createHash } from 'node:crypto';
import type {
  V1ConfigMap,
  V1Container,
  V1Deployment,
  V1EnvVar,
  V1Ingress,
  V1Job,
  V1Namespace,
  V1Probe,
  V1ResourceQuota,
  V1ResourceRequirements,
  V1RoleBinding,
  V1Secret,
  V1Service,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';
import type { ClusterRunSpec } from '../../catalog/manifest.js';
import { DomainError } from '../../../errors.js';
import { formatBytes, formatCpu } from '../../../quantities.js';
import { optionText, renderTemplate } from '../templates.js';
import type { BatchWorkloadSpec, WorkloadSpec } from '../types.js';
import {
  annotationKeys,
  filesConfigMapName,
  isLabelKey,
  jobFilesConfigMapName,
  jobName,
  labelKeys,
  labelValue,
  mainContainer,
  managedByAtrium,
  optionsSecretName,
  portServiceName,
  quotaName,
  roleBindingName,
  workloadName,
} from './naming.js';
import type { KubernetesSettings, RoleBindingSettings } from './settings.js';

export const masked = '********';
const gpuResource = 'nvidia.com/gpu';
const filesMountPath = '/app';
const workMountPath = '/work';

/** Whether secrets and file contents are rendered as they are (applying) or hidden (a dry run). */
export type RenderMode = 'plain' | 'masked';

/** A file of the package, as read from its directory. */
export type PackageFiles = Record<string, Buffer>;

export interface Endpoint {
  port: string;
  protocol: 'http' | 'tcp';
  url: string;
}

export interface RenderedService {
  namespace: string;
  secret: V1Secret | null;
  files: V1ConfigMap | null;
  deployment: V1Deployment;
  services: V1Service[];
  ingress: V1Ingress | null;
  endpoints: Endpoint[];
}

type Resources = WorkloadSpec['resources'];

function resourcesOf({ cpuMillis, memoryBytes, gpu }: Resources): V1ResourceRequirements {
  // Requests equal limits: what the project's quota admitted is exactly what the pod may use.
  const compute = { cpu: formatCpu(cpuMillis), memory: formatBytes(memoryBytes) };
  return {
    requests: { ...compute },
    limits: gpu > 0 ? { ...compute, [gpuResource]: String(gpu) } : { ...compute },
  };
}

/** The labels and annotations of serviceLabels and serviceAnnotations, which every object of a service carries. */
const serviceLabelKeys = [labelKeys.managedBy, labelKeys.service, labelKeys.project, labelKeys.package];
const serviceAnnotationKeys = [
  annotationKeys.serviceId,
  annotationKeys.serviceName,
  annotationKeys.projectId,
  annotationKeys.packageRef,
];

export function serviceLabels(spec: WorkloadSpec): Record<string, string> {
  return {
    [labelKeys.managedBy]: managedByAtrium,
    [labelKeys.service]: labelValue(spec.serviceId),
    [labelKeys.project]: labelValue(spec.projectId),
    [labelKeys.package]: labelValue(spec.package.name),
  };
}

function serviceAnnotations(spec: WorkloadSpec): Record<string, string> {
  return {
    [annotationKeys.serviceId]: spec.serviceId,
    [annotationKeys.serviceName]: spec.serviceName,
    [annotationKeys.projectId]: spec.projectId,
    [annotationKeys.packageRef]: `${spec.package.catalogId}/${spec.package.name}@${spec.package.version}`,
  };
}

/** The environment variable a secret option is handed over in, to command and args `$(…)`. */
function secretOptionVariable(option: string): string {
  return `ATRIUM_OPTION_${option.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

function referencesSecret(text: string, secretOptions: string[]): boolean {
  return secretOptions.some((name) => text.includes(`\${options.${name}}`));
}

interface TemplateContext {
  values: Record<string, string>;
  secretOptions: string[];
}

function templateContext(spec: WorkloadSpec, run: ClusterRunSpec): TemplateContext {
  const values: Record<string, string> = {
    'service.id': spec.serviceId,
    'service.name': spec.serviceName,
    'project.id': spec.projectId,
  };
  for (const port of run.ports) values[`ports.${port.name}`] = String(port.container_port ?? '');
  for (const [name, value] of Object.entries(spec.options)) values[`options.${name}`] = optionText(value);
  return { values, secretOptions: spec.secretOptions.filter((name) => name in spec.options) };
}

/** Kubernetes expands `$(VAR)` in command, args and env values: a literal one is escaped. */
function escapeExpansion(text: string): string {
  return text.replace(/\$\(/g, '$$$$(');
}

/**
 * Command and args: a secret option is referred to through its variable (filled from the Secret),
 * never written in the spec. It is rendered as a NUL-delimited mark first (NUL cannot be part of an
 * argument, so no value collides with one), then the rest is escaped and the marks replaced.
 */
function renderArgv(parts: string[] | null, context: TemplateContext): string[] | undefined {
  if (parts === null) return undefined;
  const marks = Object.fromEntries(
    context.secretOptions.map((name, i) => [`options.${name}`, `\u0000${i}\u0000`]),
  );
  return parts.map((part) =>
    escapeExpansion(renderTemplate(part, { ...context.values, ...marks }))
      .split('\u0000')
      // Odd pieces are the marks' indexes.
      .map((piece, i) =>
        i % 2 === 1 ? `$(${secretOptionVariable(context.secretOptions[Number(piece)] ?? '')})` : piece,
      )
      .join(''),
  );
}

function checkPortNames(run: ClusterRunSpec): void {
  for (const port of run.ports) {
    // Container port names are IANA service names: 15 characters at most.
    if (port.name.length > 15) {
      throw new DomainError(
        'unprocessable',
        `port "${port.name}" has a name longer than the 15 characters Kubernetes allows`,
      );
    }
  }
}

function checksum(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex').slice(0, 16);
}

/** A ConfigMap holding files, as text where they are UTF-8, else as binary data. */
function filesConfigMap(
  name: string,
  namespace: string,
  labels: Record<string, string>,
  annotations: Record<string, string>,
  files: Record<string, Buffer>,
  mode: RenderMode,
): V1ConfigMap {
  const data: Record<string, string> = {};
  const binaryData: Record<string, string> = {};
  let total = 0;
  for (const [file, content] of Object.entries(files)) {
    total += content.length;
    if (mode === 'masked') data[file] = `(${content.length} bytes, sha256 ${checksum(content)}…)`;
    else if (Buffer.from(content.toString('utf8'), 'utf8').equals(content))
      data[file] = content.toString('utf8');
    else binaryData[file] = content.toString('base64');
  }
  // A ConfigMap holds 1 MiB at most, metadata included.
  if (total > 900 * 1024) {
    throw new DomainError(
      'unprocessable',
      `the files to mount add up to ${total} bytes; at most 900 KiB fit`,
    );
  }
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name, namespace, labels, annotations },
    ...(Object.keys(data).length > 0 ? { data } : {}),
    ...(Object.keys(binaryData).length > 0 ? { binaryData } : {}),
  };
}

function readinessProbe(run: ClusterRunSpec): V1Probe | undefined {
  if (!run.health) return undefined;
  const timing = { periodSeconds: 2, timeoutSeconds: 2, failureThreshold: 3, successThreshold: 1 };
  return run.health.path
    ? { httpGet: { path: run.health.path, port: run.health.port }, ...timing }
    : { tcpSocket: { port: run.health.port }, ...timing };
}

function endpointsOf(
  spec: WorkloadSpec,
  run: ClusterRunSpec,
  namespace: string,
  settings: KubernetesSettings,
): Endpoint[] {
  return run.ports.map((port) => {
    const service = portServiceName(spec.serviceId, port.name);
    if (port.protocol === 'http' && settings.exposeDomain) {
      return { port: port.name, protocol: 'http', url: `http://${ingressHost(spec, port.name, settings)}` };
    }
    const scheme = port.protocol === 'http' ? 'http' : 'tcp';
    return {
      port: port.name,
      protocol: port.protocol,
      url: `${scheme}://${service}.${namespace}.svc:${port.container_port}`,
    };
  });
}

function ingressHost(spec: WorkloadSpec, port: string, settings: KubernetesSettings): string {
  return `${port}-${workloadName(spec.serviceId)}.${settings.exposeDomain}`;
}

/** The Service of one container port of a workload: its address inside the namespace. */
function portService(
  serviceId: string,
  namespace: string,
  labels: Record<string, string>,
  annotations: Record<string, string>,
  portName: string,
  portNumber: number,
): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: portServiceName(serviceId, portName), namespace, labels, annotations },
    spec: {
      type: 'ClusterIP',
      selector: { [labelKeys.service]: labelValue(serviceId) },
      ports: [{ name: portName, port: portNumber, targetPort: portName, protocol: 'TCP' }],
    },
  };
}

/**
 * The Service of `portName` as renderService makes it, from the workload's Deployment, which
 * carries the same labels, the same annotations among its others, and the container port: to
 * restore one deleted outside Atrium without the spec it was rendered from. Null when the
 * Deployment has no such port.
 */
export function portServiceOf(deployment: V1Deployment, portName: string): V1Service | null {
  const { namespace, labels = {}, annotations = {} } = deployment.metadata ?? {};
  const serviceId = annotations[annotationKeys.serviceId];
  const port = (deployment.spec?.template.spec?.containers ?? [])
    .flatMap((container) => container.ports ?? [])
    .find((p) => p.name === portName);
  if (!namespace || !serviceId || !port) return null;
  const pick = (from: Record<string, string>, keys: readonly string[]) =>
    Object.fromEntries(keys.flatMap((key) => (from[key] === undefined ? [] : [[key, from[key]]])));
  return portService(
    serviceId,
    namespace,
    pick(labels, serviceLabelKeys),
    pick(annotations, serviceAnnotationKeys),
    portName,
    port.containerPort,
  );
}

/** Everything a service is made of in the cluster. */
export function renderService(
  spec: WorkloadSpec,
  namespace: string,
  settings: KubernetesSettings,
  files: PackageFiles,
  mode: RenderMode,
): RenderedService {
  const run = spec.run.cluster;
  if (!run) {
    throw new DomainError(
      'unprocessable',
      `package ${spec.package.name} ${spec.package.version} has no cluster run spec; it cannot run on Kubernetes`,
    );
  }
  checkPortNames(run);
  const name = workloadName(spec.serviceId);
  const labels = serviceLabels(spec);
  const annotations = serviceAnnotations(spec);
  const context = templateContext(spec, run);

  const secretData: Record<string, string> = {};
  const env: V1EnvVar[] = [];
  const secretRef = (key: string): V1EnvVar['valueFrom'] => ({
    secretKeyRef: { name: optionsSecretName(spec.serviceId), key },
  });
  for (const option of context.secretOptions) {
    const used = [...(run.command ?? []), ...(run.args ?? [])].some((part) =>
      referencesSecret(part, [option]),
    );
    if (!used) continue;
    const variable = secretOptionVariable(option);
    secretData[variable] = mode === 'masked' ? masked : optionText(spec.options[option]);
    env.push({ name: variable, valueFrom: secretRef(variable) });
  }
  for (const [variable, template] of Object.entries(run.env)) {
    if (referencesSecret(template, context.secretOptions)) {
      const value = renderTemplate(template, {
        ...context.values,
        ...Object.fromEntries(context.secretOptions.map((o) => [`options.${o}`, masked])),
      });
      secretData[variable] = mode === 'masked' ? value : renderTemplate(template, context.values);
      env.push({ name: variable, valueFrom: secretRef(variable) });
    } else {
      env.push({ name: variable, value: escapeExpansion(renderTemplate(template, context.values)) });
    }
  }

  const fileNames = run.files;
  const volumes: V1Volume[] = [];
  const volumeMounts: V1VolumeMount[] = [];
  let filesMap: V1ConfigMap | null = null;
  if (fileNames.length > 0) {
    const selected: Record<string, Buffer> = {};
    for (const file of fileNames) {
      const content = files[file];
      if (!content) throw new DomainError('unprocessable', `the package has no file "${file}" to mount`);
      selected[file] = content;
    }
    filesMap = filesConfigMap(
      filesConfigMapName(spec.serviceId),
      namespace,
      labels,
      annotations,
      selected,
      mode,
    );
    volumes.push({ name: 'files', configMap: { name: filesConfigMapName(spec.serviceId) } });
    volumeMounts.push({ name: 'files', mountPath: filesMountPath, readOnly: true });
  }

  const container: V1Container = {
    name: mainContainer,
    image: run.image,
    ...(run.command ? { command: renderArgv(run.command, context) } : {}),
    ...(run.args ? { args: renderArgv(run.args, context) } : {}),
    env,
    ports: run.ports.map((p) => ({ name: p.name, containerPort: p.container_port ?? 0, protocol: 'TCP' })),
    resources: resourcesOf(spec.resources),
    ...(readinessProbe(run) ? { readinessProbe: readinessProbe(run) } : {}),
    ...(volumeMounts.length > 0 ? { volumeMounts } : {}),
  };

  const endpoints = endpointsOf(spec, run, namespace, settings);
  const generation = String(spec.generation);
  const deployment: V1Deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: {
      name,
      namespace,
      labels,
      annotations: {
        ...annotations,
        [annotationKeys.generation]: generation,
        [annotationKeys.endpoints]: JSON.stringify(endpoints),
      },
    },
    spec: {
      replicas: 1,
      revisionHistoryLimit: 2,
      // One replica that may hold volumes and ports: the old one goes before the new one comes.
      strategy: { type: 'Recreate' },
      selector: { matchLabels: { [labelKeys.service]: labelValue(spec.serviceId) } },
      template: {
        metadata: { labels, annotations: { ...annotations, [annotationKeys.generation]: generation } },
        spec: {
          // A service has no business with the cluster's API, nor with its neighbours' addresses.
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          terminationGracePeriodSeconds: settings.stopGraceSeconds,
          restartPolicy: 'Always',
          containers: [container],
          ...(volumes.length > 0 ? { volumes } : {}),
        },
      },
    },
  };

  const services: V1Service[] = run.ports.map((port) =>
    portService(spec.serviceId, namespace, labels, annotations, port.name, port.container_port ?? 0),
  );

  const httpPorts = run.ports.filter((p) => p.protocol === 'http');
  const ingress: V1Ingress | null =
    settings.exposeDomain && httpPorts.length > 0
      ? {
          apiVersion: 'networking.k8s.io/v1',
          kind: 'Ingress',
          metadata: { name, namespace, labels, annotations },
          spec: {
            ...(settings.ingressClass ? { ingressClassName: settings.ingressClass } : {}),
            rules: httpPorts.map((port) => ({
              host: ingressHost(spec, port.name, settings),
              http: {
                paths: [
                  {
                    path: '/',
                    pathType: 'Prefix',
                    backend: {
                      service: {
                        name: portServiceName(spec.serviceId, port.name),
                        port: { name: port.name },
                      },
                    },
                  },
                ],
              },
            })),
          },
        }
      : null;

  const secret: V1Secret | null =
    Object.keys(secretData).length > 0
      ? {
          apiVersion: 'v1',
          kind: 'Secret',
          metadata: { name: optionsSecretName(spec.serviceId), namespace, labels, annotations },
          type: 'Opaque',
          stringData: secretData,
        }
      : null;

  return { namespace, secret, files: filesMap, deployment, services, ingress, endpoints };
}

/** The objects of a rendered service, in the order they are applied (what pods need, first). */
export function objectsOf(rendered: RenderedService): object[] {
  return [
    ...(rendered.secret ? [rendered.secret] : []),
    ...(rendered.files ? [rendered.files] : []),
    rendered.deployment,
    ...rendered.services,
    ...(rendered.ingress ? [rendered.ingress] : []),
  ];
}

// ---- Onboarding ----

export function renderNamespace(name: string, projectId: string): V1Namespace {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: {
      name,
      labels: { [labelKeys.managedBy]: managedByAtrium, [labelKeys.project]: labelValue(projectId) },
      annotations: { [annotationKeys.projectId]: projectId },
    },
  };
}

/** The hard limits mirroring a project quota; empty when it limits nothing. */
export function quotaHard(quota: NonNullable<WorkloadSpec['quota']>): Record<string, string> {
  const hard: Record<string, string> = {};
  if (quota.cpuMillis !== null) {
    hard['requests.cpu'] = formatCpu(quota.cpuMillis);
    hard['limits.cpu'] = formatCpu(quota.cpuMillis);
  }
  if (quota.memoryBytes !== null) {
    hard['requests.memory'] = formatBytes(quota.memoryBytes);
    hard['limits.memory'] = formatBytes(quota.memoryBytes);
  }
  if (quota.gpu !== null) hard[`requests.${gpuResource}`] = String(quota.gpu);
  // Only what the cluster counts as Atrium does: the compute of the pods that run (a suspended or
  // failed service is parked at zero replicas, and neither counts it). The number of services is
  // not mirrored: the cluster would count every Deployment, a failed service's parked one too, and
  // refuse launches Atrium admitted; Atrium admits that limit itself, in one transaction.
  return hard;
}

export function renderQuota(
  namespace: string,
  projectId: string,
  quota: NonNullable<WorkloadSpec['quota']>,
): V1ResourceQuota {
  return {
    apiVersion: 'v1',
    kind: 'ResourceQuota',
    metadata: {
      name: quotaName,
      namespace,
      labels: { [labelKeys.managedBy]: managedByAtrium, [labelKeys.project]: labelValue(projectId) },
      annotations: {
        [annotationKeys.projectId]: projectId,
        [annotationKeys.quotaManagedBy]: managedByAtrium,
      },
    },
    spec: { hard: quotaHard(quota) },
  };
}

export function renderRoleBinding(
  namespace: string,
  projectId: string,
  binding: RoleBindingSettings,
): V1RoleBinding {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: {
      name: roleBindingName,
      namespace,
      labels: { [labelKeys.managedBy]: managedByAtrium, [labelKeys.project]: labelValue(projectId) },
      annotations: { [annotationKeys.projectId]: projectId },
    },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: binding.clusterRole },
    subjects: binding.subjects.map((s) => ({
      kind: s.kind,
      name: s.name.split('${project.id}').join(projectId),
      ...(s.kind === 'ServiceAccount'
        ? { namespace: s.namespace ?? namespace }
        : { apiGroup: 'rbac.authorization.k8s.io' }),
    })),
  };
}

// ---- Batch ----

export interface RenderedJob {
  namespace: string;
  files: V1ConfigMap | null;
  job: V1Job;
}

/** The labels of a batch workload: its own, and those its spec asks for (where they are valid). */
function jobLabels(spec: BatchWorkloadSpec): {
  labels: Record<string, string>;
  annotations: Record<string, string>;
} {
  const labels: Record<string, string> = {
    [labelKeys.managedBy]: managedByAtrium,
    [labelKeys.job]: labelValue(spec.jobId),
    [labelKeys.project]: labelValue(spec.projectId),
  };
  const annotations: Record<string, string> = {
    [annotationKeys.jobId]: spec.jobId,
    [annotationKeys.projectId]: spec.projectId,
  };
  for (const [key, value] of Object.entries(spec.labels)) {
    if (!(key in labels) && isLabelKey(key)) labels[key] = labelValue(value);
  }
  // Label values are short and restricted: the exact ones are kept where anything fits.
  if (Object.keys(spec.labels).length > 0) annotations[annotationKeys.labels] = JSON.stringify(spec.labels);
  return { labels, annotations };
}

export function renderJob(
  spec: BatchWorkloadSpec,
  namespace: string,
  settings: KubernetesSettings,
  mode: RenderMode,
): RenderedJob {
  const run = spec.run.cluster;
  if (!run) throw new DomainError('unprocessable', 'this workload has no cluster run spec');
  const { labels, annotations } = jobLabels(spec);
  const name = jobName(spec.jobId);
  const volumes: V1Volume[] = [];
  const volumeMounts: V1VolumeMount[] = [];
  let files: V1ConfigMap | null = null;
  if (Object.keys(run.files).length > 0) {
    const contents = Object.fromEntries(
      Object.entries(run.files).map(([f, text]) => [f, Buffer.from(text, 'utf8')]),
    );
    files = filesConfigMap(jobFilesConfigMapName(spec.jobId), namespace, labels, annotations, contents, mode);
    volumes.push({ name: 'files', configMap: { name: jobFilesConfigMapName(spec.jobId) } });
    volumeMounts.push({ name: 'files', mountPath: filesMountPath, readOnly: true });
  }
  if (run.workSubPath !== null) {
    if (!settings.workVolumeClaim) {
      throw new DomainError(
        'unprocessable',
        'this region has no work volume (work_volume_claim) for batch work',
      );
    }
    volumes.push({ name: 'work', persistentVolumeClaim: { claimName: settings.workVolumeClaim } });
    volumeMounts.push({ name: 'work', mountPath: workMountPath, subPath: run.workSubPath });
  }
  const container: V1Container = {
    name: mainContainer,
    image: run.image,
    ...(run.command ? { command: run.command.map(escapeExpansion) } : {}),
    ...(run.args ? { args: run.args.map(escapeExpansion) } : {}),
    env: Object.entries(run.env).map(([envName, value]) => ({
      name: envName,
      value: escapeExpansion(value),
    })),
    resources: resourcesOf(spec.resources),
    ...(volumeMounts.length > 0 ? { volumeMounts } : {}),
    ...(run.workSubPath !== null ? { workingDir: workMountPath } : {}),
  };
  const job: V1Job = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name, namespace, labels, annotations },
    spec: {
      // One attempt: retries are the scheduler's, which knows what an attempt is.
      backoffLimit: 0,
      activeDeadlineSeconds: Math.max(1, Math.ceil(spec.timeoutMs / 1000)),
      template: {
        metadata: { labels, annotations },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          restartPolicy: 'Never',
          terminationGracePeriodSeconds: settings.stopGraceSeconds,
          containers: [container],
          ...(volumes.length > 0 ? { volumes } : {}),
        },
      },
    },
  };
  return { namespace, files, job };
}
