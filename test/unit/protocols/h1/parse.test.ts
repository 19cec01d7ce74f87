// The strict HTTP/1.1 parser (protocols/h1/parse.ts): what it accepts, every smuggling shape it
// must refuse, bodies split at awkward places, and property tests (fast-check) that it never
// throws and that chunked framing round-trips whatever the split.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ChunkedDecoder,
  ChunkState,
  ParseError,
  ParseErrorKind,
  parseRequestHead,
  parseResponseHead,
  RequestHead,
  ResponseHead,
  type ChunkSink,
} from '../../../../protocols/h1/parse.js';

const LIMITS = { maxFields: 128 };

function req(text: string): RequestHead {
  const r = parseRequestHead(text, LIMITS);
  if (r instanceof ParseError) assert.fail(`unexpected error: ${r.message}`);
  return r;
}

function reqError(text: string): ParseError {
  const r = parseRequestHead(text, LIMITS);
  assert.ok(r instanceof ParseError, `expected an error for ${JSON.stringify(text)}`);
  return r;
}

describe('parseRequestHead accepts', () => {
  it('a plain GET with headers kept in order and case', () => {
    const r = req('GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Thing:  spaced value \t\r\nAccept: */*');
    assert.equal(r.method, 'GET');
    assert.equal(r.target, '/a?b=1');
    assert.equal(r.version, 11);
    assert.deepEqual(r.rawHeaders, ['Host', 'example.com', 'X-Thing', 'spaced value', 'Accept', '*/*']);
    assert.equal(r.host, 'example.com');
    assert.equal(r.contentLength, -1);
    assert.equal(r.isChunked, false);
    assert.equal(r.isClose, false);
  });

  it('content-length, identical repeats, chunked, close, expect', () => {
    assert.equal(req('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42').contentLength, 42);
    assert.equal(req('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5').contentLength, 5);
    assert.equal(req('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked').isChunked, true);
    assert.equal(req('GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close').isClose, true);
    assert.equal(req('POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1').isExpectContinue, true);
  });

  it('HTTP/1.0 closes unless keep-alive is asked for; no Host needed', () => {
    assert.equal(req('GET / HTTP/1.0').isClose, true);
    assert.equal(req('GET / HTTP/1.0\r\nConnection: keep-alive').isClose, false);
  });

  it('absolute-form, asterisk-form, and CONNECT authority-form', () => {
    assert.equal(req('GET http://h.example/x HTTP/1.1\r\nHost: h.example').target, 'http://h.example/x');
    assert.equal(req('OPTIONS * HTTP/1.1\r\nHost: a').target, '*');
    assert.equal(req('CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443').method, 'CONNECT');
  });

  it('obs-text (bytes 0x80-0xff) in values', () => {
    assert.equal(req('GET / HTTP/1.1\r\nHost: a\r\nX-L: caf\u00e9').rawHeaders[3], 'caf\u00e9');
  });
});

describe('parseRequestHead refuses (request smuggling corpus)', () => {
  const cases: [string, string][] = [
    ['conflicting content-length', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6'],
    ['content-length list', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5'],
    ['signed content-length', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5'],
    ['hex content-length', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5'],
    ['empty content-length', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: '],
    ['CL with TE', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked'],
    ['TE with CL (order swapped)', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5'],
    ['TE not chunked', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip'],
    ['TE chunked twice in one field', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked'],
    ['TE repeated', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked'],
    ['TE with a typo', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx'],
    ['TE in HTTP/1.0', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked'],
    ['space before colon', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked'],
    ['tab before colon', 'GET / HTTP/1.1\r\nHost\t: a'],
    ['obs-fold', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2'],
    ['obs-fold with tab', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2'],
    ['bare LF line end', 'GET / HTTP/1.1\nHost: a'],
    ['bare LF inside', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2'],
    ['bare CR', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rX-B: 2'],
    ['NUL in value', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\u00002'],
    ['DEL in value', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\u007f'],
    ['invalid token char in name', 'GET / HTTP/1.1\r\nHost: a\r\nX(A): 1'],
    ['non-ASCII name', 'GET / HTTP/1.1\r\nHost: a\r\nX-\u00e9: 1'],
    ['empty name', 'GET / HTTP/1.1\r\nHost: a\r\n: 1'],
    ['line without colon', 'GET / HTTP/1.1\r\nHost: a\r\nnocolon'],
    ['two hosts', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b'],
    ['missing host in HTTP/1.1', 'GET / HTTP/1.1\r\nX-A: 1'],
    ['invalid method', 'G(T / HTTP/1.1\r\nHost: a'],
    ['lower-case version', 'GET / http/1.1\r\nHost: a'],
    ['HTTP/2 version on an h1 connection', 'GET / HTTP/2.0\r\nHost: a'],
    ['extra token in the request line', 'GET / HTTP/1.1 extra\r\nHost: a'],
    ['double space', 'GET  / HTTP/1.1\r\nHost: a'],
    ['missing target', 'GET HTTP/1.1\r\nHost: a'],
    ['relative target', 'GET a/b HTTP/1.1\r\nHost: a'],
  ];
  for (const [name, text] of cases) {
    it(name, () => {
      const e = reqError(text);
      assert.ok(e.message.length > 0);
    });
  }

  it('too many header fields is HeadersTooLarge', () => {
    let text = 'GET / HTTP/1.1\r\nHost: a';
    for (let i = 0; i < 130; i++) text += `\r\nX-${i}: v`;
    assert.equal(reqError(text).kind, ParseErrorKind.HeadersTooLarge);
  });
});

describe('parseResponseHead', () => {
  it('reads status, fields and framing', () => {
    const r = parseResponseHead('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a\r\nSet-Cookie: b', LIMITS) as ResponseHead;
    assert.equal(r.status, 200);
    assert.equal(r.contentLength, 2);
    assert.deepEqual(r.rawHeaders, ['Content-Length', '2', 'Set-Cookie', 'a', 'Set-Cookie', 'b']);
    assert.equal((parseResponseHead('HTTP/1.1 204', LIMITS) as ResponseHead).status, 204);
    assert.equal((parseResponseHead('HTTP/1.0 200 OK', LIMITS) as ResponseHead).isClose, true);
  });

  it('refuses garbage, bad codes and smuggling shapes', () => {
    for (const text of ['THIS IS NOT HTTP', 'HTTP/1.1 2000 OK', 'HTTP/1.1 20 OK', 'HTTP/1.1 099 X', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked', 'HTTP/1.1 200 OK\nX: 1']) {
      assert.ok(parseResponseHead(text, LIMITS) instanceof ParseError, text);
    }
  });
});

class CollectSink implements ChunkSink {
  data: Buffer[] = [];
  trailers: string[][] = [];
  ended = 0;
  onChunkData(d: Buffer): void { this.data.push(Buffer.from(d)); }
  onChunkTrailers(t: string[]): void { this.trailers.push(t); }
  onChunkEnd(): void { this.ended++; }
}

/** Feeds `wire` in pieces cut at `cuts`; returns bytes consumed in total or -1. */
function feedSplit(dec: ChunkedDecoder, wire: Buffer, cuts: number[], sink: CollectSink): number {
  const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
  let prev = 0;
  let used = 0;
  for (const p of [...points, wire.length]) {
    if (p <= prev) continue;
    if (dec.state === ChunkState.Done) break;
    const n = dec.feed(wire.subarray(prev, p), 0, sink);
    if (n < 0) return -1;
    used += n;
    prev = p;
  }
  return used;
}

function encodeChunked(parts: Buffer[], trailers: [string, string][]): Buffer {
  const out: Buffer[] = [];
  for (const p of parts) if (p.length > 0) out.push(Buffer.from(p.length.toString(16) + '\r\n'), p, Buffer.from('\r\n'));
  let tail = '0\r\n';
  for (const [n, v] of trailers) tail += `${n}: ${v}\r\n`;
  out.push(Buffer.from(tail + '\r\n'));
  return Buffer.concat(out);
}

describe('ChunkedDecoder', () => {
  it('decodes data, extensions and trailers, and stops at the end of the body', () => {
    const sink = new CollectSink();
    const dec = new ChunkedDecoder();
    const wire = Buffer.from('5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET /next');
    const used = dec.feed(wire, 0, sink);
    assert.equal(Buffer.concat(sink.data).toString(), 'hello world');
    assert.deepEqual(sink.trailers, [['X-T', '1']]);
    assert.equal(sink.ended, 1);
    assert.equal(wire.subarray(used).toString(), 'GET /next');
  });

  it('refuses broken framing', () => {
    for (const text of ['zz\r\nab\r\n', '5\r\nhelloXX', '5\nhello\r\n', '-1\r\n', '1234567890abc\r\n', '5;\u0001\r\nhello\r\n', '0\r\nbad trailer\r\n\r\n']) {
      const dec = new ChunkedDecoder();
      assert.equal(dec.feed(Buffer.from(text, 'latin1'), 0, new CollectSink()), -1, JSON.stringify(text));
      assert.ok(dec.error.length > 0);
    }
  });

  it('property: any body, any trailers, any split: the same bytes come out', () => {
    fc.assert(fc.property(
      fc.array(fc.uint8Array({ minLength: 0, maxLength: 300 }), { maxLength: 8 }),
      fc.array(fc.tuple(fc.constantFrom('x-a', 'x-b', 'grpc-status'), fc.stringMatching(/^[a-z0-9]{0,8}$/)), { maxLength: 3 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      (parts, trailers, cuts) => {
        const bufs = parts.map((p) => Buffer.from(p));
        const wire = encodeChunked(bufs, trailers);
        const sink = new CollectSink();
        const used = feedSplit(new ChunkedDecoder(), wire, cuts, sink);
        assert.equal(used, wire.length);
        assert.deepEqual(Buffer.concat(sink.data), Buffer.concat(bufs));
        assert.equal(sink.ended, 1);
        const flat = trailers.flatMap(([n, v]) => [n, v]);
        assert.deepEqual(sink.trailers.length === 0 ? [] : sink.trailers[0], flat);
      },
    ), { numRuns: 300 });
  });

  it('property: random bytes never throw; the decoder ends, fails, or waits', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), fc.array(fc.nat(), { maxLength: 6 }), (bytes, cuts) => {
      const dec = new ChunkedDecoder();
      const r = feedSplit(dec, Buffer.from(bytes), cuts, new CollectSink());
      assert.ok(r === -1 || r <= bytes.length);
    }), { numRuns: 500 });
  });
});

describe('parser properties', () => {
  it('random head text never throws, and either parses or names an error', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300, unit: 'binary-ascii' }), (text) => {
      const r = parseRequestHead(text, LIMITS);
      assert.ok(r instanceof RequestHead || (r instanceof ParseError && r.message.length > 0));
      const s = parseResponseHead(text, LIMITS);
      assert.ok(s instanceof ResponseHead || s instanceof ParseError);
    }), { numRuns: 2000 });
  });

  it('a request built from valid parts round-trips its fields', () => {
    const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
    const value = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,20}[\x21-\x7e])?$/);
    fc.assert(fc.property(fc.array(fc.tuple(token, value), { maxLength: 10 }), (fields) => {
      const clean = fields.filter(([n]) => !['host', 'content-length', 'transfer-encoding'].includes(n.toLowerCase()));
      const text = 'GET /p HTTP/1.1\r\nHost: h' + clean.map(([n, v]) => `\r\n${n}: ${v}`).join('');
      const r = parseRequestHead(text, LIMITS);
      assert.ok(r instanceof RequestHead, r instanceof ParseError ? r.message : '');
      assert.deepEqual(r.rawHeaders, ['Host', 'h', ...clean.flatMap(([n, v]) => [n, v])]);
    }), { numRuns: 500 });
  });
});
