// The strict HTTP/1.1 parser (protocols/h1/parse.ts): what it accepts, every smuggling shape it
// must refuse, bodies split at awkward places, and property tests (fast-check) that it never
// throws and that chunked framing round-trips whatever the split.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ChunkedDecoder,
  ChunkState,
  hasInvalidHeadByte,
  isValidAuthority,
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

  it('Host as host[:port], an IP literal, or empty', () => {
    for (const host of ['a', 'svc_1.ns.local:8080', '10.0.0.1:80', '[::1]', '[::1]:8080', 'xn--bcher-kva.example', 'a:', '']) {
      assert.equal(req(`GET / HTTP/1.1\r\nHost: ${host}`).host, host);
    }
    assert.equal(req('GET http://h.example:8080 HTTP/1.1\r\nHost: x').target, 'http://h.example:8080');
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
    // Found by test/e2e/h1-hostile.test.ts: these were forwarded with the bad value as Host.
    ['Host with a space', 'GET / HTTP/1.1\r\nHost: a b'],
    ['Host with a path', 'GET / HTTP/1.1\r\nHost: a/b'],
    ['Host with userinfo', 'GET / HTTP/1.1\r\nHost: u@a'],
    ['Host with a bad port', 'GET / HTTP/1.1\r\nHost: a:b'],
    ['Host with a six-digit port', 'GET / HTTP/1.1\r\nHost: a:123456'],
    ['Host with an unclosed IP literal', 'GET / HTTP/1.1\r\nHost: [::1'],
    ['absolute-form with userinfo', 'GET http://u@h.example/ HTTP/1.1\r\nHost: h.example'],
    ['absolute-form with user:password', 'GET http://u:p@h.example/ HTTP/1.1\r\nHost: h.example'],
    ['absolute-form with an empty authority', 'GET http:///x HTTP/1.1\r\nHost: h.example'],
    ['absolute-form with #@', 'GET http://evil#@h.example/ HTTP/1.1\r\nHost: h.example'],
    ['absolute-form with a backslash', 'GET http://h.example\\@evil/ HTTP/1.1\r\nHost: h.example'],
    ['absolute-form with a non-http scheme', 'GET ftp://h.example/ HTTP/1.1\r\nHost: h.example'],
    // Legal (RFC 3986) but refused: the listener ends the authority at the first "/" only.
    ['absolute-form with a query and no path', 'GET http://h.example?q HTTP/1.1\r\nHost: h.example'],
  ];
  for (const [name, text] of cases) {
    it(name, () => {
      const e = reqError(text);
      assert.ok(e.message.length > 0);
    });
  }

  it('transfer codings: chunked not last is 400 (RFC 9112 §6.3), an unknown coding before chunked 501 (§6.1)', () => {
    const te = (v: string): ParseErrorKind => reqError(`POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ${v}`).kind;
    for (const v of ['gzip', 'identity', 'xchunked', 'chunkedx', 'chunked, identity', 'chunked, chunked', '"chunked"', 'chunked;q=1', 'ch unked', '']) {
      assert.equal(te(v), ParseErrorKind.BadRequest, v);
    }
    for (const v of ['gzip, chunked', 'deflate,chunked', 'gzip , , chunked']) assert.equal(te(v), ParseErrorKind.Unsupported, v);
  });

  it('too many header fields is HeadersTooLarge', () => {
    let text = 'GET / HTTP/1.1\r\nHost: a';
    for (let i = 0; i < 130; i++) text += `\r\nX-${i}: v`;
    assert.equal(reqError(text).kind, ParseErrorKind.HeadersTooLarge);
  });
});

describe('isValidAuthority and hasInvalidHeadByte', () => {
  it('isValidAuthority', () => {
    for (const ok of ['h', 'h.example', 'h:1', 'h:65535', '[::1]:1', "a-b_c~d!$&'()*+,;=%20", '']) assert.equal(isValidAuthority(ok), true, ok);
    for (const bad of ['a b', 'a/b', 'u@h', 'h:x', 'h:123456', '[::1', '[]', 'h#x', 'h?x', 'a\\b', 'caf\u00e9', 'h:1:2', '[::1]x']) assert.equal(isValidAuthority(bad), false, bad);
  });

  it('hasInvalidHeadByte finds what can never become a valid head, and waits on a final CR', () => {
    const bad = (text: string, from = 0): boolean => hasInvalidHeadByte(Buffer.from(text, 'latin1'), 0, from);
    assert.equal(bad('GET / HTTP/1.1\r\nHost: a\r\nX: \t\u00e9'), false);
    assert.equal(bad('GET / HTTP/1.1\r'), false);
    for (const text of ['GET / HTTP/1.1\n', '\n', 'GET / HTTP/1.1\rH', 'G\u0000', '\u0016\u0003\u0001', 'GET /\u007f']) assert.equal(bad(text), true, JSON.stringify(text));
    // Only bytes from `from` are checked, but a LF there is judged by the byte before it.
    assert.equal(bad('\u0000GET / HTTP/1.1\r\n', 1), false);
    assert.equal(bad('GET / HTTP/1.1\r\n', 15), false);
    assert.equal(bad('GET / HTTP/1.1\n', 14), true);
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

  it('caps chunk extensions per body, not only per line (16 KiB in all)', () => {
    const chunk = `1;${'e'.repeat(3000)}\r\na\r\n`;
    const dec = new ChunkedDecoder();
    assert.equal(dec.feed(Buffer.from(chunk.repeat(5)), 0, new CollectSink()), chunk.length * 5);
    assert.equal(dec.feed(Buffer.from(chunk.repeat(2)), 0, new CollectSink()), -1);
    assert.match(dec.error, /extensions/);
    dec.reset();
    assert.equal(dec.feed(Buffer.from(chunk.repeat(5)), 0, new CollectSink()), chunk.length * 5, 'reset starts a new budget');
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

describe('parser properties on mutated valid input (issue 7: every decoder Skiff owns)', () => {
  const HEADS = [
    'GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Request-Id: r1',
    'POST /upload HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 5\r\nExpect: 100-continue',
    'PUT http://h.example/x HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close',
    'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive',
    'HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nX-A: 1',
  ];
  const PIECES = [':', ' ', '\t', '\r', '\n', '\r\n', '\0', ',', ';', '"', '\x7f', '\u00e9', 'chunked', 'Content-Length: ', 'Transfer-Encoding: ', 'Host: ', '0', '-1', '99999999999999999999', 'HTTP/1.0', 'HTTP/2', '@', '[', '#', '\\'];
  const edit = fc.tuple(fc.nat(), fc.constantFrom('drop', 'insert', 'replace'), fc.oneof(fc.constantFrom(...PIECES), fc.string({ maxLength: 3, unit: 'binary-ascii' })));

  function applyEdits(text: string, edits: ReadonlyArray<readonly [number, string, string]>): string {
    let s = text;
    for (const [at, kind, piece] of edits) {
      const i = at % (s.length + 1);
      if (kind === 'drop') s = s.slice(0, i) + s.slice(i + 1);
      else if (kind === 'insert') s = s.slice(0, i) + piece + s.slice(i);
      else s = s.slice(0, i) + piece + s.slice(i + piece.length);
    }
    return s;
  }

  /** What must hold of any head the parser accepts: no ambiguous framing gets through. */
  function assertSaneFraming(h: RequestHead | ResponseHead): void {
    assert.ok(h.contentLength === -1 || (Number.isSafeInteger(h.contentLength) && h.contentLength >= 0), `content-length ${h.contentLength}`);
    if (h.isChunked) assert.equal(h.contentLength, -1, 'chunked and a Content-Length are never both accepted');
    assert.equal(h.rawHeaders.length % 2, 0);
  }

  it('valid heads with characters dropped, inserted or replaced never throw; an accepted one has unambiguous framing', () => {
    fc.assert(fc.property(fc.constantFrom(...HEADS), fc.array(edit, { minLength: 1, maxLength: 4 }), (head, edits) => {
      const text = applyEdits(head, edits);
      const r = parseRequestHead(text, LIMITS);
      if (r instanceof ParseError) assert.ok(r.message.length > 0);
      else assertSaneFraming(r);
      const s = parseResponseHead(text, LIMITS);
      if (s instanceof ParseError) assert.ok(s.message.length > 0);
      else assertSaneFraming(s);
    }), { numRuns: 3000 });
  });

  it('valid chunked bodies with bytes changed, dropped or inserted, in any split: end, fail or wait; never more out than in', () => {
    const BODIES = [
      '5\r\nhello\r\n0\r\n\r\n',
      '3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n',
      'A\r\n0123456789\r\n1\r\n-\r\n0;last\r\n\r\n',
    ];
    const byteEdit = fc.tuple(fc.nat(), fc.nat(255), fc.constantFrom('flip', 'drop', 'insert'));
    fc.assert(fc.property(fc.constantFrom(...BODIES), fc.array(byteEdit, { minLength: 1, maxLength: 3 }), fc.array(fc.nat(), { maxLength: 5 }), (body, edits, cuts) => {
      let wire = Buffer.from(body, 'latin1');
      for (const [at, value, kind] of edits) {
        const i = at % (wire.length + 1);
        if (kind === 'insert') wire = Buffer.concat([wire.subarray(0, i), Buffer.from([value]), wire.subarray(i)]);
        else if (i < wire.length && kind === 'drop') wire = Buffer.concat([wire.subarray(0, i), wire.subarray(i + 1)]);
        else if (i < wire.length) wire[i] ^= value | 1;
      }
      const sink = new CollectSink();
      const dec = new ChunkedDecoder();
      const used = feedSplit(dec, wire, cuts, sink);
      assert.ok(used === -1 || used <= wire.length);
      const out = sink.data.reduce((n, d) => n + d.length, 0);
      assert.ok(out <= wire.length, `${out} body bytes out of ${wire.length} on the wire`);
      assert.ok(sink.ended <= 1);
      if (sink.ended === 1) assert.equal(dec.state, ChunkState.Done);
    }), { numRuns: 2000 });
  });
});
