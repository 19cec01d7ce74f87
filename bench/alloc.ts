/**
 * `npm run bench:alloc [-- --seconds 10 --warmup 3 --interval 16384 --top 12 --phases ...]`
 *
 * Bytes allocated per proxied request and per forwarded body MiB (issue 3, item 4).
 *
 * Method: the sidecar runs *in this process* (`Runtime` from dist/src/runtime.js, a generated
 * config on 127.0.0.1 ephemeral ports); the upstream (bench/lib/alloc-upstream) and the load
 * generators (wrk, h2load, bench/lib/alloc-post-client) are child processes, so what this
 * process allocates during a window is the sidecar's work (this script only waits for the
 * child to exit; its output goes to a file, not through this process).
 *
 * Each window is measured two ways (see bench/lib/alloc-profile.ts):
 * - V8's sampling heap profiler through node:inspector with includeObjectsCollectedByMinorGC
 *   and includeObjectsCollectedByMajorGC (short-lived garbage counts; checked to work on Node
 *   20.20), which also gives the allocation sites;
 * - GC accounting with v8.GCProfiler (bytes freed by every GC plus the heap delta): exact
 *   total, no sites. The two should agree within a few percent.
 * The request count is the engine's own `requestsTotal` over the window. Only the V8 heap is
 * counted; Buffer contents (socket reads) are off-heap and not in these figures (a MiB
 * forwarded is at least a MiB of read buffers outside the heap, passed by reference).
 *
 * Sensitivity check: a run with `ProxyEngine.prototype.handle` wrapped here (not in src/) to
 * allocate one extra ~1 KiB array per request must move bytes/request by that much.
 * A GET baseline runs before and after it, which also shows the run-to-run noise.
 *
 * Sites: the profiler records JS function frames; with TurboFan inlining, an allocation made
 * in an inlined callee is charged to the caller. `--no-inlining` turns inlining off for a run
 * meant to find sites; `--save-profiles` writes the raw profiles (open them in Chrome
 * DevTools, Memory tab) under bench/results/.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import v8 from 'node:v8';
import { parseConfig } from '../src/config/load.js';
import type { RequestContext } from '../src/context.js';
import { ProxyEngine } from '../src/proxy/engine.js';
import { Runtime } from '../src/runtime.js';
import {
  REPO_ROOT,
  fmt,
  gitState,
  hasCommand,
  libScript,
  numberFlag,
  parseFlags,
  sleep,
  spawnReady,
  stamp,
  stopChild,
  table,
  waitExit,
  writeResult,
} from './lib/alloc-common.js';
import { GcAccounting, HeapSampler, accountAllocations, summarizeProfile, type GcAccount, type ProfileSummary } from './lib/alloc-profile.js';

const MiB = 1024 * 1024;
const RUN_STAMP = stamp();

type PhaseName = 'get-h1' | 'get-h2c' | 'get-h1-to-h2c' | 'post-1mib' | 'get-h1-extra' | 'get-h1-again';
// The sensitivity run sits between two baselines (A B A), so drift shows as baseline noise.
const ALL_PHASES: readonly PhaseName[] = ['get-h1', 'get-h1-extra', 'get-h1-again', 'get-h2c', 'get-h1-to-h2c', 'post-1mib'];

const PHASE_TEXT: Record<PhaseName, string> = {
  'get-h1': 'GET, HTTP/1.1 in -> HTTP/1.1 upstream (wrk)',
  'get-h2c': 'GET, h2c in -> HTTP/1.1 upstream (h2load)',
  'get-h1-to-h2c': 'GET, HTTP/1.1 in -> h2c upstream (wrk)',
  'post-1mib': 'POST 1 MiB, HTTP/1.1 in -> HTTP/1.1 upstream (node client)',
  'get-h1-extra': 'GET, HTTP/1.1 -> HTTP/1.1, handle() wrapped to allocate ~1 KiB extra',
  'get-h1-again': 'GET, HTTP/1.1 -> HTTP/1.1 (baseline repeated)',
};

interface Options {
  readonly seconds: number;
  readonly warmup: number;
  readonly interval: number;
  readonly top: number;
  readonly connections: number;
  readonly postConcurrency: number;
  readonly pin: boolean;
  readonly phases: readonly PhaseName[];
  /** Write each phase's raw profile (.heapprofile, opens in Chrome DevTools) next to the JSON. */
  readonly saveProfiles: boolean;
  /** Turn off TurboFan inlining so each allocation is charged to the function that makes it. */
  readonly noInlining: boolean;
}

interface PhaseResult {
  readonly phase: PhaseName;
  readonly description: string;
  readonly requests: number;
  readonly clientRequests: number | null;
  readonly seconds: number;
  readonly requestsPerSecond: number;
  /** Sampling heap profiler estimate. */
  readonly sampledBytes: number;
  readonly sampledBytesPerRequest: number;
  /** GC accounting (exact V8 heap total). */
  readonly gc: GcAccount;
  readonly gcBytesPerRequest: number;
  /** POST only: bytes per MiB of request body forwarded. */
  readonly forwardedMiB: number | null;
  readonly sampledBytesPerMiB: number | null;
  readonly gcBytesPerMiB: number | null;
  readonly arena: { readonly hits: number; readonly misses: number };
  readonly pool: { readonly hits: number; readonly slowAcquires: number };
  readonly profile: ProfileSummary;
  /** Where the raw profile was written (--save-profiles). */
  readonly profileFile: string | null;
}

function options(): Options {
  const f = parseFlags(process.argv.slice(2));
  const phases = (f.get('phases') ?? ALL_PHASES.join(','))
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
  for (const p of phases) {
    if (!(ALL_PHASES as readonly string[]).includes(p)) throw new Error(`unknown phase ${p}; phases: ${ALL_PHASES.join(', ')}`);
  }
  return {
    seconds: numberFlag(f, 'seconds', 10),
    warmup: numberFlag(f, 'warmup', 3),
    interval: numberFlag(f, 'interval', 16384),
    top: numberFlag(f, 'top', 12),
    connections: numberFlag(f, 'connections', 50),
    postConcurrency: numberFlag(f, 'post-concurrency', 4),
    pin: f.get('no-pin') === undefined,
    phases: phases as PhaseName[],
    saveProfiles: f.get('save-profiles') !== undefined,
    noInlining: f.get('no-inlining') !== undefined,
  };
}

function configYaml(h1Port: number, h2cPort: number): string {
  return `limits: { maxRequestsPerConnection: 0 }
listeners:
  - name: bench
    address: 127.0.0.1:0
    protocols: [http1, h2c]
    routes: bench
routes:
  bench:
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
    # h2load -c10 -m10 keeps 100 streams in flight; at the default of 64 connections a share of
    # them would wait in acquireSlow (a Promise and closures each) instead of the hit path.
    maxConnectionsPerEndpoint: 128
  - name: app-h2c
    protocol: h2c
    endpoints: [127.0.0.1:${h2cPort}]
`;
}

// ---- the sensitivity wrapper ------------------------------------------------------------

/** 122 elements: JSArray (32 B) + FixedArray header (16 B) + 122 × 8 B = 1,024 B on x64 without pointer compression. */
const EXTRA_ELEMENTS = 122;
/** Where the extra array goes: a property store the optimizer cannot drop. */
const keep: { extra: number[] | null } = { extra: null };

function allocateExtra(): number[] {
  return new Array<number>(EXTRA_ELEMENTS).fill(0);
}

const originalHandle = ProxyEngine.prototype.handle;

function patchHandle(on: boolean): void {
  ProxyEngine.prototype.handle = on
    ? function handleWithExtraAllocation(this: ProxyEngine, ctx: RequestContext): void {
        keep.extra = allocateExtra();
        originalHandle.call(this, ctx);
      }
    : originalHandle;
}

/** What one allocateExtra() costs, by GC accounting of 100,000 calls minus an empty loop. */
function measureExtraSize(): number {
  const n = 100_000;
  const empty = accountAllocations(() => {
    for (let i = 0; i < n; i++) keep.extra = null;
  });
  const full = accountAllocations(() => {
    for (let i = 0; i < n; i++) keep.extra = allocateExtra();
  });
  keep.extra = null;
  return (full.heapBytes - empty.heapBytes) / n;
}

// ---- load generators (child processes) ----------------------------------------------------

interface LoadRun {
  /** What the client says it completed; null when unknown. */
  readonly clientRequests: number | null;
}

async function runCommandToFile(cmd: string, args: readonly string[], timeoutMs: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'skiff-alloc-'));
  const file = join(dir, 'out.txt');
  const fd = openSync(file, 'w');
  try {
    // Output goes straight to a file: nothing flows through this (measured) process.
    const child = spawn(cmd, args, { stdio: ['ignore', fd, 'inherit'] });
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    child.once('error', () => undefined);
    if (!(await waitExit(exited, timeoutMs))) {
      child.kill('SIGKILL');
      await waitExit(exited, 2000);
      throw new Error(`${cmd} did not finish within ${timeoutMs} ms`);
    }
    return readFileSync(file, 'utf8');
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
}

function pinned(cmd: string, args: readonly string[], opts: Options): [string, string[]] {
  return opts.pin ? ['taskset', ['-c', '1', cmd, ...args]] : [cmd, [...args]];
}

async function runWrk(port: number, path: string, seconds: number, opts: Options): Promise<LoadRun> {
  const [cmd, args] = pinned('wrk', ['-t1', `-c${opts.connections}`, `-d${seconds}s`, `http://127.0.0.1:${port}${path}`], opts);
  const out = await runCommandToFile(cmd, args, (seconds + 15) * 1000);
  const m = /(\d+) requests in/.exec(out);
  return { clientRequests: m === null ? null : Number(m[1]) };
}

async function runH2load(port: number, seconds: number, opts: Options): Promise<LoadRun> {
  const [cmd, args] = pinned('h2load', ['-c10', '-m10', '-D', String(seconds), `http://127.0.0.1:${port}/`], opts);
  const out = await runCommandToFile(cmd, args, (seconds + 15) * 1000);
  const m = /requests: \d+ total, \d+ started, (\d+) done/.exec(out);
  return { clientRequests: m === null ? null : Number(m[1]) };
}

async function runPost(port: number, seconds: number, opts: Options): Promise<LoadRun> {
  let result: { requests: number; errors: number } | null = null;
  const [cmd, args] = pinned(
    process.execPath,
    [libScript('alloc-post-client.js'), '--port', String(port), '--seconds', String(seconds), '--concurrency', String(opts.postConcurrency), '--size', String(MiB)],
    opts,
  );
  const c = await spawnReady<{ pid: number }>(cmd, args, 10_000, (line) => {
    result = JSON.parse(line) as { requests: number; errors: number };
  });
  if (!(await waitExit(c.exited, (seconds + 30) * 1000))) {
    await stopChild(c.child, c.exited);
    throw new Error('POST client did not finish in time');
  }
  const r = result as { requests: number; errors: number } | null;
  if (r !== null && r.errors > 0) process.stderr.write(`alloc: POST client saw ${r.errors} errors\n`);
  return { clientRequests: r === null ? null : r.requests };
}

// ---- one phase ---------------------------------------------------------------------------

async function quiesce(runtime: Runtime): Promise<void> {
  for (let i = 0; i < 100 && runtime.engine.inFlight > 0; i++) await sleep(50);
  await sleep(300);
}

function load(phase: PhaseName, port: number, seconds: number, opts: Options): Promise<LoadRun> {
  switch (phase) {
    case 'get-h2c':
      return runH2load(port, seconds, opts);
    case 'get-h1-to-h2c':
      return runWrk(port, '/h2up/', seconds, opts);
    case 'post-1mib':
      return runPost(port, seconds, opts);
    default:
      return runWrk(port, '/', seconds, opts);
  }
}

async function runPhase(phase: PhaseName, runtime: Runtime, port: number, opts: Options): Promise<PhaseResult> {
  patchHandle(phase === 'get-h1-extra');
  try {
    await load(phase, port, opts.warmup, opts);
    await quiesce(runtime);
    const engine = runtime.engine;
    const arena = runtime.arena;
    const pools = runtime.pools.all();
    const r0 = engine.requestsTotal;
    const a0 = { hits: arena.hits, misses: arena.misses };
    const p0 = { hits: pools.reduce((n, p) => n + p.hits, 0), slow: pools.reduce((n, p) => n + p.slowAcquires, 0) };
    const sampler = new HeapSampler();
    const acc = new GcAccounting();
    await sampler.start(opts.interval);
    acc.start();
    const t0 = performance.now();
    const run = await load(phase, port, opts.seconds, opts);
    await quiesce(runtime);
    const seconds = (performance.now() - t0) / 1000;
    const gc = acc.stop();
    const profile = await sampler.stop();
    const requests = engine.requestsTotal - r0;
    const poolsAfter = runtime.pools.all();
    const summary = summarizeProfile(profile, opts.top);
    let profileFile: string | null = null;
    if (opts.saveProfiles) {
      profileFile = join(REPO_ROOT, 'bench', 'results', `alloc-${RUN_STAMP}-${phase}.heapprofile`);
      mkdirSync(dirname(profileFile), { recursive: true });
      writeFileSync(profileFile, JSON.stringify(profile));
    }
    const perReq = (b: number): number => (requests > 0 ? b / requests : 0);
    const forwardedMiB = phase === 'post-1mib' ? requests : null; // each request carries 1 MiB
    const perMiB = (b: number): number | null => (forwardedMiB === null || forwardedMiB === 0 ? null : b / forwardedMiB);
    return {
      phase,
      description: PHASE_TEXT[phase],
      requests,
      clientRequests: run.clientRequests,
      seconds,
      requestsPerSecond: requests / seconds,
      sampledBytes: summary.totalBytes,
      sampledBytesPerRequest: perReq(summary.totalBytes),
      gc,
      gcBytesPerRequest: perReq(gc.heapBytes),
      forwardedMiB,
      sampledBytesPerMiB: perMiB(summary.totalBytes),
      gcBytesPerMiB: perMiB(gc.heapBytes),
      arena: { hits: arena.hits - a0.hits, misses: arena.misses - a0.misses },
      pool: {
        hits: poolsAfter.reduce((n, p) => n + p.hits, 0) - p0.hits,
        slowAcquires: poolsAfter.reduce((n, p) => n + p.slowAcquires, 0) - p0.slow,
      },
      profile: summary,
      profileFile,
    };
  } finally {
    patchHandle(false);
  }
}

function sanityGet(port: number, path: string): Promise<string> {
  return new Promise((res, rej) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (c: string) => (body += c));
      r.on('end', () => (r.statusCode === 200 ? res(body) : rej(new Error(`GET ${path}: status ${r.statusCode}: ${body}`))));
    });
    req.setTimeout(5000, () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.on('error', rej);
  });
}

function printSites(title: string, sites: ProfileSummary['topSelf']): void {
  console.log(`\n${title}`);
  console.log(
    table(
      ['function', 'where', 'bytes', 'share'],
      sites.map((s) => [s.fn.slice(0, 48), s.where.slice(0, 70), fmt(s.selfBytes), `${(s.share * 100).toFixed(1)}%`]),
    ),
  );
}

async function main(): Promise<void> {
  const opts = options();
  // Before any of the sidecar's code is optimized; changes the figures a little (no inlining,
  // less escape analysis), so it is for finding sites, not for the per-request number.
  if (opts.noInlining) v8.setFlagsFromString('--no-turbo-inlining');
  for (const tool of ['wrk', ...(opts.phases.includes('get-h2c') ? ['h2load'] : [])]) {
    if (!(await hasCommand(tool))) {
      throw new Error(`${tool} is not installed (apt-get install ${tool === 'wrk' ? 'wrk' : 'nghttp2-client'})`);
    }
  }
  const pin = opts.pin && (await hasCommand('taskset'));
  const o: Options = { ...opts, pin };
  if (pin) {
    // The sidecar (this process, all threads) on CPU 0; load generators and upstream on CPU 1.
    await runCommandToFile('taskset', ['-a', '-p', '-c', '0', String(process.pid)], 5000);
  }
  const [ucmd, uargs] = pinned(process.execPath, [libScript('alloc-upstream.js'), '--h2c'], o);
  const upstream = await spawnReady<{ h1: number; h2c: number }>(ucmd, uargs, 10_000);
  const snapshot = parseConfig(configYaml(upstream.ready.h1, upstream.ready.h2c), 'bench/alloc (generated)', REPO_ROOT, 1);
  const runtime = new Runtime(snapshot, { logLevel: 'silent' });
  const results: PhaseResult[] = [];
  let extraBytes = 0;
  try {
    await runtime.start();
    const port = runtime.ports.get('bench');
    if (port === undefined) throw new Error('listener bench has no port');
    if ((await sanityGet(port, '/')) !== 'ok' || (await sanityGet(port, '/h2up/')) !== 'ok') throw new Error('sanity GET did not return ok');
    extraBytes = measureExtraSize();
    console.log(`alloc: sidecar in-process on 127.0.0.1:${port}, upstream pid ${upstream.child.pid ?? '?'}; ${o.seconds}s per phase after ${o.warmup}s warm-up; sampling interval ${o.interval} B${pin ? '; sidecar on CPU 0, load + upstream on CPU 1' : ''}`);
    for (const phase of o.phases) {
      process.stdout.write(`alloc: ${phase} ...`);
      const r = await runPhase(phase, runtime, port, o);
      results.push(r);
      process.stdout.write(` ${fmt(r.requests)} requests, ${fmt(r.sampledBytesPerRequest)} B/request\n`);
    }
  } finally {
    await runtime.stop();
    await stopChild(upstream.child, upstream.exited);
  }

  console.log('\nBytes allocated on the V8 heap (sampled = sampling heap profiler incl. objects collected by minor/major GC; GC acct = bytes freed by GCs + heap delta)\n');
  console.log(
    table(
      ['phase', 'requests', 'req/s', 'B/req sampled', 'B/req GC acct', 'GCs', 'arena miss', 'pool slow'],
      results.map((r) => [
        r.phase,
        fmt(r.requests),
        fmt(r.requestsPerSecond),
        fmt(r.sampledBytesPerRequest),
        fmt(r.gcBytesPerRequest),
        fmt(r.gc.scavenges + r.gc.otherGcs),
        fmt(r.arena.misses),
        fmt(r.pool.slowAcquires),
      ]),
    ),
  );
  const post = results.find((r) => r.phase === 'post-1mib');
  if (post !== undefined && post.forwardedMiB !== null) {
    console.log(
      `\nPOST 1 MiB: ${fmt(post.forwardedMiB)} MiB forwarded; V8 heap ${fmt(post.sampledBytesPerMiB ?? 0)} B/MiB sampled, ${fmt(post.gcBytesPerMiB ?? 0)} B/MiB GC acct (V8 heap only; the body bytes themselves are off-heap Buffers passed by reference)`,
    );
  }
  for (const r of results) {
    if (r.phase !== 'get-h1' && r.phase !== 'post-1mib' && r.phase !== 'get-h2c') continue;
    printSites(`Top allocation sites, ${r.phase} (self bytes by function; line = where the function starts)`, r.profile.topSelf);
    printSites(`Innermost Skiff frame on the stack, ${r.phase} (callees in node/undici included)`, r.profile.topSkiffCallers);
  }
  const base = results.find((r) => r.phase === 'get-h1');
  const extra = results.find((r) => r.phase === 'get-h1-extra');
  const again = results.find((r) => r.phase === 'get-h1-again');
  let sensitivity: object | null = null;
  if (base !== undefined && extra !== undefined) {
    const baseSampled = again === undefined ? base.sampledBytesPerRequest : (base.sampledBytesPerRequest + again.sampledBytesPerRequest) / 2;
    const baseGc = again === undefined ? base.gcBytesPerRequest : (base.gcBytesPerRequest + again.gcBytesPerRequest) / 2;
    sensitivity = {
      expectedExtraBytesPerRequest: extraBytes,
      deltaSampled: extra.sampledBytesPerRequest - baseSampled,
      deltaGcAccounting: extra.gcBytesPerRequest - baseGc,
      baselineNoiseSampled: again === undefined ? null : Math.abs(base.sampledBytesPerRequest - again.sampledBytesPerRequest),
      baselineNoiseGcAccounting: again === undefined ? null : Math.abs(base.gcBytesPerRequest - again.gcBytesPerRequest),
    };
    console.log(
      `\nSensitivity: handle() wrapped to allocate ${fmt(extraBytes)} B more per request -> sampled ${fmt(extra.sampledBytesPerRequest - baseSampled, 1)} B/req more, GC acct ${fmt(extra.gcBytesPerRequest - baseGc, 1)} B/req more` +
        (again === undefined
          ? ''
          : ` (baseline run-to-run: sampled ±${fmt(Math.abs(base.sampledBytesPerRequest - again.sampledBytesPerRequest), 1)}, GC acct ±${fmt(Math.abs(base.gcBytesPerRequest - again.gcBytesPerRequest), 1)})`),
    );
  }
  const file = writeResult('alloc', {
    kind: 'skiff-alloc',
    date: new Date().toISOString(),
    node: process.version,
    git: gitState(),
    method:
      'sidecar in-process (Runtime), upstream and load generators as child processes; V8 sampling heap profiler via node:inspector with includeObjectsCollectedByMinorGC/MajorGC, cross-checked by GC accounting (v8.GCProfiler: bytes freed per GC + heap delta); V8 heap only (Buffer contents are off-heap and not counted)',
    options: o,
    samplingIntervalBytes: o.interval,
    phases: results,
    sensitivity,
  });
  console.log(`\nalloc: wrote ${file}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`alloc: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
