import { EventEmitter } from 'node:events';

/**
 * In-process wake-ups: whoever changes an operation or a service says so, and whoever waits on it
 * (Prefer: wait, event streams) wakes at once instead of at its next poll. Waiters still poll the
 * database, so changes made by another API process are seen too, a moment later.
 */
export class Notifier {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  notify(topic: string): void {
    this.emitter.emit(topic);
  }

  /**
   * Resolves on the next notification of `topic` (with true), after `timeoutMs` or when `signal`
   * aborts (with false).
   */
  wait(topic: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (notified: boolean) => {
        clearTimeout(timer);
        this.emitter.off(topic, onNotify);
        signal?.removeEventListener('abort', onAbort);
        resolve(notified);
      };
      const onNotify = () => done(true);
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(false), timeoutMs);
      // A waiter alone never keeps the process alive.
      timer.unref();
      this.emitter.once(topic, onNotify);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

export const topics = {
  operation: (id: string) => `operation:${id}`,
  service: (id: string) => `service:${id}`,
  run: (id: string) => `run:${id}`,
};
