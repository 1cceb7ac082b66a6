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

  /** Resolves on the next notification of `topic`, after `timeoutMs`, or when `signal` aborts. */
  wait(topic: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.emitter.off(topic, done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      // A waiter alone never keeps the process alive.
      timer.unref();
      this.emitter.once(topic, done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}

export const topics = {
  operation: (id: string) => `operation:${id}`,
  service: (id: string) => `service:${id}`,
  run: (id: string) => `run:${id}`,
};
