// Kubernetes-style quantities: CPU in cores or millicores, sizes in bytes with SI or binary suffixes.
// Stored as integers (millicores, bytes) so that quota arithmetic is exact.

const binary: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50 };
const decimal: Record<string, number> = { k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15 };

export function parseCpu(quantity: string): number {
  const match = /^(?:([0-9]+(?:\.[0-9]{1,3})?)|([0-9]+)m)$/.exec(quantity);
  if (!match) throw new RangeError(`"${quantity}" is not a CPU quantity (2, 0.5, 500m)`);
  return match[2] !== undefined ? Number(match[2]) : Math.round(Number(match[1]) * 1000);
}

export function formatCpu(millis: number): string {
  return millis % 1000 === 0 ? String(millis / 1000) : `${millis}m`;
}

export function parseBytes(quantity: string): number {
  const match = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/.exec(quantity);
  if (!match) throw new RangeError(`"${quantity}" is not a size (512Mi, 8Gi, 1G)`);
  const unit = match[2];
  const factor = unit ? (binary[unit] ?? decimal[unit] ?? 1) : 1;
  return Math.round(Number(match[1]) * factor);
}

export function formatBytes(bytes: number): string {
  for (const unit of ['Pi', 'Ti', 'Gi', 'Mi', 'Ki'] as const) {
    const factor = binary[unit] as number;
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return String(bytes);
}
