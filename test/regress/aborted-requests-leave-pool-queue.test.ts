// Regression: a request aborted by its client while it waited for an upstream connection
// stayed in the endpoint pool's wait queue (and in the cluster's pendingRequests) until a
// connection was handed to it and given back. A burst of such requests (HTTP/2 rapid reset,
// test/e2e/h2-attacks.test.ts) filled the queue and made well-behaved requests fail with 503
// SKIFF_ERR_OVERLOADED. Now an aborted or failed request leaves the queue at once.
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, it } from 'node:test';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

let upstream: http.Server;
let sk: SkiffProcess;
let listen = 0;

before(async () => {
  upstream = http.createServer((req, res) => {
    req.resume();
    setTimeout(() => res.end('ok'), req.url === '/hold' ? 1500 : 0);
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  const upPort = (upstream.address() as AddressInfo).port;
  const [l, admin] = await freePorts(2);
  listen = l;
  // One upstream connection, a queue of 30: the held request takes the connection, the rest wait.
  sk = await startSkiff(`admin: { address: 127.0.0.1:${admin} }
listeners:
  - { name: in, address: 127.0.0.1:${listen}, protocols: [http1, h2c], routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app }
clusters:
  - name: app
    protocol: http1
    endpoints: [127.0.0.1:${upPort}]
    maxConnectionsPerEndpoint: 1
    maxPendingPerEndpoint: 30
    retries: { attempts: 0 }
`);
});

after(async () => {
  await sk.stop();
  upstream.closeAllConnections();
  await new Promise<void>((r) => upstream.close(() => r()));
});

interface PoolStats { pending: number }

async function pending(): Promise<number> {
  const stats = (await (await fetch(`http://127.0.0.1:${sk.adminPort}/stats`)).json()) as { pools: PoolStats[] };
  return stats.pools.reduce((n, p) => n + p.pending, 0);
}

it('requests reset while waiting for a connection leave the queue at once', async () => {
  const session = http2.connect(`http://127.0.0.1:${listen}`);
  session.on('error', () => undefined);
  const held = session.request({ ':path': '/hold' });
  held.resume();
  const heldDone = new Promise<number>((resolve) => held.on('response', (h) => resolve(Number(h[':status']))));
  await new Promise((r) => setTimeout(r, 100));
  // 25 requests queue behind the held one, then their client resets them.
  const waiting = Array.from({ length: 25 }, () => {
    const s = session.request({ ':path': '/queued' });
    s.on('error', () => undefined);
    s.resume();
    return s;
  });
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(await pending(), 25, 'they wait for the one connection');
  for (const s of waiting) s.close(http2.constants.NGHTTP2_CANCEL);
  const deadline = Date.now() + 1000;
  let left = await pending();
  while (left > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 25));
    left = await pending();
  }
  assert.equal(left, 0, 'the queue is empty again long before the held request finishes');
  // The queue has room again: 20 new requests are accepted (no 503) and served after the held one.
  const statuses = await Promise.all(Array.from({ length: 20 }, () => new Promise<number>((resolve) => {
    const s = session.request({ ':path': '/after' });
    s.on('response', (h) => resolve(Number(h[':status'])));
    s.on('error', () => resolve(0));
    s.resume();
  })));
  assert.deepEqual(new Set(statuses), new Set([200]), `statuses: ${statuses.join(',')}`);
  assert.equal(await heldDone, 200);
  session.close();
});
