// The request/response stream state machine (protocols/h3/message.ts): frame order per RFC 9114
// §4.1, frames that belong elsewhere, Content-Length accounting, interim responses, CONNECT,
// the end of the stream, every split of the same bytes giving the same events, and arbitrary
// bytes never throwing nor producing callbacks after the end.
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
  H3Error,
  H3_EXCESSIVE_LOAD,
  H3_FRAME_ERROR,
  H3_FRAME_UNEXPECTED,
  H3_ID_ERROR,
  H3_MESSAGE_ERROR,
  H3_REQUEST_INCOMPLETE,
  QPACK_DECOMPRESSION_FAILED,
} from '../../../protocols/h3/frames.js';
import { MessageKind, MessageReader, type MessageHandler, type MessageReaderOptions } from '../../../protocols/h3/message.js';
import { QpackDecoder } from '../../../protocols/h3/qpack/decoder.js';
import { QpackEncoder } from '../../../protocols/h3/qpack/encoder.js';
import { writeVarint } from '../../../protocols/h3/varint.js';

const encoder = new QpackEncoder();

function varint(v: number): Buffer {
  const b = Buffer.alloc(8);
  return b.subarray(0, writeVarint(b, 0, v));
}

function frame(type: number, payload: Uint8Array | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'latin1') : Buffer.from(payload);
  return Buffer.concat([varint(type), varint(body.length), body]);
}

function headers(fields: string[]): Buffer {
  return encoder.encodeHeadersFrame(fields);
}

function data(text: string): Buffer {
  return frame(FRAME_DATA, text);
}

const REQUEST = [':method', 'POST', ':scheme', 'https', ':authority', 'example.com', ':path', '/upload'];
const RESPONSE = [':status', '200'];

/** Records callbacks as text; DATA chunks are merged so chunkings compare equal. */
class Recorder implements MessageHandler {
  events: string[];
  error: H3Error | null;
  constructor() {
    this.events = [];
    this.error = null;
  }
  onHeaders(fields: string[], isTrailers: boolean): void {
    this.events.push(`${isTrailers ? 'trailers' : 'headers'} ${fields.join(' ')}`);
  }
  onData(chunk: Uint8Array): void {
    const text = Buffer.from(chunk).toString('latin1');
    const last = this.events.length - 1;
    if (last >= 0 && this.events[last].startsWith('data ')) this.events[last] += text;
    else this.events.push(`data ${text}`);
  }
  onEnd(): void {
    this.events.push('end');
  }
  onError(error: H3Error): void {
    assert.equal(this.error, null, 'onError at most once');
    this.error = error;
    this.events.push(`error ${error.name}`);
  }
}

function run(
  chunks: readonly Uint8Array[],
  options: MessageReaderOptions = { kind: MessageKind.Request },
  isFin = true,
): { rec: Recorder; reader: MessageReader } {
  const rec = new Recorder();
  const reader = new MessageReader(rec, new QpackDecoder(), 0, options);
  for (const c of chunks) reader.push(c);
  if (isFin) reader.end();
  return { rec, reader };
}

function errorOf(bytes: Buffer, options: MessageReaderOptions = { kind: MessageKind.Request }): H3Error {
  const { rec } = run([bytes], options);
  assert.ok(rec.error !== null, `expected an error, got ${rec.events.join(' | ')}`);
  return rec.error;
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

const FULL_REQUEST = Buffer.concat([
  headers([...REQUEST, 'content-length', '11']),
  frame(0x21, 'grease'),
  data('hello '),
  data(''),
  data('world'),
  frame(0x1f * 5 + 0x21, ''),
  headers(['x-checksum', 'abc']),
  frame(0x40, 'trailing unknown frames are fine'),
]);

const FULL_EVENTS = [
  `headers ${[...REQUEST, 'content-length', '11'].join(' ')}`,
  'data hello world',
  'trailers x-checksum abc',
  'end',
];

test('request: HEADERS, DATA, trailers, end; unknown frames skipped', () => {
  const { rec, reader } = run([FULL_REQUEST]);
  assert.deepEqual(rec.events, FULL_EVENTS);
  assert.equal(reader.dataBytes, 11);
  assert.equal(reader.info.method, 'POST');
  assert.equal(reader.info.path, '/upload');
  assert.equal(reader.isClosed, true);
});

test('request: split at every byte boundary gives the same events', () => {
  for (let i = 0; i <= FULL_REQUEST.length; i++) {
    assert.deepEqual(run(splitAt(FULL_REQUEST, [i])).rec.events, FULL_EVENTS, `split at ${i}`);
  }
});

test('request: property, arbitrary chunkings give the same events', () => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: 0, max: FULL_REQUEST.length }), { maxLength: 25 }), (points) => {
      assert.deepEqual(run(splitAt(FULL_REQUEST, points)).rec.events, FULL_EVENTS);
    }),
    { numRuns: 500 },
  );
});

test('request: DATA is passed through as views of the pushed chunk', () => {
  const chunk = Buffer.concat([headers(REQUEST), data('abcdef')]);
  const seen: Uint8Array[] = [];
  const handler: MessageHandler = {
    onHeaders: () => {},
    onData: (c) => void seen.push(c),
    onEnd: () => {},
    onError: (e) => assert.fail(e.toString()),
  };
  const reader = new MessageReader(handler, new QpackDecoder(), 0, { kind: MessageKind.Request });
  reader.push(chunk);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].buffer, chunk.buffer);
});

test('frame order errors are H3_FRAME_UNEXPECTED connection errors', () => {
  const cases: Array<[Buffer, string]> = [
    [data('x'), 'DATA before HEADERS'],
    [Buffer.concat([data(''), headers(REQUEST)]), 'empty DATA before HEADERS'],
    [Buffer.concat([headers(REQUEST), headers(['x', 'y']), data('x')]), 'DATA after trailers'],
    [Buffer.concat([headers(REQUEST), headers(['x', 'y']), headers(['z', 'w'])]), 'HEADERS after trailers'],
    [Buffer.concat([headers(REQUEST), frame(FRAME_SETTINGS, '')]), 'SETTINGS on a request stream'],
    [Buffer.concat([frame(FRAME_SETTINGS, '')]), 'SETTINGS first on a request stream'],
    [Buffer.concat([headers(REQUEST), frame(FRAME_GOAWAY, '\x00')]), 'GOAWAY'],
    [Buffer.concat([headers(REQUEST), frame(FRAME_MAX_PUSH_ID, '\x00')]), 'MAX_PUSH_ID'],
    [Buffer.concat([headers(REQUEST), frame(FRAME_CANCEL_PUSH, '\x00')]), 'CANCEL_PUSH'],
    [Buffer.concat([headers(REQUEST), frame(FRAME_PUSH_PROMISE, '\x00\x00\x00')]), 'PUSH_PROMISE from a client'],
    [Buffer.concat([headers(REQUEST), frame(0x02, 'x')]), 'HTTP/2 PRIORITY type'],
    [Buffer.concat([headers(REQUEST), frame(0x09, 'x')]), 'HTTP/2 CONTINUATION type'],
  ];
  for (const [bytes, why] of cases) {
    const err = errorOf(bytes);
    assert.equal(err.code, H3_FRAME_UNEXPECTED, why);
    assert.equal(err.isConnectionError, true, why);
  }
});

test('PUSH_PROMISE: H3_ID_ERROR at a client (no MAX_PUSH_ID sent), unexpected on a push stream', () => {
  const bytes = Buffer.concat([frame(FRAME_PUSH_PROMISE, '\x00\x00\x00'), headers(RESPONSE)]);
  assert.equal(errorOf(bytes, { kind: MessageKind.Response }).code, H3_ID_ERROR);
  assert.equal(errorOf(bytes, { kind: MessageKind.PushResponse }).code, H3_FRAME_UNEXPECTED);
});

test('Content-Length: excess refused at the DATA header, shortfall at the end', () => {
  const over = Buffer.concat([headers([...REQUEST, 'content-length', '3']), data('ab'), data('cd')]);
  const { rec } = run([over]);
  assert.deepEqual(rec.events.slice(1), ['data ab', 'error H3_MESSAGE_ERROR'], 'no byte past the length is delivered');
  assert.equal(rec.error?.isConnectionError, false);
  const under = Buffer.concat([headers([...REQUEST, 'content-length', '3']), data('ab')]);
  assert.equal(errorOf(under).code, H3_MESSAGE_ERROR);
  const exact = Buffer.concat([headers([...REQUEST, 'content-length', '3']), data('ab'), data('c'), headers(['t', 'v'])]);
  assert.deepEqual(run([exact]).rec.events.at(-1), 'end');
});

test('Content-Length: caller hook when validating itself', () => {
  const rec = new Recorder();
  const reader = new MessageReader(rec, new QpackDecoder(), 0, { kind: MessageKind.Request, validate: false });
  reader.push(Buffer.concat([headers(['Not-Validated', 'x']), data('abc')]));
  reader.setExpectedContentLength(5);
  reader.end();
  assert.equal(rec.error?.code, H3_MESSAGE_ERROR);
  assert.equal(reader.dataBytes, 3);
});

test('responses: interim 1xx then final; HEAD and 304 skip the length check', () => {
  const bytes = Buffer.concat([
    headers([':status', '100']),
    headers([':status', '103', 'link', '</s.css>; rel=preload']),
    headers([':status', '200', 'content-length', '2']),
    data('ok'),
  ]);
  const { rec } = run([bytes], { kind: MessageKind.Response });
  assert.deepEqual(rec.events, [
    'headers :status 100',
    'headers :status 103 link </s.css>; rel=preload',
    'headers :status 200 content-length 2',
    'data ok',
    'end',
  ]);
  const dataAfterInterim = Buffer.concat([headers([':status', '103']), data('x')]);
  assert.equal(errorOf(dataAfterInterim, { kind: MessageKind.Response }).code, H3_FRAME_UNEXPECTED);
  const head = headers([':status', '200', 'content-length', '1000']);
  assert.equal(run([head], { kind: MessageKind.Response, isResponseToHead: true }).rec.error, null);
  assert.equal(run([headers([':status', '304', 'content-length', '1000'])], { kind: MessageKind.Response }).rec.error, null);
  assert.equal(errorOf(head, { kind: MessageKind.Response }).code, H3_MESSAGE_ERROR);
  // Interim detection also works without validation.
  const raw = run([bytes], { kind: MessageKind.Response, validate: false }).rec;
  assert.equal(raw.events.length, 5);
});

test('CONNECT: only DATA after the header section', () => {
  const connect = [':method', 'CONNECT', ':authority', 'db:5432'];
  const ok = run([Buffer.concat([headers(connect), data('tunnel bytes'), frame(0x21, '')])]);
  assert.deepEqual(ok.rec.events, [`headers ${connect.join(' ')}`, 'data tunnel bytes', 'end']);
  assert.equal(errorOf(Buffer.concat([headers(connect), headers(['x', 'y'])])).code, H3_FRAME_UNEXPECTED);
});

test('the end of the stream', () => {
  assert.equal(errorOf(Buffer.alloc(0)).code, H3_REQUEST_INCOMPLETE);
  assert.equal(errorOf(frame(0x21, 'only grease')).code, H3_REQUEST_INCOMPLETE);
  assert.equal(errorOf(Buffer.alloc(0), { kind: MessageKind.Response }).code, H3_MESSAGE_ERROR);
  const cut = Buffer.concat([headers(REQUEST), data('abcdef')]);
  const err = errorOf(cut.subarray(0, cut.length - 2));
  assert.equal(err.code, H3_FRAME_ERROR);
  assert.equal(err.isConnectionError, true);
});

test('malformed header sections are stream errors; QPACK failures connection errors', () => {
  const upper = errorOf(headers([...REQUEST, 'X-Upper', 'x']));
  assert.equal(upper.code, H3_MESSAGE_ERROR);
  assert.equal(upper.isConnectionError, false);
  assert.equal(errorOf(headers([':method', 'GET'])).code, H3_MESSAGE_ERROR);
  assert.equal(errorOf(Buffer.concat([headers(REQUEST), headers([':path', '/'])])).code, H3_MESSAGE_ERROR);
  const badQpack = errorOf(frame(FRAME_HEADERS, '\x00\x00\xff\x24'));
  assert.equal(badQpack.code, QPACK_DECOMPRESSION_FAILED);
  assert.equal(badQpack.isConnectionError, true);
  // An oversized HEADERS frame is refused before it is buffered.
  const big = headers([...REQUEST, 'x-big', 'v'.repeat(2000)]);
  assert.equal(errorOf(big.subarray(0, 4), { kind: MessageKind.Request, maxFramePayload: 1000 }).code, H3_EXCESSIVE_LOAD);
});

test('field section over the decoder limit: a stream error marked as too large (431)', () => {
  const rec = new Recorder();
  const reader = new MessageReader(rec, new QpackDecoder({ maxFieldSectionSize: 300 }), 0, { kind: MessageKind.Request });
  reader.push(headers([...REQUEST, 'cookie', 'c'.repeat(300)]));
  assert.equal(rec.error?.code, H3_EXCESSIVE_LOAD);
  assert.equal(rec.error?.isHeadersTooLarge, true);
  assert.equal(rec.error?.isConnectionError, false);
});

test('no callbacks after onEnd, onError or abort', () => {
  const { rec, reader } = run([FULL_REQUEST]);
  const before = rec.events.length;
  assert.equal(reader.push(data('more')), false);
  reader.end();
  assert.equal(rec.events.length, before);
  const rec2 = new Recorder();
  const r2 = new MessageReader(rec2, new QpackDecoder(), 0, { kind: MessageKind.Request });
  r2.push(headers(REQUEST));
  r2.abort();
  assert.equal(r2.push(data('x')), false);
  r2.end();
  assert.deepEqual(rec2.events, [`headers ${REQUEST.join(' ')}`]);
});

test('abort with a dynamic table queues a Stream Cancellation', () => {
  const decoder = new QpackDecoder({ maxTableCapacity: 4096 });
  const reader = new MessageReader(new Recorder(), decoder, 8, { kind: MessageKind.Request });
  reader.push(headers(REQUEST));
  reader.abort();
  assert.equal(decoder.takeDecoderStreamData()?.toString('hex'), '48');
});

test('property: arbitrary bytes in arbitrary chunks never throw; at most one terminal callback', () => {
  const prefixes = [Buffer.alloc(0), headers(REQUEST), headers(RESPONSE)];
  fc.assert(
    fc.property(
      fc.constantFrom(0, 1, 2),
      fc.uint8Array({ maxLength: 200 }),
      fc.array(fc.nat(), { maxLength: 6 }),
      fc.constantFrom(MessageKind.Request, MessageKind.Response, MessageKind.PushResponse),
      fc.boolean(),
      (prefixIndex, bytes, rawPoints, kind, isFin) => {
        const buf = Buffer.concat([prefixes[prefixIndex], bytes]);
        const points = [...new Set(rawPoints.map((p) => p % (buf.length + 1)))];
        const { rec } = run(splitAt(buf, points), { kind, maxFramePayload: 256 }, isFin);
        const terminal = rec.events.filter((e) => e === 'end' || e.startsWith('error ')).length;
        assert.ok(terminal <= 1);
        if (terminal === 1) {
          const last = rec.events[rec.events.length - 1];
          assert.ok(last === 'end' || last.startsWith('error '), 'nothing after the terminal callback');
        }
        if (isFin) assert.equal(terminal, 1, 'a FIN always resolves the message');
      },
    ),
    { numRuns: 1000 },
  );
});
