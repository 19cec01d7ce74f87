/**
 * HTTP/3 listener adapter: QUIC connections from Skiff's driver (protocols/quic) -> one H3
 * session each -> one RequestContext per request stream, answered through the stream itself
 * (H3ServerStream is the DownstreamWriter and the request body's FrameSource).
 *
 * Also home of the pieces the upstream side (upstream.ts) shares: `StreamOut` (ordered writes
 * onto one QUIC stream; what quiche does not accept waits here until onStreamWritable) and
 * `H3Session` (control stream with SETTINGS out, the peer's control and QPACK streams in,
 * connection errors).
 *
 * Mapping onto the frame model (DESIGN invariant 2):
 * - request body: DATA payloads are views of the driver's owned read chunks (the endpoint
 *   runs with `ownedStreamData: true`), pushed into `ctx.requestBody` without copying; the
 *   queue's pause/resume map to `pauseStream/resumeStream`, which stop reading the stream out
 *   of quiche, so the stream's flow-control window holds the client back;
 * - response body: DATA frames written with `streamWrite`; a short write keeps the rest in the
 *   stream's StreamOut and returns false to the queue (sink paused) until onStreamWritable.
 *
 * Mesh listeners (`tls: mesh` with `h3`, H3MeshOptions): the identity's certificate and key,
 * client certificates required; quiche accepts any chain and `accept()` verifies it against the
 * trust bundle (protocols/tls/mesh.ts `checkMeshChain`) before any stream is read, so a refused
 * peer is logged with the SPIFFE ID it presented; rotations swap the server config for new
 * connections.
 *
 * `ctx.rawHeaders` is the decoded field list with the pseudo-header fields first, as the
 * HTTP/2 adapter does with node's raw list: the engine's header builders skip pseudo-headers.
 *
 * Errors: frame/QPACK errors the codecs report as connection errors close the connection
 * with that code; stream errors stop the stream (STOP_SENDING / RESET_STREAM with the code),
 * preceded by a 431 (field section over `limits.maxHeaderBytes`) or 400 (malformed request)
 * when no response has started, through the engine's `reject()`.
 */
import type { ContextArena } from '../../src/arena.js';
import { Hold, type DownstreamWriter, type RequestContext } from '../../src/context.js';
import { ErrorCode, SkiffError } from '../../src/errors.js';
import type { FrameSource } from '../../src/frames.js';
import type { ProxyEngine } from '../../src/proxy/engine.js';
import type { Limits, ListenerConfig } from '../../src/config/types.js';
import { spiffeIdOf, type IdentityMaterial, type IdentityStore } from '../../mesh/identity.js';
import {
  NOOP_HANDLER,
  QuicEndpoint,
  createServerConfig,
  type QuicConfig,
  type QuicConnection,
  type QuicConnectionHandler,
  type QuicError,
  type QuicServerOptions,
} from '../quic/index.js';
import { isValidAuthority } from '../h1/parse.js';
import { checkMeshChain } from '../tls/mesh.js';
import {
  ControlStreamReader,
  CriticalStreams,
  H3Settings,
  STREAM_TYPE_CONTROL,
  UniStreamHeaderReader,
  UniStreamKind,
  createSettingsFrameFor,
  type ControlStreamHandler,
} from './control.js';
import {
  H3Error,
  H3_CLOSED_CRITICAL_STREAM,
  H3_GENERAL_PROTOCOL_ERROR,
  H3_ID_ERROR,
  H3_INTERNAL_ERROR,
  H3_NO_ERROR,
  H3_REQUEST_CANCELLED,
  H3_REQUEST_REJECTED,
  H3_STREAM_CREATION_ERROR,
  createGoawayFrame,
  createStreamTypeHeader,
  writeDataHeader,
} from './frames.js';
import { MessageKind, MessageReader, type MessageHandler } from './message.js';
import { QpackDecoder } from './qpack/decoder.js';
import { QpackDecoderStreamReader, QpackEncoder } from './qpack/encoder.js';

/** A zero-length buffer (FIN without data). */
export const EMPTY_BUFFER = Buffer.alloc(0);
/**
 * What a FIN travels with when no byte is left to carry it (StreamOut.end): a reserved frame
 * (type 0x21, RFC 9114 §7.2.8), length 0, which every HTTP/3 receiver skips (§9), anywhere on
 * a request stream (after the trailers and on CONNECT streams included: §4.1, §4.4).
 */
const FIN_CARRIER = Buffer.from([0x21, 0x00]);
/** Bodies up to this size go out as one write (DATA header + payload copied together). */
const COALESCE_LIMIT = 16 * 1024;
/** Largest DATA frame header: type (1 byte) + a varint length (up to 8). */
const DATA_HEADER_MAX = 9;

/** Ensures `data` is a Buffer (FrameReader payloads are views of the fed Buffer already). */
export function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Lower-cases field names for HTTP/3 (RFC 9114 §4.2); HTTP/1.1 upstreams keep their case.
 * Appends to `out` from index `n`; returns the new length. Pseudo-header fields are skipped.
 */
export function appendLowerFields(raw: readonly string[], out: string[], n: number): number {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.charCodeAt(0) === 58) continue;
    out[n++] = hasUpper(name) ? name.toLowerCase() : name;
    out[n++] = raw[i + 1];
  }
  return n;
}

function hasUpper(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) return true;
  }
  return false;
}

/**
 * The send side of one QUIC stream: writes in order, with what quiche did not accept kept
 * until `flush()` (called on onStreamWritable). FIN goes with the last byte. Buffers passed
 * as owned are kept by reference; others (encoder views, scratch) are copied when kept.
 *
 * End streams with `end()` (or a last write with `fin`), never a zero-length write with FIN:
 * quiche 0.18 loses such a FIN when the peer's ACK of the stream's last bytes is processed
 * before the next send (the send side looks complete, the stream is collected and no FIN
 * frame ever goes out: cloudflare/quiche#2525); the peer then waits for its idle timeout.
 */
export class StreamOut {
  readonly conn: QuicConnection;
  readonly id: number;
  private pending: Buffer[];
  pendingBytes: number;
  /** FIN waits behind pending bytes. */
  isFinPending: boolean;
  /** FIN was accepted by quiche, or the stream failed / was reset: nothing more goes out. */
  isClosed: boolean;
  /** The stream could not be written (-1 from the driver: stopped, reset, connection gone). */
  isFailed: boolean;

  constructor(conn: QuicConnection, id: number) {
    this.conn = conn;
    this.id = id;
    this.pending = [];
    this.pendingBytes = 0;
    this.isFinPending = false;
    this.isClosed = false;
    this.isFailed = false;
  }

  /** Queues or writes `buf`; returns true when nothing waits (quiche took everything so far). */
  write(buf: Buffer, isOwned: boolean, fin: boolean): boolean {
    if (this.isClosed) return true;
    if (this.pendingBytes === 0 && !this.isFinPending) {
      const n = this.conn.streamWrite(this.id, buf, fin);
      if (n < 0) {
        this.fail();
        return true;
      }
      if (n === buf.length) {
        if (fin) this.isClosed = true;
        return true;
      }
      this.keep(n === 0 ? buf : buf.subarray(n), isOwned);
    } else {
      this.keep(buf, isOwned);
    }
    if (fin) this.isFinPending = true;
    return false;
  }

  /**
   * Ends the stream without a FIN-only write (see the class comment): the FIN goes with the
   * last bytes still waiting here, or, when nothing waits, with a 2-byte reserved frame
   * (FIN_CARRIER). Returns write's answer (true when nothing waits).
   */
  end(): boolean {
    if (this.isClosed) return true;
    if (this.isFinPending) return false;
    if (this.pending.length > 0) {
      this.isFinPending = true;
      return false;
    }
    return this.write(FIN_CARRIER, true, true);
  }

  /** Writes what waits; returns true when everything (and a pending FIN) went out. */
  flush(): boolean {
    if (this.isClosed) return true;
    const list = this.pending;
    let i = 0;
    for (; i < list.length; i++) {
      const buf = list[i];
      const isLast = i === list.length - 1;
      const fin = isLast && this.isFinPending;
      const n = this.conn.streamWrite(this.id, buf, fin);
      if (n < 0) {
        this.fail();
        return true;
      }
      this.pendingBytes -= n;
      if (n < buf.length) {
        list[i] = buf.subarray(n);
        break;
      }
      if (fin) this.isClosed = true;
    }
    if (i > 0) list.splice(0, i);
    if (list.length === 0 && this.isFinPending && !this.isClosed) {
      // Not reached (the FIN waits on the last pending buffer); never a FIN alone all the same.
      this.isFinPending = false;
      return this.write(FIN_CARRIER, true, true);
    }
    return list.length === 0 && (this.isClosed || !this.isFinPending);
  }

  /** Resets the stream (RESET_STREAM with `code`) unless it already ended. */
  reset(code: number): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.drop();
    this.conn.streamShutdown(this.id, 'write', code);
  }

  private keep(buf: Buffer, isOwned: boolean): void {
    this.pending.push(isOwned ? buf : Buffer.from(buf));
    this.pendingBytes += buf.length;
  }

  private fail(): void {
    this.isFailed = true;
    this.isClosed = true;
    this.drop();
  }

  private drop(): void {
    this.pending.length = 0;
    this.pendingBytes = 0;
    this.isFinPending = false;
  }
}

/**
 * Writes one DATA frame carrying `chunk` (a body chunk the producer handed over by reference).
 * Small chunks are coalesced with the frame header into `scratch` (one binding call); large
 * ones go as header + chunk (no copy of the body). Returns StreamOut.write's answer.
 */
export function writeDataFrame(out: StreamOut, scratch: Buffer, chunk: Buffer, fin: boolean): boolean {
  if (chunk.length <= COALESCE_LIMIT && scratch.length >= chunk.length + DATA_HEADER_MAX) {
    const h = writeDataHeader(scratch, 0, chunk.length);
    chunk.copy(scratch, h);
    return out.write(scratch.subarray(0, h + chunk.length), false, fin);
  }
  const h = writeDataHeader(scratch, 0, chunk.length);
  out.write(scratch.subarray(0, h), false, false);
  return out.write(chunk, true, fin);
}

/** A peer-initiated unidirectional stream (control, QPACK encoder/decoder, or unknown). */
class PeerUniStream {
  readonly header: UniStreamHeaderReader;
  kind: UniStreamKind;
  control: ControlStreamReader | null;
  decoderStream: QpackDecoderStreamReader | null;
  constructor(isServer: boolean) {
    this.header = new UniStreamHeaderReader(isServer);
    this.kind = UniStreamKind.Pending;
    this.control = null;
    this.decoderStream = null;
  }
}

/**
 * One HTTP/3 connection, either side: our control stream (SETTINGS, later GOAWAY), the
 * peer's control and QPACK streams, connection errors. Request streams are the subclass's.
 */
export abstract class H3Session implements QuicConnectionHandler, ControlStreamHandler {
  readonly quic: QuicConnection;
  readonly isServer: boolean;
  readonly decoder: QpackDecoder;
  readonly encoder: QpackEncoder;
  readonly settings: H3Settings;
  /** Reused scratch: DATA frame headers and coalesced small bodies. */
  readonly scratch: Buffer;
  /** Reused field list for heads we encode. */
  readonly fields: string[];
  peerSettings: H3Settings | null;
  /** Our control stream; -1 before start(). */
  controlId: number;
  controlOut: StreamOut | null;
  private readonly uni: Map<number, PeerUniStream>;
  private readonly critical: CriticalStreams;
  isConnectionClosed: boolean;

  constructor(quic: QuicConnection, isServer: boolean, maxFieldSectionSize: number) {
    this.quic = quic;
    this.isServer = isServer;
    this.decoder = new QpackDecoder({ maxTableCapacity: 0, maxFieldSectionSize });
    this.encoder = new QpackEncoder();
    this.settings = new H3Settings();
    this.settings.maxFieldSectionSize = maxFieldSectionSize;
    this.scratch = Buffer.allocUnsafe(COALESCE_LIMIT + DATA_HEADER_MAX);
    this.fields = [];
    this.peerSettings = null;
    this.controlId = -1;
    this.controlOut = null;
    this.uni = new Map();
    this.critical = new CriticalStreams();
    this.isConnectionClosed = false;
  }

  /**
   * Opens our control stream with SETTINGS. No QPACK encoder or decoder stream: with a
   * dynamic table capacity of 0 both ways neither would carry anything (RFC 9204 §4.2 MAY).
   */
  startControl(): void {
    const id = this.quic.openUni();
    if (id < 0) {
      this.connectionError(new H3Error(H3_STREAM_CREATION_ERROR, 'peer allows no unidirectional stream for our control stream'));
      return;
    }
    this.controlId = id;
    this.controlOut = new StreamOut(this.quic, id);
    const type = createStreamTypeHeader(STREAM_TYPE_CONTROL);
    const settings = createSettingsFrameFor(this.settings, 0x1f * ((Math.random() * 1000) | 0) + 0x21);
    this.controlOut.write(Buffer.concat([type, settings]), true, false);
  }

  /** Sends GOAWAY on our control stream. */
  sendGoaway(id: number): void {
    if (this.controlOut !== null) this.controlOut.write(createGoawayFrame(id), true, false);
  }

  /** Closes the connection with an HTTP/3 error code (CONNECTION_CLOSE, application). */
  connectionError(err: H3Error): void {
    this.quic.close(err.code, err.message.slice(0, 100));
  }

  // ---- QuicConnectionHandler ----

  onEstablished(_conn: QuicConnection): void {
    this.startControl();
  }

  onStreamData(_conn: QuicConnection, id: number, data: Buffer, fin: boolean): void {
    if ((id & 2) !== 0) this.onUniData(id, data, fin);
    else this.onRequestData(id, data, fin);
  }

  onStreamReset(_conn: QuicConnection, id: number, code: number): void {
    if ((id & 2) !== 0) {
      const s = this.uni.get(id);
      this.uni.delete(id);
      if (s !== undefined && isCritical(s.kind)) this.connectionError(CriticalStreams.closed(s.kind));
      return;
    }
    this.onRequestReset(id, code);
  }

  onStreamStopSending(_conn: QuicConnection, id: number, code: number): void {
    if (id === this.controlId) {
      this.connectionError(new H3Error(H3_CLOSED_CRITICAL_STREAM, 'peer stopped our control stream'));
      return;
    }
    this.onRequestStopSending(id, code);
  }

  onStreamWritable(_conn: QuicConnection, id: number): void {
    if (id === this.controlId) {
      if (this.controlOut !== null) this.controlOut.flush();
      return;
    }
    this.onRequestWritable(id);
  }

  onClosed(_conn: QuicConnection, error: QuicError | null): void {
    this.isConnectionClosed = true;
    this.uni.clear();
    this.onConnectionClosed(error);
  }

  // ---- ControlStreamHandler ----

  onSettings(settings: H3Settings): void {
    this.peerSettings = settings;
  }

  onGoaway(id: number): void {
    this.onPeerGoaway(id);
  }

  onMaxPushId(_pushId: number): void {
    // No server push: nothing to do with the client's push credit.
  }

  // ---- peer unidirectional streams ----

  private onUniData(id: number, data: Buffer, fin: boolean): void {
    let s = this.uni.get(id);
    if (s === undefined) {
      s = new PeerUniStream(this.isServer);
      this.uni.set(id, s);
    }
    let rest: Buffer = data;
    if (s.kind === UniStreamKind.Pending) {
      const kind = s.header.feed(data);
      if (kind === UniStreamKind.Pending) {
        if (fin) this.uni.delete(id);
        return;
      }
      rest = data.subarray(s.header.offset);
      if (kind === UniStreamKind.Error) {
        this.connectionError(s.header.error ?? new H3Error(H3_STREAM_CREATION_ERROR, 'bad stream'));
        return;
      }
      if (kind === UniStreamKind.Unknown || kind === UniStreamKind.Push) {
        // Unknown types (grease) are discarded (RFC 9114 §6.2). A push stream: we never sent
        // MAX_PUSH_ID, so any push ID is out of range (§4.6).
        this.uni.delete(id);
        if (kind === UniStreamKind.Push) this.connectionError(new H3Error(H3_ID_ERROR, 'push stream, but no MAX_PUSH_ID was sent'));
        else this.quic.streamShutdown(id, 'read', H3_STREAM_CREATION_ERROR);
        return;
      }
      const dup = this.critical.register(kind);
      if (dup !== null) {
        this.connectionError(dup);
        return;
      }
      s.kind = kind;
      if (kind === UniStreamKind.Control) s.control = new ControlStreamReader(this, this.isServer);
      else if (kind === UniStreamKind.QpackDecoder) s.decoderStream = new QpackDecoderStreamReader();
    }
    let err: H3Error | null = null;
    if (rest.length > 0) {
      if (s.control !== null) err = s.control.push(rest);
      else if (s.decoderStream !== null) err = s.decoderStream.feed(rest);
      else err = this.decoder.feedEncoderStream(rest);
    }
    if (err === null && fin) err = s.control !== null ? s.control.end() : CriticalStreams.closed(s.kind);
    if (err !== null) this.connectionError(err);
  }

  // ---- request streams (the subclass) ----

  protected abstract onRequestData(id: number, data: Buffer, fin: boolean): void;
  protected abstract onRequestReset(id: number, code: number): void;
  protected abstract onRequestStopSending(id: number, code: number): void;
  protected abstract onRequestWritable(id: number): void;
  protected abstract onPeerGoaway(id: number): void;
  protected abstract onConnectionClosed(error: QuicError | null): void;
}

function isCritical(kind: UniStreamKind): boolean {
  return kind === UniStreamKind.Control || kind === UniStreamKind.QpackEncoder || kind === UniStreamKind.QpackDecoder;
}

// ---------------------------------------------------------------------------------------------
// Server side

/** One request stream: the message reader, the context, the response writer. */
export class H3ServerStream implements DownstreamWriter, FrameSource {
  readonly session: H3ServerSession;
  readonly id: number;
  readonly reader: MessageReader;
  readonly out: StreamOut;
  ctx: RequestContext | null;
  gen: number;
  trailers: readonly string[] | null;
  /** engine.handle() (or reject()) was called. */
  isStarted: boolean;
  isHeadSent: boolean;
  /** The request's receive side is over (FIN, reset, or we stopped reading). */
  isRecvDone: boolean;
  /** The response side is over (FIN accepted, or reset); the engine was told. */
  isSendDone: boolean;

  constructor(session: H3ServerSession, id: number) {
    this.session = session;
    this.id = id;
    this.reader = new MessageReader(new RequestSide(this), session.decoder, id, {
      kind: MessageKind.Request,
      maxFramePayload: Math.max(64 * 1024, session.listener.maxHeaderBytes * 2),
    });
    this.out = new StreamOut(session.quic, id);
    this.ctx = null;
    this.gen = -1;
    this.trailers = null;
    this.isStarted = false;
    this.isHeadSent = false;
    this.isRecvDone = false;
    this.isSendDone = false;
  }

  /** Stream bytes from the driver. */
  onWire(data: Buffer, fin: boolean): void {
    if (this.isRecvDone) return;
    if (data.length > 0) this.reader.push(data);
    if (fin && !this.reader.isClosed) this.reader.end();
    const ctx = this.ctx;
    if (ctx !== null && !this.isStarted && ctx.isLive(this.gen)) this.start(ctx);
  }

  private start(ctx: RequestContext): void {
    this.isStarted = true;
    ctx.hasRequestBody = !(this.isRecvDone && ctx.requestBody.totalBytes === 0);
    if (!this.isRecvDone) ctx.requestBody.source = this;
    const engine = this.session.listener.engine;
    // validateRequestFields (fields.ts) already made the section malformed for a space,
    // non-ASCII, '@' or :authority != host; this refuses the rest the upstream could read
    // differently from the router (`a/b`, `h?x`, `h:x`, `[]`): 400, as the HTTP/1.1 listener
    // does for Host. One call: ctx.authority is :authority, or host when it is absent.
    // Regression: test/e2e/authority.test.ts.
    if (!isValidAuthority(ctx.authority)) {
      engine.reject(ctx, new SkiffError(ErrorCode.BadRequest, 'downstream', 'invalid :authority'));
      return;
    }
    engine.handle(ctx);
  }

  // ---- MessageHandler (request side) ----

  onHeaders(fields: string[], isTrailers: boolean): void {
    if (isTrailers) {
      const ctx = this.ctx;
      if (ctx !== null && ctx.isLive(this.gen)) ctx.requestBody.pushTrailers(fields);
      return;
    }
    const info = this.reader.info;
    const ctx = this.acquire();
    ctx.method = info.method;
    ctx.path = info.path;
    ctx.authority = info.authority !== '' ? info.authority : info.host;
    ctx.rawHeaders = fields;
    ctx.contentLength = info.contentLength;
    for (let i = 0; i < fields.length; i += 2) {
      if (fields[i] === 'x-request-id') {
        ctx.requestId = fields[i + 1];
        break;
      }
    }
  }

  // The MessageReader's callbacks arrive through RequestSide (below): MessageHandler's
  // onData/onEnd would collide with the FrameSink methods of the same names.

  onRequestBodyData(chunk: Uint8Array): void {
    const ctx = this.ctx;
    if (ctx === null || !ctx.isLive(this.gen)) return;
    const q = ctx.requestBody;
    if (!q.isOpen) {
      // The request body is no longer wanted (the upstream answered, or the request failed):
      // stop the client sending it (RFC 9114 §4.1, H3_NO_ERROR after a complete response).
      this.stopReading(H3_NO_ERROR);
      return;
    }
    q.push(asBuffer(chunk));
  }

  onRequestEnd(): void {
    const ctx = this.ctx;
    this.isRecvDone = true;
    if (ctx !== null && ctx.isLive(this.gen)) {
      ctx.requestBody.end();
      ctx.release(Hold.RequestBody);
    }
    this.maybeForget();
  }

  onRequestError(err: H3Error): void {
    if (err.isConnectionError) {
      this.session.connectionError(err);
      return;
    }
    // A stream error: stop reading with its code; answer 431/400 if nothing went out yet.
    const wasRecvDone = this.isRecvDone;
    this.isRecvDone = true;
    if (!wasRecvDone) this.session.quic.streamShutdown(this.id, 'read', err.code);
    const skiffErr = err.isHeadersTooLarge
      ? new SkiffError(ErrorCode.HeadersTooLarge, 'downstream', 'request head is too large')
      : new SkiffError(ErrorCode.BadRequest, 'downstream', `malformed HTTP/3 request: ${err.message}`);
    let ctx = this.ctx;
    if (ctx === null) ctx = this.acquire();
    if (!ctx.isLive(this.gen)) return;
    if (ctx.requestBody.isOpen) ctx.requestBody.reset(skiffErr);
    if (!wasRecvDone) ctx.release(Hold.RequestBody);
    const engine = this.session.listener.engine;
    if (!this.isStarted) {
      this.isStarted = true;
      engine.reject(ctx, skiffErr);
    } else {
      engine.fail(ctx, this.gen, skiffErr);
    }
  }

  private acquire(): RequestContext {
    const listener = this.session.listener;
    const ctx = listener.arena.acquire();
    this.ctx = ctx;
    this.gen = ctx.generation;
    ctx.protocol = 'h3';
    ctx.scheme = 'https';
    ctx.remoteAddress = this.session.quic.remoteHost;
    ctx.listenerName = listener.config.name;
    ctx.routeTable = listener.config.routes;
    ctx.startTime = performance.now();
    ctx.peerIdentity = this.session.peerIdentity;
    ctx.downstream = this;
    return ctx;
  }

  // ---- DownstreamWriter ----

  writeHead(status: number, rawHeaders: readonly string[], isEndStream: boolean): void {
    if (this.isHeadSent || this.out.isClosed) return;
    this.isHeadSent = true;
    const fields = this.session.fields;
    fields[0] = ':status';
    fields[1] = statusText(status);
    const n = appendLowerFields(rawHeaders, fields, 2);
    fields.length = n;
    const frame = this.session.encoder.encodeHeadersFrameView(fields);
    fields.length = 0;
    this.out.write(frame, false, isEndStream);
    if (isEndStream) this.checkSent();
  }

  writeError(status: number, code: string, body: string, retryAfter: string): void {
    if (this.isHeadSent || this.out.isClosed) {
      this.abort(null);
      return;
    }
    this.isHeadSent = true;
    const payload = Buffer.from(body, 'utf8');
    const ctx = this.ctx;
    const isHead = ctx !== null && ctx.method === 'HEAD';
    const fields = this.session.fields;
    fields.push(':status', statusText(status), 'content-type', 'text/plain; charset=utf-8', 'content-length', String(payload.length), 'x-skiff-error', code);
    if (retryAfter !== '') fields.push('retry-after', retryAfter);
    const frame = this.session.encoder.encodeHeadersFrameView(fields);
    fields.length = 0;
    if (isHead || payload.length === 0) {
      this.out.write(frame, false, true);
    } else {
      this.out.write(frame, false, false);
      writeDataFrame(this.out, this.session.scratch, payload, true);
    }
    this.checkSent();
  }

  abort(_err: SkiffError | null): void {
    this.out.reset(H3_INTERNAL_ERROR);
    if (!this.isRecvDone) this.stopReading(H3_REQUEST_CANCELLED);
    this.sendDone(true);
  }

  // ---- FrameSink (response body) ----

  onData(chunk: Buffer): boolean {
    if (this.out.isClosed) return true;
    return writeDataFrame(this.out, this.session.scratch, chunk, false);
  }

  onTrailers(raw: readonly string[]): void {
    this.trailers = raw;
  }

  onEnd(): void {
    if (this.out.isClosed || this.out.isFinPending) {
      this.checkSent();
      return;
    }
    const trailers = this.trailers;
    if (trailers !== null && trailers.length > 0) {
      const fields = this.session.fields;
      fields.length = appendLowerFields(trailers, fields, 0);
      const frame = this.session.encoder.encodeHeadersFrameView(fields);
      fields.length = 0;
      this.out.write(frame, false, true);
    } else {
      this.out.end();
    }
    this.checkSent();
  }

  onReset(err: SkiffError): void {
    this.abort(err);
  }

  // ---- FrameSource (request body) ----

  pauseSource(): void {
    this.session.quic.pauseStream(this.id);
  }

  resumeSource(): void {
    this.session.quic.resumeStream(this.id);
  }

  // ---- driver events ----

  onWritable(): void {
    const drained = this.out.flush();
    if (this.out.isClosed) {
      this.checkSent();
      return;
    }
    const ctx = this.ctx;
    if (drained && ctx !== null && ctx.isLive(this.gen)) ctx.responseBody.resumeSink();
  }

  /** The client reset its sending side (RESET_STREAM), or stopped our response (STOP_SENDING). */
  onPeerAbort(isStopSending: boolean): void {
    const ctx = this.ctx;
    if (isStopSending) this.out.reset(H3_REQUEST_CANCELLED);
    if (!this.isRecvDone) {
      this.isRecvDone = true;
      this.reader.abort();
      if (isStopSending) this.session.quic.streamShutdown(this.id, 'read', H3_REQUEST_CANCELLED);
      if (ctx !== null && ctx.isLive(this.gen)) {
        if (ctx.requestBody.isOpen) ctx.requestBody.reset(CLIENT_RESET);
        ctx.release(Hold.RequestBody);
      }
    }
    if (ctx === null) {
      // Reset before a request head: nothing started. Close our (unused) send side so quiche
      // can collect the stream.
      this.out.reset(H3_REQUEST_CANCELLED);
      this.isSendDone = true;
      this.maybeForget();
      return;
    }
    // RESET_STREAM after a complete request only ends the client's side (RFC 9114 §4.1.1);
    // before it, the request is abandoned and so is the response.
    if (!isStopSending && this.isHeadSent && this.out.isClosed) {
      this.maybeForget();
      return;
    }
    this.out.reset(H3_REQUEST_CANCELLED);
    this.sendDone(true);
  }

  /** The connection is gone: end everything this stream still holds. */
  onConnectionGone(): void {
    const ctx = this.ctx;
    if (!this.isRecvDone) {
      this.isRecvDone = true;
      this.reader.abort();
      if (ctx !== null && ctx.isLive(this.gen)) {
        if (ctx.requestBody.isOpen) ctx.requestBody.reset(CLIENT_RESET);
        ctx.release(Hold.RequestBody);
      }
    }
    this.out.isClosed = true;
    this.sendDone(true);
  }

  // ---- bookkeeping ----

  private stopReading(code: number): void {
    if (this.isRecvDone) return;
    this.isRecvDone = true;
    this.reader.abort();
    this.session.quic.streamShutdown(this.id, 'read', code);
    const ctx = this.ctx;
    if (ctx !== null && ctx.isLive(this.gen)) ctx.release(Hold.RequestBody);
    this.maybeForget();
  }

  /** The response's FIN went out (or the stream failed): tell the engine once. */
  private checkSent(): void {
    if (!this.out.isClosed || this.isSendDone) return;
    this.sendDone(this.out.isFailed);
  }

  private sendDone(isAborted: boolean): void {
    if (this.isSendDone) return;
    this.isSendDone = true;
    // Draining: the connection must not close before this response is acknowledged.
    if (!isAborted && this.session.goawayId >= 0) this.session.awaitAck(this.id);
    const ctx = this.ctx;
    if (ctx !== null && ctx.isLive(this.gen)) this.session.listener.engine.onDownstreamDone(ctx, this.gen, isAborted);
    this.maybeForget();
  }

  private maybeForget(): void {
    if (this.isRecvDone && this.isSendDone) this.session.forget(this);
  }
}

/**
 * The MessageReader's handler for a request stream: forwards to H3ServerStream, whose own
 * onData/onEnd belong to the FrameSink contract (response body).
 */
class RequestSide implements MessageHandler {
  readonly stream: H3ServerStream;
  constructor(stream: H3ServerStream) {
    this.stream = stream;
  }
  onHeaders(fields: string[], isTrailers: boolean): void {
    this.stream.onHeaders(fields, isTrailers);
  }
  onData(chunk: Uint8Array): void {
    this.stream.onRequestBodyData(chunk);
  }
  onEnd(): void {
    this.stream.onRequestEnd();
  }
  onError(error: H3Error): void {
    this.stream.onRequestError(error);
  }
}

const CLIENT_RESET = new SkiffError(ErrorCode.DownstreamReset, 'downstream', 'client reset the stream before the request body ended');

/**
 * Drain: how often a session with no request left checks whether its last responses were
 * acknowledged, and how long it waits for that before CONNECTION_CLOSE at the latest (a
 * client that stopped acknowledging; the drain timeout bounds the whole drain anyway).
 */
const ACK_LINGER_POLL_MS = 10;
const ACK_LINGER_MAX_MS = 2000;

/**
 * Two-step GOAWAY (RFC 9114 §5.2): the first GOAWAY announces an id above any the client will
 * use (the largest client bidi id a JS number holds exactly; 2^62-4 itself is not one), so
 * nothing is refused and the client stops opening streams; the real id follows after
 * GOAWAY_GRACE_MS, by when every request the client sent before it saw the first has arrived.
 */
export const GOAWAY_NOTICE_ID = Number.MAX_SAFE_INTEGER - 3;
const GOAWAY_GRACE_MS = 1000;

const STATUS_TEXT: string[] = [];
function statusText(status: number): string {
  let s = STATUS_TEXT[status];
  if (s === undefined) {
    s = String(status);
    if (status >= 100 && status < 600) STATUS_TEXT[status] = s;
  }
  return s;
}

/** One QUIC connection accepted by an HTTP/3 listener. */
export class H3ServerSession extends H3Session {
  readonly listener: H3Listener;
  readonly streams: Map<number, H3ServerStream>;
  /** Highest client bidi stream id seen + 4 (what GOAWAY announces). */
  nextStreamId: number;
  /**
   * Client bidi ids below nextStreamId not seen yet. QUIC does not order streams: a higher id
   * can arrive (and be delivered by the driver) before a lower one, which is then new, not
   * late bytes of a finished stream. Any other id below nextStreamId is finished (or still in
   * `streams`). Bounded by the stream limit: quiche counts a skipped id as opened, and its
   * credit comes back only once the stream is used and collected, so there are never more
   * than initial_max_streams_bidi (256) of them.
   */
  private readonly unseen: Set<number>;
  /** The last GOAWAY id sent: streams at or above it are refused. -1 before any GOAWAY. */
  goawayId: number;
  /** The second GOAWAY (the real id) was sent: the session closes once drained. */
  private isGoawayFinal: boolean;
  /** Sends the second GOAWAY; null when not in the grace period. */
  private goawayTimer: NodeJS.Timeout | null;
  /** Request streams this connection has carried (limits.maxRequestsPerConnection). */
  private requestCount: number;
  /** The client certificate's SPIFFE ID (mutual TLS), read once per connection; '' without. */
  readonly peerIdentity: string;
  /** After GOAWAY: responses finished whose acknowledgement the close waits for (null: none yet). */
  private unacked: number[] | null;
  /** Polls `unacked` once no request is left; null when not lingering. */
  private lingerTimer: NodeJS.Timeout | null;
  /** performance.now() after which the session closes even with responses unacknowledged. */
  private lingerUntil: number;

  constructor(listener: H3Listener, quic: QuicConnection, peerIdentity: string) {
    super(quic, true, listener.maxHeaderBytes);
    this.listener = listener;
    this.streams = new Map();
    this.nextStreamId = 0;
    this.unseen = new Set();
    this.goawayId = -1;
    this.isGoawayFinal = false;
    this.goawayTimer = null;
    this.requestCount = 0;
    this.peerIdentity = peerIdentity;
    this.unacked = null;
    this.lingerTimer = null;
    this.lingerUntil = 0;
  }

  override onEstablished(conn: QuicConnection): void {
    super.onEstablished(conn);
    if (this.listener.isDraining) this.goaway();
  }

  protected onRequestData(id: number, data: Buffer, fin: boolean): void {
    let s = this.streams.get(id);
    if (s === undefined) {
      if ((id & 3) !== 0) return; // server-initiated bidi: we never open any
      if (this.goawayId >= 0 && id >= this.goawayId) {
        this.quic.streamShutdown(id, 'read', H3_REQUEST_REJECTED);
        this.quic.streamShutdown(id, 'write', H3_REQUEST_REJECTED);
        return;
      }
      if (!this.claim(id)) return; // a stream we already finished: late bytes
      s = new H3ServerStream(this, id);
      this.streams.set(id, s);
      // limits.maxRequestsPerConnection: this request is served, then GOAWAY. Also what bounds
      // quiche 0.18's per-connection set of finished stream ids, which only grows.
      if (++this.requestCount === this.listener.maxRequestsPerConnection) this.goaway();
    }
    s.onWire(data, fin);
  }

  /**
   * True when `id` (a client bidi stream, not in `streams`) was never seen: it is recorded as
   * seen, ids it skips become `unseen`. False for a stream already seen (so finished).
   */
  private claim(id: number): boolean {
    if (id < this.nextStreamId) return this.unseen.delete(id);
    for (let skipped = this.nextStreamId; skipped < id; skipped += 4) this.unseen.add(skipped);
    this.nextStreamId = id + 4;
    return true;
  }

  protected onRequestReset(id: number, _code: number): void {
    const s = this.streams.get(id);
    if (s !== undefined) {
      s.onPeerAbort(false);
      return;
    }
    if ((id & 3) !== 0 || !this.claim(id)) return;
    // Reset before any byte of it was read: no request. Close our (unused) send side so quiche
    // can collect the stream and return its credit (as H3ServerStream.onPeerAbort does).
    this.quic.streamShutdown(id, 'write', H3_REQUEST_CANCELLED);
    this.closeIfDrained();
  }

  protected onRequestStopSending(id: number, _code: number): void {
    const s = this.streams.get(id);
    if (s !== undefined) s.onPeerAbort(true);
  }

  protected onRequestWritable(id: number): void {
    const s = this.streams.get(id);
    if (s !== undefined) s.onWritable();
  }

  protected onPeerGoaway(_id: number): void {
    // A client's GOAWAY carries a push ID; with no push there is nothing to cancel.
  }

  protected onConnectionClosed(_error: QuicError | null): void {
    if (this.lingerTimer !== null) clearTimeout(this.lingerTimer);
    this.lingerTimer = null;
    if (this.goawayTimer !== null) clearTimeout(this.goawayTimer);
    this.goawayTimer = null;
    for (const s of [...this.streams.values()]) s.onConnectionGone();
    this.streams.clear();
    this.listener.onSessionClosed(this);
  }

  /** Forgets a finished stream; a draining session with none left closes. */
  forget(s: H3ServerStream): void {
    if (this.streams.get(s.id) === s) this.streams.delete(s.id);
    this.closeIfDrained();
  }

  /**
   * Starts the two-step GOAWAY: GOAWAY_NOTICE_ID now (nothing refused; the client opens no
   * more streams), the real id GOAWAY_GRACE_MS later (finalGoaway). Until 2026-11-26 this
   * sent the real id at once, and requests the client had sent before that GOAWAY reached it
   * were refused with H3_REQUEST_REJECTED (6 of 180,000 HTTP/3 requests in the soak with
   * maxRequestsPerConnection 10,000; test/e2e/max-requests.test.ts now counts none).
   */
  goaway(): void {
    if (this.goawayId >= 0 || this.isConnectionClosed) return;
    this.goawayId = GOAWAY_NOTICE_ID;
    this.sendGoaway(GOAWAY_NOTICE_ID);
    this.goawayTimer = setTimeout(finalGoawayTick, GOAWAY_GRACE_MS, this);
  }

  /**
   * The second GOAWAY: the next stream id. Requests already received finish, later ones are
   * refused; ones below it that have not arrived yet (`unseen`: overtaken by a higher id) are
   * still served, the client was told they may have been processed. Also ends the grace early
   * (the drain timeout reached: destroyAll).
   */
  finalGoaway(): void {
    if (this.goawayTimer !== null) clearTimeout(this.goawayTimer);
    this.goawayTimer = null;
    if (this.isGoawayFinal || this.isConnectionClosed) return;
    this.isGoawayFinal = true;
    this.goawayId = this.nextStreamId;
    this.sendGoaway(this.goawayId);
    this.closeIfDrained();
  }

  /** A response finished after GOAWAY (its FIN is with quiche): closeIfDrained waits for its acknowledgement. */
  awaitAck(id: number): void {
    if (this.unacked === null) this.unacked = [];
    this.unacked.push(id);
  }

  /**
   * After GOAWAY: closes once no request is in progress or still expected below the GOAWAY id,
   * and the responses finished since GOAWAY were acknowledged (or ACK_LINGER_MAX_MS passed).
   * Closing as soon as the last response's FIN was handed to quiche lost that response:
   * CONNECTION_CLOSE makes quiche discard stream data not yet sent, and the close came in the
   * same tick as the write, so the client saw its request fail with H3_NO_ERROR (found by
   * test/e2e/drain.test.ts). Rejected: waiting for the client to close (quic-go's choice;
   * clients that keep an idle connection would hold the drain to its timeout) and a fixed
   * delay (no bound on what it guarantees).
   */
  private closeIfDrained(): void {
    if (!this.isGoawayFinal || this.streams.size > 0 || this.unseen.size > 0 || this.isConnectionClosed || this.lingerTimer !== null) return;
    if (this.unacked !== null && this.unacked.length > 0) {
      this.lingerUntil = performance.now() + ACK_LINGER_MAX_MS;
      this.lingerTimer = setTimeout(lingerTick, ACK_LINGER_POLL_MS, this);
      return;
    }
    this.quic.close(H3_NO_ERROR, '');
  }

  /** @internal The linger timer: drops acknowledged responses; closes when none is left (or at the deadline). */
  checkAcked(): void {
    this.lingerTimer = null;
    if (this.isConnectionClosed) return;
    const unacked = this.unacked;
    let n = 0;
    if (unacked !== null) {
      for (const id of unacked) if (!this.quic.isStreamSettled(id)) unacked[n++] = id;
      unacked.length = n;
    }
    if (n > 0 && performance.now() < this.lingerUntil) {
      this.lingerTimer = setTimeout(lingerTick, ACK_LINGER_POLL_MS, this);
      return;
    }
    this.quic.close(H3_NO_ERROR, '');
  }
}

function lingerTick(session: H3ServerSession): void {
  session.checkAcked();
}

function finalGoawayTick(session: H3ServerSession): void {
  session.finalGoaway();
}

/** The SPIFFE ID (URI SAN `spiffe://...`) of the leaf certificate, '' when none. */
function leafSpiffeId(chain: readonly Buffer[]): string {
  const leaf = chain[0];
  return leaf === undefined ? '' : spiffeIdOf(leaf);
}

/**
 * A mesh listener's HTTP/3 side (`tls: mesh` with `h3`): the identity's certificate and key,
 * client certificates required and verified against its trust bundle (by `checkMeshChain`,
 * so that a refused peer is logged with the identity it presented), following rotations.
 */
export interface H3MeshOptions {
  readonly identity: IdentityStore;
  /** A client whose chain is not trusted was disconnected: its SPIFFE ID ('' none), why, from where. */
  onRefused(peer: string, reason: string, remote: string): void;
  /** A rotated identity could not be turned into a QUIC config (the previous one keeps serving). */
  onConfigError(err: Error): void;
}

export interface H3ListenOptions {
  host: string;
  port: number;
  /** Certificate chain and key (PEM); required unless the listener is a mesh listener (then from the identity). */
  certPem?: Buffer;
  keyPem?: Buffer;
  /** CA bundle for client certificates (mutual TLS); clients must then present one. */
  clientCaPem?: Buffer;
}

/** The HTTP/3 side of a TLS listener: one UDP socket (QuicEndpoint) on the listener's port. */
export class H3Listener {
  readonly engine: ProxyEngine;
  readonly arena: ContextArena;
  readonly config: ListenerConfig;
  readonly maxHeaderBytes: number;
  readonly streamBufferBytes: number;
  readonly sessions: Set<H3ServerSession>;
  endpoint: QuicEndpoint | null;
  isDraining: boolean;
  isMutualTls: boolean;
  connectionsOpened: number;
  connectionsClosed: number;
  /** limits.maxRequestsPerConnection: requests per connection before GOAWAY; 0: none. */
  readonly maxRequestsPerConnection: number;
  /** limits.maxConnections: QUIC connections this listener keeps at once (the endpoint refuses Initials past it). */
  private maxConnections: number;
  /** Initials dropped because the engine's overload manager refuses new connections. */
  refusedOverload: number;
  private onAllClosed: (() => void) | null;
  private readonly mesh: H3MeshOptions | null;
  /** Stops following identity rotations; null unless mesh. */
  private unwatchIdentity: (() => void) | null;

  /** `mesh`: a `tls: mesh` listener (see H3MeshOptions); listen() then ignores the PEM options. */
  constructor(engine: ProxyEngine, arena: ContextArena, config: ListenerConfig, limits: Limits, mesh: H3MeshOptions | null = null) {
    this.engine = engine;
    this.arena = arena;
    this.config = config;
    this.maxRequestsPerConnection = limits.maxRequestsPerH3Connection;
    this.maxHeaderBytes = limits.maxHeaderBytes;
    this.streamBufferBytes = limits.streamBufferBytes;
    this.sessions = new Set();
    this.endpoint = null;
    this.isDraining = false;
    this.isMutualTls = false;
    this.connectionsOpened = 0;
    this.connectionsClosed = 0;
    this.maxConnections = limits.maxConnections;
    this.refusedOverload = 0;
    this.onAllClosed = null;
    this.mesh = mesh;
    this.unwatchIdentity = null;
  }

  /** Binds UDP host:port; resolves with the bound port. A mesh listener takes its certificate from the identity instead. */
  async listen(o: H3ListenOptions): Promise<number> {
    const mesh = this.mesh;
    let config: QuicConfig;
    if (mesh !== null) {
      this.isMutualTls = true;
      config = this.meshConfig(mesh.identity.current);
    } else {
      if (o.certPem === undefined || o.keyPem === undefined) throw new Error(`listener ${this.config.name}: HTTP/3 needs a certificate and key`);
      this.isMutualTls = o.clientCaPem !== undefined;
      config = this.serverConfig(o.certPem, o.keyPem, o.clientCaPem, true);
    }
    // The endpoint keeps this object and reads `config` on every accepted Initial: a rotation
    // replaces `config` here, so new connections handshake with the new certificate and
    // bundle while established ones keep theirs (a quiche connection holds its own reference
    // to the TLS context it was made with).
    const server: QuicServerOptions = { config, onConnection: (conn) => this.accept(conn), admit: () => this.admit() };
    if (mesh !== null) {
      this.unwatchIdentity = mesh.identity.onChange((next) => {
        try {
          server.config = this.meshConfig(next);
        } catch (err) {
          mesh.onConfigError(err as Error);
        }
      });
    }
    try {
      this.endpoint = await QuicEndpoint.open({ host: o.host, port: o.port, ownedStreamData: true, server, maxConnections: this.maxConnections });
    } catch (err) {
      this.stopWatching();
      throw err;
    }
    return this.endpoint.port;
  }

  private serverConfig(certPem: Buffer, keyPem: Buffer, clientCaPem: Buffer | undefined, verifyClientChain: boolean): QuicConfig {
    const window = Math.max(64 * 1024, Math.min(this.streamBufferBytes, 16 * 1024 * 1024));
    return createServerConfig({
      certPem,
      keyPem,
      clientCaPem,
      verifyClientChain,
      alpn: ['h3'],
      initialMaxStreamDataBidiRemote: window,
      initialMaxStreamsBidi: 256,
    });
  }

  /** The identity as a QUIC server config: chains are checked in accept() (checkMeshChain). */
  private meshConfig(m: IdentityMaterial): QuicConfig {
    return this.serverConfig(m.certPem, m.keyPem, m.caPem, false);
  }

  private stopWatching(): void {
    if (this.unwatchIdentity !== null) this.unwatchIdentity();
    this.unwatchIdentity = null;
  }

  /** A new connection's first Initial: none while over the memory connection mark (src/overload.ts). */
  private admit(): boolean {
    if (!this.engine.overload.isRefusingConnections) return true;
    this.refusedOverload++;
    return false;
  }

  /** A reloaded limits.maxConnections; connections over a lowered limit are not closed. */
  setMaxConnections(n: number): void {
    this.maxConnections = n;
    if (this.endpoint !== null) this.endpoint.maxConnections = n;
  }

  /** Initials dropped at limits.maxConnections. */
  get refusedAtLimit(): number {
    return this.endpoint === null ? 0 : this.endpoint.counters.refusedAtLimit;
  }

  private accept(conn: QuicConnection): QuicConnectionHandler {
    let peerIdentity = '';
    const mesh = this.mesh;
    if (mesh !== null) {
      // quiche accepted any chain (and required a certificate): trust is decided here, before
      // any stream is read, against the bundle in force now.
      const peer = checkMeshChain(conn.peerCertificateChain, mesh.identity.current);
      if (peer.refusal !== null) {
        mesh.onRefused(peer.spiffeId, peer.refusal, conn.remoteHost);
        conn.close(H3_GENERAL_PROTOCOL_ERROR, 'peer certificate not trusted');
        return NOOP_HANDLER;
      }
      peerIdentity = peer.spiffeId;
    } else if (this.isMutualTls) {
      peerIdentity = leafSpiffeId(conn.peerCertificateChain);
    }
    const session = new H3ServerSession(this, conn, peerIdentity);
    conn.context = session;
    this.sessions.add(session);
    this.connectionsOpened++;
    return session;
  }

  /** @internal */
  onSessionClosed(session: H3ServerSession): void {
    if (!this.sessions.delete(session)) return;
    this.connectionsClosed++;
    if (this.sessions.size === 0 && this.onAllClosed !== null) this.onAllClosed();
  }

  /** GOAWAY to every session; resolves when they all closed (in-flight requests finished), then closes the socket. */
  async close(): Promise<void> {
    this.isDraining = true;
    this.stopWatching();
    for (const s of this.sessions) s.goaway();
    if (this.sessions.size > 0) {
      await new Promise<void>((resolve) => {
        this.onAllClosed = resolve;
      });
    }
    this.onAllClosed = null;
    if (this.endpoint !== null) await this.endpoint.close(H3_NO_ERROR, '', 2000);
  }

  /** Closes every connection now (after the drain timeout). */
  destroyAll(): void {
    for (const s of this.sessions) s.quic.close(H3_NO_ERROR, 'shutting down');
  }

  get connectionCount(): number {
    return this.sessions.size;
  }
}
