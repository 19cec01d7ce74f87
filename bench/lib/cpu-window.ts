/**
 * A measurement window over machine CPU: how much CPU the processes under test used, how much
 * every core was busy, and how much *foreign* CPU (anything that is not ours) ran meanwhile.
 *
 * Foreign CPU = machine busy ticks - ticks of our processes (the targets' trees, the upstream's
 * tree, and this runner including its reaped children: the load generators). Another engineer
 * running a test suite on the machine shows up here; rounds above a threshold are contaminated
 * and dropped by the caller. The per-process breakdown (`topForeign`) only explains the figure.
 */
import { allProcStats, CLK_TCK, readCpuTicks, selfTicks, treePids, type CpuTicks, type ProcStat } from './proc.js';

export interface ForeignProcess {
  pid: number;
  comm: string;
  /** Percent of one core over the window. */
  pctCore: number;
}

export interface CpuWindowResult {
  wallS: number;
  /** Ticks per watched root PID (its whole tree). */
  ticksByPid: Map<number, number>;
  /** Ticks of this runner and its reaped children (wrk, h2load). */
  runnerTicks: number;
  /** Foreign CPU in percent of one core (can be slightly negative from tick rounding). */
  foreignPctCore: number;
  /** Steal in percent of one core. */
  stealPctCore: number;
  /** Busy percent per core. */
  corePct: number[];
  /** Up to three busiest processes that are not ours (own CPU; short-lived ones may be missed). */
  topForeign: ForeignProcess[];
}

function procTicks(st: ProcStat): number {
  return st.ownTicks + st.childTicks;
}

export class CpuWindow {
  private readonly t0: bigint;
  private readonly cpu0: CpuTicks;
  private readonly self0: number;
  private readonly procs0: Map<number, ProcStat>;
  private readonly roots: readonly number[];

  /** Opens a window now; `roots` are the PIDs (trees) of the processes we run. */
  constructor(roots: readonly number[]) {
    this.roots = roots;
    this.procs0 = allProcStats();
    this.self0 = selfTicks();
    this.cpu0 = readCpuTicks();
    this.t0 = process.hrtime.bigint();
  }

  close(): CpuWindowResult {
    const cpu1 = readCpuTicks();
    const self1 = selfTicks();
    const procs1 = allProcStats();
    const wallS = Number(process.hrtime.bigint() - this.t0) / 1e9;

    const ours = new Set<number>([process.pid]);
    const ticksByPid = new Map<number, number>();
    let ourTicks = self1 - this.self0;
    for (const root of this.roots) {
      // The union of the tree at both ends: nginx may have respawned a worker, say.
      const pids = new Set([...treePids(root, this.procs0), ...treePids(root, procs1)]);
      let sum = 0;
      for (const p of pids) {
        ours.add(p);
        const a = this.procs0.get(p);
        const b = procs1.get(p);
        if (b !== undefined) sum += procTicks(b) - (a === undefined ? 0 : procTicks(a));
      }
      ticksByPid.set(root, sum);
      ourTicks += sum;
    }

    const cores = cpu1.perCore.map((b, i) => ((b - (this.cpu0.perCore[i] ?? 0)) / CLK_TCK / wallS) * 100);
    const foreignTicks = cpu1.busy - this.cpu0.busy - ourTicks;
    // Own ticks only: a parent's cutime jumps by a child's whole lifetime when it reaps it,
    // which would blame (say) an idle shell for 800% of a core.
    const topForeign: ForeignProcess[] = [];
    for (const [pid, b] of procs1) {
      if (ours.has(pid)) continue;
      const a = this.procs0.get(pid);
      const d = b.ownTicks - (a === undefined ? 0 : a.ownTicks);
      if (d > 0) topForeign.push({ pid, comm: b.comm, pctCore: (d / CLK_TCK / wallS) * 100 });
    }
    topForeign.sort((x, y) => y.pctCore - x.pctCore);

    return {
      wallS,
      ticksByPid,
      runnerTicks: self1 - this.self0,
      foreignPctCore: (foreignTicks / CLK_TCK / wallS) * 100,
      stealPctCore: ((cpu1.steal - this.cpu0.steal) / CLK_TCK / wallS) * 100,
      corePct: cores,
      topForeign: topForeign.slice(0, 3),
    };
  }
}
