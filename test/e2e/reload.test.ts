// Live config reload (issue 5 item 6) seen from outside: the real sidecar, two real HTTP/1.1
// upstreams, keep-alive HTTP/1.1 clients and one h2c session running a bounded load while the
// config file is replaced.
//   (a) a route moved from upstream A to upstream B under load: zero failed requests, every
//       request sent after the reload was logged reaches B, and every client connection (the
//       HTTP/1.1 sockets and the h2c session) survives: the listener kept its socket;
//   (b) a file with a YAML error, then one with two schema errors: rejected, every issue line
//       on stderr, traffic keeps flowing on the running config;
//   (c) a listener added by a reload starts listening, one changed on the same port is
//       replaced, a removed one stops, the unchanged one keeps its keep-alive connection;
//   (d) a cluster's endpoint changed under load: zero failed requests, then the new endpoint;
//   (e) the Kubernetes layout (config.yaml -> ..data/config.yaml, ..data swapped) end to end.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { startH1Upstream, type H1Upstream } from '../helpers/upstreams.js';

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Editor-style replacement: write a temp file, rename it over the config. */
function atomicWrite(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** Waits until `count` lines of the child's stderr (JSON lines) match `re`; returns the last. */
async function waitForLog(sk: SkiffProcess, re: RegExp, ms = 8000, count = 1): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    const lines = sk.stderr().split('\n').filter((l) => re.test(l));
    if (lines.length >= count) return lines[count - 1];
    if (Date.now() > deadline) throw new Error(`no log line matching ${re} within ${ms} ms\n--- stderr ---\n${sk.stderr().slice(-4000)}`);
    await delay(20);
  }
}

interface Config {
  admin: number;
  listeners: Array<{ name: string; port: number; protocols?: string }>;
  route: 'a' | 'b';
  endpointsA: number[];
  endpointsB: number[];
}

function yamlOf(c: Config): string {
  return `admin: { address: 127.0.0.1:${c.admin} }
listeners:
${c.listeners.map((l) => `  - { name: ${l.name}, address: 127.0.0.1:${l.port}, protocols: [${l.protocols ?? 'http1, h2c'}], routes: r }`).join('\n')}
routes:
  r:
    - { match: { prefix: / }, cluster: ${c.route} }
clusters:
  - { name: a, protocol: http1, endpoints: [${c.endpointsA.map((p) => `127.0.0.1:${p}`).join(', ')}], retries: { attempts: 0 } }
  - { name: b, protocol: http1, endpoints: [${c.endpointsB.map((p) => `127.0.0.1:${p}`).join(', ')}], retries: { attempts: 0 } }
`;
}

/** One GET over `agent`; resolves with the status and the client socket's local port. */
function get(port: number, path: string, agent: http.Agent): Promise<{ status: number; localPort: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent, timeout: 5000 }, (res) => {
      const localPort = res.socket.localPort ?? 0;
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, localPort }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
  });
}

function h2get(session: http2.ClientHttp2Session, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':path': path, ':method': 'GET' });
    let status = 0;
    s.on('response', (h) => { status = Number(h[':status']); });
    s.on('error', reject);
    s.resume();
    s.on('end', () => resolve(status));
  });
}

interface Load {
  /** Marks requests sent from now on as "after the reload". */
  markAfter(): void;
  /** Stops the load and resolves with what happened. */
  stop(): Promise<LoadResult>;
}

interface LoadResult {
  ok: number;
  failures: string[];
  /** Paths sent after markAfter(). */
  afterPaths: string[];
  /** Local ports seen per HTTP/1.1 worker (one each: the same connection throughout). */
  portsPerWorker: Set<number>[];
  /** The h2c session closed or failed during the load. */
  isH2Broken: boolean;
}

const MAX_REQUESTS_PER_WORKER = 3000;

/**
 * A bounded load: `workers` sequential keep-alive HTTP/1.1 clients (one socket each), plus one
 * h2c session sending 4 concurrent streams at a time; each worker stops at stop() or after
 * MAX_REQUESTS_PER_WORKER requests.
 */
function startLoad(port: number, tag: string, workers = 6): Load {
  let isStopping = false;
  let isAfter = false;
  const result: LoadResult = { ok: 0, failures: [], afterPaths: [], portsPerWorker: [], isH2Broken: false };
  const tasks: Promise<void>[] = [];
  for (let w = 0; w < workers; w++) {
    const ports = new Set<number>();
    result.portsPerWorker.push(ports);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    tasks.push((async () => {
      for (let i = 0; !isStopping && i < MAX_REQUESTS_PER_WORKER; i++) {
        const path = `/${tag}/h1-${w}-${i}`;
        if (isAfter) result.afterPaths.push(path);
        try {
          const r = await get(port, path, agent);
          ports.add(r.localPort);
          if (r.status === 200) result.ok++;
          else result.failures.push(`${path}: status ${r.status}`);
        } catch (err) {
          result.failures.push(`${path}: ${(err as Error).message}`);
        }
      }
      agent.destroy();
    })());
  }
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => { result.isH2Broken = true; });
  session.on('close', () => { if (!isStopping) result.isH2Broken = true; });
  tasks.push((async () => {
    for (let i = 0; !isStopping && i < MAX_REQUESTS_PER_WORKER / 4; i++) {
      const batch: Promise<void>[] = [];
      for (let j = 0; j < 4; j++) {
        const path = `/${tag}/h2-${i}-${j}`;
        if (isAfter) result.afterPaths.push(path);
        batch.push(h2get(session, path).then(
          (status) => { if (status === 200) result.ok++; else result.failures.push(`${path}: status ${status}`); },
          (err: unknown) => { result.failures.push(`${path}: ${(err as Error).message}`); },
        ));
      }
      await Promise.all(batch);
    }
  })());
  return {
    markAfter: () => { isAfter = true; },
    stop: async () => {
      isStopping = true;
      await Promise.all(tasks);
      session.close();
      return result;
    },
  };
}

function pathsOf(up: H1Upstream, tag: string): Set<string> {
  return new Set(up.requests.map((r) => r.path).filter((p) => p.startsWith(`/${tag}/`)));
}

function assertSwapUnderLoad(r: LoadResult, from: H1Upstream, to: H1Upstream, tag: string, diagnostic: (msg: string) => void): void {
  diagnostic(`${r.ok} requests ok, ${r.failures.length} failed, ${r.afterPaths.length} sent after the reload`);
  assert.deepEqual(r.failures.slice(0, 10), [], `${r.failures.length} failed requests`);
  assert.ok(r.ok > 50, `only ${r.ok} requests ran`);
  assert.ok(r.afterPaths.length > 10, `only ${r.afterPaths.length} requests after the reload`);
  const atFrom = pathsOf(from, tag);
  const atTo = pathsOf(to, tag);
  assert.ok(atFrom.size > 0, 'the old target served the requests before the reload');
  for (const p of r.afterPaths) {
    assert.ok(atTo.has(p) && !atFrom.has(p), `${p} (sent after the reload) did not go to the new upstream`);
  }
}

describe('config reload', () => {
  let upA: H1Upstream;
  let upB: H1Upstream;
  let sk: SkiffProcess;
  let cfg: Config;

  before(async () => {
    upA = await startH1Upstream();
    upB = await startH1Upstream();
    const [admin, main] = await freePorts(2);
    cfg = { admin, listeners: [{ name: 'main', port: main }], route: 'a', endpointsA: [upA.port], endpointsB: [upB.port] };
    sk = await startSkiff(yamlOf(cfg));
  });

  after(async () => {
    await sk.stop();
    await upA.close();
    await upB.close();
  });

  const mainPort = (): number => cfg.listeners[0].port;

  it('(a) a route moved under load: zero failures, the new upstream from then on, connections kept', async (t) => {
    const load = startLoad(mainPort(), 'a');
    await delay(300);
    atomicWrite(sk.configPath, yamlOf({ ...cfg, route: 'b' }));
    const line = await waitForLog(sk, /config version 2 applied/);
    load.markAfter();
    await delay(400);
    const r = await load.stop();
    cfg = { ...cfg, route: 'b' };
    assertSwapUnderLoad(r, upA, upB, 'a', (m) => t.diagnostic(m));
    for (const ports of r.portsPerWorker) assert.equal(ports.size, 1, `a worker changed connections: ${[...ports].join(', ')}`);
    assert.equal(r.isH2Broken, false, 'the h2c session survived');
    const logged = JSON.parse(line) as { listeners: { kept: string[]; stopped: string[] }; routeTablesChanged: string[] };
    assert.deepEqual(logged.listeners.kept, ['main']);
    assert.deepEqual(logged.listeners.stopped, []);
    assert.deepEqual(logged.routeTablesChanged, ['r']);
  });

  it('(b) a bad file (YAML error, then schema errors) is rejected and logged; traffic stays on the running config', async () => {
    const load = startLoad(mainPort(), 'b', 3);
    await delay(100);
    atomicWrite(sk.configPath, `${yamlOf(cfg)}\nlisteners: [ {\n`);
    const yamlLine = await waitForLog(sk, /config rejected, keeping version 2: .*YAML/);
    assert.match(yamlLine, /"level":"error"/);
    assert.match(yamlLine, /skiff\.yaml:\d+: YAML: /);

    const bad = yamlOf(cfg).replace('protocol: http1', 'protocol: spdy').replace(`address: 127.0.0.1:${mainPort()}`, 'address: 127.0.0.1:notaport');
    atomicWrite(sk.configPath, bad);
    const schemaLine = await waitForLog(sk, /config rejected, keeping version 2: .*listeners\[0\]\.address/);
    const issues = (JSON.parse(schemaLine) as { issues: string[] }).issues;
    assert.equal(issues.length, 2, issues.join('\n'));
    assert.match(issues[0], /skiff\.yaml:3: listeners\[0\]\.address: /);
    assert.match(issues[1], /skiff\.yaml:\d+: clusters\[0\]\.protocol: /);
    load.markAfter();
    await delay(300);
    const r = await load.stop();
    assert.deepEqual(r.failures.slice(0, 10), [], `${r.failures.length} failed requests`);
    const atB = pathsOf(upB, 'b');
    for (const p of r.afterPaths) assert.ok(atB.has(p), `${p} left the running config`);
    assert.doesNotMatch(sk.stderr(), /config version 3 applied/);
    // Back to the running content: nothing to apply (and rejected files used up no version).
    atomicWrite(sk.configPath, yamlOf(cfg));
    await waitForLog(sk, /config file matches the running version 2 again/);
    assert.doesNotMatch(sk.stderr(), /config version 3 applied/);
  });

  it('(c) a listener added by a reload listens, a removed one stops, the unchanged one keeps its connection', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const first = await get(mainPort(), '/c/first', agent);
    assert.equal(first.status, 200);
    const [extraPort] = await freePorts(1);
    const withExtra = { ...cfg, listeners: [...cfg.listeners, { name: 'extra', port: extraPort }] };
    atomicWrite(sk.configPath, yamlOf(withExtra));
    const line = await waitForLog(sk, /config version 3 applied/);
    assert.deepEqual((JSON.parse(line) as { listeners: { started: string[] } }).listeners.started, ['extra']);
    const viaExtra = await get(extraPort, '/c/extra', new http.Agent());
    assert.equal(viaExtra.status, 200);
    assert.ok(pathsOf(upB, 'c').has('/c/extra'));

    // Changed (protocols) on the same port: the old socket is closed first, then the new one binds.
    const changed = { ...cfg, listeners: [...cfg.listeners, { name: 'extra', port: extraPort, protocols: 'http1' }] };
    atomicWrite(sk.configPath, yamlOf(changed));
    const line4 = await waitForLog(sk, /config version 4 applied/);
    const l4 = (JSON.parse(line4) as { listeners: { kept: string[]; stopped: string[]; started: string[] } }).listeners;
    assert.deepEqual(l4, { kept: ['main'], stopped: ['extra'], started: ['extra'] });
    assert.equal((await get(extraPort, '/c/extra2', new http.Agent())).status, 200);

    atomicWrite(sk.configPath, yamlOf(cfg));
    await waitForLog(sk, /config version 5 applied/);
    await waitForLog(sk, /"listener":"extra".*"msg":"listener closed"/, 8000, 2);
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect(extraPort, '127.0.0.1', () => { s.destroy(); resolve('connected'); });
      s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    assert.equal(refused, 'ECONNREFUSED');
    const again = await get(mainPort(), '/c/again', agent);
    assert.equal(again.status, 200);
    assert.equal(again.localPort, first.localPort, 'the keep-alive connection to the unchanged listener survived three reloads');
    agent.destroy();
  });

  it('(d) a cluster endpoint changed under load: zero failures, then the new endpoint', async (t) => {
    const load = startLoad(mainPort(), 'd');
    await delay(300);
    // Route stays on cluster b; b's endpoint moves from upstream B to upstream A.
    atomicWrite(sk.configPath, yamlOf({ ...cfg, endpointsB: [upA.port] }));
    const line = await waitForLog(sk, /config version 6 applied/);
    load.markAfter();
    await delay(400);
    const r = await load.stop();
    assertSwapUnderLoad(r, upB, upA, 'd', (m) => t.diagnostic(m));
    assert.deepEqual((JSON.parse(line) as { clusters: { changed: string[] } }).clusters.changed, ['b']);
  });
});

describe('config reload, Kubernetes ..data layout', () => {
  let upA: H1Upstream;
  let upB: H1Upstream;
  let sk: SkiffProcess;
  let dir: string;
  let cfg: Config;

  before(async () => {
    upA = await startH1Upstream();
    upB = await startH1Upstream();
    const [admin, main] = await freePorts(2);
    cfg = { admin, listeners: [{ name: 'main', port: main }], route: 'a', endpointsA: [upA.port], endpointsB: [upB.port] };
    // What the kubelet mounts for a ConfigMap.
    dir = mkdtempSync(join(tmpdir(), 'skiff-k8s-'));
    mkdirSync(join(dir, '..2026_11_26_10_00_00.1'));
    writeFileSync(join(dir, '..2026_11_26_10_00_00.1', 'skiff.yaml'), yamlOf(cfg));
    symlinkSync('..2026_11_26_10_00_00.1', join(dir, '..data'));
    symlinkSync('..data/skiff.yaml', join(dir, 'skiff.yaml'));
    // A later --config wins over the one startSkiff writes.
    sk = await startSkiff(yamlOf(cfg), { args: ['--config', join(dir, 'skiff.yaml')] });
  });

  after(async () => {
    await sk.stop();
    await upA.close();
    await upB.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('(e) the ..data symlink swap reloads the config under load', async (t) => {
    const load = startLoad(cfg.listeners[0].port, 'e', 4);
    await delay(200);
    mkdirSync(join(dir, '..2026_11_26_10_05_00.2'));
    writeFileSync(join(dir, '..2026_11_26_10_05_00.2', 'skiff.yaml'), yamlOf({ ...cfg, route: 'b' }));
    symlinkSync('..2026_11_26_10_05_00.2', join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    rmSync(join(dir, '..2026_11_26_10_00_00.1'), { recursive: true });
    await waitForLog(sk, /config version 2 applied/);
    load.markAfter();
    await delay(300);
    const r = await load.stop();
    assertSwapUnderLoad(r, upA, upB, 'e', (m) => t.diagnostic(m));
  });
});
