/**
 * UpstreamPools: every EndpointPool of the process, keyed by cluster, protocol and endpoint.
 * Pools outlive configuration snapshots: a swap that keeps an endpoint keeps its warm
 * connections; `reconcile()` after a swap (a config reload) drains pools whose endpoint is
 * gone; `retain()` closes the pools of removed clusters at once.
 */
import type { ClusterConfig, ConfigSnapshot } from '../config/types.js';
import { addressKey } from '../address.js';
import { EndpointPool } from './endpoint-pool.js';
import { ClusterState, pickEndpoint } from './balancer.js';
import type { ConnectorSet } from './types.js';

export class UpstreamPools {
  private readonly byCluster: Map<string, EndpointPool[]>;
  private readonly connectors: ConnectorSet;
  /** Per cluster name: circuit-breaker counts, retry budget, balancer cursor (outlives swaps). */
  private readonly states: Map<string, ClusterState>;
  /** The clusters of the last reconciled snapshot; null before the first reload. */
  private latest: ReadonlyMap<string, ClusterConfig> | null;
  /** Pools a reload removed, finishing their in-flight requests (closed at shutdown). */
  private readonly draining: Set<EndpointPool>;
  private drainMs: number;

  constructor(connectors: ConnectorSet) {
    this.byCluster = new Map();
    this.connectors = connectors;
    this.states = new Map();
    this.latest = null;
    this.draining = new Set();
    this.drainMs = DEFAULT_DRAIN_MS;
  }

  /** The cluster's shared state, created on first use. */
  stateOf(cluster: ClusterConfig): ClusterState {
    let state = this.states.get(cluster.name);
    if (state === undefined) {
      state = new ClusterState(cluster.name);
      this.states.set(cluster.name, state);
    }
    return state;
  }

  /** Every cluster state, for /metrics. */
  allStates(): ClusterState[] {
    return [...this.states.values()];
  }

  /** The pools of a cluster (created on first use, recreated when the cluster changed). */
  poolsFor(cluster: ClusterConfig): EndpointPool[] {
    let pools = this.byCluster.get(cluster.name);
    if (pools !== undefined && pools.length > 0 && pools[0].cluster === cluster) return pools;
    // After a reload, a request still on the previous snapshot (a retry) names an older
    // ClusterConfig: it gets the current pools; rebuilding for it would undo the reload.
    const target = this.latest === null ? cluster : this.latest.get(cluster.name);
    if (target === undefined) return NO_POOLS; // the cluster is gone: 503 no endpoint
    if (pools !== undefined && pools.length > 0 && pools[0].cluster === target) return pools;
    pools = this.rebuild(target, pools);
    this.byCluster.set(cluster.name, pools);
    return pools;
  }

  /**
   * Called by the runtime right after a config swap. Pools of endpoints that stay keep their
   * connections and read the new ClusterConfig (limits) from now on; pools of removed
   * endpoints and clusters, and every pool of a cluster whose protocol or TLS changed, are
   * drained: no new requests, in-flight ones finish, closed once idle (or after the drain
   * timeout). New endpoints get pools (new clusters on first use).
   */
  reconcile(snapshot: ConfigSnapshot): void {
    this.latest = snapshot.clusters;
    this.drainMs = snapshot.limits.drainTimeoutMs;
    for (const p of this.draining) if (p.isClosed) this.draining.delete(p);
    for (const [name, pools] of this.byCluster) {
      const next = snapshot.clusters.get(name);
      if (next !== undefined) {
        this.byCluster.set(name, this.rebuild(next, pools));
        continue;
      }
      for (const p of pools) this.retire(p);
      this.byCluster.delete(name);
      this.states.delete(name);
    }
  }

  private retire(pool: EndpointPool): void {
    this.draining.add(pool);
    pool.drain(this.drainMs);
  }

  private rebuild(cluster: ClusterConfig, old: EndpointPool[] | undefined): EndpointPool[] {
    const connector = this.connectors[cluster.protocol];
    const state = this.stateOf(cluster);
    const next: EndpointPool[] = [];
    const byKey = new Map<string, EndpointPool>();
    if (old !== undefined) for (const p of old) byKey.set(p.key, p);
    for (const ep of cluster.endpoints) {
      const key = addressKey(ep);
      const prev = byKey.get(key);
      if (prev !== undefined && prev.cluster.protocol === cluster.protocol && sameTls(prev.cluster, cluster)) {
        prev.cluster = cluster;
        byKey.delete(key);
        next.push(prev);
      } else {
        next.push(new EndpointPool(ep, cluster, connector, state));
      }
    }
    for (const gone of byKey.values()) this.retire(gone);
    state.pools = next;
    return next;
  }

  /**
   * Picks an endpoint pool of the cluster with its load balancer (src/pool/balancer.ts);
   * `avoid` is the previous attempt's pool (a retry goes elsewhere when it can).
   */
  pick(cluster: ClusterConfig, avoid: EndpointPool | null = null): EndpointPool | undefined {
    const pools = this.poolsFor(cluster);
    if (pools.length <= 1) return pools.length === 0 ? undefined : pools[0];
    return pickEndpoint(pools, cluster.loadBalancer, pools[0].clusterState, avoid, performance.now());
  }

  /** Closes the pools of clusters no longer in `names`. */
  retain(names: ReadonlySet<string>): void {
    for (const [name, pools] of this.byCluster) {
      if (names.has(name)) continue;
      for (const p of pools) p.close();
      this.byCluster.delete(name);
      this.states.delete(name);
    }
  }

  /** Every pool, for stats and shutdown. */
  all(): EndpointPool[] {
    const out: EndpointPool[] = [];
    for (const pools of this.byCluster.values()) out.push(...pools);
    return out;
  }

  close(): void {
    for (const p of this.all()) p.close();
    for (const p of this.draining) p.close();
    this.draining.clear();
    this.byCluster.clear();
  }
}

const NO_POOLS: EndpointPool[] = [];
/** Until a reload says otherwise (limits.drainTimeout's default). */
const DEFAULT_DRAIN_MS = 20_000;

/** Same transport security: a change drains and replaces the cluster's pools. */
function sameTls(a: ClusterConfig, b: ClusterConfig): boolean {
  if (a.meshTls !== b.meshTls || a.peerIdentity !== b.peerIdentity) return false;
  if (a.tls === b.tls) return true;
  if (a.tls === null || b.tls === null) return false;
  return a.tls.ca === b.tls.ca && a.tls.servername === b.tls.servername && a.tls.insecureSkipVerify === b.tls.insecureSkipVerify;
}
