/**
 * `npm run bench:compare A.json B.json`: per target and figure, the medians of run A and run
 * B and the change from A to B in percent. A change is marked `+` (better) or `-` (worse)
 * when it exceeds 5% in the figure's good or bad direction (more req/s is better, more µs or
 * MiB of RSS is worse). Targets or figures present in only one run are shown with `–`; a
 * median taken from contaminated rounds only carries a `*`.
 */
import { readFileSync } from 'node:fs';
import { cell, FIGURES, figureValue } from './e2e/report.js';
import { RESULT_SCHEMA, type BenchResult } from './e2e/result.js';
import { changePct } from './lib/stats.js';

const NOTABLE_PCT = 5;

function load(path: string): BenchResult {
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<BenchResult>;
  if (parsed.schema !== RESULT_SCHEMA || !Array.isArray(parsed.targets)) {
    throw new Error(`${path}: not a bench result of schema ${RESULT_SCHEMA}`);
  }
  return parsed as BenchResult;
}

function main(argv: string[]): number {
  if (argv.length !== 2) {
    process.stderr.write('usage: npm run bench:compare A.json B.json\n');
    return 2;
  }
  const [a, b] = argv.map(load);
  const out: string[] = [];
  out.push(`A: ${argv[0]} (${a.date}, ${a.git.sha}${a.git.dirty ? '+changes' : ''}${a.settings.quick ? ', quick' : ''})`);
  out.push(`B: ${argv[1]} (${b.date}, ${b.git.sha}${b.git.dirty ? '+changes' : ''}${b.settings.quick ? ', quick' : ''})`);
  out.push('');
  out.push('| target | figure | A | B | change |');
  out.push('|---|---|---:|---:|---:|');
  const names = [...new Set([...a.targets.map((t) => t.name), ...b.targets.map((t) => t.name)])];
  for (const name of names) {
    const ta = a.targets.find((t) => t.name === name);
    const tb = b.targets.find((t) => t.name === name);
    const label = (ta ?? tb)?.label ?? name;
    for (const f of FIGURES) {
      const va = figureValue(ta, f);
      const vb = figureValue(tb, f);
      if (va === null && vb === null) continue;
      const pct = changePct(va, vb);
      let mark = '';
      if (pct !== null && Math.abs(pct) >= NOTABLE_PCT) mark = (pct > 0) === f.higherIsBetter ? ' +' : ' -';
      const change = pct === null ? '–' : `${pct >= 0 ? '+' : ''}${pct.toFixed(1)}%${mark}`;
      out.push(`| ${label} | ${f.label} | ${cell(ta, f)} | ${cell(tb, f)} | ${change} |`);
    }
  }
  out.push('');
  out.push(`+ / -: better / worse by ${NOTABLE_PCT}% or more. * : median of contaminated rounds only.`);
  out.push('Medians only: check both runs\' rounds (and their foreign CPU) before trusting a small change.');
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`bench:compare: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
