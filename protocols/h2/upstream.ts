/**
 * HTTP/2 upstream codec on node:http2 (h2c prior knowledge and h2 over TLS with ALPN).
 *
 * Why not undici here (decision log): undici's HTTP/2 client queues streams past the peer's
 * limit inside itself and keeps the peer's SETTINGS private, while invariant 5 puts admission
 * in Skiff's pool; node:http2 exposes `remoteSettings`, per-stream flow control through
 * pause/resume and write/'drain', and request trailers.
 *
 * `acquireSlow` resolves only after the peer's first SETTINGS frame, so `maxStreams` is the
 * peer's SETTINGS_MAX_CONCURRENT_STREAMS from the first stream on.
 */
import http2 from 'node:http2';
import type net from 'node:net';
import type { RequestContext } from '../../src/context.js';
import { addressKey } from '../../src/address.js';
import { ErrorCode, SkiffError } from '../../src/errors.js';
import type { FrameSink, FrameSource } from '../../src/frames.js';
import { buildUpstreamHeaders, getHeader } from '../../src/headers.js';
import type { ConnEvents, Connector, UpstreamConn, UpstreamHandler } from '../../src/pool/types.js';
import type { ClusterConfig, SocketAddress } from '../../src/config/types.js';
import { dial } from '../h1/dial.js';
import type { IdentityStore } from '../../mesh/identity.js';
import { flatToHeaderObject, headerObjectToFlat } from './header-object.js';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR, NGHTTP2_FLAG_END_STREAM } = http2.constants;
/** Upper bound on streams per connection whatever the peer allows. */
const MAX_STREAMS_CAP = 1000;
/** What we assume until the peer says otherwise (RFC 9113 recommends at least 100). */
const DEFAULT_STREAMS = 100;
/** Receive window of a whole upstream connection. */
const CONNECTION_WINDOW = 16 * 1024 * 1024;
/** How long a connection gets, after one of its streams timed out, to show it is alive (H2Conn.probe). */
const PING_DEADLINE_MS = 2000;


export class H2Connector implements Connector {
  /** This sidecar's mesh identity, for `tls: mesh` clusters (mTLS, ALPN h2); null without one. */
  private readonly identity: IdentityStore | null;

  constructor(identity: IdentityStore | null = null) {
    this.identity = identity;
  }

  async connect(endpoint: SocketAddress, cluster: ClusterConfig, events: ConnEvents): Promise<UpstreamConn> {
    const socket = await dial(endpoint, cluster, ['h2'], this.identity);
    const isTls = cluster.tls !== null || cluster.meshTls;
    if (isTls && (socket as net.Socket & { alpnProtocol?: string | false }).alpnProtocol !== 'h2') {
      socket.destroy();
      throw new SkiffError(ErrorCode.UpstreamConnect, 'upstream', `${addressKey(endpoint)} did not negotiate h2 via ALPN`, true);
    }
    const scheme = isTls ? 'https' : 'http';
    const session = http2.connect(`${scheme}://${addressKey(endpoint)}`, {
      createConnection: () => socket,
      settings: { enablePush: false, initialWindowSize: 1024 * 1024 },
      maxSessionMemory: 64,
    });
    // The connection window (65,535 by default) would cap every stream together; each stream
    // keeps its own 1 MiB window, so buffering per stream stays bounded.
    session.on('connect', () => session.setLocalWindowSize(CONNECTION_WINDOW));
    const conn = new H2Conn(endpoint, cluster, events, session, scheme, socket);
    await conn.waitForSettings(cluster.connectTimeoutMs);
    return conn;
  }
}

export class H2Conn implements UpstreamConn {
  readonly endpointKey: string;
  readonly isMultiplexed: boolean;
  activeStreams: number;
  maxStreams: number;
  isClosed: boolean;
  idleSince: number;
  readonly events: ConnEvents;
  readonly session: http2.ClientHttp2Session;
  readonly scheme: string;
  /** The TCP/TLS socket under the session (dialed by us), for `probe()`'s last resort. */
  private readonly socket: net.Socket;
  private hasSettings: boolean;
  private settingsWaiter: ((err: SkiffError | null) => void) | null;
  /** Armed while a liveness probe runs (`probe()`). */
  private pingTimer: NodeJS.Timeout | null;
  /** `socket.bytesRead` when the probe started. */
  private probeBytesRead: number;

  constructor(endpoint: SocketAddress, _cluster: ClusterConfig, events: ConnEvents, session: http2.ClientHttp2Session, scheme: string, socket: net.Socket) {
    this.endpointKey = addressKey(endpoint);
    this.isMultiplexed = true;
    this.activeStreams = 0;
    this.maxStreams = DEFAULT_STREAMS;
    this.isClosed = false;
    this.idleSince = 0;
    this.events = events;
    this.session = session;
    this.scheme = scheme;
    this.socket = socket;
    this.hasSettings = false;
    this.settingsWaiter = null;
    this.pingTimer = null;
    this.probeBytesRead = 0;
    session.on('remoteSettings', (settings: http2.Settings) => this.onSettings(settings));
    session.on('goaway', () => this.markClosed());
    session.on('close', () => this.markClosed());
    session.on('error', (err: Error) => {
      this.markClosed();
      this.settle(new SkiffError(ErrorCode.UpstreamConnect, 'upstream', `HTTP/2 session to ${this.endpointKey} failed: ${err.message}`, true, err));
    });
  }

  waitForSettings(timeoutMs: number): Promise<void> {
    if (this.hasSettings) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settle(new SkiffError(ErrorCode.ConnectTimeout, 'upstream', `no SETTINGS from ${this.endpointKey} within ${timeoutMs} ms`, true));
      }, timeoutMs);
      this.settingsWaiter = (err) => {
        clearTimeout(timer);
        if (err === null) {
          resolve();
        } else {
          this.session.destroy();
          reject(err);
        }
      };
    });
  }

  private settle(err: SkiffError | null): void {
    const w = this.settingsWaiter;
    this.settingsWaiter = null;
    if (w !== null) w(err);
  }

  private onSettings(settings: http2.Settings): void {
    const peer = settings.maxConcurrentStreams;
    this.maxStreams = Math.max(1, Math.min(peer === undefined ? DEFAULT_STREAMS : peer, MAX_STREAMS_CAP));
    const isFirst = !this.hasSettings;
    this.hasSettings = true;
    if (isFirst) this.settle(null);
    else this.events.onCapacity(this);
  }

  private markClosed(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.events.onConnClosed(this);
    this.settle(new SkiffError(ErrorCode.UpstreamConnect, 'upstream', `HTTP/2 session to ${this.endpointKey} closed during the handshake`, true));
  }

  dispatch(ctx: RequestContext, gen: number, handler: UpstreamHandler): void {
    buildUpstreamHeaders(ctx, ctx.outHeaders, false);
    const headers = flatToHeaderObject(ctx.outHeaders);
    headers[':method'] = ctx.method;
    headers[':path'] = ctx.path;
    headers[':scheme'] = this.scheme;
    headers[':authority'] = ctx.authority === '' ? this.endpointKey : ctx.authority;
    // `te: trailers` is the one TE value HTTP/2 allows; gRPC relies on it.
    const te = getHeader(ctx.rawHeaders, 'te');
    if (te !== null && te.includes('trailers')) headers.te = 'trailers';
    const hasBody = ctx.hasRequestBody;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = this.session.request(headers, { endStream: !hasBody, waitForTrailers: hasBody });
    } catch (err) {
      // Closed or destroyed under us (e.g. ERR_HTTP2_GOAWAY_SESSION without a 'goaway' event,
      // see probe()): no stream will ever start here again, so the pool must stop choosing it.
      if (this.session.closed || this.session.destroyed) this.markClosed();
      this.events.onStreamDone(this);
      handler.onUpstreamError(ctx, gen, new SkiffError(ErrorCode.UpstreamReset, 'upstream', `could not open a stream: ${(err as Error).message}`, true, err));
      return;
    }
    const ex = new H2UpstreamExchange(this, ctx, gen, handler, stream);
    ctx.upstreamHandle = ex;
    ex.start(hasBody);
  }

  close(): void {
    this.isClosed = true;
    if (!this.session.destroyed) this.session.close();
  }

  /**
   * A stream on this connection timed out: is the connection still alive? Within
   * PING_DEADLINE_MS a PING must come back or at least some bytes must be read from the
   * socket; otherwise the socket is destroyed, which fails every stream on it and frees their
   * slots and the fd. Why: when nghttp2 finds a connection error in what the peer sent (e.g.
   * DATA on stream 0), it ends the session itself and sends GOAWAY, but Node 20 tells the JS
   * layer nothing and stops reading the socket. The session then looks open forever: its
   * streams never close (activeStreams stuck; the endpoint hangs, then answers 502 for good),
   * the peer's FIN is never read (CLOSE-WAIT, a leaked fd). Only a timeout on one of its
   * streams shows it, and a frozen `bytesRead` tells it from a slow peer. A closing session
   * (GOAWAY received) is not pinged: node:http2 would hold the PING for a 'connect' that never
   * comes; the byte count decides alone, so a draining connection silent for the whole window
   * is cut too. Rejected: PINGs on every silent connection (keepalive), which cost on every
   * idle connection and draw GOAWAY(ENHANCE_YOUR_CALM) from gRPC servers' ping policing.
   * Regression: test/regress/h2-upstream-zombie-session.test.ts.
   */
  probe(): void {
    if (this.pingTimer !== null || this.socket.destroyed) return;
    this.probeBytesRead = this.socket.bytesRead;
    this.pingTimer = setTimeout(onPingDeadline, PING_DEADLINE_MS, this);
    this.pingTimer.unref();
    if (this.session.closed || this.session.destroyed) return;
    // Cold path (after a timeout), so a closure is fine here.
    this.session.ping((err: Error | null) => {
      if (err === null) this.onPingAck();
    });
  }

  private onPingAck(): void {
    if (this.pingTimer !== null) clearTimeout(this.pingTimer);
    this.pingTimer = null;
  }

  /** The probe's time is up without a PING answer: dead unless bytes arrived meanwhile. */
  onPingDeadline(): void {
    this.pingTimer = null;
    if (this.socket.bytesRead !== this.probeBytesRead) return;
    this.markClosed();
    this.socket.destroy(); // node:http2 cleans up on the socket's close
  }
}

function onPingDeadline(conn: H2Conn): void {
  conn.onPingDeadline();
}

/** One stream: sink of the request body, source of the response body. */
class H2UpstreamExchange implements FrameSink, FrameSource {
  readonly conn: H2Conn;
  readonly ctx: RequestContext;
  readonly gen: number;
  readonly handler: UpstreamHandler;
  readonly stream: http2.ClientHttp2Stream;
  private requestTrailers: http2.OutgoingHttpHeaders | null;
  private hasHead: boolean;
  /** The response's content-length; -1 when it has none or no body may follow (HEAD, 204, 304). */
  private declaredLength: number;
  private bodyBytes: number;
  /** True once the engine was told (done, error) or cancelled us. */
  private isFinished: boolean;
  private isStreamDone: boolean;

  constructor(conn: H2Conn, ctx: RequestContext, gen: number, handler: UpstreamHandler, stream: http2.ClientHttp2Stream) {
    this.conn = conn;
    this.ctx = ctx;
    this.gen = gen;
    this.handler = handler;
    this.stream = stream;
    this.requestTrailers = null;
    this.hasHead = false;
    this.declaredLength = -1;
    this.bodyBytes = 0;
    this.isFinished = false;
    this.isStreamDone = false;
  }

  start(hasBody: boolean): void {
    const s = this.stream as TaggedClientStream;
    s[kExchange] = this;
    s.on('response', onUpstreamResponse);
    s.on('data', onUpstreamData);
    s.on('trailers', onUpstreamTrailers);
    s.on('end', onUpstreamEnd);
    s.on('close', onUpstreamClose);
    s.on('error', onUpstreamStreamError);
    if (hasBody) {
      s.on('wantTrailers', onUpstreamWantTrailers);
      s.on('drain', onUpstreamDrain);
      this.ctx.requestBody.attachSink(this);
    }
  }

  sendRequestTrailers(): void {
    this.stream.sendTrailers(this.requestTrailers ?? {});
  }

  onRequestDrain(): void {
    if (!this.isFinished && this.ctx.isLive(this.gen)) this.ctx.requestBody.resumeSink();
  }

  // ---- response side ----

  onResponse(headers: http2.IncomingHttpHeaders, flags: number, raw: string[]): void {
    if (this.isFinished) return;
    const status = Number(headers[':status']);
    this.hasHead = true;
    const length = headers['content-length'];
    if (length !== undefined && status !== 204 && status !== 304 && this.ctx.method !== 'HEAD') this.declaredLength = Number(length);
    this.ctx.responseBody.source = this;
    this.handler.onUpstreamHead(this.ctx, this.gen, status, raw, (flags & NGHTTP2_FLAG_END_STREAM) !== 0);
  }

  onResponseData(chunk: Buffer): void {
    this.bodyBytes += chunk.length;
    if (!this.isFinished) this.ctx.responseBody.push(chunk);
  }

  onResponseTrailers(trailers: http2.IncomingHttpHeaders): void {
    if (!this.isFinished) this.ctx.responseBody.pushTrailers(headerObjectToFlat(trailers));
  }

  onResponseEnd(): void {
    if (this.isFinished) return;
    if (!this.hasHead) return; // 'close' reports the failure
    // node:http2 also emits 'end' when it tears a stream down (the session died under it, e.g.
    // a TCP FIN mid-response: rstCode CANCEL, no END_STREAM). Passing that on as the end of
    // the response handed clients a truncated body as complete. A body short of its
    // content-length, or a stream already reset, is left to 'close', which reports a reset.
    // Regression: test/regress/h2-upstream-teardown-not-end.test.ts.
    const code = this.stream.rstCode;
    if (this.declaredLength >= 0 ? this.bodyBytes !== this.declaredLength : code !== undefined && code !== NGHTTP2_NO_ERROR) return;
    this.isFinished = true;
    this.detach();
    this.ctx.responseBody.end();
    this.handler.onUpstreamDone(this.ctx, this.gen);
  }

  onClose(): void {
    if (!this.isStreamDone) {
      this.isStreamDone = true;
      this.conn.events.onStreamDone(this.conn);
    }
    if (this.isFinished) return;
    this.isFinished = true;
    this.detach();
    const code = this.stream.rstCode ?? NGHTTP2_NO_ERROR;
    const isRefused = code === NGHTTP2_REFUSED_STREAM;
    const err = new SkiffError(
      ErrorCode.UpstreamReset,
      'upstream',
      isRefused ? 'upstream refused the stream' : this.hasHead ? `upstream reset the stream mid-response (code ${code})` : `upstream reset the stream (code ${code})`,
      isRefused,
    );
    this.handler.onUpstreamError(this.ctx, this.gen, err);
  }

  pauseSource(): void {
    this.stream.pause();
  }

  resumeSource(): void {
    this.stream.resume();
  }

  // ---- request side (FrameSink of ctx.requestBody) ----

  onData(chunk: Buffer): boolean {
    const s = this.stream;
    if (s.destroyed || s.writableEnded) return true;
    return s.write(chunk);
  }

  onTrailers(raw: readonly string[]): void {
    this.requestTrailers = flatToHeaderObject(raw);
  }

  onEnd(): void {
    const s = this.stream;
    if (!s.destroyed && !s.writableEnded) s.end();
  }

  onReset(_err: SkiffError): void {
    this.cancelStream();
  }

  // ---- engine handle ----

  cancel(err: SkiffError): void {
    if (this.isFinished) return;
    this.isFinished = true;
    this.detach();
    this.cancelStream();
    // A stream that timed out may sit on a dead session (H2Conn.probe).
    if (err.code === ErrorCode.Timeout) this.conn.probe();
  }

  private cancelStream(): void {
    if (!this.stream.destroyed && !this.stream.closed) this.stream.close(NGHTTP2_CANCEL);
  }

  private detach(): void {
    const q = this.ctx.requestBody;
    if (q.sink === this) q.detachSink();
  }
}

// Stream listeners are shared functions that find their exchange through a symbol slot on
// the stream: no closures per request (STYLE: "no per-request closures where a method serves").
const kExchange = Symbol('skiff.h2.upstream.exchange');
type TaggedClientStream = http2.ClientHttp2Stream & { [kExchange]: H2UpstreamExchange };

function onUpstreamResponse(this: TaggedClientStream, headers: http2.IncomingHttpHeaders, flags: number, raw: string[]): void {
  this[kExchange].onResponse(headers, flags, raw);
}
function onUpstreamData(this: TaggedClientStream, chunk: Buffer): void {
  this[kExchange].onResponseData(chunk);
}
function onUpstreamTrailers(this: TaggedClientStream, trailers: http2.IncomingHttpHeaders): void {
  this[kExchange].onResponseTrailers(trailers);
}
function onUpstreamEnd(this: TaggedClientStream): void {
  this[kExchange].onResponseEnd();
}
function onUpstreamClose(this: TaggedClientStream): void {
  this[kExchange].onClose();
}
function onUpstreamWantTrailers(this: TaggedClientStream): void {
  this[kExchange].sendRequestTrailers();
}
function onUpstreamDrain(this: TaggedClientStream): void {
  this[kExchange].onRequestDrain();
}
function onUpstreamStreamError(): void {
  // 'close' follows and reports the failure.
}
