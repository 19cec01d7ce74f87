/**
 * HTTP/3 connection-level stream handling: the unidirectional stream header (RFC 9114 §6.2),
 * the one-per-peer bookkeeping for critical streams, SETTINGS parsing and writing (§7.2.4) and
 * the control stream reader (§6.2.1).
 *
 * Skiff implements no server push. So, on the control stream: CANCEL_PUSH is always
 * H3_ID_ERROR (a server never promised that push ID; a client never allowed any, having sent
 * no MAX_PUSH_ID, §7.2.3), and MAX_PUSH_ID is accepted by a server (checked for decrease) and
 * H3_FRAME_UNEXPECTED at a client (§7.2.7).
 *
 * Every error is returned as an H3Error connection error, except unknown stream types, which
 * RFC 9114 §6.2 says are never a connection error: they are reported as a kind, and the caller
 * aborts reading (STOP_SENDING) with H3_STREAM_CREATION_ERROR.
 */

import {
  FRAME_CANCEL_PUSH,
  FRAME_GOAWAY,
  FRAME_MAX_PUSH_ID,
  FRAME_SETTINGS,
  FrameEvent,
  FrameReader,
  H3Error,
  H3_CLOSED_CRITICAL_STREAM,
  H3_FRAME_ERROR,
  H3_FRAME_UNEXPECTED,
  H3_ID_ERROR,
  H3_MISSING_SETTINGS,
  H3_SETTINGS_ERROR,
  H3_STREAM_CREATION_ERROR,
  SETTINGS_ENABLE_CONNECT_PROTOCOL,
  SETTINGS_H3_DATAGRAM,
  SETTINGS_MAX_FIELD_SECTION_SIZE,
  SETTINGS_QPACK_BLOCKED_STREAMS,
  SETTINGS_QPACK_MAX_TABLE_CAPACITY,
  SettingEntry,
  createSettingsFrame,
  isReservedH2Setting,
} from './frames.js';
import { VARINT_NEED_MORE, VARINT_TOO_LARGE, readVarint, varintLengthOfFirstByte } from './varint.js';

// ---------------------------------------------------------------------------------------------
// Unidirectional stream types (RFC 9114 §6.2, RFC 9204 §4.2)

export const STREAM_TYPE_CONTROL = 0x00;
export const STREAM_TYPE_PUSH = 0x01;
export const STREAM_TYPE_QPACK_ENCODER = 0x02;
export const STREAM_TYPE_QPACK_DECODER = 0x03;

export const enum UniStreamKind {
  /** The header is not complete yet; feed more. */
  Pending = 0,
  Control = 1,
  /** Push stream; `pushId` is set. */
  Push = 2,
  QpackEncoder = 3,
  QpackDecoder = 4,
  /**
   * A type we do not know (grease included). Not a connection error: abort reading with
   * H3_STREAM_CREATION_ERROR (or discard). `streamType` says which ("unknown type N").
   */
  Unknown = 5,
  /** A connection error in `error` (e.g. a client-initiated push stream). */
  Error = 6,
}

/**
 * Reads the stream type (and, for push streams, the push ID) at the start of a peer-initiated
 * unidirectional stream, across chunks. After a final kind, `offset` is where the stream's own
 * data starts in the last chunk fed.
 */
export class UniStreamHeaderReader {
  kind: UniStreamKind;
  /** The stream type; VARINT_TOO_LARGE (-2) for one above 2^53-1 (then kind is Unknown). */
  streamType: number;
  pushId: number;
  offset: number;
  error: H3Error | null;
  /** True when we are the server (push streams are then refused). */
  readonly isServer: boolean;
  private varRemaining: number;
  private varValue: number;
  private isReadingPushId: boolean;

  constructor(isServer: boolean) {
    this.kind = UniStreamKind.Pending;
    this.streamType = -1;
    this.pushId = -1;
    this.offset = 0;
    this.error = null;
    this.isServer = isServer;
    this.varRemaining = 0;
    this.varValue = 0;
    this.isReadingPushId = false;
  }

  /** Feeds the next chunk; returns the kind (Pending while the header is incomplete). */
  feed(chunk: Uint8Array): UniStreamKind {
    if (this.kind !== UniStreamKind.Pending) return this.kind;
    let pos = 0;
    for (;;) {
      // Accumulate one varint, byte by byte (headers are 1-16 bytes; not a hot loop).
      if (this.varRemaining === 0) {
        if (pos >= chunk.length) {
          this.offset = pos;
          return UniStreamKind.Pending;
        }
        this.varRemaining = varintLengthOfFirstByte(chunk[pos]) - 1;
        this.varValue = chunk[pos++] & 0x3f;
      }
      while (this.varRemaining > 0 && pos < chunk.length) {
        this.varValue = this.varValue * 256 + chunk[pos++];
        this.varRemaining--;
      }
      if (this.varRemaining > 0) {
        this.offset = pos;
        return UniStreamKind.Pending;
      }
      const value = this.varValue > Number.MAX_SAFE_INTEGER ? VARINT_TOO_LARGE : this.varValue;
      this.offset = pos;
      if (this.isReadingPushId) {
        this.pushId = value < 0 ? Number.MAX_SAFE_INTEGER : value;
        this.kind = UniStreamKind.Push;
        return this.kind;
      }
      this.streamType = value;
      switch (value) {
        case STREAM_TYPE_CONTROL:
          this.kind = UniStreamKind.Control;
          return this.kind;
        case STREAM_TYPE_QPACK_ENCODER:
          this.kind = UniStreamKind.QpackEncoder;
          return this.kind;
        case STREAM_TYPE_QPACK_DECODER:
          this.kind = UniStreamKind.QpackDecoder;
          return this.kind;
        case STREAM_TYPE_PUSH:
          if (this.isServer) {
            this.error = new H3Error(H3_STREAM_CREATION_ERROR, 'client-initiated push stream');
            this.kind = UniStreamKind.Error;
            return this.kind;
          }
          this.isReadingPushId = true;
          break;
        default:
          this.kind = UniStreamKind.Unknown;
          return this.kind;
      }
    }
  }

  /** "unknown stream type 0x21" style text for logs and STOP_SENDING reasons. */
  describe(): string {
    if (this.streamType === VARINT_TOO_LARGE) return 'unknown stream type (above 2^53-1)';
    return `unknown stream type 0x${this.streamType.toString(16)}`;
  }
}

/**
 * The peer may open at most one control, one QPACK encoder and one QPACK decoder stream
 * (RFC 9114 §6.2.1, RFC 9204 §4.2); a second one is H3_STREAM_CREATION_ERROR.
 */
export class CriticalStreams {
  hasControl: boolean;
  hasEncoder: boolean;
  hasDecoder: boolean;
  constructor() {
    this.hasControl = false;
    this.hasEncoder = false;
    this.hasDecoder = false;
  }

  /** Records a newly identified stream; returns the error for a duplicate, else null. */
  register(kind: UniStreamKind): H3Error | null {
    switch (kind) {
      case UniStreamKind.Control:
        if (this.hasControl) return new H3Error(H3_STREAM_CREATION_ERROR, 'second control stream');
        this.hasControl = true;
        return null;
      case UniStreamKind.QpackEncoder:
        if (this.hasEncoder) return new H3Error(H3_STREAM_CREATION_ERROR, 'second QPACK encoder stream');
        this.hasEncoder = true;
        return null;
      case UniStreamKind.QpackDecoder:
        if (this.hasDecoder) return new H3Error(H3_STREAM_CREATION_ERROR, 'second QPACK decoder stream');
        this.hasDecoder = true;
        return null;
      default:
        return null;
    }
  }

  /** A critical stream ended or was reset: always a connection error (§6.2.1, RFC 9204 §4.2). */
  static closed(kind: UniStreamKind): H3Error {
    const what =
      kind === UniStreamKind.Control ? 'control' : kind === UniStreamKind.QpackEncoder ? 'QPACK encoder' : 'QPACK decoder';
    return new H3Error(H3_CLOSED_CRITICAL_STREAM, `peer closed its ${what} stream`);
  }
}

// ---------------------------------------------------------------------------------------------
// SETTINGS

/** "Unlimited" for SETTINGS_MAX_FIELD_SECTION_SIZE (its default, RFC 9114 §7.2.4.1). */
export const UNLIMITED = Number.MAX_SAFE_INTEGER;

/** One side's HTTP/3 settings, with the RFC defaults. */
export class H3Settings {
  qpackMaxTableCapacity: number;
  maxFieldSectionSize: number;
  qpackBlockedStreams: number;
  isConnectProtocolEnabled: boolean;
  isDatagramEnabled: boolean;
  constructor() {
    this.qpackMaxTableCapacity = 0;
    this.maxFieldSectionSize = UNLIMITED;
    this.qpackBlockedStreams = 0;
    this.isConnectProtocolEnabled = false;
    this.isDatagramEnabled = false;
  }
}

/**
 * Parses a SETTINGS payload. Unknown identifiers (grease included) are ignored (§7.2.4);
 * identifiers and values above 2^53-1 are respectively ignored as unknown and saturated to
 * 2^53-1. Errors: HTTP/2-only identifiers 0x02-0x05 and duplicate identifiers
 * H3_SETTINGS_ERROR; a boolean setting other than 0/1 H3_SETTINGS_ERROR; a truncated
 * identifier/value pair H3_FRAME_ERROR.
 */
export function parseSettings(payload: Uint8Array): H3Settings | H3Error {
  const settings = new H3Settings();
  const seen = new Set<number>();
  let p = 0;
  const end = payload.length;
  while (p < end) {
    const id = readVarint(payload, p, end);
    if (id === VARINT_NEED_MORE) return new H3Error(H3_FRAME_ERROR, 'SETTINGS payload ends inside an identifier');
    p += varintLengthOfFirstByte(payload[p]);
    let value = readVarint(payload, p, end);
    if (value === VARINT_NEED_MORE) return new H3Error(H3_FRAME_ERROR, 'SETTINGS payload ends inside a value');
    p += varintLengthOfFirstByte(payload[p]);
    if (id === VARINT_TOO_LARGE) continue;
    if (seen.has(id)) return new H3Error(H3_SETTINGS_ERROR, `duplicate setting 0x${id.toString(16)}`);
    seen.add(id);
    if (value === VARINT_TOO_LARGE) value = Number.MAX_SAFE_INTEGER;
    switch (id) {
      case SETTINGS_QPACK_MAX_TABLE_CAPACITY:
        settings.qpackMaxTableCapacity = value;
        break;
      case SETTINGS_MAX_FIELD_SECTION_SIZE:
        settings.maxFieldSectionSize = value;
        break;
      case SETTINGS_QPACK_BLOCKED_STREAMS:
        settings.qpackBlockedStreams = value;
        break;
      case SETTINGS_ENABLE_CONNECT_PROTOCOL:
        if (value > 1) return new H3Error(H3_SETTINGS_ERROR, `SETTINGS_ENABLE_CONNECT_PROTOCOL must be 0 or 1, got ${value}`);
        settings.isConnectProtocolEnabled = value === 1;
        break;
      case SETTINGS_H3_DATAGRAM:
        if (value > 1) return new H3Error(H3_SETTINGS_ERROR, `SETTINGS_H3_DATAGRAM must be 0 or 1, got ${value}`);
        settings.isDatagramEnabled = value === 1;
        break;
      default:
        if (isReservedH2Setting(id)) {
          return new H3Error(H3_SETTINGS_ERROR, `HTTP/2 setting 0x${id.toString(16)} is reserved in HTTP/3`);
        }
    }
  }
  return settings;
}

/**
 * Our SETTINGS frame: every setting that differs from its default, plus one grease setting
 * (0x1f * N + 0x21 with a value of our choosing, RFC 9114 §7.2.4.1 SHOULD) when `greaseId` is
 * given.
 */
export function createSettingsFrameFor(settings: H3Settings, greaseId: number = -1): Buffer {
  const entries: SettingEntry[] = [];
  if (settings.qpackMaxTableCapacity !== 0) {
    entries.push(new SettingEntry(SETTINGS_QPACK_MAX_TABLE_CAPACITY, settings.qpackMaxTableCapacity));
  }
  if (settings.maxFieldSectionSize !== UNLIMITED) {
    entries.push(new SettingEntry(SETTINGS_MAX_FIELD_SECTION_SIZE, settings.maxFieldSectionSize));
  }
  if (settings.qpackBlockedStreams !== 0) {
    entries.push(new SettingEntry(SETTINGS_QPACK_BLOCKED_STREAMS, settings.qpackBlockedStreams));
  }
  if (settings.isConnectProtocolEnabled) entries.push(new SettingEntry(SETTINGS_ENABLE_CONNECT_PROTOCOL, 1));
  if (settings.isDatagramEnabled) entries.push(new SettingEntry(SETTINGS_H3_DATAGRAM, 1));
  if (greaseId >= 0) entries.push(new SettingEntry(greaseId, 0));
  return createSettingsFrame(entries);
}

// ---------------------------------------------------------------------------------------------
// Control stream

/** Callbacks of the control stream reader (methods on one object: no closures per connection). */
export interface ControlStreamHandler {
  /** The peer's SETTINGS (exactly once, first). */
  onSettings(settings: H3Settings): void;
  /**
   * GOAWAY: from a server, the first client-initiated bidirectional stream ID it will not
   * process; from a client, a push ID. Non-increasing across frames (checked). An ID above
   * 2^53-1 (e.g. the 2^62-4 "shut down gracefully" value) arrives as Number.MAX_SAFE_INTEGER.
   */
  onGoaway(id: number): void;
  /** MAX_PUSH_ID (servers only; non-decreasing, checked). */
  onMaxPushId(pushId: number): void;
}

/**
 * Reads the peer's control stream (after its stream type byte). Enforces: SETTINGS first
 * (else H3_MISSING_SETTINGS, unknown frame types included), SETTINGS only once
 * (H3_FRAME_UNEXPECTED), no DATA / HEADERS / PUSH_PROMISE (H3_FRAME_UNEXPECTED), GOAWAY IDs
 * well-formed and non-increasing (H3_FRAME_ERROR / H3_ID_ERROR), and that the stream never ends
 * (H3_CLOSED_CRITICAL_STREAM).
 */
export class ControlStreamReader {
  /** True when we are the server (the peer is a client). */
  readonly isServer: boolean;
  /** The peer's settings once received. */
  settings: H3Settings | null;
  /** Last GOAWAY ID received, -1 before any. */
  goawayId: number;
  /** Last MAX_PUSH_ID received, -1 before any. */
  maxPushId: number;
  error: H3Error | null;
  private readonly handler: ControlStreamHandler;
  private readonly reader: FrameReader;

  constructor(handler: ControlStreamHandler, isServer: boolean, maxFramePayload?: number) {
    this.isServer = isServer;
    this.settings = null;
    this.goawayId = -1;
    this.maxPushId = -1;
    this.error = null;
    this.handler = handler;
    this.reader = new FrameReader(maxFramePayload);
  }

  /** Consumes control stream bytes; returns null or the connection error. */
  push(chunk: Uint8Array): H3Error | null {
    if (this.error !== null) return this.error;
    const reader = this.reader;
    reader.feed(chunk);
    for (;;) {
      const ev = reader.next();
      if (ev === FrameEvent.NeedMore) return null;
      if (ev === FrameEvent.Error) return this.fail(reader.error);
      if (this.settings === null && (ev !== FrameEvent.Frame || reader.type !== FRAME_SETTINGS)) {
        return this.fail(new H3Error(H3_MISSING_SETTINGS, 'first frame on the control stream is not SETTINGS'));
      }
      if (ev === FrameEvent.UnknownFrame) continue;
      if (ev !== FrameEvent.Frame) {
        return this.fail(new H3Error(H3_FRAME_UNEXPECTED, 'DATA frame on the control stream'));
      }
      const err = this.onFrame(reader.type, reader.payload);
      if (err !== null) return this.fail(err);
    }
  }

  /** The control stream ended (FIN or reset): always H3_CLOSED_CRITICAL_STREAM. */
  end(): H3Error {
    return this.fail(new H3Error(H3_CLOSED_CRITICAL_STREAM, 'peer closed its control stream'));
  }

  private onFrame(type: number, payload: Uint8Array): H3Error | null {
    switch (type) {
      case FRAME_SETTINGS: {
        if (this.settings !== null) return new H3Error(H3_FRAME_UNEXPECTED, 'second SETTINGS frame');
        const parsed = parseSettings(payload);
        if (parsed instanceof H3Error) return parsed;
        this.settings = parsed;
        this.handler.onSettings(parsed);
        return null;
      }
      case FRAME_GOAWAY: {
        const id = readSingleVarint(payload);
        if (id === VARINT_NEED_MORE) return new H3Error(H3_FRAME_ERROR, 'malformed GOAWAY frame');
        // The graceful-shutdown maximum (2^62-4 / 2^62-1) does not fit a number: saturate.
        const safeId = id === VARINT_TOO_LARGE ? Number.MAX_SAFE_INTEGER : id;
        if (!this.isServer && safeId !== Number.MAX_SAFE_INTEGER && safeId % 4 !== 0) {
          return new H3Error(H3_ID_ERROR, `GOAWAY stream ID ${safeId} is not a client-initiated bidirectional stream`);
        }
        if (this.goawayId >= 0 && safeId > this.goawayId) {
          return new H3Error(H3_ID_ERROR, `GOAWAY ID increased from ${this.goawayId} to ${safeId}`);
        }
        this.goawayId = safeId;
        this.handler.onGoaway(safeId);
        return null;
      }
      case FRAME_MAX_PUSH_ID: {
        if (!this.isServer) return new H3Error(H3_FRAME_UNEXPECTED, 'MAX_PUSH_ID received from a server');
        const id = readSingleVarint(payload);
        if (id === VARINT_NEED_MORE) return new H3Error(H3_FRAME_ERROR, 'malformed MAX_PUSH_ID frame');
        const safeId = id === VARINT_TOO_LARGE ? Number.MAX_SAFE_INTEGER : id;
        if (safeId < this.maxPushId) {
          return new H3Error(H3_ID_ERROR, `MAX_PUSH_ID decreased from ${this.maxPushId} to ${safeId}`);
        }
        this.maxPushId = safeId;
        this.handler.onMaxPushId(safeId);
        return null;
      }
      case FRAME_CANCEL_PUSH: {
        const id = readSingleVarint(payload);
        if (id === VARINT_NEED_MORE) return new H3Error(H3_FRAME_ERROR, 'malformed CANCEL_PUSH frame');
        // Skiff never promises pushes (server) and never allows any (client): see file comment.
        return new H3Error(H3_ID_ERROR, `CANCEL_PUSH for push ID ${id}, but push is not in use`);
      }
      default:
        // HEADERS, PUSH_PROMISE (DATA is handled by the caller loop).
        return new H3Error(H3_FRAME_UNEXPECTED, `frame 0x${type.toString(16)} on the control stream`);
    }
  }

  private fail(err: H3Error | null): H3Error {
    const e = err ?? new H3Error(H3_FRAME_ERROR, 'control stream failed');
    this.error = e;
    return e;
  }
}

/**
 * A payload that must be exactly one varint (GOAWAY, MAX_PUSH_ID, CANCEL_PUSH). Returns its
 * value, VARINT_TOO_LARGE, or VARINT_NEED_MORE for any layout violation (short or trailing bytes).
 */
function readSingleVarint(payload: Uint8Array): number {
  if (payload.length === 0) return VARINT_NEED_MORE;
  if (varintLengthOfFirstByte(payload[0]) !== payload.length) return VARINT_NEED_MORE;
  return readVarint(payload, 0, payload.length);
}
