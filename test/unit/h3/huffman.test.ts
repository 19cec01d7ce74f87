// The HPACK/QPACK Huffman code (protocols/h3/qpack/huffman.ts): the table checked as a whole
// (257 canonical, complete codes), the RFC 7541 Appendix C.4/C.6 vectors, every padding rule,
// and the table-driven decoder against a bit-by-bit reference decoder on arbitrary bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  HUFFMAN_CODES,
  HUFFMAN_LENGTHS,
  huffmanDecode,
  huffmanDecodeToString,
  huffmanEncode,
  huffmanEncodeToBuffer,
  huffmanEncodedLength,
  huffmanMaxDecodedLength,
} from '../../../protocols/h3/qpack/huffman.js';

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

// RFC 7541 C.4 (requests) and C.6 (responses): literal values with their Huffman encodings.
const RFC_VECTORS: Array<[string, string]> = [
  ['www.example.com', 'f1e3 c2e5 f23a 6ba0 ab90 f4ff'],
  ['no-cache', 'a8eb 1064 9cbf'],
  ['custom-key', '25a8 49e9 5ba9 7d7f'],
  ['custom-value', '25a8 49e9 5bb8 e8b4 bf'],
  ['302', '6402'],
  ['307', '640e ff'],
  ['private', 'aec3 771a 4b'],
  ['Mon, 21 Oct 2013 20:13:21 GMT', 'd07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff'],
  ['Mon, 21 Oct 2013 20:13:22 GMT', 'd07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff'],
  ['https://www.example.com', '9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3'],
  ['gzip', '9bd9 ab'],
  [
    'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1',
    '94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07',
  ],
];

test('table: 257 codes, lengths 5..30, EOS is 30 ones', () => {
  assert.equal(HUFFMAN_CODES.length, 257);
  assert.equal(HUFFMAN_LENGTHS.length, 257);
  for (let s = 0; s < 257; s++) {
    assert.ok(HUFFMAN_LENGTHS[s] >= 5 && HUFFMAN_LENGTHS[s] <= 30, `length of ${s}`);
    assert.ok(HUFFMAN_CODES[s] < 2 ** HUFFMAN_LENGTHS[s], `code of ${s} fits its length`);
  }
  assert.equal(HUFFMAN_CODES[256], 0x3fffffff);
  assert.equal(HUFFMAN_LENGTHS[256], 30);
  // Spot rows from RFC 7541 Appendix B.
  assert.deepEqual([HUFFMAN_CODES[0], HUFFMAN_LENGTHS[0]], [0x1ff8, 13]);
  assert.deepEqual([HUFFMAN_CODES[47], HUFFMAN_LENGTHS[47]], [0x18, 6]); // '/'
  assert.deepEqual([HUFFMAN_CODES[48], HUFFMAN_LENGTHS[48]], [0x0, 5]); // '0'
  assert.deepEqual([HUFFMAN_CODES[97], HUFFMAN_LENGTHS[97]], [0x3, 5]); // 'a'
  assert.deepEqual([HUFFMAN_CODES[255], HUFFMAN_LENGTHS[255]], [0x3ffffee, 26]);
});

test('table: a complete canonical prefix code (Kraft sum exactly 1, codes in canonical order)', () => {
  // Kraft: sum of 2^-len == 1, computed exactly in units of 2^-30.
  let kraft = 0;
  for (let s = 0; s < 257; s++) kraft += 2 ** (30 - HUFFMAN_LENGTHS[s]);
  assert.equal(kraft, 2 ** 30);
  // Canonical: sorted by (length, symbol), each code is the previous plus one, shifted left by
  // the length difference. Any transcription slip in a row breaks this chain.
  const order = Array.from({ length: 257 }, (_, i) => i).sort(
    (a, b) => HUFFMAN_LENGTHS[a] - HUFFMAN_LENGTHS[b] || a - b,
  );
  assert.equal(HUFFMAN_CODES[order[0]], 0);
  for (let i = 1; i < order.length; i++) {
    const prev = order[i - 1];
    const cur = order[i];
    const expected = (HUFFMAN_CODES[prev] + 1) * 2 ** (HUFFMAN_LENGTHS[cur] - HUFFMAN_LENGTHS[prev]);
    assert.equal(HUFFMAN_CODES[cur], expected, `symbol ${cur}`);
  }
});

test('RFC 7541 Appendix C vectors: encode, exact length, decode', () => {
  for (const [text, encoded] of RFC_VECTORS) {
    const expected = hex(encoded);
    assert.equal(huffmanEncodedLength(text), expected.length, text);
    assert.equal(huffmanEncodeToBuffer(text).toString('hex'), expected.toString('hex'), text);
    assert.equal(huffmanDecodeToString(expected), text);
  }
});

test('encode at an offset leaves surrounding bytes alone', () => {
  const buf = Buffer.alloc(20, 0xaa);
  const end = huffmanEncode('no-cache', buf, 3);
  assert.equal(end, 9);
  assert.equal(buf.subarray(3, 9).toString('hex'), 'a8eb10649cbf');
  assert.equal(buf[2], 0xaa);
  assert.equal(buf[9], 0xaa);
});

test('empty string: zero bytes each way', () => {
  assert.equal(huffmanEncodedLength(''), 0);
  assert.equal(huffmanEncodeToBuffer('').length, 0);
  assert.equal(huffmanDecodeToString(Buffer.alloc(0)), '');
});

test('padding rules (RFC 7541 §5.2)', () => {
  // 'a' = 00011, padded with 111 -> 0x1f.
  assert.equal(huffmanDecodeToString(hex('1f')), 'a');
  // Padding not all ones: 00011 000.
  assert.equal(huffmanDecodeToString(hex('18')), null);
  // Padding of 8+ bits (a whole extra byte of ones), even though it is an EOS prefix.
  assert.equal(huffmanDecodeToString(hex('1fff')), null);
  assert.equal(huffmanDecodeToString(hex('ff')), null);
  // A full EOS symbol (30 ones) padded to 32 bits.
  assert.equal(huffmanDecodeToString(hex('ffffffff')), null);
  // EOS inside the data: 'a' then EOS.
  const bits = '00011' + '1'.repeat(30) + '1';
  const bytes = Buffer.alloc(bits.length / 8);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(bits.slice(i * 8, i * 8 + 8), 2);
  assert.equal(huffmanDecodeToString(bytes), null);
  // Every padding length from 1 to 7 bits is accepted: 'a' is 5 bits, so n x 'a' leaves
  // (8 - 5n mod 8) mod 8 padding bits; 'aaaaa' (25 bits) is the 7-bit case.
  for (let n = 1; n <= 8; n++) {
    const s = 'a'.repeat(n);
    const encoded = huffmanEncodeToBuffer(s);
    assert.equal(encoded.length, Math.ceil((5 * n) / 8));
    assert.equal(huffmanDecodeToString(encoded), s);
  }
});

/** Reference decoder: bit by bit against the code table, with the §5.2 padding rules. */
function referenceDecode(src: Uint8Array): string | null {
  const byCode = new Map<string, number>();
  for (let s = 0; s < 257; s++) byCode.set(`${HUFFMAN_LENGTHS[s]}:${HUFFMAN_CODES[s]}`, s);
  let out = '';
  let code = 0;
  let len = 0;
  for (const b of src) {
    for (let i = 7; i >= 0; i--) {
      code = code * 2 + ((b >>> i) & 1);
      len++;
      const sym = byCode.get(`${len}:${code}`);
      if (sym !== undefined) {
        if (sym === 256) return null;
        out += String.fromCharCode(sym);
        code = 0;
        len = 0;
      }
    }
  }
  if (len > 7) return null;
  if (len > 0 && code !== 2 ** len - 1) return null;
  return out;
}

test('property: round trip of arbitrary byte strings, exact length', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      const s = Buffer.from(bytes).toString('latin1');
      const encoded = huffmanEncodeToBuffer(s);
      assert.equal(encoded.length, huffmanEncodedLength(s));
      assert.equal(huffmanDecodeToString(encoded), s);
    }),
    { numRuns: 1000 },
  );
});

test('property: arbitrary input decodes exactly like the reference decoder, within the bound', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const dst = Buffer.alloc(huffmanMaxDecodedLength(bytes.length) + 4, 0xee);
      const n = huffmanDecode(bytes, 0, bytes.length, dst, 0);
      const expected = referenceDecode(bytes);
      if (expected === null) {
        assert.equal(n, -1);
      } else {
        assert.equal(dst.toString('latin1', 0, n), expected);
      }
      assert.ok(n <= huffmanMaxDecodedLength(bytes.length));
      // Never writes past the bound.
      assert.equal(dst[huffmanMaxDecodedLength(bytes.length)], 0xee);
    }),
    { numRuns: 1000 },
  );
});

test('property: valid encodings with their last byte perturbed never decode to garbage silently', () => {
  fc.assert(
    fc.property(fc.string({ minLength: 1, maxLength: 40 }), fc.integer({ min: 0, max: 255 }), (s, last) => {
      const latin = Buffer.from(s, 'latin1').toString('latin1');
      const encoded = huffmanEncodeToBuffer(latin);
      encoded[encoded.length - 1] = last;
      const got = huffmanDecodeToString(encoded);
      assert.equal(got, referenceDecode(encoded));
    }),
    { numRuns: 500 },
  );
});
