// Regression: after the sidecar ended a downstream HTTP/1.1 connection (a `connection: close`
// response, a refused head) it waited for the client's FIN with no bound, and the keep-alive
// timeout did not cover that state: a client that never closed held a descriptor in the
// sidecar forever. Now the connection lingers (reads and drops what still arrives) until the
// client closes, for at most 5 s or the keep-alive timeout, then it is destroyed
// (protocols/h1/server-conn.ts endAndLinger). Found by test/e2e/upstream-faults.test.ts.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, it } from 'node:test';
import { fdCountOfPid, fdsSettleTo } from '../helpers/clients.js';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

let upstream: http.Server;
let sk: SkiffProcess;
let listen = 0;
const clients: net.Socket[] = [];

before(async () => {
  // connection: close upstream too, so no pooled upstream socket muddles the descriptor count.
  upstream = http.createServer((_req, res) => {
    res.setHeader('connection', 'close');
    res.end('ok\n');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const up = (upstream.address() as net.AddressInfo).port;
  const [l, admin] = await freePorts(2);
  listen = l;
  sk = await startSkiff(`admin: { address: 127.0.0.1:${admin} }
limits: { keepAliveTimeout: 800ms }
listeners:
  - { name: in, address: 127.0.0.1:${listen}, protocols: [http1], routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app }
clusters:
  - { name: app, protocol: http1, endpoints: [127.0.0.1:${up}] }
`);
});

after(async () => {
  for (const c of clients) c.destroy();
  await sk.stop();
  await new Promise((r) => upstream.close(r));
});

/** Sends `bytes`, waits for the sidecar's FIN, and keeps the socket open (never ends it). */
function sendAndHold(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: listen, allowHalfOpen: true }, () => s.write(bytes));
    clients.push(s);
    let data = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (data += d));
    s.on('end', () => resolve(data));
    s.on('error', reject);
  });
}

const fds = (): number => fdCountOfPid(sk.pid);

it('a client that never closes after connection: close (or a 400) does not hold the sidecar socket', async () => {
  assert.match(await sendAndHold('GET /warm HTTP/1.1\r\nhost: a\r\n\r\n'.replace('\r\n\r\n', '\r\nconnection: close\r\n\r\n')), /^HTTP\/1\.1 200 /);
  // Let the warm-up socket's linger run out (800 ms keep-alive timeout) before counting.
  await new Promise((r) => setTimeout(r, 1500));
  const base = fds();
  const answers = await Promise.all([
    sendAndHold('GET /a HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n'),
    sendAndHold('GET /b HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n'),
    sendAndHold('GET /c HTTP/1.1\r\nhost: a b\r\n\r\n'),
    sendAndHold('NOT HTTP\n\n'),
  ]);
  assert.deepEqual(answers.map((a) => a.slice(0, 12)), ['HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 400', 'HTTP/1.1 400']);
  // The clients still hold their sockets; the sidecar must let go of its side by itself.
  const now = await fdsSettleTo(sk.pid, base, 4000);
  assert.ok(now <= base, `sidecar fds ${now}, ${base} before the four connections: downstream sockets held`);
});
