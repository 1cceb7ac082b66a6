// The load generator: a fixed number of keep-alive connections, each sending one GET after another
// for a fixed time. It speaks HTTP/1.1 over raw sockets rather than through http.request, so that
// the generator costs far less CPU than the servers it measures (it shares the machine with them).
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';

// Latencies go to a log-linear histogram (1 % wide buckets): memory stays bounded however many
// requests a run makes, and percentiles are accurate to 1 %.
const bucketGrowth = Math.log(1.01);
const smallestMicros = 1;

class LatencyHistogram {
  counts = new Map();
  total = 0;

  record(ms) {
    const micros = Math.max(smallestMicros, ms * 1000);
    const bucket = Math.floor(Math.log(micros) / bucketGrowth);
    this.counts.set(bucket, (this.counts.get(bucket) ?? 0) + 1);
    this.total += 1;
  }

  /** The latency (ms) below which `fraction` of the requests completed. */
  percentile(fraction) {
    if (this.total === 0) return NaN;
    const rank = Math.ceil(fraction * this.total);
    let seen = 0;
    for (const bucket of [...this.counts.keys()].sort((a, b) => a - b)) {
      seen += this.counts.get(bucket);
      if (seen >= rank) return Math.exp((bucket + 0.5) * bucketGrowth) / 1000;
    }
    return NaN;
  }
}

const headerEnd = Buffer.from('\r\n\r\n');
const lineEnd = Buffer.from('\r\n');

/**
 * Parses one complete response at the start of `buffer`; null while it is still incomplete.
 * Handles Content-Length and chunked bodies, which is all Node's servers send.
 */
function parseResponse(buffer) {
  const end = buffer.indexOf(headerEnd);
  if (end === -1) return null;
  const head = buffer.toString('latin1', 0, end);
  const status = Number(head.slice(9, 12));
  const headers = new Map();
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  const bodyStart = end + headerEnd.length;
  const close = headers.get('connection')?.toLowerCase() === 'close';
  if (/chunked/i.test(headers.get('transfer-encoding') ?? '')) {
    let at = bodyStart;
    const chunks = [];
    for (;;) {
      const sizeEnd = buffer.indexOf(lineEnd, at);
      if (sizeEnd === -1) return null;
      const size = Number.parseInt(buffer.toString('latin1', at, sizeEnd), 16);
      if (Number.isNaN(size)) throw new Error('malformed chunked response');
      if (size === 0) {
        // The last chunk; an empty line ends the (usually empty) trailer block that follows it.
        const trailerEnd = buffer.indexOf(headerEnd, sizeEnd);
        if (trailerEnd === -1) return null;
        return {
          status,
          close,
          consumed: trailerEnd + headerEnd.length,
          body: Buffer.concat(chunks),
        };
      }
      const dataStart = sizeEnd + lineEnd.length;
      at = dataStart + size + lineEnd.length;
      if (at > buffer.length) return null;
      chunks.push(buffer.subarray(dataStart, dataStart + size));
    }
  }
  const length = Number(headers.get('content-length') ?? 0);
  if (buffer.length < bodyStart + length) return null;
  return {
    status,
    close,
    consumed: bodyStart + length,
    body: buffer.subarray(bodyStart, bodyStart + length),
  };
}

/** One GET, for checks before a measurement; the body is returned as text. */
export function fetchOnce(port, path, { timeoutMs = 10_000, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let buffer = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`GET ${path} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('connect', () => socket.write(requestBytes(port, path, 'close', headers)));
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      const response = parseResponse(buffer);
      if (!response) return;
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: response.status, body: response.body.toString('utf8') });
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/** The bytes of one GET; `headers` (name → value) are sent besides Host, Accept and Connection. */
function requestBytes(port, path, connection, headers = {}) {
  const extra = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  return Buffer.from(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: application/json\r\n${extra}` +
      `Connection: ${connection}\r\n\r\n`,
    'latin1',
  );
}

/**
 * Drives `connections` keep-alive connections against 127.0.0.1:`port` for `seconds`, each sending
 * `path` (with `headers`, such as Authorization) as soon as its previous response is in. Stops early
 * after `maxRequests`. Returns throughput, latency percentiles, this process's CPU use, and every
 * failure (non-2xx, socket error, timeout).
 */
export async function measure({
  port,
  path,
  headers = {},
  seconds,
  connections,
  maxRequests,
  requestTimeoutMs = 10_000,
}) {
  const request = requestBytes(port, path, 'keep-alive', headers);
  const histogram = new LatencyHistogram();
  const failures = { statuses: new Map(), socketErrors: 0, timeouts: 0, samples: [] };
  const sampled = new Set();
  // The first failure of each kind (each status, socket error, timeout), a few at most.
  const noteFailure = (kind, what) => {
    if (sampled.has(kind) || sampled.size >= 5) return;
    sampled.add(kind);
    failures.samples.push(what);
  };
  let sent = 0;
  let lastCompletion = 0;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const deadline = started + seconds * 1000;
  const live = new Set();

  const runConnection = () =>
    new Promise((resolve) => {
      const state = { inFlightSince: 0, socket: connect({ host: '127.0.0.1', port }), finished: false };
      const { socket } = state;
      let buffer = Buffer.alloc(0);
      live.add(state);
      const finish = () => {
        if (state.finished) return;
        state.finished = true;
        live.delete(state);
        socket.destroy();
        resolve();
      };
      state.fail = (kind, detail) => {
        if (kind === 'timeout') failures.timeouts += 1;
        else failures.socketErrors += 1;
        noteFailure(kind, `${kind}: ${detail}`);
        finish();
      };
      const sendNext = () => {
        if (sent >= maxRequests || performance.now() >= deadline) return finish();
        sent += 1;
        state.inFlightSince = performance.now();
        socket.write(request);
      };
      socket.setNoDelay(true);
      socket.on('connect', sendNext);
      socket.on('data', (chunk) => {
        buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
        let response;
        try {
          response = parseResponse(buffer);
        } catch (error) {
          return state.fail('protocol', error.message);
        }
        if (!response) return;
        const now = performance.now();
        buffer = buffer.subarray(response.consumed);
        histogram.record(now - state.inFlightSince);
        state.inFlightSince = 0;
        lastCompletion = now;
        if (response.status < 200 || response.status > 299) {
          failures.statuses.set(response.status, (failures.statuses.get(response.status) ?? 0) + 1);
          noteFailure(
            response.status,
            `HTTP ${response.status}: ${response.body.toString('utf8').slice(0, 300)}`,
          );
        }
        if (response.close) return state.fail('socket', 'the server closed a keep-alive connection');
        sendNext();
      });
      socket.on('error', (error) => state.fail('socket', error.message));
      socket.on('close', () => {
        if (!state.finished) state.fail('socket', 'connection closed by the server');
      });
    });

  // One watchdog for every connection, rather than a timer per request.
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (const state of live) {
      if (state.inFlightSince > 0 && now - state.inFlightSince > requestTimeoutMs) {
        state.fail('timeout', `no response within ${requestTimeoutMs} ms`);
      }
    }
  }, 250);
  try {
    await Promise.all(Array.from({ length: connections }, runConnection));
  } finally {
    clearInterval(watchdog);
  }

  const elapsedMs = Math.max(1, (lastCompletion || performance.now()) - started);
  const cpu = process.cpuUsage(cpuBefore);
  const non2xx = [...failures.statuses.values()].reduce((a, b) => a + b, 0);
  return {
    requests: histogram.total,
    seconds: elapsedMs / 1000,
    rps: (histogram.total * 1000) / elapsedMs,
    p50: histogram.percentile(0.5),
    p99: histogram.percentile(0.99),
    errors: non2xx + failures.socketErrors + failures.timeouts,
    failures,
    generatorCpu: (cpu.user + cpu.system) / 1000 / elapsedMs,
  };
}
