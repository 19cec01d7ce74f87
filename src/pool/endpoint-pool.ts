/**
 * EndpointPool: the connections to one endpoint of one cluster (DESIGN invariant 5).
 *
 * - `tryAcquire()` is synchronous, never awaits, and allocates nothing on a hit: it scans the
 *   connection list for one with a free stream slot (for HTTP/1.1 a slot is the whole
 *   connection) and counts the stream.
 * - `acquireSlow(deadline)` opens a new connection when the per-endpoint limit allows, or else
 *   waits in a bounded FIFO for a slot; a waiter has a deadline (fail fast, 503/504) and the
 *   queue has a bound (503 overloaded).
 * - Idle connections close after the cluster's idle timeout (one sweep timer per pool).
 */
import { addressKey } from '../address.js';
import { ErrorCode, SkiffError } from '../errors.js';
import type { ClusterConfig, SocketAddress } from '../config/types.js';
import { ClusterState, EndpointStats } from './balancer.js';
import type { ConnEvents, Connector, UpstreamConn } from './types.js';

interface Waiter {
  resolve(conn: UpstreamConn): void;
  reject(err: SkiffError): void;
  timer: NodeJS.Timeout | null;
  isDone: boolean;
  holder: WaiterHolder | null;
}

/** A request's place in a pool's wait queue, opaque outside the pool. */
export type PoolWaiter = object;

/** Who waits (the request context): told its waiter so it can leave the queue when aborted. */
export interface WaiterHolder {
  poolWaiter: PoolWaiter | null;
}

const WAIT_CANCELLED = new SkiffError(ErrorCode.DownstreamReset, 'downstream', 'request left the connection queue');

export class EndpointPool implements ConnEvents {
  readonly key: string;
  readonly endpoint: SocketAddress;
  cluster: ClusterConfig;
  private readonly connector: Connector;
  readonly conns: UpstreamConn[];
  /** Connections being opened right now. */
  connecting: number;
  private readonly waiters: Waiter[];
  private sweepTimer: NodeJS.Timeout | null;
  isClosed: boolean;
  /** Removed by a config reload: takes no new requests, closes once idle (`drain()`). */
  isDraining: boolean;
  private drainTimer: NodeJS.Timeout | null;
  // counters for tests, metrics and the bench
  hits: number;
  slowAcquires: number;
  connectsStarted: number;
  connectFailures: number;
  /** Balancer and outlier-detection state (src/pool/balancer.ts). */
  readonly stats: EndpointStats;
  /** The cluster's shared state (circuit breakers, retry budget); set by UpstreamPools. */
  clusterState: ClusterState;

  constructor(endpoint: SocketAddress, cluster: ClusterConfig, connector: Connector, clusterState: ClusterState | null = null) {
    this.key = addressKey(endpoint);
    this.endpoint = endpoint;
    this.cluster = cluster;
    this.connector = connector;
    this.conns = [];
    this.connecting = 0;
    this.waiters = [];
    this.sweepTimer = null;
    this.isClosed = false;
    this.isDraining = false;
    this.drainTimer = null;
    this.hits = 0;
    this.slowAcquires = 0;
    this.connectsStarted = 0;
    this.connectFailures = 0;
    this.stats = new EndpointStats();
    this.clusterState = clusterState ?? new ClusterState(cluster.name);
  }

  /** A connection with a free stream slot, already counted; undefined when none. */
  tryAcquire(): UpstreamConn | undefined {
    const conns = this.conns;
    // Newest first: keeps a few connections hot and lets the rest go idle and close.
    for (let i = conns.length - 1; i >= 0; i--) {
      const c = conns[i];
      if (!c.isClosed && c.activeStreams < c.maxStreams) {
        c.activeStreams++;
        this.hits++;
        return c;
      }
    }
    return undefined;
  }

  /** The cold path: connect (or wait for a slot) until `deadlineMs` from now. */
  acquireSlow(deadlineMs: number, holder: WaiterHolder | null = null): Promise<UpstreamConn> {
    this.slowAcquires++;
    if (this.isClosed || this.isDraining) return Promise.reject(new SkiffError(ErrorCode.NoEndpoint, 'internal', 'endpoint removed', true));
    const hit = this.tryAcquire();
    if (hit !== undefined) return Promise.resolve(hit);
    if (this.waiters.length >= this.cluster.maxPendingPerEndpoint) {
      return Promise.reject(new SkiffError(ErrorCode.Overloaded, 'internal', `too many requests waiting for ${this.key}`, true));
    }
    return new Promise<UpstreamConn>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, timer: null, isDone: false, holder };
      if (holder !== null) holder.poolWaiter = waiter;
      if (deadlineMs > 0) {
        waiter.timer = setTimeout(() => {
          if (waiter.isDone) return;
          this.finishWaiter(waiter);
          this.removeWaiter(waiter);
          reject(new SkiffError(ErrorCode.ConnectTimeout, 'upstream', `no connection to ${this.key} within ${deadlineMs} ms`, true));
        }, deadlineMs);
      }
      this.waiters.push(waiter);
      this.maybeConnect();
    });
  }

  /** Open one more connection if waiters outnumber what is being opened and the limit allows. */
  private maybeConnect(): void {
    if (this.isClosed) return;
    if (this.waiters.length <= this.connecting * this.expectedStreamsPerConn()) return;
    if (this.conns.length + this.connecting >= this.cluster.maxConnectionsPerEndpoint) return;
    // Circuit breaker: connections across the whole cluster.
    if (this.clusterState.connectionCount() >= this.cluster.circuitBreakers.maxConnections) {
      this.clusterState.overflows.maxConnections++;
      return;
    }
    this.connecting++;
    this.connectsStarted++;
    this.connector.connect(this.endpoint, this.cluster, this).then(
      (conn) => this.onConnected(conn),
      (err: unknown) => this.onConnectFailed(err),
    );
  }

  private expectedStreamsPerConn(): number {
    // An HTTP/2 connection being opened will serve many waiters; HTTP/1.1 serves one.
    return this.cluster.protocol === 'http1' ? 1 : 100;
  }

  private onConnected(conn: UpstreamConn): void {
    this.connecting--;
    if (this.isClosed) {
      conn.close();
      return;
    }
    conn.idleSince = performance.now();
    this.conns.push(conn);
    this.ensureSweep();
    this.serveWaiters();
    this.maybeConnect();
    if (this.isDraining) this.closeIfDrained();
  }

  private onConnectFailed(err: unknown): void {
    this.connecting--;
    this.connectFailures++;
    const e = err instanceof SkiffError ? err : new SkiffError(ErrorCode.UpstreamConnect, 'upstream', String(err), true, err);
    // A failed connect fails the waiters it was opened for (fail fast), not the whole queue:
    // with several connects in flight the others may still succeed.
    const share = this.cluster.protocol === 'http1' ? 1 : this.waiters.length;
    for (let i = 0; i < share && this.waiters.length > 0; i++) {
      const w = this.waiters.shift() as Waiter;
      this.finishWaiter(w);
      w.reject(e);
    }
    if (this.connecting === 0 && this.conns.length === 0) {
      while (this.waiters.length > 0) {
        const w = this.waiters.shift() as Waiter;
        this.finishWaiter(w);
        w.reject(e);
      }
    }
    if (this.isDraining) this.closeIfDrained();
  }

  private serveWaiters(): void {
    while (this.waiters.length > 0) {
      const conn = this.tryAcquire();
      if (conn === undefined) break;
      this.hits--; // counted as a slow acquire, not a hit
      const w = this.waiters.shift() as Waiter;
      this.finishWaiter(w);
      w.resolve(conn);
    }
  }

  private finishWaiter(w: Waiter): void {
    w.isDone = true;
    if (w.timer !== null) clearTimeout(w.timer);
    w.timer = null;
    const h = w.holder;
    if (h !== null && h.poolWaiter === w) h.poolWaiter = null;
    w.holder = null;
  }

  /**
   * Takes an aborted request out of the wait queue at once (its promise rejects), so a burst of
   * requests reset while waiting does not hold the queue until connections free up.
   */
  cancelWaiter(waiter: PoolWaiter): void {
    const w = waiter as Waiter;
    if (w.isDone) return;
    this.finishWaiter(w);
    this.removeWaiter(w);
    w.reject(WAIT_CANCELLED);
  }


  private removeWaiter(w: Waiter): void {
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  // ---- ConnEvents ----

  onStreamDone(conn: UpstreamConn): void {
    conn.activeStreams--;
    if (conn.activeStreams === 0) conn.idleSince = performance.now();
    if (this.waiters.length > 0 && !conn.isClosed) this.serveWaiters();
    if (this.isDraining) this.closeIfDrained();
  }

  onConnClosed(conn: UpstreamConn): void {
    conn.isClosed = true;
    const i = this.conns.indexOf(conn);
    if (i >= 0) this.conns.splice(i, 1);
    if (this.waiters.length > 0) this.maybeConnect();
    if (this.isDraining) this.closeIfDrained();
  }

  onCapacity(conn: UpstreamConn): void {
    if (!conn.isClosed && this.waiters.length > 0) this.serveWaiters();
  }

  private ensureSweep(): void {
    if (this.sweepTimer !== null || this.cluster.idleTimeoutMs <= 0) return;
    const period = Math.max(250, Math.min(this.cluster.idleTimeoutMs >>> 1, 5000));
    this.sweepTimer = setInterval(() => this.sweep(), period);
    this.sweepTimer.unref();
  }

  private sweep(): void {
    const now = performance.now();
    const idleMs = this.cluster.idleTimeoutMs;
    for (let i = this.conns.length - 1; i >= 0; i--) {
      const c = this.conns[i];
      if (c.activeStreams === 0 && now - c.idleSince >= idleMs) {
        this.conns.splice(i, 1);
        c.isClosed = true;
        c.close();
      }
    }
    if (this.conns.length === 0 && this.sweepTimer !== null) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = null;
    }
  }

  get pendingCount(): number {
    return this.waiters.length;
  }

  /**
   * The endpoint left the config (or its cluster's transport changed): no new requests, but
   * requests holding or waiting for a connection finish; the pool closes once nothing is in
   * flight, or after `maxMs` (> 0) at the latest. Rejected alternative: `close()` at once,
   * which resets in-flight requests on every reload that drops an endpoint.
   */
  drain(maxMs: number): void {
    if (this.isClosed || this.isDraining) return;
    this.isDraining = true;
    if (maxMs > 0) {
      this.drainTimer = setTimeout(() => this.close(), maxMs);
      this.drainTimer.unref();
    }
    this.closeIfDrained();
  }

  private closeIfDrained(): void {
    if (this.isClosed || this.waiters.length > 0 || this.connecting > 0) return;
    for (const c of this.conns) if (!c.isClosed && c.activeStreams > 0) return;
    this.close();
  }

  /** Closes every connection and fails every waiter (endpoint removed or shutdown). */
  close(): void {
    this.isClosed = true;
    if (this.drainTimer !== null) clearTimeout(this.drainTimer);
    this.drainTimer = null;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    const err = new SkiffError(ErrorCode.NoEndpoint, 'internal', `endpoint ${this.key} removed`, true);
    while (this.waiters.length > 0) {
      const w = this.waiters.shift() as Waiter;
      this.finishWaiter(w);
      w.reject(err);
    }
    for (const c of this.conns.splice(0)) {
      c.isClosed = true;
      c.close();
    }
  }
}
