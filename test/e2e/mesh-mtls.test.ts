// Mesh identity and mutual TLS between sidecars (issue 5, items 2 and 3), end to end: three
// real sidecars (dist/src/cli.js), a real HTTP/1.1 service, curl and node clients.
//
//   app (HTTP/1.1) -> "frontend" (outbound [http1, h2c]) -> HTTP/2 over mTLS ->
//   "backend" (inbound-mesh [h2], tls: mesh, authorize: [frontend]) -> HTTP/1.1 service
//
// - byte-exact GET and a 1 MiB POST across the hop; the service sees the forwarding headers;
//   the backend's access log and metrics carry the frontend's SPIFFE ID;
// - 100 concurrent requests share one connection to the backend;
// - a peer from another CA is refused at the handshake, an unlisted peer of the same CA gets
//   403, both logged with the identity they presented;
// - the frontend refuses a backend whose SPIFFE ID is not `peerIdentity` (a third sidecar,
//   "impostor", holding the intruder identity): 502 naming the mismatch;
// - HTTP/1.1 over mesh TLS works too (ALPN http/1.1);
// - rotation: the backend's files replaced by atomic rename under load, no failed request,
//   new connections get the new serial; a broken file is rejected and the old one serves on.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { curl } from '../helpers/clients.js';
import { SPIFFE, copyIdentity, ensureMeshCerts, type CertKey, type IdentityFiles, type MeshCerts } from '../helpers/mesh-certs.js';
import { scrapeMetrics, sampleValue, sumSamples } from '../helpers/prometheus.js';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { patternBytes, patternSha256, startH1Upstream, type H1Upstream } from '../helpers/upstreams.js';

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await delay(25);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** Skiff's own log lines (pino JSON on stderr). */
function logLines(p: SkiffProcess): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of p.stderr().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a partial last line
    }
  }
  return out;
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 200 });

function get(port: number, path: string, host = 'backend.mesh'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent, headers: { host } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

function header(raw: readonly string[], name: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) return raw[i + 1];
  return undefined;
}

/** Opens a TLS connection to a mesh port as `id` and returns the server certificate's serial. */
function serverSerial(port: number, id: CertKey, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port,
      ca: readFileSync(ca),
      cert: readFileSync(id.cert),
      key: readFileSync(id.key),
      ALPNProtocols: ['h2'],
    });
    s.once('secureConnect', () => {
      const serial = s.getPeerCertificate().serialNumber;
      s.destroy();
      resolve(serial.toUpperCase());
    });
    s.once('error', reject);
  });
}

/** One HTTP/2 request over a fresh mTLS connection as `id` (what a peer sidecar does). */
function h2Get(port: number, id: CertKey, ca: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca: readFileSync(ca), cert: readFileSync(id.cert), key: readFileSync(id.key) });
    session.on('error', reject);
    const req = session.request({ ':path': path, ':authority': 'backend.mesh' });
    let status = 0;
    const chunks: Buffer[] = [];
    req.on('response', (h) => {
      status = Number(h[':status']);
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      session.close();
      resolve({ status, body: Buffer.concat(chunks).toString('utf8') });
    });
    req.on('error', reject);
    req.end();
  });
}

function serialOf(path: string): string {
  return new X509Certificate(readFileSync(path)).serialNumber.toUpperCase();
}

function replaceAtomically(path: string, content: Buffer | string): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, content);
  renameSync(tmp, path);
}

describe('mesh mTLS between sidecars', () => {
  let certs: MeshCerts;
  let service: H1Upstream;
  let frontend: SkiffProcess;
  let backend: SkiffProcess;
  let impostor: SkiffProcess;
  let backendIdentity: IdentityFiles;
  let scratch: string;
  let accessLogPath: string;
  let fOut: number;
  let bMesh: number;
  let bMeshH1: number;
  let bAdmin: number;

  before(async () => {
    certs = ensureMeshCerts();
    service = await startH1Upstream();
    backendIdentity = copyIdentity('backend');
    scratch = mkdtempSync(join(tmpdir(), 'skiff-mesh-e2e-'));
    accessLogPath = join(scratch, 'backend-access.log');
    const [fAdmin, fPort, bAdminPort, bPort, bPortH1, iAdmin, iPort] = await freePorts(7);
    fOut = fPort;
    bMesh = bPort;
    bMeshH1 = bPortH1;
    bAdmin = bAdminPort;

    backend = await startSkiff(`admin: { address: "127.0.0.1:${bAdmin}" }
identity:
  cert: ${backendIdentity.cert}
  key: ${backendIdentity.key}
  trustBundle: ${backendIdentity.trustBundle}
telemetry:
  serviceName: backend
  accessLog: { enabled: true, path: ${accessLogPath} }
listeners:
  - name: inbound-mesh
    address: 127.0.0.1:${bMesh}
    protocols: [h2]
    tls: mesh
    authorize: [${SPIFFE.frontend}]
    routes: inbound
  - name: inbound-mesh-h1
    address: 127.0.0.1:${bMeshH1}
    protocols: [http1]
    tls: mesh
    authorize: [${SPIFFE.frontend}]
    routes: inbound
routes:
  inbound:
    - match: { prefix: /ops }
      cluster: service
      authorize: [spiffe://example.org/ns/ops/sa/admin]
    - match: { prefix: / }
      cluster: service
clusters:
  - name: service
    protocol: http1
    endpoints: [127.0.0.1:${service.port}]
`);

    // Holds the intruder identity (same CA): the frontend must not take it for the backend.
    impostor = await startSkiff(`admin: { address: "127.0.0.1:${iAdmin}" }
identity:
  cert: ${certs.intruder.cert}
  key: ${certs.intruder.key}
  trustBundle: ${certs.ca}
listeners:
  - name: inbound-mesh
    address: 127.0.0.1:${iPort}
    protocols: [h2]
    tls: mesh
    routes: inbound
routes:
  inbound:
    - match: { prefix: / }
      cluster: service
clusters:
  - name: service
    protocol: http1
    endpoints: [127.0.0.1:${service.port}]
`);

    const meshCluster = (name: string, protocol: string, port: number): string => `  - name: ${name}
    protocol: ${protocol}
    tls: mesh
    peerIdentity: ${SPIFFE.backend}
    endpoints: [127.0.0.1:${port}]
    retries: { attempts: 0 }
    outlierDetection: null
`;
    frontend = await startSkiff(`admin: { address: "127.0.0.1:${fAdmin}" }
identity:
  cert: ${certs.frontend.cert}
  key: ${certs.frontend.key}
  trustBundle: ${certs.ca}
telemetry:
  serviceName: frontend
listeners:
  - name: outbound
    direction: outbound
    address: 127.0.0.1:${fOut}
    protocols: [http1, h2c]
    routes: outbound
routes:
  outbound:
    - match: { authority: impostor.mesh }
      cluster: impostor
    - match: { authority: h1.backend.mesh }
      cluster: backend-h1
    - match: { authority: fresh.backend.mesh }
      cluster: backend-fresh
    - match: { prefix: / }
      cluster: backend
clusters:
${meshCluster('backend', 'h2', bMesh)}${meshCluster('backend-fresh', 'h2', bMesh)}${meshCluster('backend-h1', 'http1', bMeshH1)}${meshCluster('impostor', 'h2', iPort)}`);
  });

  after(async () => {
    agent.destroy();
    await Promise.all([frontend?.stop(), backend?.stop(), impostor?.stop()]);
    await service?.close();
    if (backendIdentity !== undefined) rmSync(backendIdentity.dir, { recursive: true, force: true });
    if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
  });

  it('logs each sidecar\'s SPIFFE ID at start', async () => {
    await waitFor('the start lines', () => logLines(frontend).some((l) => l.msg === 'mesh identity loaded') && logLines(backend).some((l) => l.msg === 'mesh identity loaded'));
    const f = logLines(frontend).find((l) => l.msg === 'mesh identity loaded');
    assert.equal(f?.spiffeId, SPIFFE.frontend);
    const b = logLines(backend).find((l) => l.msg === 'mesh identity loaded');
    assert.equal(b?.spiffeId, SPIFFE.backend);
    assert.equal(b?.serial, serialOf(certs.backend.cert));
  });

  it('carries a GET byte-exact over HTTP/2 + mTLS, with the forwarding headers', async () => {
    const n = 300_000;
    const res = await curl([`http://127.0.0.1:${fOut}/bytes/${n}`, '-H', 'host: backend.mesh']);
    assert.equal(res.status, 200, res.stderr);
    assert.equal(res.httpVersion, '1.1');
    assert.ok(res.body.equals(patternBytes(n)), 'body differs');

    const echo = await curl([`http://127.0.0.1:${fOut}/echo?x=1`, '-H', 'host: backend.mesh', '-H', 'x-request-id: mesh-get-1']);
    assert.equal(echo.status, 200);
    const seen = service.requests.find((r) => header(r.rawHeaders, 'x-request-id') === 'mesh-get-1');
    assert.ok(seen !== undefined, 'the service saw the request');
    assert.equal(seen.path, '/echo?x=1');
    assert.equal(header(seen.rawHeaders, 'host'), 'backend.mesh');
    // Appended by each sidecar; the backend saw the request over TLS.
    assert.equal(header(seen.rawHeaders, 'x-forwarded-for'), '127.0.0.1, 127.0.0.1');
    assert.equal(header(seen.rawHeaders, 'x-forwarded-proto'), 'https');
  });

  it('carries a 1 MiB POST intact (sha256 at the service)', async () => {
    const n = 1024 * 1024;
    const file = join(scratch, 'post.bin');
    writeFileSync(file, patternBytes(n));
    const res = await curl(['-X', 'POST', '--data-binary', `@${file}`, '-H', 'content-type: application/octet-stream', '-H', 'host: backend.mesh', `http://127.0.0.1:${fOut}/sink`]);
    assert.equal(res.status, 200, res.stderr);
    assert.deepEqual(JSON.parse(res.body.toString('utf8')), { bytes: n, sha256: patternSha256(n) });
  });

  it('shows the frontend\'s SPIFFE ID in the backend\'s access log and metrics', async () => {
    let line: Record<string, unknown> | undefined;
    await waitFor('an access log line at the backend', () => {
      let text = '';
      try {
        text = readFileSync(accessLogPath, 'utf8');
      } catch {
        return false;
      }
      line = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.path === '/sink');
      return line !== undefined;
    });
    assert.equal(line?.downstream_peer_principal, SPIFFE.frontend);
    assert.equal(line?.listener, 'inbound-mesh');
    const families = await scrapeMetrics(`http://127.0.0.1:${bAdmin}/metrics`);
    const fromFrontend = sumSamples(families, 'istio_requests_total', { source_principal: SPIFFE.frontend, reporter: 'destination' });
    assert.ok(fromFrontend >= 3, `istio_requests_total{source_principal=frontend} = ${fromFrontend}`);
  });

  it('sends 100 concurrent requests over one connection to the backend', async () => {
    const opened = async (): Promise<number> =>
      sampleValue(await scrapeMetrics(`http://127.0.0.1:${bAdmin}/metrics`), 'istio_tcp_connections_opened_total', { listener: 'inbound-mesh' }) ?? -1;
    const before = await opened();
    assert.equal(before, 1, 'the earlier requests used one connection');
    const peakBefore = service.stats().peakConcurrentRequests;
    const replies = await Promise.all(Array.from({ length: 100 }, () => get(fOut, '/slow/300')));
    assert.deepEqual(replies.map((r) => r.status), Array<number>(100).fill(200));
    assert.ok(service.stats().peakConcurrentRequests > Math.max(peakBefore, 20), `they overlapped (peak ${service.stats().peakConcurrentRequests})`);
    assert.equal(await opened(), 1, 'still one connection at the backend');
  });

  it('carries HTTP/1.1 over mesh TLS as well (ALPN http/1.1)', async () => {
    const res = await curl([`http://127.0.0.1:${fOut}/echo`, '-H', 'host: h1.backend.mesh', '-H', 'x-request-id: mesh-h1-1']);
    assert.equal(res.status, 200, res.body.toString());
    await waitFor('the access log line', () => {
      try {
        return readFileSync(accessLogPath, 'utf8').includes('mesh-h1-1');
      } catch {
        return false;
      }
    });
    const line = readFileSync(accessLogPath, 'utf8').split('\n').filter((l) => l.includes('mesh-h1-1')).map((l) => JSON.parse(l) as Record<string, unknown>)[0];
    assert.equal(line.listener, 'inbound-mesh-h1');
    assert.equal(line.protocol, 'HTTP/1.1');
    assert.equal(line.downstream_peer_principal, SPIFFE.frontend);
  });

  it('refuses a peer certificate from another CA at the handshake, logging the identity it presented', async () => {
    const seenBefore = service.requests.length;
    const res = await curl(['--http2', '--cacert', certs.ca, '--cert', certs.rogue.cert, '--key', certs.rogue.key, `https://127.0.0.1:${bMesh}/echo`]);
    assert.equal(res.status, 0, 'no response');
    assert.notEqual(res.exitCode, 0);
    assert.equal(service.requests.length, seenBefore, 'nothing reached the service');
    await waitFor('the refusal log line', () =>
      logLines(backend).some((l) => l.msg === 'mesh handshake refused: peer certificate not trusted' && l.peer === SPIFFE.frontend));
    const line = logLines(backend).find((l) => l.msg === 'mesh handshake refused: peer certificate not trusted' && l.peer === SPIFFE.frontend);
    assert.match(String(line?.reason), /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/);
    assert.equal(line?.listener, 'inbound-mesh');

    // No client certificate at all: refused too.
    const bare = await curl(['--http2', '--cacert', certs.ca, `https://127.0.0.1:${bMesh}/echo`]);
    assert.equal(bare.status, 0);
    await waitFor('the no-certificate log line', () => logLines(backend).some((l) => l.reason === 'NO_CLIENT_CERTIFICATE'));
  });

  it('answers 403 to a peer of the same CA that is not on the allow list, logging its identity', async () => {
    const res = await curl(['--http2', '--cacert', certs.ca, '--cert', certs.intruder.cert, '--key', certs.intruder.key, `https://127.0.0.1:${bMesh}/echo`]);
    assert.equal(res.status, 403, res.stderr);
    assert.deepEqual(res.headers['x-skiff-error'], ['SKIFF_ERR_FORBIDDEN']);
    assert.match(res.body.toString('utf8'), new RegExp(`peer ${SPIFFE.intruder} is not allowed on listener inbound-mesh`));
    await waitFor('the denial log line', () => logLines(backend).some((l) => l.msg === 'request denied: peer not authorized' && l.peer === SPIFFE.intruder));
  });

  it('applies a route\'s own allow list on top of the listener\'s: 403 for a peer allowed on the listener only', async () => {
    const ops = await curl(['--http2', '--cacert', certs.ca, '--cert', certs.frontend.cert, '--key', certs.frontend.key, `https://127.0.0.1:${bMesh}/ops/restart`]);
    assert.equal(ops.status, 403, ops.stderr);
    assert.match(ops.body.toString('utf8'), new RegExp(`peer ${SPIFFE.frontend} is not allowed on this route`));
    const ok = await curl(['--http2', '--cacert', certs.ca, '--cert', certs.frontend.cert, '--key', certs.frontend.key, `https://127.0.0.1:${bMesh}/echo`]);
    assert.equal(ok.status, 200, 'the same peer on another route is let through');
  });

  it('refuses a backend whose SPIFFE ID is not the cluster\'s peerIdentity: 502 naming the mismatch', async () => {
    const res = await curl([`http://127.0.0.1:${fOut}/echo`, '-H', 'host: impostor.mesh', '-H', 'x-request-id: mesh-impostor-1']);
    assert.equal(res.status, 502);
    assert.deepEqual(res.headers['x-skiff-error'], ['SKIFF_ERR_UPSTREAM_CONNECT']);
    const body = res.body.toString('utf8');
    assert.match(body, /peer identity mismatch/);
    assert.ok(body.includes(`presented ${SPIFFE.intruder}, expected ${SPIFFE.backend}`), body);
    assert.equal(service.requests.some((r) => header(r.rawHeaders, 'x-request-id') === 'mesh-impostor-1'), false, 'nothing reached the service');
  });

  it('rotates the backend\'s certificate under load without a failed request; a broken file is rejected', async () => {
    const oldSerial = serialOf(certs.backend.cert);
    const newSerial = serialOf(certs.backendRotated.cert);
    assert.notEqual(oldSerial, newSerial);
    assert.equal(await serverSerial(bMesh, certs.frontend, certs.ca), oldSerial);

    // Bounded load: 4 workers, sequential requests, until the rotation was seen (max ~6 s).
    let isRunning = true;
    let ok = 0;
    const failures: string[] = [];
    const worker = async (): Promise<void> => {
      const deadline = Date.now() + 6000;
      while (isRunning && Date.now() < deadline) {
        try {
          const r = await get(fOut, '/bytes/2048');
          if (r.status === 200 && r.body.length === 2048) ok++;
          else failures.push(`status ${r.status}: ${r.body.toString('utf8').slice(0, 200)}`);
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    };
    const load = Promise.all([worker(), worker(), worker(), worker()]);
    await delay(200);
    replaceAtomically(backendIdentity.cert, readFileSync(certs.backendRotated.cert));
    replaceAtomically(backendIdentity.key, readFileSync(certs.backendRotated.key));
    await waitFor('the new serial on new connections', async () => (await serverSerial(bMesh, certs.frontend, certs.ca)) === newSerial);
    // A new connection from the frontend (a cluster not used before) verifies the new cert.
    const fresh = await get(fOut, '/echo', 'fresh.backend.mesh');
    assert.equal(fresh.status, 200, fresh.body.toString());
    const direct = await h2Get(bMesh, certs.frontend, certs.ca, '/status/200');
    assert.equal(direct.status, 200);
    await delay(200);
    isRunning = false;
    await load;
    assert.deepEqual(failures, [], 'no failed request during the rotation');
    assert.ok(ok > 20, `requests ran during the rotation (${ok})`);
    const rotated = logLines(backend).find((l) => l.msg === 'mesh identity rotated');
    assert.equal(rotated?.serial, newSerial);
    assert.equal(rotated?.previousSerial, oldSerial);

    // A broken certificate: rejected with a logged error, the rotated one keeps serving.
    replaceAtomically(backendIdentity.cert, '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n');
    await waitFor('the rejection in the log', () => logLines(backend).some((l) => l.msg === 'mesh identity rotation rejected; keeping the current certificate'));
    const rejected = logLines(backend).find((l) => l.msg === 'mesh identity rotation rejected; keeping the current certificate');
    assert.equal(rejected?.level, 'error');
    assert.match(String(rejected?.err), /does not parse/);
    assert.equal(await serverSerial(bMesh, certs.frontend, certs.ca), newSerial);
    const after = await get(fOut, '/status/200', 'fresh.backend.mesh');
    assert.equal(after.status, 200);
    assert.equal((await h2Get(bMesh, certs.frontend, certs.ca, '/status/200')).status, 200);
  });
});
