/**
 * RequestContext: the one protocol-agnostic view of a request (DESIGN invariant 1). Every
 * listener fills one at its boundary; routing, pool, policy and telemetry read only this.
 *
 * Shape discipline (invariant 3): every field is set in the constructor, in one order, and
 * `recycle()` resets them in place. Header lists are flat [name, value, ...] arrays referenced
 * from the parser (node:http's rawHeaders, node:http2's raw header list), never rebuilt.
 *
 * Lifetime (invariant 4): contexts come from a ContextArena. A context goes back only when all
 * of its holds are released: the response is finished downstream, the request body is drained
 * or discarded, and telemetry has read it. `generation` grows on every recycle; a holder keeps
 * the generation it started with and `check(gen)` throws on a late use.
 */
import { ErrorCode, SkiffError } from './errors.js';
import { FrameQueue, type FrameSink } from './frames.js';
import type { ClusterConfig, ConfigSnapshot, RouteConfig } from './config/types.js';
import type { RequestTrace } from './telemetry/request-trace.js';
import type { EndpointPool, PoolWaiter } from './pool/endpoint-pool.js';
import type { ClusterState } from './pool/balancer.js';

export type RequestProtocol = 'http1' | 'h2' | 'h3';

/**
 * The downstream half of an exchange, implemented by each listener's adapter. As a FrameSink
 * it consumes `ctx.responseBody`; `onReset` aborts the exchange downstream.
 */
export interface DownstreamWriter extends FrameSink {
  /**
   * Sends the response head. `rawHeaders` is a flat list already free of hop-by-hop fields.
   * `isEndStream` says the upstream's head also ended the response (no body, no trailers:
   * e.g. a gRPC trailers-only response), so HTTP/2 can send one HEADERS frame with
   * END_STREAM; the END frame still follows through `ctx.responseBody`.
   */
  writeHead(status: number, rawHeaders: readonly string[], isEndStream: boolean): void;
  /**
   * Sends a complete error response (head and short plain-text body). `retryAfter` is the
   * `retry-after` value in seconds, '' for none (ErrorResponse.retryAfter).
   */
  writeError(status: number, code: string, body: string, retryAfter: string): void;
  /** Aborts the exchange after the head went out: HTTP/2 RST_STREAM, HTTP/1.1 socket destroy. */
  abort(err: SkiffError): void;
}

/** Bits of `RequestContext.holds`: the context is recycled when all are released. */
export const Hold = {
  Response: 1,
  RequestBody: 2,
  Telemetry: 4,
  All: 7,
} as const;

export interface ContextOwner {
  releaseContext(ctx: RequestContext): void;
}

export class RequestContext {
  generation: number;
  holds: number;
  owner: ContextOwner | null;
  // ---- request metadata, referenced from the parser ----
  protocol: RequestProtocol;
  method: string;
  scheme: string;
  authority: string;
  path: string;
  rawHeaders: readonly string[];
  /** Declared request body length; -1 when unknown (chunked, HTTP/2 without content-length). */
  contentLength: number;
  hasRequestBody: boolean;
  requestId: string;
  remoteAddress: string;
  listenerName: string;
  /** Name of the listener's route table. */
  routeTable: string;
  startTime: number;
  // ---- decisions ----
  snapshot: ConfigSnapshot | null;
  route: RouteConfig | null;
  cluster: ClusterConfig | null;
  /** The endpoint's pool the request was sent to; null before one is picked. */
  endpoint: EndpointPool | null;
  /** The cluster's shared state while this request counts against its breakers; null otherwise. */
  clusterState: ClusterState | null;
  /** Tries started (the first one and the retries). */
  attempts: number;
  /** The current try is dispatched and counted in its endpoint's active requests. */
  isAttemptActive: boolean;
  /** Per-try timeout or retry backoff (never both at once). */
  tryTimer: NodeJS.Timeout | null;
  /** Its place in an endpoint pool's wait queue while it waits for a connection; null otherwise. */
  poolWaiter: PoolWaiter | null;
  // ---- bodies ----
  requestBody: FrameQueue;
  responseBody: FrameQueue;
  // ---- response ----
  downstream: DownstreamWriter | null;
  responseStatus: number;
  /**
   * Set by the upstream codec before the response head: false when its framing cannot carry
   * trailers (HTTP/1.1 with a content-length or none), so an HTTP/2 listener ends the stream on
   * the last DATA frame instead of waiting for trailers that cannot come. True by default.
   */
  responseMayHaveTrailers: boolean;
  isResponseStarted: boolean;
  /** The downstream response is finished or aborted. */
  isFinished: boolean;
  /** The upstream exchange is over (done, failed, cancelled, or never started). */
  isUpstreamDone: boolean;
  error: SkiffError | null;
  timer: NodeJS.Timeout | null;
  /** Reused scratch list for the upstream request head (no allocation after warm-up). */
  outHeaders: string[];
  /** Reused scratch list for the downstream response head. */
  responseHeaders: string[];
  /** Opaque slot for the upstream exchange that currently serves this context. */
  upstreamHandle: { cancel(err: SkiffError): void } | null;
  // ---- telemetry ----
  /** The peer's authenticated identity (a SPIFFE ID from its certificate); '' when none. */
  peerIdentity: string;
  /** When the current upstream attempt was dispatched (performance.now()); 0 before. */
  upstreamStartTime: number;
  /** When the upstream response head arrived (performance.now()); 0 before. */
  upstreamHeadTime: number;
  /** The tracer's spans for this request; null when tracing is off. */
  trace: RequestTrace | null;
  /**
   * Trace-context fields to send upstream instead of the downstream's ([name, value, ...],
   * reused); empty when tracing is off, and the downstream's fields then pass through as-is.
   */
  traceHeaders: string[];
  /** Lower-case names the tracer owns (dropped from the forwarded head when traceHeaders is set). */
  traceFields: readonly string[];

  constructor(bufferBytes: number) {
    this.generation = 0;
    this.holds = 0;
    this.owner = null;
    this.protocol = 'http1';
    this.method = '';
    this.scheme = 'http';
    this.authority = '';
    this.path = '';
    this.rawHeaders = EMPTY;
    this.contentLength = -1;
    this.hasRequestBody = false;
    this.requestId = '';
    this.remoteAddress = '';
    this.listenerName = '';
    this.routeTable = '';
    this.startTime = 0;
    this.snapshot = null;
    this.route = null;
    this.cluster = null;
    this.endpoint = null;
    this.clusterState = null;
    this.attempts = 0;
    this.isAttemptActive = false;
    this.tryTimer = null;
    this.poolWaiter = null;
    this.requestBody = new FrameQueue(bufferBytes);
    this.responseBody = new FrameQueue(bufferBytes);
    this.downstream = null;
    this.responseStatus = 0;
    this.responseMayHaveTrailers = true;
    this.isResponseStarted = false;
    this.isFinished = false;
    this.isUpstreamDone = false;
    this.error = null;
    this.timer = null;
    this.outHeaders = [];
    this.responseHeaders = [];
    this.upstreamHandle = null;
    this.peerIdentity = '';
    this.upstreamStartTime = 0;
    this.upstreamHeadTime = 0;
    this.trace = null;
    this.traceHeaders = [];
    this.traceFields = EMPTY;
  }

  /** Throws when `gen` belongs to an earlier life of this context (a late use). */
  check(gen: number): void {
    if (gen !== this.generation) {
      throw new SkiffError(ErrorCode.StaleContext, 'internal', `context used after recycle (generation ${gen}, now ${this.generation})`);
    }
  }

  /** True when `gen` is still this context's current life. */
  isLive(gen: number): boolean {
    return gen === this.generation;
  }

  /** Releases one hold; the last one hands the context back to its arena. */
  release(hold: number): void {
    if ((this.holds & hold) === 0) return;
    this.holds &= ~hold;
    if (this.holds === 0 && this.owner !== null) this.owner.releaseContext(this);
  }

  /** Resets every field in place for the next request and bumps the generation. */
  recycle(bufferBytes: number): void {
    this.generation++;
    this.holds = 0;
    this.protocol = 'http1';
    this.method = '';
    this.scheme = 'http';
    this.authority = '';
    this.path = '';
    this.rawHeaders = EMPTY;
    this.contentLength = -1;
    this.hasRequestBody = false;
    this.requestId = '';
    this.remoteAddress = '';
    this.listenerName = '';
    this.routeTable = '';
    this.startTime = 0;
    this.snapshot = null;
    this.route = null;
    this.cluster = null;
    this.endpoint = null;
    this.clusterState = null;
    this.attempts = 0;
    this.isAttemptActive = false;
    if (this.tryTimer !== null) clearTimeout(this.tryTimer);
    this.tryTimer = null;
    this.poolWaiter = null;
    this.requestBody.recycle(bufferBytes);
    this.responseBody.recycle(bufferBytes);
    this.downstream = null;
    this.responseStatus = 0;
    this.responseMayHaveTrailers = true;
    this.isResponseStarted = false;
    this.isFinished = false;
    this.isUpstreamDone = false;
    this.error = null;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    // outHeaders and responseHeaders keep their backing stores (the next request overwrites
    // them by index, see buildUpstreamHeaders); their strings are blanked so no header value
    // outlives its request in the free list.
    blank(this.outHeaders);
    blank(this.responseHeaders);
    this.upstreamHandle = null;
    this.peerIdentity = '';
    this.upstreamStartTime = 0;
    this.upstreamHeadTime = 0;
    this.trace = null;
    blank(this.traceHeaders);
    this.traceHeaders.length = 0;
    this.traceFields = EMPTY;
  }
}

const EMPTY: readonly string[] = [];

function blank(list: string[]): void {
  for (let i = 0; i < list.length; i++) list[i] = '';
}
