/**
 * The immutable configuration snapshot (DESIGN invariant 6). The control plane (mesh/) builds
 * one from a validated source and swaps it atomically; a request reads `current` once and keeps
 * that snapshot to its end. Everything here is plain data, frozen after build, except the
 * compiled route tables (a RouteTable is immutable too).
 */
import type { RouteTable } from '../routing/router.js';

export type ListenerProtocol = 'http1' | 'h2c' | 'h2';
export type UpstreamProtocol = 'http1' | 'h2c' | 'h2';

export interface SocketAddress {
  readonly host: string;
  readonly port: number;
}

export interface TlsFiles {
  /** Paths as written in the config (resolved against the config file's folder). */
  readonly cert: string;
  readonly key: string;
}

/**
 * Which side of the local service a listener serves: `inbound` takes traffic for it (Istio's
 * reporter "destination"), `outbound` takes its calls to other services (reporter "source").
 */
export type ListenerDirection = 'inbound' | 'outbound';

export interface ListenerConfig {
  readonly name: string;
  readonly direction: ListenerDirection;
  readonly address: SocketAddress;
  /** http1 and h2c are cleartext on one port; http1 and h2 are TLS with ALPN. */
  readonly protocols: readonly ListenerProtocol[];
  readonly tls: TlsFiles | null;
  /** Name of the route table in `routes`. */
  readonly routes: string;
}

export interface HeaderMatch {
  /** Lower-case header name. */
  readonly name: string;
  /** Exact value. */
  readonly value: string;
}

export interface RouteMatch {
  /** Exact host (lower-case, no port) or `*.suffix`; null matches any authority. */
  readonly authority: string | null;
  /** Exact path (query excluded); null when not used. */
  readonly path: string | null;
  /** Path prefix; null when not used. */
  readonly prefix: string | null;
  readonly headers: readonly HeaderMatch[];
}

export interface RouteConfig {
  readonly match: RouteMatch;
  readonly cluster: string;
  /** Whole-request timeout in ms (head to end of response); 0 disables it. */
  readonly timeoutMs: number;
}

export interface UpstreamTls {
  /** CA bundle path; null uses Node's default roots. */
  readonly ca: string | null;
  /** SNI and certificate name; null uses the endpoint host. */
  readonly servername: string | null;
  /** Skip certificate verification (tests only). */
  readonly insecureSkipVerify: boolean;
}

export interface ClusterConfig {
  readonly name: string;
  readonly protocol: UpstreamProtocol;
  readonly endpoints: readonly SocketAddress[];
  /** Total request body limit in bytes; 0 = unlimited, streaming. */
  readonly maxBodyBytes: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** HTTP/1.1: connections per endpoint; HTTP/2: connections per endpoint (each multiplexed). */
  readonly maxConnectionsPerEndpoint: number;
  /** Requests that may wait for a connection per endpoint before 503. */
  readonly maxPendingPerEndpoint: number;
  readonly tls: UpstreamTls | null;
}

export interface Limits {
  /** Max bytes of a request head (431 above it). */
  readonly maxHeaderBytes: number;
  /** High watermark of each stream's frame buffer. */
  readonly streamBufferBytes: number;
  /** Time allowed for a request head to arrive on a connection. */
  readonly headersTimeoutMs: number;
  /** Idle keep-alive time of a downstream connection. */
  readonly keepAliveTimeoutMs: number;
  /** How long SIGTERM waits for in-flight requests. */
  readonly drainTimeoutMs: number;
}

export type TracePropagator = 'tracecontext' | 'baggage' | 'b3' | 'b3multi';
export type OtlpProtocol = 'http/protobuf' | 'http/json' | 'grpc';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

/**
 * Tracing. Every `null` means "not set in the file": the standard OTEL_* environment variable
 * decides, then the OpenTelemetry default (see src/telemetry/tracing.ts).
 */
export interface TracingConfig {
  /** null: on when OTEL_TRACES_EXPORTER or an OTLP endpoint variable is set. */
  readonly enabled: boolean | null;
  /** Parent-based ratio sampler, 0..1; null: OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG. */
  readonly sampling: number | null;
  /** OTLP traces URL; null: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT. */
  readonly endpoint: string | null;
  /** null: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf. */
  readonly protocol: OtlpProtocol | null;
  /** null: OTEL_PROPAGATORS, else tracecontext, baggage and b3multi. */
  readonly propagators: readonly TracePropagator[] | null;
}

export interface AccessLogConfig {
  readonly enabled: boolean;
  /** `stdout`, `stderr` or a file path (resolved against the config file's folder). */
  readonly path: string;
  /** Share of requests logged, 0..1 (1 logs every request). */
  readonly sampleRate: number;
}

export interface TelemetryConfig {
  /** This workload's name: the OTel service.name and the Istio workload label; null: OTEL_SERVICE_NAME or "skiff". */
  readonly serviceName: string | null;
  /** Level of Skiff's own log (stderr); changeable at runtime through the admin port. */
  readonly logLevel: LogLevel;
  readonly tracing: TracingConfig;
  readonly accessLog: AccessLogConfig;
}

export interface ConfigSnapshot {
  /** Grows by one on every swap. */
  readonly version: number;
  /** Where the config came from ('embedded default' or a file path). */
  readonly source: string;
  readonly admin: SocketAddress | null;
  readonly listeners: readonly ListenerConfig[];
  readonly routeTables: ReadonlyMap<string, RouteTable>;
  readonly clusters: ReadonlyMap<string, ClusterConfig>;
  readonly limits: Limits;
  readonly telemetry: TelemetryConfig;
}
