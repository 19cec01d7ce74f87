// Reads a Prometheus text exposition (an admin /metrics endpoint) for tests.
//
// The sample lines are parsed by parse-prometheus-text-format (label escapes, special values),
// which ships no types: it is loaded with createRequire and given a local interface. Its own
// grouping is NOT used for histograms and summaries: version 1.1.1 folds every labelled
// histogram family into one entry (the buckets of all series overwrite each other, labelled
// _sum/_count are dropped). So the TYPE lines are read here and removed before parsing, every
// sample comes back as a plain sample, and the families are rebuilt from the TYPE lines.
//
// A family's samples keep their own names: a histogram `x` has samples `x_bucket` (with an
// `le` label), `x_sum` and `x_count`; a counter `y_total` has samples `y_total`.
import { createRequire } from 'node:module';

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  /** The sample's own name (`x_bucket`, `x_sum`, `x_count` for histogram `x`). */
  name: string;
  labels: Record<string, string>;
  /** +Inf / -Inf / NaN as the numbers. */
  value: number;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: MetricType;
  samples: Sample[];
}

/** parse-prometheus-text-format's output, for the untyped families it is given here. */
interface ParsedFamily {
  name: string;
  help: string;
  type: string;
  metrics: { value?: string; labels?: Record<string, string> }[];
}

type ParseFn = (text: string) => ParsedFamily[];

const parseText = createRequire(import.meta.url)('parse-prometheus-text-format') as unknown as ParseFn;

const TYPES: readonly MetricType[] = ['counter', 'gauge', 'histogram', 'summary', 'untyped'];

function toNumber(s: string | undefined): number {
  switch (s) {
    case undefined:
      return Number.NaN;
    case '+Inf':
    case 'Inf':
      return Number.POSITIVE_INFINITY;
    case '-Inf':
      return Number.NEGATIVE_INFINITY;
    default:
      return Number(s);
  }
}

/** Parses a text exposition into families (in order of first appearance). */
export function parseMetrics(text: string): MetricFamily[] {
  const types = new Map<string, MetricType>();
  const helps = new Map<string, string>();
  const kept: string[] = [];
  for (const line of text.split('\n')) {
    const t = /^#\s+TYPE\s+(\S+)\s+(\S+)\s*$/.exec(line);
    if (t !== null) {
      const type = t[2].toLowerCase() as MetricType;
      types.set(t[1], TYPES.includes(type) ? type : 'untyped');
      continue;
    }
    const h = /^#\s+HELP\s+(\S+)\s?(.*)$/.exec(line);
    if (h !== null) helps.set(h[1], h[2].replace(/\\n/g, '\n').replace(/\\\\/g, '\\'));
    kept.push(line);
  }
  // The parser drops the last sample of input that does not end with a newline.
  const parsed = parseText(kept.join('\n') + '\n');

  const families = new Map<string, MetricFamily>();
  const familyOf = (sampleName: string): string => {
    if (types.has(sampleName)) return sampleName;
    for (const suffix of ['_bucket', '_sum', '_count', '_created']) {
      if (!sampleName.endsWith(suffix)) continue;
      const base = sampleName.slice(0, -suffix.length);
      const type = types.get(base);
      if (type === 'histogram' || type === 'summary' || (suffix === '_created' && type === 'counter')) return base;
    }
    return sampleName;
  };
  for (const pf of parsed) {
    const fname = familyOf(pf.name);
    let family = families.get(fname);
    if (family === undefined) {
      family = { name: fname, help: helps.get(fname) ?? '', type: types.get(fname) ?? 'untyped', samples: [] };
      families.set(fname, family);
    }
    for (const m of pf.metrics) family.samples.push({ name: pf.name, labels: { ...(m.labels ?? {}) }, value: toNumber(m.value) });
  }
  return [...families.values()];
}

/** GETs `url` (e.g. `http://127.0.0.1:15000/metrics`) and parses it. Throws unless 200. */
export async function scrapeMetrics(url: string): Promise<MetricFamily[]> {
  const res = await fetch(url, { headers: { accept: 'text/plain;version=0.0.4' } });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`scrape ${url}: HTTP ${res.status}: ${text.slice(0, 200)}`);
  return parseMetrics(text);
}

function samplesNamed(families: readonly MetricFamily[], name: string): Sample[] {
  const out: Sample[] = [];
  for (const f of families) for (const s of f.samples) if (s.name === name) out.push(s);
  return out;
}

function hasLabels(s: Sample, filter: Record<string, string>): boolean {
  for (const k of Object.keys(filter)) if (s.labels[k] !== filter[k]) return false;
  return true;
}

function sameLabels(s: Sample, labels: Record<string, string>): boolean {
  const keys = Object.keys(s.labels);
  return keys.length === Object.keys(labels).length && hasLabels(s, labels);
}

/**
 * The value of sample `name` (`istio_requests_total`, `x_count`, `x_bucket` with an `le`
 * label, ...) for one series: the series whose label set is exactly `labels`, else the only
 * series whose labels include `labels`; undefined when none. Throws when `labels` matches
 * several series and none exactly (say more labels, or use sumSamples).
 */
export function sampleValue(families: readonly MetricFamily[], name: string, labels: Record<string, string> = {}): number | undefined {
  const all = samplesNamed(families, name);
  const exact = all.find((s) => sameLabels(s, labels));
  if (exact !== undefined) return exact.value;
  const matching = all.filter((s) => hasLabels(s, labels));
  if (matching.length > 1) throw new Error(`sampleValue(${name}, ${JSON.stringify(labels)}): ${matching.length} series match; give more labels or use sumSamples`);
  return matching.length === 1 ? matching[0].value : undefined;
}

/** Sum of sample `name` over every series whose labels include `labelFilter` (0 when none):
 * counters, histogram `_count` / `_sum`, or `_bucket` with an `le` in the filter. */
export function sumSamples(families: readonly MetricFamily[], name: string, labelFilter: Record<string, string> = {}): number {
  let sum = 0;
  for (const s of samplesNamed(families, name)) if (hasLabels(s, labelFilter)) sum += s.value;
  return sum;
}

/** The family called `name` (without sample suffixes), or undefined. */
export function findFamily(families: readonly MetricFamily[], name: string): MetricFamily | undefined {
  return families.find((f) => f.name === name);
}
