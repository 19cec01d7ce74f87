/**
 * Growth per hour for the soak: an ordinary least-squares line through the samples taken after
 * the warm-up, with the slope's standard error, so a short run says how sure it is.
 */

export interface Growth {
  /** Samples used (after the warm-up). */
  readonly n: number;
  /** Slope in units per hour. */
  readonly slopePerHour: number;
  /** 95% half-width of the slope (t-distribution), units per hour; null below 3 samples. */
  readonly slopeCi95PerHour: number | null;
  /** The fitted value at the first sample used (the reference for the percentage). */
  readonly fittedStart: number;
  /** slopePerHour as a percentage of fittedStart. */
  readonly percentPerHour: number;
  readonly percentCi95PerHour: number | null;
  readonly r2: number;
  readonly min: number;
  readonly max: number;
}

/** Two-sided 95% Student t critical values for df 1..30; above that ~1.96-2.04. */
const T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042];

function t95(df: number): number {
  if (df <= 0) return Number.NaN;
  if (df <= T95.length) return T95[df - 1];
  return df < 60 ? 2.0 : 1.98;
}

/** `ts` in seconds, `ys` in any unit; null with fewer than 2 points. */
export function growth(ts: readonly number[], ys: readonly number[]): Growth | null {
  const n = Math.min(ts.length, ys.length);
  if (n < 2) return null;
  const hours = ts.slice(0, n).map((t) => t / 3600);
  const y = ys.slice(0, n);
  const mx = hours.reduce((a, b) => a + b, 0) / n;
  const my = y.reduce((a, b) => a + b, 0) / n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = hours[i] - mx;
    const dy = y[i] - my;
    sxx += dx * dx;
    sxy += dx * dy;
    syy += dy * dy;
  }
  if (sxx === 0) return null;
  const slope = sxy / sxx;
  const intercept = my - slope * mx;
  let sse = 0;
  for (let i = 0; i < n; i++) {
    const e = y[i] - (intercept + slope * hours[i]);
    sse += e * e;
  }
  const ci = n >= 3 ? t95(n - 2) * Math.sqrt(sse / (n - 2) / sxx) : null;
  const fittedStart = intercept + slope * hours[0];
  const pct = (v: number): number => (fittedStart > 0 ? (v / fittedStart) * 100 : Number.NaN);
  return {
    n,
    slopePerHour: slope,
    slopeCi95PerHour: ci,
    fittedStart,
    percentPerHour: pct(slope),
    percentCi95PerHour: ci === null ? null : pct(ci),
    r2: syy > 0 ? (sxy * sxy) / (sxx * syy) : 0,
    min: Math.min(...y),
    max: Math.max(...y),
  };
}
