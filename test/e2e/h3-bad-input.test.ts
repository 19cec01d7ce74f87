// HTTP/3 bad input against the real sidecar (issue 4, item 5): malformed frames on request and
// control streams, QPACK errors, oversized header sections, stream limits, reset storms and
// garbage datagrams. Each case asserts the exact code the client observes (RESET_STREAM,
// STOP_SENDING or CONNECTION_CLOSE, RFC 9114 §8 / RFC 9204 §6), then that a fresh connection
// still gets a 200; the last case checks the sidecar is alive with nothing left in flight and
// no stack trace on its stderr. Bytes go out through the raw API of test/helpers/h3-client.ts.
// The one sidecar started here is stopped by its PID (SkiffProcess.stop).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { after, before, describe, it } from 'node:test';
import {
  FRAME_DATA,
  FRAME_GOAWAY,
  FRAME_HEADERS,
  FRAME_SETTINGS,
  H3_CLOSED_CRITICAL_STREAM,
  H3_EXCESSIVE_LOAD,
  H3_FRAME_ERROR,
  H3_FRAME_UNEXPECTED,
  H3_MESSAGE_ERROR,
  H3_MISSING_SETTINGS,
  H3_NO_ERROR,
  H3_REQUEST_CANCELLED,
  H3_STREAM_CREATION_ERROR,
  QPACK_DECODER_STREAM_ERROR,
  QPACK_DECOMPRESSION_FAILED,
  QPACK_ENCODER_STREAM_ERROR,
  h3ErrorName,
} from '../../protocols/h3/frames.js';
import { ensureCerts, type TestCerts } from '../helpers/certs.js';
import { H3TestClient, encodeFieldSection, rawFrame, rawFrameHeader, type RawH3Stream } from '../helpers/h3-client.js';
import { freePort, freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { startH1Upstream, type H1Upstream } from '../helpers/upstreams.js';

const HOST = '127.0.0.1';
/** Stream types (RFC 9114 §6.2, RFC 9204 §4.2). */
const UNI_CONTROL = 0x00;
const UNI_QPACK_ENCODER = 0x02;
const UNI_QPACK_DECODER = 0x03;
/** The listener's initial_max_streams_bidi (protocols/h3/server.ts, serverConfig). */
const SERVER_MAX_STREAMS_BIDI = 256;
/** Skiff's default limits.maxHeaderBytes (src/config/load.ts): the decoded field section limit. */
const MAX_HEADER_BYTES = 16384;

interface Stats {
  arena: { live: number };
  engine: { inFlight: number; requestsTotal: number };
}

async function until(what: string, pred: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const hex = (code: number): string => `${h3ErrorName(code)} (0x${code.toString(16)})`;

describe('HTTP/3 bad input: the right error, nothing else harmed', () => {
  let certs: TestCerts;
  let up: H1Upstream;
  let skiff: SkiffProcess;
  let port = 0;
  let adminPort = 0;

  const stats = async (): Promise<Stats> => (await (await fetch(`http://${HOST}:${adminPort}/stats`)).json()) as Stats;
  const connect = (o: { skipControl?: boolean } = {}): Promise<H3TestClient> => H3TestClient.connect(HOST, port, certs.pem.ca, o);

  /** Runs `fn` with a new connection and closes it afterwards (whatever state it is in). */
  async function withClient(fn: (c: H3TestClient) => Promise<void>, o: { skipControl?: boolean } = {}): Promise<void> {
    const c = await connect(o);
    try {
      await fn(c);
    } finally {
      await c.close();
    }
  }

  /** The server closes the connection with application error `code` (CONNECTION_CLOSE 0x1d). */
  async function expectConnectionError(c: H3TestClient, code: number, what: string): Promise<void> {
    await until(`${what}: CONNECTION_CLOSE`, () => c.peerClose() !== null);
    const e = c.peerClose();
    assert.ok(e !== null);
    assert.equal(e.isApp, true, `${what}: expected an application close, got transport 0x${e.code.toString(16)} (${e.reason})`);
    assert.equal(e.code, code, `${what}: expected ${hex(code)}, got ${hex(e.code)} (${e.reason})`);
  }

  /** The stream gets a complete response with `status` (the server's FIN, no reset). */
  async function expectStatus(s: RawH3Stream, status: number, what: string): Promise<void> {
    await until(`${what}: response`, () => s.isFin || s.resetCode >= 0 || s.isConnectionGone);
    assert.equal(s.resetCode, -1, `${what}: stream reset with ${hex(s.resetCode)}`);
    assert.equal(s.responseError, null, `${what}: bad response: ${String(s.responseError)}`);
    assert.equal(s.status, status, `${what}: status ${s.status}, body ${s.bodyText}`);
    assert.ok(s.isEnded, `${what}: response not complete`);
  }

  /** The server sent STOP_SENDING with `code` on a stream whose send side we kept open. */
  async function expectStopSending(s: RawH3Stream, code: number, what: string): Promise<void> {
    await until(`${what}: STOP_SENDING`, () => s.probeStopSending() >= 0 || s.isConnectionGone);
    assert.equal(s.stopCode, code, `${what}: STOP_SENDING ${hex(s.stopCode)}, expected ${hex(code)}`);
  }

  /** Opens a stream, writes `bytes` (no FIN: our side stays open) and holds the response (see RawH3Stream.holdResponse). */
  function sendHeld(c: H3TestClient, bytes: Buffer): RawH3Stream {
    const s = c.openRaw();
    s.write(bytes);
    s.holdResponse();
    return s;
  }

  /** STOP_SENDING(code) first (the response held back), then the complete response with `status`. */
  async function expectStoppedWithStatus(s: RawH3Stream, code: number, status: number, what: string): Promise<void> {
    await expectStopSending(s, code, what);
    s.releaseResponse();
    await expectStatus(s, status, what);
  }

  /** The connection still serves requests (stream errors must not take it down). */
  async function expectUsable(c: H3TestClient, what: string): Promise<void> {
    const r = await c.request('/status/200');
    assert.equal(r.status, 200, `${what}: request on the same connection`);
    assert.equal(c.peerClose(), null);
  }

  /** A fresh connection gets 200: the sidecar is fine after the bad input. */
  async function expectFresh200(): Promise<void> {
    await withClient(async (c) => {
      const r = await c.request('/');
      assert.equal(r.status, 200);
    });
  }

  before(async () => {
    certs = ensureCerts();
    up = await startH1Upstream();
    port = await freePort({ udp: true });
    [adminPort] = await freePorts(1);
    skiff = await startSkiff(`admin: { address: ${HOST}:${adminPort} }
listeners:
  - { name: tls, address: ${HOST}:${port}, protocols: [http1, h2, h3], tls: { cert: ${certs.cert}, key: ${certs.key} }, routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app }
clusters:
  - { name: app, protocol: http1, endpoints: [${HOST}:${up.port}] }
`);
  });

  after(async () => {
    await skiff?.stop();
    await up?.close();
  });

  // ---- request streams ----------------------------------------------------------------------

  it('request stream: DATA before HEADERS -> H3_FRAME_UNEXPECTED (connection)', async () => {
    await withClient(async (c) => {
      c.openRaw().write(rawFrame(FRAME_DATA, Buffer.from('early')), true);
      await expectConnectionError(c, H3_FRAME_UNEXPECTED, 'DATA first');
    });
    await expectFresh200();
  });

  it('request stream: DATA or HEADERS after the trailers -> H3_FRAME_UNEXPECTED (connection)', async () => {
    for (const late of [rawFrame(FRAME_DATA, Buffer.from('late')), null]) {
      await withClient(async (c) => {
        const s = c.openRaw();
        const trailers = c.headersFrame(['x-trailer', '1']);
        s.write(Buffer.concat([c.headersFrame(c.requestFields('/echo', 'POST')), rawFrame(FRAME_DATA, Buffer.from('body')), trailers]));
        s.write(late ?? c.headersFrame(['x-again', '1']), true);
        await expectConnectionError(c, H3_FRAME_UNEXPECTED, late === null ? 'HEADERS after trailers' : 'DATA after trailers');
      });
    }
    await expectFresh200();
  });

  it('request stream: SETTINGS (first, or after HEADERS) -> H3_FRAME_UNEXPECTED (connection)', async () => {
    for (const afterHead of [false, true]) {
      await withClient(async (c) => {
        const s = c.openRaw();
        const settings = rawFrame(FRAME_SETTINGS, []);
        s.write(afterHead ? Buffer.concat([c.headersFrame(c.requestFields('/echo', 'POST')), settings]) : settings, true);
        await expectConnectionError(c, H3_FRAME_UNEXPECTED, `SETTINGS on a request stream${afterHead ? ' after HEADERS' : ''}`);
      });
    }
    await expectFresh200();
  });

  it('request stream: reserved HTTP/2 frame types 0x2, 0x6, 0x8, 0x9 -> H3_FRAME_UNEXPECTED (connection)', async () => {
    for (const type of [0x02, 0x06, 0x08, 0x09]) {
      await withClient(async (c) => {
        const s = c.openRaw();
        s.write(Buffer.concat([c.headersFrame(c.requestFields('/echo', 'POST')), rawFrame(type, [0, 0, 0, 0])]), true);
        await expectConnectionError(c, H3_FRAME_UNEXPECTED, `HTTP/2 frame type 0x${type.toString(16)}`);
      });
    }
    await expectFresh200();
  });

  it('request stream: a frame truncated by FIN -> H3_FRAME_ERROR (connection, RFC 9114 §7.1)', async () => {
    // The payload cut short, the length varint cut short, a DATA frame cut short after a valid head.
    const cases: Array<[string, (c: H3TestClient) => Buffer]> = [
      ['HEADERS payload', () => Buffer.concat([rawFrameHeader(FRAME_HEADERS, 50), Buffer.alloc(10)])],
      ['HEADERS length varint', () => Buffer.from([FRAME_HEADERS, 0x40])],
      ['DATA payload', (c) => Buffer.concat([c.headersFrame(c.requestFields('/echo', 'POST')), rawFrameHeader(FRAME_DATA, 100), Buffer.alloc(10)])],
    ];
    for (const [what, bytes] of cases) {
      await withClient(async (c) => {
        c.openRaw().write(bytes(c), true);
        await expectConnectionError(c, H3_FRAME_ERROR, `truncated ${what}`);
      });
    }
    await expectFresh200();
  });

  it('request stream: FIN before any HEADERS -> a stream error only (400, not RESET_STREAM(H3_REQUEST_INCOMPLETE))', async () => {
    // RFC 9114 §4.1.2: "the server SHOULD abort its response stream with H3_REQUEST_INCOMPLETE".
    // Skiff (server.ts onRequestError) sends every request stream error down the 400 path, so
    // the client gets "400 malformed HTTP/3 request: request stream ended before the header
    // section" and no RESET_STREAM. A SHOULD, and harmless; asserted as it is.
    await withClient(async (c) => {
      const empty = c.openRaw();
      empty.end();
      await expectStatus(empty, 400, 'empty request stream');
      assert.match(empty.bodyText, /ended before the header section/);
      // Grease only, then FIN: still no request.
      const greaseOnly = c.openRaw();
      greaseOnly.write(rawFrame(0x21 + 0x1f * 7, [1, 2, 3]), true);
      await expectStatus(greaseOnly, 400, 'grease-only request stream');
      assert.equal(c.peerClose(), null, 'an incomplete request is not a connection error');
      await expectUsable(c, 'after incomplete requests');
    });
    await expectFresh200();
  });

  it('request stream: a HEADERS frame over 64 KiB is refused by its length -> H3_EXCESSIVE_LOAD (connection)', async () => {
    // FrameReader refuses a HEADERS longer than maxFramePayload (max(64 KiB, 2 x maxHeaderBytes))
    // as soon as the length is read: the 1 MiB frame is announced, 100 bytes of it are sent.
    await withClient(async (c) => {
      const s = c.openRaw();
      s.write(Buffer.concat([rawFrameHeader(FRAME_HEADERS, 1024 * 1024), Buffer.alloc(100)]));
      await expectConnectionError(c, H3_EXCESSIVE_LOAD, 'HEADERS of 1 MiB');
    });
    await expectFresh200();
  });

  it('request stream: a field section over maxHeaderBytes -> 431 and STOP_SENDING(H3_EXCESSIVE_LOAD); connection stays up', async () => {
    // The frame is under 64 KiB but decodes past SETTINGS_MAX_FIELD_SECTION_SIZE (16 KiB): the
    // QPACK decoder reports a stream error (isHeadersTooLarge), the server answers 431 (RFC 9114
    // §4.2.2) and stops the request stream with H3_EXCESSIVE_LOAD.
    await withClient(async (c) => {
      const s = sendHeld(c, c.headersFrame([...c.requestFields('/echo', 'POST'), 'x-big', 'v'.repeat(MAX_HEADER_BYTES + 100)]));
      await expectStoppedWithStatus(s, H3_EXCESSIVE_LOAD, 431, 'oversized section');
      assert.equal(s.header('x-skiff-error'), 'SKIFF_ERR_HEADERS_TOO_LARGE');
      await expectUsable(c, 'after 431');
    });
    await expectFresh200();
  });

  it('request stream: malformed header sections -> 400 and STOP_SENDING(H3_MESSAGE_ERROR); connection stays up', async () => {
    await withClient(async (c) => {
      const base = c.requestFields('/echo');
      const noPath = base.slice(0, 6);
      const cases: Array<[string, string[]]> = [
        ['missing :path', noPath],
        ['upper-case field name', [...base, 'X-Upper', 'v']],
        ['connection-specific field (connection)', [...base, 'connection', 'keep-alive']],
        ['connection-specific field (transfer-encoding)', [...base, 'transfer-encoding', 'chunked']],
        ['te other than trailers', [...base, 'te', 'gzip']],
        ['pseudo-header after a regular field', [':method', 'GET', ':scheme', 'https', 'x-a', 'b', ':path', '/', ':authority', `${HOST}:${port}`]],
        ['unknown pseudo-header', [...base, ':foo', 'bar']],
        ['duplicate :method', [...base, ':method', 'POST']],
        ['CR LF in a value', [...base, 'x-smuggle', 'a\r\nx-injected: 1']],
        ['space in :path', [':method', 'GET', ':scheme', 'https', ':authority', `${HOST}:${port}`, ':path', '/a b']],
      ];
      for (const [what, fields] of cases) {
        const s = sendHeld(c, c.headersFrame(fields));
        await expectStoppedWithStatus(s, H3_MESSAGE_ERROR, 400, what);
        assert.equal(s.header('x-skiff-error'), 'SKIFF_ERR_BAD_REQUEST', what);
      }
      assert.ok(!up.requests.some((r) => r.rawHeaders.includes('x-injected')), 'nothing malformed reached the upstream');
      await expectUsable(c, 'after malformed requests');
    });
    await expectFresh200();
  });

  it('request stream: content-length mismatch -> H3_MESSAGE_ERROR (400), a stream error only', async () => {
    await withClient(async (c) => {
      const head = c.headersFrame([...c.requestFields('/sink', 'POST'), 'content-length', '10']);
      // More DATA than declared: refused at the DATA frame header, before any byte is forwarded.
      const over = sendHeld(c, Buffer.concat([head, rawFrame(FRAME_DATA, Buffer.alloc(20, 0x61))]));
      await expectStoppedWithStatus(over, H3_MESSAGE_ERROR, 400, 'DATA over content-length');
      // Less DATA than declared, then FIN: refused at the end of the stream.
      const under = c.openRaw();
      under.write(Buffer.concat([head, rawFrame(FRAME_DATA, Buffer.alloc(5, 0x61))]), true);
      await expectStatus(under, 400, 'DATA under content-length');
      assert.match(under.bodyText, /content-length/);
      assert.equal(c.peerClose(), null);
      await expectUsable(c, 'after content-length mismatches');
    });
    await expectFresh200();
  });

  it('request stream: grease and unknown frame types anywhere are ignored', async () => {
    await withClient(async (c) => {
      const s = c.openRaw();
      const grease = (n: number, len: number): Buffer => rawFrame(0x21 + 0x1f * n, Buffer.alloc(len, n));
      s.write(
        Buffer.concat([
          grease(1, 0),
          grease(2, 300),
          c.headersFrame([...c.requestFields('/echo', 'POST'), 'content-length', '4']),
          rawFrame(0x3f00, [1, 2, 3]), // an unknown, non-grease extension type
          rawFrame(FRAME_DATA, Buffer.from('pi')),
          grease(3, 5),
          rawFrame(FRAME_DATA, Buffer.from('ng')),
          grease(4, 1),
        ]),
        true,
      );
      await expectStatus(s, 200, 'grease on a request stream');
      assert.equal(Buffer.concat(s.body).toString(), 'ping');
    });
  });

  // ---- QPACK --------------------------------------------------------------------------------

  /** Sends a HEADERS frame with this raw field section on a new stream. */
  function sendSection(c: H3TestClient, section: Buffer): RawH3Stream {
    const s = c.openRaw();
    s.write(rawFrame(FRAME_HEADERS, section), true);
    return s;
  }
  /** A valid prefix + :method GET, :scheme https, :path / (static indexed), for appending bad lines. */
  const GOOD_START = [0x00, 0x00, 0xc0 | 17, 0xc0 | 23, 0xc0 | 1];

  it('QPACK: a Required Insert Count > 0 when capacity 0 was advertised -> QPACK_DECOMPRESSION_FAILED (connection)', async () => {
    await withClient(async (c) => {
      sendSection(c, Buffer.from([0x01, 0x00, 0x80]));
      await expectConnectionError(c, QPACK_DECOMPRESSION_FAILED, 'Required Insert Count 1');
    });
    await withClient(async (c) => {
      // Required Insert Count 0, but an indexed line into the dynamic table (T=0).
      sendSection(c, Buffer.from([...GOOD_START, 0x80]));
      await expectConnectionError(c, QPACK_DECOMPRESSION_FAILED, 'dynamic reference with RIC 0');
    });
    await expectFresh200();
  });

  it('QPACK: static index 99 (out of range) -> QPACK_DECOMPRESSION_FAILED (connection)', async () => {
    for (const line of [[0xff, 0x24] /* indexed 63+36 */, [0x5f, 0x54, 0x01, 0x61] /* name ref 15+84 */]) {
      await withClient(async (c) => {
        sendSection(c, Buffer.from([...GOOD_START, ...line]));
        await expectConnectionError(c, QPACK_DECOMPRESSION_FAILED, `static index 99 (${line.map((b) => b.toString(16)).join(' ')})`);
      });
    }
    await expectFresh200();
  });

  it('QPACK: bad Huffman (zero padding, EOS inside, padding over 7 bits) -> QPACK_DECOMPRESSION_FAILED (connection)', async () => {
    // :authority (static name 0) with a Huffman value: 0x50 = literal with static name ref 0.
    const values: Array<[string, number[]]> = [
      ['padding of zeros', [0x81, 0x00]], // '0' is 00000, then 000 padding
      ['EOS in the string', [0x84, 0xff, 0xff, 0xff, 0xff]],
      ['padding over 7 bits', [0x82, 0x1f, 0xff]], // 'a' (00011) then 11 one bits
    ];
    for (const [what, value] of values) {
      await withClient(async (c) => {
        sendSection(c, Buffer.from([...GOOD_START, 0x50, ...value]));
        await expectConnectionError(c, QPACK_DECOMPRESSION_FAILED, `Huffman ${what}`);
      });
    }
    await expectFresh200();
  });

  it('QPACK: a truncated field line and a string longer than the section -> QPACK_DECOMPRESSION_FAILED', async () => {
    for (const bytes of [[...GOOD_START, 0x50, 0x0a, 0x61], [0x00], [...GOOD_START, 0x5f]]) {
      await withClient(async (c) => {
        sendSection(c, Buffer.from(bytes));
        await expectConnectionError(c, QPACK_DECOMPRESSION_FAILED, `truncated section ${Buffer.from(bytes).toString('hex')}`);
      });
    }
    await expectFresh200();
  });

  it('QPACK bomb: 800 bytes decoding to 43 KB -> 431 and STOP_SENDING(H3_EXCESSIVE_LOAD); connection stays up', async () => {
    // Static entry 85 (content-security-policy, 76 bytes + 32 overhead) costs 2 bytes on the wire.
    // The decoder counts the decoded size against maxFieldSectionSize before appending each line.
    await withClient(async (c) => {
      const lines: number[] = [...GOOD_START, 0x50, 0x09, ...Buffer.from('127.0.0.1')];
      for (let i = 0; i < 400; i++) lines.push(0xff, 85 - 63);
      const s = sendHeld(c, rawFrame(FRAME_HEADERS, Buffer.from(lines)));
      await expectStoppedWithStatus(s, H3_EXCESSIVE_LOAD, 431, 'QPACK bomb');
      await expectUsable(c, 'after a QPACK bomb');
    });
    await expectFresh200();
  });

  it('QPACK encoder stream: garbage, or instructions a 0-capacity table cannot take -> QPACK_ENCODER_STREAM_ERROR', async () => {
    const cases: Array<[string, number[]]> = [
      ['Set Dynamic Table Capacity 32 > 0', [0x3f, 0x01]],
      ['Insert with Literal Name', [0x41, 0x61, 0x01, 0x62]],
      ['Insert with static Name Reference', [0xc0 | 1, 0x01, 0x2f]],
      ['Duplicate of an empty table', [0x00]],
      ['garbage', [...randomBytes(64)].map((b) => b | 0x80)], // 0x80+: Insert with Name Reference forms
    ];
    for (const [what, bytes] of cases) {
      await withClient(async (c) => {
        const enc = c.openUni(UNI_QPACK_ENCODER);
        assert.ok(enc !== null);
        enc.write(bytes);
        await expectConnectionError(c, QPACK_ENCODER_STREAM_ERROR, `encoder stream: ${what}`);
      });
    }
    await expectFresh200();
  });

  it('QPACK decoder stream: acknowledgments for sections never sent -> QPACK_DECODER_STREAM_ERROR; closing it -> H3_CLOSED_CRITICAL_STREAM', async () => {
    await withClient(async (c) => {
      const dec = c.openUni(UNI_QPACK_DECODER);
      assert.ok(dec !== null);
      dec.write([0x80]); // Section Acknowledgment for stream 0
      await expectConnectionError(c, QPACK_DECODER_STREAM_ERROR, 'decoder stream ack');
    });
    await withClient(async (c) => {
      const enc = c.openUni(UNI_QPACK_ENCODER);
      assert.ok(enc !== null);
      enc.end();
      await expectConnectionError(c, H3_CLOSED_CRITICAL_STREAM, 'encoder stream FIN');
    });
    await expectFresh200();
  });

  // ---- control stream -----------------------------------------------------------------------

  it('control stream: first frame not SETTINGS (GOAWAY, or a grease frame) -> H3_MISSING_SETTINGS', async () => {
    for (const first of [rawFrame(FRAME_GOAWAY, [0]), rawFrame(0x21, [1, 2])]) {
      await withClient(async (c) => {
        const ctl = c.openUni(UNI_CONTROL);
        assert.ok(ctl !== null);
        ctl.write(first);
        await expectConnectionError(c, H3_MISSING_SETTINGS, `control stream starting with type 0x${first[0].toString(16)}`);
      }, { skipControl: true });
    }
    await expectFresh200();
  });

  it('control stream: a second control stream -> H3_STREAM_CREATION_ERROR', async () => {
    await withClient(async (c) => {
      await expectUsable(c, 'before'); // our own control stream (with SETTINGS) has been read
      const second = c.openUni(UNI_CONTROL);
      assert.ok(second !== null);
      second.write(rawFrame(FRAME_SETTINGS, []));
      await expectConnectionError(c, H3_STREAM_CREATION_ERROR, 'second control stream');
    });
    await expectFresh200();
  });

  it('control stream: DATA, HEADERS, or a second SETTINGS -> H3_FRAME_UNEXPECTED', async () => {
    const frames = [rawFrame(FRAME_DATA, [1, 2, 3]), rawFrame(FRAME_HEADERS, [0, 0, 0xd1]), rawFrame(FRAME_SETTINGS, [])];
    for (const f of frames) {
      await withClient(async (c) => {
        c.writeControl(f);
        await expectConnectionError(c, H3_FRAME_UNEXPECTED, `frame type 0x${f[0].toString(16)} on the control stream`);
      });
    }
    await expectFresh200();
  });

  it('control stream: closing it (FIN or RESET_STREAM) -> H3_CLOSED_CRITICAL_STREAM', async () => {
    await withClient(async (c) => {
      await expectUsable(c, 'before');
      c.writeControl(Buffer.alloc(0), true);
      await expectConnectionError(c, H3_CLOSED_CRITICAL_STREAM, 'control stream FIN');
    });
    await withClient(async (c) => {
      await expectUsable(c, 'before');
      c.resetControl(H3_NO_ERROR);
      await expectConnectionError(c, H3_CLOSED_CRITICAL_STREAM, 'control stream RESET_STREAM');
    });
    await expectFresh200();
  });

  it('unknown uni stream types are stopped with H3_STREAM_CREATION_ERROR and the connection keeps working', async () => {
    await withClient(async (c) => {
      for (const type of [0x21, 0x21 + 0x1f * 1000, 0x54, 0x3fff]) {
        const u = c.openUni(type);
        assert.ok(u !== null);
        // More than the server's stream window: the stream stays blocked, so the driver sees the
        // STOP_SENDING before quiche collects the stream (see RawH3Stream.probeStopSending).
        u.write(Buffer.alloc(1024 * 1024, 0x5a));
        await expectStopSending(u, H3_STREAM_CREATION_ERROR, `uni stream type 0x${type.toString(16)}`);
      }
      await expectUsable(c, 'after unknown uni streams');
    });
  });

  it('grease and unknown frame types on the control stream are ignored', async () => {
    await withClient(async (c) => {
      c.writeControl(Buffer.concat([rawFrame(0x21 + 0x1f * 3, Buffer.alloc(200, 7)), rawFrame(0x3f00, [1]), rawFrame(0x21, [])]));
      await expectUsable(c, 'after grease on the control stream');
    });
  });

  // ---- stream limits, storms, datagrams -------------------------------------------------------

  it(`stream limits: the client's QUIC layer refuses stream ${SERVER_MAX_STREAMS_BIDI + 1}; credit comes back as streams finish`, async () => {
    // quiche enforces the peer's initial_max_streams_bidi (256) on the sending side: openBidi()
    // returns -1 and a direct write on the next id fails with StreamLimit, so a server-side
    // STREAM_LIMIT_ERROR cannot be provoked with this QUIC stack (quiche would close with it).
    await withClient(async (c) => {
      const streams: RawH3Stream[] = [];
      for (let i = 0; i < SERVER_MAX_STREAMS_BIDI; i++) {
        const s = c.tryOpenRaw();
        assert.ok(s !== null, `stream ${i + 1} of ${SERVER_MAX_STREAMS_BIDI} refused`);
        streams.push(s);
      }
      assert.equal(c.tryOpenRaw(), null, `stream ${SERVER_MAX_STREAMS_BIDI + 1} must be refused`);
      const native = c.conn.native;
      assert.ok(native !== null);
      assert.throws(() => native.streamSend(SERVER_MAX_STREAMS_BIDI * 4, Buffer.from([FRAME_HEADERS]), false), /StreamLimit/);
      // All 256 open at the server at once (slow upstream), one write per flush (the order of
      // first bytes does not matter since the out-of-order fix: see the case below).
      for (const s of streams) {
        s.write(c.headersFrame(c.requestFields('/slow/1000')), true);
        await new Promise((r) => setImmediate(r));
      }
      assert.equal(c.tryOpenRaw(), null, 'still no credit while all 256 are in flight');
      await until('256 responses', () => streams.every((s) => s.isFin || s.resetCode >= 0), 20_000);
      assert.ok(streams.every((s) => s.status === 200), `statuses: ${[...new Set(streams.map((s) => s.status))].join(',')}`);
      await until('stream credit back', () => c.conn.peerStreamsLeftBidi() > 0);
      await expectUsable(c, 'after the stream limit');
      const s = await stats();
      assert.equal(s.engine.inFlight, 0);
    });
    await expectFresh200();
  });

  it('a storm of 500 requests reset right after HEADERS: other clients unaffected, nothing leaked', async () => {
    const storm = await connect();
    const others = await Promise.all([connect(), connect()]);
    try {
      let stop = false;
      let ok = 0;
      // Bystanders use responses whose body and end arrive together from the upstream (a
      // response ended in a later tick could lose its FIN before the fix for the case below).
      const bystander = async (c: H3TestClient): Promise<void> => {
        while (!stop) {
          const r = await c.request(ok % 2 === 0 ? '/' : '/status/201');
          assert.ok(r.status === 200 || r.status === 201, `bystander got ${r.status}`);
          ok++;
        }
      };
      const running = others.map(bystander);
      let sent = 0;
      while (sent < 500) {
        const s = storm.tryOpenRaw();
        if (s === null) {
          await new Promise((r) => setTimeout(r, 2)); // out of stream credit: let MAX_STREAMS arrive
          continue;
        }
        s.write(storm.headersFrame(storm.requestFields(sent % 2 === 0 ? '/echo' : '/slow/50', 'POST')));
        s.reset(H3_REQUEST_CANCELLED);
        s.stopSending(H3_REQUEST_CANCELLED);
        sent++;
        if (sent % 50 === 0) await new Promise((r) => setImmediate(r));
      }
      await new Promise((r) => setTimeout(r, 200));
      stop = true;
      await Promise.all(running);
      assert.ok(ok > 0, 'bystander requests ran during the storm');
      assert.equal(storm.peerClose(), null, 'resets are not connection errors');
      await expectUsable(storm, 'the storm connection');
      await until('contexts released', async () => {
        const s = await stats();
        return s.arena.live === 0 && s.engine.inFlight === 0;
      }, 10_000);
    } finally {
      await storm.close();
      await Promise.all(others.map((c) => c.close()));
    }
    await expectFresh200();
  });

  it('garbage datagrams (random, fake Initials, short headers) are dropped; connections keep working', async () => {
    await withClient(async (c) => {
      const sock = dgram.createSocket('udp4');
      await new Promise<void>((r) => sock.bind(0, HOST, () => r()));
      try {
        const send = (b: Buffer): Promise<void> => new Promise((r) => sock.send(b, port, HOST, () => r()));
        for (let i = 0; i < 200; i++) {
          const kind = i % 4;
          let b: Buffer;
          if (kind === 0) b = randomBytes(1 + (i % 1400));
          else if (kind === 1) {
            // Long header, Initial, version 1, random CIDs, garbage payload, padded to 1200.
            b = Buffer.concat([Buffer.from([0xc3, 0, 0, 0, 1, 8]), randomBytes(8), Buffer.from([8]), randomBytes(8), randomBytes(1200 - 23)]);
          } else if (kind === 2) b = Buffer.concat([Buffer.from([0x40 | (i & 0x3f)]), randomBytes(40)]); // short header
          else b = Buffer.alloc(i % 3); // empty and tiny
          await send(b);
        }
      } finally {
        sock.close();
      }
      await expectUsable(c, 'after garbage datagrams');
    });
    await expectFresh200();
  });

  // ---- bugs found (fixed) ------------------------------------------------------------------

  it('a request stream whose first bytes arrive after a higher-numbered stream\'s is still answered', async () => {
    // QUIC does not order streams: the driver delivers a stream found above a gap (discover()).
    // H3ServerSession used to take any id below the highest seen for "late bytes of a finished
    // stream" and ignored that request forever (no response, no reset, its stream credit never
    // returned); it now keeps the skipped ids (`unseen`). Seen in bursts too: the first of 256
    // streams written in one tick went unanswered in ~1 run of 2.
    await withClient(async (c) => {
      const low = c.openRaw(); // id 0
      const high = c.openRaw(); // id 4
      high.write(c.headersFrame(c.requestFields('/status/200')), true);
      await expectStatus(high, 200, 'stream 4 first');
      low.write(c.headersFrame(c.requestFields('/status/200')), true);
      await expectStatus(low, 200, 'stream 0 after stream 4');
    });
  });

  it('every response FIN arrives (a FIN written alone after DATA is not lost)', async () => {
    // H3ServerStream.onEnd used to write a zero-length buffer with FIN when the body ended in a
    // later tick than its last DATA. If the ACK of that DATA is processed before the flush,
    // quiche 0.18 sees the send side complete, collects the stream and never sends the FIN
    // (cloudflare/quiche#2525): the client has the whole response but no end. Measured here:
    // 1-12 of 512 streams per run. StreamOut.end() now sends the FIN with the last waiting
    // bytes, or on a 2-byte reserved frame (type 0x21, length 0): never alone.
    await withClient(async (c) => {
      const stuck: string[] = [];
      for (let round = 0; round < 8; round++) {
        const streams: RawH3Stream[] = [];
        for (let i = 0; i < 64; i++) {
          const s = c.openRaw();
          s.write(Buffer.concat([c.headersFrame(c.requestFields('/echo', 'POST')), rawFrame(FRAME_DATA, Buffer.from('x'))]), true);
          streams.push(s);
          await new Promise((r) => setImmediate(r));
        }
        await until('responses', () => streams.every((s) => s.isFin), 3000).catch(() => undefined);
        for (const s of streams) if (!s.isFin) stuck.push(`stream ${s.id}: status ${s.status}, ${s.bytesReceived} bytes, body "${s.bodyText}", no FIN`);
      }
      assert.deepEqual(stuck, []);
    });
  });

  it('afterwards: the sidecar is alive, nothing in flight, no stack trace on stderr', async () => {
    await expectFresh200();
    await until('nothing in flight', async () => {
      const s = await stats();
      return s.arena.live === 0 && s.engine.inFlight === 0;
    }, 10_000);
    const s = await stats();
    assert.equal(s.arena.live, 0);
    assert.equal(s.engine.inFlight, 0);
    const err = skiff.stderr();
    assert.doesNotMatch(err, /^\s+at .+[:(]\d+:\d+\)?$/m, `stack trace on stderr:\n${err.slice(-3000)}`);
    assert.doesNotMatch(err, /uncaught|unhandled/i, err.slice(-3000));
  });
});
