/**
 * `npm run soak [-- --minutes 10 --interval 10 --h1-rps 400 --h2-rps 200 --h3-rps 100
 *   --post-per-s 4 --post-bytes 262144 --warmup 120 --no-h3 --no-heap-probe --no-pin]`   (never in CI: it
 *   runs for minutes)
 *
 * Memory soak (issue 3, item 5; HTTP/3 since issue 7). The sidecar runs as a child process,
 * exactly as deployed (`node dist/src/cli.js --config <generated>`), under a steady fixed-rate
 * mix from another child (bench/lib/soak-load: HTTP/1.1 GETs, HTTP/2 GETs, streaming POST
 * bodies over both, HTTP/3 GETs on a TLS listener with the test certificates, to an HTTP/1.1
 * and an h2c upstream cluster). Every `--interval` seconds (10) it samples:
 * - RSS (VmRSS) and peak RSS (VmHWM) from /proc/<pid>/status, CPU time from /proc/<pid>/stat,
 *   and the CPU of other processes on the machine (to explain latency spikes);
 * - the admin /stats counters (arena live/free/misses, engine requests, pool connections);
 * - V8 heap figures: /stats has none, so by default the sidecar gets a preload
 *   (`--import dist/bench/lib/soak-heap-probe.js`) that answers `sample` on fd 3 with one JSON
 *   line; `gc-sample` forces a full GC first, used once at the end of the warm-up and once at
 *   the end to compare the live heap. `--no-heap-probe` runs the plain command line (RSS only).
 * Growth per hour: least-squares line through the samples after the warm-up (`--warmup`
 * seconds; default the first 20% of the run or 2 minutes, whichever is shorter), as a
 * percentage of the fitted value at the end of the warm-up, with a 95% interval. Target
 * (brief): below 1% per hour. Two 30-minute runs on 2026-11-26 had RSS still settling for
 * about 5 minutes (5-minute means 116.4 then 118.2-118.7 MiB), which is why docs/DESIGN.md
 * also reports runs with `--warmup 300`.
 * Output: a table of the samples, the growth figures, bench/results/soak-<date>.json.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import {
  REPO_ROOT,
  fmt,
  gitState,
  freePorts,
  hasCommand,
  libScript,
  type ReadyChild,
  numberFlag,
  parseFlags,
  sleep,
  spawnReady,
  stopChild,
  waitExit,
  writeResult,
} from './lib/alloc-common.js';
import { growth, type Growth } from './lib/soak-stats.js';
import { ensureCerts, type TestCerts } from '../test/helpers/certs.js';
import { freePort } from '../test/helpers/skiff.js';

interface HeapProbe {
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly oldSpaceUsed: number;
  readonly newSpaceUsed: number;
  readonly external: number;
  readonly arrayBuffers: number;
  readonly mallocedMemory: number;
}

interface StatsView {
  readonly arena: { readonly hits: number; readonly misses: number; readonly live: number; readonly free: number };
  readonly engine: { readonly inFlight: number; readonly requestsTotal: number };
  readonly pools: readonly { readonly cluster: string; readonly connections: number; readonly activeStreams: number; readonly pending: number }[];
}

interface Sample {
  /** Seconds since the load started. */
  readonly t: number;
  readonly rssBytes: number;
  readonly hwmBytes: number;
  /** Sidecar CPU seconds (user + system) since it started. */
  readonly cpuSeconds: number;
  /**
   * Busy CPU seconds of the whole machine minus the soak's own processes (sidecar, load
   * generator, upstream, this script) since the load started: other processes' CPU, which
   * explains latency spikes and makes a run with heavy neighbours recognizable.
   */
  readonly otherCpuSeconds: number;
  readonly requestsTotal: number | null;
  readonly arenaLive: number | null;
  readonly arenaFree: number | null;
  readonly arenaMisses: number | null;
  readonly upstreamConnections: number | null;
  readonly heap: HeapProbe | null;
}

/** A progress line of bench/lib/soak-load (every 10 s). */
interface LoadProgress {
  readonly t: number;
  readonly latencyMs?: Readonly<Record<'h1Get' | 'h2Get' | 'post', { readonly n: number; readonly p50: number; readonly p99: number }>> & {
    readonly h3Get?: { readonly n: number; readonly p50: number; readonly p99: number };
  };
  readonly [key: string]: unknown;
}

interface Options {
  readonly minutes: number;
  readonly interval: number;
  readonly h1Rps: number;
  readonly h2Rps: number;
  /** 0 with --no-h3. */
  readonly h3Rps: number;
  readonly postPerS: number;
  readonly postBytes: number;
  readonly heapProbe: boolean;
  readonly pin: boolean;
  /** Seconds before the growth fit starts; null: min(20% of the run, 120 s). */
  readonly warmupS: number | null;
}

function options(): Options {
  const f = parseFlags(process.argv.slice(2));
  return {
    minutes: numberFlag(f, 'minutes', 10),
    interval: numberFlag(f, 'interval', 10),
    h1Rps: numberFlag(f, 'h1-rps', 400),
    h2Rps: numberFlag(f, 'h2-rps', 200),
    h3Rps: f.get('no-h3') === undefined ? numberFlag(f, 'h3-rps', 100) : 0,
    postPerS: numberFlag(f, 'post-per-s', 4),
    postBytes: numberFlag(f, 'post-bytes', 256 * 1024),
    heapProbe: f.get('no-heap-probe') === undefined,
    pin: f.get('no-pin') === undefined,
    warmupS: f.get('warmup') === undefined ? null : numberFlag(f, 'warmup', 120),
  };
}

/** `h3Port` 0: no HTTP/3 listener. */
function configYaml(port: number, adminPort: number, h1Port: number, h2cPort: number, h3Port: number, certs: TestCerts | null): string {
  const h3 =
    h3Port === 0 || certs === null
      ? ''
      : `  - name: soak-h3
    address: 127.0.0.1:${h3Port}
    protocols: [http1, h2, h3]
    tls: { cert: ${certs.cert}, key: ${certs.key} }
    routes: soak
`;
  return `# generated by bench/soak.ts
admin:
  address: 127.0.0.1:${adminPort}
listeners:
  - name: soak
    address: 127.0.0.1:${port}
    protocols: [http1, h2c]
    routes: soak
${h3}routes:
  soak:
    - match: { prefix: /h2up }
      cluster: app-h2c
      timeout: 30s
    - match: { prefix: / }
      cluster: app
      timeout: 30s
clusters:
  - name: app
    protocol: http1
    endpoints: [127.0.0.1:${h1Port}]
  - name: app-h2c
    protocol: h2c
    endpoints: [127.0.0.1:${h2cPort}]
`;
}

// ---- /proc and /stats ---------------------------------------------------------------------

function procStatus(pid: number): { rss: number; hwm: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return m === null ? 0 : Number(m[1]) * 1024;
  };
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

function procCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return 0; // gone
  }
}

/** Busy CPU seconds of the whole machine (all cores) from /proc/stat. */
function machineBusySeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return (f.reduce((a, b) => a + b, 0) - f[3] - (f[4] ?? 0)) / 100;
}

function getText(port: number, path: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (c: string) => (body += c));
      r.on('end', () => res({ status: r.statusCode ?? 0, body }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.on('error', rej);
  });
}

async function stats(adminPort: number): Promise<StatsView | null> {
  try {
    const r = await getText(adminPort, '/stats', 2000);
    return r.status === 200 ? (JSON.parse(r.body) as StatsView) : null;
  } catch {
    return null;
  }
}

async function waitReady(adminPort: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if ((await getText(adminPort, '/ready', 1000)).status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`sidecar not ready within ${timeoutMs} ms`);
}

/** The soak's end of the heap probe's channel (fd 3): one command line out, one JSON line back. */
class Probe {
  private buf: string;
  private waiter: ((line: string) => void) | null;
  private readonly stream: Duplex;

  constructor(stream: Duplex) {
    this.buf = '';
    this.waiter = null;
    this.stream = stream;
    stream.setEncoding('utf8');
    stream.on('error', () => undefined);
    stream.on('data', (text: string) => {
      this.buf += text;
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiter;
        this.waiter = null;
        if (w !== null) w(line); // a late answer to a timed-out question is dropped
      }
    });
  }

  /** `sample` or `gc-sample`; null when no answer came within `timeoutMs`. */
  async ask(command: 'sample' | 'gc-sample', timeoutMs: number): Promise<HeapProbe | null> {
    const answer = new Promise<string>((res) => (this.waiter = res));
    this.stream.write(command + '\n');
    const line = await Promise.race([answer, sleep(timeoutMs).then(() => null)]);
    this.waiter = null;
    return line === null ? null : (JSON.parse(line) as HeapProbe);
  }
}

// ---- main ---------------------------------------------------------------------------------

function mib(b: number): string {
  return (b / (1024 * 1024)).toFixed(1);
}

function p99Text(p: LoadProgress | null): string {
  const l = p === null ? undefined : p.latencyMs;
  if (l === undefined) return '–';
  return `${l.h1Get.p99.toFixed(1)}/${l.h2Get.p99.toFixed(1)}/${l.h3Get === undefined ? '–' : l.h3Get.p99.toFixed(1)}/${l.post.p99.toFixed(0)}`;
}

function growthLine(label: string, g: Growth | null): string {
  if (g === null) return `${label}: not enough samples after the warm-up`;
  const ci = g.percentCi95PerHour === null ? '' : ` ± ${g.percentCi95PerHour.toFixed(2)}`;
  return `${label}: ${g.percentPerHour >= 0 ? '+' : ''}${g.percentPerHour.toFixed(2)}${ci} %/h (${g.slopePerHour >= 0 ? '+' : ''}${mib(g.slopePerHour)} MiB/h from ${mib(g.fittedStart)} MiB; n=${g.n}, R²=${g.r2.toFixed(2)}, range ${mib(g.min)}-${mib(g.max)} MiB)`;
}

async function main(): Promise<void> {
  const o = options();
  const durationS = o.minutes * 60;
  const warmupS = o.warmupS ?? Math.min(0.2 * durationS, 120);
  if (warmupS >= durationS) throw new Error(`--warmup ${warmupS} s leaves nothing of a ${durationS} s run to fit`);
  const pin = o.pin && (await hasCommand('taskset'));
  const onCpu = (cpu: string, cmd: string, args: readonly string[]): [string, string[]] => (pin ? ['taskset', ['-c', cpu, cmd, ...args]] : [cmd, [...args]]);

  const dir = mkdtempSync(join(tmpdir(), 'skiff-soak-'));
  const [port, adminPort] = await freePorts(2);
  // HTTP/3: a TLS listener whose port is free for UDP too, with the test certificates.
  const certs = o.h3Rps > 0 ? ensureCerts() : null;
  const h3Port = o.h3Rps > 0 ? await freePort({ udp: true }) : 0;
  const [ucmd, uargs] = onCpu('1', process.execPath, [libScript('alloc-upstream.js'), '--h2c']);
  const upstream = await spawnReady<{ h1: number; h2c: number }>(ucmd, uargs, 10_000);
  const configFile = join(dir, 'skiff-soak.yaml');
  writeFileSync(configFile, configYaml(port, adminPort, upstream.ready.h1, upstream.ready.h2c, h3Port, certs));
  const logFile = join(dir, 'sidecar.log');
  const logFd = openSync(logFile, 'w');
  const nodeArgs = [...(o.heapProbe ? ['--import', libScript('soak-heap-probe.js')] : []), join(REPO_ROOT, 'dist', 'src', 'cli.js'), '--config', configFile];
  // The sidecar alone on CPU 0; upstream and load generator on CPU 1.
  const [scmd, sargs] = onCpu('0', process.execPath, nodeArgs);
  const sidecar = spawn(scmd, sargs, { stdio: ['ignore', logFd, logFd, 'pipe'], cwd: REPO_ROOT });
  const sidecarExited = new Promise<number | null>((res) => sidecar.once('exit', (code) => res(code)));
  closeSync(logFd);
  const probeStream = sidecar.stdio[3] as Duplex | null;
  const probe = o.heapProbe && probeStream !== null ? new Probe(probeStream) : null;
  /** Live heap (after a forced full GC) at the end of the warm-up and at the end. */
  let liveStart: { t: number; heap: HeapProbe } | null = null;
  let liveEnd: { t: number; heap: HeapProbe } | null = null;
  let load: ReadyChild<{ pid: number }> | null = null;
  const samples: Sample[] = [];
  let finalLoad: unknown = null;
  let lastProgress: LoadProgress | null = null;
  const progress: LoadProgress[] = [];
  let sidecarExitedEarly = false;
  try {
    await waitReady(adminPort, 15_000);
    // taskset execs node in place, so the child's PID is the sidecar's.
    const pid = sidecar.pid;
    if (pid === undefined) throw new Error('sidecar has no pid');
    console.log(
      `soak: sidecar pid ${pid} on 127.0.0.1:${port} (admin ${adminPort}), ${o.minutes} min, sample every ${o.interval} s, warm-up ${warmupS.toFixed(0)} s; load: ${o.h1Rps} HTTP/1.1 GET/s, ${o.h2Rps} HTTP/2 GET/s, ${o.h3Rps > 0 ? `${o.h3Rps} HTTP/3 GET/s (port ${h3Port})` : 'no HTTP/3'}, ${o.postPerS} streaming POST/s of ${fmt(o.postBytes / 1024)} KiB${o.heapProbe ? '; heap via preload probe' : ''}${pin ? '; sidecar on CPU 0, load + upstream on CPU 1' : ''}`,
    );
    console.log(`soak: config ${configFile}, sidecar log ${logFile}`);
    const [lcmd, largs] = onCpu('1', process.execPath, [
      libScript('soak-load.js'),
      '--port', String(port),
      '--seconds', String(durationS + 30),
      '--h1-rps', String(o.h1Rps),
      '--h2-rps', String(o.h2Rps),
      '--post-per-s', String(o.postPerS),
      '--post-bytes', String(o.postBytes),
      ...(certs !== null ? ['--h3-port', String(h3Port), '--h3-rps', String(o.h3Rps), '--ca', certs.ca] : []),
    ]);
    load = await spawnReady<{ pid: number }>(lcmd, largs, 10_000, (line) => {
      const msg = JSON.parse(line) as { progress?: LoadProgress; final?: unknown };
      if (msg.progress !== undefined) {
        lastProgress = msg.progress;
        if (progress.length < 10_000) progress.push(msg.progress);
      }
      if (msg.final !== undefined) finalLoad = msg.final;
    });
    const t0 = performance.now();
    const ownPids = [pid, load.child.pid ?? 0, upstream.child.pid ?? 0, process.pid].filter((p) => p > 0);
    const ownCpu = (): number => ownPids.reduce((n, p) => n + procCpuSeconds(p), 0);
    const busy0 = machineBusySeconds();
    const own0 = ownCpu();
    const count = Math.floor(durationS / o.interval) + 1;
    console.log(`\n${'t s'.padStart(6)} ${'RSS MiB'.padStart(8)} ${'heap MiB'.padStart(9)} ${'old MiB'.padStart(8)} ${'requests'.padStart(10)} ${'req/s'.padStart(7)} ${'CPU %'.padStart(6)} ${'other %'.padStart(8)} ${'arena live/free'.padStart(16)} ${'up conns'.padStart(9)} ${'p99 ms h1/h2/h3/post'.padStart(21)}`);
    for (let k = 0; k < count; k++) {
      const due = t0 + k * o.interval * 1000;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      if (sidecar.exitCode !== null || sidecar.signalCode !== null) {
        sidecarExitedEarly = true;
        break;
      }
      const t = (performance.now() - t0) / 1000;
      const { rss, hwm } = procStatus(pid);
      const cpu = procCpuSeconds(pid);
      const other = Math.max(0, machineBusySeconds() - busy0 - (ownCpu() - own0));
      let heap: HeapProbe | null = null;
      if (probe !== null) heap = await probe.ask('sample', 2000);
      const s = await stats(adminPort);
      const sample: Sample = {
        t,
        rssBytes: rss,
        hwmBytes: hwm,
        cpuSeconds: cpu,
        otherCpuSeconds: other,
        requestsTotal: s === null ? null : s.engine.requestsTotal,
        arenaLive: s === null ? null : s.arena.live,
        arenaFree: s === null ? null : s.arena.free,
        arenaMisses: s === null ? null : s.arena.misses,
        upstreamConnections: s === null ? null : s.pools.reduce((n, p) => n + p.connections, 0),
        heap,
      };
      const prev = samples.length > 0 ? samples[samples.length - 1] : null;
      samples.push(sample);
      const dt = prev === null ? 0 : t - prev.t;
      const rps = prev === null || dt <= 0 || sample.requestsTotal === null || prev.requestsTotal === null ? 0 : (sample.requestsTotal - prev.requestsTotal) / dt;
      const cpuPct = prev === null || dt <= 0 ? 0 : ((cpu - prev.cpuSeconds) / dt) * 100;
      const otherPct = prev === null || dt <= 0 ? 0 : ((other - prev.otherCpuSeconds) / dt) * 100;
      console.log(
        `${t.toFixed(0).padStart(6)} ${mib(rss).padStart(8)} ${(heap === null ? '–' : mib(heap.heapUsed)).padStart(9)} ${(heap === null ? '–' : mib(heap.oldSpaceUsed)).padStart(8)} ${(sample.requestsTotal === null ? '–' : fmt(sample.requestsTotal)).padStart(10)} ${fmt(rps).padStart(7)} ${cpuPct.toFixed(1).padStart(6)} ${otherPct.toFixed(0).padStart(8)} ${`${sample.arenaLive ?? '–'}/${sample.arenaFree ?? '–'}`.padStart(16)} ${String(sample.upstreamConnections ?? '–').padStart(9)} ${p99Text(lastProgress).padStart(21)}`,
      );
      // The live heap once at the end of the warm-up (after this tick's regular sample, so the
      // forced GC does not bias the series) and once at the last tick, load still running.
      if (probe !== null && ((liveStart === null && t >= warmupS) || k === count - 1)) {
        const live = await probe.ask('gc-sample', 5000);
        if (live !== null) {
          if (liveStart === null) liveStart = { t, heap: live };
          else liveEnd = { t, heap: live };
          console.log(`${''.padStart(6)} live heap after a forced full GC: ${mib(live.heapUsed)} MiB (old space ${mib(live.oldSpaceUsed)} MiB)`);
        }
      }
    }
  } finally {
    if (load !== null) {
      await stopChild(load.child, load.exited, 10_000);
    }
    if (sidecar.exitCode === null && sidecar.signalCode === null) {
      sidecar.kill('SIGTERM');
      if (!(await waitExit(sidecarExited, 25_000))) {
        sidecar.kill('SIGKILL');
        await waitExit(sidecarExited, 2000);
      }
    }
    await stopChild(upstream.child, upstream.exited);
  }

  const after = samples.filter((s) => s.t >= warmupS);
  const ts = after.map((s) => s.t);
  const rssGrowth = growth(ts, after.map((s) => s.rssBytes));
  const withHeap = after.filter((s) => s.heap !== null);
  const heapGrowth = growth(withHeap.map((s) => s.t), withHeap.map((s) => (s.heap as HeapProbe).heapUsed));
  const oldGrowth = growth(withHeap.map((s) => s.t), withHeap.map((s) => (s.heap as HeapProbe).oldSpaceUsed));
  const first = samples.length > 0 ? samples[0] : null;
  const last = samples.length > 0 ? samples[samples.length - 1] : null;
  const cpuTotal = first !== null && last !== null ? last.cpuSeconds - first.cpuSeconds : 0;
  const reqTotal = first !== null && last !== null && first.requestsTotal !== null && last.requestsTotal !== null ? last.requestsTotal - first.requestsTotal : 0;

  console.log('');
  console.log(growthLine('RSS growth', rssGrowth));
  if (probe !== null) {
    console.log(growthLine('V8 heap used growth', heapGrowth));
    console.log(growthLine('V8 old space used growth', oldGrowth));
  }
  let liveGrowthPctPerHour: number | null = null;
  if (liveStart !== null && liveEnd !== null && liveEnd.t > liveStart.t) {
    const ls = liveStart;
    const le = liveEnd;
    liveGrowthPctPerHour = ((le.heap.heapUsed - ls.heap.heapUsed) / ls.heap.heapUsed / ((le.t - ls.t) / 3600)) * 100;
    console.log(
      `Live heap (after a forced full GC): ${mib(ls.heap.heapUsed)} MiB at ${ls.t.toFixed(0)} s -> ${mib(le.heap.heapUsed)} MiB at ${le.t.toFixed(0)} s (${liveGrowthPctPerHour >= 0 ? '+' : ''}${liveGrowthPctPerHour.toFixed(2)} %/h)`,
    );
  }
  if (rssGrowth !== null) {
    const verdict = rssGrowth.percentPerHour < 1 ? 'below' : 'ABOVE';
    console.log(`RSS growth is ${verdict} the 1 %/h target${rssGrowth.percentCi95PerHour !== null && Math.abs(rssGrowth.percentPerHour) < rssGrowth.percentCi95PerHour ? ' (and not distinguishable from zero in this run)' : ''}.`);
  }
  if (reqTotal > 0) console.log(`Sidecar CPU: ${fmt((cpuTotal * 1e6) / reqTotal, 0)} µs per request over ${fmt(reqTotal)} requests.`);
  const fl = (finalLoad ?? lastProgress) as { [k: string]: unknown } | null;
  if (fl !== null) console.log(`Load generator: ${JSON.stringify(fl)}`);
  if (sidecarExitedEarly) console.log('soak: THE SIDECAR EXITED DURING THE RUN; see its log');

  const file = writeResult('soak', {
    kind: 'skiff-soak',
    date: new Date().toISOString(),
    node: process.version,
    git: gitState(),
    options: { ...o, pin },
    durationSeconds: durationS,
    warmupSeconds: warmupS,
    method:
      'sidecar as a child process (node dist/src/cli.js --config generated); RSS from /proc/<pid>/status every interval; heap via a preload probe on fd 3 (/stats has no heap), live heap after forced full GCs at warm-up end and end; OLS over samples after warm-up (min(20%, 2 min)); % of the fitted value at the end of the warm-up',
    growth: { rss: rssGrowth, heapUsed: heapGrowth, oldSpaceUsed: oldGrowth, liveHeapPercentPerHour: liveGrowthPctPerHour },
    liveHeap: { atWarmupEnd: liveStart, atEnd: liveEnd },
    sidecarCpuMicrosPerRequest: reqTotal > 0 ? (cpuTotal * 1e6) / reqTotal : null,
    load: fl,
    loadProgress: progress,
    sidecarExitedEarly,
    samples,
  });
  console.log(`soak: wrote ${file}`);
  if (sidecarExitedEarly) console.log(`soak: kept ${dir} (config and sidecar log)`);
  else rmSync(dir, { recursive: true, force: true });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`soak: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
