// Deterministic data for the metrics, also used by scripts/bench/accuracy.mjs so that a reference
// tool works on exactly the bytes (and the same pointer chain) that the metric does.

/** xorshift32: tiny, fast, and the same sequence in JavaScript and in the C references. */
export function xorshift32(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
}

const vocabulary = (
  'the of and to in is that for it as with was on be by this are from at or an have not which ' +
  'benchmark metric score memory storage network compute latency throughput sample median spread ' +
  'baseline plan section runner project service catalog package version pipeline module function ' +
  'file operation quota region cluster scheduler worker event status result value machine'
).split(' ');

/**
 * English-like text (words of a fixed vocabulary, drawn by xorshift32, with line breaks): it
 * compresses about as well as logs or JSON do, so the deflate metric measures a realistic workload
 * and not the degenerate speed of all-zero input.
 */
export function compressibleText(size: number, seed = 0x9e3779b9): Buffer {
  const next = xorshift32(seed);
  const text = Buffer.alloc(size);
  let offset = 0;
  while (offset < size) {
    const r = next();
    const word = vocabulary[r % vocabulary.length] ?? 'the';
    offset += text.write((r >>> 8) % 9 === 0 ? `${word}\n` : `${word} `, offset);
  }
  return text;
}

/** Bytes that do not compress, for metrics whose speed must not depend on content. */
export function noise(size: number, seed = 0x2545f491): Buffer {
  const next = xorshift32(seed);
  const bytes = Buffer.alloc(size);
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, Math.floor(size / 4));
  for (let i = 0; i < words.length; i++) words[i] = next();
  return bytes;
}

/** Where the pointer chase reads next: one 32-bit slot per 64-byte cache line. */
export const chaseStride = 16;

/**
 * A single random cycle through every cache line of `bytes` bytes (Sattolo's shuffle of the line
 * order, by xorshift32): slot `line * 16` holds the slot of the next line. Each step then depends
 * on the previous load, hits a new line, and the hardware prefetcher cannot guess it.
 */
export function randomCycle(bytes: number, seed = 0x12345678): Uint32Array {
  const lines = Math.floor(bytes / 64);
  const order = new Uint32Array(lines);
  for (let i = 0; i < lines; i++) order[i] = i;
  const next = xorshift32(seed);
  for (let i = lines - 1; i > 0; i--) {
    const j = next() % (i + 1);
    const swap = order[i] ?? 0;
    order[i] = order[j] ?? 0;
    order[j] = swap;
  }
  const chain = new Uint32Array(lines * chaseStride);
  for (let i = 0; i < lines; i++) {
    chain[(order[i] ?? 0) * chaseStride] = (order[(i + 1) % lines] ?? 0) * chaseStride;
  }
  return chain;
}
