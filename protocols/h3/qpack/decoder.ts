/**
 * QPACK decoder (RFC 9204): encoded field sections -> Skiff's flat [name, value, ...] lists,
 * plus the dynamic table fed by the peer's encoder stream.
 *
 * Dynamic table decision. Skiff advertises SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0 and
 * SETTINGS_QPACK_BLOCKED_STREAMS = 0 by default (`maxTableCapacity: 0`). A compliant peer then
 * never references the dynamic table, and a section with a Required Insert Count above 0 is
 * QPACK_DECOMPRESSION_FAILED (§4.5.1.1: with MaxEntries 0 no non-zero encoding is valid). The
 * dynamic table side is nevertheless implemented behind `maxTableCapacity` > 0: encoder stream
 * instructions (Set Dynamic Table Capacity, Insert with Name Reference, Insert with Literal
 * Name, Duplicate), Required Insert Count reconstruction (§4.5.1.1), Base and post-Base
 * indexing, and the decoder stream output (Section Acknowledgment, Stream Cancellation, Insert
 * Count Increment). Blocked streams are not supported: SETTINGS_QPACK_BLOCKED_STREAMS stays 0,
 * so a section whose Required Insert Count is above the current Insert Count is refused with
 * QPACK_DECOMPRESSION_FAILED (§2.1.2: the encoder had promised not to block). Rejected
 * alternative: blocking support, which needs the request layer to park a HEADERS payload and
 * the rest of the stream until the encoder stream catches up; not worth it while we advertise 0.
 *
 * Limits (every one a defined error, never unbounded growth):
 *  - `maxFieldSectionSize` (what we advertise as SETTINGS_MAX_FIELD_SECTION_SIZE): the sum of
 *    name + value + 32 over decoded fields (RFC 9114 §4.2.2). Exceeding it returns a *stream*
 *    error H3_EXCESSIVE_LOAD with `isHeadersTooLarge` set, so a server can answer 431 and reset
 *    the stream (the caller then calls `cancelStream`). It is checked before each field is
 *    appended, which also defuses dynamic-table "bombs" (one byte referencing a large entry).
 *  - String literals must fit in the bytes left in the section (checked before reading them);
 *    a Huffman string expands at most 8/5, into one reused scratch buffer.
 *  - Prefixed integers above 2^53-1 or with overlong continuation are errors (prefix-int.ts).
 *  - Buffered partial encoder-stream instructions are bounded by what the table capacity can
 *    hold (Huffman worst case 30 bits per byte): beyond that QPACK_ENCODER_STREAM_ERROR.
 *
 * Strings are decoded as latin1 (one char per byte): the exact bytes survive, and validation
 * (fields.ts) decides what is acceptable. Static-table strings are handed out as-is (no copy).
 * Decoding never throws: errors are returned as H3Error values.
 */

import {
  H3Error,
  H3_EXCESSIVE_LOAD,
  QPACK_DECOMPRESSION_FAILED,
  QPACK_ENCODER_STREAM_ERROR,
} from '../frames.js';
import { huffmanDecode, huffmanMaxDecodedLength } from './huffman.js';
import {
  PREFIX_INT_NEED_MORE,
  PREFIX_INT_OK,
  PrefixInt,
  decodePrefixInt,
  encodePrefixInt,
} from './prefix-int.js';
import { STATIC_TABLE, STATIC_TABLE_SIZE } from './static-table.js';

/** Per-entry overhead in table and field-section size accounting (RFC 9204 §3.2.1, RFC 9114 §4.2.2). */
export const ENTRY_OVERHEAD = 32;

/** Default for `maxFieldSectionSize`: 64 KiB, the same order as Skiff's HTTP/1.1 head limit. */
export const DEFAULT_MAX_FIELD_SECTION_SIZE = 64 * 1024;

export interface QpackDecoderOptions {
  /** What we advertise as SETTINGS_QPACK_MAX_TABLE_CAPACITY (default 0: no dynamic table). */
  maxTableCapacity?: number;
  /** What we advertise as SETTINGS_MAX_FIELD_SECTION_SIZE (default 64 KiB). */
  maxFieldSectionSize?: number;
}

/** Status values of the internal parse helpers (offsets are >= 0). */
const NEED_MORE = -1;
const FAILED = -2;

/**
 * The decoder's copy of the dynamic table: a ring of at most floor(maxCapacity / 32) entries
 * addressed by absolute index (RFC 9204 §3.2.4).
 */
class DynamicTable {
  readonly maxCapacity: number;
  readonly maxEntries: number;
  capacity: number;
  size: number;
  /** Entries ever inserted (the Insert Count). */
  insertCount: number;
  /** Entries evicted; live absolute indices are [dropped, insertCount). */
  dropped: number;
  private readonly names: string[];
  private readonly values: string[];

  constructor(maxCapacity: number) {
    this.maxCapacity = maxCapacity;
    this.maxEntries = Math.floor(maxCapacity / ENTRY_OVERHEAD);
    this.capacity = 0;
    this.size = 0;
    this.insertCount = 0;
    this.dropped = 0;
    this.names = new Array<string>(this.maxEntries).fill('');
    this.values = new Array<string>(this.maxEntries).fill('');
  }

  isLive(absolute: number): boolean {
    return absolute >= this.dropped && absolute < this.insertCount;
  }

  name(absolute: number): string {
    return this.names[absolute % this.maxEntries];
  }

  value(absolute: number): string {
    return this.values[absolute % this.maxEntries];
  }

  /** Sets the capacity (already checked against maxCapacity), evicting as needed. */
  setCapacity(capacity: number): void {
    this.capacity = capacity;
    this.evictUntil(capacity);
  }

  /** Inserts an entry; false when it cannot fit even in an empty table (§3.2.2). */
  insert(name: string, value: string): boolean {
    const entrySize = name.length + value.length + ENTRY_OVERHEAD;
    if (entrySize > this.capacity) return false;
    // The name/value may come from an entry evicted here: they are already held as strings.
    this.evictUntil(this.capacity - entrySize);
    const slot = this.insertCount % this.maxEntries;
    this.names[slot] = name;
    this.values[slot] = value;
    this.insertCount++;
    this.size += entrySize;
    return true;
  }

  private evictUntil(limit: number): void {
    while (this.size > limit && this.dropped < this.insertCount) {
      const slot = this.dropped % this.maxEntries;
      this.size -= this.names[slot].length + this.values[slot].length + ENTRY_OVERHEAD;
      this.names[slot] = '';
      this.values[slot] = '';
      this.dropped++;
    }
  }
}

/**
 * One QPACK decoder per connection (the peer's encoder state). Not re-entrant.
 */
export class QpackDecoder {
  readonly maxTableCapacity: number;
  readonly maxFieldSectionSize: number;
  private readonly table: DynamicTable;
  private readonly int: PrefixInt;
  /** Result slot of `readString`. */
  private str: string;
  /** Reused scratch for Huffman output. */
  private scratch: Buffer;
  /** Error detail of the last FAILED parse. */
  private errorMessage: string;
  /** Bytes of a partial encoder-stream instruction. */
  private pending: Uint8Array;
  private pendingLength: number;
  private encoderStreamError: H3Error | null;
  /** Insert Count the encoder knows we have (via increments and acknowledgments). */
  private knownReceivedCount: number;
  /** Decoder-stream bytes waiting to be sent. */
  private out: Uint8Array;
  private outLength: number;

  constructor(options: QpackDecoderOptions = {}) {
    this.maxTableCapacity = options.maxTableCapacity ?? 0;
    this.maxFieldSectionSize = options.maxFieldSectionSize ?? DEFAULT_MAX_FIELD_SECTION_SIZE;
    this.table = new DynamicTable(this.maxTableCapacity);
    this.int = new PrefixInt();
    this.str = '';
    this.scratch = Buffer.allocUnsafe(256);
    this.errorMessage = '';
    this.pending = new Uint8Array(0);
    this.pendingLength = 0;
    this.encoderStreamError = null;
    this.knownReceivedCount = 0;
    this.out = new Uint8Array(0);
    this.outLength = 0;
  }

  /** Total insertions into the dynamic table so far. */
  get insertCount(): number {
    return this.table.insertCount;
  }

  /** Current dynamic table capacity as set by the peer's encoder. */
  get tableCapacity(): number {
    return this.table.capacity;
  }

  /** Current dynamic table size (sum of entry sizes). */
  get tableSize(): number {
    return this.table.size;
  }

  // -------------------------------------------------------------------------------------------
  // Field sections

  /**
   * Decodes one encoded field section (a HEADERS or PUSH_PROMISE payload) received on
   * `streamId`, appending name/value pairs to `out`. Returns null on success, or an H3Error:
   * QPACK_DECOMPRESSION_FAILED (connection) for anything malformed, or H3_EXCESSIVE_LOAD
   * (stream, `isHeadersTooLarge`) when the decoded section exceeds `maxFieldSectionSize`. On
   * success with a dynamic-table reference, a Section Acknowledgment is queued.
   */
  decodeFieldSection(section: Uint8Array, streamId: number, out: string[]): H3Error | null {
    const end = section.length;
    const int = this.int;
    const table = this.table;

    // Encoded Field Section Prefix (§4.5.1).
    if (decodePrefixInt(section, 0, end, 8, int) !== PREFIX_INT_OK) {
      return this.sectionError('truncated or oversized Required Insert Count');
    }
    const requiredInsertCount = this.decodeRequiredInsertCount(int.value);
    if (requiredInsertCount < 0) return this.sectionError(this.errorMessage);
    let p = int.offset;
    if (p >= end) return this.sectionError('truncated Base');
    const isNegativeBase = (section[p] & 0x80) !== 0;
    if (decodePrefixInt(section, p, end, 7, int) !== PREFIX_INT_OK) {
      return this.sectionError('truncated or oversized Delta Base');
    }
    p = int.offset;
    let base: number;
    if (isNegativeBase) {
      if (requiredInsertCount <= int.value) return this.sectionError('negative Base');
      base = requiredInsertCount - int.value - 1;
    } else {
      base = requiredInsertCount + int.value;
    }
    if (requiredInsertCount > table.insertCount) {
      return this.sectionError(
        `Required Insert Count ${requiredInsertCount} is above the Insert Count ${table.insertCount} and ` +
          'SETTINGS_QPACK_BLOCKED_STREAMS is 0',
      );
    }

    let budget = this.maxFieldSectionSize;
    while (p < end) {
      const b = section[p];
      let name: string;
      let value: string;
      if ((b & 0x80) !== 0) {
        // Indexed Field Line: 1 T index(6+).
        if (decodePrefixInt(section, p, end, 6, int) !== PREFIX_INT_OK) return this.sectionError('bad index');
        p = int.offset;
        if ((b & 0x40) !== 0) {
          if (int.value >= STATIC_TABLE_SIZE) return this.sectionError(`static index ${int.value} out of range`);
          name = STATIC_TABLE[int.value * 2];
          value = STATIC_TABLE[int.value * 2 + 1];
        } else {
          const abs = base - 1 - int.value;
          if (!this.isReferenceable(abs, requiredInsertCount)) return this.sectionError(this.errorMessage);
          name = table.name(abs);
          value = table.value(abs);
        }
      } else if ((b & 0x40) !== 0) {
        // Literal Field Line with Name Reference: 01 N T nameIndex(4+), value (8-bit prefix).
        if (decodePrefixInt(section, p, end, 4, int) !== PREFIX_INT_OK) return this.sectionError('bad name index');
        p = int.offset;
        if ((b & 0x10) !== 0) {
          if (int.value >= STATIC_TABLE_SIZE) return this.sectionError(`static index ${int.value} out of range`);
          name = STATIC_TABLE[int.value * 2];
        } else {
          const abs = base - 1 - int.value;
          if (!this.isReferenceable(abs, requiredInsertCount)) return this.sectionError(this.errorMessage);
          name = table.name(abs);
        }
        p = this.readString(section, p, end, 7);
        if (p < 0) return this.sectionError(this.errorMessage);
        value = this.str;
      } else if ((b & 0x20) !== 0) {
        // Literal Field Line with Literal Name: 001 N H nameLength(3+), name, value.
        p = this.readString(section, p, end, 3);
        if (p < 0) return this.sectionError(this.errorMessage);
        name = this.str;
        p = this.readString(section, p, end, 7);
        if (p < 0) return this.sectionError(this.errorMessage);
        value = this.str;
      } else if ((b & 0x10) !== 0) {
        // Indexed Field Line with Post-Base Index: 0001 index(4+).
        if (decodePrefixInt(section, p, end, 4, int) !== PREFIX_INT_OK) return this.sectionError('bad post-Base index');
        p = int.offset;
        const abs = base + int.value;
        if (!this.isReferenceable(abs, requiredInsertCount)) return this.sectionError(this.errorMessage);
        name = table.name(abs);
        value = table.value(abs);
      } else {
        // Literal Field Line with Post-Base Name Reference: 0000 N nameIndex(3+), value.
        if (decodePrefixInt(section, p, end, 3, int) !== PREFIX_INT_OK) {
          return this.sectionError('bad post-Base name index');
        }
        p = int.offset;
        const abs = base + int.value;
        if (!this.isReferenceable(abs, requiredInsertCount)) return this.sectionError(this.errorMessage);
        name = table.name(abs);
        p = this.readString(section, p, end, 7);
        if (p < 0) return this.sectionError(this.errorMessage);
        value = this.str;
      }
      budget -= name.length + value.length + ENTRY_OVERHEAD;
      if (budget < 0) {
        return new H3Error(
          H3_EXCESSIVE_LOAD,
          `field section exceeds the ${this.maxFieldSectionSize}-byte limit (SETTINGS_MAX_FIELD_SECTION_SIZE)`,
          false,
          true,
        );
      }
      out.push(name, value);
    }

    if (requiredInsertCount > 0) {
      // Section Acknowledgment: 1 streamId(7+) (§4.4.1).
      this.ensureOut(10);
      this.outLength = encodePrefixInt(this.out, this.outLength, 7, 0x80, streamId);
      if (requiredInsertCount > this.knownReceivedCount) this.knownReceivedCount = requiredInsertCount;
    }
    return null;
  }

  /** §4.5.1.1: EncodedInsertCount -> Required Insert Count, or FAILED with errorMessage set. */
  private decodeRequiredInsertCount(encoded: number): number {
    if (encoded === 0) return 0;
    const maxEntries = this.table.maxEntries;
    const fullRange = 2 * maxEntries;
    if (encoded > fullRange) {
      this.errorMessage =
        maxEntries === 0
          ? 'field section references the dynamic table, but SETTINGS_QPACK_MAX_TABLE_CAPACITY is 0'
          : `encoded Required Insert Count ${encoded} above ${fullRange}`;
      return FAILED;
    }
    const maxValue = this.table.insertCount + maxEntries;
    const maxWrapped = Math.floor(maxValue / fullRange) * fullRange;
    let ric = maxWrapped + encoded - 1;
    if (ric > maxValue) {
      if (ric <= fullRange) {
        this.errorMessage = `invalid encoded Required Insert Count ${encoded}`;
        return FAILED;
      }
      ric -= fullRange;
    }
    if (ric === 0) {
      this.errorMessage = 'Required Insert Count 0 must be encoded as 0';
      return FAILED;
    }
    return ric;
  }

  /** A dynamic reference in a field line must be below the Required Insert Count and live (§2.2.3). */
  private isReferenceable(absolute: number, requiredInsertCount: number): boolean {
    if (absolute < 0 || absolute >= requiredInsertCount) {
      this.errorMessage = `dynamic table reference ${absolute} outside [0, Required Insert Count ${requiredInsertCount})`;
      return false;
    }
    if (!this.table.isLive(absolute)) {
      this.errorMessage = `dynamic table entry ${absolute} was evicted`;
      return false;
    }
    return true;
  }

  private sectionError(message: string): H3Error {
    return new H3Error(QPACK_DECOMPRESSION_FAILED, message);
  }

  /**
   * Reads a string literal whose H bit sits just above a `prefixBits`-bit length prefix in
   * buf[p]. Sets `this.str`; returns the offset after it, NEED_MORE (the string runs past
   * `end`), or FAILED (errorMessage set).
   */
  private readString(buf: Uint8Array, p: number, end: number, prefixBits: number): number {
    if (p >= end) return this.needMore();
    const isHuffman = (buf[p] & (1 << prefixBits)) !== 0;
    const r = decodePrefixInt(buf, p, end, prefixBits, this.int);
    if (r === PREFIX_INT_NEED_MORE) return this.needMore();
    if (r !== PREFIX_INT_OK) {
      this.errorMessage = 'string length out of range';
      return FAILED;
    }
    const length = this.int.value;
    const start = this.int.offset;
    // Checked before touching the bytes: a huge declared length costs nothing.
    if (length > end - start) return this.needMore();
    if (!isHuffman) {
      this.str = latin1(buf, start, start + length);
      return start + length;
    }
    const max = huffmanMaxDecodedLength(length);
    if (this.scratch.length < max) this.scratch = Buffer.allocUnsafe(Math.max(max, this.scratch.length * 2));
    const n = huffmanDecode(buf, start, start + length, this.scratch, 0);
    if (n < 0) {
      this.errorMessage = 'invalid Huffman string (EOS, or padding not 1-7 one bits)';
      return FAILED;
    }
    this.str = this.scratch.toString('latin1', 0, n);
    return start + length;
  }

  private needMore(): number {
    this.errorMessage = 'truncated field line';
    return NEED_MORE;
  }

  // -------------------------------------------------------------------------------------------
  // Encoder stream (peer's encoder -> our table)

  /**
   * Consumes bytes of the peer's encoder stream (after the stream type). Returns null, or a
   * connection error QPACK_ENCODER_STREAM_ERROR (then the decoder stays failed). Queues an
   * Insert Count Increment for the entries inserted.
   */
  feedEncoderStream(chunk: Uint8Array): H3Error | null {
    if (this.encoderStreamError !== null) return this.encoderStreamError;
    let buf = chunk;
    let end = chunk.length;
    if (this.pendingLength > 0) {
      this.appendPending(chunk);
      buf = this.pending;
      end = this.pendingLength;
    }
    let p = 0;
    while (p < end) {
      const r = this.parseEncoderInstruction(buf, p, end);
      if (r === FAILED) {
        this.encoderStreamError = new H3Error(QPACK_ENCODER_STREAM_ERROR, this.errorMessage);
        return this.encoderStreamError;
      }
      if (r === NEED_MORE) break;
      p = r;
    }
    const rest = end - p;
    if (buf === this.pending) {
      if (rest > 0) this.pending.copyWithin(0, p, end);
      this.pendingLength = rest;
    } else if (rest > 0) {
      this.pendingLength = 0;
      this.appendPending(chunk.subarray(p, end));
    }
    if (this.pendingLength > this.maxPendingBytes()) {
      this.encoderStreamError = new H3Error(
        QPACK_ENCODER_STREAM_ERROR,
        'encoder stream instruction larger than any entry the table capacity allows',
      );
      return this.encoderStreamError;
    }
    const increment = this.table.insertCount - this.knownReceivedCount;
    if (increment > 0) {
      // Insert Count Increment: 00 increment(6+) (§4.4.3).
      this.ensureOut(10);
      this.outLength = encodePrefixInt(this.out, this.outLength, 6, 0x00, increment);
      this.knownReceivedCount = this.table.insertCount;
    }
    return null;
  }

  /** A complete instruction cannot be longer than this (strings bounded by the capacity). */
  private maxPendingBytes(): number {
    // Name + value <= capacity - 32; Huffman codes are at most 30 bits per byte (x 3.75), plus
    // three prefix integers.
    return Math.ceil(this.maxTableCapacity * 3.75) + 32;
  }

  private appendPending(bytes: Uint8Array): void {
    const needed = this.pendingLength + bytes.length;
    if (this.pending.length < needed) {
      const next = new Uint8Array(Math.max(needed, this.pending.length * 2, 64));
      next.set(this.pending.subarray(0, this.pendingLength), 0);
      this.pending = next;
    }
    this.pending.set(bytes, this.pendingLength);
    this.pendingLength = needed;
  }

  /** Parses and applies one encoder instruction; returns next offset, NEED_MORE or FAILED. */
  private parseEncoderInstruction(buf: Uint8Array, p: number, end: number): number {
    const b = buf[p];
    const int = this.int;
    const table = this.table;
    if ((b & 0x80) !== 0) {
      // Insert with Name Reference: 1 T nameIndex(6+), value (8-bit prefix string).
      const r = decodePrefixInt(buf, p, end, 6, int);
      if (r === PREFIX_INT_NEED_MORE) return NEED_MORE;
      if (r !== PREFIX_INT_OK) return this.encoderFail('name index out of range');
      let name: string;
      if ((b & 0x40) !== 0) {
        if (int.value >= STATIC_TABLE_SIZE) return this.encoderFail(`static index ${int.value} out of range`);
        name = STATIC_TABLE[int.value * 2];
      } else {
        const abs = table.insertCount - 1 - int.value;
        if (!table.isLive(abs)) return this.encoderFail(`relative index ${int.value} is not in the table`);
        name = table.name(abs);
      }
      const q = this.readEncoderString(buf, int.offset, end, 7);
      if (q < 0) return q;
      if (!table.insert(name, this.str)) return this.encoderFail('entry larger than the table capacity');
      return q;
    }
    if ((b & 0x40) !== 0) {
      // Insert with Literal Name: 01 H nameLength(5+), name, value.
      let q = this.readEncoderString(buf, p, end, 5);
      if (q < 0) return q;
      const name = this.str;
      q = this.readEncoderString(buf, q, end, 7);
      if (q < 0) return q;
      if (!table.insert(name, this.str)) return this.encoderFail('entry larger than the table capacity');
      return q;
    }
    if ((b & 0x20) !== 0) {
      // Set Dynamic Table Capacity: 001 capacity(5+).
      const r = decodePrefixInt(buf, p, end, 5, int);
      if (r === PREFIX_INT_NEED_MORE) return NEED_MORE;
      if (r !== PREFIX_INT_OK || int.value > this.maxTableCapacity) {
        return this.encoderFail(`capacity above SETTINGS_QPACK_MAX_TABLE_CAPACITY ${this.maxTableCapacity}`);
      }
      table.setCapacity(int.value);
      return int.offset;
    }
    // Duplicate: 000 index(5+).
    const r = decodePrefixInt(buf, p, end, 5, int);
    if (r === PREFIX_INT_NEED_MORE) return NEED_MORE;
    if (r !== PREFIX_INT_OK) return this.encoderFail('duplicate index out of range');
    const abs = table.insertCount - 1 - int.value;
    if (!table.isLive(abs)) return this.encoderFail(`relative index ${int.value} is not in the table`);
    if (!table.insert(table.name(abs), table.value(abs))) return this.encoderFail('entry larger than the table capacity');
    return int.offset;
  }

  /** readString for the encoder stream: lengths beyond the capacity fail early. */
  private readEncoderString(buf: Uint8Array, p: number, end: number, prefixBits: number): number {
    if (p >= end) return NEED_MORE;
    const r = decodePrefixInt(buf, p, end, prefixBits, this.int);
    if (r === PREFIX_INT_NEED_MORE) return NEED_MORE;
    if (r !== PREFIX_INT_OK || this.int.value > this.maxPendingBytes()) {
      return this.encoderFail('string longer than any entry the table capacity allows');
    }
    const q = this.readString(buf, p, end, prefixBits);
    if (q === FAILED) return this.encoderFail(this.errorMessage);
    return q;
  }

  private encoderFail(message: string): number {
    this.errorMessage = message;
    return FAILED;
  }

  // -------------------------------------------------------------------------------------------
  // Decoder stream (our feedback -> peer's encoder)

  /**
   * The stream was reset or abandoned before all its field sections were decoded: queue a
   * Stream Cancellation (§4.4.2). Omitted when our capacity is 0, as §2.2.2.2 allows.
   */
  cancelStream(streamId: number): void {
    if (this.maxTableCapacity === 0) return;
    this.ensureOut(10);
    this.outLength = encodePrefixInt(this.out, this.outLength, 6, 0x40, streamId);
  }

  /** Queued decoder-stream bytes (a new Buffer the caller owns), or null when there are none. */
  takeDecoderStreamData(): Buffer | null {
    if (this.outLength === 0) return null;
    const data = Buffer.from(this.out.subarray(0, this.outLength));
    this.outLength = 0;
    return data;
  }

  private ensureOut(extra: number): void {
    const needed = this.outLength + extra;
    if (this.out.length >= needed) return;
    const next = new Uint8Array(Math.max(needed, this.out.length * 2, 64));
    next.set(this.out.subarray(0, this.outLength), 0);
    this.out = next;
  }
}

/** latin1 decode of buf[start, end) without copying the bytes first. */
function latin1(buf: Uint8Array, start: number, end: number): string {
  if (buf instanceof Buffer) return buf.toString('latin1', start, end);
  return Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString('latin1');
}
