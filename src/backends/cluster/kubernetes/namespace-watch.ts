// What the backend watches in one project namespace: the pods and Deployments labelled as Atrium
// services', and every Event (an Event's involved object carries no labels). Events are numbered
// by their resourceVersion (etcd's revision): after a relist, only those past the last number
// seen are new.
import type { CoreV1Event, V1Deployment, V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { labelKeys } from './naming.js';
import type { KubernetesClients } from './settings.js';
import { ResourceWatch } from './watch.js';

/** A resourceVersion as a number, when it is one (the API promises only an opaque string). */
export function sequenceOf(resourceVersion: string | undefined): number | null {
  return resourceVersion && /^[0-9]+$/.test(resourceVersion) ? Number(resourceVersion) : null;
}

export interface NamespaceWatchHandlers {
  /** The pods were listed (at the start, or again after the watch broke): anything may have changed. */
  onPodsListed(): void;
  /** A pod changed (each change as it comes: a pod ready for a moment is seen ready). */
  onPod(pod: V1Pod): void;
  onDeployment(deployment: V1Deployment): void;
  /**
   * An Event. `after`: the number up to which events were told already; null for those of the
   * first list, which happened before the watch began.
   */
  onClusterEvent(event: CoreV1Event, after: number | null): void;
}

export class NamespaceWatch {
  /** Settles once the namespace's Events were first listed. */
  readonly ready: Promise<void>;
  private readonly watches: ResourceWatch[];
  private lastEventSeq = 0;
  private eventsListed = false;

  constructor(
    clients: Pick<KubernetesClients, 'apps' | 'core' | 'watch'>,
    namespace: string,
    log: Logger,
    handlers: NamespaceWatchHandlers,
  ) {
    const { apps, core, watch } = clients;
    const labelSelector = labelKeys.service;
    let listed: () => void = () => undefined;
    this.ready = new Promise<void>((resolve) => (listed = resolve));
    this.watches = [
      new ResourceWatch({
        watch,
        log,
        path: `/api/v1/namespaces/${namespace}/pods`,
        query: { labelSelector },
        list: async () => {
          const list = await core.listNamespacedPod({ namespace, labelSelector });
          return { resourceVersion: list.metadata?.resourceVersion ?? '', items: list.items };
        },
        onList: () => handlers.onPodsListed(),
        onChange: (_type, object) => handlers.onPod(object as V1Pod),
      }),
      new ResourceWatch({
        watch,
        log,
        path: `/apis/apps/v1/namespaces/${namespace}/deployments`,
        query: { labelSelector },
        list: async () => {
          const list = await apps.listNamespacedDeployment({ namespace, labelSelector });
          return { resourceVersion: list.metadata?.resourceVersion ?? '', items: list.items };
        },
        onList: () => undefined,
        onChange: (_type, object) => handlers.onDeployment(object as V1Deployment),
      }),
      new ResourceWatch({
        watch,
        log,
        path: `/api/v1/namespaces/${namespace}/events`,
        query: {},
        list: async () => {
          const list = await core.listNamespacedEvent({ namespace });
          return { resourceVersion: list.metadata?.resourceVersion ?? '', items: list.items };
        },
        onList: (items) => {
          // A relist (after the watch broke) holds what this watch has told already, up to the
          // last number it saw.
          const after = this.eventsListed ? this.lastEventSeq : null;
          for (const item of items) handlers.onClusterEvent(item as CoreV1Event, after);
          for (const item of items) this.saw(item.metadata?.resourceVersion);
          this.eventsListed = true;
          listed();
        },
        onChange: (type, object) => {
          if (type === 'DELETED') return;
          handlers.onClusterEvent(object as CoreV1Event, 0);
          this.saw(object.metadata?.resourceVersion);
        },
      }),
    ];
    for (const w of this.watches) w.start();
  }

  stop(): void {
    for (const w of this.watches) w.stop();
  }

  private saw(resourceVersion: string | undefined): void {
    this.lastEventSeq = Math.max(this.lastEventSeq, sequenceOf(resourceVersion) ?? 0);
  }
}
