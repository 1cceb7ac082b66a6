// `make bench-accuracy`: every built-in benchmark metric (dist/src/backends/benchmark) next to a
// standard tool measuring the same thing on this machine, in the same run, with aligned parameters
// (block sizes, durations, one thread, the same bytes or the same pointer chain), and the ratio.
//
// The two sides take turns, ACCURACY_ROUNDS times (default 5; a comparison whose single
// measurements are noisier takes a multiple of it), each for ACCURACY_SECONDS (default 1, whole
// seconds) per side, so that a burst of other work on the machine hits both. Each round is a pair,
// ours then the reference in even rounds and the other way round in odd ones, so that neither side
// always runs on a machine just warmed (or disturbed) by the other. The table shows the median of
// each side and the median of the rounds' ratios ours / reference: a slow drift of the machine's
// speed moves both halves of a pair and cancels out of its ratio. A tool that is not installed is
// reported with the `apt-get install` line that installs it, and its metric is skipped.
// `node scripts/bench/accuracy.mjs --tools` lists the tools and their Debian packages; metric names
// as arguments compare only those; --verbose prints every round.
//
// References (Debian 12 packages):
//   sha256_throughput        openssl speed -elapsed -evp sha256 -bytes 1048576 -seconds S (k = 1000
//                            bytes; -elapsed: wall-clock time as ours, not openssl's default CPU time)
//   deflate_throughput       the same zlib, driven by a C loop: compress2(level 6) of the same text,
//                            compiled here with gcc -O2 as a Node addon against Node's headers, so
//                            that it calls the zlib Node links and exports (Chromium's 1.3.1, SIMD,
//                            a CRC32C hash); its output is checked to be Node's, byte for byte.
//                            Debian ships no build of that zlib, and its own 1.2.13 (python3's
//                            zlib.compress, printed below it for information) is another
//                            implementation, finding other matches at other speeds
//   integer_checksum         sum -r of a 256 MiB file in the page cache (coreutils), less the time
//                            dd takes to read the same file in the same 32 KiB blocks
//   float_matmul             the same loop in C, compiled here with gcc -O2 (no packaged tool runs a
//                            scalar float64 matrix multiply: numpy's BLAS is vectorised and blocked)
//   memory_copy_bandwidth    mbw -t1 (memcpy; mbw 1.2.2 prints it as "DUMB": its labels are swapped)
//   memory_random_latency    the same pointer chain in C, compiled here with gcc -O2 (Debian 12 has no
//                            lmbench lat_mem_rd nor tinymembench)
//   storage_seq_write        dd if=/dev/zero bs=1M count=256 conv=fsync. Each takes about 0.1 s and
//                            single rounds differ by ±15 %: 4 × the rounds
//   storage_seq_read         dd bs=1M iflag=direct, of the very file our metric's read loop reads (both
//                            O_DIRECT, 1 MiB blocks, 256 MiB), written and fsynced once; 4 × the rounds,
//                            as one read of a virtual disk varies by ±20 % from the next
//   storage_random_read_iops fio --rw=randread --bs=4k --direct=1 --ioengine=psync --iodepth=1, on the
//                            file our metric's read loop reads, as for storage_seq_read; 2 × the rounds
//   network_tcp_throughput   iperf3 -c 127.0.0.1 -l 128K (the receiver's bytes per second). Both
//                            sides' single seconds vary by ±15 % on a VM, and ours sits 3–6 % below
//                            iperf3 (as does the same blocking loop in C: iperf3 waits in select()
//                            before each read and write): 5 × the rounds
//   network_tcp_latency      sockperf ping-pong --tcp -m 64 (its avg-latency is half a round trip).
//                            Both ends of ours write and read blocking sockets, as sockperf's do.
//                            On a VM both swing from one second to the next with whether the
//                            other vCPU idles (a round trip of 20 or 70 µs here; the guest's
//                            haltpoll idle driver adapts its polling window to recent wake-ups,
//                            so either side can land in either state): 5 × the rounds
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { measure } from '../../dist/src/backends/benchmark/measure.js';
import { compressibleText } from '../../dist/src/backends/benchmark/metrics/data.js';
import { findMetric } from '../../dist/src/backends/benchmark/metrics/index.js';
import { readRandomly, readSequentially } from '../../dist/src/backends/benchmark/metrics/storage.js';

const rounds = Number(process.env.ACCURACY_ROUNDS ?? 5);
const seconds = Math.max(1, Math.round(Number(process.env.ACCURACY_SECONDS ?? 1)));
const tolerance = 0.1;
const verbose = process.argv.includes('--verbose');
const MiB = 1024 * 1024;
const fileSize = 256 * MiB;

const tools = {
  openssl: 'openssl',
  python3: 'python3',
  sum: 'coreutils',
  dd: 'coreutils',
  gcc: 'gcc',
  mbw: 'mbw',
  fio: 'fio',
  iperf3: 'iperf3',
  sockperf: 'sockperf',
  'node-headers': 'nodejs',
};

/** Node's C headers (node_api.h, and the zlib.h of the zlib it links), shipped with Node itself. */
const nodeInclude = join(dirname(process.execPath), '..', 'include', 'node');

const has = (tool) =>
  tool === 'node-headers'
    ? existsSync(join(nodeInclude, 'node_api.h')) && existsSync(join(nodeInclude, 'zlib.h'))
    : spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * MiB, ...options });
  if (result.status !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} failed: ${result.stderr || result.error?.message || result.status}`,
    );
  }
  return result.stdout + result.stderr;
}

function timed(command, args) {
  const start = process.hrtime.bigint();
  run(command, args);
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function match(text, pattern, what) {
  const found = pattern.exec(text);
  if (!found) throw new Error(`cannot read ${what} in:\n${text}`);
  return Number(found[1]);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Runs `body` with a background server, once its output matches `ready` (a connection to probe it
 * would use up iperf3 -1's one test); stops the server, by its PID, afterwards.
 */
async function withServer(command, args, ready, body, timeoutMs = 5000) {
  const server = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    await new Promise((resolve, reject) => {
      let output = '';
      const timer = setTimeout(() => reject(new Error(`${command} did not start: ${output}`)), timeoutMs);
      const onData = (chunk) => {
        output += chunk;
        if (ready.test(output)) {
          clearTimeout(timer);
          resolve();
        }
      };
      server.stdout.on('data', onData);
      server.stderr.on('data', onData);
      server.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${command} exited with ${code}: ${output}`));
      });
    });
    return await body();
  } finally {
    if (server.exitCode === null) server.kill('SIGTERM');
  }
}

const work = mkdtempSync(join(tmpdir(), 'atrium-accuracy-'));

const matmulC = `
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
  int n = atoi(argv[1]); double secs = atof(argv[2]);
  double *a = malloc(8.0 * n * n), *b = malloc(8.0 * n * n), *c = malloc(8.0 * n * n);
  for (int i = 0; i < n * n; i++) { a[i] = (i % 97) / 97.0; b[i] = (i % 89) / 89.0; }
  long count = 0; double start = now(), t;
  do {
    for (int i = 0; i < n; i++)
      for (int j = 0; j < n; j++) {
        double s = 0;
        for (int k = 0; k < n; k++) s += a[i * n + k] * b[j * n + k];
        c[i * n + j] = s;
      }
    count++; t = now();
  } while (t - start < secs);
  printf("%f GFLOP/s (c[1][1] = %f)\\n", count * 2.0 * n * n * n / (t - start) / 1e9, c[n + 1]);
  return 0;
}`;

const chaseC = `
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
static uint32_t state = 0x12345678;
static uint32_t next(void) { state ^= state << 13; state ^= state >> 17; state ^= state << 5; return state; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
  size_t bytes = strtoull(argv[1], 0, 10); double secs = atof(argv[2]);
  size_t lines = bytes / 64, stride = 16, rounds = 0, steps = 65536;
  uint32_t *order = malloc(lines * 4), *chain = calloc(lines * stride, 4);
  for (size_t i = 0; i < lines; i++) order[i] = i;
  for (size_t i = lines - 1; i > 0; i--) { size_t j = next() % (i + 1); uint32_t s = order[i]; order[i] = order[j]; order[j] = s; }
  for (size_t i = 0; i < lines; i++) chain[order[i] * stride] = order[(i + 1) % lines] * stride;
  uint32_t slot = 0;
  for (size_t i = 0; i < steps; i++) slot = chain[slot];
  double start = now(), t;
  do { for (size_t i = 0; i < steps; i++) slot = chain[slot]; rounds++; t = now(); } while (t - start < secs);
  printf("%f ns (end %u)\\n", (t - start) * 1e9 / (rounds * steps), slot);
  return 0;
}`;

// A Node addon (N-API) whose zlib calls resolve, at load, to the zlib inside the node binary.
const zlibC = `
#include <node_api.h>
#include <stdlib.h>
#include <time.h>
#include <zlib.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void args(napi_env env, napi_callback_info info, void **data, size_t *size, int32_t *level, double *secs) {
  size_t argc = 3; napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_get_buffer_info(env, argv[0], data, size);
  napi_get_value_int32(env, argv[1], level);
  if (secs) napi_get_value_double(env, argv[2], secs);
}
/* compress(text, level): the compressed bytes, to compare with node:zlib's. */
static napi_value compress_once(napi_env env, napi_callback_info info) {
  void *data; size_t size; int32_t level; napi_value result;
  args(env, info, &data, &size, &level, NULL);
  uLongf length = compressBound(size); Bytef *out = malloc(length);
  int status = compress2(out, &length, data, size, level);
  if (status == Z_OK) napi_create_buffer_copy(env, length, out, NULL, &result);
  free(out);
  if (status != Z_OK) { napi_throw_error(env, NULL, "compress2 failed"); return NULL; }
  return result;
}
/* run(text, level, seconds): compress2 in a loop for the seconds; MB/s of input. */
static napi_value run(napi_env env, napi_callback_info info) {
  void *data; size_t size; int32_t level; double secs; napi_value result;
  args(env, info, &data, &size, &level, &secs);
  uLongf bound = compressBound(size); Bytef *out = malloc(bound);
  long count = 0; double start = now(), t; int status;
  do { uLongf length = bound; status = compress2(out, &length, data, size, level); count++; t = now(); }
  while (status == Z_OK && t - start < secs);
  free(out);
  if (status != Z_OK) { napi_throw_error(env, NULL, "compress2 failed"); return NULL; }
  napi_create_double(env, count * (double)size / (t - start) / 1e6, &result);
  return result;
}
NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "compress", NAPI_AUTO_LENGTH, compress_once, NULL, &fn);
  napi_set_named_property(env, exports, "compress", fn);
  napi_create_function(env, "run", NAPI_AUTO_LENGTH, run, NULL, &fn);
  napi_set_named_property(env, exports, "run", fn);
  return exports;
}`;

function compileAddon(name, source) {
  const path = join(work, name);
  writeFileSync(`${path}.c`, source);
  run('gcc', ['-O2', '-shared', '-fPIC', `-I${nodeInclude}`, '-o', `${path}.node`, `${path}.c`]);
  return createRequire(import.meta.url)(`${path}.node`);
}

function compile(name, source) {
  const path = join(work, name);
  writeFileSync(`${path}.c`, source);
  run('gcc', ['-O2', '-o', path, `${path}.c`]);
  return path;
}

const paths = {
  text: join(work, 'text.bin'),
  sum: join(work, 'sum.bin'),
  read: join(work, 'read.bin'),
  seqRead: join(work, 'seq-read.bin'),
  write: join(work, 'write.bin'),
};

/**
 * The file a read reference reads, written and fsynced just before, as each measurement of the
 * metric writes its own: on a virtual disk, whether the host still caches the blocks matters.
 */
function writeFreshFile(path) {
  rmSync(path, { force: true });
  run('dd', [
    'if=/dev/urandom',
    `of=${path}`,
    'bs=1M',
    `count=${fileSize / MiB}`,
    'conv=fsync',
    'status=none',
  ]);
}

/** Each comparison: our metric and parameters, and the reference: its tools, setup and one measurement. */
const comparisons = [
  {
    metric: 'sha256_throughput',
    params: { block_size: MiB, duration_ms: seconds * 1000 },
    tool: 'openssl speed -elapsed -evp sha256',
    needs: ['openssl'],
    reference: () =>
      match(
        run('openssl', [
          'speed',
          '-elapsed',
          '-evp',
          'sha256',
          '-bytes',
          String(MiB),
          '-seconds',
          String(seconds),
        ]),
        /^sha256\s+([\d.]+)k/m,
        'the sha256 rate',
      ) / 1000,
  },
  {
    metric: 'deflate_throughput',
    params: { size: 4 * MiB, level: 6, duration_ms: seconds * 1000 },
    tool: "compress2 in C on Node's own zlib (gcc -O2)",
    needs: ['gcc', 'node-headers'],
    setup() {
      this.text = compressibleText(4 * MiB);
      this.zlib = compileAddon('zlib', zlibC);
      if (!this.zlib.compress(this.text, 6).equals(deflateSync(this.text, { level: 6 }))) {
        throw new Error("the C loop's compress2 is not Node's zlib: its output differs from node:zlib's");
      }
    },
    reference() {
      return this.zlib.run(this.text, 6, seconds);
    },
  },
  {
    metric: 'deflate_throughput',
    informational: true,
    params: { size: 4 * MiB, level: 6, duration_ms: seconds * 1000 },
    tool: "python3 zlib.compress: Debian's zlib 1.2.13, another implementation (for information)",
    needs: ['python3'],
    setup: () => writeFileSync(paths.text, compressibleText(4 * MiB)),
    reference: () =>
      match(
        run('python3', [
          '-c',
          [
            'import sys, time, zlib',
            'data = open(sys.argv[1], "rb").read(); n = 0; start = time.perf_counter()',
            'while True:',
            '    zlib.compress(data, 6); n += 1; t = time.perf_counter()',
            '    if t - start >= float(sys.argv[2]): break',
            'print(n * len(data) / (t - start) / 1e6)',
          ].join('\n'),
          paths.text,
          String(seconds),
        ]),
        /([\d.]+)/,
        'the python3 rate',
      ),
  },
  {
    metric: 'integer_checksum',
    params: { size: 16 * MiB, duration_ms: seconds * 1000 },
    tool: 'sum -r (less dd read time)',
    needs: ['sum', 'dd'],
    setup: () => {
      run('dd', ['if=/dev/urandom', `of=${paths.sum}`, 'bs=1M', `count=${fileSize / MiB}`, 'status=none']);
      run('sum', ['-r', paths.sum]);
    },
    reference: () => {
      const sumSeconds = timed('sum', ['-r', paths.sum]);
      const readSeconds = timed('dd', [`if=${paths.sum}`, 'of=/dev/null', 'bs=32K', 'status=none']);
      return fileSize / (sumSeconds - readSeconds) / 1e6;
    },
  },
  {
    metric: 'float_matmul',
    params: { n: 256, duration_ms: seconds * 1000 },
    tool: 'same loop in C (gcc -O2)',
    needs: ['gcc'],
    setup() {
      this.binary = compile('matmul', matmulC);
    },
    reference() {
      return match(run(this.binary, ['256', String(seconds)]), /([\d.]+) GFLOP/, 'GFLOP/s');
    },
  },
  {
    metric: 'memory_copy_bandwidth',
    params: { size: 256 * MiB, duration_ms: seconds * 1000 },
    tool: 'mbw -t1 (memcpy)',
    needs: ['mbw'],
    reference: () =>
      match(
        run('mbw', ['-q', '-n', '10', '-t1', '256']),
        /^AVG.*Copy:\s+([\d.]+) MiB\/s/m,
        'the mbw average',
      ) * 1.048576,
  },
  {
    metric: 'memory_random_latency',
    params: { size: 256 * MiB, duration_ms: seconds * 1000 },
    tool: 'same chain in C (gcc -O2)',
    needs: ['gcc'],
    setup() {
      this.binary = compile('chase', chaseC);
    },
    reference() {
      return match(run(this.binary, [String(256 * MiB), String(seconds)]), /([\d.]+) ns/, 'ns per access');
    },
  },
  {
    metric: 'storage_seq_write',
    params: { size: fileSize, block_size: MiB },
    tool: 'dd conv=fsync bs=1M',
    needs: ['dd'],
    roundsFactor: 4,
    reference: () => {
      rmSync(paths.write, { force: true });
      const out = run('dd', [
        'if=/dev/zero',
        `of=${paths.write}`,
        'bs=1M',
        `count=${fileSize / MiB}`,
        'conv=fsync',
      ]);
      rmSync(paths.write, { force: true });
      return fileSize / match(out, /copied, ([\d.]+) s/, "dd's time") / 1e6;
    },
  },
  {
    metric: 'storage_seq_read',
    params: { size: fileSize, block_size: MiB, direct: true },
    tool: 'dd iflag=direct bs=1M (same file)',
    needs: ['dd'],
    roundsFactor: 4,
    // The metric's own read loop (what each of its samples times) on the reference's file: both
    // sides then read the same blocks of the same disk, and whatever the host caches serves both.
    setup() {
      writeFreshFile(paths.seqRead);
      this.ours();
      this.reference();
    },
    ours: () => {
      const read = readSequentially(paths.seqRead, fileSize, MiB, true, new AbortController().signal);
      if (!read.direct) throw new Error('O_DIRECT is refused here: the comparison with dd would be void');
      return read.mbPerSecond;
    },
    reference: () => {
      const out = run('dd', [`if=${paths.seqRead}`, 'of=/dev/null', 'bs=1M', 'iflag=direct']);
      return fileSize / match(out, /copied, ([\d.]+) s/, "dd's time") / 1e6;
    },
  },
  {
    metric: 'storage_random_read_iops',
    params: { file_size: fileSize, block_size: 4096, duration_ms: seconds * 1000, direct: true },
    tool: 'fio randread psync qd1 direct (same file)',
    needs: ['fio', 'dd'],
    roundsFactor: 2,
    setup() {
      writeFreshFile(paths.read);
      this.ours();
      this.reference();
    },
    ours: () => {
      const read = readRandomly(paths.read, 4096, seconds * 1000, true, new AbortController().signal);
      if (!read.direct) throw new Error('O_DIRECT is refused here: the comparison with fio would be void');
      return read.iops;
    },
    reference: () => {
      const report = JSON.parse(
        run('fio', [
          '--name=randread',
          `--filename=${paths.read}`,
          '--rw=randread',
          '--bs=4k',
          '--direct=1',
          '--ioengine=psync',
          '--iodepth=1',
          '--numjobs=1',
          '--norandommap',
          '--randrepeat=0',
          `--size=${fileSize}`,
          `--runtime=${seconds}`,
          '--time_based',
          '--output-format=json',
        ]),
      );
      return report.jobs[0].read.iops;
    },
  },
  {
    metric: 'network_tcp_throughput',
    params: { block_size: 128 * 1024, duration_ms: seconds * 1000, ramp_ms: 200 },
    tool: 'iperf3 -l 128K (receiver)',
    needs: ['iperf3'],
    roundsFactor: 5,
    reference: async () => {
      const port = await freePort();
      const server = ['-s', '-1', '--forceflush', '-B', '127.0.0.1', '-p', String(port)];
      return withServer('iperf3', server, /Server listening/, () => {
        const report = JSON.parse(
          run('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-t', String(seconds), '-l', '128K', '-J']),
        );
        return report.end.sum_received.bytes / report.end.sum_received.seconds / 1e6;
      });
    },
  },
  {
    metric: 'network_tcp_latency',
    params: { message_size: 64, duration_ms: seconds * 1000, ramp_ms: 100 },
    tool: 'sockperf ping-pong --tcp -m 64 (2 × avg-latency)',
    needs: ['sockperf'],
    roundsFactor: 5,
    reference: async () => {
      const port = await freePort();
      const args = ['-i', '127.0.0.1', '-p', String(port), '--tcp'];
      return withServer('sockperf', ['server', ...args], /block on socket|Warmup stage/, () => {
        const out = run('sockperf', ['ping-pong', ...args, '-m', '64', '-t', String(seconds)]);
        return 2 * match(out, /avg-latency=([\d.]+)/, "sockperf's avg-latency");
      });
    },
  },
];

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

const packagesFor = (names) => [...new Set(names.map((name) => tools[name]))].sort();

function printTools() {
  console.log('Tools used by make bench-accuracy (Debian package in brackets):');
  for (const c of comparisons) {
    console.log(`  ${c.metric.padEnd(26)} ${c.tool}  [${packagesFor(c.needs).join(', ')}]`);
  }
  console.log(`\nInstall them all: apt-get install -y ${packagesFor(Object.keys(tools)).join(' ')}`);
}

const format = (value) =>
  value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(3);

async function compare(comparison) {
  const metric = findMetric(comparison.metric);
  if (!metric) throw new Error(`no metric ${comparison.metric} in dist/: run make build`);
  const missing = comparison.needs.filter((tool) => !has(tool));
  if (missing.length > 0) return { comparison, metric, missing };
  await comparison.setup?.();
  const measureOurs = async (round) => {
    if (comparison.ours) return comparison.ours();
    const measured = await measure(metric, comparison.params, { samples: 1, warmup: round === 0 ? 1 : 0 });
    return measured.median;
  };
  const ours = [];
  const reference = [];
  for (let round = 0; round < rounds * (comparison.roundsFactor ?? 1); round++) {
    if (round % 2 === 0) {
      ours.push(await measureOurs(round));
      reference.push(await comparison.reference());
    } else {
      reference.push(await comparison.reference());
      ours.push(await measureOurs(round));
    }
  }
  const ratios = ours.map((value, round) => value / reference[round]);
  return {
    comparison,
    metric,
    ours: median(ours),
    reference: median(reference),
    ratio: median(ratios),
    rounds: { ours, reference, ratios },
  };
}

async function main() {
  if (process.argv.includes('--tools')) return printTools();
  console.log(
    `Benchmark accuracy: each metric next to a reference tool, ${rounds} alternating rounds of ` +
      `${seconds} s per side; medians shown, ratio = the median of the rounds' ours / reference ` +
      `(within ±${tolerance * 100} % is ✓).\n`,
  );
  const only = process.argv.slice(2).filter((arg) => !arg.startsWith('--'));
  const selected = comparisons.filter((c) => only.length === 0 || only.includes(c.metric));
  const header = ['metric', 'unit', 'ours', 'reference', 'ratio', '±10 %', 'reference tool'];
  const rows = [];
  const missingTools = [];
  for (const comparison of selected) {
    const result = await compare(comparison);
    if (result.missing) {
      missingTools.push(...result.missing);
      const line = `apt-get install -y ${packagesFor(result.missing).join(' ')}`;
      rows.push([comparison.metric, result.metric.unit, '-', '-', '-', 'skipped', `missing: ${line}`]);
    } else {
      const { ratio } = result;
      const within = Math.abs(ratio - 1) <= tolerance;
      rows.push([
        comparison.metric,
        result.metric.unit,
        format(result.ours),
        format(result.reference),
        ratio.toFixed(3),
        comparison.informational ? 'info' : within ? '✓' : '✗',
        comparison.tool,
      ]);
    }
    printRow(rows.at(-1), rows.length === 1 ? header : null);
    if (verbose && result.rounds) {
      console.log(
        `    rounds: ours ${result.rounds.ours.map(format).join(' ')} | reference ${result.rounds.reference.map(format).join(' ')}` +
          ` | ratios ${Math.min(...result.rounds.ratios).toFixed(2)}–${Math.max(...result.rounds.ratios).toFixed(2)}`,
      );
    }
  }
  if (missingTools.length > 0) {
    console.log(
      `\nSome tools are missing; install them with:\n  apt-get install -y ${packagesFor(missingTools).join(' ')}`,
    );
  }
}

const widths = [26, 8, 10, 10, 7, 7, 0];
function printRow(row, header) {
  const line = (cells) =>
    cells
      .map((cell, i) =>
        i >= 2 && i <= 5 ? String(cell).padStart(widths[i]) : String(cell).padEnd(widths[i]),
      )
      .join('  ');
  if (header) {
    console.log(line(header));
    console.log(line(widths.map((w) => '-'.repeat(Math.max(w, 14)).slice(0, w || 14))));
  }
  console.log(line(row));
}

try {
  await main();
} finally {
  rmSync(work, { recursive: true, force: true });
}
