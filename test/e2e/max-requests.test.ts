// limits.maxRequestsPerConnection seen from outside, on every protocol: with a limit of 3, the
// third response on an HTTP/1.1 keep-alive connection says `connection: close` and the
// connection ends; an HTTP/2 session and an HTTP/3 connection get GOAWAY after their third
// request, which still completes, and a new connection is served. HTTP/3's GOAWAY is two-step:
// requests the client sent before it saw the first are served too. Why the limit exists:
// quiche 0.18 keeps every finished stream id of a QUIC connection in a set that only grows, so
// a long-lived HTTP/3 connection is renewed (docs/DESIGN.md, Soak; 10,000 by default for HTTP/3,
// unlimited for HTTP/1.1 and HTTP/2).
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ensureCerts, type TestCerts } from '../helpers/certs.js';
import { H3TestClient } from '../helpers/h3-client.js';
import { GOAWAY_NOTICE_ID } from '../../protocols/h3/server.js';
import { freePort, freePorts, plainAndTlsConfig, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

const HOST = '127.0.0.1';

describe('limits.maxRequestsPerConnection', () => {
  let certs: TestCerts;
  let upstream: http.Server;
  let sk: SkiffProcess;
  let plainPort = 0;
  let tlsPort = 0;

  before(async () => {
    certs = ensureCerts();
    upstream = http.createServer((req, res) => res.end(`ok ${req.url ?? ''}`));
    await new Promise<void>((r) => upstream.listen(0, HOST, r));
    const upPort = (upstream.address() as net.AddressInfo).port;
    tlsPort = await freePort({ udp: true });
    let admin: number;
    [admin, plainPort] = await freePorts(2);
    sk = await startSkiff(plainAndTlsConfig({ admin, plain: plainPort, tls: tlsPort, upstream: upPort, cert: certs.cert, key: certs.key }, 'maxRequestsPerConnection: 3'));
  });

  after(async () => {
    await sk?.stop();
    upstream?.closeAllConnections();
    await new Promise((r) => upstream?.close(r));
  });

  it('HTTP/1.1: the third response on a keep-alive connection says connection: close, then the connection ends', async () => {
    const s = net.connect(plainPort, HOST);
    let data = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (data += d));
    const closed = new Promise<void>((resolve) => s.on('close', () => resolve()));
    const waitFor = async (n: number): Promise<void> => {
      const deadline = Date.now() + 5000;
      while ((data.match(/HTTP\/1\.1 200 /g) ?? []).length < n) {
        if (Date.now() > deadline) throw new Error(`no response ${n}: ${data}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    for (let i = 1; i <= 3; i++) {
      s.write(`GET /h1/${i} HTTP/1.1\r\nhost: a\r\n\r\n`);
      await waitFor(i);
    }
    await closed;
    const heads = data.split(/HTTP\/1\.1 /).slice(1);
    assert.equal(heads.length, 3);
    assert.doesNotMatch(heads[0], /connection: close/i);
    assert.doesNotMatch(heads[1], /connection: close/i);
    assert.match(heads[2], /connection: close/i);
    assert.match(heads[2], /ok \/h1\/3$/);
  });

  it('HTTP/2: GOAWAY (NO_ERROR) after the third stream, which completes; a new session is served', async () => {
    const session = http2.connect(`http://${HOST}:${plainPort}`);
    session.on('error', () => undefined);
    const goaway = new Promise<{ code: number; last: number }>((resolve) => session.once('goaway', (code: number, last: number) => resolve({ code, last })));
    const get = (sess: http2.ClientHttp2Session, path: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const req = sess.request({ ':path': path });
        let body = '';
        req.setEncoding('utf8');
        req.on('data', (c: string) => (body += c));
        req.on('end', () => resolve(body));
        req.on('error', reject);
      });
    for (let i = 1; i <= 3; i++) assert.equal(await get(session, `/h2/${i}`), `ok /h2/${i}`);
    const g = await goaway;
    assert.equal(g.code, http2.constants.NGHTTP2_NO_ERROR);
    assert.equal(g.last, 5, 'the third stream (id 5) is the last one processed');
    session.close();
    const next = http2.connect(`http://${HOST}:${plainPort}`);
    next.on('error', () => undefined);
    assert.equal(await get(next, '/h2/4'), 'ok /h2/4');
    next.close();
  });

  it('HTTP/3: GOAWAY after the third request, which completes; a new connection is served', async () => {
    const h3 = await H3TestClient.connect(HOST, tlsPort, certs.pem.ca);
    try {
      for (let i = 1; i <= 3; i++) {
        const r = await h3.request(`/h3/${i}`);
        assert.equal(r.status, 200);
        assert.equal(r.body.toString('utf8'), `ok /h3/${i}`);
      }
      const deadline = Date.now() + 5000;
      while (h3.goawayIds.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(h3.goawayIds, [GOAWAY_NOTICE_ID, 12], 'a GOAWAY refusing nothing, then one with the id after the third request stream (0, 4, 8)');
    } finally {
      await h3.close().catch(() => undefined);
    }
    const again = await H3TestClient.connect(HOST, tlsPort, certs.pem.ca);
    try {
      assert.equal((await again.request('/h3/4')).status, 200);
    } finally {
      await again.close().catch(() => undefined);
    }
  });

  it('HTTP/3: eight requests sent at once on a connection limited to three are all served (two-step GOAWAY)', async () => {
    const h3 = await H3TestClient.connect(HOST, tlsPort, certs.pem.ca);
    try {
      // All eight streams are on the wire before the third reaches the server, so a one-step
      // GOAWAY (the real id at the third request) refused the last five with H3_REQUEST_REJECTED.
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => h3.request(`/burst/${i}`)));
      assert.deepEqual(results.map((r) => r.status), Array(8).fill(200));
      assert.deepEqual(results.map((r) => r.body.toString('utf8')), Array.from({ length: 8 }, (_, i) => `ok /burst/${i}`));
      const deadline = Date.now() + 5000;
      while (h3.goawayIds.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(h3.goawayIds, [GOAWAY_NOTICE_ID, 32], 'the real id, after the grace period, covers all eight streams (0 ... 28)');
    } finally {
      await h3.close().catch(() => undefined);
    }
  });
});
