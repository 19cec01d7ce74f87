/**
 * Prometheus metrics, served by the admin port at /metrics.
 *
 * Per request: Istio's standard metrics with Istio's label names, so existing dashboards and
 * alerts work unchanged. They are Skiff's own series, not prom-client's: bench/micro/metrics.ts
 * measured prom-client at ~9-15 µs and 4.6-4.9 KB per request for one counter and three
 * histograms with ten labels (it hashes the label set on every call, cached children too),
 * OpenTelemetry's SDK at ~29-33 µs, and a Float64Array series at ~80 ns and 0 bytes; Skiff's
 * whole core is ~3 µs. A request finds its series through a chain of Maps keyed by strings it
 * already holds (listener, cluster, peer) and a small integer (status, flag, gRPC, protocol);
 * the label text is rendered once, when the series is made.
 *
 * prom-client still serves everything that is read at scrape time (pools, arena, frame
 * buffers, listeners, trace export, access log, Node's process metrics): those cost nothing
 * between scrapes, and its text is appended to ours.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { RequestContext } from '../context.js';
import type { ListenerDirection } from '../config/types.js';
import { responseFlagOf } from '../errors.js';
import { getHeader } from '../headers.js';
import { frameTotals } from '../frames.js';
import type { ClusterState, EndpointStats } from '../pool/balancer.js';

/** What the collectors read on scrape (the runtime satisfies it). */
export interface MetricsSource {
  readonly arena: { readonly hits: number; readonly misses: number; readonly live: number; readonly freeCount: number };
  readonly engine: { readonly inFlight: number; readonly requestsTotal: number };
  readonly pools: {
    all(): readonly {
      readonly key: string;
      readonly cluster: { readonly name: string };
      readonly conns: readonly { readonly activeStreams: number }[];
      readonly connecting: number;
      readonly pendingCount: number;
      readonly connectsStarted: number;
      readonly connectFailures: number;
      readonly stats: EndpointStats;
    }[];
  };
  /** Per cluster: its shared state and the retries its budget still allows. */
  clusterStates(): readonly { readonly state: ClusterState; readonly budgetRemaining: number }[];
  readonly listenerStats: readonly {
    readonly config: { readonly name: string; readonly direction: ListenerDirection };
    readonly connectionsOpened: number;
    readonly connectionsClosed: number;
    /** Connections refused at limits.maxConnections, and over the memory connection mark. */
    readonly connectionsRefusedAtLimit: number;
    readonly connectionsRefusedOverload: number;
  }[];
  /** The overload manager (src/overload.ts); absent in benches that have none. */
  readonly overload?: {
    readonly isShedding: boolean;
    readonly isRefusingConnections: boolean;
    readonly requestsShed: number;
    readonly heapUsed: number;
    readonly heapLimit: number;
  };
  traceStats(): { readonly exported: number; readonly droppedQueueFull: number; readonly droppedExportFailed: number; readonly queued: number } | null;
  accessLogLines(): number | null;
  /** Access log lines dropped at the buffer bound; absent or null without an access log. */
  accessLogDropped?(): number | null;
}

/** Istio's default buckets. */
const DURATION_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];
const BYTE_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000];
const DURATION_BOUNDS = Float64Array.from(DURATION_BUCKETS_MS);
const BYTE_BOUNDS = Float64Array.from(BYTE_BUCKETS);
const DURATION_LE = DURATION_BUCKETS_MS.map(String);
const BYTE_LE = BYTE_BUCKETS.map(String);

/** At most 16 (4 bits of the series key). */
const FLAGS = ['-', 'NR', 'NC', 'UH', 'UF', 'UO', 'UT', 'UC', 'UPE', 'DC', 'DPE', 'SI', 'OM'];
const FLAG_INDEX = new Map(FLAGS.map((f, i) => [f, i]));

/** Index of the first bucket whose bound is >= v; bounds.length for +Inf. */
function bucketOf(bounds: Float64Array, v: number): number {
  let i = 0;
  while (i < bounds.length && v > bounds[i]) i++;
  return i;
}

/**
 * One label combination: a request counter and three histograms. Bucket counts are kept
 * per bucket (made cumulative at scrape time); counts and sums live in typed arrays, so an
 * observation writes numbers in place and allocates nothing.
 */
class IstioSeries {
  /** `{reporter="...",...}` rendered once. */
  readonly labels: string;
  /** The same without the closing brace, for `le` to be appended. */
  readonly labelsOpen: string;
  readonly duration: Float64Array;
  readonly requestBytes: Float64Array;
  readonly responseBytes: Float64Array;
  /** [requests, duration sum, request bytes sum, response bytes sum]. */
  readonly totals: Float64Array;

  constructor(labels: string) {
    this.labels = `{${labels}}`;
    this.labelsOpen = `{${labels},`;
    this.duration = new Float64Array(DURATION_BOUNDS.length + 1);
    this.requestBytes = new Float64Array(BYTE_BOUNDS.length + 1);
    this.responseBytes = new Float64Array(BYTE_BOUNDS.length + 1);
    this.totals = new Float64Array(4);
  }

  observe(durationMs: number, requestBytes: number, responseBytes: number): void {
    const t = this.totals;
    t[0]++;
    t[1] += durationMs;
    t[2] += requestBytes;
    t[3] += responseBytes;
    this.duration[bucketOf(DURATION_BOUNDS, durationMs)]++;
    this.requestBytes[bucketOf(BYTE_BOUNDS, requestBytes)]++;
    this.responseBytes[bucketOf(BYTE_BOUNDS, responseBytes)]++;
  }
}

type SeriesByCode = Map<number, IstioSeries>;

export class Metrics {
  /** prom-client's registry: the scrape-time collectors and Node's process metrics. */
  readonly registry: Registry;
  /** This workload's name (the Istio workload labels of this side). */
  private readonly workload: string;
  /** listener -> cluster -> peer identity -> (status, flag, grpc, protocol) -> series. */
  private readonly cache: Map<string, Map<string, Map<string, SeriesByCode>>>;
  /** Every series, in creation order (the scrape walks this). */
  private readonly series: IstioSeries[];
  private readonly directions: Map<string, ListenerDirection>;

  constructor(workload: string, source: MetricsSource) {
    this.workload = workload;
    this.cache = new Map();
    this.series = [];
    this.directions = new Map();
    const registry = new Registry();
    this.registry = registry;
    registerInternals(registry, workload, source);
    collectDefaultMetrics({ register: registry });
  }

  /** Records one finished request; `now` is performance.now() at its end. */
  observe(ctx: RequestContext, now: number): void {
    this.seriesOf(ctx).observe(now - ctx.startTime, ctx.requestBody.totalBytes, ctx.responseBody.totalBytes);
  }

  private seriesOf(ctx: RequestContext): IstioSeries {
    let byCluster = this.cache.get(ctx.listenerName);
    if (byCluster === undefined) {
      byCluster = new Map();
      this.cache.set(ctx.listenerName, byCluster);
    }
    const clusterName = ctx.cluster === null ? 'unknown' : ctx.cluster.name;
    let byPeer = byCluster.get(clusterName);
    if (byPeer === undefined) {
      byPeer = new Map();
      byCluster.set(clusterName, byPeer);
    }
    let byCode = byPeer.get(ctx.peerIdentity);
    if (byCode === undefined) {
      byCode = new Map();
      byPeer.set(ctx.peerIdentity, byCode);
    }
    const flag = responseFlagOf(ctx.error);
    const isGrpc = isGrpcRequest(ctx.rawHeaders);
    const protocolIndex = ctx.protocol === 'http1' ? 0 : ctx.protocol === 'h2' ? 1 : 2;
    const key = ((ctx.responseStatus * 16 + (FLAG_INDEX.get(flag) ?? 0)) * 2 + (isGrpc ? 1 : 0)) * 4 + protocolIndex;
    let series = byCode.get(key);
    if (series === undefined) {
      series = new IstioSeries(this.labelsOf(ctx, clusterName, flag, isGrpc));
      byCode.set(key, series);
      this.series.push(series);
    }
    return series;
  }

  private labelsOf(ctx: RequestContext, clusterName: string, flag: string, isGrpc: boolean): string {
    let direction = this.directions.get(ctx.listenerName);
    if (direction === undefined) {
      direction = ctx.snapshot?.listeners.find((l) => l.name === ctx.listenerName)?.direction ?? 'inbound';
      this.directions.set(ctx.listenerName, direction);
    }
    const peer = ctx.peerIdentity === '' ? 'unknown' : ctx.peerIdentity;
    const isInbound = direction === 'inbound';
    const labels: [string, string][] = [
      ['reporter', isInbound ? 'destination' : 'source'],
      ['source_workload', isInbound ? workloadOf(ctx.peerIdentity) : this.workload],
      ['source_principal', isInbound ? peer : 'unknown'],
      ['destination_workload', isInbound ? this.workload : 'unknown'],
      ['destination_principal', isInbound ? 'unknown' : peer],
      ['destination_service', clusterName],
      ['request_protocol', isGrpc ? 'grpc' : 'http'],
      ['response_code', String(ctx.responseStatus)],
      ['response_flags', flag],
      ['downstream_protocol', ctx.protocol],
    ];
    return labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',');
  }

  /** The Prometheus text exposition: Skiff's request series, then prom-client's. */
  async scrape(): Promise<string> {
    const out: string[] = [];
    const all = this.series;
    out.push('# HELP istio_requests_total Requests handled, by Istio standard labels.', '# TYPE istio_requests_total counter');
    for (const s of all) out.push(`istio_requests_total${s.labels} ${s.totals[0]}`);
    histogram(out, 'istio_request_duration_milliseconds', 'Request duration from the first byte of the request to the end of the response, ms.', all, DURATION_LE, (s) => s.duration, 1);
    histogram(out, 'istio_request_bytes', 'Request body size, bytes.', all, BYTE_LE, (s) => s.requestBytes, 2);
    histogram(out, 'istio_response_bytes', 'Response body size, bytes.', all, BYTE_LE, (s) => s.responseBytes, 3);
    out.push('');
    return out.join('\n') + (await this.registry.metrics());
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

function histogram(
  out: string[],
  name: string,
  help: string,
  all: readonly IstioSeries[],
  le: readonly string[],
  pick: (s: IstioSeries) => Float64Array,
  sumIndex: number,
): void {
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
  for (const s of all) {
    const counts = pick(s);
    let cumulative = 0;
    for (let i = 0; i < le.length; i++) {
      cumulative += counts[i];
      out.push(`${name}_bucket${s.labelsOpen}le="${le[i]}"} ${cumulative}`);
    }
    cumulative += counts[le.length];
    out.push(`${name}_bucket${s.labelsOpen}le="+Inf"} ${cumulative}`);
    out.push(`${name}_sum${s.labels} ${s.totals[sumIndex]}`);
    out.push(`${name}_count${s.labels} ${s.totals[0]}`);
  }
}

/** Prometheus label value escaping: backslash, double quote, newline. */
function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** gRPC is told by the request's content type (application/grpc, application/grpc+proto, ...). */
function isGrpcRequest(raw: readonly string[]): boolean {
  const ct = getHeader(raw, 'content-type');
  return ct !== null && ct.length >= 16 && ct.startsWith('application/grpc');
}

/** The service account of a SPIFFE ID (spiffe://td/ns/NS/sa/SA), Istio's workload fallback. */
function workloadOf(identity: string): string {
  if (identity === '') return 'unknown';
  const at = identity.lastIndexOf('/sa/');
  return at < 0 ? identity : identity.slice(at + 4);
}

/** Gauges and counters read from Skiff's own state at scrape time. */
function registerInternals(registry: Registry, workload: string, src: MetricsSource): void {
  const registers = [registry];
  new Gauge({
    name: 'skiff_requests_in_flight',
    help: 'Requests between arrival and the end of their response.',
    registers,
    collect() {
      this.set(src.engine.inFlight);
    },
  });
  new Gauge({
    name: 'skiff_arena_free_contexts',
    help: 'Request contexts on the arena free list.',
    registers,
    collect() {
      this.set(src.arena.freeCount);
    },
  });
  new Gauge({
    name: 'skiff_arena_live_contexts',
    help: 'Request contexts in use.',
    registers,
    collect() {
      this.set(src.arena.live);
    },
  });
  new Counter({
    name: 'skiff_arena_misses_total',
    help: 'Contexts allocated because the free list was empty.',
    registers,
    collect() {
      this.reset();
      this.inc(src.arena.misses);
    },
  });
  new Gauge({
    name: 'skiff_buffered_frame_bytes',
    help: 'Body bytes waiting in frame queues (backpressure in action).',
    registers,
    collect() {
      this.set(frameTotals.bufferedBytes);
    },
  });
  const poolLabels = ['cluster', 'endpoint'] as const;
  new Gauge({
    name: 'skiff_pool_connections',
    help: 'Open upstream connections per endpoint.',
    labelNames: poolLabels,
    registers,
    collect() {
      this.reset();
      for (const p of src.pools.all()) this.set({ cluster: p.cluster.name, endpoint: p.key }, p.conns.length);
    },
  });
  new Gauge({
    name: 'skiff_pool_connecting',
    help: 'Upstream connections being opened per endpoint.',
    labelNames: poolLabels,
    registers,
    collect() {
      this.reset();
      for (const p of src.pools.all()) this.set({ cluster: p.cluster.name, endpoint: p.key }, p.connecting);
    },
  });
  new Gauge({
    name: 'skiff_pool_active_streams',
    help: 'Requests in flight on upstream connections per endpoint.',
    labelNames: poolLabels,
    registers,
    collect() {
      this.reset();
      for (const p of src.pools.all()) {
        let n = 0;
        for (const c of p.conns) n += c.activeStreams;
        this.set({ cluster: p.cluster.name, endpoint: p.key }, n);
      }
    },
  });
  new Gauge({
    name: 'skiff_pool_pending_requests',
    help: 'Requests waiting for an upstream connection per endpoint.',
    labelNames: poolLabels,
    registers,
    collect() {
      this.reset();
      for (const p of src.pools.all()) this.set({ cluster: p.cluster.name, endpoint: p.key }, p.pendingCount);
    },
  });
  new Counter({
    name: 'skiff_upstream_connect_failures_total',
    help: 'Failed upstream connection attempts per endpoint.',
    labelNames: poolLabels,
    registers,
    collect() {
      this.reset();
      for (const p of src.pools.all()) this.inc({ cluster: p.cluster.name, endpoint: p.key }, p.connectFailures);
    },
  });
  // ---- resilience: retries, budget, circuit breakers, outlier detection, balancer state ----
  new Counter({
    name: 'skiff_upstream_retries_total',
    help: 'Retries made, by cluster and condition.',
    labelNames: ['cluster', 'reason'] as const,
    registers,
    collect() {
      this.reset();
      for (const { state } of src.clusterStates()) {
        for (const [reason, n] of Object.entries(state.retries)) this.inc({ cluster: state.name, reason }, n);
      }
    },
  });
  new Counter({
    name: 'skiff_retry_budget_exhausted_total',
    help: 'Retries not made because the cluster retry budget was spent.',
    labelNames: ['cluster'] as const,
    registers,
    collect() {
      this.reset();
      for (const { state } of src.clusterStates()) this.inc({ cluster: state.name }, state.retriesBudgetExhausted);
    },
  });
  new Gauge({
    name: 'skiff_retry_budget_remaining',
    help: 'Retries the cluster retry budget still allows in its 10 s window.',
    labelNames: ['cluster'] as const,
    registers,
    collect() {
      this.reset();
      for (const { state, budgetRemaining } of src.clusterStates()) this.set({ cluster: state.name }, budgetRemaining);
    },
  });
  new Counter({
    name: 'skiff_circuit_breaker_overflows_total',
    help: 'Requests or connections refused by a cluster circuit breaker, by limit.',
    labelNames: ['cluster', 'limit'] as const,
    registers,
    collect() {
      this.reset();
      for (const { state } of src.clusterStates()) {
        for (const [limit, n] of Object.entries(state.overflows)) this.inc({ cluster: state.name, limit }, n);
      }
    },
  });
  new Counter({
    name: 'skiff_outlier_ejections_total',
    help: 'Endpoint ejections by outlier detection.',
    labelNames: ['cluster'] as const,
    registers,
    collect() {
      this.reset();
      for (const { state } of src.clusterStates()) this.inc({ cluster: state.name }, state.ejectionsTotal);
    },
  });
  new Gauge({
    name: 'skiff_endpoint_ejected',
    help: '1 while outlier detection has the endpoint ejected.',
    labelNames: poolLabels,
    registers,
    collect() {
      this.reset();
      const now = performance.now();
      for (const p of src.pools.all()) this.set({ cluster: p.cluster.name, endpoint: p.key }, p.stats.isEjected(now) ? 1 : 0);
    },
  });
  new Gauge({
    name: 'skiff_endpoint_latency_ewma_milliseconds',
    help: 'Peak-EWMA latency estimate per endpoint (what the p2c-ewma balancer compares).',
    labelNames: poolLabels,
    registers,
    collect() {
      this.reset();
      const now = performance.now();
      for (const p of src.pools.all()) this.set({ cluster: p.cluster.name, endpoint: p.key }, p.stats.cost(now));
    },
  });
  new Gauge({
    name: 'skiff_endpoint_active_requests',
    help: 'Requests in flight per endpoint.',
    labelNames: poolLabels,
    registers,
    collect() {
      this.reset();
      for (const p of src.pools.all()) this.set({ cluster: p.cluster.name, endpoint: p.key }, p.stats.activeRequests);
    },
  });
  const tcpLabels = ['reporter', 'listener', 'source_workload', 'destination_workload'] as const;
  const tcpLabelsOf = (l: MetricsSource['listenerStats'][number]): Record<(typeof tcpLabels)[number], string> => {
    const inbound = l.config.direction === 'inbound';
    return {
      reporter: inbound ? 'destination' : 'source',
      listener: l.config.name,
      source_workload: inbound ? 'unknown' : workload,
      destination_workload: inbound ? workload : 'unknown',
    };
  };
  new Counter({
    name: 'istio_tcp_connections_opened_total',
    help: 'Downstream connections accepted.',
    labelNames: tcpLabels,
    registers,
    collect() {
      this.reset();
      for (const l of src.listenerStats) this.inc(tcpLabelsOf(l), l.connectionsOpened);
    },
  });
  new Counter({
    name: 'istio_tcp_connections_closed_total',
    help: 'Downstream connections closed.',
    labelNames: tcpLabels,
    registers,
    collect() {
      this.reset();
      for (const l of src.listenerStats) this.inc(tcpLabelsOf(l), l.connectionsClosed);
    },
  });
  new Counter({
    name: 'skiff_downstream_connections_refused_total',
    help: 'Downstream connections closed at accept (QUIC: Initial datagrams dropped), by reason: max_connections (limits.maxConnections) or memory (limits.memoryConnectionWatermark).',
    labelNames: ['listener', 'reason'] as const,
    registers,
    collect() {
      this.reset();
      for (const l of src.listenerStats) {
        this.inc({ listener: l.config.name, reason: 'max_connections' }, l.connectionsRefusedAtLimit);
        this.inc({ listener: l.config.name, reason: 'memory' }, l.connectionsRefusedOverload);
      }
    },
  });
  // ---- overload manager (Envoy: overload.<action>.active, downstream_rq_overload_close) ----
  new Counter({
    name: 'skiff_overload_requests_shed_total',
    help: 'Requests answered 503 SKIFF_ERR_LOAD_SHED (flag OM) because the heap was over limits.memoryHighWatermark.',
    registers,
    collect() {
      this.reset();
      if (src.overload !== undefined) this.inc(src.overload.requestsShed);
    },
  });
  new Gauge({
    name: 'skiff_overload_active',
    help: '1 while an overload action is on: shed_requests (limits.memoryHighWatermark), refuse_connections (limits.memoryConnectionWatermark).',
    labelNames: ['action'] as const,
    registers,
    collect() {
      const o = src.overload;
      this.set({ action: 'shed_requests' }, o !== undefined && o.isShedding ? 1 : 0);
      this.set({ action: 'refuse_connections' }, o !== undefined && o.isRefusingConnections ? 1 : 0);
    },
  });
  new Gauge({
    name: 'skiff_overload_heap_used_ratio',
    help: "V8 heap in use over V8's heap limit at the overload manager's last sample (every 250 ms).",
    registers,
    collect() {
      const o = src.overload;
      this.set(o !== undefined && o.heapLimit > 0 ? o.heapUsed / o.heapLimit : 0);
    },
  });
  new Counter({
    name: 'skiff_upstream_connections_opened_total',
    help: 'Upstream connection attempts per endpoint.',
    labelNames: poolLabels,
    registers,
    collect() {
      this.reset();
      for (const p of src.pools.all()) this.inc({ cluster: p.cluster.name, endpoint: p.key }, p.connectsStarted);
    },
  });
  new Counter({
    name: 'skiff_trace_spans_exported_total',
    help: 'Spans the trace exporter delivered.',
    registers,
    collect() {
      this.reset();
      const s = src.traceStats();
      if (s !== null) this.inc(s.exported);
    },
  });
  new Counter({
    name: 'skiff_trace_spans_dropped_total',
    help: 'Spans dropped: the export queue was full, or the exporter failed to deliver them.',
    labelNames: ['reason'] as const,
    registers,
    collect() {
      this.reset();
      const s = src.traceStats();
      this.inc({ reason: 'queue_full' }, s === null ? 0 : s.droppedQueueFull);
      this.inc({ reason: 'export_failed' }, s === null ? 0 : s.droppedExportFailed);
    },
  });
  new Gauge({
    name: 'skiff_trace_spans_queued',
    help: 'Spans waiting for export.',
    registers,
    collect() {
      const s = src.traceStats();
      this.set(s === null ? 0 : s.queued);
    },
  });
  new Counter({
    name: 'skiff_access_log_lines_total',
    help: 'Access log lines written.',
    registers,
    collect() {
      this.reset();
      const n = src.accessLogLines();
      if (n !== null) this.inc(n);
    },
  });
  new Counter({
    name: 'skiff_access_log_lines_dropped_total',
    help: 'Access log lines dropped because the destination fell 16 MiB behind.',
    registers,
    collect() {
      this.reset();
      const n = src.accessLogDropped === undefined ? null : src.accessLogDropped();
      if (n !== null) this.inc(n);
    },
  });
}
