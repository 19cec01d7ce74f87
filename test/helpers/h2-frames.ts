// Hand-built HTTP/2 frames (RFC 9113) over a raw TCP socket, for attack tests: the client
// preface, SETTINGS, HEADERS with a minimal hand-written HPACK encoding (RFC 7541: literal
// fields and indexed references, no Huffman), CONTINUATION, RST_STREAM, PING, WINDOW_UPDATE,
// and a reader that reports what the peer sends back (GOAWAY with its error code, RST_STREAM).
import net from 'node:net';

export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

/** HTTP/2 error codes (RFC 9113 §7) by number, for reports. */
export const ERROR_NAMES: Record<number, string> = {
  0x0: 'NO_ERROR',
  0x1: 'PROTOCOL_ERROR',
  0x2: 'INTERNAL_ERROR',
  0x3: 'FLOW_CONTROL_ERROR',
  0x4: 'SETTINGS_TIMEOUT',
  0x5: 'STREAM_CLOSED',
  0x6: 'FRAME_SIZE_ERROR',
  0x7: 'REFUSED_STREAM',
  0x8: 'CANCEL',
  0x9: 'COMPRESSION_ERROR',
  0xa: 'CONNECT_ERROR',
  0xb: 'ENHANCE_YOUR_CALM',
  0xc: 'INADEQUATE_SECURITY',
  0xd: 'HTTP_1_1_REQUIRED',
};

export function errorName(code: number): string {
  return ERROR_NAMES[code] ?? `0x${code.toString(16)}`;
}

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** One frame: 9-byte header and payload. */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(9 + payload.length);
  b.writeUIntBE(payload.length, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(streamId & 0x7fffffff, 5);
  payload.copy(b, 9);
  return b;
}

/** SETTINGS with the given [id, value] pairs (none: an empty SETTINGS). */
export function settings(pairs: ReadonlyArray<readonly [number, number]> = []): Buffer {
  const p = Buffer.alloc(6 * pairs.length);
  pairs.forEach(([id, value], i) => {
    p.writeUInt16BE(id, 6 * i);
    p.writeUInt32BE(value, 6 * i + 2);
  });
  return frame(FrameType.SETTINGS, 0, 0, p);
}

export function settingsAck(): Buffer {
  return frame(FrameType.SETTINGS, Flag.ACK, 0);
}

export function ping(data: Buffer = Buffer.alloc(8), isAck = false): Buffer {
  return frame(FrameType.PING, isAck ? Flag.ACK : 0, 0, data.subarray(0, 8));
}

export function rstStream(streamId: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code, 0);
  return frame(FrameType.RST_STREAM, 0, streamId, p);
}

export function windowUpdate(streamId: number, increment: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(increment & 0x7fffffff, 0);
  return frame(FrameType.WINDOW_UPDATE, 0, streamId, p);
}

export function headers(streamId: number, block: Buffer, flags: number): Buffer {
  return frame(FrameType.HEADERS, flags, streamId, block);
}

export function continuation(streamId: number, block: Buffer, flags: number): Buffer {
  return frame(FrameType.CONTINUATION, flags, streamId, block);
}

// ---------------------------------------------------------------------------------------
// HPACK (RFC 7541), the few representations the tests need.

/** An integer with an N-bit prefix (§5.1); `first` holds the pattern bits above the prefix. */
export function hpackInt(value: number, prefixBits: number, first = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** A string literal without Huffman coding (§5.2). */
export function hpackString(s: string): Buffer {
  const b = Buffer.from(s, 'latin1');
  return Buffer.concat([hpackInt(b.length, 7, 0x00), b]);
}

/** Literal header field without indexing, new name (§6.2.2). */
export function literal(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x00]), hpackString(name), hpackString(value)]);
}

/** Literal header field with incremental indexing, new name (§6.2.1): adds a dynamic-table entry. */
export function literalIndexed(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]);
}

/** Indexed header field (§6.1): index 1..61 static, 62.. dynamic (62 = newest entry). */
export function indexed(index: number): Buffer {
  return hpackInt(index, 7, 0x80);
}

/** A GET request's header block, every field a literal without indexing. */
export function requestBlock(authority: string, path: string, extra: ReadonlyArray<readonly [string, string]> = []): Buffer {
  return Buffer.concat([
    literal(':method', 'GET'),
    literal(':scheme', 'http'),
    literal(':authority', authority),
    literal(':path', path),
    ...extra.map(([n, v]) => literal(n, v)),
  ]);
}

// ---------------------------------------------------------------------------------------
// A raw connection with a frame reader.

export interface GoAway {
  lastStreamId: number;
  code: number;
  debug: string;
  /** ms since the connection was opened. */
  atMs: number;
}

export interface RawH2 {
  socket: net.Socket;
  /** First GOAWAY received, or null. */
  goaway: GoAway | null;
  /** Codes of every GOAWAY received (first 16). */
  goawayCodes: number[];
  /** RST_STREAM frames received (bounded count plus the codes seen). */
  rstCount: number;
  rstCodes: Set<number>;
  /** Counts of every frame type received. */
  frameCounts: Map<number, number>;
  /** The socket closed (either side); ms since open, or -1. */
  closedAtMs: number;
  /** Resolves when the socket closes. */
  closed: Promise<void>;
  /** Writes; resolves when the bytes are flushed to the kernel (or the socket died). */
  write(b: Buffer): Promise<boolean>;
  /** The socket is still writable. */
  isOpen(): boolean;
  destroy(): void;
}

/**
 * Connects to 127.0.0.1:port, sends the preface and an empty SETTINGS, and parses every frame
 * that comes back. SETTINGS from the peer are ACKed when `ackSettings` (default true).
 */
export function connectRaw(port: number, opts: { ackSettings?: boolean } = {}): Promise<RawH2> {
  const ackSettings = opts.ackSettings ?? true;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const t0 = performance.now();
    let buf: Buffer = Buffer.alloc(0);
    let resolveClosed: () => void = () => {};
    const conn: RawH2 = {
      socket,
      goaway: null,
      goawayCodes: [],
      rstCount: 0,
      rstCodes: new Set(),
      frameCounts: new Map(),
      closedAtMs: -1,
      closed: new Promise<void>((r) => {
        resolveClosed = r;
      }),
      write(b: Buffer): Promise<boolean> {
        return new Promise((res) => {
          if (socket.destroyed || !socket.writable) {
            res(false);
            return;
          }
          socket.write(b, (err) => res(err == null));
        });
      },
      isOpen: () => !socket.destroyed && socket.writable,
      destroy: () => socket.destroy(),
    };
    socket.setNoDelay(true);
    socket.on('error', () => {});
    socket.on('close', () => {
      conn.closedAtMs = performance.now() - t0;
      resolveClosed();
    });
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3];
        const flags = buf[4];
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        conn.frameCounts.set(type, (conn.frameCounts.get(type) ?? 0) + 1);
        if (type === FrameType.GOAWAY && payload.length >= 8 && conn.goawayCodes.length < 16) conn.goawayCodes.push(payload.readUInt32BE(4));
        if (type === FrameType.GOAWAY && conn.goaway === null && payload.length >= 8) {
          conn.goaway = {
            lastStreamId: payload.readUInt32BE(0) & 0x7fffffff,
            code: payload.readUInt32BE(4),
            debug: payload.subarray(8).toString('latin1'),
            atMs: performance.now() - t0,
          };
        } else if (type === FrameType.RST_STREAM && payload.length >= 4) {
          conn.rstCount++;
          conn.rstCodes.add(payload.readUInt32BE(0));
        } else if (type === FrameType.SETTINGS && (flags & Flag.ACK) === 0 && ackSettings && !socket.destroyed) {
          socket.write(settingsAck());
        }
      }
    });
    socket.once('connect', () => {
      socket.write(Buffer.concat([PREFACE, settings()]));
      resolve(conn);
    });
    socket.once('error', reject);
  });
}
