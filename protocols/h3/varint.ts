/**
 * QUIC variable-length integers (RFC 9000 §16): the two high bits of the first byte give the
 * length (1, 2, 4 or 8 bytes), the rest is the value, big-endian, up to 2^62-1.
 *
 * Skiff keeps these as JavaScript numbers, so the usable range is 0..2^53-1
 * (Number.MAX_SAFE_INTEGER). Encoding a value outside it is a programming error and throws a
 * RangeError; decoding one returns VARINT_TOO_LARGE, and each caller decides what that means
 * on the wire (an unknown frame type to skip, a saturated setting value, a protocol error).
 *
 * Decoding never throws and never allocates: it returns the value or a negative status, and
 * the caller advances by `varintLengthOfFirstByte(buf[offset])`. Decoders accept non-minimal
 * encodings (RFC 9000 §16 allows them; RFC 9114 does not forbid them for frame fields).
 */

/** Not enough bytes in the buffer for the whole varint. */
export const VARINT_NEED_MORE = -1;
/** The value is above Number.MAX_SAFE_INTEGER. */
export const VARINT_TOO_LARGE = -2;

/** Largest value a QUIC varint can carry (2^62-1); above the safe-number range. */
export const VARINT_MAX_WIRE = 4611686018427387903;

const TWO_POW_32 = 4294967296;

/** Number of bytes a varint occupies, read from its first byte (1, 2, 4 or 8). */
export function varintLengthOfFirstByte(firstByte: number): number {
  return 1 << (firstByte >>> 6);
}

/** Number of bytes the minimal encoding of `value` takes. */
export function varintLength(value: number): number {
  if (value < 64) return 1;
  if (value < 16384) return 2;
  if (value < 1073741824) return 4;
  return 8;
}

/**
 * Writes `value` at `buf[offset]` in its minimal encoding and returns the offset after it.
 * Throws RangeError for a negative, non-integer or unsafe value (our own bug, never peer input).
 */
export function writeVarint(buf: Uint8Array, offset: number, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`varint value out of range: ${value}`);
  }
  if (value < 64) {
    buf[offset] = value;
    return offset + 1;
  }
  if (value < 16384) {
    buf[offset] = 0x40 | (value >>> 8);
    buf[offset + 1] = value & 0xff;
    return offset + 2;
  }
  if (value < 1073741824) {
    buf[offset] = 0x80 | (value >>> 24);
    buf[offset + 1] = (value >>> 16) & 0xff;
    buf[offset + 2] = (value >>> 8) & 0xff;
    buf[offset + 3] = value & 0xff;
    return offset + 4;
  }
  const hi = Math.floor(value / TWO_POW_32);
  const lo = value >>> 0;
  buf[offset] = 0xc0 | (hi >>> 24);
  buf[offset + 1] = (hi >>> 16) & 0xff;
  buf[offset + 2] = (hi >>> 8) & 0xff;
  buf[offset + 3] = hi & 0xff;
  buf[offset + 4] = lo >>> 24;
  buf[offset + 5] = (lo >>> 16) & 0xff;
  buf[offset + 6] = (lo >>> 8) & 0xff;
  buf[offset + 7] = lo & 0xff;
  return offset + 8;
}

/**
 * Writes `value` in exactly `length` bytes (1, 2, 4 or 8), for a length field reserved before
 * its value is known. The value must fit; throws RangeError otherwise.
 */
export function writeVarintWithLength(buf: Uint8Array, offset: number, value: number, length: number): number {
  if (!Number.isSafeInteger(value) || value < 0 || varintLength(value) > length) {
    throw new RangeError(`varint value ${value} does not fit in ${length} bytes`);
  }
  switch (length) {
    case 1:
      buf[offset] = value;
      return offset + 1;
    case 2:
      buf[offset] = 0x40 | (value >>> 8);
      buf[offset + 1] = value & 0xff;
      return offset + 2;
    case 4:
      buf[offset] = 0x80 | (value >>> 24);
      buf[offset + 1] = (value >>> 16) & 0xff;
      buf[offset + 2] = (value >>> 8) & 0xff;
      buf[offset + 3] = value & 0xff;
      return offset + 4;
    case 8: {
      const hi = Math.floor(value / TWO_POW_32);
      const lo = value >>> 0;
      buf[offset] = 0xc0 | (hi >>> 24);
      buf[offset + 1] = (hi >>> 16) & 0xff;
      buf[offset + 2] = (hi >>> 8) & 0xff;
      buf[offset + 3] = hi & 0xff;
      buf[offset + 4] = lo >>> 24;
      buf[offset + 5] = (lo >>> 16) & 0xff;
      buf[offset + 6] = (lo >>> 8) & 0xff;
      buf[offset + 7] = lo & 0xff;
      return offset + 8;
    }
    default:
      throw new RangeError(`invalid varint length ${length}`);
  }
}

/**
 * Decodes the varint at `buf[offset]`, looking no further than `end` (default: the buffer's
 * length). Returns the value (>= 0), VARINT_NEED_MORE or VARINT_TOO_LARGE. The varint's size
 * is `varintLengthOfFirstByte(buf[offset])`.
 */
export function readVarint(buf: Uint8Array, offset: number, end: number = buf.length): number {
  if (offset >= end) return VARINT_NEED_MORE;
  const first = buf[offset];
  switch (first >>> 6) {
    case 0:
      return first;
    case 1:
      if (offset + 2 > end) return VARINT_NEED_MORE;
      return ((first & 0x3f) << 8) | buf[offset + 1];
    case 2:
      if (offset + 4 > end) return VARINT_NEED_MORE;
      return (
        (first & 0x3f) * 0x1000000 + ((buf[offset + 1] << 16) | (buf[offset + 2] << 8) | buf[offset + 3])
      );
    default: {
      if (offset + 8 > end) return VARINT_NEED_MORE;
      // 62 bits = 30 high + 32 low; safe when the high part is below 2^21.
      const hi = (first & 0x3f) * 0x1000000 + ((buf[offset + 1] << 16) | (buf[offset + 2] << 8) | buf[offset + 3]);
      if (hi >= 0x200000) return VARINT_TOO_LARGE;
      const lo = ((buf[offset + 4] << 24) | (buf[offset + 5] << 16) | (buf[offset + 6] << 8) | buf[offset + 7]) >>> 0;
      return hi * TWO_POW_32 + lo;
    }
  }
}
