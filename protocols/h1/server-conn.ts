/**
 * Skiff's own HTTP/1.1 listener codec over a net (or TLS) socket: one H1ServerConn per
 * connection, one request at a time (pipelined requests wait in the read buffer), heads parsed
 * by the strict parser in parse.ts, bodies pushed into `ctx.requestBody` as subarrays of the
 * socket's chunks, responses serialised straight onto the socket.
 *
 * Why not node:http (decision log, issue 3): its per-request IncomingMessage/ServerResponse
 * objects, event fan-out and header re-validation cost more than the whole rest of the proxy
 * path; this codec materialises only what routing needs (method, target, a flat header list).
 *
 * The connection object is the DownstreamWriter and FrameSource of the request in flight;
 * every callback carries the request's generation, and `ctx === null` between requests.
 */
import type { Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';
import type { ContextArena } from '../../src/arena.js';
import { Hold, type DownstreamWriter, type RequestContext } from '../../src/context.js';
import { ErrorCode, SkiffError, errorResponse } from '../../src/errors.js';
import type { FrameSource } from '../../src/frames.js';
import type { ProxyEngine } from '../../src/proxy/engine.js';
import type { Limits, ListenerConfig } from '../../src/config/types.js';
import { writeChunk, writeLastChunk } from './wire.js';
import { uncorkThisTurn } from './cork.js';
import { ChunkedDecoder, eqLower, hasInvalidHeadByte, ParseError, ParseErrorKind, parseRequestHead, type ChunkSink, type HeadLimits, type RequestHead } from './parse.js';

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
const MAX_FIELDS = 128;
/** A response body chunk up to this size, arriving in its head's turn, is sent with the head. */
const MERGE_BODY_MAX = 4096;

const enum ReadState {
  /** Waiting for (or reading) a request head. */
  Head = 0,
  /** Reading the body of the request in flight. */
  Body = 1,
  /** The request in flight is fully read; the response is still going out. */
  Idle = 2,
  Closed = 3,
}

const enum BodyFraming {
  None = 0,
  Length = 1,
  Chunked = 2,
  /** HTTP/1.0 client and no length: the end of the body is the end of the connection. */
  UntilClose = 3,
}

const statusLines = new Map<number, string>();
function statusLine(status: number): string {
  let line = statusLines.get(status);
  if (line === undefined) {
    line = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
    if (statusLines.size < 1000) statusLines.set(status, line);
  }
  return line;
}

/** Settings one listener shares with all its connections. */
export class H1ServerSettings {
  readonly engine: ProxyEngine;
  readonly arena: ContextArena;
  readonly config: ListenerConfig;
  readonly scheme: string;
  readonly maxHeaderBytes: number;
  readonly headersTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  /** limits.maxRequestsPerConnection: the N-th response says `connection: close`; 0: none. */
  readonly maxRequests: number;
  /** Longest pause between pieces of a request body; 0 = none. */
  readonly bodyTimeoutMs: number;
  readonly headLimits: HeadLimits;
  /** `alt-svc` value added to every response ('' for none): the listener's HTTP/3 port. */
  altSvc: string;
  /** Every open connection, for drain, shutdown and the timeout sweep. */
  readonly conns: Set<H1ServerConn>;
  isDraining: boolean;
  /**
   * One coarse timer per listener checks every connection's deadline (head timeout, keep-alive
   * timeout), instead of `socket.setTimeout()` per request, which allocated and re-armed a
   * timer object twice per request.
   */
  private sweepTimer: NodeJS.Timeout | null;
  private readonly sweepMs: number;

  constructor(engine: ProxyEngine, arena: ContextArena, config: ListenerConfig, limits: Limits, isTls: boolean) {
    this.engine = engine;
    this.arena = arena;
    this.config = config;
    this.scheme = isTls ? 'https' : 'http';
    this.maxHeaderBytes = limits.maxHeaderBytes;
    this.headersTimeoutMs = limits.headersTimeoutMs;
    this.keepAliveTimeoutMs = limits.keepAliveTimeoutMs;
    this.maxRequests = limits.maxRequestsPerConnection;
    this.bodyTimeoutMs = limits.requestBodyTimeoutMs;
    this.headLimits = { maxFields: MAX_FIELDS };
    this.altSvc = '';
    this.conns = new Set();
    this.isDraining = false;
    this.sweepTimer = null;
    const shortest = Math.min(this.headersTimeoutMs, this.keepAliveTimeoutMs, this.bodyTimeoutMs > 0 ? this.bodyTimeoutMs : Infinity);
    this.sweepMs = Math.max(50, Math.min(1000, shortest >>> 2));
  }

  add(conn: H1ServerConn): void {
    this.conns.add(conn);
    if (this.sweepTimer === null) {
      this.sweepTimer = setInterval(sweepConnections, this.sweepMs, this);
      this.sweepTimer.unref();
    }
  }

  remove(conn: H1ServerConn): void {
    this.conns.delete(conn);
    if (this.conns.size === 0 && this.sweepTimer !== null) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = null;
    }
  }
}

function sweepConnections(settings: H1ServerSettings): void {
  const now = performance.now();
  for (const conn of settings.conns) {
    if (conn.deadline !== 0 && now >= conn.deadline) conn.onTimeout();
  }
}

/**
 * Lingering close: after Skiff ends a connection (a `connection: close` response, a refused
 * head, drain) it keeps reading and dropping what still arrives, so a client still sending its
 * request gets the response instead of a reset, until the client closes too, but at most this
 * long (or the keep-alive timeout, if shorter): then the socket is destroyed. Without the bound
 * a client that never closed held the descriptor forever (test/regress/h1-lingering-close.test.ts).
 * nginx's lingering_time/lingering_timeout is the same idea.
 */
const LINGER_MS = 5000;

const kConn = Symbol('skiff.h1.conn');
type TaggedSocket = Socket & { [kConn]: H1ServerConn };

export class H1ServerConn implements DownstreamWriter, FrameSource, ChunkSink {
  readonly socket: Socket;
  readonly settings: H1ServerSettings;
  private state: ReadState;
  /** Bytes read but not consumed: a partial head, or the next pipelined request. */
  private pending: Buffer | null;
  // ---- the request in flight ----
  ctx: RequestContext | null;
  gen: number;
  private head: RequestHead | null;
  private bodyRemaining: number;
  private readonly decoder: ChunkedDecoder;
  // ---- its response ----
  private isResponseStarted: boolean;
  private isResponseDone: boolean;
  private resFraming: BodyFraming;
  private isCloseAfter: boolean;
  private trailers: readonly string[] | null;
  private isCorked: boolean;
  /**
   * Response text (heads, small bodies as latin1) not yet handed to the socket: written in one
   * `write` when the turn's writes are flushed (uncork) or before any other write to the
   * socket. '' when none.
   */
  private text: string;
  private isPausedByQueue: boolean;
  /** performance.now() after which the sweep times the connection out; 0 = none. */
  deadline: number;
  /** Idle on keep-alive: no byte of the next head has arrived yet. */
  private isBetweenRequests: boolean;
  /** Requests started on this connection (limits.maxRequestsPerConnection). */
  private requestCount: number;
  /** The peer's SPIFFE ID from its verified mTLS certificate ('' when none), read once per connection. */
  readonly peerIdentity: string;

  constructor(socket: Socket, settings: H1ServerSettings, peerIdentity = '') {
    this.socket = socket;
    this.settings = settings;
    this.state = ReadState.Head;
    this.pending = null;
    this.ctx = null;
    this.gen = 0;
    this.head = null;
    this.bodyRemaining = 0;
    this.decoder = new ChunkedDecoder();
    this.isResponseStarted = false;
    this.isResponseDone = false;
    this.resFraming = BodyFraming.None;
    this.isCloseAfter = false;
    this.trailers = null;
    this.isCorked = false;
    this.text = '';
    this.isPausedByQueue = false;
    this.deadline = performance.now() + settings.headersTimeoutMs;
    this.isBetweenRequests = false;
    this.requestCount = 0;
    this.peerIdentity = peerIdentity;
    (socket as TaggedSocket)[kConn] = this;
    settings.add(this);
    socket.setNoDelay(true);
    socket.on('data', onSocketData);
    socket.on('end', onSocketEnd);
    socket.on('close', onSocketClose);
    socket.on('error', onSocketError);
    socket.on('drain', onSocketDrain);
  }

  // ---- reading ------------------------------------------------------------------------

  /** Bytes from the socket. */
  read(chunk: Buffer): void {
    switch (this.state) {
      case ReadState.Head:
        if (this.pending === null) this.readHead(chunk, 0);
        else this.readHead(Buffer.concat([this.pending, chunk]), this.pending.length - 1);
        return;
      case ReadState.Body: {
        const used = this.feedBody(chunk, 0);
        if (used >= 0) this.continueWith(chunk, used);
        return;
      }
      case ReadState.Idle:
        this.keepPending(this.pending === null ? chunk : Buffer.concat([this.pending, chunk]));
        return;
      default:
        return;
    }
  }

  /** Holds bytes of the next request; past the head limit, stops reading until it is turn. */
  private keepPending(buf: Buffer): void {
    this.pending = buf;
    if (buf.length > this.settings.maxHeaderBytes) this.socket.pause();
  }

  /** `scanFrom`: where the bytes not yet checked by hasInvalidHeadByte begin (0: all). */
  private readHead(buf: Buffer, scanFrom = 0): void {
    let start = 0;
    // RFC 9112 §2.2: ignore empty lines before a request line.
    while (buf.length - start >= 2 && buf[start] === 13 && buf[start + 1] === 10) start += 2;
    const end = buf.indexOf(CRLFCRLF, start);
    if (end < 0) {
      if (buf.length - start > this.settings.maxHeaderBytes) {
        this.rejectHead(new ParseError(ParseErrorKind.HeadersTooLarge, 'request head is too large'));
        return;
      }
      // A head that can never become valid (bare LF line ends, binary junk) is refused now,
      // not with 408 at the head timeout. Only the new bytes are scanned: a dripped head costs
      // no rescan per byte. Regression: test/e2e/h1-hostile.test.ts "bare LF line ends throughout".
      if (hasInvalidHeadByte(buf, start, scanFrom > start ? scanFrom : start)) {
        this.rejectHead(new ParseError(ParseErrorKind.BadRequest, 'invalid characters or bare CR/LF in the request head'));
        return;
      }
      this.pending = start === buf.length ? null : start === 0 ? buf : buf.subarray(start);
      // A head has started: from now on the (shorter) head timeout applies.
      if (this.pending !== null && this.isBetweenRequests) {
        this.isBetweenRequests = false;
        this.deadline = performance.now() + this.settings.headersTimeoutMs;
      }
      return;
    }
    if (end - start > this.settings.maxHeaderBytes) {
      this.rejectHead(new ParseError(ParseErrorKind.HeadersTooLarge, 'request head is too large'));
      return;
    }
    this.pending = null;
    const parsed = parseRequestHead(buf.toString('latin1', start, end), this.settings.headLimits);
    if (parsed instanceof ParseError) {
      this.rejectHead(parsed);
      return;
    }
    const rest = end + 4;
    this.startRequest(parsed);
    if (this.state === ReadState.Body && rest < buf.length) {
      const used = this.feedBody(buf, rest);
      if (used >= 0) this.continueWith(buf, rest + used);
    } else {
      this.continueWith(buf, rest);
    }
  }

  /**
   * Bytes after the current request in `buf[from..]`. If that request is already over (an
   * answer produced synchronously, such as a 404), they are the next request: parse them
   * now, or they would sit in `pending` until the client sent more.
   * Regression: test/regress/h1-pipelined-after-sync-response.test.ts.
   */
  private continueWith(buf: Buffer, from: number): void {
    if (from >= buf.length) return;
    if (this.state === ReadState.Head) this.readHead(buf.subarray(from));
    else if (this.state !== ReadState.Closed) this.keepPending(buf.subarray(from));
  }

  private startRequest(head: RequestHead): void {
    const s = this.settings;
    const ctx = s.arena.acquire();
    const gen = ctx.generation;
    this.ctx = ctx;
    this.gen = gen;
    this.head = head;
    this.isResponseStarted = false;
    this.isResponseDone = false;
    this.resFraming = BodyFraming.None;
    this.isCloseAfter = head.isClose || s.isDraining || head.method === 'CONNECT' || ++this.requestCount === s.maxRequests;
    this.trailers = null;
    this.deadline = 0;

    ctx.protocol = 'http1';
    ctx.method = head.method;
    ctx.scheme = s.scheme;
    const target = head.target;
    if (target.charCodeAt(0) === 47 /* / */ || target === '*') {
      ctx.path = target;
      ctx.authority = head.host ?? '';
    } else if (head.method === 'CONNECT') {
      ctx.path = '';
      ctx.authority = target;
    } else {
      // absolute-form: http://authority/path
      const from = target.indexOf('://') + 3;
      const slash = target.indexOf('/', from);
      ctx.authority = slash < 0 ? target.slice(from) : target.slice(from, slash);
      ctx.path = slash < 0 ? '/' : target.slice(slash);
    }
    ctx.rawHeaders = head.rawHeaders;
    ctx.remoteAddress = this.socket.remoteAddress ?? '';
    ctx.peerIdentity = this.peerIdentity;
    ctx.listenerName = s.config.name;
    ctx.routeTable = s.config.routes;
    ctx.startTime = performance.now();
    if (head.requestId !== null) ctx.requestId = head.requestId;
    ctx.contentLength = head.contentLength;
    ctx.hasRequestBody = head.isChunked || head.contentLength > 0;
    ctx.downstream = this;

    if (ctx.hasRequestBody) {
      ctx.requestBody.source = this;
      this.state = ReadState.Body;
      this.armBodyTimeout();
      this.bodyRemaining = head.contentLength;
      if (head.isChunked) this.decoder.reset();
    } else {
      this.state = ReadState.Idle;
      ctx.requestBody.end();
      ctx.release(Hold.RequestBody);
    }
    s.engine.handle(ctx);
    // Expect: 100-continue is answered once the engine did not refuse the request outright.
    if (head.isExpectContinue && ctx.isLive(gen) && !this.isResponseStarted && this.state === ReadState.Body && head.version === 11) {
      this.flushText();
      this.socket.write(CONTINUE);
    }
  }

  /** Feeds body bytes from `buf[off..]`; returns how many were body, or -1 on a framing error. */
  private feedBody(buf: Buffer, off: number): number {
    const ctx = this.ctx as RequestContext;
    const head = this.head as RequestHead;
    if (head.isChunked) {
      this.armBodyTimeout();
      const used = this.decoder.feed(buf, off, this);
      if (used < 0) {
        this.bodyError(`malformed chunked body: ${this.decoder.error}`);
        return -1;
      }
      return used;
    }
    this.armBodyTimeout();
    const avail = buf.length - off;
    const n = avail < this.bodyRemaining ? avail : this.bodyRemaining;
    this.bodyRemaining -= n;
    ctx.requestBody.push(off === 0 && n === buf.length ? buf : buf.subarray(off, off + n));
    if (this.bodyRemaining === 0) this.endRequestBody();
    return n;
  }

  onChunkData(data: Buffer): void {
    const ctx = this.ctx;
    if (ctx !== null) ctx.requestBody.push(data);
  }

  onChunkTrailers(raw: string[]): void {
    const ctx = this.ctx;
    if (ctx !== null) ctx.requestBody.pushTrailers(raw);
  }

  onChunkEnd(): void {
    this.endRequestBody();
  }

  private endRequestBody(): void {
    const ctx = this.ctx;
    if (ctx === null || this.state !== ReadState.Body) return;
    this.state = ReadState.Idle;
    this.deadline = 0;
    ctx.requestBody.end();
    ctx.release(Hold.RequestBody);
    if (this.isResponseDone) this.nextRequest();
  }

  private bodyError(message: string): void {
    const ctx = this.ctx;
    this.isCloseAfter = true;
    this.state = ReadState.Closed;
    if (ctx === null) return;
    const err = new SkiffError(ErrorCode.BadRequest, 'downstream', message);
    ctx.requestBody.reset(err);
    ctx.release(Hold.RequestBody);
    this.settings.engine.fail(ctx, this.gen, err);
  }

  /** A head we cannot accept: answer directly (no context) and close. */
  private rejectHead(err: ParseError): void {
    this.state = ReadState.Closed;
    this.pending = null;
    // A head timeout is the slowloris 408 with the body timeout's code (SKIFF_ERR_REQUEST_TIMEOUT,
    // flag SI), not a bad request: the client sent nothing wrong, only too slowly.
    const code =
      err.kind === ParseErrorKind.HeadersTooLarge ? ErrorCode.HeadersTooLarge : err.kind === ParseErrorKind.Timeout ? ErrorCode.RequestTimeout : ErrorCode.BadRequest;
    const message = err.kind === ParseErrorKind.BadRequest || err.kind === ParseErrorKind.Unsupported ? `malformed request (${err.message})` : err.message;
    const res = errorResponse(new SkiffError(code, 'downstream', message));
    const status = err.kind === ParseErrorKind.Unsupported ? 501 : err.kind === ParseErrorKind.Timeout ? 408 : res.status;
    const body = res.body;
    this.endAndLinger(`${statusLine(status)}content-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-skiff-error: ${res.code}\r\nconnection: close\r\n\r\n${body}`);
  }

  // ---- FrameSource (request body) -------------------------------------------------------

  pauseSource(): void {
    this.isPausedByQueue = true;
    this.socket.pause();
    // Our own backpressure: the client is not stalling, so its body clock stops.
    if (this.state === ReadState.Body) this.deadline = 0;
  }

  resumeSource(): void {
    this.isPausedByQueue = false;
    if (this.state !== ReadState.Closed) this.socket.resume();
    this.armBodyTimeout();
  }

  /** Restarts the body-idle clock while a request body is being read (and not paused by us). */
  private armBodyTimeout(): void {
    const ms = this.settings.bodyTimeoutMs;
    if (ms > 0 && this.state === ReadState.Body && !this.isPausedByQueue) this.deadline = performance.now() + ms;
  }

  // ---- DownstreamWriter -----------------------------------------------------------------

  writeHead(status: number, rawHeaders: readonly string[], _isEndStream: boolean): void {
    if (this.isResponseStarted || this.socket.destroyed) return;
    this.isResponseStarted = true;
    const head = this.head as RequestHead;
    let hasLength = false;
    let out = statusLine(status);
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i];
      if (name.length === 14 && eqLower(name, 'content-length')) hasLength = true;
      out += name + ': ' + rawHeaders[i + 1] + '\r\n';
    }
    const hasNoBody = head.method === 'HEAD' || status === 204 || status === 304 || status < 200;
    if (hasNoBody) {
      this.resFraming = BodyFraming.None;
    } else if (hasLength) {
      this.resFraming = BodyFraming.Length;
    } else if (head.version === 11) {
      this.resFraming = BodyFraming.Chunked;
      out += 'transfer-encoding: chunked\r\n';
    } else {
      this.resFraming = BodyFraming.UntilClose;
      this.isCloseAfter = true;
    }
    // A request body still arriving cannot be skipped safely on this connection: close after.
    if (this.state === ReadState.Body) this.isCloseAfter = true;
    if (this.isCloseAfter) out += 'connection: close\r\n';
    else if (head.version === 10) out += 'connection: keep-alive\r\n';
    if (this.settings.altSvc !== '') out += 'alt-svc: ' + this.settings.altSvc + '\r\n';
    out += '\r\n';
    this.queueText(out);
  }

  writeError(status: number, code: string, body: string, retryAfter: string): void {
    if (this.isResponseStarted || this.socket.destroyed) {
      this.cut();
      return;
    }
    this.isResponseStarted = true;
    if (this.state === ReadState.Body || (this.head !== null && this.head.method === 'CONNECT')) this.isCloseAfter = true;
    const head = this.head as RequestHead;
    const payload = head.method === 'HEAD' ? '' : body;
    this.queueText(
      `${statusLine(status)}content-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-skiff-error: ${code}\r\n${retryAfter !== '' ? `retry-after: ${retryAfter}\r\n` : ''}${this.isCloseAfter ? 'connection: close\r\n' : ''}${this.settings.altSvc !== '' ? `alt-svc: ${this.settings.altSvc}\r\n` : ''}\r\n${payload}`,
    );
    this.finishResponse();
  }

  abort(_err: SkiffError): void {
    this.isCloseAfter = true;
    this.cut();
  }

  /**
   * Closes the connection mid-response: what was written this turn (the head, body bytes) is
   * flushed to the socket first, so the client sees the response start and then the cut, not
   * an empty reply. `destroy()` alone drops corked writes. Regression: test/e2e/errors.test.ts
   * ("upstream (h2) reset mid-body: h1 client sees the response cut"), when the upstream's
   * head and reset arrive in one turn.
   */
  private cut(): void {
    if (this.isCorked) this.uncork();
    this.socket.destroy();
  }

  /** FrameSink: a response body chunk. */
  onData(chunk: Buffer): boolean {
    return this.writeBody(chunk);
  }

  private writeBody(chunk: Buffer): boolean {
    const socket = this.socket;
    if (socket.destroyed) return true;
    switch (this.resFraming) {
      case BodyFraming.Chunked:
        this.cork();
        this.flushText();
        return writeChunk(socket, chunk);
      case BodyFraming.None:
        return true;
      default:
        // A small body that follows its head in the same turn rides in the head's write: one
        // `write` of one string instead of a `writev` of a string and a Buffer.
        if (this.text !== '' && chunk.length <= MERGE_BODY_MAX) {
          this.text += chunk.toString('latin1');
          return true;
        }
        this.flushText();
        return socket.write(chunk);
    }
  }

  onTrailers(raw: readonly string[]): void {
    if (this.resFraming === BodyFraming.Chunked) this.trailers = raw;
  }

  onEnd(): void {
    if (this.socket.destroyed) return;
    if (this.resFraming === BodyFraming.Chunked) {
      this.flushText();
      writeLastChunk(this.socket, this.trailers);
    }
    this.finishResponse();
  }

  onReset(_err: SkiffError): void {
    this.isCloseAfter = true;
    this.cut();
  }

  private cork(): void {
    if (this.isCorked) return;
    this.isCorked = true;
    this.socket.cork();
    uncorkThisTurn(this);
  }

  /** Queues response text for this turn's flush. */
  private queueText(t: string): void {
    this.text += t;
    this.cork();
  }

  /** Hands the queued text to the socket (still corked: it leaves with the turn's flush). */
  private flushText(): void {
    if (this.text === '') return;
    const t = this.text;
    this.text = '';
    if (!this.socket.destroyed) this.socket.write(t, 'latin1');
  }

  uncork(): void {
    this.isCorked = false;
    this.flushText();
    this.socket.uncork();
  }

  /** The response is fully written (queued on the socket). */
  private finishResponse(): void {
    if (this.isResponseDone) return;
    this.isResponseDone = true;
    const ctx = this.ctx;
    if (ctx !== null) this.settings.engine.onDownstreamDone(ctx, this.gen, false);
    if (this.isCloseAfter || this.resFraming === BodyFraming.UntilClose) {
      this.closeAfterResponse();
      return;
    }
    if (this.state === ReadState.Idle) this.nextRequest();
  }

  private closeAfterResponse(): void {
    const ctx = this.ctx;
    if (ctx !== null && this.state === ReadState.Body) {
      // The rest of the request body is dropped with the connection.
      ctx.requestBody.reset(new SkiffError(ErrorCode.DownstreamReset, 'downstream', 'connection closed before the request body ended'));
      ctx.release(Hold.RequestBody);
    }
    this.state = ReadState.Closed;
    this.ctx = null;
    this.head = null;
    this.pending = null;
    this.endAndLinger();
  }

  /** Ends our side; reads and drops the rest until the peer closes or LINGER_MS passes (onTimeout). */
  private endAndLinger(chunk?: string): void {
    this.state = ReadState.Closed;
    this.deadline = performance.now() + Math.min(LINGER_MS, this.settings.keepAliveTimeoutMs);
    if (this.socket.isPaused()) this.socket.resume();
    this.flushText();
    if (chunk === undefined) this.socket.end();
    else this.socket.end(chunk, 'latin1');
  }

  /** The exchange is over on both sides: parse the next pipelined request, if any. */
  private nextRequest(): void {
    this.ctx = null;
    this.head = null;
    this.state = ReadState.Head;
    if (this.settings.isDraining) {
      this.closeAfterResponse();
      return;
    }
    this.deadline = performance.now() + this.settings.keepAliveTimeoutMs;
    this.isBetweenRequests = true;
    if (this.isPausedByQueue || this.socket.isPaused()) {
      this.isPausedByQueue = false;
      this.socket.resume();
    }
    const pending = this.pending;
    if (pending !== null) {
      this.pending = null;
      this.readHead(pending);
    }
  }

  // ---- socket events ----------------------------------------------------------------------

  onEndOfInput(): void {
    // The client half-closed. A request still being read is cut short; otherwise finish the
    // response in flight (if any) and close.
    this.isCloseAfter = true;
    if (this.state === ReadState.Body) {
      this.bodyError('client closed the connection before the request body ended');
      return;
    }
    if (this.ctx === null) {
      this.flushText();
      this.socket.end();
    }
  }

  onClose(): void {
    this.settings.remove(this);
    this.state = ReadState.Closed;
    const ctx = this.ctx;
    this.ctx = null;
    this.pending = null;
    if (ctx === null || !ctx.isLive(this.gen)) return;
    if (ctx.requestBody.isOpen) {
      ctx.requestBody.reset(new SkiffError(ErrorCode.DownstreamReset, 'downstream', 'client closed the connection'));
    }
    ctx.release(Hold.RequestBody);
    if (!this.isResponseDone) this.settings.engine.onDownstreamDone(ctx, this.gen, true);
  }

  onTimeout(): void {
    this.deadline = 0;
    if (this.state === ReadState.Closed && this.ctx === null) {
      this.socket.destroy(); // lingering close over (endAndLinger)
      return;
    }
    if (this.state === ReadState.Body && !this.isPausedByQueue) {
      // Slowloris on the body: the request fails with 408 (or, after the response head, the
      // connection closes); the rest of the body is never read.
      const ctx = this.ctx;
      this.isCloseAfter = true;
      this.state = ReadState.Closed;
      if (ctx === null) return;
      const err = new SkiffError(ErrorCode.RequestTimeout, 'downstream', `request body stalled for ${this.settings.bodyTimeoutMs} ms`);
      ctx.requestBody.reset(err);
      ctx.release(Hold.RequestBody);
      this.settings.engine.fail(ctx, this.gen, err);
      return;
    }
    if (this.state !== ReadState.Head) return;
    if (this.pending !== null) {
      this.rejectHead(new ParseError(ParseErrorKind.Timeout, 'request head did not arrive in time'));
      return;
    }
    this.socket.destroy(); // idle keep-alive connection
  }

  /** Drain: idle connections close now, busy ones after their response. */
  drain(): void {
    if (this.ctx === null) this.endAndLinger();
  }
}


function onSocketData(this: TaggedSocket, chunk: Buffer): void {
  this[kConn].read(chunk);
}
function onSocketEnd(this: TaggedSocket): void {
  this[kConn].onEndOfInput();
}
function onSocketClose(this: TaggedSocket): void {
  this[kConn].onClose();
}
function onSocketError(): void {
  // 'close' follows and cleans up.
}
function onSocketDrain(this: TaggedSocket): void {
  const conn = this[kConn];
  const ctx = conn.ctx;
  if (ctx !== null && ctx.isLive(conn.gen)) ctx.responseBody.resumeSink();
}
