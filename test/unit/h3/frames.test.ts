// HTTP/3 framing and connection-level streams (protocols/h3/frames.ts, protocols/h3/control.ts):
// frame writers, the incremental FrameReader fed at every split point and arbitrary chunkings,
// its limits and error codes, SETTINGS parsing, the control stream rules and the
// unidirectional stream header.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  FRAME_CANCEL_PUSH,
  FRAME_DATA,
  FRAME_GOAWAY,
  FRAME_HEADERS,
  FRAME_MAX_PUSH_ID,
  FRAME_PUSH_PROMISE,
  FRAME_SETTINGS,
  FrameEvent,
  FrameReader,
  H3Error,
  H3_CLOSED_CRITICAL_STREAM,
  H3_EXCESSIVE_LOAD,
  H3_FRAME_ERROR,
  H3_FRAME_UNEXPECTED,
  H3_ID_ERROR,
  H3_MISSING_SETTINGS,
  H3_NO_ERROR,
  H3_SETTINGS_ERROR,
  H3_STREAM_CREATION_ERROR,
  H3_VERSION_FALLBACK,
  QPACK_DECODER_STREAM_ERROR,
  SETTINGS_ENABLE_CONNECT_PROTOCOL,
  SETTINGS_H3_DATAGRAM,
  SETTINGS_MAX_FIELD_SECTION_SIZE,
  SETTINGS_QPACK_BLOCKED_STREAMS,
  SETTINGS_QPACK_MAX_TABLE_CAPACITY,
  SettingEntry,
  createCancelPushFrame,
  createDataHeader,
  createGoawayFrame,
  createHeadersFrame,
  createMaxPushIdFrame,
  createSettingsFrame,
  createStreamTypeHeader,
  h3ErrorName,
  isGreaseValue,
  prependHeadersFrameHeader,
  writeDataHeader,
} from '../../../protocols/h3/frames.js';
import {
  ControlStreamReader,
  CriticalStreams,
  H3Settings,
  UNLIMITED,
  UniStreamHeaderReader,
  UniStreamKind,
  createSettingsFrameFor,
  parseSettings,
  type ControlStreamHandler,
} from '../../../protocols/h3/control.js';
import { writeVarint } from '../../../protocols/h3/varint.js';

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

function varint(v: number): Buffer {
  const b = Buffer.alloc(8);
  return b.subarray(0, writeVarint(b, 0, v));
}

/** A frame with an arbitrary type and payload (unknown and reserved types included). */
function frame(type: number, payload: Uint8Array | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'latin1') : Buffer.from(payload);
  return Buffer.concat([varint(type), varint(body.length), body]);
}

/**
 * Feeds `chunks` to a FrameReader and returns a normalized log: one line per frame, DATA payloads
 * concatenated per frame, so any chunking of the same bytes gives the same log.
 */
function readAll(chunks: readonly Uint8Array[], maxFramePayload?: number): { log: string[]; error: H3Error | null } {
  const r = new FrameReader(maxFramePayload);
  const log: string[] = [];
  let data: string | null = null;
  const flushData = (): void => {
    if (data !== null) log.push(`DATA ${data}`);
    data = null;
  };
  for (const chunk of chunks) {
    r.feed(chunk);
    for (;;) {
      const ev = r.next();
      if (ev === FrameEvent.NeedMore) break;
      if (ev === FrameEvent.Error) return { log, error: r.error };
      if (ev === FrameEvent.DataStart) {
        flushData();
        data = '';
        if (r.length === 0) flushData();
      } else if (ev === FrameEvent.Data) {
        data += Buffer.from(r.payload).toString('latin1');
      } else if (ev === FrameEvent.Frame) {
        flushData();
        log.push(`0x${r.type.toString(16)} ${Buffer.from(r.payload).toString('hex')}`);
      } else if (ev === FrameEvent.UnknownFrame) {
        flushData();
        log.push(`unknown 0x${r.type.toString(16)} len ${r.length}`);
      }
    }
  }
  flushData();
  const end = r.finish();
  return { log, error: end };
}

function splitAt(buf: Buffer, points: number[]): Buffer[] {
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points].sort((a, b) => a - b)) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  out.push(buf.subarray(prev));
  return out;
}

const SAMPLE = Buffer.concat([
  frame(FRAME_HEADERS, hex('0000d1d7')),
  frame(0x21, 'grease payload'), // reserved type 0x1f*0+0x21: skipped
  frame(FRAME_DATA, 'hello '),
  frame(FRAME_DATA, ''),
  frame(0x1f * 1000 + 0x21, Buffer.alloc(300, 7)), // grease with a 2-byte type and length
  frame(FRAME_DATA, Buffer.alloc(70, 0x61)), // 2-byte length
  frame(FRAME_HEADERS, hex('0000')),
]);

// ---------------------------------------------------------------------------------------------
// Writers and constants

test('error codes and names', () => {
  assert.equal(H3_NO_ERROR, 0x100);
  assert.equal(H3_VERSION_FALLBACK, 0x110);
  assert.equal(QPACK_DECODER_STREAM_ERROR, 0x202);
  assert.equal(h3ErrorName(H3_FRAME_UNEXPECTED), 'H3_FRAME_UNEXPECTED');
  assert.equal(h3ErrorName(0x1f21), '0x1f21');
  const e = new H3Error(H3_ID_ERROR, 'bad id');
  assert.equal(e.toString(), 'H3_ID_ERROR: bad id');
  assert.equal(e.isConnectionError, true);
  assert.ok(!(e instanceof Error), 'H3Error is a value, not a thrown Error');
});

test('grease values: 0x1f * N + 0x21', () => {
  assert.ok(isGreaseValue(0x21));
  assert.ok(isGreaseValue(0x40));
  assert.ok(isGreaseValue(0x1f * 12345 + 0x21));
  assert.ok(!isGreaseValue(0x20));
  assert.ok(!isGreaseValue(0x22));
  assert.ok(!isGreaseValue(0));
});

test('DATA header: the header alone, for a payload sent by reference', () => {
  assert.equal(createDataHeader(5).toString('hex'), '0005');
  assert.equal(createDataHeader(100).toString('hex'), '004064');
  assert.equal(createDataHeader(0).toString('hex'), '0000');
  const scratch = Buffer.alloc(16);
  const end = writeDataHeader(scratch, 2, 70000);
  assert.equal(scratch.subarray(2, end).toString('hex'), '0080011170');
});

test('HEADERS frame: copied or prepended in place', () => {
  assert.equal(createHeadersFrame(hex('0000d1')).toString('hex'), '01030000d1');
  const buf = Buffer.alloc(20);
  hex('0000d1d7').copy(buf, 9);
  const start = prependHeadersFrameHeader(buf, 9, 13);
  assert.equal(buf.subarray(start, 13).toString('hex'), '01040000d1d7');
  assert.throws(() => prependHeadersFrameHeader(buf, 1, 13), RangeError);
});

test('GOAWAY, MAX_PUSH_ID, CANCEL_PUSH, stream type writers', () => {
  assert.equal(createGoawayFrame(4).toString('hex'), '070104');
  assert.equal(createGoawayFrame(16384).toString('hex'), '070480004000');
  assert.equal(createMaxPushIdFrame(3).toString('hex'), '0d0103');
  assert.equal(createCancelPushFrame(3).toString('hex'), '030103');
  assert.equal(createStreamTypeHeader(0).toString('hex'), '00');
  assert.equal(createStreamTypeHeader(0x21).toString('hex'), '21');
});

test('SETTINGS writer output parses back', () => {
  const frameBytes = createSettingsFrame([new SettingEntry(0x06, 16384), new SettingEntry(0x21, 0)]);
  // type 0x04, length 7: 06 | 80 00 40 00 | 21 | 00
  assert.equal(frameBytes.toString('hex'), '04070680004000' + '2100');
  const { log } = readAll([frameBytes]);
  assert.deepEqual(log, ['0x4 0680004000' + '2100']);
});

// ---------------------------------------------------------------------------------------------
// FrameReader

const SAMPLE_LOG = [
  '0x1 0000d1d7',
  'unknown 0x21 len 14',
  'DATA hello ',
  'DATA ',
  `unknown 0x${(0x1f * 1000 + 0x21).toString(16)} len 300`,
  `DATA ${'a'.repeat(70)}`,
  '0x1 0000',
];

test('FrameReader: whole buffer', () => {
  const { log, error } = readAll([SAMPLE]);
  assert.equal(error, null);
  assert.deepEqual(log, SAMPLE_LOG);
});

test('FrameReader: split at every byte boundary gives the same frames', () => {
  for (let i = 0; i <= SAMPLE.length; i++) {
    const { log, error } = readAll(splitAt(SAMPLE, [i]));
    assert.equal(error, null, `split at ${i}`);
    assert.deepEqual(log, SAMPLE_LOG, `split at ${i}`);
  }
});

test('FrameReader: one byte at a time', () => {
  const chunks: Buffer[] = [];
  for (let i = 0; i < SAMPLE.length; i++) chunks.push(SAMPLE.subarray(i, i + 1));
  const { log, error } = readAll(chunks);
  assert.equal(error, null);
  assert.deepEqual(log, SAMPLE_LOG);
});

test('FrameReader: property, arbitrary chunkings give the same frames', () => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: 0, max: SAMPLE.length }), { maxLength: 20 }), (points) => {
      const { log, error } = readAll(splitAt(SAMPLE, points));
      assert.equal(error, null);
      assert.deepEqual(log, SAMPLE_LOG);
    }),
    { numRuns: 500 },
  );
});

test('FrameReader: property, arbitrary frame sequences survive arbitrary chunkings', () => {
  const frameArb = fc.record({
    type: fc.constantFrom(FRAME_DATA, FRAME_HEADERS, FRAME_SETTINGS, 0x21, 0x40, 0x1f * 77 + 0x21, 0x3fff),
    payload: fc.uint8Array({ maxLength: 100 }),
  });
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (frames, rawPoints) => {
      const bytes = Buffer.concat(frames.map((f) => frame(f.type, f.payload)));
      const whole = readAll([bytes]);
      assert.equal(whole.error, null);
      assert.equal(whole.log.length, frames.length);
      const points = [...new Set(rawPoints.map((p) => p % (bytes.length + 1)))];
      assert.deepEqual(readAll(splitAt(bytes, points)).log, whole.log);
    }),
    { numRuns: 300 },
  );
});

test('FrameReader: DATA payload is streamed as views of the fed chunk, never buffered', () => {
  const payload = Buffer.alloc(100_000, 0x62);
  const bytes = Buffer.concat([frame(FRAME_DATA, payload)]);
  const r = new FrameReader(1024); // the buffered-frame limit does not apply to DATA
  let received = 0;
  for (let off = 0; off < bytes.length; off += 4096) {
    const chunk = bytes.subarray(off, off + 4096);
    r.feed(chunk);
    for (let ev = r.next(); ev !== FrameEvent.NeedMore; ev = r.next()) {
      assert.notEqual(ev, FrameEvent.Error);
      if (ev === FrameEvent.Data) {
        assert.equal(r.payload.buffer, chunk.buffer, 'a view of the chunk, not a copy');
        received += r.payload.length;
      }
    }
  }
  assert.equal(received, payload.length);
  assert.equal(r.finish(), null);
});

test('FrameReader: a whole-chunk DATA slice is the chunk itself', () => {
  const r = new FrameReader();
  r.feed(hex('0005'));
  assert.equal(r.next(), FrameEvent.DataStart);
  assert.equal(r.length, 5);
  assert.equal(r.next(), FrameEvent.NeedMore);
  const body = Buffer.from('hello');
  r.feed(body);
  assert.equal(r.next(), FrameEvent.Data);
  assert.equal(r.payload, body);
  assert.ok(r.isAtFrameBoundary);
});

test('FrameReader: HTTP/2 frame types are H3_FRAME_UNEXPECTED', () => {
  for (const type of [0x02, 0x06, 0x08, 0x09]) {
    const { error } = readAll([frame(type, 'x')]);
    assert.equal(error?.code, H3_FRAME_UNEXPECTED, `type 0x${type.toString(16)}`);
    assert.equal(error?.isConnectionError, true);
  }
});

test('FrameReader: oversized HEADERS / SETTINGS / PUSH_PROMISE refused at the header, nothing buffered', () => {
  for (const type of [FRAME_HEADERS, FRAME_SETTINGS, FRAME_PUSH_PROMISE]) {
    const r = new FrameReader(1000);
    r.feed(Buffer.concat([varint(type), varint(1001)])); // header only: no payload yet
    assert.equal(r.next(), FrameEvent.Error);
    assert.equal(r.error?.code, H3_EXCESSIVE_LOAD);
    assert.equal(r.next(), FrameEvent.Error, 'stays failed');
    const ok = readAll([frame(type, Buffer.alloc(1000))], 1000);
    assert.equal(ok.error, null, 'exactly at the limit is fine');
  }
});

test('FrameReader: GOAWAY / MAX_PUSH_ID / CANCEL_PUSH length must fit one varint', () => {
  for (const type of [FRAME_GOAWAY, FRAME_MAX_PUSH_ID, FRAME_CANCEL_PUSH]) {
    assert.equal(readAll([frame(type, '')]).error?.code, H3_FRAME_ERROR);
    assert.equal(readAll([frame(type, Buffer.alloc(9))]).error?.code, H3_FRAME_ERROR);
  }
});

test('FrameReader: stream ending inside a frame is H3_FRAME_ERROR, at a boundary is fine', () => {
  const bytes = frame(FRAME_HEADERS, hex('0000d1'));
  for (let cut = 1; cut < bytes.length; cut++) {
    assert.equal(readAll([bytes.subarray(0, cut)]).error?.code, H3_FRAME_ERROR, `cut ${cut}`);
  }
  assert.equal(readAll([bytes]).error, null);
  assert.equal(readAll([]).error, null);
  // Inside a DATA payload and inside a skipped unknown frame too.
  assert.equal(readAll([frame(FRAME_DATA, 'abc').subarray(0, 3)]).error?.code, H3_FRAME_ERROR);
  assert.equal(readAll([frame(0x21, 'abc').subarray(0, 3)]).error?.code, H3_FRAME_ERROR);
});

test('FrameReader: lengths above 2^53-1 are H3_EXCESSIVE_LOAD; such types are skipped as unknown', () => {
  const hugeLength = Buffer.concat([varint(FRAME_DATA), hex('c020000000000000')]);
  assert.equal(readAll([hugeLength]).error?.code, H3_EXCESSIVE_LOAD);
  // A type of 2^62-1 (a legal extension/grease-sized type) with a small payload is skipped.
  const hugeType = Buffer.concat([hex('ffffffffffffffff'), varint(2), hex('abcd'), frame(FRAME_HEADERS, hex('0000'))]);
  const { log, error } = readAll([hugeType]);
  assert.equal(error, null);
  assert.deepEqual(log, ['unknown 0x-2 len 2', '0x1 0000']);
});

test('FrameReader: property, arbitrary bytes in arbitrary chunks never throw and end in a known state', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.array(fc.nat(), { maxLength: 8 }), (bytes, rawPoints) => {
      const buf = Buffer.from(bytes);
      const points = [...new Set(rawPoints.map((p) => p % (buf.length + 1)))];
      const { error } = readAll(splitAt(buf, points), 128);
      if (error !== null) {
        assert.ok(error instanceof H3Error);
        assert.ok([H3_FRAME_ERROR, H3_FRAME_UNEXPECTED, H3_EXCESSIVE_LOAD].includes(error.code), error.toString());
      }
    }),
    { numRuns: 1000 },
  );
});

// ---------------------------------------------------------------------------------------------
// SETTINGS

function settingsPayload(pairs: Array<[number, number]>): Buffer {
  return Buffer.concat(pairs.flatMap(([id, v]) => [varint(id), varint(v)]));
}

test('parseSettings: known settings, grease and unknown ids ignored', () => {
  const s = parseSettings(
    settingsPayload([
      [SETTINGS_QPACK_MAX_TABLE_CAPACITY, 4096],
      [SETTINGS_MAX_FIELD_SECTION_SIZE, 16384],
      [SETTINGS_QPACK_BLOCKED_STREAMS, 16],
      [SETTINGS_ENABLE_CONNECT_PROTOCOL, 1],
      [SETTINGS_H3_DATAGRAM, 1],
      [0x21, 12345],
      [0x1f * 99 + 0x21, 0],
      [0x4242, 7],
    ]),
  );
  assert.ok(s instanceof H3Settings);
  assert.equal(s.qpackMaxTableCapacity, 4096);
  assert.equal(s.maxFieldSectionSize, 16384);
  assert.equal(s.qpackBlockedStreams, 16);
  assert.equal(s.isConnectProtocolEnabled, true);
  assert.equal(s.isDatagramEnabled, true);
});

test('parseSettings: empty payload gives the RFC defaults', () => {
  const s = parseSettings(Buffer.alloc(0));
  assert.ok(s instanceof H3Settings);
  assert.equal(s.qpackMaxTableCapacity, 0);
  assert.equal(s.maxFieldSectionSize, UNLIMITED);
  assert.equal(s.qpackBlockedStreams, 0);
  assert.equal(s.isConnectProtocolEnabled, false);
});

test('parseSettings: errors with their exact codes', () => {
  const code = (p: Buffer): number => {
    const r = parseSettings(p);
    assert.ok(r instanceof H3Error, 'expected an error');
    return r.code;
  };
  for (const reserved of [0x02, 0x03, 0x04, 0x05]) {
    assert.equal(code(settingsPayload([[reserved, 0]])), H3_SETTINGS_ERROR, `reserved 0x${reserved.toString(16)}`);
  }
  assert.equal(code(settingsPayload([[0x06, 1], [0x06, 1]])), H3_SETTINGS_ERROR, 'duplicate');
  assert.equal(code(settingsPayload([[0x21, 1], [0x21, 2]])), H3_SETTINGS_ERROR, 'duplicate grease id');
  assert.equal(code(settingsPayload([[SETTINGS_ENABLE_CONNECT_PROTOCOL, 2]])), H3_SETTINGS_ERROR);
  assert.equal(code(settingsPayload([[SETTINGS_H3_DATAGRAM, 2]])), H3_SETTINGS_ERROR);
  assert.equal(code(varint(0x06)), H3_FRAME_ERROR, 'identifier without value');
  assert.equal(code(hex('0640')), H3_FRAME_ERROR, 'value cut inside its varint');
  assert.equal(code(hex('40')), H3_FRAME_ERROR, 'identifier cut inside its varint');
});

test('parseSettings: values and ids above 2^53-1 saturate / are ignored', () => {
  const big = hex('ffffffffffffffff');
  const s = parseSettings(Buffer.concat([varint(0x06), big, big, varint(1)]));
  assert.ok(s instanceof H3Settings);
  assert.equal(s.maxFieldSectionSize, Number.MAX_SAFE_INTEGER);
});

test('createSettingsFrameFor: non-defaults plus grease, parses back', () => {
  const local = new H3Settings();
  local.maxFieldSectionSize = 65536;
  local.isConnectProtocolEnabled = true;
  const bytes = createSettingsFrameFor(local, 0x1f * 3 + 0x21);
  const r = new FrameReader();
  r.feed(bytes);
  assert.equal(r.next(), FrameEvent.Frame);
  assert.equal(r.type, FRAME_SETTINGS);
  const parsed = parseSettings(r.payload);
  assert.ok(parsed instanceof H3Settings);
  assert.equal(parsed.maxFieldSectionSize, 65536);
  assert.equal(parsed.isConnectProtocolEnabled, true);
  assert.equal(parsed.qpackMaxTableCapacity, 0);
  // Defaults are not written: an all-default SETTINGS is empty.
  assert.equal(createSettingsFrameFor(new H3Settings()).toString('hex'), '0400');
});

// ---------------------------------------------------------------------------------------------
// Control stream

class ControlLog implements ControlStreamHandler {
  events: string[];
  constructor() {
    this.events = [];
  }
  onSettings(settings: H3Settings): void {
    this.events.push(`settings ${settings.maxFieldSectionSize}`);
  }
  onGoaway(id: number): void {
    this.events.push(`goaway ${id}`);
  }
  onMaxPushId(pushId: number): void {
    this.events.push(`max_push_id ${pushId}`);
  }
}

const SETTINGS_FRAME = frame(FRAME_SETTINGS, settingsPayload([[SETTINGS_MAX_FIELD_SECTION_SIZE, 1000]]));

function control(bytes: Buffer, isServer: boolean): { log: ControlLog; error: H3Error | null } {
  const log = new ControlLog();
  const reader = new ControlStreamReader(log, isServer);
  return { log, error: reader.push(bytes) };
}

test('control stream: SETTINGS then GOAWAY, byte by byte', () => {
  const bytes = Buffer.concat([SETTINGS_FRAME, frame(0x21, 'grease'), createGoawayFrame(8), createGoawayFrame(4)]);
  const log = new ControlLog();
  const reader = new ControlStreamReader(log, false);
  for (let i = 0; i < bytes.length; i++) assert.equal(reader.push(bytes.subarray(i, i + 1)), null);
  assert.deepEqual(log.events, ['settings 1000', 'goaway 8', 'goaway 4']);
  assert.equal(reader.settings?.maxFieldSectionSize, 1000);
});

test('control stream: the first frame must be SETTINGS (H3_MISSING_SETTINGS)', () => {
  for (const first of [createGoawayFrame(0), frame(FRAME_HEADERS, '\0\0'), frame(FRAME_DATA, 'x'), frame(0x21, '')]) {
    assert.equal(control(first, true).error?.code, H3_MISSING_SETTINGS, first.toString('hex'));
  }
});

test('control stream: frames not allowed there (H3_FRAME_UNEXPECTED)', () => {
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, SETTINGS_FRAME]), true).error?.code, H3_FRAME_UNEXPECTED);
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, frame(FRAME_DATA, 'x')]), true).error?.code, H3_FRAME_UNEXPECTED);
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, frame(FRAME_DATA, '')]), true).error?.code, H3_FRAME_UNEXPECTED);
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, frame(FRAME_HEADERS, '\0\0')]), true).error?.code, H3_FRAME_UNEXPECTED);
  assert.equal(
    control(Buffer.concat([SETTINGS_FRAME, frame(FRAME_PUSH_PROMISE, '\0\0\0')]), false).error?.code,
    H3_FRAME_UNEXPECTED,
  );
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, frame(0x06, 'x')]), true).error?.code, H3_FRAME_UNEXPECTED);
  // MAX_PUSH_ID from a server (we are the client).
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, createMaxPushIdFrame(1)]), false).error?.code, H3_FRAME_UNEXPECTED);
});

test('control stream: GOAWAY / MAX_PUSH_ID / CANCEL_PUSH identifier rules', () => {
  // From a server, GOAWAY carries a client-initiated bidirectional stream ID (multiple of 4).
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, createGoawayFrame(5)]), false).error?.code, H3_ID_ERROR);
  // From a client it is a push ID: any value.
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, createGoawayFrame(5)]), true).error, null);
  // Increasing GOAWAY.
  assert.equal(
    control(Buffer.concat([SETTINGS_FRAME, createGoawayFrame(4), createGoawayFrame(8)]), false).error?.code,
    H3_ID_ERROR,
  );
  // 2^62-4, the graceful-shutdown maximum, saturates to 2^53-1.
  const { log, error } = control(Buffer.concat([SETTINGS_FRAME, frame(FRAME_GOAWAY, hex('fffffffffffffffc'))]), false);
  assert.equal(error, null);
  assert.deepEqual(log.events, ['settings 1000', `goaway ${Number.MAX_SAFE_INTEGER}`]);
  // GOAWAY whose payload has trailing bytes after the varint.
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, frame(FRAME_GOAWAY, hex('0400'))]), false).error?.code, H3_FRAME_ERROR);
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, frame(FRAME_GOAWAY, hex('40'))]), false).error?.code, H3_FRAME_ERROR);
  // MAX_PUSH_ID must not decrease.
  const up = control(Buffer.concat([SETTINGS_FRAME, createMaxPushIdFrame(3), createMaxPushIdFrame(5)]), true);
  assert.equal(up.error, null);
  assert.deepEqual(up.log.events, ['settings 1000', 'max_push_id 3', 'max_push_id 5']);
  assert.equal(
    control(Buffer.concat([SETTINGS_FRAME, createMaxPushIdFrame(5), createMaxPushIdFrame(3)]), true).error?.code,
    H3_ID_ERROR,
  );
  // No push in Skiff: CANCEL_PUSH always names an ID never promised / never allowed.
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, createCancelPushFrame(0)]), true).error?.code, H3_ID_ERROR);
  assert.equal(control(Buffer.concat([SETTINGS_FRAME, createCancelPushFrame(0)]), false).error?.code, H3_ID_ERROR);
});

test('control stream: SETTINGS errors surface, the stream ending is H3_CLOSED_CRITICAL_STREAM', () => {
  const dup = frame(FRAME_SETTINGS, settingsPayload([[0x06, 1], [0x06, 2]]));
  assert.equal(control(dup, true).error?.code, H3_SETTINGS_ERROR);
  const reader = new ControlStreamReader(new ControlLog(), true);
  assert.equal(reader.push(SETTINGS_FRAME), null);
  assert.equal(reader.end().code, H3_CLOSED_CRITICAL_STREAM);
  assert.equal(reader.push(createGoawayFrame(0))?.code, H3_CLOSED_CRITICAL_STREAM, 'stays failed');
});

test('control stream: property, arbitrary bytes never throw', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 100 }), fc.boolean(), (bytes, withSettings) => {
      const input = withSettings ? Buffer.concat([SETTINGS_FRAME, bytes]) : Buffer.from(bytes);
      const { error } = control(input, true);
      if (error !== null) assert.ok(error instanceof H3Error && error.isConnectionError);
    }),
    { numRuns: 500 },
  );
});

// ---------------------------------------------------------------------------------------------
// Unidirectional stream header

test('uni stream header: known types, offset of the stream data', () => {
  const cases: Array<[string, UniStreamKind]> = [
    ['00', UniStreamKind.Control],
    ['02', UniStreamKind.QpackEncoder],
    ['03', UniStreamKind.QpackDecoder],
    ['4000', UniStreamKind.Control], // non-minimal encoding of 0
  ];
  for (const [h, kind] of cases) {
    const r = new UniStreamHeaderReader(true);
    const bytes = Buffer.concat([hex(h), hex('0400')]);
    assert.equal(r.feed(bytes), kind, h);
    assert.equal(r.offset, hex(h).length);
  }
});

test('uni stream header: unknown and grease types are reported, not errors', () => {
  const r = new UniStreamHeaderReader(true);
  assert.equal(r.feed(hex('21ff')), UniStreamKind.Unknown);
  assert.equal(r.streamType, 0x21);
  assert.equal(r.describe(), 'unknown stream type 0x21');
  assert.equal(r.error, null);
  const big = new UniStreamHeaderReader(false);
  assert.equal(big.feed(hex('ffffffffffffffff')), UniStreamKind.Unknown);
  assert.equal(big.describe(), 'unknown stream type (above 2^53-1)');
});

test('uni stream header: split varints; push streams', () => {
  const r = new UniStreamHeaderReader(false);
  // 0x4001 = push stream type 1 (non-minimal encoding), then push ID 0x4005, all split.
  assert.equal(r.feed(hex('40')), UniStreamKind.Pending);
  assert.equal(r.feed(hex('01')), UniStreamKind.Pending, 'type known, push ID still to come');
  assert.equal(r.feed(hex('40')), UniStreamKind.Pending);
  assert.equal(r.feed(hex('05aa')), UniStreamKind.Push);
  assert.equal(r.pushId, 5);
  assert.equal(r.offset, 1, 'data starts after the push ID');
  const server = new UniStreamHeaderReader(true);
  assert.equal(server.feed(hex('01')), UniStreamKind.Error);
  assert.equal(server.error?.code, H3_STREAM_CREATION_ERROR);
});

test('critical streams: one of each per peer', () => {
  const c = new CriticalStreams();
  assert.equal(c.register(UniStreamKind.Control), null);
  assert.equal(c.register(UniStreamKind.QpackEncoder), null);
  assert.equal(c.register(UniStreamKind.QpackDecoder), null);
  assert.equal(c.register(UniStreamKind.Unknown), null);
  assert.equal(c.register(UniStreamKind.Unknown), null);
  assert.equal(c.register(UniStreamKind.Control)?.code, H3_STREAM_CREATION_ERROR);
  assert.equal(c.register(UniStreamKind.QpackEncoder)?.code, H3_STREAM_CREATION_ERROR);
  assert.equal(c.register(UniStreamKind.QpackDecoder)?.code, H3_STREAM_CREATION_ERROR);
  assert.equal(CriticalStreams.closed(UniStreamKind.QpackEncoder).code, H3_CLOSED_CRITICAL_STREAM);
});

// ---------------------------------------------------------------------------------------------
// Hostile input on the remaining decoders (issue 7: every decoder Skiff owns)

test('parseSettings: property, arbitrary payloads give settings or H3_SETTINGS_ERROR / H3_FRAME_ERROR, never a throw', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
      const r = parseSettings(bytes);
      if (r instanceof H3Error) {
        assert.ok(r.code === H3_SETTINGS_ERROR || r.code === H3_FRAME_ERROR, r.toString());
        return;
      }
      assert.ok(r instanceof H3Settings);
      for (const v of [r.qpackMaxTableCapacity, r.maxFieldSectionSize, r.qpackBlockedStreams]) assert.ok(Number.isSafeInteger(v) && v >= 0);
    }),
    { numRuns: 1000 },
  );
});

test('uni stream header: property, arbitrary bytes in arbitrary chunks on either side never throw', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 24 }), fc.array(fc.nat(), { maxLength: 6 }), fc.boolean(), (bytes, rawPoints, isServer) => {
      const buf = Buffer.from(bytes);
      const points = [...new Set(rawPoints.map((p) => p % (buf.length + 1)))];
      const reader = new UniStreamHeaderReader(isServer);
      let kind = UniStreamKind.Pending;
      for (const chunk of splitAt(buf, points)) {
        kind = reader.feed(chunk);
        if (kind !== UniStreamKind.Pending) {
          assert.ok(reader.offset <= chunk.length, 'the stream data starts inside the last chunk');
          break;
        }
      }
      if (kind !== UniStreamKind.Pending) assert.equal(reader.feed(hex('00')), kind, 'a final kind does not change');
      if (kind === UniStreamKind.Error) {
        assert.ok(isServer, 'only a server refuses a stream type (push)');
        assert.equal(reader.error?.code, H3_STREAM_CREATION_ERROR);
      } else {
        assert.equal(reader.error, null);
      }
      if (kind === UniStreamKind.Push) assert.ok(!isServer && Number.isSafeInteger(reader.pushId) && reader.pushId >= 0);
    }),
    { numRuns: 1000 },
  );
});
