// QPACK (protocols/h3/qpack/*): prefixed integers (RFC 7541 C.1), the static table, the
// static-only encoder, the decoder with and without a dynamic table (RFC 9204 Appendix B
// replayed step by step), the decoder-stream reader of our encoder, every error with its code,
// and properties: encode -> decode round trips, and arbitrary bytes never throwing nor
// exceeding the field-section size limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import {
  FrameEvent,
  FrameReader,
  FRAME_HEADERS,
  H3Error,
  H3_EXCESSIVE_LOAD,
  QPACK_DECODER_STREAM_ERROR,
  QPACK_DECOMPRESSION_FAILED,
  QPACK_ENCODER_STREAM_ERROR,
} from '../../../protocols/h3/frames.js';
import {
  PREFIX_INT_NEED_MORE,
  PREFIX_INT_OK,
  PREFIX_INT_OVERFLOW,
  PrefixInt,
  decodePrefixInt,
  encodePrefixInt,
  prefixIntLength,
} from '../../../protocols/h3/qpack/prefix-int.js';
import { STATIC_BY_NAME, STATIC_TABLE, STATIC_TABLE_SIZE, staticName, staticValue } from '../../../protocols/h3/qpack/static-table.js';
import { QpackDecoderStreamReader, QpackEncoder } from '../../../protocols/h3/qpack/encoder.js';
import { ENTRY_OVERHEAD, QpackDecoder } from '../../../protocols/h3/qpack/decoder.js';
import { huffmanEncodeToBuffer } from '../../../protocols/h3/qpack/huffman.js';

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

function decode(decoder: QpackDecoder, section: Uint8Array, streamId = 0): string[] | H3Error {
  const out: string[] = [];
  const err = decoder.decodeFieldSection(section, streamId, out);
  return err ?? out;
}

function decodeOk(decoder: QpackDecoder, section: Uint8Array, streamId = 0): string[] {
  const r = decode(decoder, section, streamId);
  if (r instanceof H3Error) assert.fail(`unexpected ${r.toString()}`);
  return r;
}

function decodeErr(decoder: QpackDecoder, section: Uint8Array): H3Error {
  const r = decode(decoder, section);
  assert.ok(r instanceof H3Error, `expected an error for ${Buffer.from(section).toString('hex')}`);
  return r;
}

function sectionSize(fields: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < fields.length; i += 2) n += fields[i].length + fields[i + 1].length + ENTRY_OVERHEAD;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Prefixed integers

test('prefixed integers: RFC 7541 C.1 examples', () => {
  const buf = Buffer.alloc(8);
  assert.equal(encodePrefixInt(buf, 0, 5, 0, 10), 1);
  assert.equal(buf[0], 0x0a);
  assert.equal(encodePrefixInt(buf, 0, 5, 0, 1337), 3);
  assert.equal(buf.subarray(0, 3).toString('hex'), '1f9a0a');
  assert.equal(encodePrefixInt(buf, 0, 8, 0, 42), 1);
  assert.equal(buf[0], 0x2a);
  const out = new PrefixInt();
  assert.equal(decodePrefixInt(hex('1f9a0a'), 0, 3, 5, out), PREFIX_INT_OK);
  assert.deepEqual([out.value, out.offset], [1337, 3]);
  // Flag bits above the prefix are ignored by the decoder and kept by the encoder.
  assert.equal(encodePrefixInt(buf, 0, 5, 0xe0, 10), 1);
  assert.equal(buf[0], 0xea);
  assert.equal(decodePrefixInt(buf, 0, 1, 5, out), PREFIX_INT_OK);
  assert.equal(out.value, 10);
});

test('prefixed integers: truncation and overflow', () => {
  const out = new PrefixInt();
  assert.equal(decodePrefixInt(hex('1f9a'), 0, 2, 5, out), PREFIX_INT_NEED_MORE);
  assert.equal(decodePrefixInt(hex(''), 0, 0, 5, out), PREFIX_INT_NEED_MORE);
  // 2^53 and beyond.
  assert.equal(decodePrefixInt(hex('ff ff ff ff ff ff ff ff 7f'), 0, 9, 8, out), PREFIX_INT_OVERFLOW);
  // Endless zero-valued continuation bytes are refused after 8.
  assert.equal(decodePrefixInt(hex('ff 80 80 80 80 80 80 80 80 00'), 0, 10, 8, out), PREFIX_INT_OVERFLOW);
  // Largest safe value round-trips.
  const buf = Buffer.alloc(16);
  const end = encodePrefixInt(buf, 0, 6, 0, Number.MAX_SAFE_INTEGER);
  assert.equal(end, prefixIntLength(6, Number.MAX_SAFE_INTEGER));
  assert.equal(decodePrefixInt(buf, 0, end, 6, out), PREFIX_INT_OK);
  assert.equal(out.value, Number.MAX_SAFE_INTEGER);
});

test('prefixed integers: property round trip for every prefix size', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 8 }), fc.maxSafeNat(), (prefix, value) => {
      const buf = Buffer.alloc(16);
      const flags = prefix === 8 ? 0 : (0xff << prefix) & 0xff;
      const end = encodePrefixInt(buf, 1, prefix, flags, value);
      assert.equal(end - 1, prefixIntLength(prefix, value));
      const out = new PrefixInt();
      assert.equal(decodePrefixInt(buf, 1, end, prefix, out), PREFIX_INT_OK);
      assert.equal(out.value, value);
      assert.equal(out.offset, end);
      for (let cut = 1; cut < end; cut++) {
        assert.equal(decodePrefixInt(buf, 1, cut, prefix, out), PREFIX_INT_NEED_MORE);
      }
    }),
    { numRuns: 1000 },
  );
});

// ---------------------------------------------------------------------------------------------
// Static table

test('static table: 99 entries matching RFC 9204 Appendix A', () => {
  assert.equal(STATIC_TABLE_SIZE, 99);
  assert.equal(STATIC_TABLE.length, 198);
  const spot: Array<[number, string, string]> = [
    [0, ':authority', ''],
    [1, ':path', '/'],
    [2, 'age', '0'],
    [14, 'set-cookie', ''],
    [15, ':method', 'CONNECT'],
    [17, ':method', 'GET'],
    [21, ':method', 'PUT'],
    [23, ':scheme', 'https'],
    [25, ':status', '200'],
    [29, 'accept', '*/*'],
    [31, 'accept-encoding', 'gzip, deflate, br'],
    [41, 'cache-control', 'public, max-age=31536000'],
    [52, 'content-type', 'text/html; charset=utf-8'],
    [54, 'content-type', 'text/plain;charset=utf-8'],
    [58, 'strict-transport-security', 'max-age=31536000; includesubdomains; preload'],
    [62, 'x-xss-protection', '1; mode=block'],
    [63, ':status', '100'],
    [71, ':status', '500'],
    [73, 'access-control-allow-credentials', 'FALSE'],
    [85, 'content-security-policy', "script-src 'none'; object-src 'none'; base-uri 'none'"],
    [95, 'user-agent', ''],
    [98, 'x-frame-options', 'sameorigin'],
  ];
  for (const [i, name, value] of spot) {
    assert.equal(staticName(i), name, `name ${i}`);
    assert.equal(staticValue(i), value, `value ${i}`);
  }
  // Every name is lower case and every (name, value) pair is unique.
  const pairs = new Set<string>();
  for (let i = 0; i < 99; i++) {
    assert.equal(staticName(i), staticName(i).toLowerCase());
    pairs.add(`${staticName(i)}\n${staticValue(i)}`);
  }
  assert.equal(pairs.size, 99);
  // The whole table, pinned: SHA-256 of "name\tvalue\n" for entries 0..98, computed from the
  // rows of RFC 9204 Appendix A as published (quicwg/base-drafts rfc9204.md). Any changed,
  // swapped or missing entry changes it.
  let text = '';
  for (let i = 0; i < 99; i++) text += `${staticName(i)}\t${staticValue(i)}\n`;
  assert.equal(
    createHash('sha256').update(text, 'latin1').digest('hex'),
    '9415a9b9a4239254476dc8e5ddbbd1875459d0a8e3fd09066402e918ae1ebea6',
  );
  assert.equal(STATIC_BY_NAME.get(':status')?.nameIndex, 24);
  assert.equal(STATIC_BY_NAME.get(':status')?.values.get('404'), 27);
  assert.equal(STATIC_BY_NAME.get('x-frame-options')?.values.get('deny'), 97);
});

// ---------------------------------------------------------------------------------------------
// Encoder

test('encoder: RFC 9204 B.1 literal with static name reference, byte for byte', () => {
  const plain = new QpackEncoder({ huffman: false });
  assert.equal(
    plain.encodeFieldSection([':path', '/index.html']).toString('hex'),
    '0000510b2f696e6465782e68746d6c',
  );
});

test('encoder: indexed, name-reference and literal-name forms', () => {
  const enc = new QpackEncoder({ huffman: false });
  // :method GET = static 17 -> 0xc0|17; :status 200 = 25 -> 0xd9; content-type text/plain = 53.
  assert.equal(enc.encodeFieldSection([':method', 'GET']).toString('hex'), '0000d1');
  assert.equal(enc.encodeFieldSection([':status', '200']).toString('hex'), '0000d9');
  assert.equal(enc.encodeFieldSection(['content-type', 'text/plain']).toString('hex'), '0000f5');
  // Index >= 63 needs a continuation byte: :status 500 = 71 -> ff 08.
  assert.equal(enc.encodeFieldSection([':status', '500']).toString('hex'), '0000ff08');
  // Name reference with an index >= 15: user-agent = 95 -> 5f 50, then value.
  assert.equal(enc.encodeFieldSection(['user-agent', 'x']).toString('hex'), '00005f500178');
  // Literal name: 001 N=0 H=0 len(3+) = 0x23 'foo', value 'bar'.
  assert.equal(enc.encodeFieldSection(['foo', 'bar']).toString('hex'), '000023666f6f03626172');
  // Name length >= 7 needs a continuation: 0x27 + (len - 7).
  assert.equal(enc.encodeFieldSection(['x-trace', '']).toString('hex'), '0000' + '2700' + '782d7472616365' + '00');
  // Empty section: just the prefix.
  assert.equal(enc.encodeFieldSection([]).toString('hex'), '0000');
});

test('encoder: Huffman only when strictly shorter', () => {
  const enc = new QpackEncoder();
  // 'www.example.com' codes to 12 bytes instead of 15: H bit set, length 12.
  const s = enc.encodeFieldSection([':authority', 'www.example.com']);
  assert.equal(s.toString('hex'), '0000508cf1e3c2e5f23a6ba0ab90f4ff');
  // A string of rare bytes is longer when coded: sent raw.
  const rare = '\u00fe\u00fe\u00fe';
  const raw = enc.encodeFieldSection(['x', rare]);
  assert.equal(raw[raw.length - 4], 3, 'raw length byte, no H bit');
  // Literal name with Huffman: 001 N H=1 len.
  const named = enc.encodeFieldSection(['custom-key', 'custom-value']);
  assert.equal(named[2] & 0xf8, 0x28);
  assert.deepEqual(decodeOk(new QpackDecoder(), named), ['custom-key', 'custom-value']);
  assert.equal(huffmanEncodeToBuffer('custom-key').length, 8);
});

test('encoder: HEADERS frame, zero-copy view and owned copy', () => {
  const enc = new QpackEncoder({ initialBufferSize: 16 }); // forces growth
  const fields = [':status', '200', 'content-type', 'application/json', 'x-request-id', 'a'.repeat(300)];
  const frame = enc.encodeHeadersFrame(fields);
  const r = new FrameReader();
  r.feed(frame);
  assert.equal(r.next(), FrameEvent.Frame);
  assert.equal(r.type, FRAME_HEADERS);
  assert.deepEqual(decodeOk(new QpackDecoder(), r.payload), fields);
  const view = enc.encodeHeadersFrameView(fields);
  assert.deepEqual(Buffer.from(view), frame);
  // The owned copy survives the next encode; the view does not promise to.
  enc.encodeHeadersFrame([':status', '404']);
  r.feed(frame);
  assert.equal(r.next(), FrameEvent.Frame);
  assert.deepEqual(decodeOk(new QpackDecoder(), r.payload), fields);
});

// ---------------------------------------------------------------------------------------------
// Decoder, static only (Skiff's default)

test('decoder: RFC 9204 B.1 and static indexed lines', () => {
  const dec = new QpackDecoder();
  assert.deepEqual(decodeOk(dec, hex('0000510b2f696e6465782e68746d6c')), [':path', '/index.html']);
  assert.deepEqual(decodeOk(dec, hex('0000d1d7c1')), [':method', 'GET', ':scheme', 'https', ':path', '/']);
  assert.deepEqual(decodeOk(dec, hex('0000')), []);
  // Static strings are handed out as the table's own strings.
  const out = decodeOk(dec, hex('0000d1'));
  assert.equal(out[1], STATIC_TABLE[17 * 2 + 1]);
  // Post-base and dynamic forms with Required Insert Count 0 are invalid references.
  assert.equal(decodeErr(dec, hex('000010')).code, QPACK_DECOMPRESSION_FAILED);
  assert.equal(decodeErr(dec, hex('000080')).code, QPACK_DECOMPRESSION_FAILED);
  assert.equal(decodeErr(dec, hex('0000400161')).code, QPACK_DECOMPRESSION_FAILED);
  assert.equal(decodeErr(dec, hex('0000000161')).code, QPACK_DECOMPRESSION_FAILED);
  assert.equal(dec.takeDecoderStreamData(), null, 'nothing to acknowledge');
});

test('decoder: malformed sections, each QPACK_DECOMPRESSION_FAILED as a connection error', () => {
  const dec = new QpackDecoder();
  const bad: Array<[string, string]> = [
    ['', 'empty: no prefix'],
    ['00', 'no Base'],
    ['0100', 'dynamic reference with capacity 0'],
    ['0000ff24', 'static index 99'],
    ['00005f7f', 'name index beyond the table'],
    ['0000510b2f69', 'value shorter than its length'],
    ['00005105', 'value length with no bytes'],
    ['000023666f', 'literal name cut short'],
    ['0000518118', 'Huffman value with bad padding'],
    ['000051 84 ffffffff', 'Huffman value containing EOS'],
    ['0000ffffffffffffffffffff7f', 'index overflow'],
    ['0000517fffffffffffffffff7f', 'length overflow'],
    ['0000517f ffffff0f', 'length far beyond the section'],
  ];
  for (const [h, why] of bad) {
    const err = decodeErr(dec, hex(h));
    assert.equal(err.code, QPACK_DECOMPRESSION_FAILED, why);
    assert.equal(err.isConnectionError, true, why);
  }
});

test('decoder: field section size limit (name + value + 32 per field)', () => {
  const enc = new QpackEncoder();
  const fields = ['x-a', 'v'.repeat(100), 'x-b', 'w'.repeat(100)];
  const size = sectionSize(fields);
  assert.deepEqual(decodeOk(new QpackDecoder({ maxFieldSectionSize: size }), enc.encodeFieldSection(fields)), fields);
  const err = decodeErr(new QpackDecoder({ maxFieldSectionSize: size - 1 }), enc.encodeFieldSection(fields));
  assert.equal(err.code, H3_EXCESSIVE_LOAD);
  assert.equal(err.isConnectionError, false, 'a stream error: the server may answer 431');
  assert.equal(err.isHeadersTooLarge, true);
  // Indexed lines count too: 100 x ':method GET' is 100 bytes on the wire, 4,200 decoded.
  const many = Buffer.concat([hex('0000'), Buffer.alloc(100, 0xd1)]);
  assert.equal(decodeErr(new QpackDecoder({ maxFieldSectionSize: 4000 }), many).code, H3_EXCESSIVE_LOAD);
});

// ---------------------------------------------------------------------------------------------
// Decoder with a dynamic table: RFC 9204 Appendix B replayed

test('decoder: RFC 9204 Appendix B.2-B.5 with a 220-byte table', () => {
  const dec = new QpackDecoder({ maxTableCapacity: 220 });

  // B.2: Set Dynamic Table Capacity=220, two inserts with static name references.
  assert.equal(
    dec.feedEncoderStream(hex('3fbd01 c00f7777772e6578616d706c652e636f6d c10c2f73616d706c652f70617468')),
    null,
  );
  assert.equal(dec.tableCapacity, 220);
  assert.equal(dec.insertCount, 2);
  assert.equal(dec.tableSize, 106);
  // We acknowledge inserts right away (Insert Count Increment 2); the RFC's decoder relies on
  // the Section Acknowledgment instead. Both are valid feedback choices.
  assert.equal(dec.takeDecoderStreamData()?.toString('hex'), '02');
  assert.deepEqual(decodeOk(dec, hex('0381 10 11'), 4), [':authority', 'www.example.com', ':path', '/sample/path']);
  assert.equal(dec.takeDecoderStreamData()?.toString('hex'), '84', 'Section Acknowledgment (stream=4)');

  // B.3: Speculative insert with a literal name, acknowledged by Insert Count Increment (1).
  assert.equal(dec.feedEncoderStream(hex('4a637573746f6d2d6b65790c637573746f6d2d76616c7565')), null);
  assert.equal(dec.insertCount, 3);
  assert.equal(dec.tableSize, 160);
  assert.equal(dec.takeDecoderStreamData()?.toString('hex'), '01');

  // B.4: Duplicate (relative index 2 = absolute 0), a section on stream 8, then cancellation.
  assert.equal(dec.feedEncoderStream(hex('02')), null);
  assert.equal(dec.insertCount, 4);
  assert.equal(dec.tableSize, 217);
  assert.equal(dec.takeDecoderStreamData()?.toString('hex'), '01');
  assert.deepEqual(decodeOk(dec, hex('0500 80 c1 81'), 8), [
    ':authority',
    'www.example.com',
    ':path',
    '/',
    'custom-key',
    'custom-value',
  ]);
  assert.equal(dec.takeDecoderStreamData()?.toString('hex'), '88', 'Section Acknowledgment (stream=8)');
  dec.cancelStream(8);
  assert.equal(dec.takeDecoderStreamData()?.toString('hex'), '48', 'Stream Cancellation (stream=8)');

  // B.5: Insert with a dynamic name reference (relative 1 = absolute 2), evicting absolute 0.
  assert.equal(dec.feedEncoderStream(hex('810d637573746f6d2d76616c756532')), null);
  assert.equal(dec.insertCount, 5);
  assert.equal(dec.tableSize, 215);
  // Absolute 0 is gone: a section referencing it fails (RIC 5 encodes as 5 % 12 + 1 = 6, Base 5,
  // relative index 4 = absolute 0).
  assert.equal(decodeErr(dec, hex('0600 84')).code, QPACK_DECOMPRESSION_FAILED);
  // Absolute 4 (custom-key: custom-value2) is there.
  assert.deepEqual(decodeOk(dec, hex('0600 80'), 12), ['custom-key', 'custom-value2']);
});

test('decoder: Required Insert Count and Base rules (§4.5.1)', () => {
  const dec = new QpackDecoder({ maxTableCapacity: 220 }); // MaxEntries 6, FullRange 12
  assert.equal(dec.feedEncoderStream(hex('3fbd01 c00f7777772e6578616d706c652e636f6d')), null);
  // Encoded RIC above FullRange.
  assert.equal(decodeErr(dec, hex('0d00')).code, QPACK_DECOMPRESSION_FAILED);
  // RIC 2 > Insert Count 1: would block, and we allow 0 blocked streams.
  assert.equal(decodeErr(dec, hex('0300 81')).code, QPACK_DECOMPRESSION_FAILED);
  // Negative Base: Sign 1 with Delta Base >= RIC.
  assert.equal(decodeErr(dec, hex('0281 80')).code, QPACK_DECOMPRESSION_FAILED);
  // Reference at or beyond RIC (post-base index 1 with RIC 1, Base 0).
  assert.equal(decodeErr(dec, hex('0280 11')).code, QPACK_DECOMPRESSION_FAILED);
  // Valid: RIC 1, Base 1, relative 0; and RIC 1, Base 0 (sign 1, delta 0), post-base 0.
  assert.deepEqual(decodeOk(dec, hex('0200 80'), 0), [':authority', 'www.example.com']);
  assert.deepEqual(decodeOk(dec, hex('0280 10'), 4), [':authority', 'www.example.com']);
  // Literal with post-base name reference: 0000 N idx(3+), value 'x'.
  assert.deepEqual(decodeOk(dec, hex('0280 00 0178'), 8), [':authority', 'x']);
  // Literal with dynamic name reference (T=0): 01 N 0 idx(4+).
  assert.deepEqual(decodeOk(dec, hex('0200 40 0179'), 12), [':authority', 'y']);
});

test('decoder: Required Insert Count wraps modulo 2 * MaxEntries', () => {
  const dec = new QpackDecoder({ maxTableCapacity: 100 }); // MaxEntries 3, FullRange 6
  assert.equal(dec.feedEncoderStream(hex('3f45')), null); // capacity 100 = 31 + 69
  for (let i = 0; i < 10; i++) {
    // Insert with literal name 'k' (1 byte), value one digit: entry size 34 -> at most 2 live.
    assert.equal(dec.feedEncoderStream(Buffer.from([0x41, 0x6b, 0x01, 0x30 + i])), null);
  }
  assert.equal(dec.insertCount, 10);
  // RFC example: 10 inserts, encoded 4 -> RIC 9 (the entry with value '8' is absolute 8).
  assert.deepEqual(decodeOk(dec, hex('0400 80'), 0), ['k', '8']);
  // Encoded 5 -> RIC 10.
  assert.deepEqual(decodeOk(dec, hex('0500 80'), 4), ['k', '9']);
});

test('decoder: encoder stream errors are QPACK_ENCODER_STREAM_ERROR and sticky', () => {
  const cases: Array<[number, string, string]> = [
    [0, '3f01', 'capacity above our maximum 0'],
    [0, 'c00f7777772e6578616d706c652e636f6d', 'insert with capacity 0'],
    [100, '3f45 00', 'duplicate of an empty table'],
    [100, '3f45 80 0178', 'name reference to an empty dynamic table'],
    [100, '3f45 ff24 0178', 'static index 99'],
    [64, '3f21 c0 20' + '61'.repeat(32), 'entry larger than the capacity'],
    [100, '3f45 c0 84 ffffffff', 'Huffman string with EOS'],
    [100, '3f46', 'capacity 101 above 100'],
    [100, '3f45 c0 7fffffffff0f', 'string length far beyond any entry'],
  ];
  for (const [capacity, h, why] of cases) {
    const dec = new QpackDecoder({ maxTableCapacity: capacity });
    const err = dec.feedEncoderStream(hex(h));
    assert.equal(err?.code, QPACK_ENCODER_STREAM_ERROR, why);
    assert.equal(dec.feedEncoderStream(hex('20'))?.code, QPACK_ENCODER_STREAM_ERROR, `${why}: sticky`);
  }
  // Set capacity 0 is always allowed, even with a maximum of 0.
  assert.equal(new QpackDecoder().feedEncoderStream(hex('20')), null);
});

test('decoder: encoder stream split at every byte boundary gives the same table', () => {
  const stream = hex(
    '3fbd01 c00f7777772e6578616d706c652e636f6d c10c2f73616d706c652f70617468 ' +
      '4a637573746f6d2d6b65790c637573746f6d2d76616c7565 02 810d637573746f6d2d76616c756532',
  );
  for (let i = 0; i <= stream.length; i++) {
    for (const j of [i, Math.min(stream.length, i + 1), Math.min(stream.length, i + 7)]) {
      const dec = new QpackDecoder({ maxTableCapacity: 220 });
      assert.equal(dec.feedEncoderStream(stream.subarray(0, i)), null);
      assert.equal(dec.feedEncoderStream(stream.subarray(i, j)), null);
      assert.equal(dec.feedEncoderStream(stream.subarray(j)), null);
      assert.equal(dec.insertCount, 5, `split ${i}/${j}`);
      assert.equal(dec.tableSize, 215);
      assert.deepEqual(decodeOk(dec, hex('0600 80'), 0), ['custom-key', 'custom-value2']);
    }
  }
});

test('decoder: a dynamic-table bomb stops at the field section size limit', () => {
  const dec = new QpackDecoder({ maxTableCapacity: 4096, maxFieldSectionSize: 16 * 1024 });
  // One 3,000-byte entry, then a 1,000-line section of 1-byte references to it.
  const value = 'v'.repeat(3000);
  const insert = Buffer.concat([hex('3fe11f'), hex('41 6b'), hex('7f'), Buffer.from([0xb9, 0x16]), Buffer.from(value)]);
  assert.equal(dec.feedEncoderStream(insert), null);
  assert.equal(dec.insertCount, 1);
  const bomb = Buffer.concat([hex('0200'), Buffer.alloc(1000, 0x80)]);
  const err = decodeErr(dec, bomb);
  assert.equal(err.code, H3_EXCESSIVE_LOAD);
  assert.equal(err.isHeadersTooLarge, true);
});

// ---------------------------------------------------------------------------------------------
// Our encoder's decoder-stream reader

test('decoder-stream reader: cancellations accepted (split anywhere), acks and increments refused', () => {
  const r = new QpackDecoderStreamReader();
  assert.equal(r.feed(hex('48')), null);
  // Stream Cancellation for stream 200: 0x7f + (200 - 63) = 7f 89 01, fed byte by byte.
  for (const b of hex('7f8901')) assert.equal(r.feed(Buffer.from([b])), null);
  assert.equal(r.feed(hex('7f')), null);
  assert.equal(r.feed(hex('89 01 44')), null);
  assert.equal(new QpackDecoderStreamReader().feed(hex('84'))?.code, QPACK_DECODER_STREAM_ERROR);
  assert.equal(new QpackDecoderStreamReader().feed(hex('01'))?.code, QPACK_DECODER_STREAM_ERROR);
  assert.equal(new QpackDecoderStreamReader().feed(hex('00'))?.code, QPACK_DECODER_STREAM_ERROR);
  const over = new QpackDecoderStreamReader();
  assert.equal(over.feed(hex('7fffffffffffffffffff7f'))?.code, QPACK_DECODER_STREAM_ERROR);
});

// ---------------------------------------------------------------------------------------------
// Properties

const staticNames = [...new Set(Array.from({ length: 99 }, (_, i) => staticName(i)))];
const nameArb = fc.oneof(
  fc.constantFrom(...staticNames),
  fc.stringMatching(/^[a-z0-9!#$%&'*+.^_`|~-]{1,30}$/),
);
const latin1Arb = fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.from(b).toString('latin1'));
const valueArb = fc.oneof(
  fc.constantFrom(...Array.from({ length: 99 }, (_, i) => staticValue(i))),
  latin1Arb,
  fc.string({ maxLength: 60 }).map((s) => Buffer.from(s, 'utf8').toString('latin1')),
);
const fieldsArb = fc.array(fc.tuple(nameArb, valueArb), { maxLength: 25 }).map((pairs) => pairs.flat());

test('property: encode -> decode returns the same field list (Huffman on and off)', () => {
  const encoders = [new QpackEncoder(), new QpackEncoder({ huffman: false, initialBufferSize: 8 })];
  const dec = new QpackDecoder({ maxFieldSectionSize: 1 << 20 });
  fc.assert(
    fc.property(fieldsArb, fc.boolean(), (fields, huffman) => {
      const enc = encoders[huffman ? 0 : 1];
      assert.deepEqual(decodeOk(dec, enc.encodeFieldSection(fields)), fields);
    }),
    { numRuns: 1000 },
  );
});

test('property: arbitrary bytes never throw, only typed errors, and the size limit holds', () => {
  const limit = 2048;
  const dec = new QpackDecoder({ maxFieldSectionSize: limit });
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (bytes, withPrefix) => {
      const section = withPrefix ? Buffer.concat([hex('0000'), bytes]) : Buffer.from(bytes);
      const out: string[] = [];
      const err = dec.decodeFieldSection(section, 0, out);
      if (err !== null) {
        assert.ok(err instanceof H3Error);
        assert.ok(err.code === QPACK_DECOMPRESSION_FAILED || err.code === H3_EXCESSIVE_LOAD, err.toString());
      }
      assert.ok(sectionSize(out) <= limit);
    }),
    { numRuns: 1000 },
  );
});

test('property: arbitrary encoder-stream bytes and sections against a live dynamic table', () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ maxLength: 60 }), { maxLength: 6 }),
      fc.uint8Array({ maxLength: 80 }),
      (chunks, section) => {
        const dec = new QpackDecoder({ maxTableCapacity: 256, maxFieldSectionSize: 1024 });
        // A valid start so later random bytes hit a non-empty table.
        assert.equal(dec.feedEncoderStream(hex('3f e1 01 c00f7777772e6578616d706c652e636f6d 41 6b 01 76')), null);
        for (const c of chunks) {
          const err = dec.feedEncoderStream(c);
          if (err !== null) assert.equal(err.code, QPACK_ENCODER_STREAM_ERROR);
          assert.ok(dec.tableSize <= dec.tableCapacity && dec.tableCapacity <= 256);
        }
        const out: string[] = [];
        const err = dec.decodeFieldSection(section, 0, out);
        if (err !== null) assert.ok(err.code === QPACK_DECOMPRESSION_FAILED || err.code === H3_EXCESSIVE_LOAD);
        assert.ok(sectionSize(out) <= 1024);
      },
    ),
    { numRuns: 500 },
  );
});

// ---------------------------------------------------------------------------------------------
// Hostile input everywhere a peer's bytes reach QPACK (issue 7: every decoder Skiff owns)

test('property: prefixed integers from arbitrary bytes: a safe value, NEED_MORE or OVERFLOW, never a throw', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 14 }), fc.integer({ min: 1, max: 8 }), fc.nat(14), (bytes, prefix, start) => {
      const out = new PrefixInt();
      const offset = Math.min(start, bytes.length);
      const r = decodePrefixInt(bytes, offset, bytes.length, prefix, out);
      assert.ok(r === PREFIX_INT_OK || r === PREFIX_INT_NEED_MORE || r === PREFIX_INT_OVERFLOW, String(r));
      if (r === PREFIX_INT_OK) {
        assert.ok(Number.isSafeInteger(out.value) && out.value >= 0);
        assert.ok(out.offset > offset && out.offset <= bytes.length);
      }
    }),
    { numRuns: 1000 },
  );
});

test('property: decoder-stream bytes in arbitrary chunks: null or QPACK_DECODER_STREAM_ERROR, and an error stays', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 8 }), (chunks) => {
      const reader = new QpackDecoderStreamReader();
      let first: H3Error | null = null;
      for (const c of chunks) {
        const err = reader.feed(c);
        if (first !== null) {
          assert.ok(err !== null && err.code === QPACK_DECODER_STREAM_ERROR, 'an error is sticky');
          continue;
        }
        if (err !== null) {
          assert.ok(err instanceof H3Error && err.code === QPACK_DECODER_STREAM_ERROR, err.toString());
          first = err;
        }
      }
    }),
    { numRuns: 1000 },
  );
});

test('property: encoder-stream bytes against the decoder Skiff runs (no dynamic table): only QPACK_ENCODER_STREAM_ERROR', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 60 }), { maxLength: 6 }), (chunks) => {
      const dec = new QpackDecoder({ maxTableCapacity: 0, maxFieldSectionSize: 1024 });
      for (const c of chunks) {
        const err = dec.feedEncoderStream(c);
        if (err !== null) assert.ok(err instanceof H3Error && err.code === QPACK_ENCODER_STREAM_ERROR, err.toString());
        assert.equal(dec.tableSize, 0);
      }
    }),
    { numRuns: 1000 },
  );
});

test('property: valid field sections with bytes flipped, dropped or inserted: typed errors only, the size limit holds', () => {
  const limit = 2048;
  const encoders = [new QpackEncoder(), new QpackEncoder({ huffman: false })];
  const edit = fc.tuple(fc.nat(), fc.nat(255), fc.constantFrom('flip', 'drop', 'insert'));
  fc.assert(
    fc.property(fieldsArb, fc.boolean(), fc.array(edit, { minLength: 1, maxLength: 4 }), (fields, huffman, edits) => {
      let bytes = Buffer.from(encoders[huffman ? 0 : 1].encodeFieldSection(fields));
      for (const [at, value, kind] of edits) {
        const i = at % (bytes.length + 1);
        if (kind === 'insert') bytes = Buffer.concat([bytes.subarray(0, i), Buffer.from([value]), bytes.subarray(i)]);
        else if (i < bytes.length && kind === 'drop') bytes = Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + 1)]);
        else if (i < bytes.length) bytes[i] ^= value | 1;
      }
      const out: string[] = [];
      const err = new QpackDecoder({ maxFieldSectionSize: limit }).decodeFieldSection(bytes, 0, out);
      if (err !== null) {
        assert.ok(err instanceof H3Error);
        assert.ok(err.code === QPACK_DECOMPRESSION_FAILED || err.code === H3_EXCESSIVE_LOAD, err.toString());
      }
      assert.ok(sectionSize(out) <= limit);
    }),
    { numRuns: 1000 },
  );
});
