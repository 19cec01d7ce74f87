/**
 * QPACK encoder (RFC 9204 §4.5) using the static table only.
 *
 * Skiff never inserts into the peer's dynamic table: every encoded field section has Required
 * Insert Count 0 and Base 0 (the two bytes 0x00 0x00), and no encoder stream instruction is
 * ever sent. That is legal whatever SETTINGS_QPACK_MAX_TABLE_CAPACITY the peer advertises
 * (§3.2.3: the encoder may use any capacity up to it, zero included), never blocks a peer
 * stream, and keeps the encoder stateless per connection. Rejected alternative: a dynamic
 * table encoder; it saves bytes on repeated header values but needs acknowledgement tracking,
 * eviction bookkeeping and head-of-line-blocking policy, which a sidecar on a low-latency
 * network does not earn back.
 *
 * Per field line (input is Skiff's flat [name, value, ...] list, names already lower-case,
 * pseudo-header fields first; strings are latin1 byte strings):
 *  - name and value both match a static entry: Indexed Field Line (§4.5.2), usually 1 byte;
 *  - the name matches: Literal Field Line with (static) Name Reference (§4.5.4);
 *  - otherwise: Literal Field Line with Literal Name (§4.5.6).
 * Each string is Huffman-coded when that is strictly shorter (exact length computed first).
 * The N ("never index") bit is never set: nothing we send is ever indexed anyway.
 *
 * Output goes into one growable buffer reused across calls; the only allocations per section
 * are the buffer growth (amortised) and, for `encodeHeadersFrame`, the caller-owned copy.
 */

import { H3Error, QPACK_DECODER_STREAM_ERROR, prependHeadersFrameHeader } from '../frames.js';
import { huffmanEncode, huffmanEncodedLength } from './huffman.js';
import { PREFIX_INT_NEED_MORE, PREFIX_INT_OK, PrefixInt, decodePrefixInt, encodePrefixInt } from './prefix-int.js';
import { STATIC_BY_NAME } from './static-table.js';

/** Room left in front of the section for a HEADERS frame header (type 1 byte + varint <= 8). */
const HEADROOM = 9;

export interface QpackEncoderOptions {
  /** Huffman-code strings when shorter (default true; false reproduces RFC examples byte-exact). */
  huffman?: boolean;
  /** Initial size of the reusable output buffer (default 1 KiB; grows as needed). */
  initialBufferSize?: number;
}

export class QpackEncoder {
  readonly isHuffmanEnabled: boolean;
  private buf: Buffer;

  constructor(options: QpackEncoderOptions = {}) {
    this.isHuffmanEnabled = options.huffman ?? true;
    this.buf = Buffer.allocUnsafe(Math.max(options.initialBufferSize ?? 1024, 64));
  }

  /**
   * Encodes `fields` (flat [name, value, ...]) as a field section. The returned Buffer is a
   * view of the encoder's reusable buffer: valid until the next call on this encoder. Copy it
   * (or use `encodeHeadersFrame`) when the bytes outlive a synchronous write.
   */
  encodeFieldSection(fields: readonly string[]): Buffer {
    const end = this.encodeAt(fields);
    return this.buf.subarray(HEADROOM, end);
  }

  /**
   * Encodes `fields` as a whole HEADERS frame (frame header + field section) in a new Buffer the
   * caller owns (safe to hand to an asynchronous stream write).
   */
  encodeHeadersFrame(fields: readonly string[]): Buffer {
    const view = this.encodeHeadersFrameView(fields);
    const out = Buffer.allocUnsafe(view.length);
    view.copy(out, 0);
    return out;
  }

  /** As `encodeHeadersFrame`, but a view of the reusable buffer (valid until the next call). */
  encodeHeadersFrameView(fields: readonly string[]): Buffer {
    const end = this.encodeAt(fields);
    const start = prependHeadersFrameHeader(this.buf, HEADROOM, end);
    return this.buf.subarray(start, end);
  }

  /** Writes the section at buf[HEADROOM...]; returns its end offset. */
  private encodeAt(fields: readonly string[]): number {
    this.ensure(HEADROOM + 2);
    let o = HEADROOM;
    // Encoded Field Section Prefix: Required Insert Count 0, Sign 0, Delta Base 0 (§4.5.1).
    this.buf[o++] = 0;
    this.buf[o++] = 0;
    const n = fields.length & ~1;
    for (let i = 0; i < n; i += 2) {
      const name = fields[i];
      const value = fields[i + 1];
      // Upper bound for this line: raw strings (Huffman is only used when shorter) plus three
      // prefix integers of at most 10 bytes each (lengths below 2^53).
      this.ensure(o + name.length + value.length + 32);
      const buf = this.buf;
      const entry = STATIC_BY_NAME.get(name);
      if (entry !== undefined) {
        const index = entry.values.get(value);
        if (index !== undefined) {
          // Indexed Field Line, T=1 (static): 1 T index(6+).
          o = encodePrefixInt(buf, o, 6, 0xc0, index);
          continue;
        }
        // Literal Field Line with Name Reference, N=0, T=1: 01 N T index(4+).
        o = encodePrefixInt(buf, o, 4, 0x50, entry.nameIndex);
        o = this.writeString(o, 7, 0x00, 0x80, value);
        continue;
      }
      // Literal Field Line with Literal Name, N=0: 001 N H nameLength(3+), then the value.
      o = this.writeString(o, 3, 0x20, 0x08, name);
      o = this.writeString(o, 7, 0x00, 0x80, value);
    }
    return o;
  }

  /**
   * Writes a string literal whose length has a `prefixBits` prefix; `flags` are the fixed bits
   * above the H bit, `huffmanFlag` the H bit itself.
   */
  private writeString(o: number, prefixBits: number, flags: number, huffmanFlag: number, s: string): number {
    const buf = this.buf;
    const length = s.length;
    if (this.isHuffmanEnabled && length > 0) {
      const hLength = huffmanEncodedLength(s);
      if (hLength < length) {
        o = encodePrefixInt(buf, o, prefixBits, flags | huffmanFlag, hLength);
        return huffmanEncode(s, buf, o);
      }
    }
    o = encodePrefixInt(buf, o, prefixBits, flags, length);
    if (length < 32) {
      // Short strings: a char loop beats the Buffer.write call overhead.
      for (let i = 0; i < length; i++) buf[o + i] = s.charCodeAt(i) & 0xff;
      return o + length;
    }
    return o + buf.write(s, o, length, 'latin1');
  }

  private ensure(size: number): void {
    if (size <= this.buf.length) return;
    let capacity = this.buf.length * 2;
    while (capacity < size) capacity *= 2;
    const next = Buffer.allocUnsafe(capacity);
    this.buf.copy(next, 0);
    this.buf = next;
  }
}

/**
 * Reader for the peer's QPACK decoder stream (RFC 9204 §4.4), i.e. feedback about *our*
 * encoder. Since we never reference the dynamic table:
 *  - Section Acknowledgment is always an error (no section with a non-zero Required Insert
 *    Count is outstanding, §4.4.1): QPACK_DECODER_STREAM_ERROR;
 *  - Insert Count Increment is always an error (zero, or above what we inserted, §4.4.3);
 *  - Stream Cancellation is valid and has nothing to release: ignored.
 * Instructions may be split anywhere; the few bytes of a partial one are carried over.
 */
export class QpackDecoderStreamReader {
  private readonly carry: Uint8Array;
  private carried: number;
  private readonly int: PrefixInt;
  private error: H3Error | null;

  constructor() {
    this.carry = new Uint8Array(16);
    this.carried = 0;
    this.int = new PrefixInt();
    this.error = null;
  }

  /** Consumes decoder-stream bytes. Returns null, or the (connection) error. */
  feed(chunk: Uint8Array): H3Error | null {
    if (this.error !== null) return this.error;
    let i = 0;
    // Finish a carried partial instruction first, one byte at a time (it is at most ~10 bytes).
    while (this.carried > 0 && i < chunk.length) {
      this.carry[this.carried++] = chunk[i++];
      const r = this.parse(this.carry, 0, this.carried);
      if (r === PREFIX_INT_NEED_MORE) {
        if (this.carried === this.carry.length) return this.fail('decoder stream instruction too long');
        continue;
      }
      if (r < 0) return this.error;
      this.carried = 0;
    }
    while (i < chunk.length) {
      const r = this.parse(chunk, i, chunk.length);
      if (r === PREFIX_INT_NEED_MORE) {
        const rest = chunk.length - i;
        if (rest > this.carry.length - 1) return this.fail('decoder stream instruction too long');
        this.carry.set(chunk.subarray(i), 0);
        this.carried = rest;
        return null;
      }
      if (r < 0) return this.error;
      i = r;
    }
    return null;
  }

  /** Parses one instruction at buf[off]; returns the next offset, NEED_MORE, or -2 (error set). */
  private parse(buf: Uint8Array, off: number, end: number): number {
    const b = buf[off];
    if ((b & 0x80) !== 0) {
      this.fail('Section Acknowledgment, but no field section referenced the dynamic table');
      return -2;
    }
    if ((b & 0x40) === 0) {
      this.fail('Insert Count Increment, but the encoder never inserted');
      return -2;
    }
    // Stream Cancellation: 01 streamId(6+). Nothing to release; just consume it.
    const r = decodePrefixInt(buf, off, end, 6, this.int);
    if (r === PREFIX_INT_OK) return this.int.offset;
    if (r === PREFIX_INT_NEED_MORE) return PREFIX_INT_NEED_MORE;
    this.fail('Stream Cancellation stream ID out of range');
    return -2;
  }

  private fail(message: string): H3Error {
    this.error = new H3Error(QPACK_DECODER_STREAM_ERROR, message);
    return this.error;
  }
}
