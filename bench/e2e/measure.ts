/**
 * One measurement: a CPU window around one load run, turned into a RoundRecord, with the
 * contamination and validity verdicts; plus the retry loop for contaminated rounds.
 */
import { CLK_TCK } from '../lib/proc.js';
import { CpuWindow } from '../lib/cpu-window.js';
import { sleep } from '../lib/spawn.js';
import { LOAD_CORE, PROXY_CORE, type RunningTarget } from './layout.js';
import type { RoundRecord } from './result.js';
import type { Scenario } from './scenarios.js';

export interface MeasureContext {
  root: string;
  durationS: number;
  /** PIDs of every process the rig runs (targets and upstream): not foreign. */
  ourPids: readonly number[];
  foreignLimitPctCore: number;
  /** Errors + non-2xx above this fraction of requests make a round invalid. */
  maxErrorFraction: number;
  /** Before each attempt, wait at most this long for foreign CPU to drop under the limit. */
  quietWaitMs: number;
  /**
   * Epoch ms after which the run stops waiting for quiet and stops retrying (it measures each
   * round once and keeps the verdict): bounds the whole run on a machine that never gets quiet.
   */
  patienceDeadline: number;
}

/**
 * Samples foreign CPU in 1 s windows until one is under the limit, or maxWaitMs passed
 * (then the measurement goes ahead and its own window decides). Bounded; returns ms waited.
 */
export async function waitQuiet(ctx: MeasureContext, log: (line: string) => void): Promise<number> {
  const t0 = Date.now();
  if (t0 >= ctx.patienceDeadline) return 0;
  let said = false;
  for (;;) {
    const win = new CpuWindow(ctx.ourPids);
    await sleep(1000);
    const r = win.close();
    if (r.foreignPctCore <= ctx.foreignLimitPctCore && r.stealPctCore <= ctx.foreignLimitPctCore) return Date.now() - t0;
    if (Date.now() - t0 >= ctx.quietWaitMs || Date.now() >= ctx.patienceDeadline) {
      log(`  machine still busy after ${Math.round((Date.now() - t0) / 1000)} s (foreign ${r.foreignPctCore.toFixed(0)}%); measuring anyway`);
      return Date.now() - t0;
    }
    if (!said) {
      const who = r.topForeign.map((f) => `${f.comm}[${f.pid}] ${f.pctCore.toFixed(0)}%`).join(', ');
      log(`  waiting for foreign CPU to settle (${r.foreignPctCore.toFixed(0)}% of a core${who === '' ? '' : `: ${who}`})`);
      said = true;
    }
  }
}

export async function measureOnce(sc: Scenario, t: RunningTarget, ctx: MeasureContext, round: number, attempt: number): Promise<RoundRecord> {
  const win = new CpuWindow(ctx.ourPids);
  const load = await sc.run(t, ctx.durationS, ctx.root);
  const cpu = win.close();
  const proxyTicks = t.server === null ? null : (cpu.ticksByPid.get(t.server.pid) ?? 0);
  const bad = load.errors + load.non2xx;
  let invalid: string | null = null;
  if (load.requests === 0) invalid = 'no request completed';
  else if (bad > load.requests * ctx.maxErrorFraction) invalid = `${load.errors} errors and ${load.non2xx} non-2xx of ${load.requests}`;
  return {
    round,
    attempt,
    metrics: { ...sc.metrics(load, proxyTicks), loadCorePct: cpu.corePct[LOAD_CORE] ?? null, proxyCorePct: cpu.corePct[PROXY_CORE] ?? null },
    requests: load.requests,
    durationS: load.durationS,
    errors: load.errors,
    non2xx: load.non2xx,
    proxyCpuPctCore: proxyTicks === null ? null : (proxyTicks / CLK_TCK / cpu.wallS) * 100,
    corePct: cpu.corePct.map((p) => Math.round(p * 10) / 10),
    foreignPctCore: Math.round(cpu.foreignPctCore * 10) / 10,
    stealPctCore: Math.round(cpu.stealPctCore * 10) / 10,
    topForeign: cpu.topForeign.map((f) => ({ ...f, pctCore: Math.round(f.pctCore * 10) / 10 })),
    contaminated: cpu.foreignPctCore > ctx.foreignLimitPctCore || cpu.stealPctCore > ctx.foreignLimitPctCore,
    invalid,
  };
}

/**
 * Measures until a round is clean or `maxRetries` retries were spent (each after waiting for
 * quiet, so a burst of foreign load can pass). Returns every attempt; the caller keeps them all.
 */
export async function measureRound(
  sc: Scenario,
  t: RunningTarget,
  ctx: MeasureContext,
  round: number,
  maxRetries: number,
  log: (line: string) => void,
): Promise<RoundRecord[]> {
  const out: RoundRecord[] = [];
  for (let attempt = 0; attempt <= maxRetries; attempt++) {
    await waitQuiet(ctx, log);
    const rec = await measureOnce(sc, t, ctx, round, attempt);
    out.push(rec);
    log(describe(sc.name, t.name, rec));
    if (!rec.contaminated) break;
    if (Date.now() >= ctx.patienceDeadline) {
      log('  patience budget spent: no more retries in this run');
      break;
    }
  }
  return out;
}

function describe(scenario: string, target: string, r: RoundRecord): string {
  const figs = Object.entries(r.metrics)
    .filter(([k, v]) => v !== null && k !== 'loadCorePct' && k !== 'proxyCorePct')
    .map(([k, v]) => `${k}=${(v as number) >= 100 ? Math.round(v as number) : (v as number).toFixed(1)}`)
    .join(' ');
  const cores = r.corePct.map((p, i) => `c${i}=${Math.round(p)}%`).join(' ');
  let flags = '';
  if (r.contaminated) {
    const who = r.topForeign.map((f) => `${f.comm}[${f.pid}] ${f.pctCore}%`).join(', ');
    flags += `  CONTAMINATED (foreign ${r.foreignPctCore}% of a core, steal ${r.stealPctCore}%${who === '' ? '' : `; ${who}`})`;
  }
  if (r.invalid !== null) flags += `  INVALID (${r.invalid})`;
  const tag = r.attempt > 0 ? ` retry ${r.attempt}` : '';
  return `  r${r.round}${tag} ${scenario.padEnd(7)} ${target.padEnd(11)} ${figs}  [${cores} foreign=${r.foreignPctCore}%]${flags}`;
}
