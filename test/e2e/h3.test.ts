// HTTP/3 in and out through the real sidecar (issue 4): ngtcp2's gtlsclient -> Skiff's HTTP/3
// listener -> HTTP/1.1 upstream; Skiff's HTTP/3 upstream -> ngtcp2's gtlsserver; Skiff ->
// Skiff over HTTP/3 with bodies and trailers both ways; connection churn and stream reset
// storms with the arena and the engine counted afterwards; alt-svc on the TCP side.
// Every process started here is stopped by its PID (SkiffProcess.stop, stopByPid).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { QuicEndpoint, createClientConfig } from '../../protocols/quic/index.js';
import { ensureCerts, type TestCerts } from '../helpers/certs.js';
import { H3TestClient } from '../helpers/h3-client.js';
import { freePort, freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { patternBytes, patternSha256, startH1Upstream, type H1Upstream } from '../helpers/upstreams.js';

const HOST = '127.0.0.1';
const GTLS_CLIENT = '/usr/bin/gtlsclient';
const GTLS_SERVER = '/usr/sbin/gtlsserver';
const HAS_NGTCP2 = existsSync(GTLS_CLIENT) && existsSync(GTLS_SERVER);

interface Stats {
  memory: { rss: number; heapUsed: number };
  arena: { live: number };
  engine: { inFlight: number };
}

async function stats(adminPort: number): Promise<Stats> {
  const res = await fetch(`http://${HOST}:${adminPort}/stats`);
  return (await res.json()) as Stats;
}

async function waitFor(what: string, pred: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function stopByPid(child: ChildProcess): void {
  if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

interface GtlsResult {
  code: number | null;
  out: string;
  /** Per stream id: status and headers as gtlsclient printed them. */
  responses: Map<number, { status: number; headers: Array<[string, string]> }>;
}

/** Runs gtlsclient against 127.0.0.1:port with `options` and `uris`; parses the responses it prints. */
function gtlsclient(port: number, uris: string[], options: string[] = [], timeoutMs = 30_000): Promise<GtlsResult> {
  return new Promise((resolve) => {
    const args = ['--timeout=10s', '--exit-on-all-streams-close', '--no-quic-dump', '--no-http-dump', ...options, HOST, String(port), ...uris];
    const child = spawn(GTLS_CLIENT, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const keep = (b: Buffer): void => {
      out += b.toString('latin1');
      if (out.length > 4_000_000) out = out.slice(-2_000_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => stopByPid(child), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      const responses = new Map<number, { status: number; headers: Array<[string, string]> }>();
      for (const m of out.matchAll(/^http: stream 0x([0-9a-f]+) \[([^:\]][^:]*|:status): (.*)\]$/gm)) {
        const id = parseInt(m[1], 16);
        let r = responses.get(id);
        if (r === undefined) {
          r = { status: 0, headers: [] };
          responses.set(id, r);
        }
        if (m[2] === ':status') r.status = Number(m[3]);
        else r.headers.push([m[2], m[3]]);
      }
      resolve({ code, out, responses });
    });
  });
}

function header(headers: Array<[string, string]>, name: string): string | undefined {
  const h = headers.find(([n]) => n === name);
  return h === undefined ? undefined : h[1];
}

function rawValues(raw: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) out.push(raw[i + 1]);
  return out;
}

/** h2c upstream for Skiff -> Skiff: echoes the body, answers with its own and the request's trailers. */
async function startTrailerEcho(): Promise<{ port: number; seen: Array<{ trailers: Record<string, string>; bytes: number; sha256: string }>; close(): Promise<void> }> {
  const seen: Array<{ trailers: Record<string, string>; bytes: number; sha256: string }> = [];
  const server = http2.createServer();
  server.on('stream', (stream) => {
    const hash = createHash('sha256');
    let bytes = 0;
    let reqTrailers: Record<string, string> = {};
    stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'x-echo': 'yes' }, { waitForTrailers: true });
    stream.on('data', (c: Buffer) => {
      hash.update(c);
      bytes += c.length;
      stream.write(c);
    });
    stream.on('trailers', (t: http2.IncomingHttpHeaders) => {
      reqTrailers = {};
      for (const [k, v] of Object.entries(t)) if (typeof v === 'string') reqTrailers[k] = v;
    });
    stream.on('end', () => {
      seen.push({ trailers: reqTrailers, bytes, sha256: hash.digest('hex') });
      stream.end();
    });
    stream.on('wantTrailers', () => {
      const out: Record<string, string> = { 'x-up-trailer': 'from-upstream' };
      for (const [k, v] of Object.entries(reqTrailers)) out[`x-echo-${k}`] = v;
      stream.sendTrailers(out);
    });
    stream.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, HOST, () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('HTTP/3 in and out', { skip: !HAS_NGTCP2 }, () => {
  let certs: TestCerts;
  let up: H1Upstream;
  let echo: Awaited<ReturnType<typeof startTrailerEcho>>;
  let a: SkiffProcess;
  let b: SkiffProcess;
  let aTls = 0;
  let aPlain = 0;
  let bTls = 0;
  let gtlsPort = 0;
  let gtls: ChildProcess | null = null;
  let docroot = '';
  const BIG = 10 * 1024 * 1024;

  before(async () => {
    certs = ensureCerts();
    up = await startH1Upstream();
    echo = await startTrailerEcho();
    aTls = await freePort({ udp: true });
    bTls = await freePort({ udp: true });
    gtlsPort = await freePort({ udp: true });
    const [aAdmin, bAdmin, plain] = await freePorts(3);
    aPlain = plain;
    docroot = mkdtempSync(join(tmpdir(), 'skiff-h3-'));
    mkdirSync(join(docroot, 'gtls'));
    writeFileSync(join(docroot, 'gtls', 'big.bin'), patternBytes(BIG));
    gtls = spawn(GTLS_SERVER, ['-q', '--timeout=30s', '-d', docroot, HOST, String(gtlsPort), certs.key, certs.cert], { stdio: ['ignore', 'ignore', 'ignore'] });
    a = await startSkiff(`admin: { address: ${HOST}:${aAdmin} }
listeners:
  - { name: tls, address: ${HOST}:${aTls}, protocols: [http1, h2, h3], tls: { cert: ${certs.cert}, key: ${certs.key} }, routes: r }
  - { name: plain, address: ${HOST}:${aPlain}, protocols: [http1, h2c], routes: r }
routes:
  r:
    - { match: { prefix: /gtls/ }, cluster: gtls }
    - { match: { prefix: /s2s/ }, cluster: peer }
    - { match: { prefix: / }, cluster: app }
clusters:
  - { name: app, protocol: http1, endpoints: [${HOST}:${up.port}] }
  - { name: gtls, protocol: h3, endpoints: [${HOST}:${gtlsPort}], tls: { ca: ${certs.ca} } }
  - { name: peer, protocol: h3, endpoints: [${HOST}:${bTls}], tls: { ca: ${certs.ca} } }
`);
    b = await startSkiff(`admin: { address: ${HOST}:${bAdmin} }
listeners:
  - { name: tls, address: ${HOST}:${bTls}, protocols: [http1, h3], tls: { cert: ${certs.cert}, key: ${certs.key} }, routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: echo }
clusters:
  - { name: echo, protocol: h2c, endpoints: [${HOST}:${echo.port}] }
`);
  });

  after(async () => {
    if (gtls !== null) stopByPid(gtls);
    await a?.stop();
    await b?.stop();
    await up?.close();
    await echo?.close();
    if (docroot !== '') rmSync(docroot, { recursive: true, force: true });
  });

  it('gtlsclient GET: status and headers as the upstream sent them, request head forwarded', async () => {
    const r = await gtlsclient(aTls, [`https://${HOST}:${aTls}/status/404`, `https://${HOST}:${aTls}/echo?x=1`]);
    assert.equal(r.code, 0, r.out.slice(-3000));
    const notFound = r.responses.get(0);
    const echoed = r.responses.get(4);
    assert.ok(notFound !== undefined && echoed !== undefined, r.out.slice(-3000));
    assert.equal(notFound.status, 404);
    assert.equal(header(notFound.headers, 'content-type'), 'text/plain');
    assert.equal(echoed.status, 200);
    assert.equal(header(echoed.headers, 'x-echo-method'), 'GET');
    assert.equal(header(echoed.headers, 'x-echo-path'), '/echo?x=1');
    const rec = up.requests.find((q) => q.path === '/echo?x=1');
    assert.ok(rec !== undefined);
    assert.deepEqual(rawValues(rec.rawHeaders, 'host'), [`${HOST}:${aTls}`]);
    assert.deepEqual(rawValues(rec.rawHeaders, 'x-forwarded-proto'), ['https']);
    assert.deepEqual(rawValues(rec.rawHeaders, 'x-forwarded-for'), [HOST]);
    assert.equal(rawValues(rec.rawHeaders, 'x-request-id').length, 1);
    assert.ok(rawValues(rec.rawHeaders, 'user-agent')[0]?.includes('nghttp3'), JSON.stringify(rec.rawHeaders));
  });

  it('gtlsclient POST of 2 MB arrives byte-exact (sha256 at the upstream)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'skiff-h3-post-'));
    try {
      const size = 2 * 1000 * 1000;
      writeFileSync(join(dir, 'body'), patternBytes(size));
      const r = await gtlsclient(aTls, [`https://${HOST}:${aTls}/sink`], ['-m', 'POST', `--data=${join(dir, 'body')}`, `--download=${dir}`]);
      assert.equal(r.code, 0, r.out.slice(-3000));
      assert.equal(r.responses.get(0)?.status, 200, r.out.slice(-3000));
      const result = JSON.parse(readFileSync(join(dir, 'sink'), 'utf8')) as { bytes: number; sha256: string };
      assert.equal(result.bytes, size);
      assert.equal(result.sha256, patternSha256(size));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gtlsclient: 50 concurrent streams on one connection all answered', async () => {
    const r = await gtlsclient(aTls, [`https://${HOST}:${aTls}/bytes/20000`], ['-n', '50']);
    assert.equal(r.code, 0, r.out.slice(-3000));
    assert.equal(r.responses.size, 50);
    for (const [, res] of r.responses) assert.equal(res.status, 200);
    const s = await stats(a.adminPort);
    assert.equal(s.engine.inFlight, 0);
  });

  it('HTTP/1.1 and HTTP/2 responses on the TCP side advertise alt-svc: h3=":PORT"', async () => {
    const h1 = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = https.get({ host: HOST, port: aTls, path: '/', ca: certs.pem.ca }, (res) => {
        res.resume();
        resolve(res);
      });
      req.on('error', reject);
    });
    assert.equal(h1.headers['alt-svc'], `h3=":${aTls}"`);
    const session = http2.connect(`https://${HOST}:${aTls}`, { ca: certs.pem.ca });
    try {
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const req = session.request({ ':path': '/status/204' });
        req.on('response', (h) => resolve(h));
        req.on('error', reject);
        req.resume();
        req.end();
      });
      assert.equal(headers['alt-svc'], `h3=":${aTls}"`);
    } finally {
      session.close();
    }
  });

  it('HTTP/3 upstream: a 10 MiB file from gtlsserver arrives byte-exact', async () => {
    // The route keeps the path: gtlsserver serves docroot/gtls/big.bin.
    const r = await new Promise<{ status: number; bytes: number; sha256: string }>((resolve, reject) => {
      const req = http.get({ host: HOST, port: aPlain, path: '/gtls/big.bin' }, (res) => {
        const hash = createHash('sha256');
        let bytes = 0;
        res.on('data', (c: Buffer) => {
          hash.update(c);
          bytes += c.length;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, sha256: hash.digest('hex') }));
        res.on('error', reject);
      });
      req.on('error', reject);
    });
    assert.equal(r.status, 200);
    assert.equal(r.bytes, BIG);
    assert.equal(r.sha256, patternSha256(BIG));
  });

  it('Skiff -> Skiff over HTTP/3: request body and trailers in, response body and trailers back', async () => {
    const size = 1024 * 1024 + 17;
    const payload = patternBytes(size);
    const session = http2.connect(`http://${HOST}:${aPlain}`);
    try {
      const r = await new Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; bytes: number; sha256: string }>((resolve, reject) => {
        const req = session.request({ ':method': 'POST', ':path': '/s2s/echo', 'content-type': 'application/octet-stream' }, { waitForTrailers: true });
        let headers: http2.IncomingHttpHeaders = {};
        let trailers: http2.IncomingHttpHeaders = {};
        const hash = createHash('sha256');
        let bytes = 0;
        req.on('response', (h) => (headers = h));
        req.on('trailers', (t) => (trailers = t));
        req.on('data', (c: Buffer) => {
          hash.update(c);
          bytes += c.length;
        });
        req.on('end', () => resolve({ headers, trailers, bytes, sha256: hash.digest('hex') }));
        req.on('error', reject);
        req.on('wantTrailers', () => req.sendTrailers({ 'x-req-trailer': 'abc' }));
        req.end(payload);
      });
      assert.equal(r.headers[':status'], 200);
      assert.equal(r.headers['x-echo'], 'yes');
      assert.equal(r.bytes, size);
      assert.equal(r.sha256, patternSha256(size));
      assert.equal(r.trailers['x-up-trailer'], 'from-upstream');
      assert.equal(r.trailers['x-echo-x-req-trailer'], 'abc');
      const seen = echo.seen[echo.seen.length - 1];
      assert.equal(seen.bytes, size);
      assert.equal(seen.trailers['x-req-trailer'], 'abc');
    } finally {
      session.close();
    }
  });

  it('1,000 HTTP/3 connections opened and closed: RSS back near its start, nothing left', async () => {
    const endpoint = await QuicEndpoint.open({ host: HOST, client: createClientConfig({ caPem: certs.pem.ca, alpn: ['h3'] }) });
    const round = async (n: number): Promise<void> => {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < n) {
          next++;
          const c = await H3TestClient.connect(HOST, aTls, certs.pem.ca, { endpoint });
          const res = await c.request('/');
          assert.equal(res.status, 200);
          await c.close(true);
        }
      };
      await Promise.all(Array.from({ length: 8 }, worker));
    };
    try {
      // Warm-up round: closed connections' native memory (~35 KB each) is freed only when V8
      // collects their wrappers, and the allocator keeps freed pages, so RSS climbs during the
      // first ~1,000-2,000 connections and then stays flat (measured: 109, 122, 123, 124, 124
      // MiB after rounds 1-5). The bound is checked over the round after the warm-up.
      await round(1000);
      await waitFor('warm-up connections closed', async () => (await stats(a.adminPort)).engine.inFlight === 0);
      await new Promise((r) => setTimeout(r, 500));
      const start = (await stats(a.adminPort)).memory.rss;
      await round(1000);
      await waitFor('connections gone', () => endpoint.connectionCount === 0, 15_000);
      await new Promise((r) => setTimeout(r, 1500));
      const end = await stats(a.adminPort);
      const growth = (end.memory.rss - start) / (1024 * 1024);
      process.stdout.write(`# h3 churn: rss ${(start / 1048576).toFixed(1)} -> ${(end.memory.rss / 1048576).toFixed(1)} MiB (+${growth.toFixed(1)})\n`);
      assert.ok(growth < 16, `RSS grew ${growth.toFixed(1)} MiB over 1,000 connections`);
      assert.equal(end.arena.live, 0);
      assert.equal(end.engine.inFlight, 0);
    } finally {
      await endpoint.close(0x100, '', 2000);
    }
  });

  it('stream open-and-reset storms leave no streams or contexts behind', async () => {
    const c = await H3TestClient.connect(HOST, aTls, certs.pem.ca);
    try {
      for (let wave = 0; wave < 10; wave++) {
        for (let i = 0; i < 60; i++) {
          // Resets before a head, right after a head, and mid-body to a slow upstream.
          const kind = i % 3;
          const id = c.openAndReset(kind === 2 ? '/slow/300' : '/sink', kind === 1 ? 0 : 3000, kind !== 0);
          if (id < 0) break;
        }
        // Requests still work on the same connection between waves.
        const ok = await c.request('/status/201');
        assert.equal(ok.status, 201);
      }
      await waitFor('contexts released', async () => {
        const s = await stats(a.adminPort);
        return s.arena.live === 0 && s.engine.inFlight === 0;
      }, 10_000);
      const ok = await c.request('/');
      assert.equal(ok.status, 200);
    } finally {
      await c.close();
    }
    const s = await stats(a.adminPort);
    assert.equal(s.arena.live, 0);
    assert.equal(s.engine.inFlight, 0);
  });

  it('an oversized request head gets 431 over HTTP/3; the connection stays usable', async () => {
    const c = await H3TestClient.connect(HOST, aTls, certs.pem.ca);
    try {
      const big = await c.request('/echo', { headers: [['x-big', 'v'.repeat(20_000)]] });
      assert.equal(big.status, 431);
      assert.equal(rawValues(big.headers, 'x-skiff-error')[0], 'SKIFF_ERR_HEADERS_TOO_LARGE');
      const ok = await c.request('/status/202');
      assert.equal(ok.status, 202);
    } finally {
      await c.close();
    }
  });
});
