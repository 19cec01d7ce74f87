/**
 * `npm run bench:micro [-- --rounds 3 --time 1000 --warmup-time 250 --filter text]`
 *
 * Micro benchmarks of the core's hot functions (bench/micro/cases.ts) with tinybench 6.
 *
 * Timing: tinybench times each call of a case's `run`, which performs `batch` operations (a
 * single operation is tens of nanoseconds, below what one timer read resolves). Reported per
 * operation: ops/s and ns/op from the mean, p99 from the 99th percentile of the per-batch
 * times divided by the batch size, i.e. the p99 of a 1000-operation average, not of single
 * operations (a GC pause inside a batch shows up there).
 *
 * Allocation: after timing, each case runs again (warm, after a forced GC) inside a GC
 * accounting window (v8.GCProfiler: bytes freed by every GC plus the heap delta, see
 * bench/lib/alloc-profile.ts) of about 200,000 operations; the window's fixed cost (an empty
 * window) is subtracted. Needs `--expose-gc` (the npm script passes it).
 *
 * Rounds: each round is a separate process (one process = one sample of the JIT's decisions,
 * which move a case by up to 2x between processes here); the table shows the median over
 * rounds and the spread of the round means.
 *
 * Foreign CPU: CPU used by other processes during the run, from /proc, so a contaminated run
 * can be spotted and repeated.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { fmt, gitState, numberFlag, parseFlags, table, writeResult } from '../lib/alloc-common.js';
import { accountAllocations } from '../lib/alloc-profile.js';
import { EMPTY_BATCH, buildCases, emptyRun, type MicroCase } from './cases.js';

const ALLOC_OPS = 200_000;

interface CaseResult {
  readonly name: string;
  readonly op: string;
  readonly batch: number;
  readonly opsPerSec: number;
  readonly nsPerOp: number;
  readonly p50NsPerOp: number;
  readonly p99NsPerOp: number;
  /** Relative margin of error of the mean, percent. */
  readonly rme: number;
  readonly samples: number;
  /** V8 heap bytes allocated per operation; null without --expose-gc. */
  readonly bytesPerOp: number | null;
}

/** Busy CPU ticks of the whole machine and of this process (USER_HZ ticks). */
function cpuTicks(): { machine: number; self: number } {
  // self includes waited-for children (cutime, cstime): the rounds run as child processes.
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3] + (fields[4] ?? 0);
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of /proc/pid/stat (utime, stime) are 12 and 13 after the command.
  return { machine: total - idle, self: Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]) };
}

const gc = (globalThis as { gc?: () => void }).gc;

function bytesPerOp(c: MicroCase, windowCost: number): number | null {
  if (gc === undefined) return null;
  const runs = Math.max(1, Math.round(ALLOC_OPS / c.batch));
  gc();
  const acc = accountAllocations(() => {
    for (let i = 0; i < runs; i++) c.run();
  });
  return Math.max(0, acc.heapBytes - windowCost) / (runs * c.batch);
}

/** Bytes an empty accounting window reports (its own fixed cost); the smallest of five. */
function emptyWindowCost(): number {
  if (gc === undefined) return 0;
  let min = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i++) {
    gc();
    min = Math.min(min, accountAllocations(() => emptyRun()).heapBytes);
  }
  return min;
}

/** One round in this process: times every case (in rotated order), then counts its allocations. */
async function runRound(time: number, warmupTime: number, filter: string, rotate: number): Promise<CaseResult[]> {
  const all = buildCases().filter((c) => filter === '' || c.name.toLowerCase().includes(filter.toLowerCase()));
  for (const c of all) c.check();
  const k = all.length === 0 ? 0 : rotate % all.length;
  const cases = [...all.slice(k), ...all.slice(0, k)];
  const bench = new Bench({ time, warmupTime, warmup: true, throws: true });
  for (const c of cases) bench.add(c.name, c.run);
  bench.add(`(empty loop of ${EMPTY_BATCH})`, emptyRun);
  await bench.run();
  const windowCost = emptyWindowCost();
  const results: CaseResult[] = [];
  for (const task of bench.tasks) {
    const c = cases.find((x) => x.name === task.name);
    const batch = c === undefined ? EMPTY_BATCH : c.batch;
    const r = task.result;
    if (r.state !== 'completed') throw new Error(`${task.name}: ${r.state}${r.state === 'errored' ? `: ${r.error.message}` : ''}`);
    const lat = r.latency;
    results.push({
      name: task.name,
      op: c === undefined ? 'one iteration' : c.op,
      batch,
      opsPerSec: (batch * 1000) / lat.mean,
      nsPerOp: (lat.mean * 1e6) / batch,
      p50NsPerOp: (lat.p50 * 1e6) / batch,
      p99NsPerOp: (lat.p99 * 1e6) / batch,
      rme: lat.rme,
      samples: lat.samplesCount,
      bytesPerOp: c === undefined ? null : bytesPerOp(c, windowCost),
    });
  }
  // Report in the cases' own order whatever the rotation.
  const order = [...all.map((c) => c.name), `(empty loop of ${EMPTY_BATCH})`];
  return results.sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

interface Summary {
  readonly name: string;
  readonly op: string;
  readonly batch: number;
  readonly opsPerSec: number;
  readonly nsPerOp: number;
  readonly nsPerOpMin: number;
  readonly nsPerOpMax: number;
  readonly p99NsPerOp: number;
  readonly bytesPerOp: number | null;
}

function summarize(rounds: readonly (readonly CaseResult[])[]): Summary[] {
  return rounds[0].map((first) => {
    const rs = rounds.map((round) => round.find((r) => r.name === first.name) as CaseResult);
    const ns = rs.map((r) => r.nsPerOp);
    const bytes = rs.map((r) => r.bytesPerOp).filter((b): b is number => b !== null);
    return {
      name: first.name,
      op: first.op,
      batch: first.batch,
      opsPerSec: median(rs.map((r) => r.opsPerSec)),
      nsPerOp: median(ns),
      nsPerOpMin: Math.min(...ns),
      nsPerOpMax: Math.max(...ns),
      p99NsPerOp: median(rs.map((r) => r.p99NsPerOp)),
      bytesPerOp: bytes.length === 0 ? null : median(bytes),
    };
  });
}

/**
 * Rounds run in separate processes: within one process a case's figure is stable (±1%), but
 * from one process to the next it moves by up to 2x on this machine (JIT decisions, code
 * placement), so one process is one sample. Each round rotates the case order.
 */
function spawnRound(args: readonly string[]): Promise<CaseResult[]> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (t: string) => (out += t));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10 * 60_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) {
        rej(new Error(`micro round exited with ${code}`));
        return;
      }
      try {
        res(JSON.parse(out) as CaseResult[]);
      } catch (err) {
        rej(new Error(`micro round printed no result: ${(err as Error).message}`));
      }
    });
  });
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  const time = numberFlag(flags, 'time', 1000);
  const warmupTime = numberFlag(flags, 'warmup-time', 250);
  const filter = flags.get('filter') ?? '';
  if (flags.has('round')) {
    // Child: one round, JSON on stdout.
    const results = await runRound(time, warmupTime, filter, numberFlag(flags, 'round', 1) - 1);
    process.stdout.write(JSON.stringify(results) + '\n');
    return;
  }
  const roundCount = numberFlag(flags, 'rounds', 3);
  const cpu0 = cpuTicks();
  const t0 = performance.now();
  const rounds: CaseResult[][] = [];
  for (let r = 1; r <= roundCount; r++) {
    process.stderr.write(`micro: round ${r}/${roundCount}\n`);
    rounds.push(await spawnRound(['--round', String(r), '--time', String(time), '--warmup-time', String(warmupTime), ...(filter === '' ? [] : ['--filter', filter])]));
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = cpuTicks();
  const foreignCores = Math.max(0, cpu1.machine - cpu0.machine - (cpu1.self - cpu0.self)) / 100 / seconds;
  const summary = summarize(rounds);

  console.log(
    `micro: Node ${process.version}, tinybench 6, ${time} ms per case, ${roundCount} rounds (separate processes), medians; foreign CPU during the run ${(foreignCores * 100).toFixed(0)}% of a core${foreignCores > 0.1 ? ' (contaminated: other processes were busy, consider a re-run)' : ''}\n`,
  );
  console.log(
    table(
      ['case', 'op', 'ops/s', 'ns/op', 'min-max ns/op', 'p99 ns/op*', 'B/op'],
      summary.map((r) => [
        r.name,
        r.op,
        fmt(r.opsPerSec),
        fmt(r.nsPerOp, 1),
        `${fmt(r.nsPerOpMin, 1)}-${fmt(r.nsPerOpMax, 1)}`,
        fmt(r.p99NsPerOp, 1),
        r.bytesPerOp === null ? '–' : fmt(r.bytesPerOp, 1),
      ]),
    ),
  );
  console.log(
    `\n* p99 of per-batch averages (batch = 1000 ops; 100 cycles for the paused-sink case), median over rounds. min-max: spread of the round means. B/op: V8 heap bytes by GC accounting over ~${fmt(ALLOC_OPS)} ops.`,
  );
  const file = writeResult('micro', {
    kind: 'skiff-micro',
    date: new Date().toISOString(),
    node: process.version,
    git: gitState(),
    tinybench: '6',
    timeMsPerCase: time,
    warmupTimeMs: warmupTime,
    rounds: roundCount,
    foreignCpuCores: foreignCores,
    allocationMethod: 'GC accounting (v8.GCProfiler: bytes freed per GC + heap delta), empty window subtracted',
    p99Note: 'p99 of per-batch averages divided by batch size; median over rounds',
    cases: summary,
    perRound: rounds,
  });
  console.log(`micro: wrote ${file}`);
}

main().catch((err: unknown) => {
  process.stderr.write(`micro: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
