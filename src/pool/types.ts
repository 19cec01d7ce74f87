/**
 * Pool contracts (DESIGN invariant 5). The generic per-endpoint pool (endpoint-pool.ts) owns
 * admission: it counts streams per connection against the peer's limit and hands connections
 * out through `tryAcquire` (synchronous, allocation-free on a hit) or `acquireSlow` (connects,
 * handshakes, waits for the peer's SETTINGS). Protocol codecs in protocols/ implement
 * `Connector` and `UpstreamConn`; code in src/ sees only these interfaces.
 */
import type { RequestContext } from '../context.js';
import type { SkiffError } from '../errors.js';
import type { ClusterConfig, SocketAddress } from '../config/types.js';

/** One upstream connection, as the pool and the engine see it. */
export interface UpstreamConn {
  /** `host:port` of the endpoint. */
  readonly endpointKey: string;
  /** True for HTTP/2 and HTTP/3: many streams share the connection. */
  readonly isMultiplexed: boolean;
  /** Streams in flight; maintained by the pool (acquire +1, onStreamDone -1). */
  activeStreams: number;
  /** 1 for HTTP/1.1; the peer's SETTINGS_MAX_CONCURRENT_STREAMS for HTTP/2 (capped by config). */
  maxStreams: number;
  /** No new streams may start (closed, GOAWAY received, keep-alive refused). */
  isClosed: boolean;
  /** Pool bookkeeping: when the connection last became idle (ms, performance.now()). */
  idleSince: number;
  /**
   * Starts one exchange for `ctx` (the pool already counted the stream). The codec sends the
   * request head, attaches itself as the sink of `ctx.requestBody`, reports the response head
   * through `handler.onUpstreamHead`, pushes the response body into `ctx.responseBody` (as its
   * FrameSource), and finally calls `handler.onUpstreamDone` or `handler.onUpstreamError`
   * exactly once. It calls `events.onStreamDone(conn)` exactly once when the stream is gone.
   */
  dispatch(ctx: RequestContext, gen: number, handler: UpstreamHandler): void;
  /** Closes the connection; in-flight streams are reset. */
  close(): void;
}

/** The engine side of an upstream exchange (one implementer: ProxyEngine). */
export interface UpstreamHandler {
  /** `isEndStream`: the head ends the response (no body or trailers follow). */
  onUpstreamHead(ctx: RequestContext, gen: number, status: number, rawHeaders: readonly string[], isEndStream: boolean): void;
  /** The response END went into `ctx.responseBody`. */
  onUpstreamDone(ctx: RequestContext, gen: number): void;
  /** The exchange failed; no further callbacks follow. */
  onUpstreamError(ctx: RequestContext, gen: number, err: SkiffError): void;
}

/** What a connection tells its pool. */
export interface ConnEvents {
  /** A stream finished (either way); the pool decrements `activeStreams` and reuses the slot. */
  onStreamDone(conn: UpstreamConn): void;
  /** The connection closed or may take no new streams. */
  onConnClosed(conn: UpstreamConn): void;
  /** The peer raised its stream limit (HTTP/2 SETTINGS); waiters may now be served. */
  onCapacity(conn: UpstreamConn): void;
}

/** Opens connections of one protocol (implemented in protocols/). */
export interface Connector {
  /**
   * Connects and completes the handshake (TLS, HTTP/2 SETTINGS). Rejects with a SkiffError
   * (SKIFF_ERR_UPSTREAM_CONNECT or SKIFF_ERR_CONNECT_TIMEOUT, retry-safe) on failure.
   */
  connect(endpoint: SocketAddress, cluster: ClusterConfig, events: ConnEvents): Promise<UpstreamConn>;
}

/** The connectors by upstream protocol, wired in by the bootstrap. */
export interface ConnectorSet {
  readonly http1: Connector;
  readonly h2c: Connector;
  readonly h2: Connector;
  /** HTTP/3 over QUIC (always TLS). */
  readonly h3: Connector;
}
