// QUIC variable-length integers (protocols/h3/varint.ts): the RFC 9000 §A.1 examples, every
// length boundary, truncation reported as VARINT_NEED_MORE, the 2^53-1 ceiling, and round trips.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  VARINT_NEED_MORE,
  VARINT_TOO_LARGE,
  readVarint,
  varintLength,
  varintLengthOfFirstByte,
  writeVarint,
  writeVarintWithLength,
} from '../../../protocols/h3/varint.js';

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

function encode(value: number): Buffer {
  const buf = Buffer.alloc(8);
  const end = writeVarint(buf, 0, value);
  return buf.subarray(0, end);
}

test('RFC 9000 §A.1 examples decode', () => {
  assert.equal(readVarint(hex('9d7f3e7d'), 0), 494878333);
  assert.equal(readVarint(hex('7bbd'), 0), 15293);
  assert.equal(readVarint(hex('25'), 0), 37);
  assert.equal(readVarint(hex('4025'), 0), 37, 'non-minimal encodings are accepted');
  // 151288809941952652 is above 2^53-1: reported, not rounded.
  assert.equal(readVarint(hex('c2197c5eff14e88c'), 0), VARINT_TOO_LARGE);
});

test('RFC 9000 §A.1 examples encode (minimal form)', () => {
  assert.equal(encode(494878333).toString('hex'), '9d7f3e7d');
  assert.equal(encode(15293).toString('hex'), '7bbd');
  assert.equal(encode(37).toString('hex'), '25');
});

test('length boundaries', () => {
  const cases: Array<[number, number]> = [
    [0, 1],
    [63, 1],
    [64, 2],
    [16383, 2],
    [16384, 4],
    [1073741823, 4],
    [1073741824, 8],
    [Number.MAX_SAFE_INTEGER, 8],
  ];
  for (const [value, length] of cases) {
    assert.equal(varintLength(value), length, `varintLength(${value})`);
    const b = encode(value);
    assert.equal(b.length, length);
    assert.equal(varintLengthOfFirstByte(b[0]), length);
    assert.equal(readVarint(b, 0), value);
  }
});

test('the 2^53-1 ceiling: exact at the edge, TOO_LARGE above', () => {
  assert.equal(readVarint(hex('c01fffffffffffff'), 0), Number.MAX_SAFE_INTEGER);
  assert.equal(readVarint(hex('c020000000000000'), 0), VARINT_TOO_LARGE);
  assert.equal(readVarint(hex('ffffffffffffffff'), 0), VARINT_TOO_LARGE);
});

test('writing out-of-range values throws RangeError (our bug, never peer input)', () => {
  const buf = Buffer.alloc(8);
  assert.throws(() => writeVarint(buf, 0, Number.MAX_SAFE_INTEGER + 1), RangeError);
  assert.throws(() => writeVarint(buf, 0, -1), RangeError);
  assert.throws(() => writeVarint(buf, 0, 1.5), RangeError);
  assert.throws(() => writeVarintWithLength(buf, 0, 64, 1), RangeError);
  assert.throws(() => writeVarintWithLength(buf, 0, 1, 3), RangeError);
});

test('truncated input reports NEED_MORE at every cut, without throwing', () => {
  for (const value of [37, 15293, 494878333, 2 ** 40 + 7]) {
    const b = encode(value);
    for (let cut = 0; cut < b.length; cut++) {
      assert.equal(readVarint(b, 0, cut), VARINT_NEED_MORE, `value ${value} cut at ${cut}`);
      assert.equal(readVarint(b.subarray(0, cut), 0), VARINT_NEED_MORE);
    }
  }
  assert.equal(readVarint(Buffer.alloc(0), 0), VARINT_NEED_MORE);
});

test('decoding at an offset', () => {
  const buf = Buffer.concat([hex('ffff'), encode(494878333), hex('00')]);
  assert.equal(readVarint(buf, 2), 494878333);
  assert.equal(readVarint(buf, 6), 0);
});

test('property: minimal round trip over the safe range', () => {
  fc.assert(
    fc.property(fc.maxSafeNat(), (value) => {
      const b = encode(value);
      assert.equal(b.length, varintLength(value));
      assert.equal(readVarint(b, 0), value);
    }),
    { numRuns: 1000 },
  );
});

test('property: every encoding length that fits decodes to the same value', () => {
  fc.assert(
    fc.property(fc.maxSafeNat(), fc.constantFrom(1, 2, 4, 8), (value, length) => {
      fc.pre(varintLength(value) <= length);
      const buf = Buffer.alloc(8);
      assert.equal(writeVarintWithLength(buf, 0, value, length), length);
      assert.equal(readVarint(buf, 0, length), value);
    }),
    { numRuns: 1000 },
  );
});

test('property: arbitrary bytes never throw and give a value, NEED_MORE or TOO_LARGE', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 10 }), (bytes) => {
      const v = readVarint(bytes, 0);
      assert.ok(v === VARINT_NEED_MORE || v === VARINT_TOO_LARGE || (Number.isSafeInteger(v) && v >= 0));
      if (v >= 0) assert.ok(bytes.length >= varintLengthOfFirstByte(bytes[0]));
    }),
    { numRuns: 1000 },
  );
});
