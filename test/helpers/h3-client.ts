// A small HTTP/3 client on Skiff's own pieces (QUIC driver, H3Session, QPACK, MessageReader)
// for tests and the bench: requests with bodies and trailers, raw streams for reset storms.
// Not a general client: one connection, responses buffered in memory.
import { H3Session, StreamOut, writeDataFrame, EMPTY_BUFFER } from '../../protocols/h3/server.js';
import { MessageKind, MessageReader, type MessageHandler } from '../../protocols/h3/message.js';
import { H3Error, H3_REQUEST_CANCELLED } from '../../protocols/h3/frames.js';
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
  constructor(quic: QuicConnection) {
    super(quic, false, 1024 * 1024);
    this.pending = new Map();
  }
  /** Writes what the request still has to send (body chunks, trailers, FIN). */
  pump(p: PendingRequest): void {
    while (p.bodyIndex < p.body.length) {
      const chunk = p.body[p.bodyIndex++];
      if (!writeDataFrame(p.out, this.scratch, chunk, false)) return;
    }
    if (p.out.isFinPending || p.out.isClosed) return;
    if (p.trailerFrame !== null) p.out.write(p.trailerFrame, true, true);
    else p.out.write(EMPTY_BUFFER, true, true);
  }
  protected onRequestData(id: number, data: Buffer, fin: boolean): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    if (data.length > 0) p.reader.push(data);
    if (fin) {
      if (!p.reader.isClosed) p.reader.end();
      this.pending.delete(id);
    }
  }
  protected onRequestReset(id: number, code: number): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    p.reject(new Error(`stream ${id} reset by the server (0x${code.toString(16)})`));
  }
  protected onRequestStopSending(_id: number, _code: number): void {
    // The server needs no more request body: stop writing it; the response still comes.
  }
  protected onRequestWritable(id: number): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    if (p.out.flush()) this.pump(p);
  }
  protected onPeerGoaway(_id: number): void {}
  protected onConnectionClosed(error: QuicError | null): void {
    for (const p of this.pending.values()) p.reject(new Error(`connection closed: ${error === null ? 'cleanly' : error.message}`));
    this.pending.clear();
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
  static async connect(host: string, port: number, ca: Buffer, o: { endpoint?: QuicEndpoint } = {}): Promise<H3TestClient> {
    const endpoint = o.endpoint ?? (await QuicEndpoint.open({ host, client: createClientConfig({ caPem: ca, alpn: ['h3'], initialMaxStreamDataBidiLocal: 1024 * 1024, initialMaxData: 16 * 1024 * 1024 }) }));
    const shim: { session: ClientSession | null } & QuicConnectionHandler = {
      ...NOOP_HANDLER,
      session: null,
      onEstablished(conn: QuicConnection) {
        this.session = new ClientSession(conn);
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

  /** Closes the connection (and the endpoint unless it was passed in and `keepEndpoint`). */
  async close(keepEndpoint = false): Promise<void> {
    if (keepEndpoint) {
      this.conn.close(0x100, '');
      return;
    }
    await this.endpoint.close(0x100, '', 2000);
  }
}
