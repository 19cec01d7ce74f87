// Regression: an HTTP/2 upstream response cut by the connection's end (a TCP FIN from the
// upstream mid-body, no END_STREAM, no RST_STREAM) reached the client as a complete response.
// node:http2 emits 'end' on a stream it tears down with its session (rstCode CANCEL), and the
// codec took every 'end' for the end of the body. Without a content-length the client cannot
// tell: over HTTP/1.1 it got the last chunk of a chunked body, over HTTP/2 a clean END_STREAM.
// Now an 'end' on a stream already reset, or short of its content-length, is reported as
// the upstream reset it is (protocols/h2/upstream.ts `onResponseEnd`), so the client sees the
// cut. Found by test/e2e/upstream-faults.test.ts (a 1 MiB response ending cleanly at 64 KiB).
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, it } from 'node:test';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

let upstream: http2.Http2Server;
const sockets = new Map<number, net.Socket>();
let sk: SkiffProcess;
let listen = 0;

before(async () => {
  upstream = http2.createServer();
  upstream.on('connection', (socket: net.Socket) => {
    sockets.set(socket.remotePort ?? 0, socket);
    socket.on('close', () => sockets.delete(socket.remotePort ?? 0));
  });
  upstream.on('session', (s) => s.on('error', () => {}));
  upstream.on('stream', (stream) => {
    stream.on('error', () => {});
    // No content-length: only the transport can say the body is complete.
    stream.respond({ ':status': 200 });
    stream.write(Buffer.alloc(64 * 1024, 0x78));
    setTimeout(() => sockets.get(stream.session?.socket?.remotePort ?? -1)?.end(), 50);
  });
  const upPort = await new Promise<number>((r) => upstream.listen(0, '127.0.0.1', () => r((upstream.address() as net.AddressInfo).port)));
  const [l, admin] = await freePorts(2);
  listen = l;
  sk = await startSkiff(`admin: { address: 127.0.0.1:${admin} }
listeners:
  - { name: in, address: 127.0.0.1:${listen}, protocols: [http1, h2c], routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app }
clusters:
  - name: app
    protocol: h2c
    endpoints: [127.0.0.1:${upPort}]
    retries: { attempts: 0 }
`);
});

after(async () => {
  await sk.stop();
  for (const s of sockets.values()) s.destroy();
  await new Promise((r) => upstream.close(r));
});

function h1Get(path: string): Promise<{ status: number; bytes: number; isComplete: boolean }> {
  return new Promise((resolve) => {
    let bytes = 0;
    http
      .get({ host: '127.0.0.1', port: listen, path, agent: false }, (res) => {
        res.on('data', (c: Buffer) => (bytes += c.length));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, isComplete: res.complete }));
        res.on('error', () => resolve({ status: res.statusCode ?? 0, bytes, isComplete: false }));
      })
      .on('error', () => resolve({ status: 0, bytes, isComplete: false }));
  });
}

function h2Get(path: string): Promise<{ status: number; bytes: number; rstCode: number }> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://127.0.0.1:${listen}`);
    session.on('error', () => {});
    const req = session.request({ ':path': path });
    let status = 0;
    let bytes = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('error', () => {});
    req.on('close', () => {
      session.close();
      resolve({ status, bytes, rstCode: req.rstCode ?? 0 });
    });
  });
}

it('a response cut by the upstream connection ending is cut for the client too', async () => {
  for (let i = 0; i < 3; i++) {
    const r = await h1Get(`/h1/${i}`);
    assert.equal(r.status, 200);
    assert.equal(r.isComplete, false, `HTTP/1.1 client: the response must not end cleanly (${r.bytes} bytes)`);
    const r2 = await h2Get(`/h2/${i}`);
    assert.notEqual(r2.rstCode, http2.constants.NGHTTP2_NO_ERROR, `HTTP/2 client: the stream must be reset (${r2.bytes} bytes, status ${r2.status})`);
  }
});
