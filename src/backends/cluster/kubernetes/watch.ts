// A list-then-watch of one collection that keeps itself going: when the stream ends (the server
// closes watches now and then, or the connection breaks), it lists again and watches from there.
import type { Watch } from '@kubernetes/client-node';
import type { Logger } from 'pino';

export interface WatchedObject {
  metadata?: { name?: string; namespace?: string; uid?: string; resourceVersion?: string };
}

export interface ResourceWatchOptions {
  watch: Watch;
  /** The collection's path, for example `/api/v1/namespaces/x/pods`. */
  path: string;
  query: Record<string, string>;
  /** Lists the collection: its items and the resourceVersion to watch from. */
  list(): Promise<{ resourceVersion: string; items: WatchedObject[] }>;
  /** The listed items (at start and after each relist). */
  onList(items: WatchedObject[]): void;
  onChange(type: 'ADDED' | 'MODIFIED' | 'DELETED', object: WatchedObject): void;
  log: Logger;
}

export class ResourceWatch {
  private controller: AbortController | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private failures = 0;

  constructor(private readonly options: ResourceWatchOptions) {}

  start(): void {
    void this.run();
  }

  stop(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.controller?.abort();
    this.controller = null;
  }

  private async run(): Promise<void> {
    if (this.closed) return;
    const { watch, path, query, list, onList, onChange, log } = this.options;
    try {
      const listed = await list();
      if (this.closed) return;
      onList(listed.items);
      this.controller = await watch.watch(
        path,
        { ...query, resourceVersion: listed.resourceVersion, allowWatchBookmarks: 'true' },
        (type: string, object: WatchedObject) => {
          this.failures = 0;
          if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') onChange(type, object);
          // ERROR (for example 410 Gone: the version is too old) ends this watch; it starts again.
          else if (type === 'ERROR') this.controller?.abort();
        },
        (err: unknown) => {
          if (this.closed) return;
          if (err && !(err instanceof Error && err.name === 'AbortError')) {
            log.debug({ err, path }, 'kubernetes: watch ended');
          }
          this.again();
        },
      );
      if (this.closed) this.controller.abort();
    } catch (err) {
      log.warn({ err, path }, 'kubernetes: cannot watch; trying again');
      this.again();
    }
  }

  private again(): void {
    if (this.closed || this.timer) return;
    this.failures++;
    const delay = Math.min(10_000, 100 * 2 ** Math.min(this.failures, 7));
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.run();
    }, delay);
    this.timer.unref();
  }
}
