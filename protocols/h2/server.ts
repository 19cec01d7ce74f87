/**
 * HTTP/2 listener adapter on node:http2 (h2c prior knowledge and h2 over TLS). Each stream
 * becomes a RequestContext whose `rawHeaders` is node's raw header list (pseudo-headers
 * included; the engine's header builders skip them). The response goes back through an
 * H2Exchange. node:http2's `respond()` takes only a header object, so one is built here, at
 * the boundary, once per response: the one header object of this path (decision log).
 *
 * Responses always use `waitForTrailers`: trailers are known only when the upstream body ends,
 * and with no trailers node ends the stream with an empty DATA frame carrying END_STREAM.
 */
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { ContextArena } from '../../src/arena.js';
import { Hold, type DownstreamWriter, type RequestContext } from '../../src/context.js';
import { ErrorCode, SkiffError } from '../../src/errors.js';
import type { FrameSource } from '../../src/frames.js';
import type { ProxyEngine } from '../../src/proxy/engine.js';
import type { Limits, ListenerConfig } from '../../src/config/types.js';
import { isValidAuthority } from '../h1/parse.js';
import { flatToHeaderObject, headerObjectToFlat } from './header-object.js';

const kExchange = Symbol('skiff.h2.exchange');
/** The stream's session, kept by us: node:http2 clears `stream.session` before 'close'. */
const kSessionOf = Symbol('skiff.h2.sessionOf');
type TaggedStream = http2.ServerHttp2Stream & { [kExchange]: H2Exchange | null; [kSessionOf]?: CountedSession };
/** The peer's SPIFFE ID (mTLS), set on the socket by `attach` and copied to its session once. */
const kPeerIdentity = Symbol('skiff.h2.peerIdentity');
type PeerTagged = { [kPeerIdentity]?: string };
/** Streams open on a session (their 'close' not seen yet), for the idle timeout. */
const kOpenStreams = Symbol('skiff.h2.openStreams');
const kIdleMs = Symbol('skiff.h2.idleMs');
/** Streams the session has carried (limits.maxRequestsPerConnection). */
const kTotalStreams = Symbol('skiff.h2.totalStreams');
type CountedSession = http2.ServerHttp2Session & { [kOpenStreams]: number; [kIdleMs]: number; [kTotalStreams]: number };

const { NGHTTP2_NO_ERROR } = http2.constants;
/** Receive window of a whole downstream HTTP/2 connection. */
const CONNECTION_WINDOW = 4 * 1024 * 1024;

export class H2Exchange implements DownstreamWriter, FrameSource {
  readonly ctx: RequestContext;
  readonly gen: number;
  readonly engine: ProxyEngine;
  readonly stream: http2.ServerHttp2Stream;
  trailers: http2.OutgoingHttpHeaders | null;
  isEnded: boolean;
  isRequestDone: boolean;
  /** 'drain' is listened for (added at the first refused write). */
  isDrainListened: boolean;
  /** `alt-svc` value for the response ('' for none), from the listener. */
  readonly altSvc: string;

  constructor(engine: ProxyEngine, ctx: RequestContext, stream: http2.ServerHttp2Stream, altSvc: string) {
    this.ctx = ctx;
    this.gen = ctx.generation;
    this.engine = engine;
    this.stream = stream;
    this.trailers = null;
    this.isEnded = false;
    this.isRequestDone = false;
    this.isDrainListened = false;
    this.altSvc = altSvc;
  }

  writeHead(status: number, rawHeaders: readonly string[], isEndStream: boolean): void {
    const s = this.stream;
    if (s.destroyed || s.closed) return;
    const headers = flatToHeaderObject(rawHeaders);
    headers[':status'] = status;
    if (this.altSvc !== '') headers['alt-svc'] = this.altSvc;
    if (isEndStream) {
      // One HEADERS frame with END_STREAM: gRPC's trailers-only responses depend on it.
      // Regression: test/e2e/grpc.test.ts (unary error status and trailer metadata).
      this.isEnded = true;
      s.respond(headers, { endStream: true });
    } else if (this.ctx.responseMayHaveTrailers) {
      s.on('wantTrailers', onWantTrailers);
      s.respond(headers, { waitForTrailers: true });
    } else {
      // No trailers can come (an HTTP/1.1 upstream with a length): END_STREAM rides on the last
      // DATA frame, with no 'wantTrailers' round trip and no empty DATA frame after it. An
      // upstream that cuts the body reaches the client as a reset, never as an end: every
      // abort goes through resetStream, not stream.close(code).
      s.respond(headers);
    }
  }

  writeError(status: number, code: string, body: string, retryAfter: string): void {
    const s = this.stream;
    if (s.destroyed || s.closed) return;
    if (s.headersSent) {
      resetStream(s, new SkiffError(ErrorCode.Internal, 'internal', body));
      return;
    }
    this.isEnded = true;
    s.respond({
      ':status': status,
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'x-skiff-error': code,
      ...(retryAfter !== '' ? { 'retry-after': retryAfter } : {}),
      ...(this.altSvc !== '' ? { 'alt-svc': this.altSvc } : {}),
    });
    s.end(body);
  }

  abort(err: SkiffError): void {
    resetStream(this.stream, err);
  }

  onData(chunk: Buffer): boolean {
    const s = this.stream;
    if (s.destroyed) return true;
    if (s.write(chunk)) return true;
    // Listened for only once a write is refused: most responses never fill the stream's buffer.
    if (!this.isDrainListened) {
      this.isDrainListened = true;
      s.on('drain', onStreamDrain);
    }
    return false;
  }

  onTrailers(raw: readonly string[]): void {
    this.trailers = flatToHeaderObject(raw);
  }

  onEnd(): void {
    if (this.isEnded) return; // the head already ended the stream
    this.isEnded = true;
    if (!this.stream.destroyed) this.stream.end();
  }

  onReset(err: SkiffError): void {
    this.abort(err);
  }

  pauseSource(): void {
    this.stream.pause();
  }

  resumeSource(): void {
    this.stream.resume();
  }
}

/**
 * RST_STREAM(INTERNAL_ERROR) with no END_STREAM before it. node's `stream.close(code)` ends the
 * writable side first: a response that does not wait for trailers then gets an empty DATA frame
 * with END_STREAM ahead of the reset, and its client sees a clean, truncated body.
 * `destroy(err)` marks the writable side errored, so it never ends, and resets the stream.
 * Regression: test/e2e/upstream-faults.test.ts ("200 repeated faults").
 */
function resetStream(s: http2.ServerHttp2Stream, err: SkiffError): void {
  if (!s.destroyed) s.destroy(err);
}

function onWantTrailers(this: TaggedStream): void {
  const ex = this[kExchange];
  const trailers = ex === null ? null : ex.trailers;
  this.sendTrailers(trailers ?? {});
}

function onStreamData(this: TaggedStream, chunk: Buffer): void {
  const ex = this[kExchange];
  if (ex !== null && !ex.isRequestDone && ex.ctx.isLive(ex.gen)) ex.ctx.requestBody.push(chunk);
}

function onStreamTrailers(this: TaggedStream, headers: http2.IncomingHttpHeaders): void {
  const ex = this[kExchange];
  if (ex !== null && !ex.isRequestDone && ex.ctx.isLive(ex.gen)) ex.ctx.requestBody.pushTrailers(headerObjectToFlat(headers));
}

function onStreamEnd(this: TaggedStream): void {
  const ex = this[kExchange];
  if (ex === null || ex.isRequestDone || !ex.ctx.isLive(ex.gen)) return;
  ex.isRequestDone = true;
  ex.ctx.requestBody.end();
  ex.ctx.release(Hold.RequestBody);
}

function onStreamClose(this: TaggedStream): void {
  const session = this[kSessionOf];
  if (session !== undefined) {
    session[kOpenStreams]--;
    this[kSessionOf] = undefined;
  }
  const ex = this[kExchange];
  if (ex === null) return;
  this[kExchange] = null;
  if (!ex.ctx.isLive(ex.gen)) return;
  const ctx = ex.ctx;
  const gen = ex.gen;
  if (!ex.isRequestDone) {
    ex.isRequestDone = true;
    if (ctx.requestBody.isOpen) {
      ctx.requestBody.reset(new SkiffError(ErrorCode.DownstreamReset, 'downstream', 'client reset the stream before the request body ended'));
    }
    ctx.release(Hold.RequestBody);
  }
  if (!ctx.isLive(gen)) return;
  const isAborted = !ex.isEnded || (this.rstCode !== NGHTTP2_NO_ERROR && this.rstCode !== undefined && !this.writableFinished);
  ex.engine.onDownstreamDone(ctx, gen, isAborted);
}

function onStreamDrain(this: TaggedStream): void {
  const ex = this[kExchange];
  if (ex !== null && ex.ctx.isLive(ex.gen)) ex.ctx.responseBody.resumeSink();
}

function onStreamError(this: TaggedStream): void {
  // The 'close' event that follows does the cleanup; this listener keeps the error handled.
}

export class H2Listener {
  readonly server: http2.Http2Server;
  private readonly engine: ProxyEngine;
  private readonly arena: ContextArena;
  readonly config: ListenerConfig;
  private readonly scheme: string;
  private readonly maxHeaderBytes: number;
  /** `alt-svc` value added to every response ('' for none): the listener's HTTP/3 port. */
  altSvc: string;
  /** Open sessions, for the GOAWAY at drain. */
  private readonly sessions: Set<http2.ServerHttp2Session>;
  /** A session without streams and without frames this long is closed (limits.keepAliveTimeout). */
  private readonly idleTimeoutMs: number;
  /** limits.maxRequestsPerConnection: GOAWAY after this many streams; 0: none. */
  private readonly maxRequests: number;
  /** drain() was called: sessions get GOAWAY, including ones that start from now on. */
  isDraining: boolean;

  constructor(engine: ProxyEngine, arena: ContextArena, config: ListenerConfig, limits: Limits, isTls: boolean) {
    this.maxHeaderBytes = limits.maxHeaderBytes;
    this.idleTimeoutMs = limits.keepAliveTimeoutMs;
    this.maxRequests = limits.maxRequestsPerConnection;
    this.altSvc = '';
    this.engine = engine;
    this.arena = arena;
    this.config = config;
    this.scheme = isTls ? 'https' : 'http';
    this.sessions = new Set();
    this.isDraining = false;
    this.server = http2.createServer({
      maxSessionMemory: 64,
      settings: {
        maxConcurrentStreams: 256,
        maxHeaderListSize: limits.maxHeaderBytes,
        initialWindowSize: Math.max(65535, Math.min(limits.streamBufferBytes, 2 ** 31 - 1)),
      },
    });
    this.server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]) =>
      this.onStream(stream, headers, rawHeaders));
    this.server.on('sessionError', () => { /* the session is destroyed; its streams close */ });
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      (session as PeerTagged)[kPeerIdentity] = (session.socket as PeerTagged)[kPeerIdentity] ?? '';
      session.on('error', () => { /* handled by stream/session close */ });
      (session as CountedSession)[kOpenStreams] = 0;
      (session as CountedSession)[kTotalStreams] = 0;
      (session as CountedSession)[kIdleMs] = this.idleTimeoutMs;
      // Idle timeout (limits.keepAliveTimeout, as for HTTP/1.1): node:http2 fires 'timeout'
      // after that long without a frame either way; a session with no open stream then gets
      // GOAWAY and closes (Envoy's idle_timeout). One with a stream still waiting on its
      // upstream (no frames while it waits) is left alone. Until 2026-11-26 a downstream
      // HTTP/2 session never timed out (test/e2e/timeouts.test.ts).
      session.setTimeout(this.idleTimeoutMs, onSessionIdle);
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
      // A connection accepted just before the drain whose preface arrives after it.
      if (this.isDraining) session.close();
      // Uploads from many streams share the connection window; 65,535 bytes would throttle
      // them all. Each stream keeps its own window (streamBufferBytes).
      session.on('connect', () => session.setLocalWindowSize(CONNECTION_WINDOW));
    });
  }

  /** Hands a connection to node:http2; `peerIdentity` is the peer's verified SPIFFE ID ('' when none). */
  attach(socket: Socket, peerIdentity = ''): void {
    if (peerIdentity !== '') (socket as PeerTagged)[kPeerIdentity] = peerIdentity;
    this.server.emit('connection', socket);
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, rawHeaders: string[]): void {
    const ctx = this.arena.acquire();
    ctx.protocol = 'h2';
    ctx.method = headerString(headers[':method'], 'GET');
    ctx.scheme = this.scheme;
    ctx.path = headerString(headers[':path'], '/');
    const authority = headers[':authority'];
    const host = headers.host;
    ctx.authority = headerString(authority, headerString(host, ''));
    ctx.rawHeaders = rawHeaders;
    ctx.remoteAddress = stream.session?.socket?.remoteAddress ?? '';
    ctx.peerIdentity = (stream.session as PeerTagged | undefined)?.[kPeerIdentity] ?? '';
    ctx.listenerName = this.config.name;
    ctx.routeTable = this.config.routes;
    ctx.startTime = performance.now();
    const rid = headers['x-request-id'];
    if (typeof rid === 'string') ctx.requestId = rid;
    const cl = headers['content-length'];
    ctx.contentLength = typeof cl === 'string' ? Number(cl) : -1;
    ctx.hasRequestBody = !stream.endAfterHeaders;

    const ex = new H2Exchange(this.engine, ctx, stream, this.altSvc);
    ctx.downstream = ex;
    const t = stream as TaggedStream;
    t[kExchange] = ex;
    const session = stream.session as CountedSession | undefined;
    if (session !== undefined) {
      session[kOpenStreams]++;
      t[kSessionOf] = session;
      // The N-th stream is served; GOAWAY tells the client to take the next ones elsewhere.
      if (++session[kTotalStreams] === this.maxRequests) session.close();
    }
    stream.on('close', onStreamClose);
    stream.on('error', onStreamError);
    if (ctx.hasRequestBody) {
      ctx.requestBody.source = ex;
      stream.on('data', onStreamData);
      stream.on('trailers', onStreamTrailers);
      stream.on('end', onStreamEnd);
    } else {
      ex.isRequestDone = true;
      ctx.requestBody.end();
      ctx.release(Hold.RequestBody);
    }
    // node:http2 only advertises SETTINGS_MAX_HEADER_LIST_SIZE; the limit is enforced here,
    // with the RFC 9113 accounting (name + value + 32 per field).
    // Regression: test/e2e/errors.test.ts (431 over HTTP/2).
    if (headerListSize(rawHeaders) > this.maxHeaderBytes) {
      this.engine.reject(ctx, new SkiffError(ErrorCode.HeadersTooLarge, 'downstream', 'request head is too large'));
      return;
    }
    // node:http2 (nghttp2) already resets a stream whose :authority or host holds a character
    // no authority may hold (space, / ? # \, non-ASCII) with PROTOCOL_ERROR; what it lets
    // through ('@' userinfo, a port with letters, `[]`, `h:1:2`) the upstream could read
    // differently from the router: 400, as the HTTP/1.1 listener does for Host. RFC 9113 §8.3.1:
    // :authority and host, when both present, must be the same. An absent authority ('') passes
    // here, though nghttp2 resets a request with neither.
    // Regression: test/e2e/authority.test.ts.
    if (!isValidAuthority(ctx.authority)) {
      this.engine.reject(ctx, new SkiffError(ErrorCode.BadRequest, 'downstream', 'invalid :authority'));
      return;
    }
    if (authority !== undefined && host !== undefined && authority !== host) {
      this.engine.reject(ctx, new SkiffError(ErrorCode.BadRequest, 'downstream', ':authority and host differ'));
      return;
    }
    this.engine.handle(ctx);
  }

  /**
   * Drain: GOAWAY (NO_ERROR, the last stream id node:http2 processed) to every session; their
   * streams in progress finish, then node closes each session and its socket. node:http2's
   * `Http2Server.close()` does not do this on Node 20: it is `net.Server.close()` and sessions
   * attached through 'connection' kept taking new streams for the whole drain timeout and had
   * them cut at its end (found by test/e2e/drain.test.ts). Rejected: the two-step GOAWAY of
   * RFC 9113 §6.8 (2^31-1 first, the real id one RTT later): nghttp2 caps a GOAWAY's stream id
   * at the last one it saw and node does not expose nghttp2_submit_shutdown_notice.
   */
  drain(): void {
    this.isDraining = true;
    for (const session of this.sessions) session.close();
  }

  close(): Promise<void> {
    this.drain();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function onSessionIdle(this: http2.ServerHttp2Session): void {
  const s = this as CountedSession;
  if (s.closed) return;
  if (s[kOpenStreams] === 0) s.close();
  // A fired session timer is not re-armed by later frames (Node 20): arm it again.
  else s.setTimeout(s[kIdleMs], onSessionIdle);
}

function headerListSize(raw: readonly string[]): number {
  let size = 0;
  for (let i = 0; i < raw.length; i += 2) size += raw[i].length + raw[i + 1].length + 32;
  return size;
}

function headerString(v: string | string[] | undefined, fallback: string): string {
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.length > 0) return v[0];
  return fallback;
}
