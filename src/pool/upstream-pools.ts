/**
 * UpstreamPools: every EndpointPool of the process, keyed by cluster, protocol and endpoint.
 * Pools outlive configuration snapshots: a swap that keeps an endpoint keeps its warm
 * connections; `retain()` after a swap closes pools whose endpoint is gone.
 */
import type { ClusterConfig } from '../config/types.js';
import { addressKey } from '../address.js';
import { EndpointPool } from './endpoint-pool.js';
import type { ConnectorSet } from './types.js';

export class UpstreamPools {
  private readonly byCluster: Map<string, EndpointPool[]>;
  private readonly connectors: ConnectorSet;
  /** Round-robin cursor per cluster name. */
  private readonly cursors: Map<string, number>;

  constructor(connectors: ConnectorSet) {
    this.byCluster = new Map();
    this.connectors = connectors;
    this.cursors = new Map();
  }

  /** The pools of a cluster (created on first use, recreated when the cluster changed). */
  poolsFor(cluster: ClusterConfig): EndpointPool[] {
    let pools = this.byCluster.get(cluster.name);
    if (pools !== undefined && pools.length > 0 && pools[0].cluster === cluster) return pools;
    pools = this.rebuild(cluster, pools);
    this.byCluster.set(cluster.name, pools);
    return pools;
  }

  private rebuild(cluster: ClusterConfig, old: EndpointPool[] | undefined): EndpointPool[] {
    const connector = this.connectors[cluster.protocol];
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
        next.push(new EndpointPool(ep, cluster, connector));
      }
    }
    for (const gone of byKey.values()) gone.close();
    return next;
  }

  /** Picks the next endpoint pool of the cluster, round robin. */
  pick(cluster: ClusterConfig): EndpointPool | undefined {
    const pools = this.poolsFor(cluster);
    if (pools.length === 0) return undefined;
    if (pools.length === 1) return pools[0];
    const n = ((this.cursors.get(cluster.name) ?? -1) + 1) % pools.length;
    this.cursors.set(cluster.name, n);
    return pools[n];
  }

  /** Closes the pools of clusters no longer in `names`. */
  retain(names: ReadonlySet<string>): void {
    for (const [name, pools] of this.byCluster) {
      if (names.has(name)) continue;
      for (const p of pools) p.close();
      this.byCluster.delete(name);
      this.cursors.delete(name);
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
    this.byCluster.clear();
  }
}

function sameTls(a: ClusterConfig, b: ClusterConfig): boolean {
  if (a.tls === b.tls) return true;
  if (a.tls === null || b.tls === null) return false;
  return a.tls.ca === b.tls.ca && a.tls.servername === b.tls.servername && a.tls.insecureSkipVerify === b.tls.insecureSkipVerify;
}
