#!/usr/bin/env node
/**
 * `npm run demo [-- --keep]`: a two-service mesh on 127.0.0.1 (issue 5, item 8).
 *
 *   client -> frontend-app -> "frontend" sidecar (outbound, HTTP/1.1 proxy)
 *          -> HTTP/2 + mTLS -> "backend" sidecar (inbound mesh, authorize: [frontend])
 *          -> backend-app (HTTP/1.1)
 *
 * Makes the mesh test PKI (test/certs/make-mesh-certs.sh, into test/certs/out/mesh/), writes
 * two sidecar configs into a temp dir, starts two real sidecars (`node dist/src/cli.js
 * --config FILE`) on free ports and waits for their /ready, calls the frontend app once, then
 * calls the backend's mesh port with the `intruder` identity (same CA, not on the allow list:
 * 403). The printed chain is what was observed: the apps' answers and both sidecars' access
 * logs (the backend's `downstream_peer_principal` is the caller's SPIFFE ID on the hop).
 *
 * Default: stops everything (SIGTERM by PID) and exits 0. `--keep`: stays up until Ctrl-C.
 * Any failed step: a message, the tail of the sidecar logs, everything stopped, exit 1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { SPIFFE, ensureMeshCerts, type MeshCerts } from '../test/helpers/mesh-certs.js';
import { repoPath } from '../test/helpers/repo-root.js';
import { freePorts } from '../test/helpers/skiff.js';

const HOST = '127.0.0.1';
const BACKEND_AUTHORITY = 'backend.mesh';
const REQUEST_TIMEOUT_MS = 5000;
const READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5000;
/** The whole demo (without --keep) must finish within this. */
const OVERALL_TIMEOUT_MS = 45_000;

class DemoError extends Error {}

interface Sidecar {
  name: string;
  child: ChildProcess;
  pid: number;
  adminPort: number;
  configPath: string;
  logPath: string;
  exited: Promise<void>;
}

const sidecars: Sidecar[] = [];
const servers: http.Server[] = [];
let scratch: string | null = null;
let stopping: Promise<void> | null = null;

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** SIGTERM each sidecar by PID (SIGKILL after a grace period), close the apps, remove the temp dir. Idempotent. */
function stopAll(): Promise<void> {
  stopping ??= (async () => {
    await Promise.all(
      sidecars.map(async (s) => {
        if (!isRunning(s.child)) return;
        try {
          process.kill(s.pid, 'SIGTERM');
        } catch {
          return; // already gone
        }
        const grace = setTimeout(() => {
          if (isRunning(s.child)) {
            try {
              process.kill(s.pid, 'SIGKILL');
            } catch {
              // exited meanwhile
            }
          }
        }, STOP_GRACE_MS);
        await s.exited;
        clearTimeout(grace);
      }),
    );
    await Promise.all(
      servers.map(
        (srv) =>
          new Promise<void>((resolve) => {
            srv.close(() => resolve());
            srv.closeAllConnections();
          }),
      ),
    );
    if (scratch !== null) rmSync(scratch, { recursive: true, force: true });
  })();
  return stopping;
}

/** Last resort (an uncaught error, process.exit): kill what is still running, synchronously. */
process.on('exit', () => {
  for (const s of sidecars) {
    if (isRunning(s.child)) {
      try {
        process.kill(s.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  if (scratch !== null) rmSync(scratch, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------
// The two services
// ---------------------------------------------------------------------------------------

function listen(server: http.Server): Promise<number> {
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve((server.address() as AddressInfo).port));
  });
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** backend-app: answers with what it saw. */
function backendApp(): http.Server {
  return http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const h = req.headers;
      sendJson(res, 200, {
        greeting: 'hello from backend-app',
        saw: {
          method: req.method,
          url: req.url,
          host: h.host ?? null,
          'x-forwarded-for': h['x-forwarded-for'] ?? null,
          'x-forwarded-proto': h['x-forwarded-proto'] ?? null,
          'x-request-id': h['x-request-id'] ?? null,
          traceparent: h.traceparent ?? null,
          headers: h,
        },
      });
    });
  });
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request with an overall timeout. */
function request(opts: http.RequestOptions, timeoutMs = REQUEST_TIMEOUT_MS): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ ...opts, agent: false, signal: AbortSignal.timeout(timeoutMs) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', (err) => reject(err.name === 'AbortError' ? new Error(`no answer within ${timeoutMs} ms`) : err));
    req.end();
  });
}

/**
 * frontend-app: on GET / calls http://backend.mesh/greeting through its sidecar, used as an
 * HTTP proxy (what HTTP_PROXY=http://127.0.0.1:OUTBOUND makes a proxy-aware client do: an
 * absolute-form request to the proxy port), passing on the caller's trace context.
 */
function frontendApp(proxyUrl: string): http.Server {
  const proxy = new URL(proxyUrl);
  const target = `http://${BACKEND_AUTHORITY}/greeting`;
  return http.createServer((req, res) => {
    req.resume();
    if (req.method !== 'GET' || req.url !== '/') {
      sendJson(res, 404, { error: 'try GET /' });
      return;
    }
    const headers: http.OutgoingHttpHeaders = { host: BACKEND_AUTHORITY };
    for (const name of ['traceparent', 'tracestate', 'x-request-id']) {
      const v = req.headers[name];
      if (v !== undefined) headers[name] = v;
    }
    request({ host: proxy.hostname, port: Number(proxy.port), method: 'GET', path: target, headers }).then(
      (up) => {
        let backend: unknown = up.body;
        try {
          backend = JSON.parse(up.body) as unknown;
        } catch {
          // not JSON (a Skiff error page): pass the text on
        }
        sendJson(res, up.status === 200 ? 200 : 502, {
          service: 'frontend-app',
          called: target,
          via: `HTTP_PROXY=${proxyUrl}`,
          status: up.status,
          skiffError: up.headers['x-skiff-error'] ?? null,
          backend,
        });
      },
      (err: unknown) => sendJson(res, 502, { service: 'frontend-app', called: target, error: (err as Error).message }),
    );
  });
}

// ---------------------------------------------------------------------------------------
// The sidecars
// ---------------------------------------------------------------------------------------

interface Ports {
  frontendAdmin: number;
  frontendOutbound: number;
  backendAdmin: number;
  backendMesh: number;
  backendApp: number;
}

function frontendConfig(certs: MeshCerts, p: Ports, accessLog: string): string {
  return `# The frontend's sidecar: the app's outbound calls, to the backend's sidecar over HTTP/2 + mTLS.
admin: { address: "${HOST}:${p.frontendAdmin}" }
identity:
  cert: ${certs.frontend.cert}
  key: ${certs.frontend.key}
  trustBundle: ${certs.ca}
limits: { drainTimeout: 2s }
telemetry:
  serviceName: frontend
  logLevel: info
  accessLog: { enabled: true, path: ${accessLog} }
listeners:
  - name: outbound
    direction: outbound
    address: ${HOST}:${p.frontendOutbound}
    protocols: [http1, h2c]
    routes: outbound
routes:
  outbound:
    - match: { authority: ${BACKEND_AUTHORITY} }
      cluster: backend
      timeout: 5s
clusters:
  - name: backend
    protocol: h2
    tls: mesh
    peerIdentity: ${SPIFFE.backend}
    endpoints: [${HOST}:${p.backendMesh}]
    connectTimeout: 2s
`;
}

function backendConfig(certs: MeshCerts, p: Ports, accessLog: string): string {
  return `# The backend's sidecar: peers in over HTTP/2 + mTLS (frontend only), out to the local app over HTTP/1.1.
admin: { address: "${HOST}:${p.backendAdmin}" }
identity:
  cert: ${certs.backend.cert}
  key: ${certs.backend.key}
  trustBundle: ${certs.ca}
limits: { drainTimeout: 2s }
telemetry:
  serviceName: backend
  logLevel: info
  accessLog: { enabled: true, path: ${accessLog} }
listeners:
  - name: inbound-mesh
    address: ${HOST}:${p.backendMesh}
    protocols: [h2]
    tls: mesh
    authorize: [${SPIFFE.frontend}]
    routes: inbound
routes:
  inbound:
    - match: { prefix: / }
      cluster: backend-app
      timeout: 5s
clusters:
  - name: backend-app
    protocol: http1
    endpoints: [${HOST}:${p.backendApp}]
    connectTimeout: 2s
`;
}

function tail(path: string, lines: number): string {
  try {
    return readFileSync(path, 'utf8').split('\n').filter((l) => l !== '').slice(-lines).join('\n');
  } catch {
    return '(no output)';
  }
}

function startSidecar(name: string, dir: string, configYaml: string, adminPort: number): Sidecar {
  const configPath = join(dir, `${name}.yaml`);
  const logPath = join(dir, `${name}.log`);
  writeFileSync(configPath, configYaml);
  const fd = openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    // Own process group: a terminal Ctrl-C reaches only the demo, which stops the sidecars in order.
    child = spawn(process.execPath, [repoPath('dist', 'src', 'cli.js'), '--config', configPath], {
      cwd: repoPath(),
      stdio: ['ignore', fd, fd],
      detached: true,
    });
  } finally {
    closeSync(fd);
  }
  if (child.pid === undefined) throw new DemoError(`${name} sidecar: spawn failed`);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('error', () => undefined);
  const s: Sidecar = { name, child, pid: child.pid, adminPort, configPath, logPath, exited };
  sidecars.push(s);
  return s;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitReady(s: Sidecar): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = 'no answer';
  for (;;) {
    if (!isRunning(s.child)) {
      throw new DemoError(`${s.name} sidecar exited before it was ready (code ${s.child.exitCode}, signal ${s.child.signalCode})`);
    }
    try {
      const r = await request({ host: HOST, port: s.adminPort, path: '/ready' }, 1000);
      if (r.status === 200) return;
      last = `status ${r.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() >= deadline) {
      throw new DemoError(`${s.name} sidecar: GET http://${HOST}:${s.adminPort}/ready not 200 within ${READY_TIMEOUT_MS} ms (last: ${last})`);
    }
    await Promise.race([delay(50), s.exited]);
  }
}

type AccessRecord = Record<string, unknown>;

/** The first access log line matching `pick`, waiting for the asynchronous writer. */
async function accessLine(path: string, what: string, pick: (r: AccessRecord) => boolean): Promise<AccessRecord> {
  const deadline = Date.now() + 3000;
  for (;;) {
    let text = '';
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      // not created yet
    }
    for (const line of text.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const r = JSON.parse(line) as AccessRecord;
        if (pick(r)) return r;
      } catch {
        // a partial last line
      }
    }
    if (Date.now() >= deadline) throw new DemoError(`no access log line for ${what} in ${path}`);
    await delay(25);
  }
}

// ---------------------------------------------------------------------------------------
// The mesh-port clients (what a peer sidecar, or an intruder, does)
// ---------------------------------------------------------------------------------------

/** The SPIFFE ID the server on `port` presents to a client holding `as`. */
function presentedIdentity(port: number, as: { cert: string; key: string }, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: HOST, port, ca: readFileSync(ca), cert: readFileSync(as.cert), key: readFileSync(as.key), ALPNProtocols: ['h2'] });
    s.setTimeout(REQUEST_TIMEOUT_MS, () => s.destroy(new Error(`TLS handshake with ${HOST}:${port} timed out`)));
    s.once('secureConnect', () => {
      const san = s.getPeerCertificate().subjectaltname ?? '';
      s.destroy();
      const m = /URI:(spiffe:\/\/[^,\s]+)/.exec(san);
      if (m === null) reject(new DemoError(`${HOST}:${port} presented no SPIFFE ID (SAN: ${san})`));
      else resolve(m[1]);
    });
    s.once('error', reject);
  });
}

/** One HTTP/2 GET over a fresh mTLS connection holding `as`. */
function h2Get(port: number, as: { cert: string; key: string }, ca: string, path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://${HOST}:${port}`, { ca: readFileSync(ca), cert: readFileSync(as.cert), key: readFileSync(as.key) });
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`HTTP/2 GET https://${HOST}:${port}${path}: no answer within ${REQUEST_TIMEOUT_MS} ms`));
    }, REQUEST_TIMEOUT_MS);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      session.destroy();
      reject(err);
    };
    session.on('error', fail);
    const req = session.request({ ':method': 'GET', ':path': path, ':authority': BACKEND_AUTHORITY });
    let status = 0;
    const headers: http.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (h) => {
      status = Number(h[':status']);
      for (const [k, v] of Object.entries(h)) if (!k.startsWith(':') && v !== undefined) headers[k] = v as string;
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      clearTimeout(timer);
      session.close();
      resolve({ status, headers, body: Buffer.concat(chunks).toString('utf8') });
    });
    req.on('error', fail);
    req.end();
  });
}

// ---------------------------------------------------------------------------------------

function check(cond: boolean, message: string): asserts cond {
  if (!cond) throw new DemoError(message);
}

function parseJson(text: string, what: string): Record<string, unknown> {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new DemoError(`${what} is not JSON: ${text.slice(0, 200)}`);
  }
}

async function main(keep: boolean): Promise<void> {
  const out = (line = ''): void => void process.stdout.write(`${line}\n`);

  let certs: MeshCerts;
  try {
    certs = ensureMeshCerts();
  } catch (err) {
    throw new DemoError(`cannot make the mesh test certificates (needs openssl and bash): ${(err as Error).message}`);
  }
  scratch = mkdtempSync(join(tmpdir(), 'skiff-demo-'));
  const dir = scratch;

  const backendAppPort = await listen(backendApp());
  const [frontendAdmin, frontendOutbound, backendAdmin, backendMesh] = await freePorts(4);
  const ports: Ports = { frontendAdmin, frontendOutbound, backendAdmin, backendMesh, backendApp: backendAppPort };
  const proxyUrl = `http://${HOST}:${frontendOutbound}`;
  const frontendAppPort = await listen(frontendApp(proxyUrl));

  const frontendLog = join(dir, 'frontend-access.log');
  const backendLog = join(dir, 'backend-access.log');
  const backend = startSidecar('backend', dir, backendConfig(certs, ports, backendLog), backendAdmin);
  const frontend = startSidecar('frontend', dir, frontendConfig(certs, ports, frontendLog), frontendAdmin);
  await Promise.all([waitReady(backend), waitReady(frontend)]);

  // 1. The call: client -> frontend-app -> frontend sidecar -> backend sidecar -> backend-app.
  const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
  const reply = await request({ host: HOST, port: frontendAppPort, path: '/', headers: { traceparent } });
  const chain = parseJson(reply.body, 'the frontend-app answer');
  check(reply.status === 200, `GET http://${HOST}:${frontendAppPort}/ answered ${reply.status}: ${reply.body}`);
  const fromBackend = chain.backend as { greeting?: string; saw?: Record<string, unknown> } | undefined;
  check(typeof fromBackend?.greeting === 'string' && fromBackend.saw !== undefined, `backend-app's answer is missing: ${reply.body}`);
  const saw = fromBackend.saw;

  const fLine = await accessLine(frontendLog, 'GET /greeting', (r) => r.path === '/greeting' && r.listener === 'outbound');
  const bLine = await accessLine(backendLog, 'GET /greeting', (r) => r.path === '/greeting' && r.listener === 'inbound-mesh' && r.response_code === 200);
  check(bLine.downstream_peer_principal === SPIFFE.frontend, `backend access log: downstream_peer_principal ${String(bLine.downstream_peer_principal)}, expected ${SPIFFE.frontend}`);
  check(bLine.protocol === 'HTTP/2', `backend access log: the hop arrived as ${String(bLine.protocol)}, expected HTTP/2`);
  // The frontend's cluster has peerIdentity: a backend with another ID would have failed the
  // connect (502). Confirm independently which ID the backend's mesh port presents.
  const backendId = await presentedIdentity(backendMesh, certs.frontend, certs.ca);
  check(backendId === SPIFFE.backend, `the backend's mesh port presents ${backendId}, expected ${SPIFFE.backend}`);

  // 2. An intruder: same CA, a SPIFFE ID not on the backend's allow list.
  const denied = await h2Get(backendMesh, certs.intruder, certs.ca, '/greeting');
  const deniedCode = String(denied.headers['x-skiff-error'] ?? '');
  check(denied.status === 403 && deniedCode === 'SKIFF_ERR_FORBIDDEN', `intruder got ${denied.status} ${deniedCode}, expected 403 SKIFF_ERR_FORBIDDEN`);
  const iLine = await accessLine(backendLog, 'the intruder', (r) => r.response_code === 403);

  const greeting = JSON.stringify({ greeting: fromBackend.greeting });
  out('Skiff demo: two sidecars, two services, mTLS with SPIFFE identities, all on 127.0.0.1');
  out();
  out(`client -> frontend-app :${frontendAppPort} -> frontend sidecar (outbound :${frontendOutbound}, ${String(fLine.protocol)} proxy, ${BACKEND_AUTHORITY} -> cluster backend)`);
  out(`  -> HTTP/2 + mTLS, peer verified as ${backendId}`);
  out(`  -> backend sidecar (inbound mesh :${backendMesh}, peer ${String(bLine.downstream_peer_principal)} authorized)`);
  out(`  -> backend-app :${backendAppPort}: ${greeting}`);
  out(`     saw x-forwarded-for: ${String(saw['x-forwarded-for'])}, x-forwarded-proto: ${String(saw['x-forwarded-proto'])}`);
  out(`     x-request-id: ${String(saw['x-request-id'])} (both access logs: ${fLine.request_id === bLine.request_id ? 'same id' : 'DIFFERENT ids'})`);
  out(`     traceparent: ${String(saw.traceparent)}`);
  out(`  <- ${reply.status} to the client: {"service":"frontend-app","via":"${String(chain.via)}",...}`);
  out(`backend access log: downstream_peer_principal=${String(bLine.downstream_peer_principal)} protocol=${String(bLine.protocol)} response_code=${String(bLine.response_code)}`);
  out(`intruder (${SPIFFE.intruder}) -> backend sidecar: ${denied.status} ${deniedCode} (logged as ${String(iLine.downstream_peer_principal)})`);
  out();
  out(`frontend sidecar admin: http://${HOST}:${frontendAdmin}/  (pid ${frontend.pid}; /ready /metrics /clusters /config_dump)`);
  out(`backend sidecar admin:  http://${HOST}:${backendAdmin}/  (pid ${backend.pid})`);

  if (keep) {
    out();
    out(`Running. Try: curl -s http://${HOST}:${frontendAppPort}/`);
    out(`Configs, sidecar logs and access logs: ${dir}  (config edits reload live). Ctrl-C stops everything.`);
    return;
  }
  await stopAll();
  out('stopped both sidecars and both services');
}

const argv = process.argv.slice(2);
const unknown = argv.filter((a) => a !== '--keep');
if (unknown.length > 0) {
  process.stderr.write(`demo: unknown argument ${unknown[0]}\nusage: npm run demo [-- --keep]\n`);
  process.exit(2);
}
const keep = argv.includes('--keep');
let isUp = false;

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (!isUp) process.stderr.write(`demo: ${sig}, stopping\n`);
    void stopAll().finally(() => process.exit(isUp ? 0 : 130));
  });
}

const watchdog = setTimeout(() => {
  void fail(new DemoError(`did not finish within ${OVERALL_TIMEOUT_MS / 1000} s`));
}, OVERALL_TIMEOUT_MS);

let hasFailed = false;
async function fail(err: unknown): Promise<void> {
  if (hasFailed) return;
  hasFailed = true;
  clearTimeout(watchdog);
  const message = err instanceof DemoError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`demo failed: ${message}\n`);
  for (const s of sidecars) process.stderr.write(`--- ${s.name} sidecar log (last lines) ---\n${tail(s.logPath, 15)}\n`);
  await stopAll();
  process.exit(1);
}

main(keep).then(
  () => {
    clearTimeout(watchdog);
    if (keep) isUp = true;
    else process.exit(0);
  },
  (err: unknown) => fail(err),
);
