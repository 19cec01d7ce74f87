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
    const conn = new H2Conn(endpoint, cluster, events, session, scheme);
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
  private hasSettings: boolean;
  private settingsWaiter: ((err: SkiffError | null) => void) | null;

  constructor(endpoint: SocketAddress, _cluster: ClusterConfig, events: ConnEvents, session: http2.ClientHttp2Session, scheme: string) {
    this.endpointKey = addressKey(endpoint);
    this.isMultiplexed = true;
    this.activeStreams = 0;
    this.maxStreams = DEFAULT_STREAMS;
    this.isClosed = false;
    this.idleSince = 0;
    this.events = events;
    this.session = session;
    this.scheme = scheme;
    this.hasSettings = false;
    this.settingsWaiter = null;
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
    this.ctx.responseBody.source = this;
    this.handler.onUpstreamHead(this.ctx, this.gen, status, raw, (flags & NGHTTP2_FLAG_END_STREAM) !== 0);
  }

  onResponseData(chunk: Buffer): void {
    if (!this.isFinished) this.ctx.responseBody.push(chunk);
  }

  onResponseTrailers(trailers: http2.IncomingHttpHeaders): void {
    if (!this.isFinished) this.ctx.responseBody.pushTrailers(headerObjectToFlat(trailers));
  }

  onResponseEnd(): void {
    if (this.isFinished) return;
    if (!this.hasHead) return; // 'close' reports the failure
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

  cancel(_err: SkiffError): void {
    if (this.isFinished) return;
    this.isFinished = true;
    this.detach();
    this.cancelStream();
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
