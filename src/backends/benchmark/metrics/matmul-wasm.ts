// The floating-point kernel as a hand-assembled WebAssembly module. In plain JavaScript every
// element access of a typed array reloads its base and length and checks bounds (about 25
// instructions for one multiply-add), so a JavaScript matrix multiply measures V8's code rather
// than the machine's floating-point unit. WebAssembly's loads are bounds-checked by guard pages, so
// its loop compiles to what gcc -O2 makes of the same C (the reference in accuracy.mjs).
//
// The module exports `memory` and `matmul(a, b, c, n)`: with a, b, c byte offsets of n×n row-major
// float64 matrices, and b holding the right-hand matrix transposed,
//   c[i][j] = Σ_k a[i][k] · b[j][k]      (one multiply and one add per k, in order, one accumulator)

const i32 = 0x7f;
const f64 = 0x7c;
const op = {
  loop: 0x03,
  end: 0x0b,
  brIf: 0x0d,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  f64Load: 0x2b,
  f64Store: 0x39,
  i32Const: 0x41,
  f64Const: 0x44,
  i32LtU: 0x49,
  i32Add: 0x6a,
  i32Mul: 0x6c,
  i32Shl: 0x74,
  f64Add: 0xa0,
  f64Mul: 0xa2,
} as const;
const voidBlock = 0x40;
// Parameters a, b, c, n, then the locals declared in `locals` below.
const [A, B, C, N, I, J, END, SUM, PA, PB] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] as const;

function uleb(value: number): number[] {
  const bytes: number[] = [];
  let rest = value >>> 0;
  do {
    const low = rest & 0x7f;
    rest >>>= 7;
    bytes.push(rest ? low | 0x80 : low);
  } while (rest);
  return bytes;
}

const vector = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const withSize = (bytes: number[]): number[] => [...uleb(bytes.length), ...bytes];
const name = (text: string): number[] => vector([...Buffer.from(text)].map((b) => [b]));

/** `local = base + index * n * 8`: the byte offset of row `index`. */
const rowOffset = (target: number, base: number, index: number): number[] => [
  ...[op.localGet, base, op.localGet, index, op.localGet, N, op.i32Mul],
  ...[op.i32Const, 3, op.i32Shl, op.i32Add, op.localSet, target],
];

/** `local = local + 1; continue the enclosing loop while local < n`. */
const countUpTo = (counter: number): number[] => [
  ...[op.localGet, counter, op.i32Const, 1, op.i32Add, op.localTee, counter],
  ...[op.localGet, N, op.i32LtU, op.brIf, 0],
];

const advance = (pointer: number): number[] => [
  ...[op.localGet, pointer, op.i32Const, 8, op.i32Add, op.localSet, pointer],
];

// The k loop walks the two row pointers and stops when a's reaches the end of its row (no separate
// counter: one instruction fewer per multiply-add, as gcc's loop shares one index between both rows).
const innerLoop: number[] = [
  ...[op.loop, voidBlock],
  ...[op.localGet, SUM, op.localGet, PA, op.f64Load, 3, 0, op.localGet, PB, op.f64Load, 3, 0],
  ...[op.f64Mul, op.f64Add, op.localSet, SUM],
  ...advance(PA),
  ...advance(PB),
  ...[op.localGet, PA, op.localGet, END, op.i32LtU, op.brIf, 0],
  op.end,
];

const storeSum: number[] = [
  ...[op.localGet, C, op.localGet, I, op.localGet, N, op.i32Mul, op.localGet, J, op.i32Add],
  ...[op.i32Const, 3, op.i32Shl, op.i32Add, op.localGet, SUM, op.f64Store, 3, 0],
];

const body: number[] = [
  ...[op.i32Const, 0, op.localSet, I],
  ...[op.loop, voidBlock],
  ...[op.i32Const, 0, op.localSet, J],
  ...[op.loop, voidBlock],
  ...[op.f64Const, 0, 0, 0, 0, 0, 0, 0, 0, op.localSet, SUM],
  ...rowOffset(PA, A, I),
  ...rowOffset(PB, B, J),
  ...[op.localGet, PA, op.localGet, N, op.i32Const, 3, op.i32Shl, op.i32Add, op.localSet, END],
  ...innerLoop,
  ...storeSum,
  ...countUpTo(J),
  op.end,
  ...countUpTo(I),
  op.end,
  op.end,
];

const locals = vector([
  [3, i32],
  [1, f64],
  [2, i32],
]);

const moduleBytes = new Uint8Array([
  ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
  ...section(1, vector([[0x60, ...vector([[i32], [i32], [i32], [i32]]), ...vector([])]])),
  ...section(3, vector([[0]])),
  ...section(5, vector([[0x00, 1]])),
  ...section(
    7,
    vector([
      [...name('memory'), 0x02, 0],
      [...name('matmul'), 0x00, 0],
    ]),
  ),
  ...section(10, vector([withSize([...locals, ...body])])),
]);

// Node has WebAssembly, but its type declarations come with the DOM library, which this project
// does not load: the little used here, declared.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmModule {
  readonly kind: 'module';
}
declare const WebAssembly: {
  compile(bytes: Uint8Array): Promise<WasmModule>;
  instantiate(module: WasmModule): Promise<{ exports: Record<string, unknown> }>;
};

// Compiled once per process. V8 runs a new module's code from its baseline compiler (Liftoff, about
// 7 × slower on this loop) until the optimised code is ready, and the optimised code belongs to the
// compiled module: instances made later from the same module start with it. Compiling per kernel
// made every measurement without a warm-up sample pay that again (~4 % of a 1 s sample).
let compiled: Promise<WasmModule> | undefined;

export interface MatmulKernel {
  /** Multiplies the two n×n matrices loaded by `load` (c = a · b); returns nothing, reads c. */
  multiply(): void;
  /** c[i][j] after `multiply`. */
  result(i: number, j: number): number;
  n: number;
}

/**
 * Instantiates the kernel for n×n matrices filled with deterministic values (a[i] = (i mod 97) / 97,
 * b[i] = (i mod 89) / 89, as the C reference does).
 */
export async function createMatmulKernel(n: number): Promise<MatmulKernel> {
  compiled ??= WebAssembly.compile(moduleBytes);
  const instance = await WebAssembly.instantiate(await compiled);
  const memory = instance.exports['memory'] as WasmMemory;
  const matmul = instance.exports['matmul'] as (a: number, b: number, c: number, n: number) => void;
  const matrixBytes = n * n * 8;
  const needed = Math.ceil((3 * matrixBytes) / 65536);
  memory.grow(Math.max(0, needed - memory.buffer.byteLength / 65536));
  const [a, b, c] = [0, matrixBytes, 2 * matrixBytes];
  const heap = new Float64Array(memory.buffer);
  for (let i = 0; i < n * n; i++) {
    heap[a / 8 + i] = (i % 97) / 97;
    heap[b / 8 + i] = (i % 89) / 89;
  }
  return {
    n,
    multiply: () => matmul(a, b, c, n),
    result: (i, j) => new Float64Array(memory.buffer)[c / 8 + i * n + j] ?? Number.NaN,
  };
}
