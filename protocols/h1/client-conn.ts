/**
 * Skiff's own HTTP/1.1 upstream codec: one H1ClientConn per pooled connection, one exchange at
 * a time (exclusive, kept alive), heads parsed by the same strict parser as the listener
 * (parse.ts), bodies forwarded as subarrays of the socket's chunks.
 *
 * The connection object is itself the exchange: sink of the request body, source of the
 * response body, and the engine's cancel handle. A new exchange may start on it only after the
 * previous one detached from its request queue, which `finish()` guarantees before it tells the
 * pool the slot is free. No object is allocated per request beyond the head string and the
 * response's header list.
 *
 * Why not undici here (decision log, issue 3): see docs/DESIGN.md.
 */
import type { OnReadOpts, Socket } from 'node:net';
import type { RequestContext } from '../../src/context.js';
import { addressKey } from '../../src/address.js';
import { ErrorCode, SkiffError } from '../../src/errors.js';
import type { FrameSink, FrameSource } from '../../src/frames.js';
import { buildUpstreamHeaders } from '../../src/headers.js';
import type { ConnEvents, Connector, UpstreamConn, UpstreamHandler } from '../../src/pool/types.js';
import type { ClusterConfig, SocketAddress } from '../../src/config/types.js';
import { dial } from './dial.js';
import type { IdentityStore } from '../../mesh/identity.js';
import { writeChunk, writeLastChunk } from './wire.js';
import { uncorkThisTurn } from './cork.js';
import { ChunkedDecoder, ParseError, parseResponseHead, type ChunkSink, type HeadLimits } from './parse.js';

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
const MAX_RESPONSE_HEAD = 64 * 1024;
const HEAD_LIMITS: HeadLimits = { maxFields: 256 };

const enum Phase {
  /** No exchange; waiting in the pool. */
  Idle = 0,
  /** Request sent (or sending); waiting for the response head. */
  Head = 1,
  /** Reading the response body. */
  Body = 2,
  Closed = 3,
}

const enum Framing {
  None = 0,
  Length = 1,
  Chunked = 2,
  UntilClose = 3,
}


export class H1ClientConnector implements Connector {
  /** This sidecar's mesh identity, for `tls: mesh` clusters (mTLS, ALPN http/1.1); null without one. */
  private readonly identity: IdentityStore | null;

  constructor(identity: IdentityStore | null = null) {
    this.identity = identity;
  }

  async connect(endpoint: SocketAddress, cluster: ClusterConfig, events: ConnEvents): Promise<UpstreamConn> {
    const socket = await dial(endpoint, cluster, ['http/1.1'], this.identity, READ_INTO_SHARED);
    return new H1ClientConn(addressKey(endpoint), events, socket);
  }
}

const kConn = Symbol('skiff.h1.client');
type TaggedSocket = Socket & { [kConn]: H1ClientConn | undefined };

/**
 * Cleartext upstream sockets read into this one buffer (net's `onread`), shared by every
 * connection: reads are dispatched one at a time on this thread and `read()` is done with the
 * bytes before it returns, copying what it keeps (a partial head, body chunks handed on). The
 * default path allocated a 64 KiB backing store per read, shrank it to the bytes read, and
 * went through the Readable machinery and a 'data' event (decision log, 2026-11-26).
 */
const SHARED_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);
const READ_INTO_SHARED: OnReadOpts = { buffer: SHARED_READ_BUFFER, callback: onSharedRead };

export class H1ClientConn implements UpstreamConn, FrameSink, FrameSource, ChunkSink {
  readonly endpointKey: string;
  readonly isMultiplexed: boolean;
  activeStreams: number;
  maxStreams: number;
  isClosed: boolean;
  idleSince: number;
  readonly events: ConnEvents;
  readonly socket: Socket;
  private isRetired: boolean;
  private phase: Phase;
  // ---- the exchange in flight ----
  ctx: RequestContext | null;
  gen: number;
  private handler: UpstreamHandler | null;
  private isHeadRequest: boolean;
  private reqFraming: Framing;
  private isRequestSent: boolean;
  private reqTrailers: readonly string[] | null;
  private resFraming: Framing;
  private resRemaining: number;
  private isReuseOk: boolean;
  private pending: Buffer | null;
  private readonly decoder: ChunkedDecoder;
  private isCorked: boolean;
  /** Inside `read()`: a finished exchange hands its slot back only after the chunk is done. */
  private isReading: boolean;
  /** The chunk being read is a view of SHARED_READ_BUFFER: whatever outlives `read()` is copied. */
  private isBorrowed: boolean;
  private isSlotPending: boolean;

  constructor(key: string, events: ConnEvents, socket: Socket) {
    this.endpointKey = key;
    this.isMultiplexed = false;
    this.activeStreams = 0;
    this.maxStreams = 1;
    this.isClosed = false;
    this.idleSince = 0;
    this.events = events;
    this.socket = socket;
    this.isRetired = false;
    this.phase = Phase.Idle;
    this.ctx = null;
    this.gen = 0;
    this.handler = null;
    this.isHeadRequest = false;
    this.reqFraming = Framing.None;
    this.isRequestSent = false;
    this.reqTrailers = null;
    this.resFraming = Framing.None;
    this.resRemaining = 0;
    this.isReuseOk = true;
    this.pending = null;
    this.decoder = new ChunkedDecoder();
    this.isCorked = false;
    this.isReading = false;
    this.isBorrowed = false;
    this.isSlotPending = false;
    (socket as TaggedSocket)[kConn] = this;
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('end', onEnd);
    socket.on('error', onError);
    socket.on('drain', onDrain);
  }

  // ---- UpstreamConn ----------------------------------------------------------------------

  dispatch(ctx: RequestContext, gen: number, handler: UpstreamHandler): void {
    if (this.phase !== Phase.Idle || this.socket.destroyed) {
      this.events.onStreamDone(this);
      handler.onUpstreamError(ctx, gen, new SkiffError(ErrorCode.UpstreamConnect, 'upstream', 'upstream connection closed before the request', true));
      return;
    }
    this.ctx = ctx;
    this.gen = gen;
    this.handler = handler;
    this.phase = Phase.Head;
    this.isHeadRequest = ctx.method === 'HEAD';
    this.isRequestSent = false;
    this.reqTrailers = null;
    this.resFraming = Framing.None;
    this.resRemaining = 0;
    this.isReuseOk = true;
    this.pending = null;
    ctx.upstreamHandle = this;

    const out = ctx.outHeaders;
    buildUpstreamHeaders(ctx, out, true);
    let head = ctx.method + ' ' + ctx.path + ' HTTP/1.1\r\nhost: ' + (ctx.authority === '' ? this.endpointKey : ctx.authority) + '\r\n';
    for (let i = 0; i < out.length; i += 2) head += out[i] + ': ' + out[i + 1] + '\r\n';
    if (!ctx.hasRequestBody) {
      this.reqFraming = Framing.None;
      this.isRequestSent = true;
    } else if (ctx.contentLength >= 0) {
      this.reqFraming = Framing.Length; // content-length passed through with the fields
    } else {
      this.reqFraming = Framing.Chunked;
      head += 'transfer-encoding: chunked\r\n';
    }
    this.cork();
    this.socket.write(head + '\r\n', 'latin1');
    if (ctx.hasRequestBody) ctx.requestBody.attachSink(this);
  }

  close(): void {
    this.retire();
    this.socket.destroy();
  }

  /** Out of service; the pool hears it once. */
  private retire(): void {
    this.isClosed = true;
    if (this.isRetired) return;
    this.isRetired = true;
    this.events.onConnClosed(this);
  }

  private cork(): void {
    if (this.isCorked) return;
    this.isCorked = true;
    this.socket.cork();
    uncorkThisTurn(this);
  }

  uncork(): void {
    this.isCorked = false;
    this.socket.uncork();
  }

  // ---- FrameSink: the request body --------------------------------------------------------

  onData(chunk: Buffer): boolean {
    const s = this.socket;
    if (s.destroyed) return true;
    if (this.reqFraming === Framing.Chunked) {
      this.cork();
      return writeChunk(s, chunk);
    }
    return s.write(chunk);
  }

  onTrailers(raw: readonly string[]): void {
    this.reqTrailers = raw;
  }

  onEnd(): void {
    this.isRequestSent = true;
    if (this.socket.destroyed) return;
    if (this.reqFraming === Framing.Chunked) writeLastChunk(this.socket, this.reqTrailers);
  }

  onReset(err: SkiffError): void {
    // The request body failed (client gone, body too large): the exchange cannot complete.
    this.abortExchange(err);
  }

  onDrainSocket(): void {
    const ctx = this.ctx;
    if (ctx !== null && ctx.isLive(this.gen) && ctx.requestBody.sink === this) ctx.requestBody.resumeSink();
  }

  // ---- FrameSource: the response body -----------------------------------------------------

  pauseSource(): void {
    this.socket.pause();
  }

  resumeSource(): void {
    if (this.phase === Phase.Body) this.socket.resume();
  }

  // ---- reading the response ---------------------------------------------------------------

  read(chunk: Buffer): void {
    this.isReading = true;
    let hasExtra = false;
    switch (this.phase) {
      case Phase.Head:
        hasExtra = this.readHead(this.pending === null ? chunk : Buffer.concat([this.pending, chunk]));
        break;
      case Phase.Body: {
        const used = this.feedBody(chunk, 0);
        hasExtra = used >= 0 && used < chunk.length;
        break;
      }
      case Phase.Idle:
        // Nothing was asked: whatever this is, the connection cannot be trusted any more.
        hasExtra = true;
        break;
      default:
        break;
    }
    this.isReading = false;
    if (hasExtra) {
      // Bytes beyond the response: the upstream is out of step; never reuse this connection.
      this.isReuseOk = false;
      this.retire();
      this.socket.destroy();
    }
    if (this.isSlotPending) {
      this.isSlotPending = false;
      this.events.onStreamDone(this);
    }
  }

  /** Returns true when bytes remain beyond the response. */
  private readHead(buf: Buffer): boolean {
    const end = buf.indexOf(CRLFCRLF);
    if (end < 0) {
      if (buf.length > MAX_RESPONSE_HEAD) this.protocolError('upstream response head is too large');
      else this.pending = this.keep(buf);
      return false;
    }
    this.pending = null;
    const head = parseResponseHead(buf.toString('latin1', 0, end), HEAD_LIMITS);
    if (head instanceof ParseError) {
      this.protocolError(`malformed upstream response (${head.message})`);
      return false;
    }
    const rest = end + 4;
    const status = head.status;
    if (status < 200) {
      if (status === 101) {
        this.protocolError('upstream switched protocols, which is not supported');
        return false;
      }
      // 1xx interim responses (100 Continue, 103 Early Hints) are not forwarded.
      return rest < buf.length ? this.readHead(buf.subarray(rest)) : false;
    }
    if (head.isClose) this.isReuseOk = false;
    let isEnd: boolean;
    if (this.isHeadRequest || status === 204 || status === 304) {
      this.resFraming = Framing.None;
      isEnd = true;
    } else if (head.isChunked) {
      this.resFraming = Framing.Chunked;
      this.decoder.reset();
      isEnd = false;
    } else if (head.contentLength >= 0) {
      this.resFraming = Framing.Length;
      this.resRemaining = head.contentLength;
      isEnd = head.contentLength === 0;
    } else {
      this.resFraming = Framing.UntilClose;
      this.isReuseOk = false;
      isEnd = false;
    }
    const ctx = this.ctx as RequestContext;
    const gen = this.gen;
    ctx.responseBody.source = this;
    ctx.responseMayHaveTrailers = this.resFraming === Framing.Chunked;
    this.phase = Phase.Body;
    (this.handler as UpstreamHandler).onUpstreamHead(ctx, gen, status, head.rawHeaders, isEnd);
    if (this.ctx !== ctx || this.phase !== Phase.Body) return false; // cancelled from inside the callback
    if (isEnd) {
      if (rest < buf.length) this.isReuseOk = false;
      this.finish();
      return rest < buf.length;
    }
    if (rest < buf.length) {
      const used = this.feedBody(buf, rest);
      return used >= 0 && rest + used < buf.length;
    }
    return false;
  }

  private feedBody(buf: Buffer, off: number): number {
    const ctx = this.ctx as RequestContext;
    switch (this.resFraming) {
      case Framing.Chunked: {
        const used = this.decoder.feed(buf, off, this);
        if (used < 0) this.protocolError(`malformed chunked response (${this.decoder.error})`);
        return used;
      }
      case Framing.Length: {
        const avail = buf.length - off;
        const n = avail < this.resRemaining ? avail : this.resRemaining;
        this.resRemaining -= n;
        ctx.responseBody.push(this.keep(off === 0 && n === buf.length ? buf : buf.subarray(off, off + n)));
        if (this.resRemaining === 0 && this.ctx === ctx) this.finish();
        return n;
      }
      case Framing.UntilClose:
        ctx.responseBody.push(this.keep(off === 0 ? buf : buf.subarray(off)));
        return buf.length - off;
      default:
        return 0;
    }
  }

  onChunkData(data: Buffer): void {
    const ctx = this.ctx;
    if (ctx !== null) ctx.responseBody.push(this.keep(data));
  }

  /** `b` itself, or a copy when it is a view of the shared read buffer. */
  private keep(b: Buffer): Buffer {
    return this.isBorrowed ? Buffer.from(b) : b;
  }

  /** @internal Bytes read into SHARED_READ_BUFFER (only valid during this call). */
  readBorrowed(view: Buffer): void {
    this.isBorrowed = true;
    try {
      this.read(view);
    } finally {
      this.isBorrowed = false;
    }
  }

  onChunkTrailers(raw: string[]): void {
    const ctx = this.ctx;
    if (ctx !== null) ctx.responseBody.pushTrailers(raw);
  }

  onChunkEnd(): void {
    this.finish();
  }

  /** The response is complete: END downstream, slot back to the pool, engine told. */
  private finish(): void {
    const ctx = this.ctx as RequestContext;
    const gen = this.gen;
    const handler = this.handler as UpstreamHandler;
    const q = ctx.requestBody;
    if (q.sink === this) q.detachSink();
    if (!this.isRequestSent) this.isReuseOk = false; // the upstream answered before the body went out
    this.ctx = null;
    this.handler = null;
    this.phase = Phase.Idle;
    // A slow reader may have paused the socket; the queue never resumes a source after END,
    // so the next exchange would wait forever. Regression: test/e2e/proxy-matrix.test.ts
    // (a 504 after a streamed response on a reused connection).
    if (this.socket.isPaused()) this.socket.resume();
    ctx.responseBody.end();
    if (!this.isReuseOk) this.retire();
    handler.onUpstreamDone(ctx, gen);
    if (!this.isReuseOk) this.socket.end();
    if (this.isReading) this.isSlotPending = true;
    else this.events.onStreamDone(this);
  }

  private protocolError(message: string): void {
    this.abortExchange(new SkiffError(ErrorCode.UpstreamProtocol, 'upstream', message));
  }

  /** Ends the exchange in error: the socket goes, the engine hears once. */
  private abortExchange(err: SkiffError): void {
    const ctx = this.ctx;
    const gen = this.gen;
    const handler = this.handler;
    this.ctx = null;
    this.handler = null;
    this.phase = Phase.Closed;
    this.retire();
    this.socket.destroy();
    if (ctx === null || handler === null) return;
    const q = ctx.requestBody;
    if (q.sink === this) q.detachSink();
    this.events.onStreamDone(this);
    handler.onUpstreamError(ctx, gen, err);
  }

  /** Engine handle: the request is over downstream (timeout, client gone). */
  cancel(_err: SkiffError): void {
    const ctx = this.ctx;
    if (ctx === null) return;
    const q = ctx.requestBody;
    if (q.sink === this) q.detachSink();
    this.ctx = null;
    this.handler = null;
    this.phase = Phase.Closed;
    this.retire();
    this.socket.destroy();
    this.events.onStreamDone(this);
  }

  onSocketGone(isError: boolean): void {
    if (this.phase === Phase.Body && this.resFraming === Framing.UntilClose && !isError) {
      // Close-delimited body: the close is its end.
      this.isReuseOk = false;
      this.finish();
      this.retire();
      return;
    }
    this.phase = Phase.Closed;
    this.retire();
    const ctx = this.ctx;
    if (ctx === null) return;
    const started = ctx.isResponseStarted;
    this.abortExchange(new SkiffError(ErrorCode.UpstreamReset, 'upstream', started ? 'upstream reset the connection mid-response' : 'upstream closed the connection'));
  }
}

function onData(this: TaggedSocket, chunk: Buffer): void {
  (this[kConn] as H1ClientConn).read(chunk);
}
function onSharedRead(this: TaggedSocket, nread: number, buf: Uint8Array): boolean {
  const conn = this[kConn];
  // Bytes before the connection object exists: the upstream spoke unasked; never use it.
  if (conn === undefined) this.destroy();
  else conn.readBorrowed(SHARED_READ_BUFFER.subarray(0, nread));
  return true;
}
function onEnd(this: TaggedSocket): void {
  (this[kConn] as H1ClientConn).onSocketGone(false);
}
function onClose(this: TaggedSocket, hadError: boolean): void {
  (this[kConn] as H1ClientConn).onSocketGone(hadError);
}
function onError(): void {
  // 'close' follows.
}
function onDrain(this: TaggedSocket): void {
  (this[kConn] as H1ClientConn).onDrainSocket();
}
