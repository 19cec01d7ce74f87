/**
 * The receive side of one HTTP/3 request or response stream (RFC 9114 §4.1): frame order,
 * QPACK decoding, field validation and Content-Length accounting, on top of FrameReader.
 *
 * Accepted sequence: HEADERS, then DATA*, then an optional trailing HEADERS, then the end of
 * the stream. A response may be preceded by any number of interim (1xx) HEADERS, which carry
 * no content. Unknown and grease frame types are skipped anywhere (§9). Everything else is
 * H3_FRAME_UNEXPECTED (connection): DATA before HEADERS, HEADERS or DATA after the trailers,
 * SETTINGS / GOAWAY / MAX_PUSH_ID / CANCEL_PUSH on a request stream (§7.2), PUSH_PROMISE
 * received by a server or on a push stream (§7.2.5, §4.1), and anything but DATA after the
 * header section of a CONNECT request (§4.4). A PUSH_PROMISE received by a client is
 * H3_ID_ERROR: Skiff never sends MAX_PUSH_ID, so every push ID exceeds the allowed maximum.
 *
 * Malformed messages (§4.1.2) are stream errors H3_MESSAGE_ERROR: field rules (fields.ts, run
 * here unless `validate: false`), and DATA totals against Content-Length (checked when each DATA
 * frame header arrives, so no byte past the declared length is delivered, and again at the
 * end). Responses that never have content (HEAD, 204, 304) skip the Content-Length check.
 * A stream ending without a complete message: H3_REQUEST_INCOMPLETE for requests (§4.1),
 * H3_MESSAGE_ERROR for responses; ending inside a frame: H3_FRAME_ERROR.
 *
 * The handler is one object with four methods (no closures per stream). After onError or
 * onEnd no further callback arrives. DATA payloads are views of the pushed chunk, passed
 * through without copying; the field list given to onHeaders is new and owned by the handler.
 */

import { FieldInfo, validateRequestFields, validateResponseFields, validateTrailerFields } from './fields.js';
import {
  DEFAULT_MAX_FRAME_PAYLOAD,
  FRAME_HEADERS,
  FRAME_PUSH_PROMISE,
  FrameEvent,
  FrameReader,
  H3Error,
  H3_FRAME_UNEXPECTED,
  H3_ID_ERROR,
  H3_MESSAGE_ERROR,
  H3_REQUEST_INCOMPLETE,
} from './frames.js';
import type { QpackDecoder } from './qpack/decoder.js';

/** Receiver callbacks. */
export interface MessageHandler {
  /** A header section (interim responses included) or, with isTrailers, the trailer section. */
  onHeaders(fields: string[], isTrailers: boolean): void;
  /** A slice of content (a view of the pushed chunk: copy it to keep it past the call). */
  onData(chunk: Uint8Array): void;
  /** The message is complete (stream ended cleanly, all checks passed). */
  onEnd(): void;
  /** The stream failed. `error.isConnectionError` says whether to close the connection. */
  onError(error: H3Error): void;
}

/** Which message the stream carries, seen from the receiver. */
export const enum MessageKind {
  /** A server reading a request on a client-initiated bidirectional stream. */
  Request = 0,
  /** A client reading the response on its request stream. */
  Response = 1,
  /** A client reading a pushed response on a push stream. */
  PushResponse = 2,
}

export interface MessageReaderOptions {
  kind: MessageKind;
  /** Cap on a HEADERS payload (default 64 KiB); above it H3_EXCESSIVE_LOAD. */
  maxFramePayload?: number;
  /** Run fields.ts validation and the automatic Content-Length check (default true). */
  validate?: boolean;
  /** We enabled extended CONNECT (RFC 9220): requests may carry :protocol. */
  isExtendedConnectEnabled?: boolean;
  /** Responses: the request was HEAD, so Content-Length describes no content. */
  isResponseToHead?: boolean;
}

const enum MessageState {
  /** Waiting for the (final) header section. */
  Headers = 0,
  /** Header section received: DATA or trailers may follow. */
  Body = 1,
  /** Trailers received: only the end (or unknown frames) may follow. */
  Trailers = 2,
  Done = 3,
  Failed = 4,
}

export class MessageReader {
  readonly streamId: number;
  readonly kind: MessageKind;
  /** What validation learned from the header section (method, path, status, ...). */
  readonly info: FieldInfo;
  /** Content bytes received so far (sum of DATA payloads). */
  dataBytes: number;
  /** Content-Length to enforce, -1 for none. Set automatically when validating. */
  expectedLength: number;
  private state: MessageState;
  private isTunnel: boolean;
  private readonly isValidating: boolean;
  private readonly isExtendedConnectEnabled: boolean;
  private readonly isResponseToHead: boolean;
  private readonly handler: MessageHandler;
  private readonly decoder: QpackDecoder;
  private readonly reader: FrameReader;

  constructor(handler: MessageHandler, decoder: QpackDecoder, streamId: number, options: MessageReaderOptions) {
    this.streamId = streamId;
    this.kind = options.kind;
    this.info = new FieldInfo();
    this.dataBytes = 0;
    this.expectedLength = -1;
    this.state = MessageState.Headers;
    this.isTunnel = false;
    this.isValidating = options.validate ?? true;
    this.isExtendedConnectEnabled = options.isExtendedConnectEnabled ?? false;
    this.isResponseToHead = options.isResponseToHead ?? false;
    this.handler = handler;
    this.decoder = decoder;
    this.reader = new FrameReader(options.maxFramePayload ?? DEFAULT_MAX_FRAME_PAYLOAD);
  }

  /** True once the message ended or failed: no more callbacks. */
  get isClosed(): boolean {
    return this.state >= MessageState.Done;
  }

  /**
   * Sets (or, with -1, clears) the Content-Length to enforce; for callers validating headers
   * themselves (`validate: false`) or overriding the automatic choice inside onHeaders.
   */
  setExpectedContentLength(length: number): void {
    this.expectedLength = length;
  }

  /** Feeds stream bytes. Returns false once the reader is closed (ended or failed). */
  push(chunk: Uint8Array): boolean {
    if (this.state >= MessageState.Done) return false;
    const reader = this.reader;
    reader.feed(chunk);
    for (;;) {
      switch (reader.next()) {
        case FrameEvent.NeedMore:
          return true;
        case FrameEvent.Error:
          this.fail(reader.error ?? new H3Error(H3_FRAME_UNEXPECTED, 'frame error'));
          return false;
        case FrameEvent.UnknownFrame:
          break;
        case FrameEvent.DataStart:
          if (!this.onDataStart(reader.length)) return false;
          break;
        case FrameEvent.Data: {
          const payload = reader.payload;
          this.dataBytes += payload.length;
          this.handler.onData(payload);
          if (this.state >= MessageState.Done) return false;
          break;
        }
        case FrameEvent.Frame:
          if (!this.onFrame(reader.type, reader.payload)) return false;
          break;
      }
    }
  }

  /** The stream ended cleanly (FIN). Delivers onEnd or onError. */
  end(): void {
    if (this.state >= MessageState.Done) return;
    const frameError = this.reader.finish();
    if (frameError !== null) {
      this.fail(frameError);
      return;
    }
    if (this.state === MessageState.Headers) {
      this.fail(
        this.kind === MessageKind.Request
          ? new H3Error(H3_REQUEST_INCOMPLETE, 'request stream ended before the header section', false)
          : new H3Error(H3_MESSAGE_ERROR, 'response stream ended before a final response', false),
      );
      return;
    }
    if (this.expectedLength >= 0 && this.dataBytes !== this.expectedLength) {
      this.fail(
        new H3Error(H3_MESSAGE_ERROR, `content-length ${this.expectedLength} but ${this.dataBytes} bytes of DATA`, false),
      );
      return;
    }
    this.state = MessageState.Done;
    this.handler.onEnd();
  }

  /**
   * We abandon the stream (reset, STOP_SENDING, local error): no more callbacks, and the QPACK
   * decoder tells the peer's encoder (Stream Cancellation) when the dynamic table is in use.
   */
  abort(): void {
    if (this.state >= MessageState.Done) return;
    this.state = MessageState.Failed;
    this.decoder.cancelStream(this.streamId);
  }

  private onDataStart(length: number): boolean {
    if (this.state !== MessageState.Body) {
      return this.fail(
        new H3Error(
          H3_FRAME_UNEXPECTED,
          this.state === MessageState.Headers ? 'DATA frame before the header section' : 'DATA frame after the trailers',
        ),
      );
    }
    if (this.expectedLength >= 0 && this.dataBytes + length > this.expectedLength) {
      return this.fail(
        new H3Error(
          H3_MESSAGE_ERROR,
          `DATA exceeds content-length ${this.expectedLength} (${this.dataBytes} + ${length} bytes)`,
          false,
        ),
      );
    }
    return true;
  }

  private onFrame(type: number, payload: Uint8Array): boolean {
    if (type === FRAME_HEADERS) return this.onHeadersFrame(payload);
    if (type === FRAME_PUSH_PROMISE) {
      if (this.kind === MessageKind.Response) {
        return this.fail(new H3Error(H3_ID_ERROR, 'PUSH_PROMISE, but no MAX_PUSH_ID was sent'));
      }
      return this.fail(
        new H3Error(
          H3_FRAME_UNEXPECTED,
          this.kind === MessageKind.Request ? 'PUSH_PROMISE from a client' : 'PUSH_PROMISE on a push stream',
        ),
      );
    }
    // CANCEL_PUSH, SETTINGS, GOAWAY, MAX_PUSH_ID belong on the control stream (§7.2).
    return this.fail(new H3Error(H3_FRAME_UNEXPECTED, `frame 0x${type.toString(16)} on a request stream`));
  }

  private onHeadersFrame(payload: Uint8Array): boolean {
    const state = this.state;
    if (state === MessageState.Trailers) {
      return this.fail(new H3Error(H3_FRAME_UNEXPECTED, 'HEADERS frame after the trailers'));
    }
    if (state === MessageState.Body && this.isTunnel) {
      return this.fail(new H3Error(H3_FRAME_UNEXPECTED, 'HEADERS frame on a CONNECT tunnel'));
    }
    const fields: string[] = [];
    const decodeError = this.decoder.decodeFieldSection(payload, this.streamId, fields);
    if (decodeError !== null) return this.fail(decodeError);

    if (state === MessageState.Body) {
      if (this.isValidating) {
        const err = validateTrailerFields(fields, this.info);
        if (err !== null) return this.fail(err);
      }
      this.state = MessageState.Trailers;
      this.handler.onHeaders(fields, true);
      return this.state < MessageState.Done;
    }

    // The header section (or an interim response).
    const info = this.info;
    if (this.isValidating) {
      const err =
        this.kind === MessageKind.Request
          ? validateRequestFields(fields, info, { isExtendedConnectEnabled: this.isExtendedConnectEnabled })
          : validateResponseFields(fields, info);
      if (err !== null) return this.fail(err);
    } else if (this.kind !== MessageKind.Request) {
      info.status = findStatus(fields);
    }
    const isInterim = this.kind !== MessageKind.Request && info.status >= 100 && info.status < 200;
    if (!isInterim) {
      this.state = MessageState.Body;
      if (this.kind === MessageKind.Request) {
        this.isTunnel = info.isConnect;
        if (this.isValidating) this.expectedLength = info.contentLength;
      } else if (this.isValidating) {
        const status = info.status;
        const hasNoContent = this.isResponseToHead || status === 204 || status === 304;
        this.expectedLength = hasNoContent ? -1 : info.contentLength;
      }
    }
    this.handler.onHeaders(fields, false);
    return this.state < MessageState.Done;
  }

  /**
   * Fails once: records the state and tells the handler. A stream error means the caller will
   * abandon reading, so the QPACK decoder queues a Stream Cancellation (RFC 9204 §2.2.2.2) when
   * the dynamic table is in use. Returns false for call-site brevity.
   */
  private fail(error: H3Error): boolean {
    if (this.state >= MessageState.Done) return false;
    this.state = MessageState.Failed;
    if (!error.isConnectionError) this.decoder.cancelStream(this.streamId);
    this.handler.onError(error);
    return false;
  }
}

/** :status as a number when it is three digits, else -1 (used when validation is off). */
function findStatus(fields: readonly string[]): number {
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i];
    if (name.charCodeAt(0) !== 0x3a) break;
    if (name === ':status') {
      const v = fields[i + 1];
      if (v.length !== 3) return -1;
      const n = Number(v);
      return Number.isInteger(n) ? n : -1;
    }
  }
  return -1;
}
