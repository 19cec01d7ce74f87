// Smoke test of the end-to-end fixtures themselves, with no sidecar involved: each upstream
// is hit directly with fetch / undici / node:http2 / the gRPC client / curl / nghttp, so a
// failing e2e test can blame the sidecar, not its fixtures.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import http2 from 'node:http2';
import { after, before, describe, it } from 'node:test';
import type * as grpc from '@grpc/grpc-js';
import { Agent, request } from 'undici';
import { ensureCerts } from '../../helpers/certs.js';
import { curl, isNghttpInstalled, nghttp, parseHeaderDump, rssOfPid } from '../../helpers/clients.js';
import { repoPath } from '../../helpers/repo-root.js';
import { adminPortFromYaml, freePort, freePorts, startSkiff } from '../../helpers/skiff.js';
import {
  grpcClient,
  patternBytes,
  patternSha256,
  startGrpcUpstream,
  startH1Upstream,
  startH2Upstream,
  type EchoMsg,
  type H1Upstream,
  type H2Upstream,
  type Upstream,
} from '../../helpers/upstreams.js';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** One HTTP/2 request with node:http2; resolves with status, headers, body, trailers. */
function h2Get(session: http2.ClientHttp2Session, path: string): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: Buffer; trailers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (h) => {
      headers = h;
    });
    req.on('trailers', (t) => {
      trailers = t;
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ status: Number(headers[':status']), headers, body: Buffer.concat(chunks), trailers }));
    req.on('error', reject);
  });
}

describe('certs', () => {
  it('makes a CA, a server and a client cert, once', () => {
    const a = ensureCerts();
    for (const f of [a.ca, a.cert, a.key, a.clientCert, a.clientKey]) assert.ok(existsSync(f), f);
    assert.match(a.pem.cert.toString(), /BEGIN CERTIFICATE/);
    assert.equal(ensureCerts(), a);
  });
});

describe('h1 upstream', () => {
  let up: H1Upstream;
  before(async () => {
    up = await startH1Upstream();
  });
  after(() => up.close());

  it('echoes body, method, path and raw headers', async () => {
    const res = await fetch(`${up.url}/echo?q=1`, { method: 'POST', body: 'hello', headers: { 'X-Test': 'yes' } });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'hello');
    assert.equal(res.headers.get('x-echo-method'), 'POST');
    assert.equal(res.headers.get('x-echo-path'), '/echo?q=1');
    const raw = JSON.parse(res.headers.get('x-echo-headers') ?? '[]') as string[];
    assert.equal(raw[raw.findIndex((h) => h.toLowerCase() === 'x-test') + 1], 'yes');
    const rec = up.requests.find((r) => r.path === '/echo?q=1');
    assert.ok(rec !== undefined);
    assert.equal(rec.bodyLength, 5);
    assert.equal(rec.isComplete, true);
  });

  it('answers /status/NNN, /slow/MS and the default route', async () => {
    assert.equal((await fetch(`${up.url}/status/418`)).status, 418);
    assert.equal((await fetch(`${up.url}/status/204`)).status, 204);
    const t0 = Date.now();
    assert.equal(await (await fetch(`${up.url}/slow/100`)).text(), 'slow');
    assert.ok(Date.now() - t0 >= 90);
    assert.equal(await (await fetch(`${up.url}/anything`)).text(), 'ok');
  });

  it('streams /bytes/N in the pattern', async () => {
    const n = 300_000;
    const body = new Uint8Array(await (await fetch(`${up.url}/bytes/${n}`)).arrayBuffer());
    assert.equal(body.length, n);
    assert.equal(sha256(body), patternSha256(n));
    assert.deepEqual(Buffer.from(body.subarray(0, 1000)), patternBytes(1000));
  });

  it('counts and hashes a /sink upload', async () => {
    const payload = patternBytes(1_000_000);
    const res = await fetch(`${up.url}/sink?delay=1`, { method: 'PUT', body: payload });
    assert.deepEqual(await res.json(), { bytes: payload.length, sha256: sha256(payload) });
  });

  it('sends trailers, big headers and cuts /reset-mid-body (curl)', async () => {
    const tr = await curl([`${up.url}/trailers`]);
    assert.equal(tr.status, 200);
    assert.deepEqual(tr.trailers['x-trailer-a'], ['1']);
    assert.equal(tr.httpVersion, '1.1');

    const big = await curl([`${up.url}/big-headers`]);
    assert.equal(big.headers['x-big']?.[0]?.length, 20 * 1024);

    const cut = await curl([`${up.url}/reset-mid-body`]);
    assert.equal(cut.status, 200);
    assert.notEqual(cut.exitCode, 0);
    assert.equal(cut.body.length, 10 * 1024);
  });

  it('serves https and checks client certs with mtls', async () => {
    const certs = ensureCerts();
    const tls = await startH1Upstream({ mtls: true });
    try {
      const res = await curl(['--cacert', certs.ca, '--cert', certs.clientCert, '--key', certs.clientKey, `${tls.url}/echo`]);
      assert.equal(res.status, 200, res.stderr);
      assert.match(tls.requests[0]?.tlsPeer ?? '', /URI:spiffe:\/\/skiff\.test\/ns\/default\/sa\/client/);
      const anon = await curl(['--cacert', certs.ca, `${tls.url}/`]);
      assert.notEqual(anon.exitCode, 0);
    } finally {
      await tls.close();
    }
  });
});

describe('h2 upstream', () => {
  let up: H2Upstream;
  before(async () => {
    up = await startH2Upstream();
  });
  after(() => up.close());

  it('speaks h2c with prior knowledge (curl)', async () => {
    const res = await curl(['--http2-prior-knowledge', '--data-binary', 'abc', `${up.url}/echo`]);
    assert.equal(res.httpVersion, '2');
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'abc');
    assert.deepEqual(res.headers['x-echo-method'], ['POST']);
  });

  it('sends trailers, streams bytes, resets mid-body (node:http2)', async () => {
    const session = http2.connect(up.url);
    try {
      const tr = await h2Get(session, '/trailers');
      assert.equal(tr.status, 200);
      assert.equal(tr.trailers['x-trailer-a'], '1');
      const bytes = await h2Get(session, '/bytes/200000');
      assert.equal(sha256(bytes.body), patternSha256(200_000));
      const big = await h2Get(session, '/big-headers');
      assert.equal(String(big.headers['x-big']).length, 20 * 1024);
      await assert.rejects(h2Get(session, '/reset-mid-body'), /NGHTTP2_INTERNAL_ERROR/);
    } finally {
      session.close();
    }
  });

  it('counts sessions and concurrent streams, honouring maxConcurrentStreams', async () => {
    const limited = await startH2Upstream({ maxConcurrentStreams: 2 });
    const session = http2.connect(limited.url);
    try {
      // Streams opened before the server's SETTINGS arrive may exceed its limit and be
      // refused (REFUSED_STREAM); the sidecar's pool has the same rule.
      await new Promise((resolve) => session.once('remoteSettings', resolve));
      const all = await Promise.all(Array.from({ length: 5 }, () => h2Get(session, '/slow/50')));
      assert.ok(all.every((r) => r.status === 200));
      const s = limited.stats();
      assert.equal(s.sessions, 1);
      assert.equal(s.totalStreams, 5);
      assert.equal(s.peakConcurrentStreams, 2);
    } finally {
      session.close();
      await limited.close();
    }
  });

  it('serves h2 over TLS via ALPN (undici allowH2)', async () => {
    const tls = await startH2Upstream({ tls: true });
    const agent = new Agent({ allowH2: true, connect: { ca: ensureCerts().pem.ca } });
    try {
      const res = await request(`${tls.url}/bytes/100000`, { dispatcher: agent });
      assert.equal(res.statusCode, 200);
      assert.equal(sha256(new Uint8Array(await res.body.arrayBuffer())), patternSha256(100_000));
      assert.equal(tls.requests[0]?.protocol, 'h2');
      const c = await curl(['--http2', '--cacert', ensureCerts().ca, `${tls.url}/status/503`]);
      assert.equal(c.status, 503);
      assert.equal(c.httpVersion, '2');
    } finally {
      await agent.close();
      await tls.close();
    }
  });

  it('works with nghttp', { skip: !isNghttpInstalled() && 'nghttp not installed' }, async () => {
    const res = await nghttp(`${up.url}/echo`, { data: 'from nghttp', headers: { 'x-n': '1' } });
    assert.equal(res.status, 200, res.stderr);
    assert.equal(res.body.toString(), 'from nghttp');
    assert.deepEqual(res.headers['x-echo-method'], ['POST']);
  });
});

describe('grpc upstream', () => {
  let up: Upstream;
  before(async () => {
    up = await startGrpcUpstream();
  });
  after(() => up.close());

  it('echoes unary calls and fails "fail" with NOT_FOUND and a trailer', async () => {
    const client = grpcClient(up.port);
    try {
      const ok = await client.unary({ text: 'hi', n: 7 }, { metadata: { 'x-md': 'v' } });
      assert.equal(ok.error, null);
      assert.deepEqual(ok.response, { text: 'hi', n: 7 });
      assert.equal(ok.status.code, 0);

      const bad = await client.unary({ text: 'fail' });
      assert.equal(bad.status.code, 5);
      assert.equal(bad.status.details, 'nope');
      assert.deepEqual(bad.status.metadata.get('x-detail'), ['why']);

      const rec = up.requests[0];
      assert.equal(rec?.path, '/skiff.test.Echo/Unary');
      assert.equal(rec.rawHeaders[rec.rawHeaders.indexOf('x-md') + 1], 'v');
    } finally {
      client.close();
    }
  });

  it('echoes a bidi stream with n + 1', async () => {
    const client = grpcClient(up.port);
    try {
      const call = client.bidi();
      const got: EchoMsg[] = [];
      const done = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
      call.on('data', (m: EchoMsg) => got.push(m));
      for (let i = 0; i < 3; i++) call.write({ text: `m${i}`, n: i });
      call.end();
      const status = await done;
      assert.equal(status.code, 0);
      assert.deepEqual(got, [{ text: 'm0', n: 1 }, { text: 'm1', n: 2 }, { text: 'm2', n: 3 }]);
    } finally {
      client.close();
    }
  });
});

describe('helpers', () => {
  it('freePort / freePorts give usable, distinct ports', async () => {
    const p = await freePort({ udp: true });
    assert.ok(p > 0 && p < 65536);
    const ps = await freePorts(3);
    assert.equal(new Set(ps).size, 3);
  });

  it('finds the admin port in block and flow YAML', () => {
    assert.equal(adminPortFromYaml('admin: { address: 127.0.0.1:9901 }\n'), 9901);
    assert.equal(adminPortFromYaml('listeners: []\nadmin:\n  address: "127.0.0.1:1234"\n'), 1234);
    assert.throws(() => adminPortFromYaml('listeners: []\n'));
  });

  it('parses a curl header dump with 1xx and trailers', () => {
    const d = parseHeaderDump('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nA: 1\r\na: 2\r\n\r\nX-T: 3\r\n');
    assert.equal(d.status, 200);
    assert.deepEqual(d.headers, { a: ['1', '2'] });
    assert.deepEqual(d.trailers, { 'x-t': ['3'] });
  });

  it('reads VmRSS', () => {
    const rss = rssOfPid(process.pid);
    assert.ok(rss > 1024 * 1024);
  });

  it('startSkiff waits for /ready and stops by PID (fake sidecar)', async () => {
    const adminPort = await freePort();
    const entry = repoPath('dist', 'test', 'fixtures', 'fake-sidecar.js');
    const sk = await startSkiff(`admin: { address: 127.0.0.1:${adminPort} }\n`, { entry });
    assert.equal(sk.adminPort, adminPort);
    assert.equal((await fetch(`http://127.0.0.1:${adminPort}/ready`)).status, 200);
    assert.equal(await sk.stop(), 0);
    assert.match(sk.stdout(), /SIGTERM/);
  });

  it('startSkiff fails with the child stderr when it dies early', async () => {
    const adminPort = await freePort();
    const entry = repoPath('dist', 'test', 'fixtures', 'fake-sidecar.js');
    await assert.rejects(startSkiff(`fail: true\nadmin:\n  address: 127.0.0.1:${adminPort}\n`, { entry }), /boom/);
  });
});
