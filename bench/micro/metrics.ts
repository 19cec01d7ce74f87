/**
 * `node --expose-gc dist/bench/micro/metrics.js [--rounds 3 --time 1000 --warmup-time 250 --filter text]`
 *
 * What Istio-style request metrics cost per finished request, by approach, to choose how Skiff
 * exposes Prometheus metrics. One operation = one finished request recorded into a counter
 * `istio_requests_total` and three histograms (`istio_request_duration_milliseconds`,
 * `istio_request_bytes`, `istio_response_bytes`), 9 labels, the requests drawn from a fixed
 * stream over 20 label combinations (5 destination clusters x 4 status codes, mostly 200s):
 *
 *   (a)  prom-client, a labels object built per request, `inc(labels, 1)` / `observe(labels, v)`
 *   (b)  prom-client, children cached by the caller in a Map keyed by (cluster slot, status):
 *        `child.inc()` + 3 x `child.observe(v)`
 *   (c)  @opentelemetry/sdk-metrics (MeterProvider + a manual MetricReader), attributes object
 *        built per request; (c2) the same with the attributes objects cached per combination
 *   (d)  hand-written: per series one counter and three Float64Array bucket arrays (the floor)
 *
 * and one scrape with 200 series per metric (50 clusters x 4 codes) for prom-client
 * (`registry.metrics()`), OpenTelemetry (`reader.collect()` + `PrometheusSerializer`) and the
 * hand-written series (a plain serializer over precomputed label text).
 *
 * Method as bench/micro/run.ts: tinybench 6 times each call of a case's `run`, which performs
 * `batch` operations in a loop written out in the case itself (one loop per case, so the calls
 * inside stay monomorphic); allocation by GC accounting (bench/lib/alloc-profile.ts) over
 * ~200,000 operations (200 scrapes), the empty window's own cost subtracted; each round is a
 * separate process, the table shows medians over rounds. Every case is checked once before
 * timing (values recorded, scrape text has 200 series per metric).
 *
 * Writes bench/results/metrics-micro.json.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Attributes, Counter as OtelCounter, Histogram as OtelHistogram } from '@opentelemetry/api';
import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import client from 'prom-client';
import { Bench } from 'tinybench';
import { REPO_ROOT, fmt, gitState, numberFlag, parseFlags, table } from '../lib/alloc-common.js';
import type { ClusterConfig } from '../../src/config/types.js';
import { RequestContext } from '../../src/context.js';
import { Metrics, type MetricsSource } from '../../src/telemetry/metrics.js';
import { GcAccounting, accountAllocations } from '../lib/alloc-profile.js';

const BATCH = 1000;
const ALLOC_OPS = 200_000;
const ALLOC_SCRAPES = 200;

// ---- the metrics ----------------------------------------------------------------------------

const LABELS = [
  'reporter',
  'source_workload',
  'source_principal',
  'destination_workload',
  'destination_service',
  'destination_principal',
  'request_protocol',
  'response_code',
  'response_flags',
] as const;
type LabelName = (typeof LABELS)[number];

const DURATION_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];
const BYTES_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000];

const SELF_WORKLOAD = 'frontend-v1';
const SELF_PRINCIPAL = 'spiffe://cluster.local/ns/shop/sa/frontend';
const STATUSES = [200, 201, 404, 503] as const;

/** A destination cluster as the sidecar knows it; `slot` is its index in the cluster table. */
interface ClusterInfo {
  readonly slot: number;
  readonly destinationService: string;
  readonly destinationWorkload: string;
  readonly destinationPrincipal: string;
  readonly protocol: string;
}

/** What a finished request hands to telemetry. */
interface FinishedRequest {
  readonly cluster: ClusterInfo;
  readonly status: number;
  readonly durationMs: number;
  readonly requestBytes: number;
  readonly responseBytes: number;
}

const SERVICES = ['productpage', 'reviews', 'ratings', 'details', 'checkout', 'cart', 'catalog', 'payments', 'shipping', 'users'];

function makeClusters(n: number): ClusterInfo[] {
  const out: ClusterInfo[] = [];
  for (let i = 0; i < n; i++) {
    const name = i < SERVICES.length ? SERVICES[i] : `${SERVICES[i % SERVICES.length]}-${(i / SERVICES.length) | 0}`;
    out.push({
      slot: i,
      destinationService: `${name}.shop.svc.cluster.local`,
      destinationWorkload: `${name}-v1`,
      destinationPrincipal: `spiffe://cluster.local/ns/shop/sa/${name}`,
      protocol: i % 5 === 4 ? 'grpc' : 'http',
    });
  }
  return out;
}

/** Deterministic PRNG (mulberry32) so every process sees the same request stream. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` requests over the clusters: 85% 200, 5% 201, 7% 404, 3% 503; log-uniform sizes/times. */
function makeStream(clusters: readonly ClusterInfo[], n: number, seed: number): FinishedRequest[] {
  const r = rng(seed);
  const out: FinishedRequest[] = [];
  for (let i = 0; i < n; i++) {
    const u = r();
    const status = u < 0.85 ? 200 : u < 0.9 ? 201 : u < 0.97 ? 404 : 503;
    out.push({
      cluster: clusters[(r() * clusters.length) | 0],
      status,
      durationMs: Math.round(Math.exp(Math.log(0.3) + r() * Math.log(3000 / 0.3)) * 1000) / 1000,
      requestBytes: Math.round(Math.exp(r() * Math.log(20_000))),
      responseBytes: Math.round(Math.exp(Math.log(100) + r() * Math.log(10_000))),
    });
  }
  return out;
}

const STREAM_SIZE = 4096; // a power of two: the cursor wraps with a mask
const MASK = STREAM_SIZE - 1;

/** Every (cluster, status) pair once, for the scrape fixtures (each series must exist). */
function everyCombination(clusters: readonly ClusterInfo[], seed: number): FinishedRequest[] {
  const r = rng(seed);
  const out: FinishedRequest[] = [];
  for (const cluster of clusters) {
    for (const status of STATUSES) {
      for (let k = 0; k < 3; k++) {
        out.push({ cluster, status, durationMs: 1 + r() * 500, requestBytes: (r() * 5000) | 0, responseBytes: (r() * 100_000) | 0 });
      }
    }
  }
  return out;
}

/** Small integer key of a label combination (all labels but these two are fixed per cluster). */
function comboKey(r: FinishedRequest): number {
  return (r.cluster.slot << 10) | r.status;
}

function responseFlags(status: number): string {
  return status === 503 ? 'UF' : '-';
}

/** The labels object of a request, built the obvious way (a fresh object literal). */
function labelsOf(r: FinishedRequest): Record<LabelName, string | number> {
  return {
    reporter: 'source',
    source_workload: SELF_WORKLOAD,
    source_principal: SELF_PRINCIPAL,
    destination_workload: r.cluster.destinationWorkload,
    destination_service: r.cluster.destinationService,
    destination_principal: r.cluster.destinationPrincipal,
    request_protocol: r.cluster.protocol,
    response_code: r.status,
    response_flags: responseFlags(r.status),
  };
}

// ---- (a), (b): prom-client --------------------------------------------------------------------

interface PromMetrics {
  readonly registry: client.Registry;
  readonly requests: client.Counter<LabelName>;
  readonly duration: client.Histogram<LabelName>;
  readonly requestBytes: client.Histogram<LabelName>;
  readonly responseBytes: client.Histogram<LabelName>;
}

function promMetrics(): PromMetrics {
  const registry = new client.Registry();
  const labelNames = [...LABELS];
  return {
    registry,
    requests: new client.Counter({ name: 'istio_requests_total', help: 'Requests', labelNames, registers: [registry] }),
    duration: new client.Histogram({ name: 'istio_request_duration_milliseconds', help: 'Duration', labelNames, buckets: DURATION_BUCKETS, registers: [registry] }),
    requestBytes: new client.Histogram({ name: 'istio_request_bytes', help: 'Request size', labelNames, buckets: BYTES_BUCKETS, registers: [registry] }),
    responseBytes: new client.Histogram({ name: 'istio_response_bytes', help: 'Response size', labelNames, buckets: BYTES_BUCKETS, registers: [registry] }),
  };
}

function promRecordObvious(m: PromMetrics, r: FinishedRequest): void {
  const labels = labelsOf(r);
  m.requests.inc(labels, 1);
  m.duration.observe(labels, r.durationMs);
  m.requestBytes.observe(labels, r.requestBytes);
  m.responseBytes.observe(labels, r.responseBytes);
}

interface PromChildren {
  readonly requests: client.Counter.Internal;
  readonly duration: client.Histogram.Internal<LabelName>;
  readonly requestBytes: client.Histogram.Internal<LabelName>;
  readonly responseBytes: client.Histogram.Internal<LabelName>;
}

/** The cache-miss path of (b): the children of one combination, made once. */
function promChildren(m: PromMetrics, cache: Map<number, PromChildren>, r: FinishedRequest): PromChildren {
  const labels = labelsOf(r);
  const ch: PromChildren = {
    requests: m.requests.labels(labels),
    duration: m.duration.labels(labels),
    requestBytes: m.requestBytes.labels(labels),
    responseBytes: m.responseBytes.labels(labels),
  };
  cache.set(comboKey(r), ch);
  return ch;
}

// ---- (c): OpenTelemetry sdk-metrics -----------------------------------------------------------

/** A reader that only collects when asked (a scrape). */
class ManualReader extends MetricReader {
  protected override onShutdown(): Promise<void> {
    return Promise.resolve();
  }

  protected override onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
}

interface OtelMetrics {
  readonly provider: MeterProvider;
  readonly reader: ManualReader;
  readonly requests: OtelCounter;
  readonly duration: OtelHistogram;
  readonly requestBytes: OtelHistogram;
  readonly responseBytes: OtelHistogram;
}

function otelMetrics(): OtelMetrics {
  const reader = new ManualReader();
  const provider = new MeterProvider({ readers: [reader] });
  const meter = provider.getMeter('skiff-bench');
  return {
    provider,
    reader,
    requests: meter.createCounter('istio_requests_total', { description: 'Requests' }),
    duration: meter.createHistogram('istio_request_duration_milliseconds', { description: 'Duration', advice: { explicitBucketBoundaries: DURATION_BUCKETS } }),
    requestBytes: meter.createHistogram('istio_request_bytes', { description: 'Request size', advice: { explicitBucketBoundaries: BYTES_BUCKETS } }),
    responseBytes: meter.createHistogram('istio_response_bytes', { description: 'Response size', advice: { explicitBucketBoundaries: BYTES_BUCKETS } }),
  };
}

function otelAttributes(r: FinishedRequest): Attributes {
  return labelsOf(r);
}

function otelRecord(m: OtelMetrics, r: FinishedRequest, attrs: Attributes): void {
  m.requests.add(1, attrs);
  m.duration.record(r.durationMs, attrs);
  m.requestBytes.record(r.requestBytes, attrs);
  m.responseBytes.record(r.responseBytes, attrs);
}

const otelSerializer = new PrometheusSerializer('', false, undefined, true, true);

async function otelScrape(m: OtelMetrics): Promise<string> {
  const { resourceMetrics } = await m.reader.collect();
  // exporter-prometheus carries its own copy of sdk-metrics (2.12.0 vs the hoisted 2.12.1):
  // the data is plain objects of the same shape, the declared types are nominally different.
  return otelSerializer.serialize(resourceMetrics as unknown as Parameters<PrometheusSerializer['serialize']>[0]);
}

// ---- (d): hand-written ------------------------------------------------------------------------

const DURATION_BOUNDS = Float64Array.from(DURATION_BUCKETS);
const BYTES_BOUNDS = Float64Array.from(BYTES_BUCKETS);

/** Index of the first bound >= v (bounds.length = the +Inf bucket). */
function bucketIndex(bounds: Float64Array, v: number): number {
  let i = 0;
  const n = bounds.length;
  while (i < n && v > bounds[i]) i++;
  return i;
}

/**
 * One label combination: a counter and three histograms (per-bucket counts, cumulated at
 * scrape time). The sums live in a Float64Array too: a number field that outgrows a small
 * integer may be stored boxed, and then every `+=` allocates a 16-byte heap number.
 */
class IstioSeries {
  /** `reporter="source",...` (no braces), escaped once. */
  readonly labelText: string;
  requests: number;
  readonly duration: Float64Array;
  readonly requestBytes: Float64Array;
  readonly responseBytes: Float64Array;
  /** [duration, request bytes, response bytes] sums. */
  readonly sums: Float64Array;

  constructor(labelText: string) {
    this.labelText = labelText;
    this.requests = 0;
    this.duration = new Float64Array(DURATION_BOUNDS.length + 1);
    this.requestBytes = new Float64Array(BYTES_BOUNDS.length + 1);
    this.responseBytes = new Float64Array(BYTES_BOUNDS.length + 1);
    this.sums = new Float64Array(3);
  }

  record(r: FinishedRequest): void {
    this.requests++;
    this.duration[bucketIndex(DURATION_BOUNDS, r.durationMs)]++;
    this.requestBytes[bucketIndex(BYTES_BOUNDS, r.requestBytes)]++;
    this.responseBytes[bucketIndex(BYTES_BOUNDS, r.responseBytes)]++;
    const sums = this.sums;
    sums[0] += r.durationMs;
    sums[1] += r.requestBytes;
    sums[2] += r.responseBytes;
  }
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function handSeries(cache: Map<number, IstioSeries>, all: IstioSeries[], r: FinishedRequest): IstioSeries {
  const labels = labelsOf(r);
  const text = LABELS.map((k) => `${k}="${escapeLabel(String(labels[k]))}"`).join(',');
  const s = new IstioSeries(text);
  cache.set(comboKey(r), s);
  all.push(s);
  return s;
}

const DURATION_LE = DURATION_BUCKETS.map((b) => `,le="${b}"} `);
const BYTES_LE = BYTES_BUCKETS.map((b) => `,le="${b}"} `);

function handHistogram(out: string[], name: string, series: readonly IstioSeries[], pick: (s: IstioSeries) => Float64Array, sum: (s: IstioSeries) => number, le: readonly string[]): void {
  out.push(`# HELP ${name} ${name}\n# TYPE ${name} histogram\n`);
  for (const s of series) {
    const counts = pick(s);
    let acc = 0;
    let text = '';
    for (let i = 0; i < le.length; i++) {
      acc += counts[i];
      text += `${name}_bucket{${s.labelText}${le[i]}${acc}\n`;
    }
    acc += counts[le.length];
    text += `${name}_bucket{${s.labelText},le="+Inf"} ${acc}\n${name}_sum{${s.labelText}} ${sum(s)}\n${name}_count{${s.labelText}} ${acc}\n`;
    out.push(text);
  }
}

/** Prometheus text of the hand-written series (what an /metrics handler would send). */
function handScrape(series: readonly IstioSeries[]): string {
  const out: string[] = ['# HELP istio_requests_total istio_requests_total\n# TYPE istio_requests_total counter\n'];
  for (const s of series) out.push(`istio_requests_total{${s.labelText}} ${s.requests}\n`);
  handHistogram(out, 'istio_request_duration_milliseconds', series, (s) => s.duration, (s) => s.sums[0], DURATION_LE);
  handHistogram(out, 'istio_request_bytes', series, (s) => s.requestBytes, (s) => s.sums[1], BYTES_LE);
  handHistogram(out, 'istio_response_bytes', series, (s) => s.responseBytes, (s) => s.sums[2], BYTES_LE);
  return out.join('');
}

// ---- checks -----------------------------------------------------------------------------------

function assert(cond: boolean, message: string): void {
  if (!cond) throw new Error(`metrics micro fixture: ${message}`);
}

/** Series per family and the total of `istio_requests_total` and of the duration `_count`s. */
function textSummary(text: string): { counterSeries: number; durationSeries: number; requests: number; durationCount: number } {
  let counterSeries = 0;
  let durationSeries = 0;
  let requests = 0;
  let durationCount = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('istio_requests_total{')) {
      counterSeries++;
      requests += Number(line.slice(line.lastIndexOf(' ') + 1));
    } else if (line.startsWith('istio_request_duration_milliseconds_count{')) {
      durationSeries++;
      durationCount += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return { counterSeries, durationSeries, requests, durationCount };
}

function checkScrape(text: string, series: number, requests: number, what: string): void {
  const s = textSummary(text);
  assert(s.counterSeries === series && s.durationSeries === series, `${what}: ${s.counterSeries} counter / ${s.durationSeries} histogram series, expected ${series}`);
  assert(s.requests === requests && s.durationCount === requests, `${what}: ${s.requests} requests / ${s.durationCount} durations counted, expected ${requests}`);
}

// ---- cases ------------------------------------------------------------------------------------

interface MetricsCase {
  readonly name: string;
  readonly batch: number;
  readonly op: string;
  /** Sync observation cases set `run`; scrape cases set `runAsync` (batch 1). */
  readonly run?: () => void;
  readonly runAsync?: () => Promise<void>;
  readonly check: () => Promise<void>;
}

const sink: { value: unknown; count: number } = { value: null, count: 0 };

function buildCases(): MetricsCase[] {
  const clusters = makeClusters(5);
  const stream = makeStream(clusters, STREAM_SIZE, 42);
  const cases: MetricsCase[] = [];
  const OP = 'one request (1 inc + 3 observe)';

  // (a) prom-client, the obvious way.
  const pa = promMetrics();
  let posA = 0;
  cases.push({
    name: '(a) prom-client inc/observe(labels, v)',
    batch: BATCH,
    op: OP,
    run: () => {
      for (let i = 0; i < BATCH; i++) {
        const r = stream[posA++ & MASK];
        const labels = labelsOf(r);
        pa.requests.inc(labels, 1);
        pa.duration.observe(labels, r.durationMs);
        pa.requestBytes.observe(labels, r.requestBytes);
        pa.responseBytes.observe(labels, r.responseBytes);
      }
      sink.count += posA & 1;
    },
    check: async () => {
      const m = promMetrics();
      for (const r of stream) promRecordObvious(m, r);
      checkScrape(await m.registry.metrics(), 20, STREAM_SIZE, '(a)');
    },
  });

  // (b) prom-client, children cached by the caller.
  const pb = promMetrics();
  const cacheB = new Map<number, PromChildren>();
  let posB = 0;
  cases.push({
    name: '(b) prom-client cached children',
    batch: BATCH,
    op: OP,
    run: () => {
      for (let i = 0; i < BATCH; i++) {
        const r = stream[posB++ & MASK];
        let ch = cacheB.get(comboKey(r));
        if (ch === undefined) ch = promChildren(pb, cacheB, r);
        ch.requests.inc();
        ch.duration.observe(r.durationMs);
        ch.requestBytes.observe(r.requestBytes);
        ch.responseBytes.observe(r.responseBytes);
      }
      sink.count += posB & 1;
    },
    check: async () => {
      const m = promMetrics();
      const cache = new Map<number, PromChildren>();
      for (const r of stream) {
        let ch = cache.get(comboKey(r));
        if (ch === undefined) ch = promChildren(m, cache, r);
        ch.requests.inc();
        ch.duration.observe(r.durationMs);
        ch.requestBytes.observe(r.requestBytes);
        ch.responseBytes.observe(r.responseBytes);
      }
      assert(cache.size === 20, `${cache.size} cached combinations, expected 20`);
      checkScrape(await m.registry.metrics(), 20, STREAM_SIZE, '(b)');
    },
  });

  // (c) OpenTelemetry, attributes built per request.
  const oc = otelMetrics();
  let posC = 0;
  cases.push({
    name: '(c) otel sdk-metrics add/record(v, attrs)',
    batch: BATCH,
    op: OP,
    run: () => {
      for (let i = 0; i < BATCH; i++) {
        const r = stream[posC++ & MASK];
        const attrs = otelAttributes(r);
        oc.requests.add(1, attrs);
        oc.duration.record(r.durationMs, attrs);
        oc.requestBytes.record(r.requestBytes, attrs);
        oc.responseBytes.record(r.responseBytes, attrs);
      }
      sink.count += posC & 1;
    },
    check: async () => {
      const m = otelMetrics();
      for (const r of stream) otelRecord(m, r, otelAttributes(r));
      checkScrape(await otelScrape(m), 20, STREAM_SIZE, '(c)');
      await m.provider.shutdown();
    },
  });

  // (c2) OpenTelemetry, attributes objects cached per combination (its best case).
  const oc2 = otelMetrics();
  const attrCache = new Map<number, Attributes>();
  let posC2 = 0;
  cases.push({
    name: '(c2) otel sdk-metrics, cached attrs',
    batch: BATCH,
    op: OP,
    run: () => {
      for (let i = 0; i < BATCH; i++) {
        const r = stream[posC2++ & MASK];
        const key = comboKey(r);
        let attrs = attrCache.get(key);
        if (attrs === undefined) {
          attrs = otelAttributes(r);
          attrCache.set(key, attrs);
        }
        oc2.requests.add(1, attrs);
        oc2.duration.record(r.durationMs, attrs);
        oc2.requestBytes.record(r.requestBytes, attrs);
        oc2.responseBytes.record(r.responseBytes, attrs);
      }
      sink.count += posC2 & 1;
    },
    check: async () => {
      const m = otelMetrics();
      const cache = new Map<number, Attributes>();
      for (const r of stream) {
        let attrs = cache.get(comboKey(r));
        if (attrs === undefined) {
          attrs = otelAttributes(r);
          cache.set(comboKey(r), attrs);
        }
        otelRecord(m, r, attrs);
      }
      checkScrape(await otelScrape(m), 20, STREAM_SIZE, '(c2)');
      await m.provider.shutdown();
    },
  });

  // (d) hand-written series.
  const cacheD = new Map<number, IstioSeries>();
  const allD: IstioSeries[] = [];
  let posD = 0;
  cases.push({
    name: '(d) hand-written Float64Array series',
    batch: BATCH,
    op: OP,
    run: () => {
      for (let i = 0; i < BATCH; i++) {
        const r = stream[posD++ & MASK];
        let s = cacheD.get(comboKey(r));
        if (s === undefined) s = handSeries(cacheD, allD, r);
        s.record(r);
      }
      sink.count += posD & 1;
    },
    check: async () => {
      const cache = new Map<number, IstioSeries>();
      const all: IstioSeries[] = [];
      for (const r of stream) {
        let s = cache.get(comboKey(r));
        if (s === undefined) s = handSeries(cache, all, r);
        s.record(r);
      }
      const text = handScrape(all);
      checkScrape(text, 20, STREAM_SIZE, '(d)');
      // Same numbers as prom-client for the same stream (cumulative buckets, sums, counts).
      const m = promMetrics();
      for (const r of stream) promRecordObvious(m, r);
      const promText = await m.registry.metrics();
      const bucketLines = (t: string): string[] =>
        t
          .split('\n')
          .filter((l) => l.startsWith('istio_response_bytes_bucket{'))
          .map((l) => l.slice(l.lastIndexOf(' ')))
          .sort();
      assert(bucketLines(text).join() === bucketLines(promText).join(), '(d) bucket counts differ from prom-client');
    },
  });

  // (e) Skiff's own Metrics.observe on real RequestContexts (what the engine calls).
  const source: MetricsSource = {
    arena: { hits: 0, misses: 0, live: 0, freeCount: 0 },
    engine: { inFlight: 0, requestsTotal: 0 },
    pools: { all: () => [] },
    listenerStats: [],
    traceStats: () => null,
    accessLogLines: () => null,
    clusterStates: () => [],
  };
  const toContexts = (reqs: readonly FinishedRequest[]): RequestContext[] => {
    const configs = new Map<string, ClusterConfig>();
    return reqs.map((r) => {
      const ctx = new RequestContext(1024);
      let cluster = configs.get(r.cluster.destinationService);
      if (cluster === undefined) {
        cluster = { name: r.cluster.destinationService } as unknown as ClusterConfig;
        configs.set(r.cluster.destinationService, cluster);
      }
      ctx.listenerName = 'inbound';
      ctx.cluster = cluster;
      ctx.protocol = 'http1';
      ctx.rawHeaders = ['host', `${r.cluster.destinationService}:8080`, 'user-agent', 'bench', 'accept', '*/*'];
      ctx.responseStatus = r.status;
      ctx.requestBody.totalBytes = r.requestBytes;
      ctx.responseBody.totalBytes = r.responseBytes;
      ctx.startTime = performance.now() - r.durationMs;
      return ctx;
    });
  };
  const contextsE = toContexts(stream);
  const metricsE = new Metrics('bench', source);
  let posE = 0;
  cases.push({
    name: '(e) Skiff Metrics.observe (src/telemetry/metrics.ts)',
    batch: BATCH,
    op: OP,
    run: () => {
      for (let i = 0; i < BATCH; i++) metricsE.observe(contextsE[posE++ & MASK], performance.now());
      sink.count += posE & 1;
    },
    check: async () => {
      const m = new Metrics('bench', source);
      for (const ctx of contextsE) m.observe(ctx, performance.now());
      const text = await m.scrape();
      checkScrape(text, 20, STREAM_SIZE, '(e)');
    },
  });

  // Scrapes: 50 clusters x 4 codes = 200 series per metric, 3 requests per series.
  const bigClusters = makeClusters(50);
  const combos = everyCombination(bigClusters, 7);
  const SERIES = 200;

  const ps = promMetrics();
  for (const r of combos) promRecordObvious(ps, r);
  cases.push({
    name: 'scrape prom-client registry.metrics()',
    batch: 1,
    op: 'one scrape, 200 series x 4 metrics',
    runAsync: async () => {
      sink.value = await ps.registry.metrics();
    },
    check: async () => checkScrape(await ps.registry.metrics(), SERIES, combos.length, 'prom-client scrape'),
  });

  const os = otelMetrics();
  for (const r of combos) otelRecord(os, r, otelAttributes(r));
  cases.push({
    name: 'scrape otel collect()+PrometheusSerializer',
    batch: 1,
    op: 'one scrape, 200 series x 4 metrics',
    runAsync: async () => {
      sink.value = await otelScrape(os);
    },
    check: async () => checkScrape(await otelScrape(os), SERIES, combos.length, 'otel scrape'),
  });

  const hsCache = new Map<number, IstioSeries>();
  const hsAll: IstioSeries[] = [];
  for (const r of combos) {
    let s = hsCache.get(comboKey(r));
    if (s === undefined) s = handSeries(hsCache, hsAll, r);
    s.record(r);
  }
  cases.push({
    name: 'scrape hand-written serializer',
    batch: 1,
    op: 'one scrape, 200 series x 4 metrics',
    runAsync: async () => {
      sink.value = handScrape(hsAll);
    },
    check: async () => {
      const text = handScrape(hsAll);
      checkScrape(text, SERIES, combos.length, 'hand-written scrape');
      sink.value = text;
    },
  });

  return cases;
}

function emptyRun(): void {
  for (let i = 0; i < BATCH; i++) sink.count++;
}

// ---- runner (as bench/micro/run.ts) -----------------------------------------------------------

interface CaseResult {
  readonly name: string;
  readonly op: string;
  readonly batch: number;
  readonly nsPerOp: number;
  readonly p99NsPerOp: number;
  readonly rme: number;
  readonly samples: number;
  readonly bytesPerOp: number | null;
  /** Size of one scrape's text (scrape cases only). */
  readonly scrapeBytes: number | null;
}

const gc = (globalThis as { gc?: () => void }).gc;

/** Busy CPU ticks of the whole machine and of this process and its waited-for children (as run.ts). */
function cpuTicks(): { machine: number; self: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3] + (fields[4] ?? 0);
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { machine: total - idle, self: Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]) };
}

function emptyWindowCost(): number {
  if (gc === undefined) return 0;
  let min = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i++) {
    gc();
    min = Math.min(min, accountAllocations(() => emptyRun()).heapBytes);
  }
  return min;
}

async function bytesPerOp(c: MetricsCase, windowCost: number): Promise<number | null> {
  if (gc === undefined) return null;
  if (c.run !== undefined) {
    const run = c.run;
    const runs = Math.max(1, Math.round(ALLOC_OPS / c.batch));
    gc();
    const acc = accountAllocations(() => {
      for (let i = 0; i < runs; i++) run();
    });
    return Math.max(0, acc.heapBytes - windowCost) / (runs * c.batch);
  }
  const runAsync = c.runAsync as () => Promise<void>;
  gc();
  const acc = new GcAccounting();
  acc.start();
  for (let i = 0; i < ALLOC_SCRAPES; i++) await runAsync();
  const r = acc.stop();
  return Math.max(0, r.heapBytes - windowCost) / ALLOC_SCRAPES;
}

async function runRound(time: number, warmupTime: number, filter: string, rotate: number): Promise<CaseResult[]> {
  const all = buildCases().filter((c) => filter === '' || c.name.toLowerCase().includes(filter.toLowerCase()));
  for (const c of all) await c.check();
  const k = all.length === 0 ? 0 : rotate % all.length;
  const cases = [...all.slice(k), ...all.slice(0, k)];
  const bench = new Bench({ time, warmupTime, warmup: true, throws: true });
  for (const c of cases) {
    if (c.run !== undefined) bench.add(c.name, c.run);
    else bench.add(c.name, c.runAsync as () => Promise<void>);
  }
  bench.add(`(empty loop of ${BATCH})`, emptyRun);
  await bench.run();
  const windowCost = emptyWindowCost();
  const results: CaseResult[] = [];
  for (const task of bench.tasks) {
    const c = cases.find((x) => x.name === task.name);
    const batch = c === undefined ? BATCH : c.batch;
    const r = task.result;
    if (r.state !== 'completed') throw new Error(`${task.name}: ${r.state}${r.state === 'errored' ? `: ${r.error.message}` : ''}`);
    const lat = r.latency;
    let scrapeBytes: number | null = null;
    if (c !== undefined && c.runAsync !== undefined) {
      await c.runAsync();
      scrapeBytes = String(sink.value).length;
    }
    results.push({
      name: task.name,
      op: c === undefined ? 'one iteration' : c.op,
      batch,
      nsPerOp: (lat.mean * 1e6) / batch,
      p99NsPerOp: (lat.p99 * 1e6) / batch,
      rme: lat.rme,
      samples: lat.samplesCount,
      bytesPerOp: c === undefined ? null : await bytesPerOp(c, windowCost),
      scrapeBytes,
    });
  }
  const order = [...all.map((c) => c.name), `(empty loop of ${BATCH})`];
  return results.sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

interface Summary {
  readonly name: string;
  readonly op: string;
  readonly batch: number;
  readonly nsPerOp: number;
  readonly nsPerOpMin: number;
  readonly nsPerOpMax: number;
  readonly p99NsPerOp: number;
  readonly bytesPerOp: number | null;
  readonly scrapeBytes: number | null;
}

function summarize(rounds: readonly (readonly CaseResult[])[]): Summary[] {
  return rounds[0].map((first) => {
    const rs = rounds.map((round) => round.find((r) => r.name === first.name) as CaseResult);
    const ns = rs.map((r) => r.nsPerOp);
    const bytes = rs.map((r) => r.bytesPerOp).filter((b): b is number => b !== null);
    return {
      name: first.name,
      op: first.op,
      batch: first.batch,
      nsPerOp: median(ns),
      nsPerOpMin: Math.min(...ns),
      nsPerOpMax: Math.max(...ns),
      p99NsPerOp: median(rs.map((r) => r.p99NsPerOp)),
      bytesPerOp: bytes.length === 0 ? null : median(bytes),
      scrapeBytes: first.scrapeBytes,
    };
  });
}

function spawnRound(args: readonly string[]): Promise<CaseResult[]> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (t: string) => (out += t));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10 * 60_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) {
        rej(new Error(`metrics round exited with ${code}`));
        return;
      }
      try {
        res(JSON.parse(out) as CaseResult[]);
      } catch (err) {
        rej(new Error(`metrics round printed no result: ${(err as Error).message}`));
      }
    });
  });
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  const time = numberFlag(flags, 'time', 1000);
  const warmupTime = numberFlag(flags, 'warmup-time', 250);
  const filter = flags.get('filter') ?? '';
  if (flags.has('round')) {
    const results = await runRound(time, warmupTime, filter, numberFlag(flags, 'round', 1) - 1);
    process.stdout.write(JSON.stringify(results) + '\n');
    return;
  }
  const roundCount = numberFlag(flags, 'rounds', 3);
  const rounds: CaseResult[][] = [];
  const cpu0 = cpuTicks();
  const t0 = performance.now();
  for (let r = 1; r <= roundCount; r++) {
    process.stderr.write(`metrics micro: round ${r}/${roundCount}\n`);
    rounds.push(await spawnRound(['--round', String(r), '--time', String(time), '--warmup-time', String(warmupTime), ...(filter === '' ? [] : ['--filter', filter])]));
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = cpuTicks();
  const foreignCores = Math.max(0, cpu1.machine - cpu0.machine - (cpu1.self - cpu0.self)) / 100 / seconds;
  const summary = summarize(rounds);
  console.log(
    `metrics micro: Node ${process.version}, prom-client 15, @opentelemetry/sdk-metrics 2.12, tinybench 6, ${time} ms per case, ${roundCount} rounds (separate processes), medians; foreign CPU during the run ${(foreignCores * 100).toFixed(0)}% of a core${foreignCores > 0.1 ? ' (contaminated: other processes were busy, consider a re-run)' : ''}\n`,
  );
  const ns = (r: Summary): string => (r.nsPerOp >= 100_000 ? `${fmt(r.nsPerOp / 1e6, 2)} ms` : fmt(r.nsPerOp, 1));
  console.log(
    table(
      ['case', 'op', 'ns/op', 'min-max ns/op', 'p99 ns/op*', 'B/op'],
      summary.map((r) => [
        r.name,
        r.op,
        ns(r),
        `${fmt(r.nsPerOpMin, 0)}-${fmt(r.nsPerOpMax, 0)}`,
        fmt(r.p99NsPerOp, 0),
        r.bytesPerOp === null ? '–' : fmt(r.bytesPerOp, 0),
      ]),
    ),
  );
  console.log(`\n* p99 of per-batch averages (batch = ${BATCH} requests; scrapes: per scrape). B/op: V8 heap bytes by GC accounting over ~${fmt(ALLOC_OPS)} requests / ${ALLOC_SCRAPES} scrapes.`);
  for (const r of summary) if (r.scrapeBytes !== null) console.log(`  ${r.name}: ${fmt(r.scrapeBytes)} characters of text`);
  const file = join(REPO_ROOT, 'bench', 'results', 'metrics-micro.json');
  writeFileSync(
    file,
    JSON.stringify(
      {
        kind: 'skiff-metrics-micro',
        date: new Date().toISOString(),
        node: process.version,
        git: gitState(),
        libraries: { 'prom-client': '15', '@opentelemetry/sdk-metrics': '2.12', '@opentelemetry/exporter-prometheus': '0.223', tinybench: '6' },
        timeMsPerCase: time,
        warmupTimeMs: warmupTime,
        rounds: roundCount,
        foreignCpuCores: foreignCores,
        op: 'one finished request: istio_requests_total +1 and 3 histogram observations, 9 labels, 20 label combinations',
        allocationMethod: 'GC accounting (v8.GCProfiler: bytes freed per GC + heap delta), empty window subtracted',
        cases: summary,
        perRound: rounds,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`metrics micro: wrote ${file}`);
}

main().catch((err: unknown) => {
  process.stderr.write(`metrics micro: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
