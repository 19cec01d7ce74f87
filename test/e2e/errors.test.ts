// Every error the engine maps, each produced by a real fault against the real sidecar
// (dist/src/cli.js) and real upstreams on 127.0.0.1, seen by real clients: curl over
// HTTP/1.1 and over HTTP/2 (prior knowledge), raw sockets where curl cannot send the fault,
// node:http2 where a body must grow over time. Each case asserts the status, the
// `x-skiff-error` code and a short plain-text body naming the cause; after each one a good
// request must still succeed, and at the end the sidecar is alive with no stack trace on
// stderr and every request context returned to the arena.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { curl, type ClientResult } from '../helpers/clients.js';
import { repoPath } from '../helpers/repo-root.js';
import { freePort, freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { startH1Upstream, startH2Upstream, type H1Upstream, type H2Upstream } from '../helpers/upstreams.js';

type Proto = 'h1' | 'h2';
const PROTOS: readonly Proto[] = ['h1', 'h2'];
const MAX_BODY = 1024;
const MAX_HEADER_BYTES = 4096;
const ROUTE_TIMEOUT_MS = 200;

// ---------------------------------------------------------------------------------------
// Faulty upstreams written here: they misbehave at the TCP level, which the shared
// upstreams don't do before a response head.

interface RawUpstream {
  port: number;
  close(): Promise<void>;
}

/**
 * An HTTP/1.1 "server" that reads a request head and then, by path:
 *   /close-early  destroys the connection without answering
 *   /garbage      answers bytes that are not HTTP and closes
 * anything else answers 200 "raw" (keep-alive).
 */
async function startRawUpstream(): Promise<RawUpstream> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let seen = '';
    socket.on('data', (b: Buffer) => {
      seen += b.toString('latin1');
      const end = seen.indexOf('\r\n\r\n');
      if (end < 0) return;
      const line = seen.slice(0, seen.indexOf('\r\n'));
      seen = seen.slice(end + 4);
      const path = line.split(' ')[1] ?? '/';
      if (path.startsWith('/close-early')) socket.destroy();
      else if (path.startsWith('/garbage')) socket.end('THIS IS NOT HTTP\r\n\r\n');
      else socket.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nraw\n');
    });
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Accepts TCP connections and never says a word (no HTTP/2 SETTINGS). */
async function startMuteUpstream(): Promise<RawUpstream> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.resume();
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------
// Clients

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The sidecar closed the connection after the response. */
  isClosed: boolean;
}

/** Writes `data` on a fresh TCP connection and reads until the peer closes (or `ms`). */
function rawExchange(port: number, data: string | Buffer, ms = 5000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let isClosed = false;
    const timer = setTimeout(() => socket.destroy(), ms);
    socket.on('connect', () => socket.write(data));
    socket.on('data', (b: Buffer) => chunks.push(b));
    socket.on('error', () => {});
    socket.on('end', () => {
      isClosed = true;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      try {
        resolve({ ...parseRawResponse(Buffer.concat(chunks).toString('latin1')), isClosed });
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
}

function parseRawResponse(text: string): Omit<RawResponse, 'isClosed'> {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return { status: 0, headers: {}, body: text };
  const lines = text.slice(0, end).split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const c = l.indexOf(':');
    if (c > 0) headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
  }
  return { status: m === null ? 0 : Number(m[1]), headers, body: text.slice(end + 4) };
}

function protoArgs(proto: Proto): string[] {
  return proto === 'h2' ? ['--http2-prior-knowledge'] : ['--http1.1'];
}

/** curl over the given protocol with a hard 10 s limit. */
function curlVia(proto: Proto, port: number, path: string, extra: string[] = [], stdin?: Buffer): Promise<ClientResult> {
  const args = [...protoArgs(proto), '--max-time', '10', ...extra, `http://127.0.0.1:${port}${path}`];
  return curl(args, stdin === undefined ? { timeoutMs: 15_000 } : { timeoutMs: 15_000, stdin });
}

function header(res: ClientResult, name: string): string | undefined {
  return res.headers[name]?.[0];
}

/** Status, x-skiff-error, plain-text content type and a short body `CODE: cause\n`. */
function assertError(res: ClientResult, status: number, code: string, cause: RegExp, what: string): void {
  const body = res.body.toString('utf8');
  const info = `${what}: status ${res.status}, exit ${res.exitCode}, headers ${JSON.stringify(res.headers)}, body ${JSON.stringify(body.slice(0, 300))}, stderr ${res.stderr.trim()}`;
  assert.equal(res.status, status, info);
  assert.equal(header(res, 'x-skiff-error'), code, info);
  assert.match(header(res, 'content-type') ?? '', /^text\/plain/, info);
  assert.ok(body.length > 0 && body.length < 200, `short body: ${info}`);
  assert.ok(body.startsWith(`${code}: `) && body.endsWith('\n'), `body names the code: ${info}`);
  assert.match(body, cause, info);
  assert.doesNotMatch(body, /\bat .+:\d+:\d+/, 'no stack trace in the body');
  assert.equal(res.exitCode, 0, info);
}

function assertRawError(res: RawResponse, status: number, code: string, cause: RegExp, what: string): void {
  const info = `${what}: ${JSON.stringify(res)}`;
  assert.equal(res.status, status, info);
  assert.equal(res.headers['x-skiff-error'], code, info);
  assert.match(res.headers['content-type'] ?? '', /^text\/plain/, info);
  assert.ok(res.body.startsWith(`${code}: `) && res.body.endsWith('\n') && res.body.length < 200, info);
  assert.match(res.body, cause, info);
}

interface H2Result {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: string;
  /** RST_STREAM code when the stream was reset, else null. */
  rstCode: number | null;
}

/** One HTTP/2 request on a fresh h2c session; `body` chunks are written `gapMs` apart. */
function h2Request(port: number, headers: http2.OutgoingHttpHeaders, body: Buffer[] = [], gapMs = 0): Promise<H2Result> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    const req = session.request(headers, { endStream: body.length === 0 });
    let status = 0;
    let resHeaders: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error('h2Request: no answer in 10 s'));
    }, 10_000);
    req.on('response', (h) => {
      resHeaders = h;
      status = Number(h[':status']);
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    req.on('close', () => {
      clearTimeout(timer);
      const rst = req.rstCode;
      session.close();
      resolve({
        status,
        headers: resHeaders,
        body: Buffer.concat(chunks).toString('utf8'),
        rstCode: rst === undefined || rst === http2.constants.NGHTTP2_NO_ERROR ? null : rst,
      });
    });
    let i = 0;
    const writeNext = (): void => {
      if (req.destroyed || req.closed) return;
      if (i >= body.length) {
        req.end();
        return;
      }
      req.write(body[i++]);
      setTimeout(writeNext, gapMs);
    };
    if (body.length > 0) writeNext();
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

interface Stats {
  arena: { hits: number; misses: number; released: number; live: number; free: number };
  engine: { inFlight: number; requestsTotal: number };
  pools: Array<{ cluster: string; pending: number; connections: number; activeStreams: number }>;
}

async function stats(adminPort: number): Promise<Stats> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/stats`);
  return (await res.json()) as Stats;
}

// ---------------------------------------------------------------------------------------

describe('error mapping end to end', { timeout: 60_000 }, () => {
  let h1: H1Upstream;
  let h2: H2Upstream;
  let raw: RawUpstream;
  let mute: RawUpstream;
  let skiff: SkiffProcess;
  let port: number;
  let deadPort: number;

  before(async () => {
    [h1, h2, raw, mute] = await Promise.all([startH1Upstream(), startH2Upstream(), startRawUpstream(), startMuteUpstream()]);
    const [listenPort, adminPort] = await freePorts(2);
    port = listenPort;
    deadPort = await freePort(); // nothing listens there
    const config = `
admin:
  address: 127.0.0.1:${adminPort}
limits:
  maxHeaderBytes: ${MAX_HEADER_BYTES}
listeners:
  - name: in
    address: 127.0.0.1:${port}
    protocols: [http1, h2c]
    routes: main
routes:
  main:
    - match: { headers: { x-target: small } }
      cluster: small
    - match: { headers: { x-target: down } }
      cluster: down
    - match: { headers: { x-target: busy } }
      cluster: busy
    - match: { headers: { x-target: raw } }
      cluster: raw
    - match: { headers: { x-target: mute } }
      cluster: mute
    - match: { headers: { x-target: h2 } }
      cluster: app-h2
    - match: { headers: { x-target: timeout } }
      cluster: app
      timeout: ${ROUTE_TIMEOUT_MS}ms
    - match: { prefix: /ok }
      cluster: app
    - match: { prefix: /echo }
      cluster: app
    - match: { prefix: /sink }
      cluster: app
    - match: { prefix: /slow/ }
      cluster: app
    - match: { prefix: /reset-mid-body }
      cluster: app
clusters:
  - name: app
    protocol: http1
    endpoints: [127.0.0.1:${h1.port}]
  - name: app-h2
    protocol: h2c
    endpoints: [127.0.0.1:${h2.port}]
  - name: small
    protocol: http1
    endpoints: [127.0.0.1:${h1.port}]
    maxBodyBytes: ${MAX_BODY}
  - name: down
    protocol: http1
    endpoints: [127.0.0.1:${deadPort}]
    connectTimeout: 2s
  - name: busy
    protocol: http1
    endpoints: [127.0.0.1:${h1.port}]
    maxConnectionsPerEndpoint: 1
    maxPendingPerEndpoint: 1
  - name: raw
    protocol: http1
    endpoints: [127.0.0.1:${raw.port}]
  - name: mute
    protocol: h2c
    endpoints: [127.0.0.1:${mute.port}]
    connectTimeout: 300ms
`;
    skiff = await startSkiff(config);
  });

  after(async () => {
    if (skiff !== undefined) await skiff.stop();
    await Promise.all([h1?.close(), h2?.close(), raw?.close(), mute?.close()]);
  });

  // Every case must give back all of its request contexts: arena.live returns to what it
  // was before the case (a leak is pinned to the case that caused it).
  let liveBefore = 0;
  beforeEach(async () => {
    liveBefore = (await stats(skiff.adminPort)).arena.live;
  });
  afterEach(async () => {
    let last: Stats | null = null;
    try {
      await waitFor('arena.live back to its value before the case', async () => {
        last = await stats(skiff.adminPort);
        return last.arena.live <= liveBefore && last.engine.inFlight === 0;
      }, 3000);
    } catch {
      assert.fail(`request context leaked by this case: live ${liveBefore} before, now ${JSON.stringify(last === null ? null : (last as Stats).arena)}, inFlight ${last === null ? '?' : (last as Stats).engine.inFlight}`);
    }
  });

  /** arena.live is back to its value before the case (checked in the case, for a clear message). */
  async function assertContextsReleased(what: string): Promise<void> {
    let last: Stats | null = null;
    try {
      await waitFor('arena.live back to its value before the case', async () => {
        last = await stats(skiff.adminPort);
        return last.arena.live <= liveBefore;
      }, 2000);
    } catch {
      assert.fail(`${what}: the request context is never released (arena.live ${liveBefore} before, ${last === null ? '?' : (last as Stats).arena.live} now); the connection is closed, so its RequestBody hold can only leak`);
    }
  }

  /** A good request through the same listener must succeed after every error. */
  async function assertStillServing(proto: Proto): Promise<void> {
    const res = await curlVia(proto, port, '/ok');
    assert.equal(res.status, 200, `follow-up good request over ${proto}: ${res.stderr}`);
    assert.equal(res.body.toString(), 'ok');
    assert.equal(res.exitCode, 0);
  }

  it('400 SKIFF_ERR_BAD_REQUEST for an invalid HTTP/1.1 request line (raw socket)', async () => {
    const res = await rawExchange(port, 'GARBAGE\r\n\r\n');
    assertRawError(res, 400, 'SKIFF_ERR_BAD_REQUEST', /malformed request/, 'GARBAGE');
    assert.equal(res.isClosed, true, 'the connection is closed after a parse error');
    const res2 = await rawExchange(port, 'GET /ok HTTP/1.1 extra\r\nHost: x\r\n\r\n');
    assertRawError(res2, 400, 'SKIFF_ERR_BAD_REQUEST', /malformed request/, 'bad version');
    await assertStillServing('h1');
    await assertStillServing('h2');
  });

  it('405 SKIFF_ERR_METHOD_NOT_ALLOWED for CONNECT (HTTP/1.1 raw socket and HTTP/2)', async () => {
    const res = await rawExchange(port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    assertRawError(res, 405, 'SKIFF_ERR_METHOD_NOT_ALLOWED', /CONNECT is not supported/, 'h1 CONNECT');
    const r2 = await h2Request(port, { ':method': 'CONNECT', ':authority': 'example.com:443' });
    assert.equal(r2.status, 405, JSON.stringify(r2));
    assert.equal(r2.headers['x-skiff-error'], 'SKIFF_ERR_METHOD_NOT_ALLOWED');
    assert.match(r2.body, /^SKIFF_ERR_METHOD_NOT_ALLOWED: CONNECT is not supported\n$/);
    await assertStillServing('h1');
    await assertStillServing('h2');
  });

  for (const proto of PROTOS) {
    it(`404 SKIFF_ERR_NO_ROUTE over ${proto}`, async () => {
      const res = await curlVia(proto, port, '/nowhere');
      assertError(res, 404, 'SKIFF_ERR_NO_ROUTE', /no route matches/, `${proto} 404`);
      assert.equal(res.httpVersion, proto === 'h2' ? '2' : '1.1');
      await assertStillServing(proto);
    });
  }

  for (const proto of PROTOS) {
    it(`413 SKIFF_ERR_BODY_TOO_LARGE over ${proto} with a declared content-length`, async () => {
      const before = h1.requests.length;
      const res = await curlVia(proto, port, '/sink', ['-H', 'x-target: small', '--data-binary', '@-'], Buffer.alloc(MAX_BODY + 1, 0x61));
      assertError(res, 413, 'SKIFF_ERR_BODY_TOO_LARGE', /1025 bytes exceeds 1024/, `${proto} 413 content-length`);
      assert.equal(h1.requests.length, before, 'refused before reaching the upstream');
      // Exactly at the limit is fine.
      const okRes = await curlVia(proto, port, '/sink', ['-H', 'x-target: small', '--data-binary', '@-'], Buffer.alloc(MAX_BODY, 0x61));
      assert.equal(okRes.status, 200, okRes.body.toString());
      assert.equal((JSON.parse(okRes.body.toString()) as { bytes: number }).bytes, MAX_BODY);
      await assertStillServing(proto);
    });

    it(`413 SKIFF_ERR_BODY_TOO_LARGE over ${proto} with a body of unknown length (curl -T -)`, async () => {
      const res = await curlVia(proto, port, '/sink', ['-H', 'x-target: small', '-X', 'POST', '-T', '-'], Buffer.alloc(4 * MAX_BODY, 0x62));
      assertError(res, 413, 'SKIFF_ERR_BODY_TOO_LARGE', /exceeds 1024 bytes/, `${proto} 413 chunked`);
      await assertStillServing(proto);
    });
  }

  it('413 over HTTP/1.1 for a chunked body that grows past the limit over time (raw socket)', async () => {
    const socket = net.connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const received: Buffer[] = [];
    socket.on('data', (b: Buffer) => received.push(b));
    socket.on('error', () => {});
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.write('POST /sink HTTP/1.1\r\nHost: x\r\nx-target: small\r\nTransfer-Encoding: chunked\r\n\r\n');
    const piece = Buffer.alloc(300, 0x63);
    let sent = 0;
    for (let i = 0; i < 8 && received.length === 0 && !socket.destroyed; i++) {
      socket.write(`${piece.length.toString(16)}\r\n`);
      socket.write(piece);
      socket.write('\r\n');
      sent += piece.length;
      await delay(40);
    }
    await waitFor('a response', () => received.length > 0, 5000);
    const res = parseRawResponse(Buffer.concat(received).toString('latin1'));
    assertRawError({ ...res, isClosed: false }, 413, 'SKIFF_ERR_BODY_TOO_LARGE', /exceeds 1024 bytes/, 'h1 growing chunked');
    assert.ok(sent > MAX_BODY && sent <= MAX_BODY + 2 * piece.length, `answered as soon as the body passed the limit (sent ${sent})`);
    socket.end();
    await Promise.race([closed, delay(2000)]);
    socket.destroy();
    await assertStillServing('h1');
    await assertContextsReleased('h1 413 on an unfinished chunked body');
  });

  it('413 over HTTP/1.1 on a declared content-length whose body never comes: the context is released (raw socket)', async () => {
    // Minimal form of the case above: head only, then the client goes away.
    const res = await rawExchange(port, `POST /sink HTTP/1.1\r\nHost: x\r\nx-target: small\r\nContent-Length: ${MAX_BODY * 4}\r\n\r\n`, 2000);
    assertRawError(res, 413, 'SKIFF_ERR_BODY_TOO_LARGE', /4096 bytes exceeds 1024/, 'h1 413 head only');
    assert.equal(res.isClosed, true, 'the connection is closed: the unread body would desync it');
    await assertContextsReleased('h1 413 with an unsent declared body');
  });

  it('413 over HTTP/2 for a body without content-length that grows past the limit over time', async () => {
    const pieces = Array.from({ length: 8 }, () => Buffer.alloc(300, 0x64));
    const res = await h2Request(port, { ':method': 'POST', ':path': '/sink', 'x-target': 'small' }, pieces, 40);
    assert.equal(res.status, 413, JSON.stringify(res));
    assert.equal(res.headers['x-skiff-error'], 'SKIFF_ERR_BODY_TOO_LARGE');
    assert.match(res.body, /^SKIFF_ERR_BODY_TOO_LARGE: .*exceeds 1024 bytes\n$/);
    await assertStillServing('h2');
  });

  for (const proto of PROTOS) {
    it(`431 SKIFF_ERR_HEADERS_TOO_LARGE over ${proto} (request head above limits.maxHeaderBytes)`, async () => {
      const big = 'a'.repeat(MAX_HEADER_BYTES * 2);
      const res = await curlVia(proto, port, '/ok', ['-H', `x-big: ${big}`]);
      assertError(res, 431, 'SKIFF_ERR_HEADERS_TOO_LARGE', /too large/, `${proto} 431`);
      await assertStillServing(proto);
    });
  }

  it('431 over HTTP/1.1 from a raw socket, and the body does not echo the header', async () => {
    const res = await rawExchange(port, `GET /ok HTTP/1.1\r\nHost: x\r\nx-secret: ${'s'.repeat(MAX_HEADER_BYTES * 2)}\r\n\r\n`);
    assertRawError(res, 431, 'SKIFF_ERR_HEADERS_TOO_LARGE', /request head is too large/, 'raw 431');
    assert.doesNotMatch(res.body, /sss/);
  });

  for (const proto of PROTOS) {
    it(`502 SKIFF_ERR_UPSTREAM_CONNECT over ${proto} when nothing listens on the endpoint`, async () => {
      const res = await curlVia(proto, port, '/ok', ['-H', 'x-target: down']);
      assertError(res, 502, 'SKIFF_ERR_UPSTREAM_CONNECT', new RegExp(`127\\.0\\.0\\.1:${deadPort}.*ECONNREFUSED`), `${proto} 502 connect`);
      await assertStillServing(proto);
    });
  }

  for (const proto of PROTOS) {
    it(`502 SKIFF_ERR_UPSTREAM_RESET over ${proto} when the upstream closes before answering`, async () => {
      const res = await curlVia(proto, port, '/close-early', ['-H', 'x-target: raw']);
      assertError(res, 502, 'SKIFF_ERR_UPSTREAM_RESET', /upstream/, `${proto} 502 reset before head`);
      await assertStillServing(proto);
    });

    it(`502 SKIFF_ERR_UPSTREAM_PROTOCOL over ${proto} when the upstream answers garbage`, async () => {
      const res = await curlVia(proto, port, '/garbage', ['-H', 'x-target: raw']);
      assertError(res, 502, 'SKIFF_ERR_UPSTREAM_PROTOCOL', /malformed upstream response/, `${proto} 502 protocol`);
      await assertStillServing(proto);
    });
  }

  for (const proto of PROTOS) {
    for (const upstream of ['h1', 'h2'] as const) {
      it(`upstream (${upstream}) reset mid-body: ${proto} client sees the response cut (curl exits non-zero)`, async () => {
        const extra = upstream === 'h2' ? ['-H', 'x-target: h2'] : [];
        const res = await curlVia(proto, port, '/reset-mid-body', extra);
        const info = `status ${res.status}, exit ${res.exitCode}, body ${res.body.length} bytes, stderr ${res.stderr.trim()}`;
        if (proto === 'h1') {
          assert.equal(res.status, 200, `the head was already forwarded: ${info}`);
        } else {
          // HTTP/2: the RST_STREAM may overtake the forwarded HEADERS inside nghttp2 (frames
          // of a stream being reset are dropped), so the head is not guaranteed to arrive.
          assert.ok(res.status === 200 || res.status === 0, `no error status after the head: ${info}`);
        }
        assert.notEqual(res.exitCode, 0, `curl must see a transport error, not a clean end: ${info}`);
        assert.ok(res.body.length < 1024 * 1024, `truncated body: ${info}`);
        if (proto === 'h1') assert.match(res.stderr, /transfer closed|end of response|Recv failure|connection/i, info);
        else assert.match(res.stderr, /HTTP\/2 stream \d+ was not closed cleanly|INTERNAL_ERROR|stream error|RST/i, info);
        await assertStillServing(proto);
      });
    }
  }

  for (const proto of PROTOS) {
    it(`504 SKIFF_ERR_TIMEOUT over ${proto} when the upstream is slower than the route timeout`, async () => {
      const t0 = Date.now();
      const res = await curlVia(proto, port, '/slow/2000', ['-H', 'x-target: timeout']);
      const took = Date.now() - t0;
      assertError(res, 504, 'SKIFF_ERR_TIMEOUT', new RegExp(`did not answer within ${ROUTE_TIMEOUT_MS} ms`), `${proto} 504`);
      assert.ok(took < 1500, `answered at the route timeout, not when the upstream did (${took} ms)`);
      await assertStillServing(proto);
    });

    it(`504 SKIFF_ERR_CONNECT_TIMEOUT over ${proto} when an HTTP/2 upstream never sends SETTINGS`, async () => {
      const t0 = Date.now();
      const res = await curlVia(proto, port, '/ok', ['-H', 'x-target: mute']);
      const took = Date.now() - t0;
      assertError(res, 504, 'SKIFF_ERR_CONNECT_TIMEOUT', /300 ms/, `${proto} 504 connect`);
      assert.ok(took < 2000, `failed at the connect timeout (${took} ms)`);
      await assertStillServing(proto);
    });
  }

  for (const proto of PROTOS) {
    it(`503 SKIFF_ERR_OVERLOADED over ${proto}: 1 connection, 1 pending, the third concurrent request is refused`, async () => {
      const seen = h1.requests.length;
      const first = curlVia(proto, port, '/slow/700', ['-H', 'x-target: busy']);
      await waitFor('the first request at the upstream', () => h1.requests.slice(seen).some((r) => r.path === '/slow/700'));
      const second = curlVia(proto, port, '/slow/701', ['-H', 'x-target: busy']);
      await waitFor('the second request pending in the pool', async () => {
        const s = await stats(skiff.adminPort);
        return s.pools.some((p) => p.cluster === 'busy' && p.pending === 1);
      });
      const third = await curlVia(proto, port, '/slow/702', ['-H', 'x-target: busy']);
      assertError(third, 503, 'SKIFF_ERR_OVERLOADED', /too many requests waiting/, `${proto} 503`);
      const [r1, r2] = await Promise.all([first, second]);
      assert.equal(r1.status, 200);
      assert.equal(r1.body.toString(), 'slow');
      assert.equal(r2.status, 200, 'the pending request is served once the connection frees up');
      assert.equal(r2.body.toString(), 'slow');
      assert.ok(!h1.requests.slice(seen).some((r) => r.path === '/slow/702'), 'the refused request never reached the upstream');
      await assertStillServing(proto);
    });
  }

  it('the sidecar is still alive, idle, and printed no stack trace', async () => {
    const exited = await Promise.race([skiff.exited.then(() => true), delay(50).then(() => false)]);
    assert.equal(exited, false, `sidecar exited; stderr:\n${skiff.stderr()}`);
    await assertStillServing('h1');
    await assertStillServing('h2');
    await waitFor('engine.inFlight back to 0', async () => (await stats(skiff.adminPort)).engine.inFlight === 0, 3000);
    const err = skiff.stderr();
    assert.doesNotMatch(err, /^\s+at .+:\d+:\d+\)?$/m, `stack trace on stderr:\n${err}`);
    assert.doesNotMatch(err, /fatal|Unhandled|uncaught/i, `stderr:\n${err}`);
  });
});

describe('skiff --check-config', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'skiff-check-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function check(yaml: string): { status: number | null; stdout: string; stderr: string; file: string } {
    const file = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, yaml);
    const r = spawnSync(process.execPath, [repoPath('dist', 'src', 'cli.js'), '--check-config', file], { encoding: 'utf8', timeout: 15_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, file };
  }

  it('exits non-zero on a bad file and prints the file, line and key of each problem', () => {
    const r = check(`listeners:
  - name: in
    address: 127.0.0.1:8000
    protocols: [http1]
    routes: main
routes:
  main:
    - match: { prefix: / }
      cluster: app
      timeout: soon
clusters:
  - name: app
    protocol: http1
    endpoints: [127.0.0.1:9000]
    maxBodyBytez: 10
`);
    assert.notEqual(r.status, 0, `exit status: ${r.stdout}${r.stderr}`);
    assert.equal(r.status, 1);
    const out = r.stderr;
    assert.ok(out.includes(`${r.file}:10: routes.main[0].timeout:`), `timeout key and line 10 in:\n${out}`);
    assert.match(out, /invalid duration "soon"/);
    assert.ok(out.includes(`${r.file}:15: clusters[0].maxBodyBytez:`), `unknown key and line 15 in:\n${out}`);
    assert.match(out, /unknown key "maxBodyBytez"/);
    assert.doesNotMatch(out, /^\s+at .+:\d+:\d+/m, 'no stack trace');
  });

  it('exits non-zero on YAML syntax errors with the line', () => {
    const r = check('listeners:\n  - name: in\n    address: [unclosed\n');
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`${r.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+: YAML`));
  });

  it('exits 0 on a valid file', () => {
    const r = check(`listeners:
  - name: in
    address: 127.0.0.1:8000
    protocols: [http1, h2c]
    routes: main
routes:
  main:
    - match: { prefix: / }
      cluster: app
clusters:
  - name: app
    protocol: http1
    endpoints: [127.0.0.1:9000]
`);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /: ok$/m);
  });
});
