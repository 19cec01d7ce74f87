// End-to-end protocol matrix: real clients (curl, nghttp, undici, node:http2, raw sockets)
// through the real sidecar (dist/src/cli.js) to real upstreams (HTTP/1.1, h2c, h2 over TLS),
// everything on 127.0.0.1 with ephemeral ports. Asserts status, headers and body bytes.
//
// Layout: one sidecar per top-level describe.
//   'proxy matrix'  plain listener (http1 + h2c) and TLS listener (http1 + h2, ALPN), one
//                   route table that picks the cluster by the `x-upstream` request header, so
//                   every client can reach every upstream kind without touching Host.
//   'routing'       a second sidecar whose table routes by authority, path and header.
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Agent, Client, Headers, fetch, request } from 'undici';
import { ensureCerts, type TestCerts } from '../helpers/certs.js';
import { curl, nghttp, type ClientResult, type HeaderMap } from '../helpers/clients.js';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import {
  patternBytes,
  patternSha256,
  startH1Upstream,
  startH2Upstream,
  type H1Upstream,
  type H2Upstream,
  type RecordedRequest,
  type Upstream,
} from '../helpers/upstreams.js';

// ---------------------------------------------------------------------------------------
// Small utilities

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A few hundred KiB of random bytes, odd-sized so no chunk boundary lines up. */
const BODY = randomBytes(300 * 1024 + 17);
const BODY_SHA = sha256(BODY);

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Fields the upstream must never see: the client's hop-by-hop ones and what its Connection lists. */
const HOP_BY_HOP = ['keep-alive', 'x-custom', 'transfer-encoding', 'proxy-connection', 'upgrade'];

/**
 * The Connection fields an upstream may see: none on HTTP/2; on HTTP/1.1 only the sidecar's
 * own hop option. undici (the sidecar's HTTP/1.1 upstream codec) writes `connection:
 * keep-alive` on every request it sends, whatever the downstream protocol, so that one is the
 * sidecar's own hop, not the client's field forwarded (it also appears for HTTP/2 clients,
 * which cannot send Connection at all). The client's value `x-custom, keep-alive` must not.
 */
/** The client's Connection field never travels upstream (HTTP/1.1 keep-alive is the default). */
function assertNoForwardedConnection(rec: RecordedRequest): void {
  const conn = rawValues(rec.rawHeaders, 'connection');
  assert.deepEqual(conn, [], `${rec.protocol} upstream saw connection: ${JSON.stringify(rec.rawHeaders)}`);
}

/** Every value of `name` (case-insensitive) in a flat [name, value, ...] list. */
function rawValues(raw: readonly string[], name: string): string[] {
  const out: string[] = [];
  const lower = name.toLowerCase();
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i].toLowerCase() === lower) out.push(raw[i + 1]);
  return out;
}

function rawNames(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) out.push(raw[i].toLowerCase());
  return out;
}

/** The request the upstream recorded with `x-test-id: id`. */
function recorded(up: Upstream, id: string): RecordedRequest {
  const found = up.requests.filter((r) => rawValues(r.rawHeaders, 'x-test-id').includes(id));
  assert.equal(found.length, 1, `upstream ${up.url} saw ${found.length} requests with x-test-id ${id}`);
  return found[0];
}

/** The Host (HTTP/1.1) or :authority (HTTP/2) an upstream saw. */
function authorityOf(rec: RecordedRequest): string[] {
  return rec.protocol === 'h2' ? rawValues(rec.rawHeaders, ':authority') : rawValues(rec.rawHeaders, 'host');
}

function one(h: HeaderMap, name: string): string | undefined {
  const v = h[name];
  return v === undefined ? undefined : v.join(', ');
}

function toHeaderMap(h: Record<string, string | string[] | undefined>): HeaderMap {
  const out: HeaderMap = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    out[k.toLowerCase()] = Array.isArray(v) ? v.slice() : [v];
  }
  return out;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The upstream's request body ended cleanly. Polled briefly: a response with content-length
 * can be complete at the client a moment before the request's END (HTTP/2 END_STREAM or the
 * last chunk) has been processed by the upstream.
 */
async function assertRequestComplete(rec: RecordedRequest, bytes: number): Promise<void> {
  for (let i = 0; i < 100 && !rec.isComplete && !rec.isAborted; i++) await delay(20);
  assert.equal(rec.bodyLength, bytes);
  assert.equal(rec.isAborted, false, 'the upstream saw the request body aborted');
  assert.equal(rec.isComplete, true, 'the upstream never saw the request body end');
}

// ---------------------------------------------------------------------------------------
// Downstream clients behind one interface

type ClientKind = 'curl' | 'undici-request' | 'undici-fetch' | 'nghttp';

interface Downstream {
  name: string;
  kind: ClientKind;
  /** The HTTP version the client must end up speaking. */
  version: '1.1' | '2';
  tls: boolean;
  /** Protocol flags for curl. */
  curlArgs: string[];
  /** Whether the client can show response trailers. */
  seesTrailers: boolean;
}

const DOWNSTREAMS: readonly Downstream[] = [
  { name: 'curl http/1.1', kind: 'curl', version: '1.1', tls: false, curlArgs: ['--http1.1'], seesTrailers: true },
  { name: 'undici request', kind: 'undici-request', version: '1.1', tls: false, curlArgs: [], seesTrailers: true },
  { name: 'undici fetch', kind: 'undici-fetch', version: '1.1', tls: false, curlArgs: [], seesTrailers: false },
  { name: 'curl h2c prior knowledge', kind: 'curl', version: '2', tls: false, curlArgs: ['--http2-prior-knowledge'], seesTrailers: true },
  { name: 'nghttp h2c', kind: 'nghttp', version: '2', tls: false, curlArgs: [], seesTrailers: false },
  { name: 'curl h2 over TLS (ALPN)', kind: 'curl', version: '2', tls: true, curlArgs: ['--http2'], seesTrailers: true },
  { name: 'curl http/1.1 over TLS (ALPN fallback)', kind: 'curl', version: '1.1', tls: true, curlArgs: ['--http1.1'], seesTrailers: true },
];

interface Req {
  method?: string;
  path: string;
  headers?: Array<[string, string]>;
  body?: Buffer;
  /** Stream the body without a length (HTTP/1.1: Transfer-Encoding: chunked). */
  isChunked?: boolean;
  curlExtra?: string[];
  /** curl only: upload these bytes from a pipe with `-T -` (length unknown to curl). */
  stdinUpload?: Buffer;
}

interface Resp {
  status: number;
  headers: HeaderMap;
  /** null when the client cannot show trailers. */
  trailers: HeaderMap | null;
  body: Buffer;
  httpVersion: string;
  exitCode: number | null;
  stderr: string;
}

interface Endpoints {
  plainPort: number;
  tlsPort: number;
  certs: TestCerts;
  agent: Agent;
}

function baseUrl(ds: Downstream, ep: Endpoints): string {
  return ds.tls ? `https://localhost:${ep.tlsPort}` : `http://127.0.0.1:${ep.plainPort}`;
}

/** The Host / :authority the client sends (and the upstream must see unchanged). */
function authorityFor(ds: Downstream, ep: Endpoints): string {
  return ds.tls ? `localhost:${ep.tlsPort}` : `127.0.0.1:${ep.plainPort}`;
}

function fromClient(r: ClientResult, seesTrailers: boolean): Resp {
  return {
    status: r.status,
    headers: r.headers,
    trailers: seesTrailers ? r.trailers : null,
    body: r.body,
    httpVersion: r.httpVersion,
    exitCode: r.exitCode,
    stderr: r.stderr,
  };
}

function chunksOf(b: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < b.length; off += size) out.push(b.subarray(off, Math.min(b.length, off + size)));
  return out;
}

async function send(ds: Downstream, ep: Endpoints, req: Req): Promise<Resp> {
  const url = baseUrl(ds, ep) + req.path;
  const method = req.method ?? (req.body !== undefined ? 'POST' : 'GET');
  const headers = req.headers ?? [];
  switch (ds.kind) {
    case 'curl': {
      const args = [...ds.curlArgs];
      if (ds.tls) args.push('--cacert', ep.certs.ca);
      if (method === 'HEAD') args.push('--head');
      else if (method !== 'GET' && method !== 'POST') args.push('-X', method);
      for (const [n, v] of headers) args.push('-H', `${n}: ${v}`);
      if (req.isChunked === true) args.push('-H', 'Transfer-Encoding: chunked');
      if (req.body !== undefined) args.push('--data-binary', '@-');
      if (req.stdinUpload !== undefined) args.push('-T', '-');
      args.push(...(req.curlExtra ?? []), url);
      const stdin = req.body ?? req.stdinUpload;
      const r = await curl(args, stdin !== undefined ? { stdin, timeoutMs: 20_000 } : { timeoutMs: 20_000 });
      return fromClient(r, ds.seesTrailers);
    }
    case 'nghttp': {
      const list: Array<[string, string]> = [...headers];
      if (method !== 'GET' && method !== 'POST') list.push([':method', method]);
      const r = await nghttp(url, { headers: list, timeoutMs: 20_000, ...(req.body !== undefined ? { data: req.body } : {}) });
      return fromClient(r, false);
    }
    case 'undici-request': {
      const flat: string[] = [];
      for (const [n, v] of headers) flat.push(n, v);
      const body = req.body === undefined ? undefined : req.isChunked === true ? Readable.from(chunksOf(req.body, 16 * 1024)) : req.body;
      const res = await request(url, { method: method as 'GET', headers: flat, body, dispatcher: ep.agent });
      const data = Buffer.from(await res.body.arrayBuffer());
      return {
        status: res.statusCode,
        headers: toHeaderMap(res.headers),
        trailers: toHeaderMap(res.trailers),
        body: data,
        httpVersion: '1.1',
        exitCode: 0,
        stderr: '',
      };
    }
    case 'undici-fetch': {
      const h = new Headers();
      for (const [n, v] of headers) h.append(n, v);
      const res = await fetch(url, { method, headers: h, body: req.body, dispatcher: ep.agent });
      const data = Buffer.from(await res.arrayBuffer());
      const map: HeaderMap = {};
      res.headers.forEach((value, name) => {
        map[name] = name === 'set-cookie' ? res.headers.getSetCookie() : [value];
      });
      return { status: res.status, headers: map, trailers: null, body: data, httpVersion: '1.1', exitCode: 0, stderr: '' };
    }
  }
}

function assertClientOk(r: Resp, ds: Downstream): void {
  assert.equal(r.exitCode, 0, `${ds.name} exited ${r.exitCode}: ${r.stderr}`);
  assert.equal(r.httpVersion, ds.version, `${ds.name} spoke HTTP/${r.httpVersion}`);
}

// ---------------------------------------------------------------------------------------
// Raw exchanges (CONNECT)

interface RawResponse {
  status: number;
  headers: HeaderMap;
  body: Buffer;
}

/** Writes `text` on a fresh socket and reads one response (head + content-length bytes). */
function rawExchange(port: number, text: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`raw exchange timed out; got so far: ${JSON.stringify(buf.toString('latin1'))}`));
    }, 5000);
    const tryParse = (isEnd: boolean): boolean => {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return false;
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
      if (m === null) throw new Error(`bad status line ${JSON.stringify(lines[0])}`);
      const headers: HeaderMap = {};
      for (const line of lines.slice(1)) {
        const c = line.indexOf(':');
        const k = line.slice(0, c).trim().toLowerCase();
        (headers[k] ??= []).push(line.slice(c + 1).trim());
      }
      const cl = headers['content-length'];
      const body = buf.subarray(end + 4);
      if (cl !== undefined && body.length < Number(cl[0])) return false;
      if (cl === undefined && !isEnd) return false;
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: Number(m[1]), headers, body: cl === undefined ? body : body.subarray(0, Number(cl[0])) });
      return true;
    };
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      try {
        tryParse(false);
      } catch (e) {
        clearTimeout(timer);
        socket.destroy();
        reject(e as Error);
      }
    });
    socket.on('end', () => {
      try {
        if (!tryParse(true)) reject(new Error(`connection closed before a full response: ${JSON.stringify(buf.toString('latin1'))}`));
      } catch (e) {
        reject(e as Error);
      }
      clearTimeout(timer);
    });
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.write(text);
  });
}

/** One HTTP/2 request with node:http2 on a fresh h2c session. */
function h2Request(port: number, headers: http2.OutgoingHttpHeaders): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const req = session.request(headers, { endStream: true });
    let head: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (h) => {
      head = h;
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      session.close();
      resolve({ status: Number(head[':status']), headers: head, body: Buffer.concat(chunks) });
    });
    req.on('error', (e) => {
      session.destroy();
      reject(e);
    });
  });
}

// ---------------------------------------------------------------------------------------
// Admin /stats

interface PoolStats {
  cluster: string;
  endpoint: string;
  protocol: string;
  connections: number;
  hits: number;
  slowAcquires: number;
}

interface Stats {
  arena: { hits: number; misses: number; live: number };
  engine: { inFlight: number; requestsTotal: number };
  pools: PoolStats[];
}

async function getStats(adminPort: number): Promise<Stats> {
  const res = await request(`http://127.0.0.1:${adminPort}/stats`);
  assert.equal(res.statusCode, 200);
  const doc: unknown = await res.body.json();
  return doc as Stats;
}

// ---------------------------------------------------------------------------------------
// Extra upstreams: repeated response headers (the shared fixtures have no such route)

interface Closable {
  port: number;
  close(): Promise<void>;
}

const COOKIES = ['a=1; Path=/', 'b=2; Path=/'];

async function startCookieH1(): Promise<Closable> {
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, ['content-type', 'text/plain', 'set-cookie', COOKIES[0], 'set-cookie', COOKIES[1], 'x-dup', 'one', 'x-dup', 'two', 'content-length', '8']);
    res.end('cookies\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function startCookieH2(): Promise<Closable> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s: http2.ServerHttp2Session) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
    s.on('error', () => {});
  });
  server.on('stream', (stream: http2.ServerHttp2Stream) => {
    stream.on('error', () => {});
    stream.resume();
    stream.respond({ ':status': 200, 'content-type': 'text/plain', 'set-cookie': COOKIES, 'x-dup': ['one', 'two'], 'content-length': '8' });
    stream.end('cookies\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sessions) s.destroy();
      }),
  };
}

// ---------------------------------------------------------------------------------------
// The matrix

type UpKind = 'h1' | 'h2c' | 'h2tls';
const UP_KINDS: readonly UpKind[] = ['h1', 'h2c', 'h2tls'];

describe('proxy matrix', { timeout: 120_000 }, () => {
  let certs: TestCerts;
  let skiff: SkiffProcess;
  let upH1: H1Upstream;
  let upH2c: H2Upstream;
  let upH2tls: H2Upstream;
  let cookieH1: Closable;
  let cookieH2: Closable;
  let ep: Endpoints;
  const ups = (): Record<UpKind, Upstream> => ({ h1: upH1, h2c: upH2c, h2tls: upH2tls });

  before(async () => {
    certs = ensureCerts();
    [upH1, upH2c, upH2tls, cookieH1, cookieH2] = await Promise.all([
      startH1Upstream(),
      startH2Upstream(),
      startH2Upstream({ tls: true }),
      startCookieH1(),
      startCookieH2(),
    ]);
    const [adminPort, plainPort, tlsPort] = await freePorts(3);
    const yaml = `
admin:
  address: 127.0.0.1:${adminPort}
listeners:
  - name: plain
    address: 127.0.0.1:${plainPort}
    protocols: [http1, h2c]
    routes: main
  - name: secure
    address: 127.0.0.1:${tlsPort}
    protocols: [http1, h2]
    tls: { cert: ${JSON.stringify(certs.cert)}, key: ${JSON.stringify(certs.key)} }
    routes: main
routes:
  main:
    - match: { headers: { x-upstream: h1 } }
      cluster: up-h1
    - match: { headers: { x-upstream: h2c } }
      cluster: up-h2c
    - match: { headers: { x-upstream: h2tls } }
      cluster: up-h2tls
    - match: { headers: { x-upstream: cookie-h1 } }
      cluster: cookie-h1
    - match: { headers: { x-upstream: cookie-h2 } }
      cluster: cookie-h2
clusters:
  - name: up-h1
    protocol: http1
    endpoints: [127.0.0.1:${upH1.port}]
  - name: up-h2c
    protocol: h2c
    endpoints: [127.0.0.1:${upH2c.port}]
  - name: up-h2tls
    protocol: h2
    endpoints: [127.0.0.1:${upH2tls.port}]
    tls: { ca: ${JSON.stringify(certs.ca)} }
  - name: cookie-h1
    protocol: http1
    endpoints: [127.0.0.1:${cookieH1.port}]
  - name: cookie-h2
    protocol: h2c
    endpoints: [127.0.0.1:${cookieH2.port}]
`;
    skiff = await startSkiff(yaml);
    ep = { plainPort, tlsPort, certs, agent: new Agent({ connect: { ca: certs.pem.ca } }) };
  });

  after(async () => {
    await ep?.agent.close();
    await skiff?.stop();
    await Promise.all([upH1?.close(), upH2c?.close(), upH2tls?.close(), cookieH1?.close(), cookieH2?.close()]);
  });

  for (const ds of DOWNSTREAMS) {
    describe(`downstream ${ds.name}`, () => {
      for (const kind of UP_KINDS) {
        it(`→ ${kind}: POST /echo, ${BODY.length} random bytes both ways`, async () => {
          const id = randomUUID();
          const r = await send(ds, ep, {
            path: '/echo?q=1',
            headers: [['x-upstream', kind], ['x-test-id', id], ['content-type', 'application/octet-stream']],
            body: BODY,
          });
          assertClientOk(r, ds);
          assert.equal(r.status, 200);
          assert.equal(one(r.headers, 'x-echo-method'), 'POST');
          assert.equal(one(r.headers, 'x-echo-path'), '/echo?q=1');
          assert.equal(one(r.headers, 'content-type'), 'application/octet-stream');
          assert.equal(one(r.headers, 'content-length'), String(BODY.length));
          assert.equal(r.body.length, BODY.length);
          assert.equal(sha256(r.body), BODY_SHA);
          const rec = recorded(ups()[kind], id);
          assert.equal(rec.protocol, kind === 'h1' ? 'h1' : 'h2');
          assert.equal(rec.method, 'POST');
          assert.equal(rec.path, '/echo?q=1');
          await assertRequestComplete(rec, BODY.length);
          assert.deepEqual(authorityOf(rec), [authorityFor(ds, ep)]);
          assert.deepEqual(rawValues(rec.rawHeaders, 'x-forwarded-proto'), [ds.tls ? 'https' : 'http']);
          assert.deepEqual(rawValues(rec.rawHeaders, 'x-forwarded-for'), ['127.0.0.1']);
          assert.deepEqual(rawValues(rec.rawHeaders, 'content-length'), [String(BODY.length)]);
          // The upstream's own hop fields (node:http answers `Keep-Alive: timeout=5`) stay on its hop.
          assert.ok(!(r.headers['keep-alive'] ?? []).includes('timeout=5'), `keep-alive leaked: ${JSON.stringify(r.headers)}`);
          assert.ok((r.headers['connection'] ?? []).length <= 1, `connection: ${JSON.stringify(r.headers['connection'])}`);
        });

        it(`→ ${kind}: GET /bytes/1MiB streams the exact pattern`, async () => {
          const n = 1024 * 1024 + 3;
          const r = await send(ds, ep, { path: `/bytes/${n}`, headers: [['x-upstream', kind]] });
          assertClientOk(r, ds);
          assert.equal(r.status, 200);
          assert.equal(one(r.headers, 'content-type'), 'application/octet-stream');
          assert.equal(r.body.length, n);
          assert.equal(sha256(r.body), patternSha256(n));
        });

        it(`→ ${kind}: GET /trailers forwards trailer x-trailer-a`, async () => {
          const r = await send(ds, ep, { path: '/trailers', headers: [['x-upstream', kind]] });
          assertClientOk(r, ds);
          assert.equal(r.status, 200);
          assert.equal(r.body.toString('latin1'), 'trailers\n');
          if (ds.version === '1.1' && ds.kind === 'curl') {
            assert.equal(one(r.headers, 'transfer-encoding'), 'chunked', 'HTTP/1.1 trailers need a chunked response');
            assert.equal(r.headers['content-length'], undefined);
          }
          if (r.trailers !== null) assert.deepEqual(r.trailers['x-trailer-a'], ['1'], `trailers: ${JSON.stringify(r.trailers)}`);
        });

        it(`→ ${kind}: HEAD keeps content-length and sends no body`, async () => {
          const n = 1000;
          if (ds.kind === 'undici-request' || ds.kind === 'undici-fetch') {
            // One connection: a stray body after the HEAD response would corrupt the next response.
            const client = new Client(`http://127.0.0.1:${ep.plainPort}`, { pipelining: 1 });
            try {
              const head = await client.request({ method: 'HEAD', path: `/bytes/${n}?cl=1`, headers: { 'x-upstream': kind } });
              const headBody = Buffer.from(await head.body.arrayBuffer());
              assert.equal(head.statusCode, 200);
              assert.equal(head.headers['content-length'], String(n));
              assert.equal(headBody.length, 0);
              const get = await client.request({ method: 'GET', path: '/bytes/10?cl=1', headers: { 'x-upstream': kind } });
              assert.equal(get.statusCode, 200);
              assert.deepEqual(Buffer.from(await get.body.arrayBuffer()), patternBytes(10));
            } finally {
              await client.close();
            }
            return;
          }
          const r = await send(ds, ep, { method: 'HEAD', path: `/bytes/${n}?cl=1`, headers: [['x-upstream', kind]] });
          assertClientOk(r, ds);
          assert.equal(r.status, 200);
          assert.equal(one(r.headers, 'content-length'), String(n));
          // curl --head writes the header block to the body file; nghttp writes only DATA.
          if (ds.kind === 'nghttp') assert.equal(r.body.length, 0);
        });

        it(`→ ${kind}: hop-by-hop fields dropped, forwarding fields set, custom fields kept`, async () => {
          const id = randomUUID();
          const headers: Array<[string, string]> = [
            ['x-upstream', kind],
            ['x-test-id', id],
            ['X-Forwarded-For', '10.0.0.1'],
            ['X-Multi', 'first'],
            ['X-Multi', 'second'],
            ['X-Custom-Value', 'hello world; q=1'],
          ];
          // Connection-specific fields are illegal on HTTP/2 (clients refuse to send them).
          if (ds.version === '1.1') {
            headers.push(
              ['Connection', 'x-custom, keep-alive'],
              ['X-Custom', '1'],
              ['Keep-Alive', 'timeout=5'],
              ['TE', 'trailers'],
              ['Proxy-Connection', 'keep-alive'],
            );
          }
          // fetch forbids Connection / Keep-Alive / TE, and undici's request refuses a
          // keep-alive header; those two check the forwarding fields only.
          if (ds.kind === 'undici-fetch' || ds.kind === 'undici-request') {
            const first = headers.findIndex(([n]) => n === 'Connection');
            if (first >= 0) headers.splice(first);
          }
          const r = await send(ds, ep, { path: '/status/204', headers });
          assertClientOk(r, ds);
          assert.equal(r.status, 204);
          assert.equal(r.body.length, 0);
          const rec = recorded(ups()[kind], id);
          const names = rawNames(rec.rawHeaders);
          for (const h of HOP_BY_HOP) assert.ok(!names.includes(h), `upstream saw hop-by-hop ${h}: ${JSON.stringify(rec.rawHeaders)}`);
          assertNoForwardedConnection(rec);
          assert.deepEqual(rawValues(rec.rawHeaders, 'x-forwarded-for'), ['10.0.0.1, 127.0.0.1']);
          assert.deepEqual(rawValues(rec.rawHeaders, 'x-forwarded-proto'), [ds.tls ? 'https' : 'http']);
          const rid = rawValues(rec.rawHeaders, 'x-request-id');
          assert.equal(rid.length, 1, `x-request-id: ${JSON.stringify(rid)}`);
          assert.match(rid[0], UUID_RE);
          assert.deepEqual(authorityOf(rec), [authorityFor(ds, ep)]);
          // fetch's Headers joins repeated fields itself before sending.
          assert.deepEqual(rawValues(rec.rawHeaders, 'x-multi'), ds.kind === 'undici-fetch' ? ['first, second'] : ['first', 'second']);
          assert.deepEqual(rawValues(rec.rawHeaders, 'x-custom-value'), ['hello world; q=1']);
          assert.deepEqual(rawValues(rec.rawHeaders, 'x-upstream'), [kind]);
        });

        it(`→ ${kind}: x-request-id is kept when present`, async () => {
          const id = randomUUID();
          const r = await send(ds, ep, { path: '/status/200', headers: [['x-upstream', kind], ['x-test-id', id], ['X-Request-Id', 'client-chosen-17']] });
          assertClientOk(r, ds);
          assert.equal(r.status, 200);
          assert.equal(r.body.toString('latin1'), '200\n');
          const rec = recorded(ups()[kind], id);
          assert.deepEqual(rawValues(rec.rawHeaders, 'x-request-id'), ['client-chosen-17']);
          assert.deepEqual(rawValues(rec.rawHeaders, 'x-forwarded-for'), ['127.0.0.1']);
        });
      }

      if (ds.version === '1.1' && ds.kind !== 'undici-fetch') {
        for (const kind of UP_KINDS) {
          it(`→ ${kind}: chunked request body arrives byte-exact`, async () => {
            const id = randomUUID();
            const r = await send(ds, ep, {
              path: '/echo',
              headers: [['x-upstream', kind], ['x-test-id', id], ['content-type', 'application/octet-stream']],
              body: BODY,
              isChunked: true,
            });
            assertClientOk(r, ds);
            assert.equal(r.status, 200);
            assert.equal(r.body.length, BODY.length);
            assert.equal(sha256(r.body), BODY_SHA);
            const rec = recorded(ups()[kind], id);
            await assertRequestComplete(rec, BODY.length);
            // No content-length was given, so none may be invented on the way.
            assert.deepEqual(rawValues(rec.rawHeaders, 'content-length'), []);
          });
        }
      }

      if (ds.kind === 'curl') {
        for (const kind of UP_KINDS) {
          it(`→ ${kind}: streamed body of unknown length (curl -T -) arrives byte-exact`, async () => {
            const id = randomUUID();
            const r = await send(ds, ep, {
              method: 'PUT',
              path: '/echo',
              headers: [['x-upstream', kind], ['x-test-id', id]],
              stdinUpload: BODY,
            });
            assertClientOk(r, ds);
            assert.equal(r.status, 200);
            assert.equal(one(r.headers, 'x-echo-method'), 'PUT');
            assert.equal(r.body.length, BODY.length);
            assert.equal(sha256(r.body), BODY_SHA);
            const rec = recorded(ups()[kind], id);
            assert.equal(rec.method, 'PUT');
            await assertRequestComplete(rec, BODY.length);
          });
        }
      }

      if (ds.version === '1.1' && ds.kind === 'curl') {
        for (const kind of UP_KINDS) {
          it(`→ ${kind}: Expect: 100-continue gets a 100 and the body goes through`, async () => {
            const id = randomUUID();
            const r = await send(ds, ep, {
              path: '/echo',
              headers: [['x-upstream', kind], ['x-test-id', id], ['Expect', '100-continue']],
              body: BODY,
              // -v shows the interim response; the long timeout makes a missing 100 visible
              // (curl would otherwise send the body anyway after 1 s).
              curlExtra: ['-v', '--expect100-timeout', '10'],
            });
            assertClientOk(r, ds);
            assert.match(r.stderr, /< HTTP\/1\.1 100 Continue/);
            assert.equal(r.status, 200);
            assert.equal(sha256(r.body), BODY_SHA);
            await assertRequestComplete(recorded(ups()[kind], id), BODY.length);
          });
        }
      }

      if (ds.kind === 'curl') {
        for (const cookieKind of ['cookie-h1', 'cookie-h2'] as const) {
          it(`← ${cookieKind}: repeated response headers survive (two set-cookie)`, async () => {
            const r = await send(ds, ep, { path: '/', headers: [['x-upstream', cookieKind]] });
            assertClientOk(r, ds);
            assert.equal(r.status, 200);
            assert.deepEqual(r.headers['set-cookie'], COOKIES);
            assert.equal(one(r.headers, 'x-dup'), 'one, two');
            assert.equal(one(r.headers, 'content-length'), '8');
            assert.equal(r.body.toString('latin1'), 'cookies\n');
          });
        }
      }
    });
  }

  describe('keep-alive', () => {
    for (const kind of UP_KINDS) {
      it(`undici Client: 6 requests on one downstream connection, fewer upstream connections (${kind})`, async () => {
        const up = ups()[kind];
        const before = up.requests.length;
        const connsBefore = kind === 'h1' ? upH1.stats().connections : (up as H2Upstream).stats().sessions;
        const client = new Client(`http://127.0.0.1:${ep.plainPort}`, { pipelining: 1 });
        let connects = 0;
        client.on('connect', () => {
          connects++;
        });
        const n = 6;
        try {
          for (let i = 0; i < n; i++) {
            const body = randomBytes(1000 + i);
            const res = await client.request({ method: 'POST', path: '/echo', headers: { 'x-upstream': kind }, body });
            assert.equal(res.statusCode, 200);
            assert.deepEqual(Buffer.from(await res.body.arrayBuffer()), body);
            assert.equal(res.headers['connection'] === 'close', false);
          }
        } finally {
          await client.close();
        }
        assert.equal(connects, 1, 'the sidecar must keep the downstream connection alive');
        assert.equal(up.requests.length - before, n);
        const connsAfter = kind === 'h1' ? upH1.stats().connections : (up as H2Upstream).stats().sessions;
        assert.ok(connsAfter - connsBefore < n, `upstream saw ${connsAfter - connsBefore} new connections for ${n} requests`);
      });
    }
  });

  describe('HTTP/2 split cookies', () => {
    // RFC 9113 §8.2.3: an HTTP/2 client may send `cookie` as several fields; a proxy must join
    // them with "; " before passing them to HTTP/1.1, where only one Cookie field is allowed.
    for (const kind of UP_KINDS) {
      it(`node:http2 cookie fields a=1 and b=2 reach the ${kind} upstream as a=1; b=2`, async () => {
        const id = randomUUID();
        const r = await h2Request(ep.plainPort, {
          ':method': 'GET',
          ':path': '/status/200',
          'x-upstream': kind,
          'x-test-id': id,
          cookie: ['a=1', 'b=2'],
        });
        assert.equal(r.status, 200);
        assert.equal(r.body.toString('latin1'), '200\n');
        const cookies = rawValues(recorded(ups()[kind], id).rawHeaders, 'cookie');
        if (kind === 'h1') assert.deepEqual(cookies, ['a=1; b=2']);
        else assert.equal(cookies.join('; '), 'a=1; b=2');
      });
    }
  });

  describe('TLS listener without ALPN', () => {
    it('curl --http1.1 --no-alpn gets HTTP/1.1 with x-forwarded-proto https', async () => {
      const id = randomUUID();
      const r = await curl(
        ['--http1.1', '--no-alpn', '-v', '--cacert', certs.ca, '-H', 'x-upstream: h2c', '-H', `x-test-id: ${id}`, `https://localhost:${ep.tlsPort}/status/200`],
        { timeoutMs: 10_000 },
      );
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.httpVersion, '1.1');
      assert.doesNotMatch(r.stderr, /ALPN: server accepted/);
      assert.equal(r.status, 200);
      assert.equal(r.body.toString('latin1'), '200\n');
      const rec = recorded(upH2c, id);
      assert.deepEqual(rawValues(rec.rawHeaders, 'x-forwarded-proto'), ['https']);
      assert.deepEqual(authorityOf(rec), [`localhost:${ep.tlsPort}`]);
    });
  });

  describe('CONNECT', () => {
    it('HTTP/1.1 CONNECT (raw socket) is refused with 405', async () => {
      const r = await rawExchange(ep.plainPort, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nx-upstream: h1\r\n\r\n');
      assert.equal(r.status, 405);
      assert.deepEqual(r.headers['x-skiff-error'], ['SKIFF_ERR_METHOD_NOT_ALLOWED']);
      assert.match(r.body.toString('latin1'), /^SKIFF_ERR_METHOD_NOT_ALLOWED: .+\n$/);
      assert.equal(upH1.requests.some((q) => q.method === 'CONNECT'), false);
    });

    it('curl -X CONNECT is refused with 405', async () => {
      const r = await curl(['--http1.1', '-X', 'CONNECT', '-H', 'x-upstream: h1', `http://127.0.0.1:${ep.plainPort}/`], { timeoutMs: 10_000 });
      assert.equal(r.status, 405, r.stderr);
      assert.deepEqual(r.headers['x-skiff-error'], ['SKIFF_ERR_METHOD_NOT_ALLOWED']);
    });

    it('HTTP/2 CONNECT (node:http2, h2c) is refused with 405', async () => {
      const r = await h2Request(ep.plainPort, { ':method': 'CONNECT', ':authority': 'example.com:443', 'x-upstream': 'h2c' });
      assert.equal(r.status, 405);
      assert.equal(r.headers['x-skiff-error'], 'SKIFF_ERR_METHOD_NOT_ALLOWED');
      assert.match(r.body.toString('latin1'), /^SKIFF_ERR_METHOD_NOT_ALLOWED: .+\n$/);
      assert.equal(upH2c.requests.some((q) => q.method === 'CONNECT'), false);
    });
  });

  describe('admin', () => {
    it('/stats: nothing in flight, arena and pools reused', async () => {
      let stats = await getStats(skiff.adminPort);
      for (let i = 0; i < 40 && stats.engine.inFlight !== 0; i++) {
        await delay(50);
        stats = await getStats(skiff.adminPort);
      }
      assert.equal(stats.engine.inFlight, 0, JSON.stringify(stats.engine));
      assert.ok(stats.arena.hits > 0, `arena: ${JSON.stringify(stats.arena)}`);
      for (const name of ['up-h1', 'up-h2c', 'up-h2tls']) {
        const pool = stats.pools.find((p) => p.cluster === name);
        assert.ok(pool !== undefined, `no pool for ${name}`);
        assert.ok(pool.hits > 0, `pool ${name}: ${JSON.stringify(pool)}`);
      }
    });
  });
});

// ---------------------------------------------------------------------------------------
// Routing

describe('routing', { timeout: 60_000 }, () => {
  let skiff: SkiffProcess;
  let plainPort: number;
  const names = ['exact', 'wild', 'path', 'prefix', 'header'] as const;
  type Target = (typeof names)[number];
  const up = {} as Record<Target, Upstream>;

  before(async () => {
    const started = await Promise.all([startH1Upstream(), startH2Upstream(), startH1Upstream(), startH2Upstream(), startH1Upstream()]);
    names.forEach((n, i) => {
      up[n] = started[i];
    });
    const [adminPort, port] = await freePorts(2);
    plainPort = port;
    skiff = await startSkiff(`
admin:
  address: 127.0.0.1:${adminPort}
listeners:
  - name: plain
    address: 127.0.0.1:${plainPort}
    protocols: [http1, h2c]
    routes: r
routes:
  r:
    - match: { authority: exact.test }
      cluster: c-exact
    - match: { authority: '*.wild.test' }
      cluster: c-wild
    - match: { path: /only/this }
      cluster: c-path
    - match: { prefix: /pre/ }
      cluster: c-prefix
    - match: { prefix: /hdr, headers: { X-Route: canary } }
      cluster: c-header
clusters:
  - { name: c-exact, protocol: http1, endpoints: [127.0.0.1:${up.exact.port}] }
  - { name: c-wild, protocol: h2c, endpoints: [127.0.0.1:${up.wild.port}] }
  - { name: c-path, protocol: http1, endpoints: [127.0.0.1:${up.path.port}] }
  - { name: c-prefix, protocol: h2c, endpoints: [127.0.0.1:${up.prefix.port}] }
  - { name: c-header, protocol: http1, endpoints: [127.0.0.1:${up.header.port}] }
`);
  });

  after(async () => {
    await skiff?.stop();
    await Promise.all(names.map((n) => up[n]?.close()));
  });

  interface Case {
    host: string;
    path: string;
    headers?: Array<[string, string]>;
    /** null: no route, 404. */
    to: Target | null;
  }

  const cases: Case[] = [
    { host: 'exact.test', path: '/anything', to: 'exact' },
    { host: 'EXACT.Test:8080', path: '/x', to: 'exact' },
    { host: 'a.wild.test', path: '/', to: 'wild' },
    { host: 'a.b.wild.test:99', path: '/', to: 'wild' },
    { host: 'wild.test', path: '/', to: null },
    { host: 'notexact.test', path: '/', to: null },
    { host: 'other.test', path: '/only/this', to: 'path' },
    { host: 'other.test', path: '/only/this?x=1', to: 'path' },
    { host: 'other.test', path: '/only/this/more', to: null },
    { host: 'other.test', path: '/only', to: null },
    { host: 'other.test', path: '/pre/a/b', to: 'prefix' },
    { host: 'other.test', path: '/pre', to: null },
    { host: 'other.test', path: '/hdr/x', headers: [['x-route', 'canary']], to: 'header' },
    { host: 'other.test', path: '/hdr', headers: [['X-ROUTE', 'canary']], to: 'header' },
    { host: 'other.test', path: '/hdr/x', headers: [['x-route', 'other']], to: null },
    { host: 'other.test', path: '/hdr/x', to: null },
    { host: 'exact.test', path: '/pre/x', to: 'exact' },
  ];

  for (const [label, args] of [
    ['http/1.1', ['--http1.1']],
    ['h2c', ['--http2-prior-knowledge']],
  ] as const) {
    for (const c of cases) {
      const hdrs = (c.headers ?? []).map(([n, v]) => `${n}: ${v}`).join(', ');
      it(`${label}: ${c.host} ${c.path}${hdrs === '' ? '' : ` [${hdrs}]`} → ${c.to ?? '404'}`, async () => {
        const id = randomUUID();
        const curlArgs: string[] = [...args, '-H', `Host: ${c.host}`, '-H', `x-test-id: ${id}`];
        for (const [n, v] of c.headers ?? []) curlArgs.push('-H', `${n}: ${v}`);
        curlArgs.push(`http://127.0.0.1:${plainPort}${c.path}`);
        const r = await curl(curlArgs, { timeoutMs: 10_000 });
        assert.equal(r.exitCode, 0, r.stderr);
        const hits = names.filter((n) => up[n].requests.some((q) => rawValues(q.rawHeaders, 'x-test-id').includes(id)));
        if (c.to === null) {
          assert.equal(r.status, 404);
          assert.deepEqual(r.headers['x-skiff-error'], ['SKIFF_ERR_NO_ROUTE']);
          assert.match(r.body.toString('latin1'), /^SKIFF_ERR_NO_ROUTE: .+\n$/);
          assert.equal(one(r.headers, 'content-length'), String(r.body.length));
          assert.deepEqual(hits, []);
        } else {
          assert.equal(r.status, 200);
          assert.equal(r.body.toString('latin1'), 'ok');
          assert.deepEqual(hits, [c.to]);
          const rec = recorded(up[c.to], id);
          assert.equal(rec.path, c.path);
          assert.deepEqual(authorityOf(rec), [c.host]);
        }
      });
    }
  }
});
