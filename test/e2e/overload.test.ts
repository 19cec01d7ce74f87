// Overload (issue 7 item 4) seen from outside, against the real sidecar and real sockets:
//   (a) limits.maxConnections: with a limit of 3, the 4th TCP connection is closed at once
//       without a byte of HTTP (node accepts and closes it, as Envoy does), the 3 kept work,
//       and once one of them closes a new one is accepted; the same for QUIC (the 4th
//       handshake gets no answer); refusals counted in /metrics;
//   (b) the memory high-water mark, made deterministic by starting below the process's heap
//       (`memoryHighWatermark: 1MiB`): new requests over HTTP/1.1, HTTP/2 and HTTP/3 get 503
//       SKIFF_ERR_LOAD_SHED with `retry-after`, flag OM in the Istio series, /ready stays 200;
//       a reload raising the mark lifts it on the same connections, and a reload lowering
//       the connection mark refuses new TCP, TLS and QUIC connections while established ones
//       keep working; raising it again lets new connections in.
import assert from 'node:assert/strict';
import { renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { ensureCerts, type TestCerts } from '../helpers/certs.js';
import { H3TestClient } from '../helpers/h3-client.js';
import { scrapeMetrics, sampleValue, sumSamples } from '../helpers/prometheus.js';
import { freePort, freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { startH1Upstream, type H1Upstream } from '../helpers/upstreams.js';
import { NOOP_HANDLER, QuicEndpoint, createClientConfig } from '../../protocols/quic/index.js';

const HOST = '127.0.0.1';

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Editor-style replacement: write a temp file, rename it over the config. */
function atomicWrite(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** Waits until `count` lines of the child's stderr match `re`. */
async function waitForLog(sk: SkiffProcess, re: RegExp, count = 1, ms = 8000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (sk.stderr().split('\n').filter((l) => re.test(l)).length >= count) return;
    if (Date.now() > deadline) throw new Error(`no log line matching ${re} (x${count}) within ${ms} ms\n--- stderr ---\n${sk.stderr().slice(-4000)}`);
    await delay(20);
  }
}

interface Res {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * One keep-alive HTTP/1.1 connection written by hand, so a test knows exactly which TCP
 * connection each request uses. Responses end by content-length or the last chunk.
 */
class RawH1 {
  readonly socket: net.Socket;
  private buf: Buffer;
  private waiter: (() => void) | null;
  isClosed: boolean;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.waiter = null;
    this.isClosed = false;
    socket.on('data', (b: Buffer) => {
      this.buf = Buffer.concat([this.buf, b]);
      this.waiter?.();
    });
    socket.on('close', () => {
      this.isClosed = true;
      this.waiter?.();
    });
    socket.on('error', () => {});
  }

  static open(port: number): Promise<RawH1> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: HOST, port });
      socket.once('connect', () => resolve(new RawH1(socket)));
      socket.once('error', reject);
    });
  }

  async get(path: string, ms = 5000): Promise<Res> {
    this.socket.write(`GET ${path} HTTP/1.1\r\nhost: overload.test\r\n\r\n`);
    const deadline = Date.now() + ms;
    for (;;) {
      const res = this.take();
      if (res !== null) return res;
      if (this.isClosed) throw new Error('connection closed before a whole response');
      if (Date.now() > deadline) throw new Error('no whole response in time');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 50);
      });
      this.waiter = null;
    }
  }

  /** A whole response off the front of the buffer, or null. */
  private take(): Res | null {
    const text = this.buf.toString('latin1');
    const headEnd = text.indexOf('\r\n\r\n');
    if (headEnd < 0) return null;
    const lines = text.slice(0, headEnd).split('\r\n');
    const status = Number(lines[0].split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const colon = l.indexOf(':');
      headers[l.slice(0, colon).trim().toLowerCase()] = l.slice(colon + 1).trim();
    }
    const rest = text.slice(headEnd + 4);
    let body: string;
    let used: number;
    if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (rest.length < n) return null;
      body = rest.slice(0, n);
      used = headEnd + 4 + n;
    } else if (headers['transfer-encoding'] === 'chunked') {
      const end = rest.indexOf('0\r\n\r\n');
      if (end < 0) return null;
      body = rest.slice(0, end);
      used = headEnd + 4 + end + 5;
    } else {
      body = '';
      used = headEnd + 4;
    }
    this.buf = this.buf.subarray(used);
    return { status, headers, body };
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * Opens a TCP (or TLS) connection, sends a GET, and resolves with the bytes received once the
 * sidecar closed it; rejects when it stays open for `ms` (the connection was accepted).
 */
function expectClosedAtOnce(port: number, certs: TestCerts | null = null, ms = 3000): Promise<{ bytes: number; isSecure: boolean }> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    let isSecure = false;
    const socket: net.Socket = certs === null ? net.connect({ host: HOST, port }) : tls.connect({ host: HOST, port, ca: certs.pem.ca, servername: 'localhost' });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connection to ${port} stayed open ${ms} ms (received ${bytes} bytes)`));
    }, ms);
    socket.once(certs === null ? 'connect' : 'secureConnect', () => {
      isSecure = certs !== null;
      socket.write('GET / HTTP/1.1\r\nhost: overload.test\r\n\r\n');
    });
    socket.on('data', (b: Buffer) => {
      bytes += b.length;
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ bytes, isSecure });
    });
  });
}

function h2Get(session: http2.ClientHttp2Session, path: string): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path, ':authority': 'overload.test' });
    let status = 0;
    const headers: Record<string, string> = {};
    let body = '';
    req.on('response', (h) => {
      status = Number(h[':status']);
      for (const [k, v] of Object.entries(h)) if (!k.startsWith(':')) headers[k] = String(v);
    });
    req.setEncoding('utf8');
    req.on('data', (s: string) => {
      body += s;
    });
    req.on('end', () => resolve({ status, headers, body }));
    req.on('error', reject);
    req.end();
  });
}

function h3HeaderValue(headers: readonly string[], name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return headers[i + 1];
  return undefined;
}

function getStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ host: HOST, port, path, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject);
  });
}

/** A QUIC handshake that must get no answer (the endpoint drops the Initials): rejects in `ms`. */
async function expectQuicRefused(port: number, certs: TestCerts, ms = 1200): Promise<void> {
  const endpoint = await QuicEndpoint.open({ host: HOST, client: createClientConfig({ caPem: certs.pem.ca, alpn: ['h3'] }) });
  try {
    await assert.rejects(endpoint.connect(HOST, port, null, NOOP_HANDLER, { timeoutMs: ms }), /took over|timed? ?out|closed/i);
  } finally {
    await endpoint.close(0x100, '', 500);
  }
}

describe('limits.maxConnections', () => {
  let certs: TestCerts;
  let up: H1Upstream;
  let sk: SkiffProcess;
  let plain = 0;
  let secure = 0;
  const LIMIT = 3;

  before(async () => {
    certs = ensureCerts();
    up = await startH1Upstream();
    const [admin, p] = await freePorts(2);
    plain = p;
    secure = await freePort({ udp: true });
    sk = await startSkiff(`admin: { address: ${HOST}:${admin} }
limits: { maxConnections: ${LIMIT} }
listeners:
  - { name: plain, address: ${HOST}:${plain}, protocols: [http1, h2c], routes: r }
  - { name: secure, address: ${HOST}:${secure}, protocols: [http1, h2, h3], tls: { cert: ${certs.cert}, key: ${certs.key} }, routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app }
clusters:
  - { name: app, protocol: http1, endpoints: [${HOST}:${up.port}] }
`);
  });

  after(async () => {
    await sk?.stop();
    await up?.close();
  });

  it('TCP: connection N+1 is closed at once without a byte; the N kept work; a freed slot is taken again', async () => {
    const kept: RawH1[] = [];
    try {
      for (let i = 0; i < LIMIT; i++) {
        const c = await RawH1.open(plain);
        kept.push(c);
        assert.equal((await c.get('/')).status, 200, `kept connection ${i}`);
      }
      const refused = await expectClosedAtOnce(plain);
      assert.equal(refused.bytes, 0, 'no HTTP response on a refused connection');
      for (const c of kept) assert.equal((await c.get('/status/204')).status, 204, 'the kept connections still work');

      kept.shift()?.close();
      // The sidecar frees the slot when it sees the close: retry until a new connection works.
      const deadline = Date.now() + 5000;
      let fresh: RawH1 | null = null;
      while (fresh === null) {
        const c = await RawH1.open(plain);
        try {
          if ((await c.get('/', 1000)).status === 200) fresh = c;
        } catch {
          c.close();
          if (Date.now() > deadline) throw new Error('no connection accepted after one of the kept ones closed');
          await delay(50);
        }
      }
      kept.push(fresh);
      for (const c of kept) assert.equal((await c.get('/')).status, 200);
    } finally {
      for (const c of kept) c.close();
    }
    const m = await scrapeMetrics(`http://${HOST}:${sk.adminPort}/metrics`);
    const n = sampleValue(m, 'skiff_downstream_connections_refused_total', { listener: 'plain', reason: 'max_connections' }) ?? 0;
    assert.ok(n >= 1, `refusals counted: ${n}`);
    assert.equal(sampleValue(m, 'skiff_downstream_connections_refused_total', { listener: 'plain', reason: 'memory' }), 0);
  });

  it('HTTP/3: QUIC connection N+1 gets no handshake; the N kept work', async () => {
    const kept: H3TestClient[] = [];
    try {
      for (let i = 0; i < LIMIT; i++) {
        const c = await H3TestClient.connect(HOST, secure, certs.pem.ca);
        kept.push(c);
        assert.equal((await c.request('/')).status, 200);
      }
      await expectQuicRefused(secure, certs);
      for (const c of kept) assert.equal((await c.request('/status/201')).status, 201);
    } finally {
      for (const c of kept) await c.close();
    }
    const m = await scrapeMetrics(`http://${HOST}:${sk.adminPort}/metrics`);
    const n = sampleValue(m, 'skiff_downstream_connections_refused_total', { listener: 'secure', reason: 'max_connections' }) ?? 0;
    assert.ok(n >= 1, `dropped Initials counted: ${n}`);
  });
});

describe('memory marks: shedding, then refusing connections, by config reload', () => {
  let certs: TestCerts;
  let up: H1Upstream;
  let sk: SkiffProcess;
  let plain = 0;
  let secure = 0;
  let admin = 0;

  const config = (high: string, connection: string): string => `admin: { address: ${HOST}:${admin} }
limits: { memoryHighWatermark: ${high}, memoryConnectionWatermark: ${connection} }
listeners:
  - { name: plain, address: ${HOST}:${plain}, protocols: [http1, h2c], routes: r }
  - { name: secure, address: ${HOST}:${secure}, protocols: [http1, h2, h3], tls: { cert: ${certs.cert}, key: ${certs.key} }, routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app }
clusters:
  - { name: app, protocol: http1, endpoints: [${HOST}:${up.port}] }
`;

  before(async () => {
    certs = ensureCerts();
    up = await startH1Upstream();
    [admin, plain] = await freePorts(2);
    secure = await freePort({ udp: true });
    // The heap in use is always above 1 MiB: shedding from the first sample on.
    sk = await startSkiff(config('1MiB', '90%'));
  });

  after(async () => {
    await sk?.stop();
    await up?.close();
  });

  it('sheds over HTTP/1.1, HTTP/2 and HTTP/3 with 503 + retry-after (flag OM), lifts on reload, then refuses new connections only', async () => {
    const h1 = await RawH1.open(plain);
    const h2 = http2.connect(`http://${HOST}:${plain}`);
    h2.on('error', () => {});
    const h3 = await H3TestClient.connect(HOST, secure, certs.pem.ca);
    try {
      // ---- shedding ----
      await waitForLog(sk, /"msg":"overload: shedding new requests with 503/);
      const r1 = await h1.get('/');
      assert.equal(r1.status, 503);
      assert.equal(r1.headers['retry-after'], '1');
      assert.equal(r1.headers['x-skiff-error'], 'SKIFF_ERR_LOAD_SHED');
      assert.match(r1.body, /memoryHighWatermark/);
      const r2 = await h2Get(h2, '/');
      assert.equal(r2.status, 503);
      assert.equal(r2.headers['retry-after'], '1');
      assert.equal(r2.headers['x-skiff-error'], 'SKIFF_ERR_LOAD_SHED');
      const r3 = await h3.request('/');
      assert.equal(r3.status, 503);
      assert.equal(h3HeaderValue(r3.headers, 'retry-after'), '1');
      assert.equal(h3HeaderValue(r3.headers, 'x-skiff-error'), 'SKIFF_ERR_LOAD_SHED');
      assert.equal(up.requests.length, 0, 'nothing reached the upstream');
      assert.equal(await getStatus(sk.adminPort, '/ready'), 200, '/ready stays 200 while shedding (as Envoy\'s)');
      let m = await scrapeMetrics(`http://${HOST}:${sk.adminPort}/metrics`);
      assert.ok((sampleValue(m, 'skiff_overload_requests_shed_total') ?? 0) >= 3);
      assert.equal(sampleValue(m, 'skiff_overload_active', { action: 'shed_requests' }), 1);
      assert.equal(sampleValue(m, 'skiff_overload_active', { action: 'refuse_connections' }), 0);
      for (const p of ['http1', 'h2', 'h3']) {
        const n = sumSamples(m, 'istio_requests_total', { response_code: '503', response_flags: 'OM', downstream_protocol: p });
        assert.ok(n >= 1, `flag OM on ${p}: ${n}`);
      }

      // ---- reload: mark raised (shedding lifts), connection mark below the heap ----
      atomicWrite(sk.configPath, config('95%', '1MiB'));
      await waitForLog(sk, /"msg":"overload: accepting new requests again; refusing new connections/);
      assert.equal((await h1.get('/')).status, 200, 'the same HTTP/1.1 connection is served again');
      assert.equal((await h2Get(h2, '/')).status, 200, 'the same HTTP/2 session');
      assert.equal((await h3.request('/')).status, 200, 'the same QUIC connection');
      assert.equal((await expectClosedAtOnce(plain)).bytes, 0, 'a new TCP connection is closed at once');
      const t = await expectClosedAtOnce(secure, certs);
      assert.equal(t.isSecure, false, 'a new TLS connection is closed before its handshake');
      await expectQuicRefused(secure, certs);
      assert.equal(await getStatus(sk.adminPort, '/ready'), 200);
      m = await scrapeMetrics(`http://${HOST}:${sk.adminPort}/metrics`);
      assert.equal(sampleValue(m, 'skiff_overload_active', { action: 'refuse_connections' }), 1);
      assert.ok((sampleValue(m, 'skiff_downstream_connections_refused_total', { listener: 'plain', reason: 'memory' }) ?? 0) >= 1);
      assert.ok((sampleValue(m, 'skiff_downstream_connections_refused_total', { listener: 'secure', reason: 'memory' }) ?? 0) >= 2, 'TLS and QUIC');

      // ---- reload: connection mark raised, new connections welcome ----
      atomicWrite(sk.configPath, config('95%', '90%'));
      await waitForLog(sk, /"msg":"overload: accepting new connections again/);
      const fresh = await RawH1.open(plain);
      try {
        assert.equal((await fresh.get('/')).status, 200);
      } finally {
        fresh.close();
      }
      const fresh3 = await H3TestClient.connect(HOST, secure, certs.pem.ca);
      try {
        assert.equal((await fresh3.request('/')).status, 200);
      } finally {
        await fresh3.close();
      }
      m = await scrapeMetrics(`http://${HOST}:${sk.adminPort}/metrics`);
      assert.equal(sampleValue(m, 'skiff_overload_active', { action: 'shed_requests' }), 0);
      assert.equal(sampleValue(m, 'skiff_overload_active', { action: 'refuse_connections' }), 0);
      assert.doesNotMatch(sk.stderr(), /"level":"(error|fatal)"/);
    } finally {
      h1.close();
      h2.destroy();
      await h3.close();
    }
  });
});
