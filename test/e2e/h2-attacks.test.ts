// HTTP/2 attacks against the real sidecar (issue 7, item 2): rapid reset (CVE-2023-44487),
// SETTINGS, PING and WINDOW_UPDATE floods, a CONTINUATION flood and an HPACK bomb, each from
// a raw socket with hand-built frames (test/helpers/h2-frames.ts). For each: the attacking
// connection gets GOAWAY (the code is recorded) or is closed within a bounded time; a
// well-behaved node:http2 client beside it keeps getting 200s with p99 latency under
// LATENCY_P99_MS (a containment check, not a benchmark); afterwards the sidecar is alive,
// every request context is back in the arena, nothing is in flight, and stderr has no stack.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, describe, it } from 'node:test';
import {
  connectRaw,
  continuation,
  errorName,
  Flag,
  headers,
  indexed,
  literal,
  literalIndexed,
  ping,
  requestBlock,
  rstStream,
  settings,
  windowUpdate,
  type RawH2,
} from '../helpers/h2-frames.js';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { startH1Upstream, type H1Upstream } from '../helpers/upstreams.js';

/** Loose bound for the good client's p99 while an attack runs. */
const LATENCY_P99_MS = 500;
/**
 * Rapid reset gets a looser bound: nghttp2 (1.61 in Node 20) allows a burst of 1,000 stream
 * resets before its GOAWAY, and the sidecar spends ~350-450 ms of its event loop on that
 * burst on this machine (a bare node:http2 server: ~200-280 ms), during which the good
 * client's one in-flight request waits. Node 20's typings and runtime ignore the
 * streamResetBurst/streamResetRate options, so the burst cannot be lowered from server.ts.
 */
const RAPID_RESET_P99_MS = 1000;
/** The attacker must be cut off (GOAWAY or close) within this time. */
const CUTOFF_MS = 5000;
const CANCEL = 0x8;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface Stats {
  arena: { live: number };
  engine: { inFlight: number };
}

async function stats(adminPort: number): Promise<Stats> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/stats`);
  return (await res.json()) as Stats;
}

// ---------------------------------------------------------------------------------------
// The well-behaved client: one h2c session, sequential GETs until stopped.

interface GoodRun {
  latencies: number[];
  failures: string[];
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Resolves with the status, plus the `x-skiff-error` code when there is one. */
function oneRequest(session: http2.ClientHttp2Session): Promise<number | string> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'GET', ':path': '/status/200' }, { endStream: true });
    const timer = setTimeout(() => {
      req.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error('no answer in 3 s'));
    }, 3000);
    let status = 0;
    let code = '';
    req.on('response', (h) => {
      status = Number(h[':status']);
      const e = h['x-skiff-error'];
      code = typeof e === 'string' ? e : '';
    });
    req.on('error', (err: Error) => {
      clearTimeout(timer);
      reject(err);
    });
    req.on('end', () => {
      clearTimeout(timer);
      resolve(code === '' ? status : `${status} ${code}`);
    });
    req.resume();
  });
}

function startGoodClient(port: number): { stop(): Promise<GoodRun> } {
  const run: GoodRun = { latencies: [], failures: [] };
  let isStopped = false;
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', (err) => run.failures.push(`session: ${err.message}`));
  const loop = (async () => {
    for (let i = 0; i < 100_000 && !isStopped; i++) {
      const t0 = performance.now();
      try {
        const status = await oneRequest(session);
        if (status !== 200) run.failures.push(`status ${status}`);
        run.latencies.push(performance.now() - t0);
      } catch (err) {
        run.failures.push(err instanceof Error ? err.message : String(err));
        if (session.destroyed) return;
      }
    }
  })();
  return {
    async stop() {
      isStopped = true;
      await loop;
      session.close();
      return run;
    },
  };
}

// ---------------------------------------------------------------------------------------

interface AttackResult {
  /** 'GOAWAY <codes> (<debug data>)', 'closed without GOAWAY', or 'not cut off'. */
  outcome: string;
  cutoffMs: number;
  framesSent: number;
  rst: string;
  goodCount: number;
  p50: number;
  p99: number;
  max: number;
  /** Good-client failures let through by `tolerate` (reported, not failed on). */
  tolerated: string[];
}

const results = new Map<string, AttackResult>();

/**
 * Runs `attack` (which writes until the connection is cut off or its own bound) beside the
 * good client, waits up to CUTOFF_MS for GOAWAY or close, and returns what was seen.
 */
async function runAttack(
  port: number,
  name: string,
  attack: (c: RawH2) => Promise<number>,
  p99BoundMs = LATENCY_P99_MS,
  tolerate: RegExp | null = null,
): Promise<AttackResult> {
  const good = startGoodClient(port);
  await delay(100); // the good client is up and has a baseline
  const conn = await connectRaw(port);
  const t0 = performance.now();
  const framesSent = await attack(conn);
  const deadline = t0 + CUTOFF_MS;
  while (conn.goaway === null && conn.closedAtMs < 0 && performance.now() < deadline) await delay(10);
  const cutoffMs = conn.goaway !== null ? conn.goaway.atMs : conn.closedAtMs;
  const outcome =
    conn.goaway !== null
      ? `GOAWAY ${conn.goawayCodes.map(errorName).join(',')}${conn.goaway.debug === '' ? '' : ` (${conn.goaway.debug})`}`
      : conn.closedAtMs >= 0 ? 'closed without GOAWAY' : 'not cut off';
  await delay(200); // a moment of good traffic after the cut-off too
  conn.destroy();
  const run = await good.stop();
  const sorted = [...run.latencies].sort((a, b) => a - b);
  const result: AttackResult = {
    outcome,
    cutoffMs: Math.round(cutoffMs),
    framesSent,
    rst: conn.rstCount === 0 ? 'none' : `${conn.rstCount}× ${[...conn.rstCodes].map(errorName).join(',')}`,
    goodCount: sorted.length,
    p50: Math.round(percentile(sorted, 50)),
    p99: Math.round(percentile(sorted, 99)),
    max: Math.round(sorted[sorted.length - 1] ?? NaN),
    tolerated: tolerate === null ? [] : run.failures.filter((f) => tolerate.test(f)),
  };
  results.set(name, result);
  const info = `${name}: ${JSON.stringify(result)} failures ${JSON.stringify(run.failures.slice(0, 5))}`;
  assert.deepEqual(run.failures.filter((f) => !result.tolerated.includes(f)), [], info);
  assert.ok(sorted.length >= 5, `the good client kept getting answers: ${info}`);
  assert.ok(result.p99 < p99BoundMs, `p99 under ${p99BoundMs} ms: ${info}`);
  return result;
}

/**
 * The attacker was cut off within CUTOFF_MS. GOAWAY (INTERNAL_ERROR from node:http2, which
 * destroys the session on any fatal nghttp2 error) is what arrives in nearly every run; when
 * the attacker's unread frames are still in flight the close can reach it as a TCP reset that
 * discards the GOAWAY, so a close without GOAWAY is accepted too.
 */
function assertCutOff(r: AttackResult): void {
  assert.ok(r.outcome !== 'not cut off' && r.cutoffMs >= 0 && r.cutoffMs < CUTOFF_MS, JSON.stringify(r));
}

/** Writes batches from `next` (one batch per call, null to stop) while the connection lives, within `ms`. */
async function flood(c: RawH2, ms: number, maxBatches: number, next: (i: number) => { buf: Buffer; frames: number } | null): Promise<number> {
  const end = performance.now() + ms;
  let frames = 0;
  for (let i = 0; i < maxBatches && c.isOpen() && c.goaway === null && performance.now() < end; i++) {
    const batch = next(i);
    if (batch === null) break;
    // Don't wait for the flush: a flooder doesn't care; but yield to the event loop so
    // the good client (same process) is not starved by the test itself.
    const flushed = c.write(batch.buf);
    frames += batch.frames;
    if (c.socket.writableLength > 1024 * 1024) await flushed;
    else await new Promise((r) => setImmediate(r));
  }
  return frames;
}

function repeat(b: Buffer, n: number): Buffer {
  return Buffer.concat(Array.from({ length: n }, () => b));
}

describe('HTTP/2 attacks', { timeout: 60_000 }, () => {
  let upstream: H1Upstream;
  let skiff: SkiffProcess;
  let port: number;
  let authority: string;

  before(async () => {
    upstream = await startH1Upstream();
    const [listenPort, adminPort] = await freePorts(2);
    port = listenPort;
    authority = `127.0.0.1:${port}`;
    skiff = await startSkiff(`
admin:
  address: 127.0.0.1:${adminPort}
listeners:
  - name: in
    address: 127.0.0.1:${port}
    protocols: [http1, h2c]
    routes: main
routes:
  main:
    - match: { prefix: / }
      cluster: app
clusters:
  - name: app
    protocol: http1
    endpoints: [127.0.0.1:${upstream.port}]
`);
  });

  after(async () => {
    if (results.size > 0) {
      const lines = [...results].map(([n, r]) => `  ${n}: ${r.outcome} at ${r.cutoffMs} ms after ${r.framesSent} frames written; rst ${r.rst}; good ${r.goodCount} req p50 ${r.p50} p99 ${r.p99} max ${r.max} ms${r.tolerated.length > 0 ? `; tolerated ${r.tolerated.join(', ')}` : ''}`);
      console.log(`h2 attacks:\n${lines.join('\n')}`);
    }
    if (skiff !== undefined) await skiff.stop();
    await upstream?.close();
  });

  it('rapid reset (CVE-2023-44487): thousands of HEADERS + RST_STREAM', async (t) => {
    const block = requestBlock(authority, '/status/200');
    let streamId = 1;
    const r = await runAttack(port, 'rapid reset', (c) =>
      flood(c, 4000, 200, () => {
        const parts: Buffer[] = [];
        for (let k = 0; k < 100 && streamId < 2 ** 31 - 2; k++, streamId += 2) {
          parts.push(headers(streamId, block, Flag.END_HEADERS | Flag.END_STREAM), rstStream(streamId, CANCEL));
        }
        return { buf: Buffer.concat(parts), frames: parts.length };
      }), RAPID_RESET_P99_MS, /^status 503 SKIFF_ERR_OVERLOADED$/);
    assertCutOff(r);
    // A gap seen in about 6 runs of 10 before 961c78c: the ~1,000 streams nghttp2 lets through
    // before its GOAWAY reached the engine and filled the cluster's pending queue for a moment
    // (aborted requests stayed queued), and the good client got 503 SKIFF_ERR_OVERLOADED.
    // Since that fix it has not fired (0 of 8 runs, CI included, 2026-11-26); it stays a
    // visible TODO rather than a failure until more runs say it is gone.
    if (r.tolerated.length > 0) t.todo(`good client got ${r.tolerated.length}× 503 SKIFF_ERR_OVERLOADED during rapid reset`);
  });

  it('SETTINGS flood', async () => {
    const batch = repeat(settings([[0x4, 65535]]), 1000);
    const r = await runAttack(port, 'SETTINGS flood', (c) => flood(c, 4000, 2000, () => ({ buf: batch, frames: 1000 })));
    assertCutOff(r);
  });

  it('PING flood', async () => {
    const batch = repeat(ping(Buffer.from('attack!!')), 1000);
    const r = await runAttack(port, 'PING flood', (c) => flood(c, 4000, 2000, () => ({ buf: batch, frames: 1000 })));
    assertCutOff(r);
  });

  it('WINDOW_UPDATE flood, increment 1 on the connection: contained, not cut off', async () => {
    // Valid frames that elicit no reply and need 2^31 of them to overflow the window:
    // nghttp2 (node:http2) has no rate limit for them and no node:http2 option adds one, so
    // the connection is not cut off; what is asserted is that the flood is contained (the
    // good client's latency) and the sidecar stays healthy.
    const batch = repeat(windowUpdate(0, 1), 1000);
    const r = await runAttack(port, 'WINDOW_UPDATE flood (+1)', (c) => flood(c, 2000, 2000, () => ({ buf: batch, frames: 1000 })));
    assert.ok(r.framesSent >= 100_000, JSON.stringify(r));
  });

  it('WINDOW_UPDATE flood that overflows the connection window', async () => {
    const batch = repeat(windowUpdate(0, 2 ** 20), 1000);
    const r = await runAttack(port, 'WINDOW_UPDATE flood (overflow)', (c) => flood(c, 3000, 2000, () => ({ buf: batch, frames: 1000 })));
    assertCutOff(r);
  });

  it('WINDOW_UPDATE with a zero increment', async () => {
    const batch = repeat(windowUpdate(0, 0), 1000);
    const r = await runAttack(port, 'WINDOW_UPDATE zero', (c) => flood(c, 3000, 2000, () => ({ buf: batch, frames: 1000 })));
    assertCutOff(r);
  });

  it('CONTINUATION flood: HEADERS without END_HEADERS, then endless CONTINUATION', async () => {
    const block = requestBlock(authority, '/status/200');
    const cont = continuation(1, literal('x-flood', 'a'.repeat(1000)), 0);
    const batch = repeat(cont, 100);
    const r = await runAttack(port, 'CONTINUATION flood', (c) =>
      flood(c, 4000, 5000, (i) => (i === 0 ? { buf: headers(1, block, 0), frames: 1 } : { buf: batch, frames: 100 })));
    assertCutOff(r);
  });

  it('HPACK bomb: one large dynamic-table entry referenced thousands of times', async () => {
    // 4,000-byte value: the entry (name + value + 32) fits the 4,096-byte default table.
    // Each 1-byte reference to index 62 decodes to ~4 KB: 12,000 of them ≈ 48 MB per block.
    const refs = Buffer.alloc(12_000, indexed(62)[0]);
    let streamId = 1;
    const r = await runAttack(port, 'HPACK bomb', (c) =>
      flood(c, 4000, 200, (i) => {
        const first = i === 0 ? literalIndexed('x-bomb', 'b'.repeat(4000)) : Buffer.alloc(0);
        const block = Buffer.concat([requestBlock(authority, '/status/200'), first, refs]);
        const id = streamId;
        streamId += 2;
        return { buf: headers(id, block, Flag.END_HEADERS | Flag.END_STREAM), frames: 1 };
      }));
    // node:http2 answers each over-limit header block with RST_STREAM ENHANCE_YOUR_CALM
    // (the stream never reaches Skiff) and keeps the connection: a GOAWAY is not required
    // here, but every bomb must be refused and none forwarded.
    if (r.outcome === 'not cut off') assert.equal(r.rst, `${r.framesSent}× ENHANCE_YOUR_CALM`, JSON.stringify(r));
    assert.equal(upstream.requests.filter((q) => q.rawHeaders.some((h) => h === 'x-bomb')).length, 0, 'no bomb was forwarded');
  });

  it('afterwards: alive, arena.live 0, engine.inFlight 0, no stack trace', async () => {
    const exited = await Promise.race([skiff.exited.then(() => true), delay(50).then(() => false)]);
    assert.equal(exited, false, `sidecar exited; stderr:\n${skiff.stderr()}`);
    const deadline = Date.now() + 5000;
    let last = await stats(skiff.adminPort);
    while ((last.arena.live !== 0 || last.engine.inFlight !== 0) && Date.now() < deadline) {
      await delay(50);
      last = await stats(skiff.adminPort);
    }
    assert.equal(last.arena.live, 0, JSON.stringify(last));
    assert.equal(last.engine.inFlight, 0, JSON.stringify(last));
    const run = startGoodClient(port);
    await delay(200);
    const good = await run.stop();
    assert.deepEqual(good.failures, []);
    assert.ok(good.latencies.length > 0);
    const err = skiff.stderr();
    assert.doesNotMatch(err, /^\s+at .+:\d+:\d+\)?$/m, `stack trace on stderr:\n${err}`);
    assert.doesNotMatch(err, /fatal|Unhandled|uncaught/i, `stderr:\n${err}`);
  });
});
