/**
 * The soak's load generator, a child process: a steady, fixed-rate mix against the sidecar.
 *
 * - HTTP/1.1 GETs (keep-alive agent) at `--h1-rps`; every 4th goes to the h2c upstream (/h2up/);
 * - HTTP/2 (h2c, one session, reconnected if it drops) GETs at `--h2-rps`; every 2nd to /h2up/;
 * - streaming POSTs at `--post-per-s`, alternating HTTP/1.1 (chunked, no content-length) and
 *   HTTP/2, each `--post-bytes` written in 16 KiB chunks a millisecond apart; the upstream
 *   answers with the byte count it received, which is checked;
 * - HTTP/3 GETs at `--h3-rps` to the TLS listener on `--h3-port` (UDP), every 2nd to /h2up/,
 *   over one QUIC connection (reconnected if it closes) made with Skiff's own HTTP/3 client
 *   pieces (test/helpers/h3-client.ts: the QUIC driver, H3Session, QPACK), the server's
 *   certificate checked against `--ca` (PEM file). No `--h3-port`: no HTTP/3.
 *
 * Fixed rate: a 20 ms tick adds rate × dt credits per kind and starts one request per credit,
 * as long as fewer than `--max-inflight` of that kind are in flight (otherwise the request is
 * counted as dropped, so an overloaded sidecar shows up instead of building a backlog here).
 *
 * stdout: `{"pid":..}`, then a progress line every 10 s and a final totals line (on its own
 * after `--seconds`, or on SIGTERM).
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import { H3TestClient } from '../../test/helpers/h3-client.js';
import { numberFlag, parseFlags } from './alloc-common.js';

type Kind = 'h1Get' | 'h2Get' | 'post' | 'h3Get';

interface Counters {
  ok: number;
  errors: number;
  dropped: number;
  inFlight: number;
}

/** Latencies (ms) of the current 10 s window, bounded; summarized and cleared at each progress line. */
const MAX_WINDOW_SAMPLES = 50_000;

const flags = parseFlags(process.argv.slice(2));
const port = numberFlag(flags, 'port', 0);
if (port === 0) throw new Error('--port is required');
const seconds = numberFlag(flags, 'seconds', 600);
const h3Port = flags.has('h3-port') ? numberFlag(flags, 'h3-port', 0) : 0;
const rates: Record<Kind, number> = {
  h1Get: numberFlag(flags, 'h1-rps', 400),
  h2Get: numberFlag(flags, 'h2-rps', 200),
  post: numberFlag(flags, 'post-per-s', 4),
  h3Get: h3Port === 0 ? 0 : numberFlag(flags, 'h3-rps', 100),
};
const caFile = flags.get('ca');
if (h3Port !== 0 && caFile === undefined) throw new Error('--h3-port needs --ca (the PEM file the server certificate chains to)');
const ca = caFile === undefined ? null : readFileSync(caFile);
const postBytes = numberFlag(flags, 'post-bytes', 256 * 1024);
const maxInFlight = numberFlag(flags, 'max-inflight', 64);
const CHUNK = Buffer.alloc(16 * 1024, 0x73);

const counters: Record<Kind, Counters> = {
  h1Get: { ok: 0, errors: 0, dropped: 0, inFlight: 0 },
  h2Get: { ok: 0, errors: 0, dropped: 0, inFlight: 0 },
  post: { ok: 0, errors: 0, dropped: 0, inFlight: 0 },
  h3Get: { ok: 0, errors: 0, dropped: 0, inFlight: 0 },
};
const windowMs: Record<Kind, number[]> = { h1Get: [], h2Get: [], post: [], h3Get: [] };
let postBytesOk = 0;
let h2Reconnects = 0;
let h3Reconnects = 0;
const firstErrors: string[] = [];

/** A completion callback that counts only its first call (error after end, close after error). */
function once(kind: Kind): (ok: boolean, why: string) => void {
  let isDone = false;
  const started = performance.now();
  return (ok, why) => {
    if (isDone) return;
    isDone = true;
    const w = windowMs[kind];
    if (ok && w.length < MAX_WINDOW_SAMPLES) w.push(performance.now() - started);
    done(kind, ok, why);
  };
}

function percentiles(kind: Kind): { n: number; p50: number; p99: number } {
  const w = windowMs[kind].sort((a, b) => a - b);
  const at = (q: number): number => (w.length === 0 ? 0 : Number(w[Math.min(w.length - 1, Math.floor(q * w.length))].toFixed(2)));
  const r = { n: w.length, p50: at(0.5), p99: at(0.99) };
  w.length = 0;
  return r;
}

function done(kind: Kind, ok: boolean, why: string): void {
  const c = counters[kind];
  c.inFlight--;
  if (ok) c.ok++;
  else {
    c.errors++;
    if (firstErrors.length < 10) firstErrors.push(`${kind}: ${why}`);
  }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });

function h1Get(path: string): void {
  const fin = once('h1Get');
  const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (c: string) => (body += c));
    res.on('end', () => fin(res.statusCode === 200 && body === 'ok', `status ${res.statusCode} body ${body.slice(0, 80)}`));
    res.on('error', (e) => fin(false, e.message));
  });
  req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
  req.on('error', (e) => fin(false, e.message));
  req.on('close', () => fin(false, 'closed without a response'));
}

let session: http2.ClientHttp2Session | null = null;

function h2(): http2.ClientHttp2Session {
  if (session === null || session.closed || session.destroyed) {
    if (session !== null) h2Reconnects++;
    const s = http2.connect(`http://127.0.0.1:${port}`);
    s.on('error', () => undefined);
    s.on('close', () => {
      if (session === s) session = null;
    });
    session = s;
  }
  return session;
}

function h2Get(path: string): void {
  const fin = once('h2Get');
  const stream = h2().request({ ':method': 'GET', ':path': path });
  let body = '';
  let status = 0;
  stream.setEncoding('utf8');
  stream.setTimeout(10_000, () => stream.close(http2.constants.NGHTTP2_CANCEL));
  stream.on('response', (headers) => (status = Number(headers[':status'])));
  stream.on('data', (c: string) => (body += c));
  stream.on('end', () => fin(status === 200 && body === 'ok', `status ${status} body ${body.slice(0, 80)}`));
  stream.on('error', (e) => fin(false, e.message));
  stream.on('close', () => fin(false, `stream closed (code ${stream.rstCode ?? '?'})`));
}

/** Writes `postBytes` in 16 KiB chunks, 1 ms apart, honouring backpressure. */
function streamBody(w: { write(c: Buffer): boolean; end(): void; once(ev: 'drain', f: () => void): unknown }): void {
  let sent = 0;
  const next = (): void => {
    if (sent >= postBytes) {
      w.end();
      return;
    }
    const n = Math.min(CHUNK.length, postBytes - sent);
    sent += n;
    const ok = w.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n));
    if (ok) setTimeout(next, 1);
    else w.once('drain', next);
  };
  next();
}

let postSeq = 0;

function post(): void {
  const expected = String(postBytes);
  const fin = once('post');
  const finish = (status: number, body: string): void => {
    const ok = status === 200 && body === expected;
    if (ok) postBytesOk += postBytes;
    fin(ok, `status ${status} body ${body.slice(0, 80)}`);
  };
  if (postSeq++ % 2 === 0) {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/upload', agent, headers: { 'content-type': 'application/octet-stream' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => finish(res.statusCode ?? 0, body));
      res.on('error', (e) => fin(false, e.message));
    });
    req.setTimeout(20_000, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => fin(false, e.message));
    req.on('close', () => fin(false, 'closed without a response'));
    streamBody(req);
  } else {
    const stream = h2().request({ ':method': 'POST', ':path': '/upload/h2', 'content-type': 'application/octet-stream' });
    let body = '';
    let status = 0;
    stream.setEncoding('utf8');
    stream.setTimeout(20_000, () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.on('response', (headers) => (status = Number(headers[':status'])));
    stream.on('data', (c: string) => (body += c));
    stream.on('end', () => finish(status, body));
    stream.on('error', (e) => fin(false, e.message));
    stream.on('close', () => fin(false, `stream closed (code ${stream.rstCode ?? '?'})`));
    streamBody(stream);
  }
}

/** The HTTP/3 connection; null while none is open (the next request starts one). */
let h3Client: H3TestClient | null = null;
let h3Connecting: Promise<H3TestClient> | null = null;

/** Connections given up for a newer one (GOAWAY, closing), closed when their last request ends. */
const retiring = new Set<H3TestClient>();

function closeIfIdle(c: H3TestClient): void {
  if (!retiring.has(c) || c.inFlight > 0) return;
  retiring.delete(c);
  void c.close().catch(() => undefined);
}

/** The open HTTP/3 connection, or a promise of a new one (one connect at a time). */
function h3(): H3TestClient | Promise<H3TestClient> {
  const c = h3Client;
  if (c !== null && !c.isClosing && c.goawayIds.length === 0) return c;
  if (h3Connecting === null) {
    if (c !== null) {
      // After a GOAWAY the requests still running on the old connection finish there; it is
      // closed once they are done (closing it at once failed them: 12 "connection closed"
      // errors in the soak of 2026-11-26 12:01, one per renewal).
      h3Reconnects++;
      h3Client = null;
      retiring.add(c);
      closeIfIdle(c);
    }
    const p = H3TestClient.connect('127.0.0.1', h3Port, ca as Buffer);
    h3Connecting = p;
    p.then(
      (client) => {
        h3Client = client;
        h3Connecting = null;
      },
      () => {
        h3Connecting = null;
      },
    );
  }
  return h3Connecting;
}

function h3Get(path: string): void {
  const fin = once('h3Get');
  const timer = setTimeout(() => fin(false, 'timeout'), 10_000);
  const send = (client: H3TestClient): void => {
    client.request(path).then(
      (r) => {
        clearTimeout(timer);
        const body = r.body.toString('utf8');
        fin(r.status === 200 && body === 'ok', `status ${r.status} body ${body.slice(0, 80)}`);
        closeIfIdle(client);
      },
      (e: Error) => {
        clearTimeout(timer);
        fin(false, e.message);
        closeIfIdle(client);
      },
    );
  };
  const c = h3();
  if (c instanceof H3TestClient) {
    send(c);
    return;
  }
  c.then(send, (e: Error) => {
    clearTimeout(timer);
    fin(false, `HTTP/3 connect: ${e.message}`);
  });
}

let h1Seq = 0;
let h2Seq = 0;
let h3Seq = 0;

function start(kind: Kind): void {
  const c = counters[kind];
  if (c.inFlight >= maxInFlight) {
    c.dropped++;
    return;
  }
  c.inFlight++;
  if (kind === 'h1Get') h1Get(h1Seq++ % 4 === 3 ? '/h2up/' : '/');
  else if (kind === 'h2Get') h2Get(h2Seq++ % 2 === 1 ? '/h2up/' : '/');
  else if (kind === 'h3Get') h3Get(h3Seq++ % 2 === 1 ? '/h2up/' : '/');
  else post();
}

// The first HTTP/3 connection is made before the load starts (and before the ready line), so
// a broken HTTP/3 listener fails the soak at once.
if (h3Port !== 0) await h3();

const credit: Record<Kind, number> = { h1Get: 0, h2Get: 0, post: 0, h3Get: 0 };
const kinds: readonly Kind[] = ['h1Get', 'h2Get', 'post', 'h3Get'];
const t0 = performance.now();
let last = t0;
let lastProgress = t0;
let isStopping = false;

function summary(): object {
  return { t: (performance.now() - t0) / 1000, ...counters, postBytesOk, h2Reconnects, h3Reconnects, firstErrors };
}

const tick = setInterval(() => {
  const now = performance.now();
  const dt = Math.min(now - last, 1000) / 1000;
  last = now;
  for (const k of kinds) {
    credit[k] = Math.min(credit[k] + rates[k] * dt, rates[k] + 1);
    // At most rate + 1 starts per tick (bounded even after a stall).
    while (credit[k] >= 1) {
      credit[k] -= 1;
      start(k);
    }
  }
  if (now - lastProgress >= 10_000) {
    lastProgress = now;
    const latencyMs = { h1Get: percentiles('h1Get'), h2Get: percentiles('h2Get'), post: percentiles('post'), h3Get: percentiles('h3Get') };
    process.stdout.write(JSON.stringify({ progress: { ...summary(), latencyMs } }) + '\n');
  }
  if (now - t0 >= seconds * 1000) void stop();
}, 20);

async function stop(): Promise<void> {
  if (isStopping) return;
  isStopping = true;
  clearInterval(tick);
  // Let requests in flight finish (at most 5 s), then report and leave.
  const deadline = performance.now() + 5000;
  while (performance.now() < deadline && kinds.some((k) => counters[k].inFlight > 0)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  process.stdout.write(JSON.stringify({ final: summary() }) + '\n');
  agent.destroy();
  if (session !== null) session.close();
  if (h3Client !== null) await h3Client.close().catch(() => undefined);
  setTimeout(() => process.exit(0), 100).unref();
}

process.once('SIGTERM', () => void stop());
process.stdout.write(JSON.stringify({ pid: process.pid }) + '\n');
