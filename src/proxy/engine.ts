/**
 * ProxyEngine: everything between a listener's boundary and an upstream codec. It reads the
 * snapshot once, routes, applies the per-route timeout and body limit, acquires a connection
 * (tryAcquire first, acquireSlow only on a miss), dispatches, wires the response body to the
 * downstream writer, and maps every failure through `errorResponse` (the one place).
 *
 * It never imports a protocol module and never asks which protocol a request came in on.
 * Per-request callbacks are methods of this one class (monomorphic); the only closures are on
 * the cold path (acquireSlow's promise).
 */
import { randomUUID } from 'node:crypto';
import { Hold, type RequestContext } from '../context.js';
import { ErrorCode, SkiffError, errorResponse, toSkiffError } from '../errors.js';
import { buildResponseHeaders } from '../headers.js';
import type { EndpointPool } from '../pool/endpoint-pool.js';
import type { UpstreamPools } from '../pool/upstream-pools.js';
import type { UpstreamConn, UpstreamHandler } from '../pool/types.js';
import type { ConfigSnapshot, RouteConfig } from '../config/types.js';

export interface SnapshotSource {
  readonly current: ConfigSnapshot;
}

/**
 * Observes requests for telemetry (src/telemetry/: metrics, access log, traces). Each method is
 * called synchronously on the request path, so implementations must be cheap.
 */
export interface RequestObserver {
  /** A request entered the engine: its id is set, nothing is routed yet. */
  onRequestStart(ctx: RequestContext): void;
  /**
   * An upstream attempt is about to be dispatched (`ctx.endpointKey` is set). The observer may
   * fill `ctx.traceHeaders` (and `ctx.traceFields`) to propagate trace context upstream.
   */
  onUpstreamStart(ctx: RequestContext): void;
  /** That attempt is over: done (`err` null), failed or cancelled. */
  onUpstreamEnd(ctx: RequestContext, err: SkiffError | null): void;
  /** The request is over; called once, before the telemetry hold is released. */
  onRequestDone(ctx: RequestContext): void;
}

export class ProxyEngine implements UpstreamHandler {
  private readonly store: SnapshotSource;
  readonly pools: UpstreamPools;
  private observer: RequestObserver | null;
  /** Requests between `handle` and the release of their last hold. */
  inFlight: number;
  requestsTotal: number;

  constructor(store: SnapshotSource, pools: UpstreamPools) {
    this.store = store;
    this.pools = pools;
    this.observer = null;
    this.inFlight = 0;
    this.requestsTotal = 0;
  }

  setObserver(observer: RequestObserver | null): void {
    this.observer = observer;
  }

  /**
   * Entry point for listener adapters. The adapter has filled the request metadata, set
   * `ctx.downstream`, and registered itself as the source of `ctx.requestBody`.
   */
  handle(ctx: RequestContext): void {
    const gen = ctx.generation;
    this.inFlight++;
    this.requestsTotal++;
    const snapshot = this.store.current;
    ctx.snapshot = snapshot;
    if (ctx.requestId === '') ctx.requestId = nextRequestId();
    if (this.observer !== null) this.observer.onRequestStart(ctx);
    if (ctx.method === 'CONNECT') {
      this.fail(ctx, gen, new SkiffError(ErrorCode.MethodNotAllowed, 'downstream', 'CONNECT is not supported'));
      return;
    }
    const table = snapshot.routeTables.get(ctx.routeTable);
    const route = table === undefined ? null : table.match(ctx.authority, ctx.path, ctx.rawHeaders);
    if (route === null) {
      this.fail(ctx, gen, new SkiffError(ErrorCode.NoRoute, 'downstream', 'no route matches the request'));
      return;
    }
    ctx.route = route;
    if (snapshot.hasAuthorization && !this.isAuthorized(ctx, snapshot, route)) return;
    const cluster = snapshot.clusters.get(route.cluster);
    if (cluster === undefined) {
      this.fail(ctx, gen, new SkiffError(ErrorCode.NoCluster, 'internal', `cluster ${route.cluster} is not defined`));
      return;
    }
    ctx.cluster = cluster;
    if (cluster.maxBodyBytes > 0) {
      if (ctx.contentLength > cluster.maxBodyBytes) {
        this.fail(ctx, gen, new SkiffError(ErrorCode.BodyTooLarge, 'downstream', `request body of ${ctx.contentLength} bytes exceeds ${cluster.maxBodyBytes}`));
        return;
      }
      ctx.requestBody.maxTotalBytes = cluster.maxBodyBytes;
    }
    if (route.timeoutMs > 0) ctx.timer = setTimeout(onRouteTimeout, route.timeoutMs, this, ctx, gen);
    const pool = this.pools.pick(cluster);
    if (pool === undefined) {
      this.fail(ctx, gen, new SkiffError(ErrorCode.NoEndpoint, 'internal', `cluster ${cluster.name} has no endpoints`, true));
      return;
    }
    ctx.endpointKey = pool.key;
    ctx.endpoint = pool;
    const conn = pool.tryAcquire();
    if (conn !== undefined) {
      this.dispatch(ctx, gen, conn);
      return;
    }
    this.acquireSlow(ctx, gen, pool, cluster.connectTimeoutMs);
  }

  /**
   * Inbound authorization: the peer's SPIFFE ID (from its mTLS certificate) must be on the
   * listener's `authorize` list and on the route's, where they have one. Fails the request
   * with 403 otherwise and returns false.
   */
  private isAuthorized(ctx: RequestContext, snapshot: ConfigSnapshot, route: RouteConfig): boolean {
    const listener = snapshot.listenerByName.get(ctx.listenerName);
    const peer = ctx.peerIdentity;
    let where: string | null = null;
    if (listener !== undefined && listener.authorize.length > 0 && !listener.authorize.includes(peer)) where = `listener ${listener.name}`;
    else if (route.authorize.length > 0 && !route.authorize.includes(peer)) where = 'this route';
    if (where === null) return true;
    const who = peer === '' ? 'a peer without a SPIFFE identity' : `peer ${peer}`;
    this.fail(ctx, ctx.generation, new SkiffError(ErrorCode.Forbidden, 'downstream', `${who} is not allowed on ${where}`));
    return false;
  }

  /**
   * Entry point for a request the adapter already found bad (e.g. an HTTP/2 header list over
   * the limit): it is counted like any other and answered through the one error path.
   */
  reject(ctx: RequestContext, err: SkiffError): void {
    this.inFlight++;
    this.requestsTotal++;
    ctx.snapshot = this.store.current;
    if (ctx.requestId === '') ctx.requestId = nextRequestId();
    if (this.observer !== null) this.observer.onRequestStart(ctx);
    this.fail(ctx, ctx.generation, err);
  }

  private acquireSlow(ctx: RequestContext, gen: number, pool: EndpointPool, deadlineMs: number): void {
    pool.acquireSlow(deadlineMs).then(
      (conn) => {
        if (!ctx.isLive(gen) || ctx.error !== null || ctx.isFinished) {
          pool.onStreamDone(conn); // nobody wants it any more: give the slot back
          return;
        }
        this.dispatch(ctx, gen, conn);
      },
      (err: unknown) => this.fail(ctx, gen, toSkiffError(err, ErrorCode.UpstreamConnect, 'upstream')),
    );
  }

  private dispatch(ctx: RequestContext, gen: number, conn: UpstreamConn): void {
    ctx.upstreamStartTime = performance.now();
    if (this.observer !== null) this.observer.onUpstreamStart(ctx);
    try {
      conn.dispatch(ctx, gen, this);
    } catch (err) {
      this.fail(ctx, gen, toSkiffError(err, ErrorCode.Internal, 'internal'));
    }
  }

  // ---- UpstreamHandler ----

  onUpstreamHead(ctx: RequestContext, gen: number, status: number, rawHeaders: readonly string[], isEndStream: boolean): void {
    ctx.check(gen);
    const downstream = ctx.downstream;
    if (ctx.error !== null || ctx.isFinished || downstream === null) return;
    ctx.upstreamHeadTime = performance.now();
    if (ctx.endpoint !== null) ctx.endpoint.recordLatency(ctx.upstreamHeadTime - ctx.upstreamStartTime);
    buildResponseHeaders(rawHeaders, ctx.responseHeaders);
    ctx.isResponseStarted = true;
    ctx.responseStatus = status;
    downstream.writeHead(status, ctx.responseHeaders, isEndStream);
    ctx.responseBody.attachSink(downstream);
  }

  onUpstreamDone(ctx: RequestContext, gen: number): void {
    ctx.check(gen);
    ctx.isUpstreamDone = true;
    ctx.upstreamHandle = null;
    if (this.observer !== null) this.observer.onUpstreamEnd(ctx, null);
    // The upstream answered before reading the whole request body: discard the rest, so the
    // downstream source is drained (not left paused) and its hold can go.
    if (ctx.requestBody.isOpen) ctx.requestBody.reset(UPSTREAM_FINISHED_FIRST);
    this.maybeRelease(ctx);
  }

  onUpstreamError(ctx: RequestContext, gen: number, err: SkiffError): void {
    if (!ctx.isLive(gen)) return;
    ctx.isUpstreamDone = true;
    ctx.upstreamHandle = null;
    if (this.observer !== null) this.observer.onUpstreamEnd(ctx, err);
    this.fail(ctx, gen, err);
  }

  // ---- downstream events (called by listener adapters) ----

  /**
   * The downstream response is finished (`isAborted` false) or the client went away
   * (`isAborted` true). Either way the adapter will touch the context no more, except to
   * release the request-body hold when its source is exhausted.
   */
  onDownstreamDone(ctx: RequestContext, gen: number, isAborted: boolean): void {
    if (!ctx.isLive(gen) || ctx.isFinished) return;
    ctx.isFinished = true;
    if (ctx.timer !== null) {
      clearTimeout(ctx.timer);
      ctx.timer = null;
    }
    if (isAborted && !ctx.isUpstreamDone) {
      const err = new SkiffError(ErrorCode.DownstreamReset, 'downstream', 'client closed the stream');
      if (ctx.error === null) ctx.error = err;
      this.cancelUpstream(ctx, err);
    }
    this.maybeRelease(ctx);
  }

  /** Route timeout fired (called through the module-level trampoline, no closure). */
  onTimeout(ctx: RequestContext, gen: number): void {
    if (!ctx.isLive(gen)) return;
    ctx.timer = null;
    if (ctx.isFinished) return;
    const ms = ctx.route === null ? 0 : ctx.route.timeoutMs;
    this.fail(ctx, gen, new SkiffError(ErrorCode.Timeout, 'upstream', `upstream did not answer within ${ms} ms`));
  }

  /** The single failure path: error response before the head, reset after it. */
  fail(ctx: RequestContext, gen: number, err: SkiffError): void {
    if (!ctx.isLive(gen) || ctx.isFinished) return;
    if (ctx.error === null) ctx.error = err;
    else if (ctx.isResponseStarted) return;
    if (ctx.timer !== null) {
      clearTimeout(ctx.timer);
      ctx.timer = null;
    }
    this.cancelUpstream(ctx, err);
    ctx.requestBody.reset(err);
    const downstream = ctx.downstream;
    if (!ctx.isResponseStarted) {
      const res = errorResponse(err);
      ctx.isResponseStarted = true;
      ctx.responseStatus = res.status;
      if (downstream !== null) downstream.writeError(res.status, res.code, res.body);
    } else {
      ctx.responseBody.reset(err);
      if (downstream !== null && ctx.responseBody.sink === null) downstream.onReset(err);
    }
    this.maybeRelease(ctx);
  }

  private cancelUpstream(ctx: RequestContext, err: SkiffError): void {
    const handle = ctx.upstreamHandle;
    ctx.upstreamHandle = null;
    ctx.isUpstreamDone = true;
    if (handle !== null) {
      handle.cancel(err);
      if (this.observer !== null) this.observer.onUpstreamEnd(ctx, err);
    }
  }

  /** Releases the response hold once both halves are over; telemetry reads, then releases. */
  private maybeRelease(ctx: RequestContext): void {
    if (!ctx.isFinished || !ctx.isUpstreamDone) return;
    if ((ctx.holds & Hold.Response) === 0) return;
    this.inFlight--;
    if (this.observer !== null) this.observer.onRequestDone(ctx);
    ctx.release(Hold.Telemetry);
    ctx.release(Hold.Response);
  }
}

/**
 * Shared, stackless error for a request body cut short because the upstream already answered
 * (no one sees its stack; building an Error per request showed up at 9.5% of CPU).
 */
const UPSTREAM_FINISHED_FIRST = new SkiffError(ErrorCode.UpstreamReset, 'upstream', 'upstream finished before the request body ended');

/**
 * Generated x-request-id values: UUID-shaped, a random per-process prefix (from one
 * randomUUID: the version and variant nibbles and 72 random bits) and a 48-bit counter.
 * `randomUUID()` per request cost ~580 bytes of garbage (bench/alloc.ts); this costs one
 * string. Ids are unique, not unpredictable; nothing in Skiff relies on them being secret.
 */
const REQUEST_ID_PREFIX = randomUUID().slice(0, 24);
let requestIdCounter = 0;
function nextRequestId(): string {
  requestIdCounter = (requestIdCounter + 1) % 0x1000000000000;
  return REQUEST_ID_PREFIX + requestIdCounter.toString(16).padStart(12, '0');
}

function onRouteTimeout(engine: ProxyEngine, ctx: RequestContext, gen: number): void {
  engine.onTimeout(ctx, gen);
}
