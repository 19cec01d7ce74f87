// What a sidecar loads depends on what its config uses: the QUIC binding (a native addon, with
// the HTTP/3 modules ~6 MiB of RSS) is mapped into the process only when a listener serves
// HTTP/3 (or, at its first connect, an HTTP/3 cluster). Seen from outside through
// /proc/PID/maps, the kernel's list of the files a process has mapped (docs/DESIGN.md, decision
// log, "HTTP/3 modules loaded on demand").
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ensureCerts, type TestCerts } from '../helpers/certs.js';
import { h1GetText } from '../helpers/clients.js';
import { H3TestClient } from '../helpers/h3-client.js';
import { freePort, freePorts, plainAndTlsConfig, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

const HOST = '127.0.0.1';
/** The file name of @matrixai/quic's prebuilt addon (node_modules/@matrixai/quic-linux-x64/node.napi.node). */
const QUIC_ADDON = /quic-linux-x64\/node\.napi\.node$/m;

function hasQuicAddon(pid: number): boolean {
  return QUIC_ADDON.test(readFileSync(`/proc/${pid}/maps`, 'utf8'));
}

describe('modules loaded on demand', () => {
  let certs: TestCerts;
  let upstream: http.Server;
  let upPort = 0;

  before(async () => {
    certs = ensureCerts();
    upstream = http.createServer((req, res) => res.end(`ok ${req.url ?? ''}`));
    await new Promise<void>((r) => upstream.listen(0, HOST, r));
    upPort = (upstream.address() as net.AddressInfo).port;
  });

  after(async () => {
    upstream?.closeAllConnections();
    await new Promise((r) => upstream?.close(r));
  });

  it('without HTTP/3 in the config the QUIC binding is never mapped, before or after serving', async () => {
    const [admin, plain] = await freePorts(2);
    const sk: SkiffProcess = await startSkiff(`admin: { address: ${HOST}:${admin} }
listeners:
  - { name: plain, address: ${HOST}:${plain}, protocols: [http1, h2c], routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app }
clusters:
  - { name: app, protocol: http1, endpoints: [${HOST}:${upPort}] }
`);
    try {
      assert.equal(hasQuicAddon(sk.pid), false, 'mapped at start');
      const r = await h1GetText(plain, '/x', false, 5000);
      assert.deepEqual(r, { status: 200, body: 'ok /x' });
      assert.equal(hasQuicAddon(sk.pid), false, 'mapped after a request');
    } finally {
      await sk.stop();
    }
  });

  it('an HTTP/3 listener loads it at start and serves HTTP/3', async () => {
    const tls = await freePort({ udp: true });
    const [admin, plain] = await freePorts(2);
    const sk = await startSkiff(plainAndTlsConfig({ admin, plain, tls, upstream: upPort, cert: certs.cert, key: certs.key }));
    try {
      assert.equal(hasQuicAddon(sk.pid), true, 'not mapped once /ready answered');
      const h3 = await H3TestClient.connect(HOST, tls, certs.pem.ca);
      try {
        const r = await h3.request('/h3');
        assert.equal(r.status, 200);
        assert.equal(r.body.toString('utf8'), 'ok /h3');
      } finally {
        await h3.close().catch(() => undefined);
      }
      // HTTPS responses on the same listener advertise the HTTP/3 port, set once it was bound.
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
        https.get({ host: HOST, port: tls, path: '/', agent: false, ca: certs.pem.ca, servername: 'localhost' }, resolve).on('error', reject);
      });
      res.resume();
      assert.equal(res.statusCode, 200);
      assert.equal(res.headers['alt-svc'], `h3=":${tls}"`);
    } finally {
      await sk.stop();
    }
  });
});
