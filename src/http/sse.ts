// Server-Sent Events: an event feed on the wire. Each event carries its sequence number as `id`,
// so a client reconnecting with `Last-Event-ID` resumes after it; quiet spells get a comment line
// that keeps proxies from closing the stream.
import type { StoredEvent } from '../services/model.js';

export async function* serverSentEvents(feed: AsyncIterable<StoredEvent | null>): AsyncIterable<string> {
  for await (const event of feed) {
    yield event === null
      ? ': keep-alive\n\n'
      : `id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
  }
}
