// Scriptable faulty upstreams for end-to-end fault tests (test/e2e/upstream-faults.test.ts).
// Both bind 127.0.0.1 on an ephemeral port. The fault is chosen per request by a path
// segment naming it (e.g. `/h1/reset-mid-response/7`: the first segment that is a known
// fault wins; none means `ok`), so one upstream serves a whole matrix.
//
// HTTP/1.1 (a raw `net` server with its own small parser, so it can misbehave at any byte):
//   ok                      reads the whole body, answers 200 "ok <bytes>\n" (keep-alive)
//   reset-before-read       RST (resetAndDestroy) as soon as the head arrived, body unread
//   reset-mid-request       reads 64 KiB of the body, then RST
//   reset-mid-response      reads the request, sends a head (content-length 1 MiB) and 64 KiB,
//                           then RST
//   bad-chunk               a chunked response whose second chunk size is not hex
//   stall                   reads the request and never answers
//   half-close              reads the request, then FIN (socket.end()) without answering
//   answer-then-half-close  answers 200 (keep-alive, no `connection: close`), then FIN
//   answer-then-close-idle  answers 200, then FIN 100 ms later while the connection is idle
//   race-arm                answers 200 and dooms the connection: the next request on it is
//                           met with a FIN and no answer (a keep-alive race: the server's idle
//                           timer fired as the request arrived)
//   garbage                 answers bytes that are not HTTP, then FIN
//   close-but-linger        answers 200 with `connection: close` and then never closes its
//                           side (the client must not wait for the server's FIN forever)
//   stall-no-read           stops reading at the head (the body backs up) and never answers
//   half-close-before-body  FIN right after the head, body unread, no answer
//   answer-early            answers 200 at the head, then reads and drops the body
// `startFaultyH1Upstream({ resetOnAccept: true })` resets every connection at accept.
//
// HTTP/2 (h2c, node:http2; raw socket access through the server's 'connection' event):
//   ok                      reads the body, answers 200 "ok <bytes>\n"
//   refuse                  RST_STREAM REFUSED_STREAM before anything else
//   refuse-once             REFUSED_STREAM the first time a path is seen, `ok` after
//   rst-internal            RST_STREAM INTERNAL_ERROR before reading the body
//   rst-code-N              RST_STREAM with error code N before anything else
//   rst-mid-request         reads 64 KiB of the body, then RST_STREAM INTERNAL_ERROR
//   rst-mid-response        head (content-length 1 MiB) + 64 KiB, then RST_STREAM INTERNAL_ERROR
//   stall                   never answers
//   goaway-graceful         GOAWAY(NO_ERROR, last = this stream), then answers 200
//   goaway-mid-response     head + 64 KiB, then GOAWAY(INTERNAL_ERROR) and the session is
//                           destroyed
//   fin-mid-response        head + 64 KiB, then a TCP FIN on the raw socket (no GOAWAY)
//   stall-no-read           never reads the body (flow control backs it up), never answers
//   answer-early            answers 200 at once, then RST_STREAM(NO_ERROR) (RFC 9113 §8.1)
//   goaway-refuse-once      the first time a path is seen: GOAWAY(NO_ERROR) with a last
//                           stream id below this stream (never processed); `ok` after, and
//                           `ok` on a session's first stream (see the code)
//   junk-mid-response       head + 64 KiB, then a DATA frame on stream 0 on the raw socket
//   drop-N                  holds the stream; once N `drop-N` streams are held on the session
//                           (or 3 s passed), every odd one got a head + 16 KiB and the raw
//                           socket is reset: a connection drop with many streams in flight
import http2 from 'node:http2';
import net from 'node:net';

const MID = 64 * 1024;
const BIG = 1024 * 1024;
const FILL = Buffer.alloc(MID, 0x78);

export const H1_FAULTS = [
  'ok',
  'reset-before-read',
  'reset-mid-request',
  'reset-mid-response',
  'bad-chunk',
  'stall',
  'half-close',
  'answer-then-half-close',
  'answer-then-close-idle',
  'race-arm',
  'garbage',
  'close-but-linger',
  'stall-no-read',
  'half-close-before-body',
  'answer-early',
] as const;
export type H1Fault = (typeof H1_FAULTS)[number];

export const H2_FAULTS = [
  'ok',
  'refuse',
  'refuse-once',
  'rst-internal',
  'rst-mid-request',
  'rst-mid-response',
  'stall',
  'goaway-graceful',
  'goaway-mid-response',
  'fin-mid-response',
  'stall-no-read',
  'answer-early',
  'goaway-refuse-once',
  'junk-mid-response',
] as const;
export type H2Fault = (typeof H2_FAULTS)[number] | 'drop' | 'rst-code';

export interface FaultyUpstream {
  port: number;
  /** Connections (HTTP/2: sessions) accepted since start. */
  accepted(): number;
  /** Connections (sessions) open right now. */
  open(): number;
  /** Requests (streams) seen, by fault name. */
  seen(fault: string): number;
  /** Destroys every connection and closes the listener. Idempotent. */
  close(): Promise<void>;
}

function faultOf<T extends string>(path: string, known: readonly T[]): { fault: T | 'ok'; arg: number } {
  for (const seg of path.split('?')[0].split('/')) {
    if ((known as readonly string[]).includes(seg)) return { fault: seg as T, arg: 0 };
    const m = /^(drop|rst-code)-(\d+)$/.exec(seg);
    if (m !== null && (known as readonly string[]).includes(m[1])) return { fault: m[1] as T, arg: Number(m[2]) };
  }
  return { fault: 'ok', arg: 0 };
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

function bump(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1

const enum Phase {
  Head,
  Body,
  /** Request read; answering (or deliberately not). */
  Done,
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

/** One upstream connection's parser state. */
class H1Conn {
  readonly socket: net.Socket;
  private buf: Buffer;
  private phase: Phase;
  private fault: H1Fault | 'ok';
  private remaining: number;
  private isChunked: boolean;
  /** Chunked: bytes of the current chunk still to skip (data + CRLF); -1 while reading a size line. */
  private chunkLeft: number;
  private isLastChunk: boolean;
  private bodyBytes: number;
  private isDoomed: boolean;
  private readonly seen: Map<string, number>;

  constructor(socket: net.Socket, seen: Map<string, number>) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.phase = Phase.Head;
    this.fault = 'ok';
    this.remaining = 0;
    this.isChunked = false;
    this.chunkLeft = -1;
    this.isLastChunk = false;
    this.bodyBytes = 0;
    this.isDoomed = false;
    this.seen = seen;
    socket.on('data', (b: Buffer) => this.onData(b));
    socket.on('error', () => {});
    // The server allows half-open sockets so `close-but-linger` can ignore the client's FIN;
    // every other fault closes its side in answer, as a server would.
    socket.on('end', () => {
      if (this.fault !== 'close-but-linger') socket.end();
    });
  }

  private get isGone(): boolean {
    return this.socket.destroyed || this.socket.writableEnded;
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.isGone) return;
      if (this.phase === Phase.Head) {
        const end = this.buf.indexOf(CRLFCRLF);
        if (end < 0) return;
        this.startRequest(this.buf.toString('latin1', 0, end));
        this.buf = this.buf.subarray(end + 4);
        if (this.isGone) return;
        continue;
      }
      if (this.phase === Phase.Body) {
        if (!this.readBody()) return;
        continue;
      }
      // Phase.Done: bytes of a pipelined next request wait until the answer went out.
      return;
    }
  }

  private startRequest(head: string): void {
    const lines = head.split('\r\n');
    const path = (lines[0] ?? '').split(' ')[1] ?? '/';
    let length = 0;
    let isChunked = false;
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      const name = l.slice(0, c).trim().toLowerCase();
      const value = l.slice(c + 1).trim();
      if (name === 'content-length') length = Number(value);
      else if (name === 'transfer-encoding' && /chunked/i.test(value)) isChunked = true;
    }
    this.fault = faultOf(path, H1_FAULTS).fault;
    bump(this.seen, this.fault);
    this.remaining = length;
    this.isChunked = isChunked;
    this.chunkLeft = -1;
    this.isLastChunk = false;
    this.bodyBytes = 0;
    this.phase = Phase.Body;
    if (this.isDoomed) {
      // The keep-alive race: the request arrived on a connection the server is closing.
      this.socket.end();
      return;
    }
    if (this.fault === 'reset-before-read') this.socket.resetAndDestroy();
    else if (this.fault === 'stall-no-read') this.socket.pause();
    else if (this.fault === 'half-close-before-body') this.socket.end();
    else if (this.fault === 'answer-early') this.answer();
  }

  /** Consumes body bytes from `buf`; true when the request is complete (phase moved on). */
  private readBody(): boolean {
    if (this.isChunked) {
      while (this.buf.length > 0) {
        if (this.chunkLeft < 0) {
          const eol = this.buf.indexOf('\r\n');
          if (eol < 0) return false;
          const line = this.buf.toString('latin1', 0, eol);
          this.buf = this.buf.subarray(eol + 2);
          if (this.isLastChunk) {
            if (line === '') return this.endOfRequest(); // end of the (empty) trailer section
            continue; // a trailer field
          }
          const size = parseInt(line, 16);
          if (size === 0) {
            this.isLastChunk = true;
            continue;
          }
          this.chunkLeft = size + 2;
          continue;
        }
        const n = Math.min(this.chunkLeft, this.buf.length);
        this.bodyBytes += Math.min(n, Math.max(0, this.chunkLeft - 2)); // the CRLF is not body
        this.chunkLeft -= n;
        this.buf = this.buf.subarray(n);
        if (this.chunkLeft === 0) this.chunkLeft = -1;
        if (this.onProgress()) return false;
      }
      return false;
    }
    const n = Math.min(this.remaining, this.buf.length);
    this.remaining -= n;
    this.bodyBytes += n;
    this.buf = this.buf.subarray(n);
    if (n > 0 && this.onProgress()) return false;
    if (this.remaining === 0) return this.endOfRequest();
    return false;
  }

  /** Body progress; true when the connection is gone. */
  private onProgress(): boolean {
    if (this.fault === 'reset-mid-request' && this.bodyBytes >= MID) {
      this.socket.resetAndDestroy();
      return true;
    }
    return false;
  }

  private endOfRequest(): boolean {
    this.phase = Phase.Done;
    const s = this.socket;
    switch (this.fault) {
      case 'ok':
        this.answer();
        break;
      case 'reset-before-read':
      case 'reset-mid-request':
        s.resetAndDestroy();
        break;
      case 'reset-mid-response':
        s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${BIG}\r\n\r\n`);
        s.write(FILL);
        setTimeout(() => s.resetAndDestroy(), 50);
        break;
      case 'bad-chunk':
        s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n');
        setTimeout(() => s.write('zz\r\n'), 50);
        break;
      case 'stall':
        break;
      case 'half-close':
        s.end();
        break;
      case 'answer-then-half-close':
        this.answer();
        s.end();
        break;
      case 'answer-then-close-idle':
        this.answer();
        setTimeout(() => {
          if (this.phase === Phase.Head && this.buf.length === 0) s.end();
        }, 100);
        break;
      case 'race-arm':
        this.answer();
        this.isDoomed = true;
        break;
      case 'garbage':
        s.end('THIS IS NOT HTTP\r\n\r\n');
        break;
      case 'close-but-linger':
        this.answer('connection: close\r\n'); // and reads (ignores) whatever follows; never closes
        break;
      case 'answer-early': // answered at the head; the body was read and dropped
        break;
      default:
        break;
    }
    switch (this.fault) {
      case 'ok':
      case 'answer-then-close-idle':
      case 'race-arm':
      case 'answer-early':
        this.phase = Phase.Head; // keep-alive: the next request may follow
        break;
      default:
        break;
    }
    return true;
  }

  private answer(extra = ''): void {
    const body = `ok ${this.bodyBytes}\n`;
    this.socket.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n${extra}\r\n${body}`);
  }
}

export interface FaultyH1Options {
  /** Reset every connection as soon as it is accepted (before reading anything). */
  resetOnAccept?: boolean;
}

export async function startFaultyH1Upstream(opts: FaultyH1Options = {}): Promise<FaultyUpstream> {
  const sockets = new Set<net.Socket>();
  const seen = new Map<string, number>();
  let accepted = 0;
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    if (opts.resetOnAccept === true) {
      socket.on('error', () => {});
      socket.resetAndDestroy();
      return;
    }
    new H1Conn(socket, seen);
  });
  const port = await listen(server);
  let closing: Promise<void> | null = null;
  return {
    port,
    accepted: () => accepted,
    open: () => sockets.size,
    seen: (f) => seen.get(f) ?? 0,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      })),
  };
}

// ---------------------------------------------------------------------------------------
// HTTP/2 (h2c)

export async function startFaultyH2Upstream(): Promise<FaultyUpstream> {
  const { NGHTTP2_REFUSED_STREAM, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = http2.constants;
  const server = http2.createServer({ settings: { maxConcurrentStreams: 256 } });
  const raw = new Map<number, net.Socket>(); // by the peer's port
  const sessions = new Set<http2.ServerHttp2Session>();
  const held = new WeakMap<http2.ServerHttp2Session, http2.ServerHttp2Stream[]>();
  const refusedOnce = new Set<string>();
  const seen = new Map<string, number>();
  let accepted = 0;

  server.on('connection', (socket: net.Socket) => {
    const port = socket.remotePort ?? 0;
    raw.set(port, socket);
    socket.on('close', () => raw.delete(port));
  });
  server.on('session', (session: http2.ServerHttp2Session) => {
    accepted++;
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
    session.on('error', () => {});
  });

  const rawOf = (session: http2.ServerHttp2Session): net.Socket | undefined => raw.get(session.socket?.remotePort ?? -1);

  function dropHeld(session: http2.ServerHttp2Session): void {
    const streams = held.get(session) ?? [];
    held.delete(session);
    streams.forEach((s, i) => {
      if (i % 2 === 1 && !s.destroyed && !s.closed && !s.headersSent && !session.destroyed) {
        s.respond({ ':status': 200, 'content-length': String(BIG) });
        s.write(FILL.subarray(0, 16 * 1024));
      }
    });
    // Let the heads and data leave, then cut the TCP connection under every stream.
    setTimeout(() => rawOf(session)?.resetAndDestroy(), 50);
  }

  server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    stream.on('error', () => {});
    const path = String(headers[':path'] ?? '/');
    const { fault, arg } = faultOf<H2Fault>(path, [...H2_FAULTS, 'drop', 'rst-code']);
    bump(seen, fault);
    const session = stream.session as http2.ServerHttp2Session | undefined;
    let bytes = 0;
    const answer = (): void => {
      if (stream.destroyed || stream.closed) return;
      const body = `ok ${bytes}\n`;
      stream.respond({ ':status': 200, 'content-type': 'text/plain', 'content-length': String(body.length) });
      stream.end(body);
    };
    const headAndSome = (): void => {
      if (stream.destroyed || stream.closed) return;
      stream.respond({ ':status': 200, 'content-length': String(BIG) });
      stream.write(FILL);
    };
    switch (fault) {
      case 'refuse':
        stream.close(NGHTTP2_REFUSED_STREAM);
        return;
      case 'refuse-once':
        if (!refusedOnce.has(path)) {
          refusedOnce.add(path);
          stream.close(NGHTTP2_REFUSED_STREAM);
          return;
        }
        break;
      case 'rst-internal':
        stream.close(NGHTTP2_INTERNAL_ERROR);
        return;
      case 'rst-code':
        stream.close(arg);
        return;
      case 'stall-no-read':
        stream.pause(); // flow control holds the body back
        return;
      case 'answer-early':
        // RFC 9113 §8.1: a complete response before the request ended, then RST_STREAM(NO_ERROR).
        stream.respond({ ':status': 200, 'content-type': 'text/plain', 'content-length': '6' });
        stream.end('early\n', () => {
          if (!stream.closed) stream.close(NGHTTP2_NO_ERROR);
        });
        return;
      case 'goaway-refuse-once':
        // Needs a stream id above 1: node:http2 turns a last stream id of 0 into "the last one
        // processed", which would make this a stall instead.
        if (!refusedOnce.has(path) && session !== undefined && !session.destroyed && (stream.id ?? 0) > 1) {
          // The stream is above the GOAWAY's last stream id: never processed, safe to retry.
          refusedOnce.add(path);
          session.goaway(NGHTTP2_NO_ERROR, (stream.id ?? 0) - 2);
          return;
        }
        break;
      case 'drop': {
        if (session === undefined) return;
        const list = held.get(session) ?? [];
        held.set(session, list);
        list.push(stream);
        stream.resume();
        if (list.length === 1) setTimeout(() => held.get(session) === list && dropHeld(session), 3000);
        if (list.length >= arg) dropHeld(session);
        return;
      }
      default:
        break;
    }
    stream.on('data', (c: Buffer) => {
      bytes += c.length;
      if (fault === 'rst-mid-request' && bytes >= MID && !stream.closed) stream.close(NGHTTP2_INTERNAL_ERROR);
    });
    stream.on('end', () => {
      if (stream.closed || stream.destroyed) return;
      switch (fault) {
        case 'rst-mid-request':
          stream.close(NGHTTP2_INTERNAL_ERROR);
          return;
        case 'rst-mid-response':
          headAndSome();
          setTimeout(() => !stream.destroyed && stream.close(NGHTTP2_INTERNAL_ERROR), 50);
          return;
        case 'stall':
          return;
        case 'goaway-graceful':
          if (session !== undefined && !session.destroyed) session.goaway(NGHTTP2_NO_ERROR, stream.id);
          answer();
          return;
        case 'goaway-mid-response':
          headAndSome();
          setTimeout(() => {
            if (session === undefined || session.destroyed) return;
            session.goaway(NGHTTP2_INTERNAL_ERROR, stream.id);
            setTimeout(() => session.destroy(), 20);
          }, 50);
          return;
        case 'junk-mid-response':
          headAndSome();
          setTimeout(() => {
            // A DATA frame on stream 0: a connection error (PROTOCOL_ERROR) for the client.
            if (session !== undefined) rawOf(session)?.write(Buffer.from([0, 0, 4, 0, 0, 0, 0, 0, 0, 0x6a, 0x75, 0x6e, 0x6b]));
          }, 50);
          return;
        case 'fin-mid-response':
          headAndSome();
          setTimeout(() => {
            if (session !== undefined) rawOf(session)?.end();
          }, 50);
          return;
        default:
          answer();
      }
    });
  });

  const port = await listen(server);
  let closing: Promise<void> | null = null;
  return {
    port,
    accepted: () => accepted,
    open: () => sessions.size,
    seen: (f) => seen.get(f) ?? 0,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        for (const s of raw.values()) s.destroy();
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
      })),
  };
}
