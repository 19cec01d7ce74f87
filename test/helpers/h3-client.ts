// A small HTTP/3 client on Skiff's own pieces (QUIC driver, H3Session, QPACK, MessageReader)
// for tests and the bench: requests with bodies and trailers, raw streams for reset storms.
// Not a general client: one connection, responses buffered in memory.
import { H3Session, StreamOut, writeDataFrame, EMPTY_BUFFER } from '../../protocols/h3/server.js';
import { MessageKind, MessageReader, type MessageHandler } from '../../protocols/h3/message.js';
import { H3Error, H3_REQUEST_CANCELLED, writeFrameHeader, frameHeaderLength } from '../../protocols/h3/frames.js';
import { QpackEncoder } from '../../protocols/h3/qpack/encoder.js';
import { varintLength, writeVarint } from '../../protocols/h3/varint.js';
import { QuicEndpoint, createClientConfig, type QuicConnection, type QuicConnectionHandler, type QuicError, NOOP_HANDLER } from '../../protocols/quic/index.js';

export interface H3Response {
  status: number;
  /** Flat [name, value, ...] without :status. */
  headers: string[];
  body: Buffer;
  trailers: string[];
}

export interface H3RequestOptions {
  method?: string;
  authority?: string;
  headers?: Array<[string, string]>;
  body?: Buffer;
  trailers?: Array<[string, string]>;
  /** Keep only the byte count and not the body (bulk runs). */
  discardBody?: boolean;
}

class PendingRequest implements MessageHandler {
  readonly reader: MessageReader;
  readonly out: StreamOut;
  status: number;
  headers: string[];
  trailers: string[];
  chunks: Buffer[];
  bytes: number;
  readonly discard: boolean;
  body: Buffer[];
  bodyIndex: number;
  trailerFrame: Buffer | null;
  resolve: (r: H3Response) => void;
  reject: (e: Error) => void;
  constructor(session: ClientSession, id: number, discard: boolean, resolve: (r: H3Response) => void, reject: (e: Error) => void) {
    this.reader = new MessageReader(this, session.decoder, id, { kind: MessageKind.Response });
    this.out = new StreamOut(session.quic, id);
    this.status = 0;
    this.headers = [];
    this.trailers = [];
    this.chunks = [];
    this.bytes = 0;
    this.discard = discard;
    this.body = [];
    this.bodyIndex = 0;
    this.trailerFrame = null;
    this.resolve = resolve;
    this.reject = reject;
  }
  onHeaders(fields: string[], isTrailers: boolean): void {
    if (isTrailers) {
      this.trailers = fields;
      return;
    }
    const status = this.reader.info.status;
    if (status < 200) return;
    this.status = status;
    this.headers = fields.slice(2);
  }
  onData(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    if (!this.discard) this.chunks.push(Buffer.from(chunk));
  }
  onEnd(): void {
    this.resolve({ status: this.status, headers: this.headers, body: Buffer.concat(this.chunks), trailers: this.trailers });
  }
  onError(error: H3Error): void {
    this.reject(new Error(`HTTP/3 response error: ${error.toString()}`));
  }
}

class ClientSession extends H3Session {
  readonly pending: Map<number, PendingRequest>;
  /** Streams opened through the raw API (bidi and uni), by id. */
  readonly raw: Map<number, RawH3Stream>;
  /** Do not open our control stream (tests that write their own, or none). */
  readonly skipControl: boolean;
  /** Stream IDs of every GOAWAY the server sent on its control stream, in order. */
  readonly goawayIds: number[];
  /** Called on each GOAWAY (after it is recorded in goawayIds); null: none. */
  goawayListener: ((id: number) => void) | null;
  constructor(quic: QuicConnection, skipControl = false) {
    super(quic, false, 1024 * 1024);
    this.pending = new Map();
    this.raw = new Map();
    this.skipControl = skipControl;
    this.goawayIds = [];
    this.goawayListener = null;
  }
  override onEstablished(conn: QuicConnection): void {
    if (!this.skipControl) super.onEstablished(conn);
  }
  /**
   * Writes what the request still has to send (body chunks, trailers, FIN). The FIN goes
   * with the last DATA frame (or the trailers), never alone: quiche 0.18 can lose a FIN-only
   * write (cloudflare/quiche#2525, see StreamOut); an empty body ends with StreamOut.end().
   */
  pump(p: PendingRequest): void {
    while (p.bodyIndex < p.body.length) {
      const chunk = p.body[p.bodyIndex++];
      const isLast = p.bodyIndex === p.body.length && p.trailerFrame === null;
      if (!writeDataFrame(p.out, this.scratch, chunk, isLast)) return;
    }
    if (p.out.isFinPending || p.out.isClosed) return;
    if (p.trailerFrame !== null) p.out.write(p.trailerFrame, true, true);
    else p.out.end();
  }
  protected onRequestData(id: number, data: Buffer, fin: boolean): void {
    const r = this.raw.get(id);
    if (r !== undefined) {
      r.onWire(data, fin);
      return;
    }
    const p = this.pending.get(id);
    if (p === undefined) return;
    if (data.length > 0) p.reader.push(data);
    if (fin) {
      if (!p.reader.isClosed) p.reader.end();
      this.pending.delete(id);
    }
  }
  protected onRequestReset(id: number, code: number): void {
    const r = this.raw.get(id);
    if (r !== undefined) {
      r.resetCode = code;
      return;
    }
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    p.reject(new Error(`stream ${id} reset by the server (0x${code.toString(16)})`));
  }
  protected onRequestStopSending(id: number, code: number): void {
    // The server needs no more request body: stop writing it; the response still comes.
    const r = this.raw.get(id);
    if (r !== undefined) r.stopCode = code;
  }
  protected onRequestWritable(id: number): void {
    const r = this.raw.get(id);
    if (r !== undefined) {
      r.out.flush();
      return;
    }
    const p = this.pending.get(id);
    if (p === undefined) return;
    if (p.out.flush()) this.pump(p);
  }
  protected onPeerGoaway(id: number): void {
    this.goawayIds.push(id);
    if (this.goawayListener !== null) this.goawayListener(id);
  }
  protected onConnectionClosed(error: QuicError | null): void {
    for (const p of this.pending.values()) p.reject(new Error(`connection closed: ${error === null ? 'cleanly' : error.message}`));
    this.pending.clear();
    for (const r of this.raw.values()) r.isConnectionGone = true;
  }
}

export class H3TestClient {
  readonly endpoint: QuicEndpoint;
  readonly conn: QuicConnection;
  readonly session: ClientSession;
  private readonly authority: string;

  private constructor(endpoint: QuicEndpoint, conn: QuicConnection, session: ClientSession, authority: string) {
    this.endpoint = endpoint;
    this.conn = conn;
    this.session = session;
    this.authority = authority;
  }

  /** Connects to host:port (an IP), verifying the certificate against `ca`. */
  static async connect(host: string, port: number, ca: Buffer, o: { endpoint?: QuicEndpoint; skipControl?: boolean } = {}): Promise<H3TestClient> {
    const skipControl = o.skipControl === true;
    const endpoint = o.endpoint ?? (await QuicEndpoint.open({ host, client: createClientConfig({ caPem: ca, alpn: ['h3'], initialMaxStreamDataBidiLocal: 1024 * 1024, initialMaxData: 16 * 1024 * 1024 }) }));
    const shim: { session: ClientSession | null } & QuicConnectionHandler = {
      ...NOOP_HANDLER,
      session: null,
      onEstablished(conn: QuicConnection) {
        this.session = new ClientSession(conn, skipControl);
        this.session.onEstablished(conn);
      },
      onStreamData(c, id, data, fin) {
        this.session?.onStreamData(c, id, data, fin);
      },
      onStreamReset(c, id, code) {
        this.session?.onStreamReset(c, id, code);
      },
      onStreamStopSending(c, id, code) {
        this.session?.onStreamStopSending(c, id, code);
      },
      onStreamWritable(c, id) {
        this.session?.onStreamWritable(c, id);
      },
      onClosed(c, err) {
        this.session?.onClosed(c, err);
      },
    };
    const conn = await endpoint.connect(host, port, null, shim, { timeoutMs: 5000 });
    return new H3TestClient(endpoint, conn, shim.session as ClientSession, `${host}:${port}`);
  }

  /** One request; resolves with the whole response. */
  request(path: string, o: H3RequestOptions = {}): Promise<H3Response> {
    const s = this.session;
    const id = this.conn.openBidi();
    if (id < 0) return Promise.reject(new Error('no stream credit'));
    return new Promise<H3Response>((resolve, reject) => {
      const p = new PendingRequest(s, id, o.discardBody === true, resolve, reject);
      s.pending.set(id, p);
      const fields = [':method', o.method ?? 'GET', ':scheme', 'https', ':authority', o.authority ?? this.authority, ':path', path];
      for (const [n, v] of o.headers ?? []) fields.push(n.toLowerCase(), v);
      const head = s.encoder.encodeHeadersFrame(fields);
      const hasBody = o.body !== undefined || o.trailers !== undefined;
      if (!hasBody) {
        p.out.write(head, true, true);
        return;
      }
      p.out.write(head, true, false);
      const body = o.body ?? EMPTY_BUFFER;
      for (let off = 0; off < body.length; off += 64 * 1024) p.body.push(body.subarray(off, Math.min(body.length, off + 64 * 1024)));
      if (o.trailers !== undefined) {
        const t: string[] = [];
        for (const [n, v] of o.trailers) t.push(n.toLowerCase(), v);
        p.trailerFrame = s.encoder.encodeHeadersFrame(t);
      }
      s.pump(p);
    });
  }

  /**
   * Opens a request stream, sends `head` fields (and `bodyBytes` of DATA, no FIN), then
   * resets it (RESET_STREAM + STOP_SENDING) after `delayMs`. For reset storms.
   */
  openAndReset(path: string, bodyBytes: number, withHead: boolean): number {
    const s = this.session;
    const id = this.conn.openBidi();
    if (id < 0) return -1;
    const out = new StreamOut(this.conn, id);
    if (withHead) {
      out.write(s.encoder.encodeHeadersFrame([':method', 'POST', ':scheme', 'https', ':authority', this.authority, ':path', path]), true, false);
      if (bodyBytes > 0) writeDataFrame(out, s.scratch, Buffer.alloc(bodyBytes, 0x61), false);
    } else {
      out.write(Buffer.from([0x01]), true, false); // a HEADERS frame type byte, nothing more
    }
    this.conn.streamShutdown(id, 'write', H3_REQUEST_CANCELLED);
    this.conn.streamShutdown(id, 'read', H3_REQUEST_CANCELLED);
    return id;
  }

  // ---- raw API (bad-input tests): arbitrary bytes on streams we open, resets, uni types ----

  /**
   * Opens a client bidirectional (request) stream and sends nothing yet; null when the
   * server's stream limit (MAX_STREAMS) leaves no credit. Write frames or bytes with the
   * returned RawH3Stream; the response is parsed as it arrives (see RawH3Stream).
   */
  tryOpenRaw(): RawH3Stream | null {
    const id = this.conn.openBidi();
    if (id < 0) return null;
    const r = new RawH3Stream(this.session, id, true);
    this.session.raw.set(id, r);
    return r;
  }

  /** tryOpenRaw that throws when there is no stream credit. */
  openRaw(): RawH3Stream {
    const r = this.tryOpenRaw();
    if (r === null) throw new Error('no bidirectional stream credit');
    return r;
  }

  /**
   * Opens a client unidirectional stream and writes `type` as its stream type varint (null:
   * write nothing, the caller writes the header itself). Null when no uni credit is left.
   */
  openUni(type: number | null): RawH3Stream | null {
    const id = this.conn.openUni();
    if (id < 0) return null;
    const r = new RawH3Stream(this.session, id, false);
    this.session.raw.set(id, r);
    if (type !== null) r.write(varintBytes(type));
    return r;
  }

  /** Writes raw bytes on our own control stream (after its type byte and SETTINGS); `fin` closes it. */
  writeControl(bytes: Uint8Array, fin = false): void {
    const out = this.session.controlOut;
    if (out === null) throw new Error('no control stream (skipControl)');
    out.write(Buffer.from(bytes), true, fin);
  }

  /** Resets our control stream (RESET_STREAM with `code`). */
  resetControl(code: number): void {
    const out = this.session.controlOut;
    if (out === null) throw new Error('no control stream (skipControl)');
    out.reset(code);
  }

  /** The client-encoded HEADERS frame for `fields` (flat [name, value, ...], sent as given: no lower-casing). */
  headersFrame(fields: readonly string[]): Buffer {
    return this.session.encoder.encodeHeadersFrame(fields);
  }

  /** Request pseudo-headers for a GET of `path` to this server, to extend or break. */
  requestFields(path: string, method = 'GET'): string[] {
    return [':method', method, ':scheme', 'https', ':authority', this.authority, ':path', path];
  }

  /**
   * Stream IDs announced by the server's GOAWAY frames (control stream), in arrival order;
   * empty until one arrives. Requests on streams at or above the last one will not be served.
   */
  get goawayIds(): readonly number[] {
    return this.session.goawayIds;
  }

  /** Calls `cb` with the stream ID of every GOAWAY that arrives from now on. */
  onGoaway(cb: ((id: number) => void) | null): void {
    this.session.goawayListener = cb;
  }

  /** Requests sent through request() whose response has not ended. */
  get inFlight(): number {
    return this.session.pending.size;
  }

  /** True once the connection is closing, draining or closed (either side). */
  get isClosing(): boolean {
    return this.conn.isDraining;
  }

  /**
   * The CONNECTION_CLOSE the server sent, as soon as it arrived (quiche's peer error while
   * draining, the recorded close info once closed); null when the server has not closed.
   */
  peerClose(): { isApp: boolean; code: number; reason: string } | null {
    const info = this.conn.closeInfo;
    if (info !== null) return info.byPeer ? { isApp: info.isApp, code: info.code, reason: info.reason } : null;
    const native = this.conn.native;
    if (native === null) return null;
    const e = native.peerError();
    return e === null ? null : { isApp: e.isApp, code: e.errorCode, reason: Buffer.from(e.reason).toString('utf8') };
  }

  /** Closes the connection (and the endpoint unless it was passed in and `keepEndpoint`). */
  async close(keepEndpoint = false): Promise<void> {
    if (keepEndpoint) {
      this.conn.close(0x100, '');
      return;
    }
    await this.endpoint.close(0x100, '', 2000);
  }
}

/** A QUIC varint as its own buffer. */
export function varintBytes(value: number): Buffer {
  const out = Buffer.allocUnsafe(varintLength(value));
  writeVarint(out, 0, value);
  return out;
}

/** One HTTP/3 frame with any type and payload (no checks: for sending bad input). */
export function rawFrame(type: number, payload: Uint8Array | readonly number[] = []): Buffer {
  const body = payload instanceof Uint8Array ? payload : Uint8Array.from(payload);
  const out = Buffer.allocUnsafe(frameHeaderLength(type, body.length) + body.length);
  out.set(body, writeFrameHeader(out, 0, type, body.length));
  return out;
}

/** A frame header alone (type + a declared length), e.g. for a frame truncated by FIN. */
export function rawFrameHeader(type: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(frameHeaderLength(type, length));
  writeFrameHeader(out, 0, type, length);
  return out;
}

/** A QPACK field section (static table and literals only, Huffman when shorter) for `fields`, sent as given. */
export function encodeFieldSection(fields: readonly string[]): Buffer {
  return Buffer.from(new QpackEncoder().encodeFieldSection(fields));
}

/**
 * A stream opened through H3TestClient's raw API. Writes go out in order (what flow control
 * holds back waits in `out`); what the server sends is recorded: the response parsed by a
 * MessageReader (status, headers, body, or `responseError` when it is not a valid response),
 * the raw byte count, FIN, RESET_STREAM and STOP_SENDING codes.
 *
 * STOP_SENDING is only learned when a write is attempted on the stream (quiche has no event
 * for it otherwise): `probeStopSending()` writes a grease frame (harmless: ignored by HTTP/3)
 * and returns the code once known.
 */
export class RawH3Stream implements MessageHandler {
  readonly id: number;
  readonly isBidi: boolean;
  readonly out: StreamOut;
  readonly reader: MessageReader | null;
  status: number;
  headers: string[];
  trailers: string[];
  readonly body: Buffer[];
  bytesReceived: number;
  /** The server's FIN arrived. */
  isFin: boolean;
  /** A complete, valid response was read (FIN included). */
  isEnded: boolean;
  /** RESET_STREAM code from the server; -1 none. */
  resetCode: number;
  /** STOP_SENDING code from the server; -1 none (or not learned yet). */
  stopCode: number;
  responseError: H3Error | null;
  isConnectionGone: boolean;
  private readonly conn: QuicConnection;

  constructor(session: ClientSession, id: number, isBidi: boolean) {
    this.id = id;
    this.isBidi = isBidi;
    this.conn = session.quic;
    this.out = new StreamOut(session.quic, id);
    this.reader = isBidi ? new MessageReader(this, session.decoder, id, { kind: MessageKind.Response }) : null;
    this.status = 0;
    this.headers = [];
    this.trailers = [];
    this.body = [];
    this.bytesReceived = 0;
    this.isFin = false;
    this.isEnded = false;
    this.resetCode = -1;
    this.stopCode = -1;
    this.responseError = null;
    this.isConnectionGone = false;
  }

  /** Writes bytes (copied when they must wait); `fin` ends our side. */
  write(bytes: Uint8Array | readonly number[], fin = false): void {
    const buf = Buffer.from(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes));
    this.out.write(buf, true, fin);
    this.noteWriteFailure();
  }

  /** Ends our side (FIN) without data. */
  end(): void {
    this.out.write(EMPTY_BUFFER, true, true);
    this.noteWriteFailure();
  }

  /** RESET_STREAM with `code`. */
  reset(code: number): void {
    this.out.reset(code);
  }

  /** STOP_SENDING with `code` (bidi only). */
  stopSending(code: number): void {
    this.conn.streamShutdown(this.id, 'read', code);
  }

  /**
   * Stops reading the response out of quiche (it waits there): while the response's FIN is
   * unread the stream cannot complete, so quiche keeps it (and a STOP_SENDING's code) instead
   * of collecting it. `releaseResponse()` reads on.
   */
  holdResponse(): void {
    this.conn.pauseStream(this.id);
  }

  releaseResponse(): void {
    this.conn.resumeStream(this.id);
  }

  /**
   * Writes a grease frame (straight to quiche, past `out`) to learn whether the server sent
   * STOP_SENDING; returns stopCode (-1 not yet). quiche answers a write on a stopped stream with
   * StreamStopped(code), but only until the stream is collected: hold the response of a bidi
   * stream first (holdResponse). A send-only (uni) stream is collected as soon as our
   * RESET_STREAM is acknowledged; keep it blocked on flow control instead (the driver then
   * reports STOP_SENDING from its capacity check in the same flush that received it).
   */
  probeStopSending(): number {
    if (this.stopCode >= 0 || this.out.pendingBytes > 0 || this.out.isClosed) return this.stopCode;
    const n = this.conn.streamWrite(this.id, rawFrame(0x21, []), false);
    if (n < 0) {
      const e = this.conn.lastStreamError;
      if (e !== null && e.quicheName === 'StreamStopped') this.stopCode = e.appCode;
    }
    return this.stopCode;
  }

  /** The response body so far. */
  get bodyText(): string {
    return Buffer.concat(this.body).toString('utf8');
  }

  /** A response header's value ('' when absent). */
  header(name: string): string {
    for (let i = 0; i < this.headers.length; i += 2) if (this.headers[i] === name) return this.headers[i + 1];
    return '';
  }

  /** @internal stream bytes from the session. */
  onWire(data: Buffer, fin: boolean): void {
    this.bytesReceived += data.length;
    const reader = this.reader;
    if (reader !== null) {
      if (data.length > 0) reader.push(data);
      if (fin && !reader.isClosed) reader.end();
    }
    if (fin) this.isFin = true;
  }

  private noteWriteFailure(): void {
    if (!this.out.isFailed || this.stopCode >= 0) return;
    const e = this.conn.lastStreamError;
    if (e !== null && e.quicheName === 'StreamStopped') this.stopCode = e.appCode;
  }

  // ---- MessageHandler (the response) ----

  onHeaders(fields: string[], isTrailers: boolean): void {
    if (isTrailers) {
      this.trailers = fields;
      return;
    }
    const status = this.reader === null ? 0 : this.reader.info.status;
    if (status < 200) return;
    this.status = status;
    this.headers = fields.slice(2);
  }
  onData(chunk: Uint8Array): void {
    this.body.push(Buffer.from(chunk));
  }
  onEnd(): void {
    this.isEnded = true;
  }
  onError(error: H3Error): void {
    this.responseError = error;
  }
}
