// Network metrics on loopback (127.0.0.1 only). The other end of the connection runs in a worker
// thread, so that both ends have a core each, as iperf3's or sockperf's client and server
// processes do; the measuring end is this thread.
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { defineMetric, type SampleContext } from '../types.js';
import { MB, MiB, nowNs } from './timing.js';

// CommonJS, evaluated in the worker: a server on 127.0.0.1 that either sends `block`-byte writes
// as fast as the connection takes them (source) or sends back whatever it receives (echo).
const peerSource = `
const net = require('node:net');
const { parentPort, workerData } = require('node:worker_threads');
const block = Buffer.alloc(workerData.block, 0x5a);
const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  if (workerData.mode === 'source') {
    const pump = () => { while (!socket.destroyed && socket.write(block)) {} };
    socket.on('drain', pump);
    pump();
  } else {
    socket.on('data', (data) => socket.write(data));
  }
});
server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
`;

interface Peer {
  port: number;
  worker: Worker;
}

const peerStartTimeoutMs = 10_000;
/** How long a sample may overrun its duration before it is failed (a peer that stopped answering). */
const overrunMs = 10_000;

function startPeer(mode: 'source' | 'echo', block: number): Promise<Peer> {
  const worker = new Worker(peerSource, { eval: true, workerData: { mode, block } });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('the loopback peer did not start')), peerStartTimeoutMs);
    const fail = (error: Error) => {
      clearTimeout(timer);
      void worker.terminate();
      reject(error);
    };
    worker.once('error', fail);
    worker.once('message', (port: number) => {
      clearTimeout(timer);
      worker.off('error', fail);
      resolve({ port, worker });
    });
  });
}

function sharedPeer(ctx: SampleContext, mode: 'source' | 'echo', block: number): Promise<Peer> {
  return ctx.shared(
    `peer-${mode}-${block}`,
    () => startPeer(mode, block),
    async (peer) => {
      await peer.worker.terminate();
    },
  );
}

/**
 * Runs `attach` on a new connection to the peer until it calls `finish` with the value; fails it
 * on a socket error, on abort, or when it overruns `durationMs` by more than overrunMs.
 */
function onConnection(
  port: number,
  durationMs: number,
  signal: AbortSignal,
  options: { onread?: { buffer: Buffer; callback: (bytes: number) => boolean } },
  attach: (socket: Socket, finish: (value: number) => void) => void,
): Promise<number> {
  signal.throwIfAborted();
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', ...options });
    const settle = (outcome: () => void) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      outcome();
    };
    const onAbort = () => settle(() => reject(signal.reason));
    const timer = setTimeout(
      () => settle(() => reject(new Error('the loopback peer stopped answering'))),
      durationMs + overrunMs,
    );
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('error', (error) => settle(() => reject(error)));
    socket.once('connect', () => attach(socket, (value) => settle(() => resolve(value))));
  });
}

export const networkTcpThroughput = defineMetric<{
  block_size: number;
  duration_ms: number;
  ramp_ms: number;
}>({
  name: 'network_tcp_throughput',
  title: 'Loopback TCP throughput',
  description:
    'One TCP connection on 127.0.0.1: the peer writes `block_size`-byte blocks as fast as it can; ' +
    'this end reads into a `block_size` buffer and counts the bytes received over `duration_ms`, ' +
    'after `ramp_ms` of ramp-up: what the receiver line of `iperf3 -c 127.0.0.1 -l block_size` shows.',
  category: 'network',
  unit: 'MB/s',
  better: 'higher',
  parameters: {
    type: 'object',
    properties: {
      block_size: { type: 'integer', minimum: 1024, maximum: 16 * MiB, default: 128 * 1024 },
      duration_ms: { type: 'integer', minimum: 1, maximum: 600_000, default: 1000 },
      ramp_ms: { type: 'integer', minimum: 0, maximum: 60_000, default: 200 },
    },
    additionalProperties: false,
  },
  async sample({ block_size, duration_ms, ramp_ms }, ctx) {
    const peer = await sharedPeer(ctx, 'source', block_size);
    const connected = nowNs();
    const rampEnd = connected + BigInt(ramp_ms) * 1_000_000n;
    const window = BigInt(duration_ms) * 1_000_000n;
    let start = 0n;
    let bytes = 0;
    let finish: (value: number) => void = () => undefined;
    const callback = (received: number): boolean => {
      const now = nowNs();
      if (start === 0n) {
        if (now >= rampEnd) start = now;
      } else {
        bytes += received;
        if (now - start >= window) finish(bytes / (Number(now - start) / 1e9) / MB);
      }
      return true;
    };
    return onConnection(
      peer.port,
      ramp_ms + duration_ms,
      ctx.signal,
      { onread: { buffer: Buffer.alloc(block_size), callback } },
      (_socket, done) => {
        finish = done;
      },
    );
  },
});

export const networkTcpLatency = defineMetric<{ message_size: number; duration_ms: number; ramp_ms: number }>(
  {
    name: 'network_tcp_latency',
    title: 'Loopback TCP request/response latency',
    description:
      'Round-trip time of a `message_size`-byte message sent to an echo peer on 127.0.0.1 and read ' +
      'back whole before the next is sent (TCP_NODELAY), averaged over `duration_ms` after `ramp_ms` ' +
      'of ramp-up. A full round trip: sockperf ping-pong prints half of it.',
    category: 'network',
    unit: 'µs',
    better: 'lower',
    parameters: {
      type: 'object',
      properties: {
        message_size: { type: 'integer', minimum: 1, maximum: 65_536, default: 64 },
        duration_ms: { type: 'integer', minimum: 1, maximum: 600_000, default: 1000 },
        ramp_ms: { type: 'integer', minimum: 0, maximum: 60_000, default: 100 },
      },
      additionalProperties: false,
    },
    async sample({ message_size, duration_ms, ramp_ms }, ctx) {
      const peer = await sharedPeer(ctx, 'echo', message_size);
      const message = Buffer.alloc(message_size, 0x42);
      return onConnection(peer.port, ramp_ms + duration_ms, ctx.signal, {}, (socket, finish) => {
        socket.setNoDelay(true);
        const rampEnd = nowNs() + BigInt(ramp_ms) * 1_000_000n;
        const window = BigInt(duration_ms) * 1_000_000n;
        let start = 0n;
        let trips = 0;
        let pending = message_size;
        socket.on('data', (data: Buffer) => {
          pending -= data.length;
          if (pending > 0) return;
          pending = message_size;
          const now = nowNs();
          if (start === 0n) {
            if (now >= rampEnd) start = now;
          } else {
            trips++;
            if (now - start >= window) return finish(Number(now - start) / 1e3 / trips);
          }
          socket.write(message);
        });
        socket.write(message);
      });
    },
  },
);

export const networkMetrics = [networkTcpThroughput, networkTcpLatency];
