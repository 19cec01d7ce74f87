/**
 * HTTP/3 framing (RFC 9114 §7): frame types, settings identifiers, error codes, the H3Error
 * value, frame writers and the incremental FrameReader every HTTP/3 stream reader sits on.
 *
 * FrameReader contract, in short: feed it chunks split anywhere (inside varints included) and
 * pull events. DATA payloads are never buffered: each DATA frame yields a DataStart event and
 * then Data events with views of the chunk as bytes arrive (streaming bodies, backpressure
 * stays with the transport). Other known frames (HEADERS, SETTINGS, GOAWAY, ...) are
 * accumulated up to a limit and handed out whole. Unknown and reserved-for-greasing frame
 * types are announced (UnknownFrame) and their payload skipped without buffering (RFC 9114
 * §9). HTTP/2 frame types that HTTP/3 reserved (0x2, 0x6, 0x8, 0x9) are H3_FRAME_UNEXPECTED
 * on any stream (§7.2.8).
 *
 * Limits, and why these codes:
 *  - HEADERS / PUSH_PROMISE / SETTINGS longer than `maxFramePayload` are refused as soon as
 *    the length is read, before any byte is buffered, with H3_EXCESSIVE_LOAD: the frame is
 *    well-formed, we just will not commit that much memory (§10.5). H3_FRAME_ERROR is kept
 *    for layout violations.
 *  - CANCEL_PUSH / GOAWAY / MAX_PUSH_ID carry exactly one varint, so a length of 0 or above 8
 *    is a layout violation: H3_FRAME_ERROR (§7.1), also before buffering.
 *  - A frame length above 2^53-1 cannot be tracked exactly with numbers: H3_EXCESSIVE_LOAD
 *    (no real stream carries 8 PiB in one frame).
 *  - A stream ending inside a frame is H3_FRAME_ERROR (§7.1).
 *
 * Errors are values (H3Error), never thrown: a hostile peer must not make the hot path unwind.
 */

import { VARINT_TOO_LARGE, readVarint, varintLength, writeVarint } from './varint.js';

// ---------------------------------------------------------------------------------------------
// Frame types (RFC 9114 §7.2, §11.2.1)

export const FRAME_DATA = 0x00;
export const FRAME_HEADERS = 0x01;
export const FRAME_CANCEL_PUSH = 0x03;
export const FRAME_SETTINGS = 0x04;
export const FRAME_PUSH_PROMISE = 0x05;
export const FRAME_GOAWAY = 0x07;
export const FRAME_MAX_PUSH_ID = 0x0d;

/** HTTP/2 frame types with no HTTP/3 meaning: receiving one is H3_FRAME_UNEXPECTED. */
export function isReservedH2FrameType(type: number): boolean {
  return type === 0x02 || type === 0x06 || type === 0x08 || type === 0x09;
}

/**
 * `0x1f * N + 0x21` (frame types, setting ids, stream types and error codes share the
 * pattern): reserved to exercise "ignore unknown" (RFC 9114 §7.2.8, §7.2.4.1, §6.2.3, §8.1).
 * Exact for values up to 2^53-1.
 */
export function isGreaseValue(value: number): boolean {
  return value >= 0x21 && (value - 0x21) % 0x1f === 0;
}

/** Frame types the FrameReader reports (everything else is skipped or refused). */
export function isKnownFrameType(type: number): boolean {
  return (
    type === FRAME_DATA ||
    type === FRAME_HEADERS ||
    type === FRAME_CANCEL_PUSH ||
    type === FRAME_SETTINGS ||
    type === FRAME_PUSH_PROMISE ||
    type === FRAME_GOAWAY ||
    type === FRAME_MAX_PUSH_ID
  );
}

// ---------------------------------------------------------------------------------------------
// Settings identifiers (RFC 9114 §7.2.4.1, RFC 9204 §5, RFC 9220, RFC 9297)

export const SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0x01;
export const SETTINGS_MAX_FIELD_SECTION_SIZE = 0x06;
export const SETTINGS_QPACK_BLOCKED_STREAMS = 0x07;
export const SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x08;
export const SETTINGS_H3_DATAGRAM = 0x33;

/** HTTP/2 settings with no HTTP/3 counterpart: receiving one is H3_SETTINGS_ERROR. */
export function isReservedH2Setting(id: number): boolean {
  return id >= 0x02 && id <= 0x05;
}

// ---------------------------------------------------------------------------------------------
// Error codes (RFC 9114 §8.1, RFC 9204 §6)

export const H3_NO_ERROR = 0x100;
export const H3_GENERAL_PROTOCOL_ERROR = 0x101;
export const H3_INTERNAL_ERROR = 0x102;
export const H3_STREAM_CREATION_ERROR = 0x103;
export const H3_CLOSED_CRITICAL_STREAM = 0x104;
export const H3_FRAME_UNEXPECTED = 0x105;
export const H3_FRAME_ERROR = 0x106;
export const H3_EXCESSIVE_LOAD = 0x107;
export const H3_ID_ERROR = 0x108;
export const H3_SETTINGS_ERROR = 0x109;
export const H3_MISSING_SETTINGS = 0x10a;
export const H3_REQUEST_REJECTED = 0x10b;
export const H3_REQUEST_CANCELLED = 0x10c;
export const H3_REQUEST_INCOMPLETE = 0x10d;
export const H3_MESSAGE_ERROR = 0x10e;
export const H3_CONNECT_ERROR = 0x10f;
export const H3_VERSION_FALLBACK = 0x110;
export const QPACK_DECOMPRESSION_FAILED = 0x200;
export const QPACK_ENCODER_STREAM_ERROR = 0x201;
export const QPACK_DECODER_STREAM_ERROR = 0x202;

const ERROR_NAMES: ReadonlyMap<number, string> = new Map([
  [H3_NO_ERROR, 'H3_NO_ERROR'],
  [H3_GENERAL_PROTOCOL_ERROR, 'H3_GENERAL_PROTOCOL_ERROR'],
  [H3_INTERNAL_ERROR, 'H3_INTERNAL_ERROR'],
  [H3_STREAM_CREATION_ERROR, 'H3_STREAM_CREATION_ERROR'],
  [H3_CLOSED_CRITICAL_STREAM, 'H3_CLOSED_CRITICAL_STREAM'],
  [H3_FRAME_UNEXPECTED, 'H3_FRAME_UNEXPECTED'],
  [H3_FRAME_ERROR, 'H3_FRAME_ERROR'],
  [H3_EXCESSIVE_LOAD, 'H3_EXCESSIVE_LOAD'],
  [H3_ID_ERROR, 'H3_ID_ERROR'],
  [H3_SETTINGS_ERROR, 'H3_SETTINGS_ERROR'],
  [H3_MISSING_SETTINGS, 'H3_MISSING_SETTINGS'],
  [H3_REQUEST_REJECTED, 'H3_REQUEST_REJECTED'],
  [H3_REQUEST_CANCELLED, 'H3_REQUEST_CANCELLED'],
  [H3_REQUEST_INCOMPLETE, 'H3_REQUEST_INCOMPLETE'],
  [H3_MESSAGE_ERROR, 'H3_MESSAGE_ERROR'],
  [H3_CONNECT_ERROR, 'H3_CONNECT_ERROR'],
  [H3_VERSION_FALLBACK, 'H3_VERSION_FALLBACK'],
  [QPACK_DECOMPRESSION_FAILED, 'QPACK_DECOMPRESSION_FAILED'],
  [QPACK_ENCODER_STREAM_ERROR, 'QPACK_ENCODER_STREAM_ERROR'],
  [QPACK_DECODER_STREAM_ERROR, 'QPACK_DECODER_STREAM_ERROR'],
]);

/** Symbolic name of an HTTP/3 or QPACK error code ("0x1f21" style for unknown ones). */
export function h3ErrorName(code: number): string {
  return ERROR_NAMES.get(code) ?? `0x${code.toString(16)}`;
}

/**
 * An HTTP/3 protocol error: the RFC code to put on the wire, a message for logs, and whether it
 * closes the whole connection (CONNECTION_CLOSE) or only the stream (RESET_STREAM /
 * STOP_SENDING). Deliberately not an `Error` subclass: these are returned, not thrown, and a
 * peer that can make us build stack traces at will has a cheap CPU lever (see DESIGN.md on
 * SkiffError's cost). `isHeadersTooLarge` marks a field section over the local size limit, which
 * a server may answer with 431 before resetting the stream.
 */
export class H3Error {
  readonly code: number;
  readonly message: string;
  readonly isConnectionError: boolean;
  readonly isHeadersTooLarge: boolean;
  constructor(code: number, message: string, isConnectionError: boolean = true, isHeadersTooLarge: boolean = false) {
    this.code = code;
    this.message = message;
    this.isConnectionError = isConnectionError;
    this.isHeadersTooLarge = isHeadersTooLarge;
  }
  get name(): string {
    return h3ErrorName(this.code);
  }
  toString(): string {
    return `${h3ErrorName(this.code)}: ${this.message}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Writers

/** Bytes of a frame header (type + length) for `type` and a payload of `payloadLength`. */
export function frameHeaderLength(type: number, payloadLength: number): number {
  return varintLength(type) + varintLength(payloadLength);
}

/** Writes a frame header at `buf[offset]`; returns the offset after it. */
export function writeFrameHeader(buf: Uint8Array, offset: number, type: number, payloadLength: number): number {
  return writeVarint(buf, writeVarint(buf, offset, type), payloadLength);
}

/**
 * The DATA frame header for a payload of `payloadLength` bytes, as its own small buffer: the
 * caller writes it followed by the payload it already holds (no copy of the body).
 */
export function createDataHeader(payloadLength: number): Buffer {
  const out = Buffer.allocUnsafe(1 + varintLength(payloadLength));
  writeFrameHeader(out, 0, FRAME_DATA, payloadLength);
  return out;
}

/** Writes a DATA frame header into `buf` (e.g. a reusable scratch); returns the new offset. */
export function writeDataHeader(buf: Uint8Array, offset: number, payloadLength: number): number {
  return writeFrameHeader(buf, offset, FRAME_DATA, payloadLength);
}

/** A whole HEADERS frame around an encoded field section (one allocation, one copy). */
export function createHeadersFrame(fieldSection: Uint8Array): Buffer {
  const headerLength = 1 + varintLength(fieldSection.length);
  const out = Buffer.allocUnsafe(headerLength + fieldSection.length);
  writeFrameHeader(out, 0, FRAME_HEADERS, fieldSection.length);
  out.set(fieldSection, headerLength);
  return out;
}

/**
 * Writes a HEADERS frame header just before a field section that was encoded at
 * `buf[sectionStart, sectionEnd)` leaving room in front (at least 9 bytes). Returns the offset
 * where the frame starts: the frame is `buf[start, sectionEnd)`, no copy.
 */
export function prependHeadersFrameHeader(buf: Uint8Array, sectionStart: number, sectionEnd: number): number {
  const length = sectionEnd - sectionStart;
  const start = sectionStart - 1 - varintLength(length);
  if (start < 0) throw new RangeError('no room for the HEADERS frame header');
  writeFrameHeader(buf, start, FRAME_HEADERS, length);
  return start;
}

/** One setting to write: identifier and value. */
export class SettingEntry {
  readonly id: number;
  readonly value: number;
  constructor(id: number, value: number) {
    this.id = id;
    this.value = value;
  }
}

/** A whole SETTINGS frame with `entries` in order (cold path: once per connection). */
export function createSettingsFrame(entries: readonly SettingEntry[]): Buffer {
  let payload = 0;
  for (const e of entries) payload += varintLength(e.id) + varintLength(e.value);
  const out = Buffer.allocUnsafe(frameHeaderLength(FRAME_SETTINGS, payload) + payload);
  let o = writeFrameHeader(out, 0, FRAME_SETTINGS, payload);
  for (const e of entries) {
    o = writeVarint(out, o, e.id);
    o = writeVarint(out, o, e.value);
  }
  return out;
}

function createSingleVarintFrame(type: number, value: number): Buffer {
  const length = varintLength(value);
  const out = Buffer.allocUnsafe(frameHeaderLength(type, length) + length);
  writeVarint(out, writeFrameHeader(out, 0, type, length), value);
  return out;
}

/** A GOAWAY frame carrying a stream ID (server) or push ID (client). */
export function createGoawayFrame(id: number): Buffer {
  return createSingleVarintFrame(FRAME_GOAWAY, id);
}

/** A MAX_PUSH_ID frame. */
export function createMaxPushIdFrame(pushId: number): Buffer {
  return createSingleVarintFrame(FRAME_MAX_PUSH_ID, pushId);
}

/** A CANCEL_PUSH frame. */
export function createCancelPushFrame(pushId: number): Buffer {
  return createSingleVarintFrame(FRAME_CANCEL_PUSH, pushId);
}

/** The unidirectional stream header (RFC 9114 §6.2): the stream type as a varint. */
export function createStreamTypeHeader(streamType: number): Buffer {
  const out = Buffer.allocUnsafe(varintLength(streamType));
  writeVarint(out, 0, streamType);
  return out;
}

// ---------------------------------------------------------------------------------------------
// FrameReader

/** What `FrameReader.next()` produced. */
export const enum FrameEvent {
  /** The fed chunk is used up; feed the next one. */
  NeedMore = 0,
  /** A whole non-DATA frame: `type`, `payload` (valid until the next `feed`/`next`). */
  Frame = 1,
  /** A DATA frame header: `length` is its payload size (may be 0); Data events follow. */
  DataStart = 2,
  /** A slice of the current DATA frame's payload in `payload` (a view of the fed chunk). */
  Data = 3,
  /** A protocol error in `error`; the reader stays failed. */
  Error = 4,
  /**
   * The header of an unknown (or grease) frame: `type`, `length`. Its payload is skipped
   * without buffering. Most callers just continue; the control stream needs to see it to
   * enforce "SETTINGS first" (RFC 9114 §6.2.1).
   */
  UnknownFrame = 5,
}

const enum ReaderState {
  Type = 0,
  Length = 1,
  Payload = 2,
  Data = 3,
  Skip = 4,
  Failed = 5,
}

const EMPTY = new Uint8Array(0);
/** Internal: `startPayload` changed state and has nothing to report yet. */
const CONTINUE = -1;

/** Default cap on a buffered (non-DATA) frame payload: 64 KiB. */
export const DEFAULT_MAX_FRAME_PAYLOAD = 64 * 1024;

/**
 * Incremental HTTP/3 frame reader for one stream. Not re-entrant; one per stream.
 *
 * Usage: `reader.feed(chunk)`, then call `reader.next()` until it returns NeedMore (or Error).
 * The reader keeps a reference to the chunk until then; `payload` views alias either the chunk
 * or the reader's reassembly buffer and are valid only until the following `next()` / `feed()`.
 * At the end of the stream call `finish()`.
 *
 * Allocation: none per frame on the fast path beyond the `subarray` views handed out (a DATA
 * slice that is the whole chunk is the chunk itself). A non-DATA frame split across chunks is
 * reassembled into one buffer that is reused for later frames.
 */
export class FrameReader {
  /** Type of the current frame. */
  type: number;
  /** Payload length of the current frame. */
  length: number;
  /** See FrameEvent.Frame / FrameEvent.Data. */
  payload: Uint8Array;
  /** Set once the reader failed. */
  error: H3Error | null;
  /** Cap for buffered (non-DATA) payloads. */
  readonly maxFramePayload: number;
  private state: ReaderState;
  private chunk: Uint8Array;
  private pos: number;
  /** Bytes of the current varint still to read (header fields split across chunks). */
  private varRemaining: number;
  private varValue: number;
  /** Payload bytes of the current frame not yet consumed. */
  private remaining: number;
  private reassembly: Uint8Array;
  private reassembled: number;

  constructor(maxFramePayload: number = DEFAULT_MAX_FRAME_PAYLOAD) {
    this.type = 0;
    this.length = 0;
    this.payload = EMPTY;
    this.error = null;
    this.maxFramePayload = maxFramePayload;
    this.state = ReaderState.Type;
    this.chunk = EMPTY;
    this.pos = 0;
    this.varRemaining = 0;
    this.varValue = 0;
    this.remaining = 0;
    this.reassembly = EMPTY;
    this.reassembled = 0;
  }

  /** Hands the reader the next chunk of stream bytes. The previous one must be used up. */
  feed(chunk: Uint8Array): void {
    this.chunk = chunk;
    this.pos = 0;
  }

  /** True between frames (a clean place for the stream to end). */
  get isAtFrameBoundary(): boolean {
    return this.state === ReaderState.Type && this.varRemaining === 0;
  }

  /** Bytes of the fed chunk not consumed yet. */
  get unreadBytes(): number {
    return this.chunk.length - this.pos;
  }

  /**
   * The stream ended cleanly (FIN). Returns null at a frame boundary, else H3_FRAME_ERROR
   * (truncated frame, RFC 9114 §7.1). A failed reader returns its error.
   */
  finish(): H3Error | null {
    if (this.state === ReaderState.Failed) return this.error;
    if (this.isAtFrameBoundary) return null;
    return this.fail(H3_FRAME_ERROR, 'stream ended inside a frame');
  }

  /** Advances; see FrameEvent. */
  next(): FrameEvent {
    const chunk = this.chunk;
    for (;;) {
      switch (this.state) {
        case ReaderState.Type: {
          if (!this.readVarintField()) return FrameEvent.NeedMore;
          // An unsafe type (VARINT_TOO_LARGE) is some unknown extension: keep it as a number
          // no known type equals, and skip it.
          this.type = this.varValue;
          this.state = ReaderState.Length;
          break;
        }
        case ReaderState.Length: {
          if (!this.readVarintField()) return FrameEvent.NeedMore;
          const length = this.varValue;
          if (length < 0) return this.failEvent(H3_EXCESSIVE_LOAD, 'frame length above 2^53-1');
          this.length = length;
          this.remaining = length;
          const ev = this.startPayload();
          if (ev !== CONTINUE) return ev;
          break;
        }
        case ReaderState.Data: {
          const available = chunk.length - this.pos;
          if (available === 0) return FrameEvent.NeedMore;
          const n = available < this.remaining ? available : this.remaining;
          const start = this.pos;
          this.pos += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = ReaderState.Type;
          this.payload = start === 0 && n === chunk.length ? chunk : chunk.subarray(start, start + n);
          return FrameEvent.Data;
        }
        case ReaderState.Payload: {
          const available = chunk.length - this.pos;
          if (available === 0) return FrameEvent.NeedMore;
          const n = available < this.remaining ? available : this.remaining;
          this.reassembly.set(chunk.subarray(this.pos, this.pos + n), this.reassembled);
          this.reassembled += n;
          this.pos += n;
          this.remaining -= n;
          if (this.remaining > 0) return FrameEvent.NeedMore;
          this.state = ReaderState.Type;
          this.payload = this.reassembly.subarray(0, this.reassembled);
          return FrameEvent.Frame;
        }
        case ReaderState.Skip: {
          const available = chunk.length - this.pos;
          if (available === 0) return FrameEvent.NeedMore;
          const n = available < this.remaining ? available : this.remaining;
          this.pos += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = ReaderState.Type;
          break;
        }
        default:
          return FrameEvent.Error;
      }
    }
  }

  /**
   * Decides what to do with the payload once type and length are known: returns the event to
   * report, or CONTINUE when the state changed and `next()` should keep going.
   */
  private startPayload(): FrameEvent | typeof CONTINUE {
    const type = this.type;
    const length = this.length;
    if (type === FRAME_DATA) {
      this.state = length === 0 ? ReaderState.Type : ReaderState.Data;
      this.payload = EMPTY;
      return FrameEvent.DataStart;
    }
    if (!isKnownFrameType(type)) {
      if (isReservedH2FrameType(type)) {
        return this.failEvent(H3_FRAME_UNEXPECTED, `HTTP/2 frame type 0x${type.toString(16)} is reserved in HTTP/3`);
      }
      this.state = length === 0 ? ReaderState.Type : ReaderState.Skip;
      this.payload = EMPTY;
      return FrameEvent.UnknownFrame;
    }
    if (type === FRAME_GOAWAY || type === FRAME_MAX_PUSH_ID || type === FRAME_CANCEL_PUSH) {
      if (length === 0 || length > 8) {
        return this.failEvent(H3_FRAME_ERROR, `frame 0x${type.toString(16)} must carry exactly one varint, length ${length}`);
      }
    } else if (length > this.maxFramePayload) {
      return this.failEvent(
        H3_EXCESSIVE_LOAD,
        `frame 0x${type.toString(16)} of ${length} bytes exceeds the ${this.maxFramePayload}-byte limit`,
      );
    }
    const available = this.chunk.length - this.pos;
    if (available >= length) {
      // Whole payload in this chunk: hand out a view, no copy.
      const start = this.pos;
      this.pos += length;
      this.remaining = 0;
      this.state = ReaderState.Type;
      this.payload = this.chunk.subarray(start, start + length);
      return FrameEvent.Frame;
    }
    if (this.reassembly.length < length) this.reassembly = new Uint8Array(Math.max(length, 256));
    this.reassembled = 0;
    this.state = ReaderState.Payload;
    return CONTINUE;
  }

  /**
   * Reads a frame-header varint into `varValue`, across chunks if needed. Returns false when
   * the chunk ran out first. A value above 2^53-1 is reported as VARINT_TOO_LARGE (negative).
   */
  private readVarintField(): boolean {
    const chunk = this.chunk;
    let pos = this.pos;
    if (this.varRemaining === 0) {
      if (pos >= chunk.length) return false;
      const len = 1 << (chunk[pos] >>> 6);
      if (pos + len <= chunk.length) {
        // Fast path: the whole varint is here.
        this.varValue = readVarint(chunk, pos, chunk.length); // a value, or VARINT_TOO_LARGE
        this.pos = pos + len;
        return true;
      }
      this.varRemaining = len - 1;
      this.varValue = chunk[pos] & 0x3f;
      pos++;
    }
    while (this.varRemaining > 0) {
      if (pos >= chunk.length) {
        this.pos = pos;
        return false;
      }
      // Float arithmetic: exact below 2^53; beyond that only "too large" matters.
      this.varValue = this.varValue * 256 + chunk[pos++];
      this.varRemaining--;
    }
    this.pos = pos;
    if (this.varValue > Number.MAX_SAFE_INTEGER) this.varValue = VARINT_TOO_LARGE;
    return true;
  }

  private fail(code: number, message: string): H3Error {
    const err = new H3Error(code, message);
    this.error = err;
    this.state = ReaderState.Failed;
    this.payload = EMPTY;
    return err;
  }

  private failEvent(code: number, message: string): FrameEvent {
    this.fail(code, message);
    return FrameEvent.Error;
  }
}
