// Network metrics on loopback (127.0.0.1 only). The other end of the connection runs in a worker
// thread, so that both ends have a core each, as iperf3's or sockperf's client and server
// processes do; the measuring end is this thread. Both ends read and write blocking sockets in
// loops, as those tools do, not through event loops: see blockingDescriptor.
import { readSync, writeSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { defineMetric, type SampleContext } from '../types.js';
import { MB, MiB, repeatFor } from './timing.js';

// CommonJS, evaluated in the worker: a server on 127.0.0.1 that, on the socket's descriptor made
// blocking, one connection at a time, either writes `block`-byte blocks (source) or sends back
// whatever it reads (echo), until the client closes the connection (a write fails, or a read
// returns 0).
const peerSource = `
const net = require('node:net');
const fs = require('node:fs');
const { parentPort, workerData } = require('node:worker_threads');
const block = Buffer.alloc(workerData.block, 0x5a);
const source = (fd) => {
  for (;;) fs.writeSync(fd, block, 0, block.length);
};
const echo = (fd) => {
  const buffer = Buffer.alloc(65536);
  for (let n; (n = fs.readSync(fd, buffer, 0, buffer.length, null)) > 0; ) {
    for (let sent = 0; sent < n; ) sent += fs.writeSync(fd, buffer, sent, n - sent);
  }
};
const server = net.createServer({ pauseOnConnect: true }, (socket) => {
  socket.setNoDelay(true);
  socket.on('error', () => socket.destroy());
  const handle = socket._handle;
  if (typeof handle?.setBlocking !== 'function' || !(handle.fd >= 0) || handle.setBlocking(true) !== 0) {
    return socket.destroy();
  }
  try {
    (workerData.mode === 'source' ? source : echo)(handle.fd);
  } catch {}
  socket.destroy();
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
  attach: (socket: Socket, finish: (value: number) => void) => void,
): Promise<number> {
  signal.throwIfAborted();
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1' });
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
    socket.once('connect', () => {
      try {
        attach(socket, (value) => settle(() => resolve(value)));
      } catch (error) {
        settle(() => reject(error as Error));
      }
    });
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
    'after `ramp_ms` of ramp-up: what the receiver line of `iperf3 -c 127.0.0.1 -l block_size` shows. ' +
    'Both ends use blocking writes and reads on the socket, as iperf3 does, not event loops.',
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
    const buffer = Buffer.alloc(block_size);
    return onConnection(peer.port, ramp_ms + duration_ms, ctx.signal, (socket, finish) => {
      // Synchronous from here, as for the latency metric below.
      const fd = blockingDescriptor(socket);
      repeatFor(ramp_ms, ctx.signal, () => receive(fd, buffer));
      let bytes = 0;
      const run = repeatFor(duration_ms, ctx.signal, () => {
        bytes += receive(fd, buffer);
      });
      finish(bytes / run.seconds / MB);
    });
  },
});

interface StreamHandle {
  fd?: number;
  readStop?: () => number;
  setBlocking?: (blocking: boolean) => number;
}

/**
 * The descriptor of a connected socket, in blocking mode, with the event loop no longer reading
 * it: round trips on it are then a blocking write and read each, as sockperf's are, with no event
 * loop turn in between (which adds about 5 µs per message at each end), and a stream is read as
 * iperf3 reads it (through the event loop, about 10 % less on this machine). Node has no public
 * API for this; its stream handles have `fd` and `setBlocking` (Node 20), checked here.
 */
export function blockingDescriptor(socket: Socket): number {
  const handle = (socket as unknown as { _handle?: StreamHandle })._handle;
  const fd = handle?.fd;
  if (!handle?.setBlocking || !handle.readStop || fd === undefined || fd < 0) {
    throw new Error("this Node.js does not expose a TCP socket's descriptor");
  }
  socket.pause();
  handle.readStop();
  if (handle.setBlocking(true) !== 0) throw new Error('cannot make the loopback socket blocking');
  return fd;
}

/** One blocking read of whatever has arrived, into `buffer` from `offset` to its end; the bytes read. */
function receive(fd: number, buffer: Buffer, offset = 0): number {
  const bytes = readSync(fd, buffer, offset, buffer.length - offset, null);
  if (bytes === 0) throw new Error('the loopback peer closed the connection');
  return bytes;
}

/** One round trip on a blocking descriptor: `message` written, then read back whole into `reply`. */
export function roundTrip(fd: number, message: Buffer, reply: Buffer): void {
  for (let sent = 0; sent < message.length;) sent += writeSync(fd, message, sent, message.length - sent);
  for (let received = 0; received < reply.length;) {
    received += receive(fd, reply, received);
  }
}

export const networkTcpLatency = defineMetric<{ message_size: number; duration_ms: number; ramp_ms: number }>(
  {
    name: 'network_tcp_latency',
    title: 'Loopback TCP request/response latency',
    description:
      'Round-trip time of a `message_size`-byte message sent to an echo peer on 127.0.0.1 and read ' +
      'back whole before the next is sent (TCP_NODELAY), averaged over `duration_ms` after `ramp_ms` ' +
      'of ramp-up. Both ends use blocking writes and reads on the socket, as sockperf does, not ' +
      'event loops: a full round trip, of which sockperf ping-pong prints half.',
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
      const reply = Buffer.alloc(message_size);
      return onConnection(peer.port, ramp_ms + duration_ms, ctx.signal, (socket, finish) => {
        socket.setNoDelay(true);
        // Synchronous from here: no timer can interrupt a blocked read. The peer is a thread of
        // this process that answers until the connection closes; the run's deadline bounds the rest.
        const fd = blockingDescriptor(socket);
        repeatFor(ramp_ms, ctx.signal, () => roundTrip(fd, message, reply));
        const run = repeatFor(duration_ms, ctx.signal, () => roundTrip(fd, message, reply));
        finish((run.seconds * 1e6) / run.count);
      });
    },
  },
);

export const networkMetrics = [networkTcpThroughput, networkTcpLatency];
