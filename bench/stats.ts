// Small statistics helpers.

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function min(xs: number[]): number {
  return xs.length ? Math.min(...xs) : NaN;
}

export function max(xs: number[]): number {
  return xs.length ? Math.max(...xs) : NaN;
}

/** (max - min) / median, in percent: a quick noise figure for a handful of runs. */
export function spreadPercent(xs: number[]): number {
  const m = median(xs);
  return m > 0 ? (100 * (max(xs) - min(xs))) / m : NaN;
}

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : 'n/a';
}
