/**
 * Small statistics helpers for the bench rig. Pure functions, no I/O.
 */

/** Median of the finite values; null when there is none. Even counts average the two middles. */
export function median(values: readonly (number | null)[]): number | null {
  const xs = values.filter((v): v is number => v !== null && Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return null;
  const mid = xs.length >> 1;
  return xs.length % 2 === 1 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
}

/** a / b, or null when either is missing or b is 0. */
export function ratio(a: number | null, b: number | null): number | null {
  if (a === null || b === null || b === 0) return null;
  return a / b;
}

/** Percent change from a to b ((b - a) / a * 100), or null. */
export function changePct(a: number | null, b: number | null): number | null {
  if (a === null || b === null || a === 0) return null;
  return ((b - a) / a) * 100;
}

/**
 * Parses a wrk duration such as `52.00us`, `1.23ms`, `2.00s` or `1.00m` into microseconds.
 * Returns null for anything else.
 */
export function parseWrkDurationUs(text: string): number | null {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text.trim());
  if (m === null) return null;
  const n = Number(m[1]);
  if (!Number.isFinite(n)) return null;
  const unit: Record<string, number> = { us: 1, ms: 1e3, s: 1e6, m: 60e6, h: 3600e6 };
  return n * unit[m[2]];
}

/** Formats a number with thousands separators and a fixed number of decimals; `–` for null. */
export function fmt(value: number | null, decimals = 0): string {
  if (value === null || !Number.isFinite(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

/** Formats a ratio as `0.52x`; `–` for null. */
export function fmtRatio(value: number | null): string {
  if (value === null || !Number.isFinite(value)) return '–';
  return `${value.toFixed(2)}x`;
}
