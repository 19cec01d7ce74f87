/**
 * The immutable configuration snapshot (DESIGN invariant 6). The control plane (mesh/) builds
 * one from a validated source and swaps it atomically; a request reads `current` once and keeps
 * that snapshot to its end. Everything here is plain data, frozen after build, except the
 * compiled route tables (a RouteTable is immutable too).
 */
import type { RouteTable } from '../routing/router.js';

export type ListenerProtocol = 'http1' | 'h2c' | 'h2' | 'h3';
export type UpstreamProtocol = 'http1' | 'h2c' | 'h2' | 'h3';

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

/** This sidecar's mesh identity: its SPIFFE certificate and the trust bundle of peers. */
export interface IdentityConfig {
  /** PEM certificate chain whose URI SAN is this sidecar's SPIFFE ID (resolved path). */
  readonly cert: string;
  readonly key: string;
  /** PEM CA bundle that peer certificates must chain to. */
  readonly trustBundle: string;
}

export interface ListenerConfig {
  readonly name: string;
  readonly direction: ListenerDirection;
  readonly address: SocketAddress;
  /** http1 and h2c are cleartext on one port; http1 and h2 are TLS with ALPN; h3 (TLS only) is UDP on the same port. */
  readonly protocols: readonly ListenerProtocol[];
  readonly tls: TlsFiles | null;
  /**
   * `tls: mesh`: serve the identity certificate and require a peer certificate from the trust
   * bundle (mTLS); `tls` is then null and `identity` must be set.
   */
  readonly meshTls: boolean;
  /** Peer SPIFFE IDs allowed on this listener; empty allows any authenticated peer (or anyone without mTLS). */
  readonly authorize: readonly string[];
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
  /** Whole-request timeout in ms (head to end of response, all retries included); 0 disables it. */
  readonly timeoutMs: number;
  /** Peer SPIFFE IDs allowed on this route, on top of the listener's list; empty: no extra check. */
  readonly authorize: readonly string[];
}

export interface UpstreamTls {
  /** CA bundle path; null uses Node's default roots. */
  readonly ca: string | null;
  /** SNI and certificate name; null uses the endpoint host. */
  readonly servername: string | null;
  /** Skip certificate verification (tests only). */
  readonly insecureSkipVerify: boolean;
}

export type LoadBalancerKind = 'p2c-ewma' | 'round-robin' | 'least-request';

/** What a retry may be triggered by. */
export type RetryOn = 'connect-failure' | 'refused-stream' | 'reset' | '503' | 'gateway-error';

export interface RetryPolicy {
  /** Retries after the first try (Envoy's num_retries); 0 disables retries. */
  readonly attempts: number;
  /** Retries may add at most this share of the cluster's requests (retry budget), percent. */
  readonly budgetPercent: number;
  /** ...but at least this many retries per second are always allowed. */
  readonly minRetriesPerSecond: number;
  /** Timeout of one try in ms; 0: only the route timeout applies. */
  readonly perTryTimeoutMs: number;
  /** Jittered exponential backoff between tries: base and cap, ms. */
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** Conditions that allow a retry. Anything but connect-failure and refused-stream also needs an idempotent method. */
  readonly retryOn: readonly RetryOn[];
}

export interface OutlierDetection {
  /** Consecutive 5xx responses (or connect failures) that eject an endpoint. */
  readonly consecutive5xx: number;
  /** Consecutive connect failures that eject an endpoint. */
  readonly consecutiveConnectFailures: number;
  /** First ejection lasts this long; each further ejection of the same endpoint adds it again, ms. */
  readonly baseEjectionTimeMs: number;
  readonly maxEjectionTimeMs: number;
  /** At most this share of a cluster's endpoints is ejected at once, percent. */
  readonly maxEjectionPercent: number;
}

/** Per-cluster limits (Envoy's circuit breakers): above them requests fail fast with 503. */
export interface CircuitBreakers {
  readonly maxConnections: number;
  readonly maxPendingRequests: number;
  readonly maxRequests: number;
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
  /** `tls: mesh`: mTLS with the identity, the server's SPIFFE ID checked; `tls` is then null. */
  readonly meshTls: boolean;
  /** With mesh TLS: the SPIFFE ID the endpoints must present; null accepts any from the bundle. */
  readonly peerIdentity: string | null;
  readonly loadBalancer: LoadBalancerKind;
  readonly retries: RetryPolicy;
  /** null: outlier detection off. */
  readonly outlierDetection: OutlierDetection | null;
  readonly circuitBreakers: CircuitBreakers;
}

export interface Limits {
  /** Max bytes of a request head (431 above it). */
  readonly maxHeaderBytes: number;
  /** High watermark of each stream's frame buffer. */
  readonly streamBufferBytes: number;
  /** Time allowed for a request head to arrive on a connection. */
  readonly headersTimeoutMs: number;
  /**
   * Longest pause between two pieces of a request body (slowloris on bodies): 408 before the
   * response started, the connection closed after; 0 disables it. Time the body spends paused
   * by Skiff's own backpressure does not count. HTTP/1.1 listeners.
   */
  readonly requestBodyTimeoutMs: number;
  /** Idle keep-alive time of a downstream connection. */
  readonly keepAliveTimeoutMs: number;
  /** How long SIGTERM waits for in-flight requests. */
  readonly drainTimeoutMs: number;
  /**
   * Downstream connections per listener and transport (TCP; QUIC counted apart). Above it a
   * new TCP connection is accepted and closed at once, a QUIC Initial is dropped.
   */
  readonly maxConnections: number;
  /**
   * Requests on one downstream HTTP/1.1 or HTTP/2 connection before Skiff asks the client to
   * open a new one: HTTP/1.1 `connection: close` on that response, HTTP/2 GOAWAY after that
   * stream (it still completes). 0: no limit. From `limits.maxRequestsPerConnection`.
   */
  readonly maxRequestsPerConnection: number;
  /**
   * The same for HTTP/3 (two-step GOAWAY after that stream): `limits.maxRequestsPerConnection`
   * when set, else 10,000 (bounds quiche's per-connection set of finished stream ids).
   */
  readonly maxRequestsPerH3Connection: number;
  /** Above this heap use new requests get 503 `SKIFF_ERR_LOAD_SHED` with `retry-after` (flag OM). */
  readonly memoryHighWatermark: MemoryMark;
  /** Above this heap use listeners refuse new connections (existing ones keep working). */
  readonly memoryConnectionWatermark: MemoryMark;
}

/**
 * A memory mark, compared with V8's heap in use (`used_heap_size`) on a 250 ms sample
 * (src/overload.ts): a share of V8's heap limit (`90%` in the file) or a number of bytes.
 * Exactly one of the two is non-zero; both 0 turns the mark off.
 */
export interface MemoryMark {
  /** Share of `heap_size_limit`, 0 < ratio <= 1; 0 when unused. */
  readonly ratio: number;
  /** Bytes of heap in use; 0 when unused. */
  readonly bytes: number;
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

/** Where the xDS control plane is and who this sidecar is to it (`xds:` in the file). */
export interface XdsConfig {
  /** `host:port` or `unix:/path`. */
  readonly server: string;
  /** auto: delta xDS, falling back to state-of-the-world when the server does not implement it. */
  readonly protocol: 'auto' | 'delta' | 'sotw';
  readonly node: {
    readonly id: string;
    readonly cluster: string;
    readonly locality: { readonly region: string; readonly zone: string; readonly subZone: string };
    readonly metadata: Readonly<Record<string, string>>;
  };
  /** null: plaintext (a local socket or a trusted network). ca null: Node's default roots. */
  readonly tls: { readonly ca: string | null; readonly cert: string | null; readonly key: string | null; readonly servername: string | null } | null;
  /** How long the first configuration may take before the sidecar reports ready without it. */
  readonly initialFetchTimeoutMs: number;
  /** Reconnect backoff: jittered exponential from base to max. */
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
}

export interface ConfigSnapshot {
  /** Grows by one on every swap. */
  readonly version: number;
  /** Where the config came from ('embedded default' or a file path). */
  readonly source: string;
  readonly admin: SocketAddress | null;
  readonly identity: IdentityConfig | null;
  readonly listeners: readonly ListenerConfig[];
  readonly listenerByName: ReadonlyMap<string, ListenerConfig>;
  /** True when any listener or route has an `authorize` list (the engine checks only then). */
  readonly hasAuthorization: boolean;
  readonly routeTables: ReadonlyMap<string, RouteTable>;
  readonly clusters: ReadonlyMap<string, ClusterConfig>;
  readonly limits: Limits;
  readonly telemetry: TelemetryConfig;
  /** The control plane this snapshot's xDS part comes from; null when configured by the file only. */
  readonly xds: XdsConfig | null;
}
