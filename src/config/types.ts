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

export interface ListenerConfig {
  readonly name: string;
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
}
