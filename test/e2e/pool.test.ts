// The connection pool and the context arena seen from outside: real clients, the real
// sidecar, real upstreams that count connections and streams, and the admin /stats document.
//   (a) HTTP/1.1 cluster, sequential requests: one cold connect, then tryAcquire hits on the
//       same kept-alive connection;
//   (b) HTTP/2 cluster against an upstream advertising SETTINGS_MAX_CONCURRENT_STREAMS 10:
//       never more than 10 streams per session, ceil(25/10) sessions for 25 concurrent
//       requests, one session for 8;
//   (c) the arena recycles contexts: after 200 requests few misses, and nothing stays live.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, describe, it } from 'node:test';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { startH1Upstream, startH2Upstream, type H1Upstream, type H2Upstream } from '../helpers/upstreams.js';

interface PoolStats {
  cluster: string;
  endpoint: string;
  protocol: string;
  connections: number;
  connecting: number;
  activeStreams: number;
  maxStreams: number[];
  pending: number;
  hits: number;
  slowAcquires: number;
  connectsStarted: number;
  connectFailures: number;
}

interface Stats {
  arena: { hits: number; misses: number; released: number; live: number; free: number };
  engine: { inFlight: number; requestsTotal: number };
  pools: PoolStats[];
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

interface H2Response {
  status: number;
  body: string;
}

/** One request on an existing client session to the sidecar. */
function h2Get(session: http2.ClientHttp2Session, path: string, headers: http2.OutgoingHttpHeaders): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path, ...headers });
    let status = 0;
    const chunks: Buffer[] = [];
    req.on('response', (h) => {
      status = Number(h[':status']);
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ status, body: Buffer.concat(chunks).toString('utf8') }));
    req.on('error', reject);
  });
}

describe('pool and arena behaviour through the sidecar', { timeout: 60_000 }, () => {
  let h1a: H1Upstream;
  let h1b: H1Upstream;
  let h2many: H2Upstream;
  let h2eight: H2Upstream;
  let skiff: SkiffProcess;
  let port: number;
  let session: http2.ClientHttp2Session | null = null;

  before(async () => {
    [h1a, h1b, h2many, h2eight] = await Promise.all([
      startH1Upstream(),
      startH1Upstream(),
      startH2Upstream({ maxConcurrentStreams: 10 }),
      startH2Upstream({ maxConcurrentStreams: 10 }),
    ]);
    const [listenPort, adminPort] = await freePorts(2);
    port = listenPort;
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
    - match: { headers: { x-target: seq } }
      cluster: seq
    - match: { headers: { x-target: many } }
      cluster: many
    - match: { headers: { x-target: eight } }
      cluster: eight
    - match: { headers: { x-target: arena } }
      cluster: arena
clusters:
  - name: seq
    protocol: http1
    endpoints: [127.0.0.1:${h1a.port}]
  - name: many
    protocol: h2c
    endpoints: [127.0.0.1:${h2many.port}]
  - name: eight
    protocol: h2c
    endpoints: [127.0.0.1:${h2eight.port}]
  - name: arena
    protocol: http1
    endpoints: [127.0.0.1:${h1b.port}]
`);
  });

  after(async () => {
    session?.close();
    if (skiff !== undefined) await skiff.stop();
    await Promise.all([h1a?.close(), h1b?.close(), h2many?.close(), h2eight?.close()]);
  });

  async function stats(): Promise<Stats> {
    const res = await fetch(`http://127.0.0.1:${skiff.adminPort}/stats`);
    return (await res.json()) as Stats;
  }

  async function pool(cluster: string): Promise<PoolStats | undefined> {
    return (await stats()).pools.find((p) => p.cluster === cluster);
  }

  function h2Session(): http2.ClientHttp2Session {
    if (session === null || session.destroyed || session.closed) {
      session = http2.connect(`http://127.0.0.1:${port}`);
      session.on('error', () => {});
    }
    return session;
  }

  it('(a) sequential HTTP/1.1 requests: one cold connect, then every request is a tryAcquire hit on the same connection', async () => {
    const n = 30;
    for (let i = 0; i < n; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/ok?i=${i}`, { headers: { 'x-target': 'seq' } });
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'ok');
      if (i === 0) {
        const p = await pool('seq');
        assert.ok(p !== undefined);
        assert.equal(p.slowAcquires, 1, 'the first request misses and connects');
        assert.equal(p.hits, 0);
      }
    }
    const p = await pool('seq');
    assert.ok(p !== undefined, 'the seq pool exists');
    assert.equal(p.protocol, 'http1');
    assert.equal(p.slowAcquires, 1, `only the cold connect took the slow path: ${JSON.stringify(p)}`);
    assert.equal(p.connectsStarted, 1);
    assert.equal(p.hits, n - 1, `every later request found the free connection: ${JSON.stringify(p)}`);
    assert.equal(p.connections, 1);
    assert.equal(p.activeStreams, 0);
    assert.deepEqual(p.maxStreams, [1], 'an HTTP/1.1 connection has one slot');
    assert.equal(h1a.stats().connections, 1, 'the upstream saw one kept-alive connection');
    assert.equal(h1a.requests.length, n);
    assert.ok(h1a.requests.every((r) => r.connection === 1));
  });

  it('(b) 25 concurrent requests to an HTTP/2 upstream limited to 10 streams: at most 10 per session, 3 sessions', async () => {
    const s = h2Session();
    const n = 25;
    let maxSeenConnections = 0;
    let isPolling = true;
    const violations: string[] = [];
    const poller = (async () => {
      while (isPolling) {
        const p = await pool('many');
        if (p !== undefined) {
          maxSeenConnections = Math.max(maxSeenConnections, p.connections + p.connecting);
          if (p.maxStreams.some((m) => m !== 10)) violations.push(`maxStreams ${JSON.stringify(p.maxStreams)}`);
          if (p.activeStreams > 10 * p.connections) violations.push(`activeStreams ${p.activeStreams} on ${p.connections} connections`);
        }
        await delay(20);
      }
    })();
    const t0 = Date.now();
    const results = await Promise.all(Array.from({ length: n }, (_, i) => h2Get(s, `/slow/1000?i=${i}`, { 'x-target': 'many' })));
    const took = Date.now() - t0;
    isPolling = false;
    await poller;
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.body, 'slow');
    }
    const st = h2many.stats();
    assert.ok(st.peakConcurrentStreams <= 30, `peak ${st.peakConcurrentStreams}`);
    assert.equal(st.totalStreams, n);
    assert.ok(st.sessions <= Math.ceil(n / 10), `at most ceil(25/10) = 3 sessions, saw ${st.sessions}`);
    assert.equal(st.sessions, 3, 'each session filled to its limit before a new one is opened');
    // Requests on a session >= its peak concurrency; all 25 were in flight together (each
    // takes 1 s), so this bounds the per-session concurrency.
    const perSession = new Map<number, number>();
    for (const r of h2many.requests) perSession.set(r.connection, (perSession.get(r.connection) ?? 0) + 1);
    for (const [sessionId, count] of perSession) assert.ok(count <= 10, `session ${sessionId} carried ${count} streams at once`);
    assert.deepEqual([...perSession.values()].sort((a, b) => b - a), [10, 10, 5]);
    assert.ok(took < 1900, `all 25 ran concurrently (${took} ms), none waited for a slot`);
    assert.deepEqual(violations, [], 'the pool never counted more streams than the peer allows');
    assert.ok(maxSeenConnections <= 3, `sidecar connections ${maxSeenConnections}`);
    const p = await pool('many');
    assert.ok(p !== undefined);
    assert.equal(p.connectsStarted, 3);
    assert.equal(p.connectFailures, 0);
    assert.equal(p.activeStreams, 0);
    assert.equal(p.pending, 0);
  });

  it('(b) 45 concurrent requests with room for 40 (4 connections x 10 streams): 5 wait for a slot, none exceeds the limit', async () => {
    // The "many" pool may open up to 4 connections (the HTTP/2 default per endpoint).
    const s = h2Session();
    const before = h2many.stats();
    const n = 45;
    const t0 = Date.now();
    const results = await Promise.all(Array.from({ length: n }, (_, i) => h2Get(s, `/slow/400?j=${i}`, { 'x-target': 'many' })));
    const took = Date.now() - t0;
    for (const r of results) assert.equal(r.status, 200);
    const after = h2many.stats();
    assert.equal(after.totalStreams - before.totalStreams, n);
    assert.ok(after.sessions <= 4, `the default limit of 4 connections per endpoint holds: ${after.sessions}`);
    assert.ok(after.peakConcurrentStreams <= 40, `peak ${after.peakConcurrentStreams} <= 4 x 10`);
    assert.ok(took >= 750, `the last 5 waited for a slot (a second 400 ms round): ${took} ms`);
    assert.ok(took < 3000, `${took} ms`);
    const p = await pool('many');
    assert.ok(p !== undefined);
    assert.equal(p.pending, 0);
    assert.equal(p.activeStreams, 0);
  });

  it('(b) 8 concurrent requests use exactly one HTTP/2 session', async () => {
    const s = h2Session();
    const n = 8;
    const results = await Promise.all(Array.from({ length: n }, (_, i) => h2Get(s, `/slow/500?i=${i}`, { 'x-target': 'eight' })));
    for (const r of results) assert.equal(r.status, 200);
    const st = h2eight.stats();
    assert.equal(st.sessions, 1, 'one connection serves all 8 streams');
    assert.equal(st.totalStreams, n);
    assert.equal(st.peakConcurrentStreams, n, 'all 8 were multiplexed at once');
    const p = await pool('eight');
    assert.ok(p !== undefined);
    assert.equal(p.connectsStarted, 1);
    assert.deepEqual(p.maxStreams, [10], "the connection uses the peer's SETTINGS_MAX_CONCURRENT_STREAMS");
    assert.equal(p.slowAcquires, n, 'all 8 arrived while the one connection was being opened');
    // A second wave finds the open session with free slots: tryAcquire hits, no connect.
    const hitsBefore = p.hits;
    const again = await Promise.all(Array.from({ length: n }, (_, i) => h2Get(s, `/ok?k=${i}`, { 'x-target': 'eight' })));
    for (const r of again) assert.equal(r.status, 200);
    const p2 = await pool('eight');
    assert.ok(p2 !== undefined);
    assert.equal(p2.hits - hitsBefore, n);
    assert.equal(p2.slowAcquires, n);
    assert.equal(h2eight.stats().sessions, 1);
  });

  it('(c) arena: after 200 requests at concurrency 8, few misses, contexts recycled, none live', async () => {
    const n = 200;
    const concurrency = 8;
    const before = await stats();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < n) {
        const i = next++;
        const res = await fetch(`http://127.0.0.1:${port}/echo?i=${i}`, {
          method: 'POST',
          headers: { 'x-target': 'arena' },
          body: `body-${i}`,
        });
        assert.equal(res.status, 200);
        assert.equal(await res.text(), `body-${i}`);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    let last: Stats | null = null;
    try {
      await waitFor('arena.live back to 0', async () => {
        last = await stats();
        return last.arena.live === 0 && last.engine.inFlight === 0;
      }, 3000);
    } catch {
      assert.fail(`contexts still live after the run: ${JSON.stringify(last)}`);
    }
    const a = (await stats()).arena;
    const misses = a.misses - before.arena.misses;
    const hits = a.hits - before.arena.hits;
    const released = a.released - before.arena.released;
    const info = JSON.stringify({ before: before.arena, after: a });
    assert.equal(hits + misses, n, `one acquire per request: ${info}`);
    assert.ok(misses <= concurrency, `misses ${misses} <= concurrency ${concurrency}: ${info}`);
    assert.ok(hits >= n - misses, info);
    assert.equal(released, n, `every context was released: ${info}`);
    assert.equal(a.live, 0);
    assert.ok(a.free > 0, 'recycled contexts wait on the free list');
    assert.ok(a.free <= a.misses, 'the free list holds only contexts that were built');
  });
});
