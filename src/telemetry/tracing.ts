/**
 * Tracing: a SERVER span per request, a CLIENT span per upstream attempt, exported over OTLP
 * through the OpenTelemetry Node SDK.
 *
 * - Configuration: the config file's `telemetry.tracing` keys first; what the file leaves out
 *   comes from the standard OTEL_* variables (the SDK and the exporters read them themselves:
 *   OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_PROPAGATORS,
 *   OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT/PROTOCOL/HEADERS/TIMEOUT, OTEL_BSP_*).
 * - No auto-instrumentation and no context manager: Skiff never instruments node:http (it would
 *   double-count its own sockets), and the request context carries the trace context
 *   explicitly, so no AsyncLocalStorage hook runs on every promise.
 * - The SDK is imported only when tracing is on (it is ~25 MiB of modules); off, the engine's
 *   observer does a null check per hook and nothing else.
 * - Headers are read from and written to Skiff's flat [name, value, ...] lists directly.
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  diag,
  trace,
  type Attributes,
  type Context,
  type ContextManager,
  type DiagLogger,
  type Span,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
  type Tracer,
} from '@opentelemetry/api';
import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace';
import type { RequestContext } from '../context.js';
import type { OtlpProtocol, TracePropagator, TelemetryConfig } from '../config/types.js';
import { responseFlagOf, type SkiffError } from '../errors.js';
import { nameIs } from '../headers.js';
import { RequestTrace } from './request-trace.js';
import type { Logger } from './logger.js';

/** Span export counters, for /metrics. */
export interface TraceExportStats {
  /** Spans the exporter accepted. */
  exported: number;
  /** Spans dropped because the export queue was full (exporter slow or down). */
  droppedQueueFull: number;
  /** Spans in batches the exporter failed to deliver. */
  droppedExportFailed: number;
  /** Spans waiting in the queue or in an export call. */
  queued: number;
}

/** Reads trace headers from a flat raw header list, case-insensitively. */
const FLAT_GETTER: TextMapGetter<readonly string[]> = {
  keys(carrier: readonly string[]): string[] {
    const out: string[] = [];
    for (let i = 0; i < carrier.length; i += 2) out.push(carrier[i].toLowerCase());
    return out;
  },
  get(carrier: readonly string[], key: string): string | undefined {
    for (let i = 0; i < carrier.length; i += 2) if (nameIs(carrier[i], key)) return carrier[i + 1];
    return undefined;
  },
};

/** Writes trace headers into a context's reused `traceHeaders` list. */
const FLAT_SETTER: TextMapSetter<string[]> = {
  set(carrier: string[], key: string, value: string): void {
    const name = key.toLowerCase();
    for (let i = 0; i < carrier.length; i += 2) {
      if (carrier[i] === name) {
        carrier[i + 1] = value;
        return;
      }
    }
    carrier.push(name, value);
  },
};

/** A context manager that keeps no ambient context: Skiff passes contexts explicitly. */
class ExplicitContextManager implements ContextManager {
  active(): Context {
    return ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(_context: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return fn.call(thisArg, ...args);
  }
  bind<T>(_context: Context, target: T): T {
    return target;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    return this;
  }
}

/** Counts what reaches the exporter and what it delivered. */
class CountingExporter implements SpanExporter {
  private readonly inner: SpanExporter;
  private readonly stats: TraceExportStats;

  constructor(inner: SpanExporter, stats: TraceExportStats) {
    this.inner = inner;
    this.stats = stats;
  }

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    const n = spans.length;
    const stats = this.stats;
    this.inner.export(spans, (result) => {
      stats.queued -= n;
      if (result.code === 0 /* ExportResultCode.SUCCESS */) stats.exported += n;
      else stats.droppedExportFailed += n;
      resultCallback(result);
    });
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush === undefined ? Promise.resolve() : this.inner.forceFlush();
  }
}

/**
 * Puts a bound on the batch processor's queue that Skiff can count: the SDK's
 * BatchSpanProcessor drops spans silently (a log line) when its queue is full; this drops them
 * one step earlier, at the same bound, and counts each one.
 */
class CountingProcessor implements SpanProcessor {
  private readonly inner: SpanProcessor;
  private readonly stats: TraceExportStats;
  private readonly maxQueued: number;

  constructor(inner: SpanProcessor, stats: TraceExportStats, maxQueued: number) {
    this.inner = inner;
    this.stats = stats;
    this.maxQueued = maxQueued;
  }

  onStart(span: Span & ReadableSpan, parentContext: Context): void {
    this.inner.onStart(span, parentContext);
  }

  onEnd(span: ReadableSpan): void {
    if ((span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    if (this.stats.queued >= this.maxQueued) {
      this.stats.droppedQueueFull++;
      return;
    }
    this.stats.queued++;
    this.inner.onEnd(span);
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
}

/** The protocol the exporter speaks: config, then the OTLP variables, then http/protobuf. */
function otlpProtocol(config: OtlpProtocol | null): OtlpProtocol {
  if (config !== null) return config;
  const env = (process.env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? process.env.OTEL_EXPORTER_OTLP_PROTOCOL ?? '').trim();
  if (env === 'http/json' || env === 'grpc' || env === 'http/protobuf') return env;
  return 'http/protobuf';
}

/** Whether tracing runs: config, else on when the environment names an exporter or endpoint. */
export function isTracingEnabled(cfg: TelemetryConfig): boolean {
  if ((process.env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true') return false;
  if (cfg.tracing.enabled !== null) return cfg.tracing.enabled;
  const exporter = (process.env.OTEL_TRACES_EXPORTER ?? '').trim();
  if (exporter !== '') return exporter !== 'none';
  return (process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? process.env.OTEL_EXPORTER_OTLP_ENDPOINT ?? '') !== '';
}

const DEFAULT_PROPAGATORS: readonly TracePropagator[] = ['tracecontext', 'baggage', 'b3multi'];

function propagatorNames(config: readonly TracePropagator[] | null): readonly TracePropagator[] {
  if (config !== null) return config;
  const env = (process.env.OTEL_PROPAGATORS ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  const known = env.filter((s): s is TracePropagator => s === 'tracecontext' || s === 'baggage' || s === 'b3' || s === 'b3multi');
  return known.length > 0 ? known : DEFAULT_PROPAGATORS;
}

/** OTel's diagnostics (exporter failures, dropped batches) go to Skiff's log at warn. */
function diagTo(logger: Logger): DiagLogger {
  const write = (message: string, ...args: unknown[]): void => {
    const detail = args.map(describeDiag).filter((s) => s !== '').join('; ');
    logger.warn({ component: 'opentelemetry', detail: detail === '' ? undefined : detail }, describeDiag(message));
  };
  return { error: write, warn: write, info: () => undefined, debug: () => undefined, verbose: () => undefined };
}

const PROTOCOL_VERSION: Readonly<Record<string, string>> = { http1: '1.1', h2: '2', h3: '3' };
const UPSTREAM_VERSION: Readonly<Record<string, string>> = { http1: '1.1', h2c: '2', h2: '2', h3: '3' };

export class Tracing {
  readonly serviceName: string;
  readonly protocol: OtlpProtocol;
  readonly propagators: readonly TracePropagator[];
  readonly stats: TraceExportStats;
  private readonly tracer: Tracer;
  private readonly propagator: TextMapPropagator;
  /** Lower-case names of every field the propagators read or write. */
  private readonly fields: readonly string[];
  private readonly shutdownSdk: () => Promise<void>;

  private constructor(
    serviceName: string,
    protocol: OtlpProtocol,
    propagators: readonly TracePropagator[],
    stats: TraceExportStats,
    tracer: Tracer,
    propagator: TextMapPropagator,
    shutdownSdk: () => Promise<void>,
  ) {
    this.serviceName = serviceName;
    this.protocol = protocol;
    this.propagators = propagators;
    this.stats = stats;
    this.tracer = tracer;
    this.propagator = propagator;
    this.fields = Object.freeze(propagator.fields().map((f) => f.toLowerCase()));
    this.shutdownSdk = shutdownSdk;
  }

  /** Starts the SDK (imported here, only when tracing is on). */
  static async start(cfg: TelemetryConfig, serviceName: string, logger: Logger): Promise<Tracing> {
    const [{ NodeSDK }, sdkTrace, core, { B3Propagator, B3InjectEncoding }] = await Promise.all([
      import('@opentelemetry/sdk-node'),
      import('@opentelemetry/sdk-trace'),
      import('@opentelemetry/core'),
      import('@opentelemetry/propagator-b3'),
    ]);
    diag.setLogger(diagTo(logger), { logLevel: 30 /* DiagLogLevel.WARN */, suppressOverrideMessage: true });
    const t = cfg.tracing;
    const protocol = otlpProtocol(t.protocol);
    const exporterOptions = t.endpoint === null ? {} : { url: t.endpoint };
    let exporter: SpanExporter;
    if (protocol === 'http/json') {
      const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
      exporter = new OTLPTraceExporter(exporterOptions);
    } else if (protocol === 'grpc') {
      const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-grpc');
      exporter = new OTLPTraceExporter(exporterOptions);
    } else {
      const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-proto');
      exporter = new OTLPTraceExporter(exporterOptions);
    }
    const stats: TraceExportStats = { exported: 0, droppedQueueFull: 0, droppedExportFailed: 0, queued: 0 };
    const maxQueueSize = positiveEnv('OTEL_BSP_MAX_QUEUE_SIZE', 2048);
    const batchSize = positiveEnv('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 512);
    const batch = new sdkTrace.BatchSpanProcessor({
      exporter: new CountingExporter(exporter, stats),
      maxQueueSize,
      maxExportBatchSize: Math.min(batchSize, maxQueueSize),
      scheduledDelayMillis: positiveEnv('OTEL_BSP_SCHEDULE_DELAY', 5000),
      exportTimeoutMillis: positiveEnv('OTEL_BSP_EXPORT_TIMEOUT', 30000),
    });
    const processor = new CountingProcessor(batch, stats, maxQueueSize);

    const names = propagatorNames(t.propagators);
    // A composite extracts in order and the last valid context wins. When a request carries
    // both W3C and B3 fields (Skiff itself sends both), W3C must win: it also carries
    // tracestate, which a B3-derived context would lose. So B3 goes first, W3C last.
    const order: Readonly<Record<TracePropagator, number>> = { b3: 0, b3multi: 0, baggage: 1, tracecontext: 2 };
    const ordered = names.slice().sort((a, b) => order[a] - order[b]);
    const parts: TextMapPropagator[] = ordered.map((n) => {
      switch (n) {
        case 'tracecontext': return new core.W3CTraceContextPropagator();
        case 'baggage': return new core.W3CBaggagePropagator();
        case 'b3': return new B3Propagator({ injectEncoding: B3InjectEncoding.SINGLE_HEADER });
        case 'b3multi': return new B3Propagator({ injectEncoding: B3InjectEncoding.MULTI_HEADER });
      }
    });
    const propagator = new core.CompositePropagator({ propagators: parts });

    const sampler = t.sampling === null
      ? undefined
      : new sdkTrace.ParentBasedSampler({ root: new sdkTrace.TraceIdRatioBasedSampler(t.sampling) });
    const sdk = new NodeSDK({
      serviceName,
      instrumentations: [],
      contextManager: new ExplicitContextManager(),
      textMapPropagator: propagator,
      spanProcessors: [processor],
      ...(sampler === undefined ? {} : { sampler }),
    });
    sdk.start();
    const tracer = trace.getTracer('skiff');
    return new Tracing(serviceName, protocol, names, stats, tracer, propagator, () => sdk.shutdown());
  }

  /**
   * SERVER span, child of the trace context the downstream sent (W3C or B3). Attributes are
   * set only on recording spans: with 1% sampling, 99% of requests get a non-recording span
   * and pay for the sampling decision and the ids, not for attributes (measured: building and
   * sanitizing the attribute object was the largest single cost of an unsampled request).
   */
  onRequestStart(ctx: RequestContext): void {
    const parent = hasAnyField(ctx.rawHeaders, this.fields) ? this.propagator.extract(ROOT_CONTEXT, ctx.rawHeaders, FLAT_GETTER) : ROOT_CONTEXT;
    const span = this.tracer.startSpan(ctx.method, { kind: SpanKind.SERVER, startTime: ctx.startTime }, parent);
    if (span.isRecording()) {
      span.setAttributes({
        'http.request.method': ctx.method,
        'url.path': pathOnly(ctx.path),
        'url.scheme': ctx.scheme,
        'server.address': ctx.authority,
        'network.protocol.name': 'http',
        'network.protocol.version': PROTOCOL_VERSION[ctx.protocol],
        'client.address': ctx.remoteAddress,
        'skiff.request_id': ctx.requestId,
        'skiff.listener': ctx.listenerName,
      });
      const ua = FLAT_GETTER.get(ctx.rawHeaders, 'user-agent');
      if (typeof ua === 'string') span.setAttribute('user_agent.original', ua);
    }
    ctx.trace = new RequestTrace(span, trace.setSpan(parent, span));
  }

  /**
   * CLIENT span for this attempt; its context goes upstream in `ctx.traceHeaders`. For an
   * unsampled request no CLIENT span is made: the SERVER span's context (trace id, sampled
   * flag off) is what the upstream needs to stay in the same unsampled trace.
   */
  onUpstreamStart(ctx: RequestContext): void {
    const t = ctx.trace;
    if (t === null) return;
    if (t.client !== null) t.client.end();
    const headers = ctx.traceHeaders;
    headers.length = 0;
    ctx.traceFields = this.fields;
    if (!t.server.isRecording()) {
      this.propagator.inject(t.serverContext, headers, FLAT_SETTER);
      return;
    }
    const cluster = ctx.cluster;
    const ep = ctx.endpoint;
    const attributes: Attributes = {
      'http.request.method': ctx.method,
      'server.address': ep === null ? '' : ep.endpoint.host,
      'server.port': ep === null ? 0 : ep.endpoint.port,
      'url.path': pathOnly(ctx.path),
      'network.protocol.name': 'http',
      'skiff.cluster': cluster === null ? '' : cluster.name,
    };
    if (cluster !== null) attributes['network.protocol.version'] = UPSTREAM_VERSION[cluster.protocol];
    const client = this.tracer.startSpan(ctx.method, { kind: SpanKind.CLIENT, startTime: ctx.upstreamStartTime, attributes }, t.serverContext);
    t.client = client;
    this.propagator.inject(trace.setSpan(t.serverContext, client), headers, FLAT_SETTER);
  }

  onUpstreamEnd(ctx: RequestContext, err: SkiffError | null): void {
    const t = ctx.trace;
    if (t === null || t.client === null) return;
    const client = t.client;
    t.client = null;
    if (ctx.upstreamHeadTime >= ctx.upstreamStartTime && ctx.responseStatus > 0 && ctx.upstreamHeadTime > 0) {
      client.setAttribute('http.response.status_code', ctx.responseStatus);
      if (ctx.responseStatus >= 400 && err === null) {
        client.setAttribute('error.type', String(ctx.responseStatus));
        client.setStatus({ code: SpanStatusCode.ERROR });
      }
    }
    if (err !== null) {
      client.setAttribute('error.type', err.code);
      client.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
    }
    client.end();
  }

  onRequestDone(ctx: RequestContext): void {
    const t = ctx.trace;
    if (t === null) return;
    ctx.trace = null;
    if (t.client !== null) {
      t.client.end();
      t.client = null;
    }
    const span = t.server;
    if (!span.isRecording()) {
      span.end();
      return;
    }
    const status = ctx.responseStatus;
    if (status > 0) span.setAttribute('http.response.status_code', status);
    span.setAttribute('skiff.response_flags', responseFlagOf(ctx.error));
    if (ctx.cluster !== null) span.setAttribute('skiff.cluster', ctx.cluster.name);
    if (ctx.endpoint !== null) span.setAttribute('skiff.upstream.endpoint', ctx.endpoint.key);
    if (ctx.route !== null) span.setAttribute('skiff.route', routeLabel(ctx));
    if (ctx.peerIdentity !== '') span.setAttribute('skiff.peer.identity', ctx.peerIdentity);
    span.setAttribute('http.request.body.size', ctx.requestBody.totalBytes);
    span.setAttribute('http.response.body.size', ctx.responseBody.totalBytes);
    const err = ctx.error;
    if (err !== null) {
      span.setAttribute('error.type', err.code);
      // Server spans: 5xx and resets are errors; a 4xx is the client's problem (semconv).
      if (status >= 500 || status === 0 || err.code === 'SKIFF_ERR_DOWNSTREAM_RESET') span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
    } else if (status >= 500) {
      span.setAttribute('error.type', String(status));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  }

  /** Flushes queued spans (bounded by the exporter's timeout) and stops the SDK. */
  shutdown(): Promise<void> {
    return this.shutdownSdk();
  }
}

/** The exporter logs errors as JSON strings or Error objects: keep their message only. */
function describeDiag(v: unknown): string {
  if (v instanceof Error) return v.message;
  if (typeof v === 'string') {
    if (v.startsWith('{')) {
      try {
        const parsed: unknown = JSON.parse(v);
        if (typeof parsed === 'object' && parsed !== null && 'message' in parsed && typeof parsed.message === 'string') return parsed.message;
      } catch {
        // not JSON after all
      }
    }
    return v;
  }
  return v === undefined || v === null ? '' : JSON.stringify(v) ?? '';
}

/** Whether any of the (lower-case) trace fields is present: extraction is skipped otherwise. */
function hasAnyField(raw: readonly string[], fields: readonly string[]): boolean {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    for (let j = 0; j < fields.length; j++) if (nameIs(name, fields[j])) return true;
  }
  return false;
}

function pathOnly(path: string): string {
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}

function routeLabel(ctx: RequestContext): string {
  const m = ctx.route === null ? null : ctx.route.match;
  if (m === null) return '';
  return m.path ?? (m.prefix === null ? (m.authority ?? '*') : m.prefix + '*');
}

function positiveEnv(name: string, fallback: number): number {
  const n = Number(process.env[name]);
  return Number.isInteger(n) && n > 0 ? n : fallback;
}
