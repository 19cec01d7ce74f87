/**
 * Readers for Linux /proc: per-process CPU ticks and RSS, machine-wide CPU ticks.
 *
 * Contract and pitfalls:
 * - CPU times are in clock ticks (USER_HZ, 100 per second on Debian): 10 ms resolution, so a
 *   measurement window must be seconds long for per-request figures to be meaningful.
 * - A process's time includes its *reaped* children's time only in cutime/cstime (fields 16,
 *   17). The rig's own load generators (wrk, h2load) are children of the runner, so their CPU
 *   shows up in the runner's cutime/cstime once they exited and were waited for.
 * - nginx (master + worker) is a process tree: `treeTicks` and `treeRssKiB` sum over the PID
 *   and all its descendants. RSS summed this way counts shared pages (the binary, libc) once
 *   per process, so it overstates a multi-process server slightly.
 * - This kernel has no IRQ time accounting (CONFIG_IRQ_TIME_ACCOUNTING unset): a softirq tick
 *   that lands while a task runs is charged to that task's stime *and* to the softirq column of
 *   /proc/stat, so "busy" below includes irq and softirq to match what the tasks were charged.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second (USER_HZ). 100 on every Debian/x86 kernel; see `getconf CLK_TCK`. */
export const CLK_TCK = 100;

export interface ProcStat {
  pid: number;
  comm: string;
  ppid: number;
  /** utime + stime, in ticks. */
  ownTicks: number;
  /** cutime + cstime (reaped children), in ticks. */
  childTicks: number;
}

/** /proc/PID/stat, or undefined when the process is gone (or unreadable). */
export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // comm is in parentheses and may itself contain spaces or parentheses: split after the last ')'.
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < 0) return undefined;
  const rest = text.slice(close + 2).split(' ');
  // rest[0] is field 3 (state); field N is rest[N - 3].
  const num = (field: number): number => Number(rest[field - 3]);
  return {
    pid,
    comm: text.slice(open + 1, close),
    ppid: num(4),
    ownTicks: num(14) + num(15),
    childTicks: num(16) + num(17),
  };
}

/** Every numeric entry of /proc, read once (a snapshot; processes may vanish meanwhile). */
export function allProcStats(): Map<number, ProcStat> {
  const out = new Map<number, ProcStat>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    const st = readProcStat(pid);
    if (st !== undefined) out.set(pid, st);
  }
  return out;
}

/** pid and all its descendants, from a snapshot of /proc. */
export function treePids(pid: number, snapshot: Map<number, ProcStat> = allProcStats()): number[] {
  const children = new Map<number, number[]>();
  for (const st of snapshot.values()) {
    const list = children.get(st.ppid);
    if (list === undefined) children.set(st.ppid, [st.pid]);
    else list.push(st.pid);
  }
  const out: number[] = [];
  const stack = [pid];
  while (stack.length > 0) {
    const p = stack.pop() as number;
    if (!snapshot.has(p)) continue;
    out.push(p);
    for (const c of children.get(p) ?? []) stack.push(c);
  }
  return out;
}

/** CPU ticks (own + reaped children) of pid and its descendants. */
export function treeTicks(pid: number, snapshot: Map<number, ProcStat> = allProcStats()): number {
  let sum = 0;
  for (const p of treePids(pid, snapshot)) {
    const st = snapshot.get(p);
    if (st !== undefined) sum += st.ownTicks + st.childTicks;
  }
  return sum;
}

/** VmRSS of one process in KiB, or null when gone. */
export function rssKiB(pid: number): number | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    return null;
  }
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(text);
  return m === null ? null : Number(m[1]);
}

/** Summed VmRSS of pid and its descendants in KiB, or null when pid is gone. */
export function treeRssKiB(pid: number): number | null {
  const pids = treePids(pid);
  if (pids.length === 0) return null;
  let sum = 0;
  for (const p of pids) sum += rssKiB(p) ?? 0;
  return sum;
}

export interface CpuTicks {
  /** user + nice + system + irq + softirq (what tasks get charged for; see the header). */
  busy: number;
  /** steal: time the hypervisor ran something else while this VM wanted the CPU. */
  steal: number;
  /** Busy ticks per core, index = core number. */
  perCore: number[];
}

/** Machine-wide CPU ticks from the cpu lines of /proc/stat. */
export function readCpuTicks(): CpuTicks {
  const text = readFileSync('/proc/stat', 'latin1');
  let busy = 0;
  let steal = 0;
  const perCore: number[] = [];
  for (const line of text.split('\n')) {
    const m = /^cpu(\d*)\s+(.*)$/.exec(line);
    if (m === null) continue;
    // user nice system idle iowait irq softirq steal guest guest_nice
    const f = m[2].trim().split(/\s+/).map(Number);
    const b = f[0] + f[1] + f[2] + f[5] + f[6];
    if (m[1] === '') {
      busy = b;
      steal = f[7] ?? 0;
    } else {
      perCore[Number(m[1])] = b;
    }
  }
  return { busy, steal, perCore };
}

/** This process's own ticks plus its reaped children's (the load generators it ran). */
export function selfTicks(): number {
  const st = readProcStat(process.pid);
  return st === undefined ? 0 : st.ownTicks + st.childTicks;
}
