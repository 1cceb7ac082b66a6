// A Server-Sent Events parser over a fetch body, after the WHATWG "event stream interpretation":
// lines end with CRLF, LF or CR; `data` lines join with LF; `id` persists until changed; a blank
// line dispatches; comments (`: keep-alive`) are skipped. EventSource itself is not used because it
// cannot send an Authorization header, and not every runtime has it.

/** One event as it was sent: its id, its type and its data text. */
export interface RawServerSentEvent {
  id: string;
  event: string;
  data: string;
}

export interface ParseEventStreamOptions {
  /** Called with the `retry:` field (milliseconds) when the server sends one. */
  onRetry?: (ms: number) => void;
  /** The id to carry until the stream sets one (the `Last-Event-ID` the request was sent with). */
  lastEventId?: string;
}

/**
 * The events of a stream, as they arrive. Ends when the server closes the stream; throws when the
 * connection breaks. Returning early (a `break` in `for await`) cancels the body.
 */
export async function* parseEventStream(
  body: ReadableStream<Uint8Array>,
  options: ParseEventStreamOptions = {},
): AsyncGenerator<RawServerSentEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let data: string[] = [];
  let event = '';
  let lastEventId = options.lastEventId ?? '';
  try {
    // Bounded by the stream: each read waits for the server, and the loop ends when it closes.
    for (;;) {
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      for (;;) {
        const end = lineEnd(buffer);
        if (end === null) break;
        const line = buffer.slice(0, end.at);
        buffer = buffer.slice(end.at + end.length);
        if (line === '') {
          if (data.length > 0) yield { id: lastEventId, event: event || 'message', data: data.join('\n') };
          data = [];
          event = '';
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') data.push(value);
        else if (field === 'event') event = value;
        else if (field === 'id' && !value.includes('\0')) lastEventId = value;
        else if (field === 'retry' && /^\d+$/.test(value)) options.onRetry?.(Number(value));
      }
      // An event not closed by a blank line when the stream ends is dropped, as the standard says.
      if (done) return;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

/** Where the first line of `buffer` ends, or null when it has no complete line yet. */
function lineEnd(buffer: string): { at: number; length: number } | null {
  const at = buffer.search(/[\r\n]/);
  if (at < 0) return null;
  if (buffer[at] === '\n') return { at, length: 1 };
  // A CR at the very end may be the first half of a CRLF split across two chunks.
  if (at === buffer.length - 1) return null;
  return { at, length: buffer[at + 1] === '\n' ? 2 : 1 };
}
