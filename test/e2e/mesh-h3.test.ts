// The sidecar-to-sidecar hop over HTTP/3 with mesh mTLS (issue 5, item 2: "HTTP/3 when the
// cluster says protocol: h3"), end to end with two real sidecars (dist/src/cli.js):
//
//   app (HTTP/1.1) -> "frontend" (outbound [http1, h2c]; cluster protocol: h3, tls: mesh,
//   peerIdentity: backend) -> HTTP/3 over QUIC + mTLS -> "backend" (inbound-mesh [h2, h3],
//   tls: mesh, authorize: [frontend]) -> HTTP/1.1 service
//
// - byte-exact GET and a 1 MiB POST (sha256 at the service) across the hop; the backend's
//   access log and metrics show HTTP/3 and the frontend's SPIFFE ID;
// - a same-CA peer not on the allow list (intruder, direct HTTP/3 client) gets 403;
// - a frontend cluster expecting another peerIdentity gets 502 naming presented vs expected;
// - a client certificate from another CA (rogue) is disconnected before any request, and the
//   refusal is logged with the SPIFFE ID it presented; no client certificate is refused too;
// - rotation: new QUIC connections get the backend's new certificate, a connection made
//   before the rotation keeps working, a new dial from the frontend verifies the new one;
// - checkMeshChain (the listener's own chain check, since quiche accepts any client chain on
//   mesh listeners) on its own: trusted, other CA, no certificate, expired, not yet valid.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import http from 'node:http';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readIdentity } from '../../mesh/identity.js';
import { QuicEndpoint, createClientConfig } from '../../protocols/quic/index.js';
import { checkMeshChain } from '../../protocols/tls/mesh.js';
import { H3TestClient, type H3Response } from '../helpers/h3-client.js';
import { SPIFFE, copyIdentity, ensureMeshCerts, type CertKey, type IdentityFiles, type MeshCerts } from '../helpers/mesh-certs.js';
import { scrapeMetrics, sumSamples } from '../helpers/prometheus.js';
import { freePort, freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { patternBytes, patternSha256, startH1Upstream, type H1Upstream } from '../helpers/upstreams.js';

const HOST = '127.0.0.1';

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

function accessLines(path: string): Array<Record<string, unknown>> {
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

/** An HTTP/1.1 request from the "app" to the frontend's outbound listener. */
function request(port: number, method: string, path: string, host: string, body: Buffer | null = null, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port, method, path, agent, headers: { host, ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

function header(raw: readonly string[], name: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) return raw[i + 1];
  return undefined;
}

function h3Header(res: H3Response, name: string): string | undefined {
  for (let i = 0; i < res.headers.length; i += 2) if (res.headers[i] === name) return res.headers[i + 1];
  return undefined;
}

/** A direct HTTP/3 connection to a mesh port, presenting `id` (null: no client certificate). */
async function h3Connect(port: number, id: CertKey | null, ca: string): Promise<H3TestClient> {
  const config = createClientConfig({
    alpn: ['h3'],
    caPem: readFileSync(ca),
    ...(id === null ? {} : { certPem: readFileSync(id.cert), keyPem: readFileSync(id.key) }),
  });
  const endpoint = await QuicEndpoint.open({ host: HOST, client: config });
  try {
    return await H3TestClient.connect(HOST, port, Buffer.alloc(0), { endpoint });
  } catch (err) {
    await endpoint.close(0, '', 500);
    throw err;
  }
}

/** Connects as `id` and makes one request; resolves with the error if either fails (bounded by 5 s). */
async function h3Attempt(port: number, id: CertKey | null, ca: string, path: string): Promise<{ res: H3Response | null; err: Error | null }> {
  let client: H3TestClient | null = null;
  try {
    client = await h3Connect(port, id, ca);
    const c = client;
    const res = await Promise.race([
      c.request(path, { authority: 'backend.mesh' }),
      delay(5000).then(() => {
        throw new Error('no answer and no close within 5 s');
      }),
    ]);
    return { res, err: null };
  } catch (err) {
    return { res: null, err: err as Error };
  } finally {
    if (client !== null) await client.close();
  }
}

function serialOf(path: string): string {
  return new X509Certificate(readFileSync(path)).serialNumber.toUpperCase();
}

function replaceAtomically(path: string, content: Buffer | string): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, content);
  renameSync(tmp, path);
}

describe('mesh mTLS over HTTP/3 between sidecars', () => {
  let certs: MeshCerts;
  let service: H1Upstream;
  let frontend: SkiffProcess;
  let backend: SkiffProcess;
  let backendIdentity: IdentityFiles;
  let scratch: string;
  let accessLogPath: string;
  let fOut: number;
  let bMesh: number;
  let bAdmin: number;

  before(async () => {
    certs = ensureMeshCerts();
    service = await startH1Upstream();
    backendIdentity = copyIdentity('backend');
    scratch = mkdtempSync(join(tmpdir(), 'skiff-mesh-h3-e2e-'));
    accessLogPath = join(scratch, 'backend-access.log');
    bMesh = await freePort({ udp: true });
    const [fAdmin, fPort, bAdminPort] = await freePorts(3);
    fOut = fPort;
    bAdmin = bAdminPort;

    backend = await startSkiff(`admin: { address: "${HOST}:${bAdmin}" }
identity:
  cert: ${backendIdentity.cert}
  key: ${backendIdentity.key}
  trustBundle: ${backendIdentity.trustBundle}
telemetry:
  serviceName: backend
  accessLog: { enabled: true, path: ${accessLogPath} }
listeners:
  - name: inbound-mesh
    address: ${HOST}:${bMesh}
    protocols: [h2, h3]
    tls: mesh
    authorize: [${SPIFFE.frontend}]
    routes: inbound
routes:
  inbound:
    - match: { prefix: / }
      cluster: service
clusters:
  - name: service
    protocol: http1
    endpoints: [${HOST}:${service.port}]
`);

    const meshCluster = (name: string, peer: string): string => `  - name: ${name}
    protocol: h3
    tls: mesh
    peerIdentity: ${peer}
    endpoints: [${HOST}:${bMesh}]
    retries: { attempts: 0 }
    outlierDetection: null
`;
    frontend = await startSkiff(`admin: { address: "${HOST}:${fAdmin}" }
identity:
  cert: ${certs.frontend.cert}
  key: ${certs.frontend.key}
  trustBundle: ${certs.ca}
telemetry:
  serviceName: frontend
listeners:
  - name: outbound
    direction: outbound
    address: ${HOST}:${fOut}
    protocols: [http1, h2c]
    routes: outbound
routes:
  outbound:
    - match: { authority: wrong-peer.mesh }
      cluster: wrong-peer
    - match: { authority: fresh.backend.mesh }
      cluster: backend-fresh
    - match: { prefix: / }
      cluster: backend
clusters:
${meshCluster('backend', SPIFFE.backend)}${meshCluster('backend-fresh', SPIFFE.backend)}${meshCluster('wrong-peer', SPIFFE.intruder)}`);
  });

  after(async () => {
    agent.destroy();
    await Promise.all([frontend?.stop(), backend?.stop()]);
    await service?.close();
    if (backendIdentity !== undefined) rmSync(backendIdentity.dir, { recursive: true, force: true });
    if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
  });

  it('carries a GET byte-exact over HTTP/3 + mTLS, with the forwarding headers', async () => {
    const n = 300_000;
    const res = await request(fOut, 'GET', `/bytes/${n}`, 'backend.mesh');
    assert.equal(res.status, 200, res.body.toString('utf8').slice(0, 300));
    assert.ok(res.body.equals(patternBytes(n)), 'body differs');

    const echo = await request(fOut, 'GET', '/echo?x=1', 'backend.mesh', null, { 'x-request-id': 'mesh-h3-get-1' });
    assert.equal(echo.status, 200);
    const seen = service.requests.find((r) => header(r.rawHeaders, 'x-request-id') === 'mesh-h3-get-1');
    assert.ok(seen !== undefined, 'the service saw the request');
    assert.equal(seen.path, '/echo?x=1');
    assert.equal(header(seen.rawHeaders, 'host'), 'backend.mesh');
    assert.equal(header(seen.rawHeaders, 'x-forwarded-proto'), 'https');
  });

  it('carries a 1 MiB POST intact (sha256 at the service)', async () => {
    const n = 1024 * 1024;
    const res = await request(fOut, 'POST', '/sink', 'backend.mesh', patternBytes(n), { 'content-type': 'application/octet-stream', 'x-request-id': 'mesh-h3-post-1' });
    assert.equal(res.status, 200, res.body.toString('utf8').slice(0, 300));
    assert.deepEqual(JSON.parse(res.body.toString('utf8')), { bytes: n, sha256: patternSha256(n) });
  });

  it('shows HTTP/3 and the frontend\'s SPIFFE ID in the backend\'s access log and metrics', async () => {
    let line: Record<string, unknown> | undefined;
    await waitFor('the POST in the backend\'s access log', () => {
      line = accessLines(accessLogPath).find((l) => l.path === '/sink');
      return line !== undefined;
    });
    assert.equal(line?.protocol, 'HTTP/3');
    assert.equal(line?.downstream_peer_principal, SPIFFE.frontend);
    assert.equal(line?.listener, 'inbound-mesh');
    const families = await scrapeMetrics(`http://${HOST}:${bAdmin}/metrics`);
    const overH3 = sumSamples(families, 'istio_requests_total', { downstream_protocol: 'h3', source_principal: SPIFFE.frontend, reporter: 'destination' });
    assert.ok(overH3 >= 3, `istio_requests_total{downstream_protocol=h3, source_principal=frontend} = ${overH3}`);
    assert.equal(sumSamples(families, 'istio_requests_total', { downstream_protocol: 'h2' }), 0, 'nothing came over HTTP/2');
  });

  it('answers 403 to a peer of the same CA that is not on the allow list, logging its identity', async () => {
    const { res, err } = await h3Attempt(bMesh, certs.intruder, certs.ca, '/echo');
    assert.equal(err, null);
    assert.equal(res?.status, 403);
    assert.ok(res !== null);
    assert.equal(h3Header(res, 'x-skiff-error'), 'SKIFF_ERR_FORBIDDEN');
    assert.match(res.body.toString('utf8'), new RegExp(`peer ${SPIFFE.intruder} is not allowed on listener inbound-mesh`));
    await waitFor('the denial log line', () => logLines(backend).some((l) => l.msg === 'request denied: peer not authorized' && l.peer === SPIFFE.intruder));
    // The allowed identity over the same path: 200.
    const ok = await h3Attempt(bMesh, certs.frontend, certs.ca, '/status/200');
    assert.equal(ok.err, null);
    assert.equal(ok.res?.status, 200);
  });

  it('fails with 502 when the backend is not the cluster\'s peerIdentity, naming both IDs', async () => {
    const res = await request(fOut, 'GET', '/echo', 'wrong-peer.mesh', null, { 'x-request-id': 'mesh-h3-wrong-peer' });
    assert.equal(res.status, 502);
    assert.equal(res.headers['x-skiff-error'], 'SKIFF_ERR_UPSTREAM_CONNECT');
    const body = res.body.toString('utf8');
    assert.match(body, /peer identity mismatch/);
    assert.ok(body.includes(`presented ${SPIFFE.backend}, expected ${SPIFFE.intruder}`), body);
    assert.equal(service.requests.some((r) => header(r.rawHeaders, 'x-request-id') === 'mesh-h3-wrong-peer'), false, 'nothing reached the service');
  });

  it('disconnects a client certificate from another CA before any request, logging the identity it presented', async () => {
    const seenBefore = service.requests.length;
    const { res, err } = await h3Attempt(bMesh, certs.rogue, certs.ca, '/echo');
    assert.equal(res, null, 'no response');
    assert.ok(err !== null);
    assert.doesNotMatch(err.message, /no answer and no close/);
    assert.equal(service.requests.length, seenBefore, 'nothing reached the service');
    const isRefusal = (l: Record<string, unknown>): boolean => l.msg === 'mesh handshake refused: peer certificate not trusted' && l.peer === SPIFFE.frontend;
    await waitFor('the refusal log line', () => logLines(backend).some(isRefusal));
    const line = logLines(backend).find(isRefusal);
    assert.equal(line?.reason, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    assert.equal(line?.listener, 'inbound-mesh');
    assert.equal(line?.remote, HOST);
    assert.equal(line?.level, 'warn');

    // No client certificate: refused inside the TLS handshake (certificate_required).
    const bare = await h3Attempt(bMesh, null, certs.ca, '/echo');
    assert.equal(bare.res, null);
    assert.ok(bare.err !== null);
    assert.doesNotMatch(bare.err.message, /no answer and no close/);
    assert.equal(service.requests.length, seenBefore, 'nothing reached the service');
  });

  it('follows rotation: new QUIC connections get the new certificate, older ones keep working', async () => {
    const oldSerial = serialOf(certs.backend.cert);
    const newSerial = serialOf(certs.backendRotated.cert);
    assert.notEqual(oldSerial, newSerial);
    const serial = (c: H3TestClient): string => new X509Certificate(c.conn.peerCertificateChain[0] as Buffer).serialNumber.toUpperCase();
    const early = await h3Connect(bMesh, certs.frontend, certs.ca);
    try {
      assert.equal(serial(early), oldSerial);
      assert.equal((await request(fOut, 'GET', '/status/200', 'backend.mesh')).status, 200, 'the frontend\'s pooled connection is up');

      replaceAtomically(backendIdentity.cert, readFileSync(certs.backendRotated.cert));
      replaceAtomically(backendIdentity.key, readFileSync(certs.backendRotated.key));
      await waitFor('the new serial on new QUIC connections', async () => {
        const c = await h3Connect(bMesh, certs.frontend, certs.ca);
        try {
          return serial(c) === newSerial;
        } finally {
          await c.close();
        }
      });
      // Established before the rotation: still serving, with the old certificate.
      const again = await early.request('/status/200', { authority: 'backend.mesh' });
      assert.equal(again.status, 200);
      assert.equal(serial(early), oldSerial);
      // The frontend's existing connection, and a new dial (a cluster not used before) that verifies the new certificate.
      assert.equal((await request(fOut, 'GET', '/status/200', 'backend.mesh')).status, 200);
      const fresh = await request(fOut, 'GET', '/echo', 'fresh.backend.mesh');
      assert.equal(fresh.status, 200, fresh.body.toString('utf8'));
      const rotated = logLines(backend).find((l) => l.msg === 'mesh identity rotated');
      assert.equal(rotated?.serial, newSerial);
      assert.equal(logLines(backend).some((l) => l.msg === 'mesh identity rotation: HTTP/3 certificate not updated'), false);
    } finally {
      await early.close();
    }
  });
});

describe('checkMeshChain (the HTTP/3 mesh listener\'s client chain check)', () => {
  it('trusts the bundle\'s leaves and refuses the rest with OpenSSL-style reasons', () => {
    const certs = ensureMeshCerts();
    const material = readIdentity({ cert: certs.backend.cert, key: certs.backend.key, trustBundle: certs.ca }, 1);
    const der = (path: string): Buffer => new X509Certificate(readFileSync(path)).raw;
    assert.deepEqual(checkMeshChain([der(certs.frontend.cert)], material), { spiffeId: SPIFFE.frontend, refusal: null });
    assert.deepEqual(checkMeshChain([der(certs.intruder.cert)], material), { spiffeId: SPIFFE.intruder, refusal: null });
    assert.deepEqual(checkMeshChain([der(certs.rogue.cert)], material), { spiffeId: SPIFFE.frontend, refusal: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
    // The rogue CA presented as an intermediate does not help: it is not in the bundle.
    assert.equal(checkMeshChain([der(certs.rogue.cert), der(certs.rogueCa)], material).refusal, 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY');
    assert.deepEqual(checkMeshChain([], material), { spiffeId: '', refusal: 'NO_CLIENT_CERTIFICATE' });
    const leaf = new X509Certificate(readFileSync(certs.frontend.cert));
    assert.equal(checkMeshChain([leaf.raw], material, Date.parse(leaf.validTo) + 1000).refusal, 'CERT_HAS_EXPIRED');
    assert.equal(checkMeshChain([leaf.raw], material, Date.parse(leaf.validFrom) - 1000).refusal, 'CERT_NOT_YET_VALID');
    assert.equal(checkMeshChain([Buffer.from('not a certificate')], material).refusal, 'CERT_PARSE_ERROR');
  });
});
