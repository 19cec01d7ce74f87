// Regression: a connection error from an HTTP/2 upstream (here a DATA frame on stream 0)
// poisoned the endpoint for good. nghttp2 ends the session itself and sends GOAWAY, but Node
// 20 tells the JS layer nothing (no 'error', no 'goaway', no 'close') and stops reading the
// socket. Skiff kept the connection in its pool: the stream in flight hung until the route
// timeout and its slot was never given back (cancelling it needs a frame node can no longer
// send), every later request on it failed at once with "New streams cannot be created after
// receiving a GOAWAY" (502), the connection never left the pool, and its socket sat in
// CLOSE-WAIT. Now a stream that times out makes its connection prove it is alive with a PING
// (protocols/h2/upstream.ts `H2Conn.probe`); no answer, and the socket is destroyed, which
// fails what was on it and frees the slot and the fd. A stream that cannot be opened because
// the session is closed also takes the connection out of the pool. Found by
// test/e2e/upstream-faults.test.ts.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, it } from 'node:test';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

const ROUTE_TIMEOUT_MS = 400;
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
  upstream.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    if (headers[':path'] !== '/junk') {
      stream.respond({ ':status': 200 });
      stream.end('ok\n');
      return;
    }
    stream.respond({ ':status': 200 });
    stream.write(Buffer.alloc(16 * 1024, 0x78));
    setTimeout(() => {
      // A DATA frame on stream 0, written under node:http2: a connection error for the client.
      const raw = sockets.get(stream.session?.socket?.remotePort ?? -1);
      raw?.write(Buffer.from([0, 0, 4, 0, 0, 0, 0, 0, 0, 0x6a, 0x75, 0x6e, 0x6b]));
    }, 50);
  });
  const upPort = await new Promise<number>((r) => upstream.listen(0, '127.0.0.1', () => r((upstream.address() as net.AddressInfo).port)));
  const [l, admin] = await freePorts(2);
  listen = l;
  sk = await startSkiff(`admin: { address: 127.0.0.1:${admin} }
listeners:
  - { name: in, address: 127.0.0.1:${listen}, protocols: [http1], routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app, timeout: ${ROUTE_TIMEOUT_MS}ms }
clusters:
  - name: app
    protocol: h2c
    endpoints: [127.0.0.1:${upPort}]
    retries: { attempts: 0 }
    outlierDetection: null
`);
});

after(async () => {
  await sk.stop();
  for (const s of sockets.values()) s.destroy();
  await new Promise((r) => upstream.close(r));
});

function get(path: string): Promise<{ status: number; isComplete: boolean }> {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port: listen, path, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, isComplete: res.complete }));
        res.on('error', () => resolve({ status: res.statusCode ?? 0, isComplete: false }));
      })
      .on('error', () => resolve({ status: 0, isComplete: false }));
  });
}

interface PoolStats {
  connections: number;
  activeStreams: number;
}

async function pools(): Promise<PoolStats[]> {
  const res = await fetch(`http://127.0.0.1:${sk.adminPort}/stats`);
  return ((await res.json()) as { pools: PoolStats[] }).pools;
}

it('after an HTTP/2 connection error the endpoint recovers, and no stream slot or socket is left behind', async () => {
  assert.equal((await get('/warm')).status, 200);
  const junk = await get('/junk');
  assert.equal(junk.status, 200);
  assert.equal(junk.isComplete, false, 'the response in flight is cut');
  // Requests sent before the dead connection is found out may fail; within a few seconds
  // they must succeed again (without the fix: 502 "New streams cannot be created..." for good).
  const deadline = Date.now() + 6000;
  let last = await get('/ok');
  while (last.status !== 200 && Date.now() < deadline) {
    assert.ok(last.status === 502 || last.status === 504, `status ${last.status}`);
    await new Promise((r) => setTimeout(r, 100));
    last = await get('/ok');
  }
  assert.equal(last.status, 200, 'the endpoint serves again');
  let p = await pools();
  const until = Date.now() + 3000;
  while (p.some((x) => x.activeStreams !== 0 || x.connections > 1) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
    p = await pools();
  }
  assert.deepEqual(p.map((x) => [x.connections, x.activeStreams]), [[1, 0]], 'one live connection, no stream slot held');
  // The dead connection's socket is closed, not left in CLOSE-WAIT.
  const byUs = (): string[] => spawnSync('ss', ['-tanp', 'state', 'close-wait'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.includes(`pid=${sk.pid},`));
  const fdDeadline = Date.now() + 3000;
  while (byUs().length > 0 && Date.now() < fdDeadline) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(byUs(), [], 'no socket of the sidecar in CLOSE-WAIT');
});
