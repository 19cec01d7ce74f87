/**
 * Load balancing and the per-cluster resilience state (issue 5): which endpoint a request
 * goes to, how much retrying a cluster may do, and which endpoints are ejected.
 *
 * - `EndpointStats` lives on each EndpointPool: requests in flight, the peak-EWMA latency
 *   estimate, consecutive failures and the ejection state.
 * - `ClusterState` lives per cluster name (it outlives config swaps): in-flight and pending
 *   requests for the circuit breakers, the retry budget, counters for /metrics.
 * - `pickEndpoint` chooses among a cluster's pools: power of two choices over peak EWMA
 *   (default, Finagle/linkerd2's balancer), power of two choices over least requests, or round
 *   robin; ejected endpoints are skipped unless every endpoint is ejected (then all are used:
 *   better a degraded cluster than a 503 storm, Envoy's "panic" mode).
 *
 * Fast failures must not look attractive: a 5xx, 429, reset or connect failure is folded
 * into the latency estimate as at least FAILURE_PENALTY_MS, so an endpoint answering fast 503s
 * scores as a slow one; the estimate decays towards zero while no samples arrive, so a
 * penalised endpoint is probed again after a while.
 */
import type { ClusterConfig, LoadBalancerKind, OutlierDetection, RetryPolicy } from '../config/types.js';

/**
 * Latency assumed for an endpoint with no samples yet: optimistic, so a new (or restarted)
 * endpoint is probed soon instead of starving behind faster-measured ones (with linkerd2's
 * 30 ms default, an endpoint never sampled never beats endpoints measured faster than that);
 * its in-flight requests still multiply the cost, so it is not flooded before its first answer.
 */
export const DEFAULT_RTT_MS = 1;
/** What a failed exchange counts as, at least, in the latency estimate. */
export const FAILURE_PENALTY_MS = 1000;
/** Decay time constant of the peak-EWMA estimate (linkerd2 uses 10 s). */
export const EWMA_DECAY_MS = 10_000;

export class EndpointStats {
  /** Requests dispatched to this endpoint and not finished. */
  activeRequests: number;
  /** Peak-EWMA latency estimate, ms; 0 before the first sample. */
  ewmaMs: number;
  /** performance.now() of the last update of `ewmaMs`. */
  ewmaStamp: number;
  consecutive5xx: number;
  consecutiveConnectFailures: number;
  /** performance.now() until which the endpoint is ejected; 0 when it is not. */
  ejectedUntil: number;
  /** Times it was ejected (the next ejection lasts this many times the base). */
  ejections: number;
  requests: number;
  failures: number;

  constructor() {
    this.activeRequests = 0;
    this.ewmaMs = 0;
    this.ewmaStamp = 0;
    this.consecutive5xx = 0;
    this.consecutiveConnectFailures = 0;
    this.ejectedUntil = 0;
    this.ejections = 0;
    this.requests = 0;
    this.failures = 0;
  }

  /** The estimate now: it decays towards 0 while no sample arrives. */
  cost(now: number): number {
    if (this.ewmaStamp === 0) return DEFAULT_RTT_MS;
    const w = Math.exp(-(now - this.ewmaStamp) / EWMA_DECAY_MS);
    return this.ewmaMs * w;
  }

  /** Peak EWMA: a sample above the estimate replaces it; one below is averaged in. */
  observe(rttMs: number, now: number): void {
    const current = this.cost(now);
    if (rttMs > current) {
      this.ewmaMs = rttMs;
    } else {
      const w = this.ewmaStamp === 0 ? 0 : Math.exp(-(now - this.ewmaStamp) / EWMA_DECAY_MS);
      this.ewmaMs = current * w + rttMs * (1 - w);
    }
    this.ewmaStamp = now;
  }

  isEjected(now: number): boolean {
    if (this.ejectedUntil === 0) return false;
    if (now < this.ejectedUntil) return true;
    // The ejection ran out: back in rotation with clean counters and, like a new endpoint,
    // no latency history (its failure penalty would otherwise keep it idle for tens of
    // seconds; if it still fails, the first failures penalise and eject it again).
    this.ejectedUntil = 0;
    this.consecutive5xx = 0;
    this.consecutiveConnectFailures = 0;
    this.ewmaMs = 0;
    this.ewmaStamp = 0;
    return false;
  }
}

/**
 * Linkerd2-style retry budget: retries may add `budgetPercent` of the requests seen in the
 * last 10 s, plus `minRetriesPerSecond` × 10 s, so a failing cluster cannot be multiplied
 * into a retry storm. Ten one-second buckets, updated in place.
 */
export class RetryBudget {
  private readonly requests: Float64Array;
  private readonly retries: Float64Array;
  private second: number;

  constructor() {
    this.requests = new Float64Array(10);
    this.retries = new Float64Array(10);
    this.second = 0;
  }

  private roll(now: number): number {
    const s = Math.floor(now / 1000);
    if (s !== this.second) {
      const gap = Math.min(10, s - this.second);
      for (let i = 1; i <= gap; i++) {
        const b = (this.second + i) % 10;
        this.requests[b] = 0;
        this.retries[b] = 0;
      }
      this.second = s;
    }
    return s % 10;
  }

  onRequest(now: number): void {
    this.requests[this.roll(now)]++;
  }

  /** Retries still allowed in the window now. */
  remaining(policy: RetryPolicy, now: number): number {
    this.roll(now);
    let requests = 0;
    let retries = 0;
    for (let i = 0; i < 10; i++) {
      requests += this.requests[i];
      retries += this.retries[i];
    }
    const allowed = (requests * policy.budgetPercent) / 100 + policy.minRetriesPerSecond * 10;
    return Math.max(0, Math.floor(allowed - retries));
  }

  /** Takes one retry from the budget; false when it is spent. */
  tryAcquire(policy: RetryPolicy, now: number): boolean {
    if (this.remaining(policy, now) < 1) return false;
    this.retries[this.roll(now)]++;
    return true;
  }
}

export type RetryReason = 'connect-failure' | 'refused-stream' | 'reset' | '503' | 'gateway-error';

export class ClusterState {
  readonly name: string;
  /** Requests of this cluster between routing and release (circuit breaker maxRequests). */
  activeRequests: number;
  /** Requests waiting for a connection (circuit breaker maxPendingRequests). */
  pendingRequests: number;
  readonly budget: RetryBudget;
  // counters for /metrics
  retries: Record<RetryReason, number>;
  retriesBudgetExhausted: number;
  overflows: { maxRequests: number; maxPendingRequests: number; maxConnections: number };
  ejectionsTotal: number;
  /** Round-robin cursor. */
  cursor: number;
  /** The cluster's current pools (set by UpstreamPools): the maxConnections breaker and ejection shares. */
  pools: readonly PoolLike[];

  constructor(name: string) {
    this.name = name;
    this.activeRequests = 0;
    this.pendingRequests = 0;
    this.budget = new RetryBudget();
    this.retries = { 'connect-failure': 0, 'refused-stream': 0, reset: 0, '503': 0, 'gateway-error': 0 };
    this.retriesBudgetExhausted = 0;
    this.overflows = { maxRequests: 0, maxPendingRequests: 0, maxConnections: 0 };
    this.ejectionsTotal = 0;
    this.cursor = -1;
    this.pools = [];
  }

  /** Open and opening upstream connections across the cluster. */
  connectionCount(): number {
    let n = 0;
    for (const p of this.pools) n += p.conns.length + p.connecting;
    return n;
  }
}

/** What the balancer needs of a pool. */
export interface Balanced {
  readonly stats: EndpointStats;
}

/** What the cluster state needs of a pool. */
export interface PoolLike extends Balanced {
  readonly conns: readonly unknown[];
  readonly connecting: number;
}

/**
 * Picks an endpoint. `avoid` (the previous attempt's endpoint) is skipped when another
 * healthy one exists, so a retry goes elsewhere.
 */
export function pickEndpoint<P extends Balanced>(pools: readonly P[], kind: LoadBalancerKind, state: ClusterState, avoid: P | null, now: number): P | undefined {
  const n = pools.length;
  if (n === 0) return undefined;
  if (n === 1) return pools[0];
  let healthy = 0;
  for (let i = 0; i < n; i++) if (!pools[i].stats.isEjected(now) && pools[i] !== avoid) healthy++;
  // Every endpoint ejected (or only the avoided one left): fall back to all of them.
  const skipEjected = healthy > 0;
  if (kind === 'round-robin') {
    for (let tries = 0; tries < n; tries++) {
      state.cursor = (state.cursor + 1) % n;
      const p = pools[state.cursor];
      if (!skipEjected || (!p.stats.isEjected(now) && p !== avoid)) return p;
    }
    return pools[(state.cursor + 1) % n];
  }
  // Power of two choices: two distinct random candidates among the eligible ones. With one
  // eligible pool there is no second candidate: it is the answer. (The second draw used to
  // fall back to any pool, the avoided or an ejected one included, and win on a lower cost:
  // a retry went back to the endpoint that had just refused it, every time its penalised
  // estimate was below the healthy one's cost under load; test/regress/p2c-single-eligible.test.ts.)
  const a = randomEligible(pools, skipEjected, avoid, now, null);
  if (a === undefined) return pools[(Math.random() * n) | 0]; // not reached: n >= 2, and some pool is eligible
  const b = randomEligible(pools, skipEjected, avoid, now, a);
  if (b === undefined) return a;
  if (kind === 'least-request') return a.stats.activeRequests <= b.stats.activeRequests ? a : b;
  const ca = a.stats.cost(now) * (a.stats.activeRequests + 1);
  const cb = b.stats.cost(now) * (b.stats.activeRequests + 1);
  return ca <= cb ? a : b;
}

/** A random pool other than `not`, skipping ejected pools and `avoid` when `skipEjected`; undefined when none is left. */
function randomEligible<P extends Balanced>(pools: readonly P[], skipEjected: boolean, avoid: P | null, now: number, not: P | null): P | undefined {
  const n = pools.length;
  const start = (Math.random() * n) | 0;
  for (let i = 0; i < n; i++) {
    const p = pools[(start + i) % n];
    if (p === not) continue;
    if (skipEjected && (p.stats.isEjected(now) || p === avoid)) continue;
    return p;
  }
  return undefined;
}

/**
 * Records the outcome of one exchange with an endpoint for the balancer and outlier
 * detection: `rttMs` to the response head (or to the failure), `isFailure` for 5xx, 429,
 * resets and connect failures. Returns true when this outcome ejected the endpoint.
 */
export function recordOutcome(
  stats: EndpointStats,
  state: ClusterState,
  siblings: readonly Balanced[],
  cluster: ClusterConfig,
  rttMs: number,
  kind: 'ok' | '5xx' | 'throttled' | 'connect-failure' | 'reset',
  now: number,
): boolean {
  stats.requests++;
  const isFailure = kind !== 'ok';
  if (isFailure) stats.failures++;
  stats.observe(isFailure ? Math.max(rttMs, FAILURE_PENALTY_MS) : rttMs, now);
  if (kind === 'ok' || kind === 'throttled') {
    stats.consecutive5xx = 0;
    stats.consecutiveConnectFailures = 0;
    return false;
  }
  if (kind === 'connect-failure') stats.consecutiveConnectFailures++;
  else stats.consecutiveConnectFailures = 0;
  stats.consecutive5xx++;
  const od = cluster.outlierDetection;
  if (od === null || stats.ejectedUntil !== 0) return false;
  if (stats.consecutive5xx < od.consecutive5xx && stats.consecutiveConnectFailures < od.consecutiveConnectFailures) return false;
  return eject(stats, state, siblings, od, now);
}

function eject(stats: EndpointStats, state: ClusterState, siblings: readonly Balanced[], od: OutlierDetection, now: number): boolean {
  let ejected = 0;
  for (const s of siblings) if (s.stats.isEjected(now)) ejected++;
  const allowed = Math.floor((siblings.length * od.maxEjectionPercent) / 100);
  if (ejected + 1 > allowed) return false;
  stats.ejections++;
  stats.ejectedUntil = now + Math.min(od.baseEjectionTimeMs * stats.ejections, Math.max(od.maxEjectionTimeMs, od.baseEjectionTimeMs));
  state.ejectionsTotal++;
  return true;
}
