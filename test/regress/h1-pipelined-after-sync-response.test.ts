// Bug (2026-11-26, found reading the listener codec): when a request was answered
// synchronously (a 404 from routing) while more pipelined requests sat in the same TCP read,
// the listener stored the rest as "pending" after it had already moved on to the next
// request, so the pipelined requests waited until the client sent more bytes: with nothing
// more to send, the client hung. Fix: H1ServerConn.continueWith() parses bytes after a
// finished request at once.
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

let upstream: http.Server;
let sk: SkiffProcess;
let listen = 0;

before(async () => {
  upstream = http.createServer((req, res) => {
    req.resume();
    res.end(`up ${req.url ?? ''}`);
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  const upPort = (upstream.address() as net.AddressInfo).port;
  const [l, admin] = await freePorts(2);
  listen = l;
  sk = await startSkiff(`admin: { address: 127.0.0.1:${admin} }
listeners:
  - { name: in, address: 127.0.0.1:${listen}, protocols: [http1], routes: r }
routes:
  r:
    - { match: { prefix: /ok }, cluster: app }
clusters:
  - { name: app, protocol: http1, endpoints: [127.0.0.1:${upPort}] }
`);
});

after(async () => {
  await sk.stop();
  upstream.closeAllConnections();
  await new Promise<void>((r) => upstream.close(() => r()));
});

it('pipelined requests behind a synchronous 404 are answered, in order, without more input', async () => {
  const text = await new Promise<string>((resolve, reject) => {
    const s = net.connect(listen, '127.0.0.1', () => {
      // One write: a request with no route (404 at once), then two that go upstream, the last
      // closing the connection.
      s.write('GET /nope HTTP/1.1\r\nHost: a\r\n\r\nGET /nope2 HTTP/1.1\r\nHost: a\r\n\r\nGET /ok1 HTTP/1.1\r\nHost: a\r\n\r\nGET /ok2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    });
    let data = '';
    s.on('data', (d: Buffer) => { data += d.toString('latin1'); });
    s.on('close', () => resolve(data));
    s.on('error', reject);
    setTimeout(() => { s.destroy(); }, 4000).unref();
  });
  const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
  assert.deepEqual(statuses, [404, 404, 200, 200], text);
  assert.ok(text.indexOf('up /ok1') < text.indexOf('up /ok2'), 'responses come back in request order');
});
