// Connection timeouts of the HTTP/1.1 listener: a request head that stops arriving gets 408 and
// the connection closes (slowloris on heads); a request body that stops arriving gets 408
// SKIFF_ERR_REQUEST_TIMEOUT (slowloris on bodies) while a slow but steady one gets through;
// an idle keep-alive connection is closed after keepAliveTimeout, an idle HTTP/2 session gets
// GOAWAY after it; an active request is never cut by any of them.
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

let upstream: http.Server;
let sk: SkiffProcess;
let listen = 0;

before(async () => {
  upstream = http.createServer((req, res) => {
    if (req.url === '/upload') {
      // Answers only once the whole body arrived, with its size.
      let n = 0;
      req.on('data', (c: Buffer) => { n += c.length; });
      req.on('end', () => res.end(`got ${n}`));
      return;
    }
    req.resume();
    // /slow answers after 1.2 s: longer than every timeout below.
    setTimeout(() => res.end('ok'), req.url === '/slow' ? 1200 : 0);
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  const upPort = (upstream.address() as net.AddressInfo).port;
  const [l, admin] = await freePorts(2);
  listen = l;
  sk = await startSkiff(`admin: { address: 127.0.0.1:${admin} }
limits: { headersTimeout: 300ms, keepAliveTimeout: 500ms, requestBodyTimeout: 400ms }
listeners:
  - { name: in, address: 127.0.0.1:${listen}, protocols: [http1, h2c], routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app }
clusters:
  - { name: app, protocol: http1, endpoints: [127.0.0.1:${upPort}] }
`);
});

after(async () => {
  await sk.stop();
  upstream.closeAllConnections();
  await new Promise<void>((r) => upstream.close(() => r()));
});

/** Connects, writes `text`, collects everything until the server closes (bounded by `maxMs`). */
function exchange(text: string, maxMs: number): Promise<{ data: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const s = net.connect(listen, '127.0.0.1', () => s.write(text));
    let data = '';
    s.on('data', (d: Buffer) => { data += d.toString('latin1'); });
    s.on('error', reject);
    s.on('close', () => resolve({ data, closedAfterMs: Date.now() - started }));
    setTimeout(() => s.destroy(), maxMs).unref();
  });
}

it('a request head that stops arriving gets 408 and a close', async () => {
  const r = await exchange('GET / HTTP/1.1\r\nHost: a\r\n', 5000);
  assert.match(r.data, /^HTTP\/1\.1 408 /);
  assert.match(r.data, /x-skiff-error: SKIFF_ERR_REQUEST_TIMEOUT/);
  assert.ok(r.closedAfterMs < 3000, `closed after ${r.closedAfterMs} ms`);
});

/** Connects, sends `parts` with `gapMs` between them, collects until the server closes. */
function trickle(parts: readonly string[], gapMs: number, maxMs: number): Promise<{ data: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const s = net.connect(listen, '127.0.0.1');
    let data = '';
    let i = 0;
    const next = (): void => {
      if (i >= parts.length || s.destroyed) return;
      s.write(parts[i++]);
      setTimeout(next, gapMs).unref();
    };
    s.on('connect', next);
    s.on('data', (d: Buffer) => { data += d.toString('latin1'); });
    s.on('error', reject);
    s.on('close', () => resolve({ data, closedAfterMs: Date.now() - started }));
    setTimeout(() => s.destroy(), maxMs).unref();
  });
}

it('a request body that stops arriving gets 408 SKIFF_ERR_REQUEST_TIMEOUT and a close', async () => {
  const r = await trickle(['POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n', 'x'.repeat(100)], 10, 5000);
  assert.match(r.data, /^HTTP\/1\.1 408 /);
  assert.match(r.data, /x-skiff-error: SKIFF_ERR_REQUEST_TIMEOUT/);
  assert.match(r.data, /request body stalled for 400 ms/);
  assert.ok(r.closedAfterMs >= 350 && r.closedAfterMs < 3000, `closed after ${r.closedAfterMs} ms`);
});

it('a slow but steady request body is not cut by the body timeout', async () => {
  // Ten pieces 150 ms apart: 1.5 s in all, each gap well under the 400 ms limit.
  const parts = ['POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n', ...Array.from({ length: 10 }, () => 'y'.repeat(100))];
  const r = await trickle(parts, 150, 8000);
  assert.match(r.data, /^HTTP\/1\.1 200 /);
  assert.match(r.data, /\r\n\r\ngot 1000$/);
});

it('an idle keep-alive connection closes after keepAliveTimeout, not before', async () => {
  const r = await exchange('GET / HTTP/1.1\r\nHost: a\r\n\r\n', 5000);
  assert.match(r.data, /^HTTP\/1\.1 200 /);
  assert.ok(r.closedAfterMs >= 450, `closed after ${r.closedAfterMs} ms`);
  assert.ok(r.closedAfterMs < 3000, `closed after ${r.closedAfterMs} ms`);
});

it('a request in flight is not cut by either timeout', async () => {
  const r = await exchange('GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', 5000);
  assert.match(r.data, /^HTTP\/1\.1 200 /);
  assert.match(r.data, /\r\n\r\nok$/);
});

it('an idle HTTP/2 session gets GOAWAY (NO_ERROR) after keepAliveTimeout; one with a stream waiting on its upstream does not', async () => {
  const session = http2.connect(`http://127.0.0.1:${listen}`);
  session.on('error', () => {});
  const started = Date.now();
  const goaway = new Promise<{ code: number; afterMs: number }>((resolve) => session.once('goaway', (code: number) => resolve({ code, afterMs: Date.now() - started })));
  // /slow keeps a stream open for 1.2 s with no frames on the session: more than the 500 ms
  // idle timeout, and the session must stay up for it.
  const status = await new Promise<number>((resolve, reject) => {
    const req = session.request({ ':path': '/slow' });
    let code = 0;
    req.on('response', (h) => (code = Number(h[':status'])));
    req.resume();
    req.on('end', () => resolve(code));
    req.on('error', reject);
  });
  assert.equal(status, 200);
  const g = await goaway;
  assert.equal(g.code, http2.constants.NGHTTP2_NO_ERROR);
  assert.ok(g.afterMs >= 1200 + 450, `GOAWAY after ${g.afterMs} ms: the idle timer ran while a stream was open`);
  assert.ok(g.afterMs < 5000, `GOAWAY after ${g.afterMs} ms`);
  session.close();
});
