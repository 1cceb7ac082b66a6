import { describe, expect, it } from '@jest/globals';
import { formatBytes, formatCpu, parseBytes, parseCpu } from '../../src/quantities.js';

/** A deterministic pseudo-random generator (mulberry32), so that a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const Ki = 2 ** 10;
const Mi = 2 ** 20;
const Gi = 2 ** 30;
const Ti = 2 ** 40;
const Pi = 2 ** 50;

describe('parseCpu', () => {
  it.each([
    ['2', 2000],
    ['0', 0],
    ['0.5', 500],
    ['1.25', 1250],
    ['0.001', 1],
    ['16', 16000],
    ['500m', 500],
    ['1m', 1],
    ['0m', 0],
    ['2500m', 2500],
  ])('reads %s as %i millicores', (quantity, millis) => {
    expect(parseCpu(quantity)).toBe(millis);
  });

  it.each([
    [''],
    ['m'],
    ['-1'],
    ['-500m'],
    ['1.2345'],
    ['.5'],
    ['5.'],
    ['1e3'],
    ['2 cores'],
    ['500 m'],
    ['500M'],
    ['0x10'],
    [' 1'],
  ])('refuses %p with a RangeError that quotes it', (quantity) => {
    expect(() => parseCpu(quantity)).toThrow(RangeError);
    expect(() => parseCpu(quantity)).toThrow(`"${quantity}" is not a CPU quantity`);
  });
});

describe('formatCpu', () => {
  it.each([
    [0, '0'],
    [1000, '1'],
    [2000, '2'],
    [500, '500m'],
    [1, '1m'],
    [1500, '1500m'],
    [64000, '64'],
  ])('writes %i millicores as %s', (millis, quantity) => {
    expect(formatCpu(millis)).toBe(quantity);
  });

  it('round-trips every whole number of millicores through parseCpu', () => {
    const next = random(7);
    const samples = [0, 1, 999, 1000, 1001, 250, 4000, 123_456];
    for (let i = 0; i < 500; i++) samples.push(Math.floor(next() * 1_000_000));
    for (const millis of samples) expect(parseCpu(formatCpu(millis))).toBe(millis);
  });

  it.each([
    ['1', '1'],
    ['0.5', '500m'],
    ['1.000', '1'],
    ['1000m', '1'],
    ['0.25', '250m'],
  ])('gives %s the canonical form %s', (quantity, canonical) => {
    expect(formatCpu(parseCpu(quantity))).toBe(canonical);
  });
});

describe('parseBytes', () => {
  it.each([
    ['0', 0],
    ['100', 100],
    ['1Ki', Ki],
    ['512Mi', 512 * Mi],
    ['8Gi', 8 * Gi],
    ['2Ti', 2 * Ti],
    ['1Pi', Pi],
    ['1k', 1e3],
    ['1M', 1e6],
    ['10G', 1e10],
    ['3T', 3e12],
    ['1P', 1e15],
    ['1.5Gi', 1.5 * Gi],
    ['0.5Ki', 512],
    ['2.5G', 2.5e9],
  ])('reads %s as %i bytes', (quantity, bytes) => {
    expect(parseBytes(quantity)).toBe(bytes);
  });

  it.each([
    [''],
    ['Gi'],
    ['-1Gi'],
    ['1 Gi'],
    ['1gi'],
    ['1GB'],
    ['1KB'],
    ['1K'],
    ['1Ei'],
    ['1E'],
    ['1.Gi'],
    ['.5Gi'],
    ['1e9'],
    ['8Gi '],
  ])('refuses %p with a RangeError that quotes it', (quantity) => {
    expect(() => parseBytes(quantity)).toThrow(RangeError);
    expect(() => parseBytes(quantity)).toThrow(`"${quantity}" is not a size`);
  });
});

describe('formatBytes', () => {
  it.each([
    [0, '0'],
    [1, '1'],
    [1023, '1023'],
    [Ki, '1Ki'],
    [1536, '1536'],
    [1000, '1000'],
    [1e9, '1000000000'],
    [512 * Mi, '512Mi'],
    [1024 * Mi, '1Gi'],
    [8 * Gi, '8Gi'],
    [3 * Ti, '3Ti'],
    [Pi, '1Pi'],
    [2048 * Pi, '2048Pi'],
    [Gi + Ki, `${Mi + 1}Ki`],
  ])('writes %i bytes as %s, with the largest binary suffix that divides exactly', (bytes, quantity) => {
    expect(formatBytes(bytes)).toBe(quantity);
  });

  it('round-trips every whole number of bytes through parseBytes', () => {
    const next = random(11);
    const samples = [0, 1, Ki - 1, Ki, Ki + 1, Mi, 3 * Gi, 7 * Ti, 5 * Pi, Number.MAX_SAFE_INTEGER];
    for (let i = 0; i < 300; i++) samples.push(Math.floor(next() * 2 ** 40));
    // Multiples of each binary unit exercise every suffix.
    for (const unit of [Ki, Mi, Gi, Ti, Pi]) {
      for (let i = 0; i < 50; i++) samples.push(unit * (1 + Math.floor(next() * 4096)));
    }
    for (const bytes of samples) expect(parseBytes(formatBytes(bytes))).toBe(bytes);
  });

  it.each([['512Mi'], ['8Gi'], ['1Ki'], ['3Ti'], ['2Pi'], ['100'], ['1536Ki']])(
    'writes %s back unchanged',
    (quantity) => {
      expect(formatBytes(parseBytes(quantity))).toBe(quantity);
    },
  );

  it('writes decimal and fractional quantities in a binary or plain form of the same size', () => {
    expect(formatBytes(parseBytes('1k'))).toBe('1000');
    expect(formatBytes(parseBytes('1.5Gi'))).toBe('1536Mi');
    expect(formatBytes(parseBytes('2G'))).toBe('1953125Ki');
  });
});
