// A durable event log read as a feed: what is stored after `afterSeq`, then (when following) each
// new event as it is recorded, until its owner can have no more. The HTTP layer writes it as
// Server-Sent Events (http/sse.ts); services only say where the events are and when they end.
import type { StoredEvent } from '../db/events.js';
import type { Notifier } from '../notifier.js';

/** How long a followed feed stays silent before it yields `null` (for a keep-alive). */
export const feedQuietMs = 15_000;

export interface EventSource {
  read: (afterSeq: number) => Promise<StoredEvent[]>;
  /** True when no more events can come (the owner is gone, or done). */
  ended: () => Promise<boolean>;
  /** True for the event after which none can come (the feed ends with it). */
  final?: (event: StoredEvent) => boolean;
  /** The notifier topic that announces new events. */
  topic: string;
  notifier: Notifier;
}

/** The events after `afterSeq`; `null` after each quiet spell while following. */
export type EventFeed = AsyncIterable<StoredEvent | null>;

const pageSize = 100;

export async function* followEvents(
  source: EventSource,
  options: { afterSeq: number; follow: boolean; signal: AbortSignal },
): EventFeed {
  let after = options.afterSeq;
  let quietSince = Date.now();
  for (let round = 0; round < 1_000_000 && !options.signal.aborted; round++) {
    const events = await source.read(after);
    for (const event of events) {
      yield event;
      if (source.final?.(event)) return;
      after = event.seq;
      quietSince = Date.now();
    }
    if (events.length === pageSize) continue;
    if (!options.follow || (await source.ended())) {
      // One last read: events written just before the end.
      for (const event of await source.read(after)) {
        yield event;
        if (source.final?.(event)) return;
      }
      return;
    }
    if (Date.now() - quietSince >= feedQuietMs) {
      yield null;
      quietSince = Date.now();
    }
    await source.notifier.wait(source.topic, 1000, options.signal);
  }
}
