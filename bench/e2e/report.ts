/**
 * Medians over rounds, and the markdown report of a BenchResult: the figures per target, each
 * figure as a ratio to direct and to nginx, and notes (skips, contaminated rounds, machine).
 */
import { fmt, fmtRatio, median, ratio } from '../lib/stats.js';
import type { BenchResult, Metrics, RoundRecord, ScenarioName, ScenarioResult, TargetResult } from './result.js';

/** Median per metric over clean, valid rounds (or over valid rounds if none is clean). */
export function summarize(rounds: RoundRecord[]): ScenarioResult {
  const valid = rounds.filter((r) => r.invalid === null);
  const clean = valid.filter((r) => !r.contaminated);
  const use = clean.length > 0 ? clean : valid;
  const keys = new Set<string>();
  for (const r of use) for (const k of Object.keys(r.metrics)) keys.add(k);
  const med: Metrics = {};
  for (const k of keys) med[k] = median(use.map((r) => r.metrics[k] ?? null));
  return { skipped: null, rounds, median: med, cleanRounds: clean.length, medianOfContaminated: clean.length === 0 && valid.length > 0 };
}

export interface Figure {
  /** Stable key (compare.ts matches on it). */
  key: string;
  label: string;
  /** Where the value comes from: a scenario's median metric, or the RSS after the runs. */
  source: { scenario: ScenarioName; metric: string } | 'rss';
  decimals: number;
  /** Whether larger is better (for the sign of a change). */
  higherIsBetter: boolean;
  /** Shown in the ratio tables (not for context figures such as a core's busy %). */
  inRatios: boolean;
}

function fig(key: string, label: string, scenario: ScenarioName, metric: string, decimals: number, higherIsBetter: boolean): Figure {
  return { key, label, source: { scenario, metric }, decimals, higherIsBetter, inRatios: true };
}

export const FIGURES: readonly Figure[] = [
  fig('get.rps', 'HTTP/1.1 GET, wrk 50 conns, req/s', 'get', 'rps', 0, true),
  fig('get.p50', 'GET at 50 conns, p50 µs', 'get', 'p50Us', 0, false),
  fig('get.p99', 'GET at 50 conns, p99 µs', 'get', 'p99Us', 0, false),
  fig('get.cpu', 'proxy CPU per GET, µs', 'get', 'cpuUsPerReq', 1, false),
  { ...fig('get.loadcore', 'GET: load core (wrk + upstream) busy, %', 'get', 'loadCorePct', 0, false), inRatios: false },
  fig('latency.p50', '1 connection, sequential, p50 µs', 'latency', 'p50Us', 0, false),
  fig('latency.p99', '1 connection, sequential, p99 µs', 'latency', 'p99Us', 0, false),
  fig('post.mibs', '1 MiB POST, wrk 10 conns, MiB/s', 'post', 'mibPerS', 0, true),
  fig('post.cpu', 'proxy CPU per POSTed MiB, µs', 'post', 'cpuUsPerMiB', 0, false),
  fig('h2.rps', 'HTTP/2 in, h2load -c10 -m10, req/s', 'h2', 'rps', 0, true),
  fig('h2.cpu', 'proxy CPU per HTTP/2 request, µs', 'h2', 'cpuUsPerReq', 1, false),
  { key: 'rss', label: 'RSS after the runs, MiB', source: 'rss', decimals: 1, higherIsBetter: false, inRatios: true },
];

export function figureValue(t: TargetResult | undefined, f: Figure): number | null {
  if (t === undefined || t.skipped !== null) return null;
  if (f.source === 'rss') return t.rssMiB;
  const sc = t.scenarios[f.source.scenario];
  if (sc === undefined || sc.skipped !== null) return null;
  return sc.median[f.source.metric] ?? null;
}

/** Whether the figure's median comes from contaminated rounds only. */
export function figureContaminated(t: TargetResult | undefined, f: Figure): boolean {
  if (t === undefined || f.source === 'rss') return false;
  return t.scenarios[f.source.scenario]?.medianOfContaminated === true;
}

/** `*` marks a median taken from contaminated rounds only. */
export function cell(t: TargetResult | undefined, f: Figure): string {
  const v = figureValue(t, f);
  return fmt(v, f.decimals) + (v !== null && figureContaminated(t, f) ? '*' : '');
}

function table(header: string[], rows: string[][]): string {
  const align = header.map((_h, i) => (i === 0 ? '---' : '---:'));
  return [header, align, ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

export function markdown(res: BenchResult): string {
  const targets = res.targets.filter((t) => t.skipped === null);
  const byName = new Map(res.targets.map((t) => [t.name, t]));
  const head = ['', ...targets.map((t) => t.label)];
  const out: string[] = [];
  const s = res.settings;
  out.push(`## Skiff e2e bench, ${res.date} (${res.git.sha}${res.git.dirty ? ', uncommitted changes' : ''})`);
  out.push('');
  out.push(
    `${res.machine.cores} × ${res.machine.cpuModel}, ${res.machine.kernel}, node ${res.machine.node}. ` +
      `Proxy on core ${s.proxyCore}; upstream nginx and load generator on core ${s.loadCore}. ` +
      `${s.rounds} round(s) of ${s.durationS} s per figure, interleaved; medians of clean rounds` +
      `${s.quick ? ' (quick mode: indicative only)' : ''}.`,
  );
  out.push('');
  out.push(table(head, FIGURES.map((f) => [f.label, ...targets.map((t) => cell(t, f))])));
  for (const base of ['direct', 'nginx']) {
    const b = byName.get(base);
    if (b === undefined || b.skipped !== null) continue;
    out.push('');
    out.push(`Ratio to ${base} (same run):`);
    out.push('');
    const rows = FIGURES.filter((f) => f.inRatios && figureValue(b, f) !== null).map((f) => [
      f.label,
      ...targets.map((t) => fmtRatio(ratio(figureValue(t, f), figureValue(b, f)))),
    ]);
    out.push(table(head, rows));
  }
  const notes = [...res.notes];
  for (const t of res.targets) {
    if (t.skipped !== null) {
      notes.push(`${t.label}: skipped: ${t.skipped}`);
      continue;
    }
    for (const [name, sc] of Object.entries(t.scenarios)) {
      if (sc.skipped !== null) notes.push(`${t.label} ${name}: skipped: ${sc.skipped}`);
      const dropped = sc.rounds.filter((r) => r.contaminated || r.invalid !== null);
      for (const r of dropped) {
        const why = r.invalid ?? `foreign CPU ${r.foreignPctCore}% of a core, steal ${r.stealPctCore}%`;
        notes.push(`${t.label} ${name} round ${r.round}${r.attempt > 0 ? ` retry ${r.attempt}` : ''}: dropped (${why})`);
      }
      if (sc.medianOfContaminated) notes.push(`${t.label} ${name}: no clean round; the median (marked *) is of contaminated rounds`);
    }
  }
  out.push('');
  out.push('"direct" is wrk/h2load straight at the upstream (no proxy): its CPU and RSS are not measured.');
  out.push('Single-connection latency runs the client on the proxy\'s core (for direct on that core too), see bench/README.md.');
  if (notes.length > 0) {
    out.push('');
    out.push('Notes:');
    out.push('');
    for (const n of notes) out.push(`- ${n}`);
  }
  out.push('');
  out.push(`Tools: ${Object.entries(res.tools).map(([k, v]) => `${k} ${v ?? 'missing'}`).join('; ')}`);
  return out.join('\n') + '\n';
}
