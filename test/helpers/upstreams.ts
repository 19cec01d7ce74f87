// Real upstream servers for end-to-end tests: HTTP/1.1 (node:http / node:https), HTTP/2
// (node:http2, h2c or h2 over TLS) and gRPC (@grpc/grpc-js). All bind 127.0.0.1 on an
// ephemeral port and record every request they see.
//
// Routes (HTTP/1.1 and HTTP/2 alike):
//   /echo              200, echoes the request body; x-echo-method, x-echo-path and
//                      x-echo-headers (JSON of the request's raw header list) headers;
//                      content-length copied from the request when it had one
//   /status/NNN        answers status NNN (body "NNN\n" unless 204/304)
//   /bytes/N           streams N bytes of the pattern (see patternBytes) in 64 KiB pieces,
//                      waiting for 'drain'; chunked on HTTP/1.1 unless ?cl=1 (content-length)
//   /slow/MS           "slow" after MS ms
//   /trailers          body "trailers\n" then trailer x-trailer-a: 1 (chunked on HTTP/1.1,
//                      waitForTrailers on HTTP/2)
//   /reset-mid-body    headers (content-length 1 MiB) + 10 KiB, then HTTP/1.1: destroys the
//                      socket; HTTP/2: RST_STREAM INTERNAL_ERROR (?socket=1: destroys the
//                      whole session instead)
//   /sink              reads the whole body and answers JSON {bytes, sha256};
//                      ?delay=MS pauses the request stream MS ms after each chunk (slow reader)
//   /big-headers       200 with a 20 KiB response header x-big
//   anything else      200 "ok"
import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ensureCerts } from './certs.js';
import { repoPath } from './repo-root.js';

/** One request as the upstream saw it. Mutated while the body arrives. */
export interface RecordedRequest {
  protocol: 'h1' | 'h2' | 'grpc';
  method: string;
  /** Path with query, as received (`:path` on HTTP/2). */
  path: string;
  /** Flat [name, value, ...] list as received. HTTP/2 includes pseudo-headers; gRPC is the
   * call metadata (grpc-js drops some transport headers), -bin values base64. */
  rawHeaders: string[];
  /** Request body bytes received so far. gRPC: sum of length-prefixed messages (5 + size). */
  bodyLength: number;
  /** Flat [name, value, ...] request trailers (empty when none). */
  trailers: string[];
  /** The request body ended cleanly. */
  isComplete: boolean;
  /** The request stream closed before its body ended. */
  isAborted: boolean;
  /** 1-based number of the connection (HTTP/2 session) it arrived on; gRPC: 0. */
  connection: number;
  /** subjectaltname of the client certificate when the upstream uses mTLS, else null. */
  tlsPeer: string | null;
}

export interface Upstream {
  port: number;
  /** `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT` (the server cert has that IP SAN). */
  url: string;
  requests: RecordedRequest[];
  /** Closes the listener and destroys every open connection. Idempotent. */
  close(): Promise<void>;
}

export interface H1Stats {
  /** Connections that carried at least one request. */
  connections: number;
  activeRequests: number;
  peakConcurrentRequests: number;
}

export interface H2Stats {
  /** Sessions (connections) seen since start. */
  sessions: number;
  openSessions: number;
  activeStreams: number;
  peakConcurrentStreams: number;
  totalStreams: number;
}

export interface H1Upstream extends Upstream {
  stats(): H1Stats;
}

export interface H2Upstream extends Upstream {
  stats(): H2Stats;
}

export interface H1UpstreamOptions {
  /** HTTPS with the test server cert (ensureCerts). */
  tls?: boolean;
  /** With tls: require a client cert signed by the test CA. */
  mtls?: boolean;
  keepAliveTimeoutMs?: number;
  /** Largest request header block accepted; default 64 KiB. */
  maxHeaderSize?: number;
}

export interface H2UpstreamOptions {
  /** h2 over TLS with ALPN "h2" (test server cert); h2c (prior knowledge) otherwise. */
  tls?: boolean;
  /** With tls: require a client cert signed by the test CA. */
  mtls?: boolean;
  /** SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients. */
  maxConcurrentStreams?: number;
}

// ---------------------------------------------------------------------------------------
// The byte pattern of /bytes/N: byte i is i % 251 (a prime, so 64 KiB pieces don't line up
// with the period and a misplaced chunk shows).

const PATTERN_PERIOD = 251;
const PIECE = 64 * 1024;
const PATTERN = Buffer.alloc(PIECE + PATTERN_PERIOD);
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = i % PATTERN_PERIOD;

function patternPiece(offset: number, length: number): Buffer {
  const start = offset % PATTERN_PERIOD;
  return PATTERN.subarray(start, start + length);
}

/** The first n bytes of the /bytes/N pattern. */
export function patternBytes(n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  for (let off = 0; off < n; off += PIECE) patternPiece(off, Math.min(PIECE, n - off)).copy(out, off);
  return out;
}

/** Hex sha256 of the first n bytes of the pattern, without holding them all in memory. */
export function patternSha256(n: number): string {
  const h = createHash('sha256');
  for (let off = 0; off < n; off += PIECE) h.update(patternPiece(off, Math.min(PIECE, n - off)));
  return h.digest('hex');
}

/** Writes n pattern bytes in 64 KiB pieces, waiting for 'drain' when write() says so, then
 * calls finish(). Stops quietly if the stream closes first. */
function writePattern(w: Writable, n: number, finish: () => void): void {
  let sent = 0;
  const step = (): void => {
    while (sent < n) {
      if (w.destroyed) return;
      const len = Math.min(PIECE, n - sent);
      const piece = patternPiece(sent, len);
      sent += len;
      if (!w.write(piece)) {
        w.once('drain', step);
        return;
      }
    }
    finish();
  };
  step();
}

// ---------------------------------------------------------------------------------------
// Routes

type Route =
  | { kind: 'echo' }
  | { kind: 'status'; code: number }
  | { kind: 'bytes'; n: number; hasLength: boolean }
  | { kind: 'slow'; ms: number }
  | { kind: 'trailers' }
  | { kind: 'reset'; isSocket: boolean }
  | { kind: 'sink'; delayMs: number }
  | { kind: 'big-headers' }
  | { kind: 'bad'; reason: string }
  | { kind: 'ok' };

function toCount(s: string | undefined): number | null {
  if (s === undefined || !/^\d+$/.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : null;
}

function parseRoute(rawPath: string): Route {
  const q = rawPath.indexOf('?');
  const path = q === -1 ? rawPath : rawPath.slice(0, q);
  const query = new URLSearchParams(q === -1 ? '' : rawPath.slice(q + 1));
  const parts = path.split('/');
  const arg = parts[2];
  switch (parts[1]) {
    case 'echo':
      return { kind: 'echo' };
    case 'status': {
      const code = toCount(arg);
      if (code === null || code < 200 || code > 599) return { kind: 'bad', reason: 'status must be 200..599' };
      return { kind: 'status', code };
    }
    case 'bytes': {
      const n = toCount(arg);
      if (n === null) return { kind: 'bad', reason: 'bytes needs a count' };
      return { kind: 'bytes', n, hasLength: query.get('cl') === '1' };
    }
    case 'slow': {
      const ms = toCount(arg);
      if (ms === null) return { kind: 'bad', reason: 'slow needs milliseconds' };
      return { kind: 'slow', ms };
    }
    case 'trailers':
      return { kind: 'trailers' };
    case 'reset-mid-body':
      return { kind: 'reset', isSocket: query.get('socket') === '1' };
    case 'sink':
      return { kind: 'sink', delayMs: toCount(query.get('delay') ?? undefined) ?? 0 };
    case 'big-headers':
      return { kind: 'big-headers' };
    default:
      return { kind: 'ok' };
  }
}

const RESET_DECLARED_LENGTH = 1024 * 1024;
const RESET_SENT_LENGTH = 10 * 1024;
const BIG_HEADER = 'b'.repeat(20 * 1024);

function hasNoBody(status: number): boolean {
  return status === 204 || status === 304;
}

/** Consumes a request body for /sink: counts and hashes it, pausing delayMs after each chunk. */
function sink(body: Readable, delayMs: number, done: (result: { bytes: number; sha256: string }) => void): void {
  const hash = createHash('sha256');
  let bytes = 0;
  body.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    hash.update(chunk);
    if (delayMs > 0) {
      body.pause();
      setTimeout(() => body.resume(), delayMs);
    }
  });
  body.on('end', () => done({ bytes, sha256: hash.digest('hex') }));
}

function flattenHeaders(h: http2.IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(h)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, String(value));
  }
  return out;
}

function peerSan(socket: unknown): string | null {
  if (!(socket instanceof TLSSocket)) return null;
  const cert = socket.getPeerCertificate();
  return cert !== null && typeof cert.subjectaltname === 'string' ? cert.subjectaltname : null;
}

function listen(server: { listen(port: number, host: string, cb: () => void): unknown; once(ev: 'error', cb: (err: Error) => void): unknown; address(): AddressInfo | string | null }): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      if (addr === null || typeof addr === 'string') reject(new Error('listen: no TCP address'));
      else resolve(addr.port);
    });
  });
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1

/** Starts the HTTP/1.1 upstream (https with the test certs when opts.tls). */
export async function startH1Upstream(opts: H1UpstreamOptions = {}): Promise<H1Upstream> {
  const requests: RecordedRequest[] = [];
  const connectionIds = new WeakMap<Socket, number>();
  let connections = 0;
  let activeRequests = 0;
  let peakConcurrentRequests = 0;

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    let connection = connectionIds.get(req.socket);
    if (connection === undefined) {
      connection = ++connections;
      connectionIds.set(req.socket, connection);
    }
    activeRequests++;
    if (activeRequests > peakConcurrentRequests) peakConcurrentRequests = activeRequests;
    res.on('close', () => {
      activeRequests--;
    });

    const rec: RecordedRequest = {
      protocol: 'h1',
      method: req.method ?? '',
      path: req.url ?? '',
      rawHeaders: req.rawHeaders,
      bodyLength: 0,
      trailers: [],
      isComplete: false,
      isAborted: false,
      connection,
      tlsPeer: peerSan(req.socket),
    };
    requests.push(rec);
    // This listener also drains bodies the route ignores, so keep-alive keeps working.
    req.on('data', (chunk: Buffer) => {
      rec.bodyLength += chunk.length;
    });
    req.on('end', () => {
      rec.isComplete = true;
      rec.trailers = req.rawTrailers;
    });
    req.on('close', () => {
      if (!rec.isComplete) rec.isAborted = true;
    });
    req.on('error', () => {});
    res.on('error', () => {});

    routeH1(parseRoute(req.url ?? '/'), req, res);
  };

  const serverOptions = { maxHeaderSize: opts.maxHeaderSize ?? 64 * 1024, keepAliveTimeout: opts.keepAliveTimeoutMs ?? 5000 };
  let server: http.Server;
  if (opts.tls === true || opts.mtls === true) {
    const certs = ensureCerts();
    server = https.createServer(
      {
        ...serverOptions,
        key: certs.pem.key,
        cert: certs.pem.cert,
        ALPNProtocols: ['http/1.1'],
        ...(opts.mtls === true ? { ca: certs.pem.ca, requestCert: true, rejectUnauthorized: true } : {}),
      },
      onRequest,
    );
  } else {
    server = http.createServer(serverOptions, onRequest);
  }
  server.on('clientError', (_err, socket) => socket.destroy());

  const port = await listen(server);
  let closing: Promise<void> | null = null;
  return {
    port,
    url: opts.tls === true || opts.mtls === true ? `https://127.0.0.1:${port}` : `http://127.0.0.1:${port}`,
    requests,
    stats: () => ({ connections, activeRequests, peakConcurrentRequests }),
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

function routeH1(route: Route, req: http.IncomingMessage, res: http.ServerResponse): void {
  switch (route.kind) {
    case 'echo': {
      const headers: http.OutgoingHttpHeaders = {
        'x-echo-method': req.method ?? '',
        'x-echo-path': req.url ?? '',
        'x-echo-headers': JSON.stringify(req.rawHeaders),
      };
      const length = req.headers['content-length'];
      if (length !== undefined) headers['content-length'] = length;
      const type = req.headers['content-type'];
      if (type !== undefined) headers['content-type'] = type;
      res.writeHead(200, headers);
      req.pipe(res);
      return;
    }
    case 'status':
      res.writeHead(route.code, { 'content-type': 'text/plain' });
      res.end(hasNoBody(route.code) ? undefined : `${route.code}\n`);
      return;
    case 'bytes':
      res.writeHead(200, route.hasLength
        ? { 'content-type': 'application/octet-stream', 'content-length': route.n }
        : { 'content-type': 'application/octet-stream' });
      writePattern(res, route.n, () => res.end());
      return;
    case 'slow': {
      const timer = setTimeout(() => res.end('slow'), route.ms);
      res.on('close', () => clearTimeout(timer));
      return;
    }
    case 'trailers':
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-trailer-a' });
      res.write('trailers\n');
      res.addTrailers({ 'x-trailer-a': '1' });
      res.end();
      return;
    case 'reset':
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': RESET_DECLARED_LENGTH });
      res.write(patternPiece(0, RESET_SENT_LENGTH), () => req.socket.destroy());
      return;
    case 'sink':
      sink(req, route.delayMs, (result) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(result));
      });
      return;
    case 'big-headers':
      res.writeHead(200, { 'content-type': 'text/plain', 'x-big': BIG_HEADER });
      res.end('big');
      return;
    case 'bad':
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`${route.reason}\n`);
      return;
    case 'ok':
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
      return;
  }
}

// ---------------------------------------------------------------------------------------
// HTTP/2

/** Starts the HTTP/2 upstream: h2c (prior knowledge) by default, h2 over TLS with opts.tls. */
export async function startH2Upstream(opts: H2UpstreamOptions = {}): Promise<H2Upstream> {
  const requests: RecordedRequest[] = [];
  const sessionIds = new WeakMap<http2.Http2Session, number>();
  const openSessions = new Set<http2.Http2Session>();
  let sessions = 0;
  let activeStreams = 0;
  let peakConcurrentStreams = 0;
  let totalStreams = 0;

  const settings: http2.Settings = {};
  if (opts.maxConcurrentStreams !== undefined) settings.maxConcurrentStreams = opts.maxConcurrentStreams;
  const isTls = opts.tls === true || opts.mtls === true;
  let server: http2.Http2Server | http2.Http2SecureServer;
  if (isTls) {
    const certs = ensureCerts();
    server = http2.createSecureServer({
      key: certs.pem.key,
      cert: certs.pem.cert,
      allowHTTP1: false,
      settings,
      ...(opts.mtls === true ? { ca: certs.pem.ca, requestCert: true, rejectUnauthorized: true } : {}),
    });
  } else {
    server = http2.createServer({ settings });
  }

  server.on('session', (session: http2.ServerHttp2Session) => {
    sessionIds.set(session, ++sessions);
    openSessions.add(session);
    session.on('close', () => openSessions.delete(session));
    session.on('error', () => {});
  });

  // Node passes the raw header list as a 4th argument that @types/node doesn't declare.
  server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, rawHeaders?: unknown) => {
    totalStreams++;
    activeStreams++;
    if (activeStreams > peakConcurrentStreams) peakConcurrentStreams = activeStreams;
    stream.on('close', () => {
      activeStreams--;
    });
    stream.on('error', () => {});

    const raw = Array.isArray(rawHeaders) ? rawHeaders.map(String) : flattenHeaders(headers);
    const path = String(headers[':path'] ?? '');
    const rec: RecordedRequest = {
      protocol: 'h2',
      method: String(headers[':method'] ?? ''),
      path,
      rawHeaders: raw,
      bodyLength: 0,
      trailers: [],
      isComplete: false,
      isAborted: false,
      connection: sessionIds.get(stream.session as http2.ServerHttp2Session) ?? 0,
      tlsPeer: peerSan(stream.session?.socket),
    };
    requests.push(rec);
    stream.on('data', (chunk: Buffer) => {
      rec.bodyLength += chunk.length;
    });
    stream.on('trailers', (trailers: http2.IncomingHttpHeaders, _f: number, rawTrailers?: unknown) => {
      rec.trailers = Array.isArray(rawTrailers) ? rawTrailers.map(String) : flattenHeaders(trailers);
    });
    stream.on('end', () => {
      rec.isComplete = true;
    });
    stream.on('close', () => {
      if (!rec.isComplete) rec.isAborted = true;
    });

    routeH2(parseRoute(path), stream, headers, raw);
  });

  const port = await listen(server);
  let closing: Promise<void> | null = null;
  return {
    port,
    url: isTls ? `https://127.0.0.1:${port}` : `http://127.0.0.1:${port}`,
    requests,
    stats: () => ({ sessions, openSessions: openSessions.size, activeStreams, peakConcurrentStreams, totalStreams }),
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of openSessions) s.destroy();
      });
      return closing;
    },
  };
}

/** respond() throws once the peer has reset the stream; late answers (slow, sink) check. */
function isGone(stream: http2.ServerHttp2Stream): boolean {
  return stream.destroyed || stream.closed;
}

function routeH2(route: Route, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, raw: string[]): void {
  switch (route.kind) {
    case 'echo': {
      const out: http2.OutgoingHttpHeaders = {
        ':status': 200,
        'x-echo-method': String(headers[':method'] ?? ''),
        'x-echo-path': String(headers[':path'] ?? ''),
        'x-echo-headers': JSON.stringify(raw),
      };
      const length = headers['content-length'];
      if (length !== undefined) out['content-length'] = length;
      const type = headers['content-type'];
      if (type !== undefined) out['content-type'] = type;
      stream.respond(out);
      // The stream is both the request body (readable side) and the response body.
      stream.pipe(stream);
      return;
    }
    case 'status': {
      const isEmpty = hasNoBody(route.code);
      stream.respond({ ':status': route.code, 'content-type': 'text/plain' }, { endStream: isEmpty });
      if (!isEmpty) stream.end(`${route.code}\n`);
      return;
    }
    case 'bytes':
      stream.respond(route.hasLength
        ? { ':status': 200, 'content-type': 'application/octet-stream', 'content-length': route.n }
        : { ':status': 200, 'content-type': 'application/octet-stream' });
      writePattern(stream, route.n, () => stream.end());
      return;
    case 'slow': {
      const timer = setTimeout(() => {
        if (isGone(stream)) return;
        stream.respond({ ':status': 200, 'content-type': 'text/plain' });
        stream.end('slow');
      }, route.ms);
      stream.on('close', () => clearTimeout(timer));
      return;
    }
    case 'trailers':
      stream.respond({ ':status': 200, 'content-type': 'text/plain' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-trailer-a': '1' }));
      stream.end('trailers\n');
      return;
    case 'reset':
      stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'content-length': RESET_DECLARED_LENGTH });
      stream.write(patternPiece(0, RESET_SENT_LENGTH), () => {
        if (route.isSocket) stream.session?.destroy(new Error('reset-mid-body'));
        // close(code) would end() first, sending END_STREAM before the RST_STREAM (a
        // clean-looking short body); destroy(err) resets at once with INTERNAL_ERROR.
        else stream.destroy(new Error('reset-mid-body'));
      });
      return;
    case 'sink':
      sink(stream, route.delayMs, (result) => {
        if (isGone(stream)) return;
        stream.respond({ ':status': 200, 'content-type': 'application/json' });
        stream.end(JSON.stringify(result));
      });
      return;
    case 'big-headers':
      stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-big': BIG_HEADER });
      stream.end('big');
      return;
    case 'bad':
      stream.respond({ ':status': 400, 'content-type': 'text/plain' });
      stream.end(`${route.reason}\n`);
      return;
    case 'ok':
      stream.respond({ ':status': 200, 'content-type': 'text/plain' });
      stream.end('ok');
      return;
  }
}

// ---------------------------------------------------------------------------------------
// gRPC

/** skiff.test.Msg as proto-loader hands it over (defaults filled in). */
export interface EchoMsg {
  text: string;
  n: number;
}

/** The generated client for skiff.test.Echo, typed by hand. */
export interface EchoServiceClient extends grpc.Client {
  Unary(
    msg: Partial<EchoMsg>,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (err: grpc.ServiceError | null, value?: EchoMsg) => void,
  ): grpc.ClientUnaryCall;
  Bidi(metadata?: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<Partial<EchoMsg>, EchoMsg>;
}

/** Result of one unary call: exactly one of response / error is set. */
export interface UnaryResult {
  response: EchoMsg | null;
  error: grpc.ServiceError | null;
  /** Final status; status.metadata holds the trailers. */
  status: grpc.StatusObject;
  /** Response headers (initial metadata), null if none arrived. */
  headers: grpc.Metadata | null;
}

export interface CallOpts {
  metadata?: Record<string, string>;
  deadlineMs?: number;
}

export interface EchoClient {
  raw: EchoServiceClient;
  unary(msg: Partial<EchoMsg>, opts?: CallOpts): Promise<UnaryResult>;
  bidi(opts?: CallOpts): grpc.ClientDuplexStream<Partial<EchoMsg>, EchoMsg>;
  close(): void;
}

interface EchoPackage {
  skiff: { test: { Echo: grpc.ServiceClientConstructor } };
}

let echoPackage: EchoPackage | null = null;

function loadEcho(): EchoPackage {
  if (echoPackage === null) {
    const def = protoLoader.loadSync(repoPath('test', 'fixtures', 'echo.proto'), {
      keepCase: true,
      defaults: true,
      longs: Number,
    });
    echoPackage = grpc.loadPackageDefinition(def) as unknown as EchoPackage;
  }
  return echoPackage;
}

function flattenMetadata(md: grpc.Metadata): string[] {
  const out: string[] = [];
  for (const [name, values] of Object.entries(md.toJSON())) {
    for (const v of values) out.push(name, typeof v === 'string' ? v : v.toString('base64'));
  }
  return out;
}

function toMetadata(rec: Record<string, string> | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  if (rec !== undefined) for (const [k, v] of Object.entries(rec)) md.add(k, v);
  return md;
}

function callOptions(opts: CallOpts | undefined): grpc.CallOptions {
  return opts?.deadlineMs !== undefined ? { deadline: Date.now() + opts.deadlineMs } : {};
}

/**
 * Starts the gRPC upstream (insecure, 127.0.0.1) serving skiff.test.Echo from
 * test/fixtures/echo.proto. Unary echoes (text "fail": NOT_FOUND "nope", trailer
 * x-detail: why); Bidi echoes each message with n + 1 and ends when the client ends.
 */
export async function startGrpcUpstream(): Promise<Upstream> {
  const Echo = loadEcho().skiff.test.Echo;
  const requests: RecordedRequest[] = [];
  const server = new grpc.Server();
  const methodDefs = Echo.service;
  const messageSize = (method: 'Unary' | 'Bidi', msg: EchoMsg): number => 5 + methodDefs[method].requestSerialize(msg).length;

  const record = (method: 'Unary' | 'Bidi', metadata: grpc.Metadata): RecordedRequest => {
    const rec: RecordedRequest = {
      protocol: 'grpc',
      method: 'POST',
      path: methodDefs[method].path,
      rawHeaders: flattenMetadata(metadata),
      bodyLength: 0,
      trailers: [],
      isComplete: false,
      isAborted: false,
      connection: 0,
      tlsPeer: null,
    };
    requests.push(rec);
    return rec;
  };

  const unary: grpc.handleUnaryCall<EchoMsg, EchoMsg> = (call, callback) => {
    const rec = record('Unary', call.metadata);
    rec.bodyLength = messageSize('Unary', call.request);
    rec.isComplete = true;
    if (call.request.text === 'fail') {
      const trailer = new grpc.Metadata();
      trailer.set('x-detail', 'why');
      callback({ code: grpc.status.NOT_FOUND, details: 'nope', metadata: trailer }, null);
      return;
    }
    callback(null, { text: call.request.text, n: call.request.n });
  };

  const bidi: grpc.handleBidiStreamingCall<EchoMsg, EchoMsg> = (call) => {
    const rec = record('Bidi', call.metadata);
    call.on('data', (msg: EchoMsg) => {
      rec.bodyLength += messageSize('Bidi', msg);
      call.write({ text: msg.text, n: msg.n + 1 });
    });
    call.on('end', () => {
      rec.isComplete = true;
      call.end();
    });
    call.on('cancelled', () => {
      if (!rec.isComplete) rec.isAborted = true;
    });
    call.on('error', () => {});
  };

  server.addService(methodDefs, { Unary: unary, Bidi: bidi });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err !== null ? reject(err) : resolve(p)));
  });

  let closing: Promise<void> | null = null;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    close() {
      closing ??= new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      return closing;
    },
  };
}

/** An insecure skiff.test.Echo client for 127.0.0.1:port (an upstream or a sidecar). */
export function grpcClient(port: number, host = '127.0.0.1'): EchoClient {
  const Echo = loadEcho().skiff.test.Echo;
  const raw = new Echo(`${host}:${port}`, grpc.credentials.createInsecure()) as unknown as EchoServiceClient;
  return {
    raw,
    unary(msg, opts) {
      return new Promise<UnaryResult>((resolve) => {
        let response: EchoMsg | null = null;
        let error: grpc.ServiceError | null = null;
        let headers: grpc.Metadata | null = null;
        const call = raw.Unary(msg, toMetadata(opts?.metadata), callOptions(opts), (err, value) => {
          error = err;
          response = value ?? null;
        });
        call.on('metadata', (md: grpc.Metadata) => {
          headers = md;
        });
        // grpc-js emits 'status' on the tick after the callback, so both are in by now.
        call.on('status', (status: grpc.StatusObject) => resolve({ response, error, status, headers }));
      });
    },
    bidi(opts) {
      return raw.Bidi(toMetadata(opts?.metadata), callOptions(opts));
    },
    close() {
      raw.close();
    },
  };
}
