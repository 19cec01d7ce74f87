// EndpointPool logic (DESIGN invariant 5) against a fake Connector: tryAcquire is
// synchronous, acquireSlow connects and queues, limits and deadlines fail fast, slots are
// handed over on onStreamDone, idle connections close. Time is mocked (node:test mock timers
// for setTimeout/setInterval, and a mocked performance.now for the pool's idle clock).
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import type { RequestContext } from '../../../src/context.js';
import { DEFAULT_CIRCUIT_BREAKERS, DEFAULT_RETRIES } from '../../../src/config/load.js';
import type { ClusterConfig, SocketAddress, UpstreamProtocol } from '../../../src/config/types.js';
import { ErrorCode, SkiffError } from '../../../src/errors.js';
import { EndpointPool } from '../../../src/pool/endpoint-pool.js';
import type { ConnEvents, Connector, UpstreamConn, UpstreamHandler } from '../../../src/pool/types.js';

const ENDPOINT: SocketAddress = { host: '127.0.0.1', port: 9999 };

function cluster(overrides: Partial<ClusterConfig> = {}): ClusterConfig {
  return {
    name: 'c',
    protocol: 'http1',
    endpoints: [ENDPOINT],
    maxBodyBytes: 0,
    connectTimeoutMs: 1000,
    idleTimeoutMs: 60_000,
    maxConnectionsPerEndpoint: 64,
    maxPendingPerEndpoint: 1024,
    tls: null,
    meshTls: false,
    peerIdentity: null,
    loadBalancer: 'round-robin',
    retries: DEFAULT_RETRIES,
    outlierDetection: null,
    circuitBreakers: DEFAULT_CIRCUIT_BREAKERS,
    ...overrides,
  };
}

class FakeConn implements UpstreamConn {
  readonly endpointKey: string;
  readonly isMultiplexed: boolean;
  activeStreams: number;
  maxStreams: number;
  isClosed: boolean;
  idleSince: number;
  closeCalls: number;
  readonly id: number;

  constructor(id: number, protocol: UpstreamProtocol, maxStreams: number) {
    this.endpointKey = '127.0.0.1:9999';
    this.isMultiplexed = protocol !== 'http1';
    this.activeStreams = 0;
    this.maxStreams = maxStreams;
    this.isClosed = false;
    this.idleSince = 0;
    this.closeCalls = 0;
    this.id = id;
  }

  dispatch(_ctx: RequestContext, _gen: number, _handler: UpstreamHandler): void {
    throw new Error('not used by the pool');
  }

  close(): void {
    this.closeCalls++;
    this.isClosed = true;
  }
}

interface PendingConnect {
  resolve(conn: FakeConn): void;
  reject(err: unknown): void;
  events: ConnEvents;
}

/** A Connector whose connects stay pending until the test settles them. */
class FakeConnector implements Connector {
  readonly pending: PendingConnect[] = [];
  calls = 0;
  private nextId = 1;

  connect(_endpoint: SocketAddress, _cluster: ClusterConfig, events: ConnEvents): Promise<UpstreamConn> {
    this.calls++;
    return new Promise<UpstreamConn>((resolve, reject) => {
      this.pending.push({ resolve, reject, events });
    });
  }

  /** Settles the oldest pending connect with a new FakeConn. */
  succeed(protocol: UpstreamProtocol, maxStreams: number): FakeConn {
    const p = this.pending.shift();
    if (p === undefined) throw new Error('no pending connect');
    const conn = new FakeConn(this.nextId++, protocol, maxStreams);
    p.resolve(conn);
    return conn;
  }

  fail(err: unknown): void {
    const p = this.pending.shift();
    if (p === undefined) throw new Error('no pending connect');
    p.reject(err);
  }
}

/** Lets resolved promises run their callbacks (the pool reacts to connects in `.then`). */
async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

type Outcome = { ok: true; conn: UpstreamConn } | { ok: false; err: unknown } | null;

/** Tracks a promise's outcome without awaiting it. */
function track(p: Promise<UpstreamConn>): { get(): Outcome } {
  let outcome: Outcome = null;
  p.then(
    (conn) => {
      outcome = { ok: true, conn };
    },
    (err: unknown) => {
      outcome = { ok: false, err };
    },
  );
  return { get: () => outcome };
}

function errCode(o: Outcome): string | null {
  if (o === null || o.ok) return null;
  return o.err instanceof SkiffError ? o.err.code : `not a SkiffError: ${String(o.err)}`;
}

let now = 0;

/** Advances the mocked clock: timers and the pool's performance.now() together. */
function advance(ms: number): void {
  let left = ms;
  while (left > 0) {
    const step = Math.min(10, left);
    now += step;
    mock.timers.tick(step);
    left -= step;
  }
}

describe('EndpointPool', () => {
  beforeEach(() => {
    now = 1_000_000;
    mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
    mock.method(performance, 'now', () => now);
  });

  afterEach(() => {
    mock.timers.reset();
    mock.restoreAll();
  });

  it('tryAcquire returns undefined on an empty pool, without side effects', () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster(), connector);
    assert.equal(pool.key, '127.0.0.1:9999');
    assert.equal(pool.tryAcquire(), undefined);
    assert.equal(connector.calls, 0, 'tryAcquire never connects');
    assert.equal(pool.hits, 0);
  });

  it('tryAcquire returns a connection with a free slot synchronously (not a Promise) and counts the stream', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'h2c' }), connector);
    const first = track(pool.acquireSlow(1000));
    const conn = connector.succeed('h2c', 10);
    await flush();
    assert.deepEqual(first.get(), { ok: true, conn });
    assert.equal(conn.activeStreams, 1);

    const hit = pool.tryAcquire();
    assert.equal(hit, conn);
    assert.ok(!((hit as unknown) instanceof Promise), 'tryAcquire must not return a Promise');
    assert.equal(typeof (hit as unknown as { then?: unknown }).then, 'undefined', 'not a thenable');
    assert.equal(conn.activeStreams, 2);
    assert.equal(pool.hits, 1);
    assert.equal(pool.slowAcquires, 1);
  });

  it('tryAcquire skips closed connections and full connections', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1' }), connector);
    const a = track(pool.acquireSlow(1000));
    const b = track(pool.acquireSlow(1000));
    const c1 = connector.succeed('http1', 1);
    const c2 = connector.succeed('http1', 1);
    await flush();
    assert.ok(a.get()?.ok && b.get()?.ok);
    assert.equal(pool.tryAcquire(), undefined, 'both HTTP/1.1 connections are busy');
    pool.onStreamDone(c1);
    c1.isClosed = true;
    assert.equal(pool.tryAcquire(), undefined, 'a closed connection is never handed out');
    pool.onStreamDone(c2);
    assert.equal(pool.tryAcquire(), c2);
  });

  it('acquireSlow on a multiplexed cluster connects once and serves every waiter', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'h2c', maxConnectionsPerEndpoint: 4 }), connector);
    const ws = [track(pool.acquireSlow(1000)), track(pool.acquireSlow(1000)), track(pool.acquireSlow(1000))];
    assert.equal(connector.calls, 1, 'one connect serves many HTTP/2 waiters');
    assert.equal(pool.connecting, 1);
    assert.equal(pool.pendingCount, 3);
    const conn = connector.succeed('h2c', 100);
    await flush();
    for (const w of ws) assert.deepEqual(w.get(), { ok: true, conn });
    assert.equal(conn.activeStreams, 3);
    assert.equal(pool.pendingCount, 0);
    assert.equal(pool.connecting, 0);
    assert.equal(pool.conns.length, 1);
    assert.equal(pool.slowAcquires, 3);
    assert.equal(pool.hits, 0, 'waiters served by a new connection are slow acquires, not hits');
    assert.equal(connector.calls, 1);
  });

  it('acquireSlow on HTTP/1.1 opens one connection per waiter', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1' }), connector);
    const ws = [track(pool.acquireSlow(1000)), track(pool.acquireSlow(1000)), track(pool.acquireSlow(1000))];
    assert.equal(connector.calls, 3);
    const conns = [connector.succeed('http1', 1), connector.succeed('http1', 1), connector.succeed('http1', 1)];
    await flush();
    const got = ws.map((w) => {
      const o = w.get();
      assert.ok(o !== null && o.ok);
      return o.conn;
    });
    assert.deepEqual(new Set(got), new Set(conns), 'each waiter got its own connection');
    for (const c of conns) assert.equal(c.activeStreams, 1);
  });

  it('acquireSlow returns a free slot without connecting', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1' }), connector);
    const w = track(pool.acquireSlow(1000));
    const conn = connector.succeed('http1', 1);
    await flush();
    assert.ok(w.get()?.ok);
    pool.onStreamDone(conn);
    const again = track(pool.acquireSlow(1000));
    await flush();
    assert.deepEqual(again.get(), { ok: true, conn });
    assert.equal(connector.calls, 1);
  });

  it('respects the per-endpoint connection limit; extra waiters get slots as streams finish', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1', maxConnectionsPerEndpoint: 2 }), connector);
    const ws = [0, 1, 2, 3].map(() => track(pool.acquireSlow(5000)));
    assert.equal(connector.calls, 2, 'no more connects than the limit');
    const c1 = connector.succeed('http1', 1);
    const c2 = connector.succeed('http1', 1);
    await flush();
    assert.ok(ws[0].get()?.ok && ws[1].get()?.ok);
    assert.equal(ws[2].get(), null);
    assert.equal(ws[3].get(), null);
    assert.equal(pool.pendingCount, 2);
    assert.equal(connector.calls, 2, 'still at the limit after the connects');
    assert.equal(pool.conns.length, 2);

    pool.onStreamDone(c1);
    await flush();
    assert.deepEqual(ws[2].get(), { ok: true, conn: c1 }, 'the freed slot goes to the oldest waiter');
    assert.equal(ws[3].get(), null);
    pool.onStreamDone(c2);
    await flush();
    assert.deepEqual(ws[3].get(), { ok: true, conn: c2 });
    assert.equal(pool.pendingCount, 0);
    assert.equal(c1.activeStreams, 1);
    assert.equal(c2.activeStreams, 1);
  });

  it('rejects with SKIFF_ERR_OVERLOADED (retry-safe) once maxPendingPerEndpoint waiters queue', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1', maxConnectionsPerEndpoint: 1, maxPendingPerEndpoint: 2 }), connector);
    const a = track(pool.acquireSlow(5000));
    const b = track(pool.acquireSlow(5000));
    const c = track(pool.acquireSlow(5000));
    await flush();
    assert.equal(a.get(), null);
    assert.equal(b.get(), null);
    assert.equal(errCode(c.get()), ErrorCode.Overloaded);
    const o = c.get();
    assert.ok(o !== null && !o.ok && o.err instanceof SkiffError && o.err.isRetrySafe);
    assert.equal(pool.pendingCount, 2);
    assert.equal(connector.calls, 1);
  });

  it('maxPendingPerEndpoint 0 rejects every request that finds no free slot', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ maxPendingPerEndpoint: 0 }), connector);
    const a = track(pool.acquireSlow(5000));
    await flush();
    assert.equal(errCode(a.get()), ErrorCode.Overloaded);
    assert.equal(connector.calls, 0);
  });

  it('a waiter past its deadline fails with SKIFF_ERR_CONNECT_TIMEOUT and leaves the queue', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1' }), connector);
    const w = track(pool.acquireSlow(250));
    advance(249);
    await flush();
    assert.equal(w.get(), null, 'not before the deadline');
    advance(1);
    await flush();
    assert.equal(errCode(w.get()), ErrorCode.ConnectTimeout);
    const o = w.get();
    assert.ok(o !== null && !o.ok && o.err instanceof SkiffError && o.err.isRetrySafe);
    assert.equal(pool.pendingCount, 0);

    // The connect finishing late gives a pooled idle connection, handed to nobody.
    const conn = connector.succeed('http1', 1);
    await flush();
    assert.equal(conn.activeStreams, 0);
    assert.equal(pool.tryAcquire(), conn, 'the late connection is usable by the next request');
  });

  it('a deadline of a waiter served in time does not fire later', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1' }), connector);
    const w = track(pool.acquireSlow(250));
    const conn = connector.succeed('http1', 1);
    await flush();
    assert.deepEqual(w.get(), { ok: true, conn });
    advance(1000);
    await flush();
    assert.deepEqual(w.get(), { ok: true, conn });
  });

  it('a failed connect fails its waiter at once (before the deadline), with the connector error', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1' }), connector);
    const w = track(pool.acquireSlow(10_000));
    const err = new SkiffError(ErrorCode.UpstreamConnect, 'upstream', 'connect to 127.0.0.1:9999 failed: ECONNREFUSED', true);
    connector.fail(err);
    await flush();
    const o = w.get();
    assert.ok(o !== null && !o.ok, 'failed without any time passing');
    assert.equal(o.err, err);
    assert.equal(pool.connectFailures, 1);
    assert.equal(pool.pendingCount, 0);
    assert.equal(pool.connecting, 0);
  });

  it('a failed HTTP/2 connect fails every waiter it was opened for', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'h2c' }), connector);
    const ws = [0, 1, 2].map(() => track(pool.acquireSlow(10_000)));
    assert.equal(connector.calls, 1);
    connector.fail(new Error('ECONNREFUSED'));
    await flush();
    for (const w of ws) assert.equal(errCode(w.get()), ErrorCode.UpstreamConnect, 'a non-SkiffError becomes UPSTREAM_CONNECT');
    assert.equal(pool.pendingCount, 0);
  });

  it('one failed HTTP/1.1 connect out of several fails only its own waiter', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1' }), connector);
    const a = track(pool.acquireSlow(10_000));
    const b = track(pool.acquireSlow(10_000));
    assert.equal(connector.calls, 2);
    connector.fail(new SkiffError(ErrorCode.UpstreamConnect, 'upstream', 'refused', true));
    await flush();
    assert.equal(errCode(a.get()), ErrorCode.UpstreamConnect);
    assert.equal(b.get(), null, 'the other connect may still succeed');
    const conn = connector.succeed('http1', 1);
    await flush();
    assert.deepEqual(b.get(), { ok: true, conn });
  });

  it('a multiplexed connection serves up to maxStreams, then requests wait for a slot', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'h2c', maxConnectionsPerEndpoint: 1 }), connector);
    const first = track(pool.acquireSlow(5000));
    const conn = connector.succeed('h2c', 3);
    await flush();
    assert.ok(first.get()?.ok);
    assert.equal(pool.tryAcquire(), conn);
    assert.equal(pool.tryAcquire(), conn);
    assert.equal(conn.activeStreams, 3);
    assert.equal(pool.tryAcquire(), undefined, 'no fourth stream on a connection limited to 3');
    assert.equal(conn.activeStreams, 3);

    const waiter = track(pool.acquireSlow(5000));
    await flush();
    assert.equal(waiter.get(), null);
    assert.equal(connector.calls, 1, 'at the connection limit: wait, do not connect');
    pool.onStreamDone(conn);
    await flush();
    assert.deepEqual(waiter.get(), { ok: true, conn }, 'onStreamDone hands the slot to the waiter');
    assert.equal(conn.activeStreams, 3);
  });

  it('onCapacity (peer raised its stream limit) serves waiters', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'h2c', maxConnectionsPerEndpoint: 1 }), connector);
    const first = track(pool.acquireSlow(5000));
    const conn = connector.succeed('h2c', 1);
    await flush();
    assert.ok(first.get()?.ok);
    const second = track(pool.acquireSlow(5000));
    await flush();
    assert.equal(second.get(), null);
    conn.maxStreams = 2;
    pool.onCapacity(conn);
    await flush();
    assert.deepEqual(second.get(), { ok: true, conn });
  });

  it('onStreamDone without waiters leaves the slot free for tryAcquire', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1' }), connector);
    const w = track(pool.acquireSlow(5000));
    const conn = connector.succeed('http1', 1);
    await flush();
    assert.ok(w.get()?.ok);
    pool.onStreamDone(conn);
    assert.equal(conn.activeStreams, 0);
    assert.equal(pool.tryAcquire(), conn);
    assert.equal(pool.hits, 1);
  });

  it('a closed connection leaves the pool and a waiter gets a new connect', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1', maxConnectionsPerEndpoint: 1 }), connector);
    const a = track(pool.acquireSlow(5000));
    const c1 = connector.succeed('http1', 1);
    await flush();
    assert.ok(a.get()?.ok);
    const b = track(pool.acquireSlow(5000));
    assert.equal(connector.calls, 1);
    pool.onStreamDone(c1);
    await flush();
    assert.deepEqual(b.get(), { ok: true, conn: c1 });
    const c = track(pool.acquireSlow(5000));
    pool.onConnClosed(c1);
    assert.equal(pool.conns.length, 0);
    assert.equal(connector.calls, 2, 'the slot of the closed connection may be reconnected');
    const c2 = connector.succeed('http1', 1);
    await flush();
    assert.deepEqual(c.get(), { ok: true, conn: c2 });
  });

  it('closes idle connections after idleTimeout and keeps busy ones', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1', idleTimeoutMs: 1000 }), connector);
    const a = track(pool.acquireSlow(5000));
    const b = track(pool.acquireSlow(5000));
    const idle = connector.succeed('http1', 1);
    const busy = connector.succeed('http1', 1);
    await flush();
    assert.ok(a.get()?.ok && b.get()?.ok);
    pool.onStreamDone(idle); // idle from now on; `busy` keeps its stream
    advance(600);
    assert.equal(idle.closeCalls, 0, 'not idle long enough yet');
    assert.equal(pool.conns.length, 2);
    advance(600); // 1200 ms idle; the sweep (every 500 ms) has run at least once since 1000 ms
    assert.equal(idle.closeCalls, 1, 'the idle connection is closed');
    assert.equal(idle.isClosed, true);
    assert.equal(busy.closeCalls, 0, 'a connection with an active stream stays');
    assert.deepEqual(pool.conns, [busy]);
    assert.equal(pool.tryAcquire(), undefined);

    pool.onStreamDone(busy);
    advance(999);
    assert.equal(busy.closeCalls, 0);
    advance(600);
    assert.equal(busy.closeCalls, 1);
    assert.equal(pool.conns.length, 0);
  });

  it('a connection reused before its idle timeout is not closed', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1', idleTimeoutMs: 1000 }), connector);
    const a = track(pool.acquireSlow(5000));
    const conn = connector.succeed('http1', 1);
    await flush();
    assert.ok(a.get()?.ok);
    pool.onStreamDone(conn);
    advance(800);
    assert.equal(pool.tryAcquire(), conn);
    advance(800);
    pool.onStreamDone(conn); // idle again from here
    advance(800);
    assert.equal(conn.closeCalls, 0, 'idle time counts from the last stream, not from the connect');
    advance(800);
    assert.equal(conn.closeCalls, 1);
  });

  it('close() fails the waiters and closes every connection', async () => {
    const connector = new FakeConnector();
    const pool = new EndpointPool(ENDPOINT, cluster({ protocol: 'http1', maxConnectionsPerEndpoint: 1 }), connector);
    const a = track(pool.acquireSlow(5000));
    const conn = connector.succeed('http1', 1);
    await flush();
    assert.ok(a.get()?.ok);
    const b = track(pool.acquireSlow(5000));
    pool.close();
    await flush();
    assert.equal(errCode(b.get()), ErrorCode.NoEndpoint);
    assert.equal(conn.closeCalls, 1);
    const c = track(pool.acquireSlow(5000));
    await flush();
    assert.equal(errCode(c.get()), ErrorCode.NoEndpoint);
  });
});
