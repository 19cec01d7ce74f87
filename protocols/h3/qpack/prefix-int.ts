/**
 * Prefixed integers (RFC 7541 §5.1, used unmodified by RFC 9204 §4.1.1): the low N bits of the
 * first byte hold the value when it is below 2^N-1; otherwise they are all ones and the rest
 * follows in 7-bit groups, least significant first, the high bit marking continuation.
 *
 * Overflow protection: values are JavaScript numbers, accepted up to Number.MAX_SAFE_INTEGER
 * (RFC 9204 asks for 62 bits; anything above 2^53 is an index or length no field section can
 * honour, so refusing it costs nothing real). At most 8 continuation bytes are read, which
 * also refuses endless zero-valued continuation bytes ("0xff 0x80 0x80 ...") instead of
 * looping over them. Decoding never throws and never allocates: the result goes into a
 * caller-owned, reusable `PrefixInt`.
 */

export const PREFIX_INT_OK = 0;
/** The buffer ended before the integer did. */
export const PREFIX_INT_NEED_MORE = -1;
/** Above Number.MAX_SAFE_INTEGER, or more continuation bytes than that could need. */
export const PREFIX_INT_OVERFLOW = -2;

const MAX_CONTINUATION_BYTES = 8;

/** Reusable decode result: the value and the offset just past the integer. */
export class PrefixInt {
  value: number;
  offset: number;
  constructor() {
    this.value = 0;
    this.offset = 0;
  }
}

/**
 * Decodes the integer whose first byte is `buf[offset]` with a `prefixBits`-bit prefix (1..8),
 * reading no further than `end`. On PREFIX_INT_OK, `out.value` and `out.offset` are set.
 */
export function decodePrefixInt(buf: Uint8Array, offset: number, end: number, prefixBits: number, out: PrefixInt): number {
  if (offset >= end) return PREFIX_INT_NEED_MORE;
  const max = (1 << prefixBits) - 1;
  let value = buf[offset] & max;
  let p = offset + 1;
  if (value < max) {
    out.value = value;
    out.offset = p;
    return PREFIX_INT_OK;
  }
  let multiplier = 1;
  for (let i = 0; i < MAX_CONTINUATION_BYTES; i++) {
    if (p >= end) return PREFIX_INT_NEED_MORE;
    const b = buf[p++];
    value += (b & 0x7f) * multiplier;
    if (value > Number.MAX_SAFE_INTEGER) return PREFIX_INT_OVERFLOW;
    if ((b & 0x80) === 0) {
      out.value = value;
      out.offset = p;
      return PREFIX_INT_OK;
    }
    multiplier *= 128;
  }
  return PREFIX_INT_OVERFLOW;
}

/** Bytes needed to encode `value` with a `prefixBits`-bit prefix. */
export function prefixIntLength(prefixBits: number, value: number): number {
  const max = (1 << prefixBits) - 1;
  if (value < max) return 1;
  let rest = value - max;
  let n = 2;
  while (rest >= 128) {
    rest = Math.floor(rest / 128);
    n++;
  }
  return n;
}

/**
 * Writes `value` with a `prefixBits`-bit prefix at `buf[offset]`; `flags` are the bits above the
 * prefix in the first byte (e.g. 0x80 for an indexed field line). Returns the offset after it.
 * The value must be a non-negative safe integer (our own data, never peer input).
 */
export function encodePrefixInt(buf: Uint8Array, offset: number, prefixBits: number, flags: number, value: number): number {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    buf[offset] = flags | value;
    return offset + 1;
  }
  buf[offset++] = flags | max;
  let rest = value - max;
  while (rest >= 128) {
    buf[offset++] = (rest % 128) | 0x80;
    rest = Math.floor(rest / 128);
  }
  buf[offset++] = rest;
  return offset;
}
