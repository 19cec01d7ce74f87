/**
 * HPACK/QPACK static Huffman code (RFC 7541 §5.2 and Appendix B; RFC 9204 §4.1.2 uses it
 * unchanged).
 *
 * Encoding: `huffmanEncodedLength` gives the exact byte length (so the encoder can pick the
 * shorter of raw and Huffman before writing), `huffmanEncode` writes the code into a buffer.
 * Strings are latin1 byte strings (one char = one byte, like Skiff's raw header lists); a char
 * above 0xff is taken modulo 256, the same as `Buffer.write(s, 'latin1')` would.
 *
 * Decoding: a table-driven automaton reading 4 bits at a time (256 states, one per internal
 * node of the code tree, x 16 nibbles). Because the shortest code is 5 bits, a nibble emits at
 * most one symbol, so each table cell holds the next state, an optional symbol and two flags.
 * Rejected alternative: a bit-by-bit tree walk, 2-4x slower on header-sized strings. The
 * automaton enforces RFC 7541 §5.2: an EOS symbol in the data, padding longer than 7 bits and
 * padding that is not the most significant bits of EOS (all ones) are all errors.
 *
 * The code table was transcribed mechanically from the RFC's Appendix B rows (each row's bit
 * string was checked against its hex column and length) and is tested against the RFC's
 * Appendix C examples and for being a complete prefix code.
 */

/** Code of each symbol 0..256 (256 = EOS), right-aligned. */
export const HUFFMAN_CODES: Uint32Array = Uint32Array.of(
  0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7,
  0xfffffe8, 0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec,
  0xfffffed, 0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3,
  0xffffff4, 0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb,
  0x14, 0x3f8, 0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa,
  0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
  0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
  0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb, 0x3fc,
  0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62,
  0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a,
  0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72,
  0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0, 0x1ffc, 0x3ffc, 0x22,
  0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26,
  0x27, 0x6, 0x74, 0x75, 0x28, 0x29, 0x2a, 0x7,
  0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78,
  0x79, 0x7a, 0x7b, 0x7ffe, 0x7fc, 0x3ffd, 0x1ffd, 0xffffffc,
  0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4, 0x3fffd5, 0x7fffd9,
  0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb, 0x7fffdf,
  0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
  0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef,
  0x3fffda, 0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde,
  0x7fffea, 0x3fffdd, 0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec,
  0x1fffe0, 0x1fffe1, 0x3fffe0, 0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef,
  0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4, 0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1,
  0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7, 0x7ffff2, 0x3fffe8, 0x1ffffec,
  0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf, 0x3ffffe5, 0xfffff1, 0x1ffffed,
  0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7, 0x7ffffe2, 0xfffff2,
  0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4, 0x7ffffe5,
  0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
  0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4,
  0x3ffffeb, 0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea,
  0x7ffffeb, 0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
  0x3fffffff,
);

/** Length in bits of each symbol's code (5..30). */
export const HUFFMAN_LENGTHS: Uint8Array = Uint8Array.of(
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
  28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
  5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
  7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
  6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
  24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
  21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
  26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30,
);

const EOS = 256;

/** Exact length in bytes of `s` once Huffman-coded (padding included). */
export function huffmanEncodedLength(s: string): number {
  let bits = 0;
  for (let i = 0; i < s.length; i++) bits += HUFFMAN_LENGTHS[s.charCodeAt(i) & 0xff];
  return (bits + 7) >>> 3;
}

/**
 * Writes the Huffman code of `s` at `buf[offset]` and returns the offset after it. The caller
 * reserved `huffmanEncodedLength(s)` bytes.
 */
export function huffmanEncode(s: string, buf: Uint8Array, offset: number): number {
  // `acc` holds `n` (< 8) pending bits between symbols; a code of up to 24 bits is shifted in
  // whole (at most 31 bits, still a positive int32), longer codes (only rare bytes, 25-30
  // bits) are shifted in as two halves.
  let acc = 0;
  let n = 0;
  let o = offset;
  for (let i = 0; i < s.length; i++) {
    const sym = s.charCodeAt(i) & 0xff;
    const code = HUFFMAN_CODES[sym];
    const len = HUFFMAN_LENGTHS[sym];
    if (len > 24) {
      acc = (acc << (len - 16)) | (code >>> 16);
      n += len - 16;
      while (n >= 8) {
        n -= 8;
        buf[o++] = (acc >>> n) & 0xff;
      }
      acc &= (1 << n) - 1;
      acc = (acc << 16) | (code & 0xffff);
      n += 16;
    } else {
      acc = (acc << len) | code;
      n += len;
    }
    while (n >= 8) {
      n -= 8;
      buf[o++] = (acc >>> n) & 0xff;
    }
    acc &= (1 << n) - 1;
  }
  // Pad with the most significant bits of EOS, i.e. ones (RFC 7541 §5.2).
  if (n > 0) buf[o++] = ((acc << (8 - n)) | (0xff >>> n)) & 0xff;
  return o;
}

/** Upper bound on the decoded length of `encodedLength` Huffman bytes (shortest code: 5 bits). */
export function huffmanMaxDecodedLength(encodedLength: number): number {
  return Math.floor((encodedLength * 8) / 5);
}

const FLAG_EMIT = 1;
const FLAG_FAIL = 2;
const FLAG_ACCEPT = 4;

/** cell = next state | symbol << 8 | flags << 16, at [state * 16 + nibble]. */
const DECODE_TABLE: Uint32Array = buildDecodeTable();

function buildDecodeTable(): Uint32Array {
  // Code tree: internal nodes 0..255 (0 = root). A child >= 0 is an internal node; a child
  // < 0 is the leaf for symbol (-child - 1).
  const zero: number[] = [0];
  const one: number[] = [0];
  const accepting: boolean[] = [true];
  const allOnes: boolean[] = [true];
  const depth: number[] = [0];
  for (let sym = 0; sym <= EOS; sym++) {
    const code = HUFFMAN_CODES[sym];
    const len = HUFFMAN_LENGTHS[sym];
    let node = 0;
    for (let b = len - 1; b >= 0; b--) {
      const bit = (code >>> b) & 1;
      const children = bit === 1 ? one : zero;
      if (b === 0) {
        if (children[node] !== 0) throw new Error(`huffman table: symbol ${sym} collides`);
        children[node] = -sym - 1;
        break;
      }
      let next = children[node];
      if (next < 0) throw new Error(`huffman table: symbol ${sym} has a prefix that is a code`);
      if (next === 0) {
        next = zero.length;
        zero.push(0);
        one.push(0);
        depth.push(depth[node] + 1);
        const ones = allOnes[node] && bit === 1;
        allOnes.push(ones);
        // A string may end inside a code only on up to 7 padding bits, all ones (§5.2).
        accepting.push(ones && depth[node] + 1 <= 7);
        children[node] = next;
      }
      node = next;
    }
  }
  if (zero.length !== 256) throw new Error(`huffman table: ${zero.length} internal nodes, expected 256`);
  for (let s = 0; s < 256; s++) {
    if (zero[s] === 0 || one[s] === 0) throw new Error('huffman table: incomplete code');
  }

  const table = new Uint32Array(256 * 16);
  for (let state = 0; state < 256; state++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let node = state;
      let flags = 0;
      let sym = 0;
      for (let b = 3; b >= 0; b--) {
        const child = ((nibble >>> b) & 1) === 1 ? one[node] : zero[node];
        if (child < 0) {
          const s = -child - 1;
          if (s === EOS) {
            flags = FLAG_FAIL;
            break;
          }
          flags |= FLAG_EMIT;
          sym = s;
          node = 0;
        } else {
          node = child;
        }
      }
      if ((flags & FLAG_FAIL) === 0 && accepting[node]) flags |= FLAG_ACCEPT;
      table[state * 16 + nibble] = node | (sym << 8) | (flags << 16);
    }
  }
  return table;
}

/**
 * Decodes the Huffman string in `src[start, end)` into `dst` at `dstOffset`. Returns the number
 * of bytes written, or -1 when the input is invalid (EOS, bad or overlong padding). `dst` must
 * have `huffmanMaxDecodedLength(end - start)` bytes of room; decoding never writes more.
 * Never throws, never allocates.
 */
export function huffmanDecode(src: Uint8Array, start: number, end: number, dst: Uint8Array, dstOffset: number): number {
  let state = 0;
  let isAccepting = true;
  let o = dstOffset;
  for (let i = start; i < end; i++) {
    const b = src[i];
    let cell = DECODE_TABLE[(state << 4) | (b >>> 4)];
    let flags = cell >>> 16;
    if ((flags & FLAG_FAIL) !== 0) return -1;
    if ((flags & FLAG_EMIT) !== 0) dst[o++] = (cell >>> 8) & 0xff;
    state = cell & 0xff;
    cell = DECODE_TABLE[(state << 4) | (b & 0x0f)];
    flags = cell >>> 16;
    if ((flags & FLAG_FAIL) !== 0) return -1;
    if ((flags & FLAG_EMIT) !== 0) dst[o++] = (cell >>> 8) & 0xff;
    state = cell & 0xff;
    isAccepting = (flags & FLAG_ACCEPT) !== 0;
  }
  return isAccepting ? o - dstOffset : -1;
}

/** Convenience for tests and cold paths: decodes to a latin1 string, or null when invalid. */
export function huffmanDecodeToString(src: Uint8Array): string | null {
  const dst = Buffer.allocUnsafe(huffmanMaxDecodedLength(src.length));
  const n = huffmanDecode(src, 0, src.length, dst, 0);
  return n < 0 ? null : dst.toString('latin1', 0, n);
}

/** Convenience: Huffman-codes a latin1 string into a new Buffer. */
export function huffmanEncodeToBuffer(s: string): Buffer {
  const out = Buffer.allocUnsafe(huffmanEncodedLength(s));
  huffmanEncode(s, out, 0);
  return out;
}
