// A recording HTTP/1.1 upstream on a raw `net` server, for tests that must prove what did (and
// did not) reach the service behind the sidecar: it keeps every byte it receives, parses the
// requests strictly (CRLF heads, Content-Length or chunked bodies), and answers each complete
// request 200 with the body `up:<request-target>`. Bytes it cannot parse are recorded as junk
// (and the connection is closed); a connection that closes in the middle of a request is
// recorded as truncated. node:http is not used on purpose: its parser is lenient in places and
// would hide what arrived.
import net from 'node:net';

export interface RecordedRawRequest {
  /** Which accepted connection (0, 1, ...) carried it. */
  readonly conn: number;
  readonly method: string;
  readonly target: string;
  /** Field lines as received: [name, value] with the value trimmed. */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer;
  /** Trailer field lines of a chunked body: [name, value]. */
  readonly trailers: ReadonlyArray<readonly [string, string]>;
}

export interface RawProblem {
  readonly conn: number;
  readonly reason: string;
  /** The unparsed bytes (latin1), at most 2 KiB. */
  readonly bytes: string;
}

export interface RawRecordingUpstream {
  readonly port: number;
  /** Complete requests, in arrival order. */
  readonly requests: RecordedRawRequest[];
  /** Bytes that were not a well-formed request. */
  readonly junk: RawProblem[];
  /** Connections closed with a request half received (a partial head or body). */
  readonly truncated: RawProblem[];
  /** Everything received on every connection, in arrival order (latin1). */
  received(): string;
  /** Total bytes received. */
  bytes(): number;
  /** Connections accepted so far. */
  connections(): number;
  /** Open connections holding part of a request right now. */
  openPartials(): number;
  close(): Promise<void>;
}

const enum Phase {
  Head = 0,
  LengthBody = 1,
  ChunkSize = 2,
  ChunkData = 3,
  ChunkDataEnd = 4,
  Trailers = 5,
}

class RawConn {
  readonly id: number;
  readonly socket: net.Socket;
  readonly owner: RecordingServer;
  buf: Buffer;
  phase: Phase;
  method: string;
  target: string;
  headers: Array<[string, string]>;
  body: Buffer[];
  trailers: Array<[string, string]>;
  remaining: number;

  constructor(id: number, socket: net.Socket, owner: RecordingServer) {
    this.id = id;
    this.socket = socket;
    this.owner = owner;
    this.buf = Buffer.alloc(0);
    this.phase = Phase.Head;
    this.method = '';
    this.target = '';
    this.headers = [];
    this.body = [];
    this.trailers = [];
    this.remaining = 0;
  }

  get isPartial(): boolean {
    return this.phase !== Phase.Head || this.buf.length > 0;
  }

  onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      const progressed = this.step();
      if (progressed === null) return; // junk: connection closed
      if (!progressed) return;
    }
  }

  private junk(reason: string): null {
    this.owner.junk.push({ conn: this.id, reason, bytes: this.buf.toString('latin1', 0, 2048) });
    this.buf = Buffer.alloc(0);
    this.phase = Phase.Head;
    this.socket.destroy();
    return null;
  }

  /** One parsing step; true if it consumed something, false if it needs more bytes, null on junk. */
  private step(): boolean | null {
    switch (this.phase) {
      case Phase.Head: {
        if (this.buf.length === 0) return false;
        const end = this.buf.indexOf('\r\n\r\n');
        if (end < 0) return this.buf.length > 65536 ? this.junk('head over 64 KiB') : false;
        const head = this.buf.toString('latin1', 0, end);
        this.buf = this.buf.subarray(end + 4);
        if (/[\x00-\x08\x0a-\x1f\x7f]/.test(head.replaceAll('\r\n', ''))) return this.junk(`control characters or bare CR/LF in head: ${JSON.stringify(head)}`);
        const lines = head.split('\r\n');
        const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.1$/.exec(lines[0]);
        if (m === null) return this.junk(`bad request line: ${JSON.stringify(lines[0])}`);
        this.method = m[1];
        this.target = m[2];
        this.headers = [];
        this.body = [];
        this.trailers = [];
        let length = -1;
        let isChunked = false;
        for (let i = 1; i < lines.length; i++) {
          const fm = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(lines[i]);
          if (fm === null) return this.junk(`bad field line: ${JSON.stringify(lines[i])}`);
          const name = fm[1].toLowerCase();
          this.headers.push([fm[1], fm[2]]);
          if (name === 'content-length') {
            if (!/^\d+$/.test(fm[2]) || (length >= 0 && Number(fm[2]) !== length)) return this.junk(`bad content-length: ${fm[2]}`);
            length = Number(fm[2]);
          } else if (name === 'transfer-encoding') {
            if (isChunked || fm[2].toLowerCase() !== 'chunked') return this.junk(`bad transfer-encoding: ${fm[2]}`);
            isChunked = true;
          }
        }
        if (isChunked && length >= 0) return this.junk('content-length with transfer-encoding');
        if (isChunked) {
          this.phase = Phase.ChunkSize;
        } else if (length > 0) {
          this.phase = Phase.LengthBody;
          this.remaining = length;
        } else {
          this.complete();
        }
        return true;
      }
      case Phase.LengthBody: {
        if (this.buf.length === 0) return false;
        const n = Math.min(this.remaining, this.buf.length);
        this.body.push(this.buf.subarray(0, n));
        this.buf = this.buf.subarray(n);
        this.remaining -= n;
        if (this.remaining === 0) this.complete();
        return true;
      }
      case Phase.ChunkSize: {
        const eol = this.buf.indexOf('\r\n');
        if (eol < 0) return this.buf.length > 4096 ? this.junk('chunk-size line over 4 KiB') : false;
        const line = this.buf.toString('latin1', 0, eol);
        this.buf = this.buf.subarray(eol + 2);
        const sm = /^([0-9a-fA-F]{1,12})(;[^\x00-\x1f\x7f]*)?$/.exec(line);
        if (sm === null) return this.junk(`bad chunk-size line: ${JSON.stringify(line)}`);
        const size = parseInt(sm[1], 16);
        if (size === 0) {
          this.phase = Phase.Trailers;
        } else {
          this.remaining = size;
          this.phase = Phase.ChunkData;
        }
        return true;
      }
      case Phase.ChunkData: {
        if (this.buf.length === 0) return false;
        const n = Math.min(this.remaining, this.buf.length);
        this.body.push(this.buf.subarray(0, n));
        this.buf = this.buf.subarray(n);
        this.remaining -= n;
        if (this.remaining === 0) this.phase = Phase.ChunkDataEnd;
        return true;
      }
      case Phase.ChunkDataEnd: {
        if (this.buf.length < 2) return false;
        if (this.buf[0] !== 13 || this.buf[1] !== 10) return this.junk('chunk data not followed by CRLF');
        this.buf = this.buf.subarray(2);
        this.phase = Phase.ChunkSize;
        return true;
      }
      case Phase.Trailers: {
        if (this.buf.length >= 2 && this.buf[0] === 13 && this.buf[1] === 10) {
          this.buf = this.buf.subarray(2);
          this.complete();
          return true;
        }
        const end = this.buf.indexOf('\r\n\r\n');
        if (end < 0) return false;
        const text = this.buf.toString('latin1', 0, end);
        this.buf = this.buf.subarray(end + 4);
        for (const line of text.split('\r\n')) {
          const tm = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*$/.exec(line);
          if (tm === null) return this.junk(`bad trailer line: ${JSON.stringify(line)}`);
          this.trailers.push([tm[1], tm[2]]);
        }
        this.complete();
        return true;
      }
      default:
        return false;
    }
  }

  private complete(): void {
    const req: RecordedRawRequest = { conn: this.id, method: this.method, target: this.target, headers: this.headers, body: Buffer.concat(this.body), trailers: this.trailers };
    this.owner.requests.push(req);
    this.phase = Phase.Head;
    this.body = [];
    const body = `up:${this.target}`;
    this.socket.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body, 'latin1')}\r\n\r\n${body}`, 'latin1');
  }

  onClose(): void {
    if (this.isPartial) {
      this.owner.truncated.push({ conn: this.id, reason: `closed in phase ${this.phase}`, bytes: this.buf.toString('latin1', 0, 2048) });
    }
    this.owner.open.delete(this);
  }
}

class RecordingServer {
  readonly requests: RecordedRawRequest[] = [];
  readonly junk: RawProblem[] = [];
  readonly truncated: RawProblem[] = [];
  readonly open = new Set<RawConn>();
  readonly chunks: Buffer[] = [];
  total = 0;
  accepted = 0;
}

/** Starts the recording upstream on 127.0.0.1 (an ephemeral port). */
export async function startRawRecordingUpstream(): Promise<RawRecordingUpstream> {
  const rec = new RecordingServer();
  const server = net.createServer((socket) => {
    const conn = new RawConn(rec.accepted++, socket, rec);
    rec.open.add(conn);
    socket.on('data', (chunk: Buffer) => {
      rec.chunks.push(chunk);
      rec.total += chunk.length;
      conn.onData(chunk);
    });
    socket.on('error', () => {});
    socket.on('close', () => conn.onClose());
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
  return {
    port,
    requests: rec.requests,
    junk: rec.junk,
    truncated: rec.truncated,
    received: () => Buffer.concat(rec.chunks).toString('latin1'),
    bytes: () => rec.total,
    connections: () => rec.accepted,
    openPartials: () => {
      let n = 0;
      for (const c of rec.open) if (c.isPartial) n++;
      return n;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of rec.open) c.socket.destroy();
        server.close(() => resolve());
      }),
  };
}
