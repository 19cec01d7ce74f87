// Regression: an upstream socket that Skiff had closed on its side stayed open in the sidecar
// until the peer closed its side too, which some peers never do. Two ways to get there:
// HTTP/1.1, a response with `connection: close` from a server that then keeps the socket
// open (Skiff ended its side and waited for the server's FIN); HTTP/2, a node:http2 server
// that sends GOAWAY and keeps the connection (node:http2's graceful session close ends the
// socket and waits for the peer). Each such connection cost the sidecar a socket in
// FIN-WAIT-2 that its process still owned, and on HTTP/2 a session object, forever. Now an
// upstream socket is destroyed as soon as its write side is ended and flushed
// (protocols/h1/dial.ts `destroyAfterEnd`); the kernel finishes the close on its own.
// Found by test/e2e/upstream-faults.test.ts.
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, it } from 'node:test';
import { fdCountOfPid, fdsSettleTo } from '../helpers/clients.js';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

const ROUNDS = 5;
let h1: net.Server;
let h2: http2.Http2Server;
const held: net.Socket[] = [];
let sk: SkiffProcess;
let listen = 0;

function listenOn(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

before(async () => {
  // HTTP/1.1: answers every request with `connection: close`, ignores the client's FIN.
  h1 = net.createServer({ allowHalfOpen: true }, (socket) => {
    held.push(socket);
    socket.on('error', () => {});
    socket.on('data', (b: Buffer) => {
      if (b.includes('\r\n\r\n')) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n');
    });
  });
  // HTTP/2: each stream gets GOAWAY(NO_ERROR) and an answer; the session is never closed.
  h2 = http2.createServer();
  h2.on('connection', (socket: net.Socket) => held.push(socket));
  h2.on('session', (s) => s.on('error', () => {}));
  h2.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id);
    stream.respond({ ':status': 200 });
    stream.end('ok\n');
  });
  const [p1, p2] = await Promise.all([listenOn(h1), listenOn(h2)]);
  const [l, admin] = await freePorts(2);
  listen = l;
  sk = await startSkiff(`admin: { address: 127.0.0.1:${admin} }
listeners:
  - { name: in, address: 127.0.0.1:${listen}, protocols: [http1], routes: r }
routes:
  r:
    - { match: { prefix: /h1 }, cluster: h1 }
    - { match: { prefix: /h2 }, cluster: h2 }
clusters:
  - { name: h1, protocol: http1, endpoints: [127.0.0.1:${p1}] }
  - { name: h2, protocol: h2c, endpoints: [127.0.0.1:${p2}] }
`);
});

after(async () => {
  await sk.stop();
  for (const s of held) s.destroy();
  await Promise.all([new Promise((r) => h1.close(r)), new Promise((r) => h2.close(r))]);
});

function get(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: listen, path, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      })
      .on('error', reject);
  });
}

const fds = (): number => fdCountOfPid(sk.pid);

it('upstream sockets closed on our side do not wait for the peer (HTTP/1.1 connection: close, HTTP/2 GOAWAY)', async () => {
  assert.equal(await get('/h1/warm'), 200);
  assert.equal(await get('/h2/warm'), 200);
  const base = await fdsSettleTo(sk.pid, 0, 500); // whatever it is once the warm-up settled
  for (let i = 0; i < ROUNDS; i++) {
    assert.equal(await get(`/h1/${i}`), 200);
    assert.equal(await get(`/h2/${i}`), 200);
  }
  // Without the fix each round leaves two upstream sockets open in the sidecar.
  const now = await fdsSettleTo(sk.pid, base + 1, 3000);
  assert.ok(now <= base + 1, `open fds ${now}, ${base} after the warm-up: upstream sockets leaked`);
});
