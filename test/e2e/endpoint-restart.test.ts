// Endpoint restarts under load (issue 7 item 6): the real sidecar in front of two upstream
// endpoint processes, each serving HTTP/1.1 and h2c on its own ports, reached through two
// clusters (protocol http1 and h2c) with retries on connect-failure, refused-stream and
// reset. Keep-alive HTTP/1.1 clients and an h2c session send idempotent GETs without pause
// while endpoint A's process is stopped and restarted twice: first gracefully (SIGTERM: it
// stops accepting, closes idle keep-alive connections, sends GOAWAY, finishes what it has),
// then hard (SIGKILL: every connection reset, requests in flight lost). Zero requests may
// fail, and A must carry traffic again after each restart (so the second stop really hits
// pooled connections). Processes started here are stopped by their PID.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import http2 from 'node:http2';
import { after, before, describe, it } from 'node:test';
import { h1GetText } from '../helpers/clients.js';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

const HOST = '127.0.0.1';

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The endpoint process: HTTP/1.1 on argv[1], h2c on argv[2], answering `NAME PATH` after
 * 2-20 ms. SIGTERM is a graceful stop the way a well-behaved service does it.
 */
const ENDPOINT_SCRIPT = `
const http = require('node:http');
const http2 = require('node:http2');
const [name, h1Port, h2Port] = process.argv.slice(1);
const answer = (path, end) => setTimeout(() => end(name + ' ' + path), 2 + Math.floor(Math.random() * 19));
const h1 = http.createServer({ keepAliveTimeout: 30000 }, (req, res) => { req.resume(); answer(req.url, (b) => res.end(b)); });
const sessions = new Set();
const h2 = http2.createServer();
h2.on('session', (s) => { sessions.add(s); s.on('close', () => sessions.delete(s)); s.on('error', () => {}); });
h2.on('stream', (stream, headers) => {
  stream.on('error', () => {});
  answer(headers[':path'], (b) => { if (!stream.destroyed) { stream.respond({ ':status': 200 }); stream.end(b); } });
});
let up = 0;
const ready = () => { if (++up === 2) process.stdout.write('listening\\n'); };
h1.listen(Number(h1Port), '127.0.0.1', ready);
h2.listen(Number(h2Port), '127.0.0.1', ready);
let h1Busy = 0;
h1.on('request', (req, res) => { h1Busy++; res.on('close', () => { h1Busy--; }); });
process.on('SIGTERM', () => {
  h1.close(); // stops accepting; Node 19+ also closes idle keep-alive connections
  h2.close();
  for (const s of sessions) s.close(); // GOAWAY: streams in progress finish
  setInterval(() => {
    h1.closeIdleConnections(); // busy ones once their response is out
    if (sessions.size === 0 && h1Busy === 0) process.exit(0);
  }, 10);
  setTimeout(() => process.exit(0), 3000).unref();
});
`;

interface Endpoint {
  name: string;
  h1Port: number;
  h2Port: number;
  child: ChildProcess | null;
}

async function startEndpoint(ep: Endpoint): Promise<void> {
  const child = spawn(process.execPath, ['-e', ENDPOINT_SCRIPT, ep.name, String(ep.h1Port), String(ep.h2Port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  ep.child = child;
  let err = '';
  child.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`endpoint ${ep.name} did not start: ${err}`)), 10_000);
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`endpoint ${ep.name} exited (${code}) before listening: ${err}`));
    });
  });
}

/** Sends `signal` to the endpoint's process by PID and waits until it is gone. */
async function stopEndpoint(ep: Endpoint, signal: NodeJS.Signals): Promise<void> {
  const child = ep.child;
  ep.child = null;
  if (child === null || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid, signal);
  const grace = setTimeout(() => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
  }, 5000);
  await exited;
  clearTimeout(grace);
}

interface LoadResult {
  ok: number;
  failures: string[];
  /** Responses per endpoint name, counted as they arrive. */
  byEndpoint: Map<string, number>;
}

function h2Get(session: http2.ClientHttp2Session, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':path': path });
    let status = 0;
    let body = '';
    s.setEncoding('utf8');
    s.on('response', (h) => { status = Number(h[':status']); });
    s.on('data', (d: string) => { body += d; });
    s.on('end', () => resolve({ status, body }));
    s.on('close', () => reject(new Error(`stream closed before its end (RST_STREAM ${s.rstCode ?? 'none'})`)));
    s.on('error', reject);
    s.end();
  });
}

/** Steady load: `h1Workers` keep-alive HTTP/1.1 loops to /h1/, one h2c session with `h2Streams` loops to /h2/. */
function startLoad(port: number, h1Workers: number, h2Streams: number): { result: LoadResult; stop(): Promise<void> } {
  const result: LoadResult = { ok: 0, failures: [], byEndpoint: new Map() };
  let isStopping = false;
  const note = (path: string, r: { status: number; body: string }): void => {
    const name = r.body.split(' ')[0];
    if (r.status === 200 && r.body.endsWith(` ${path}`)) {
      result.ok++;
      result.byEndpoint.set(name, (result.byEndpoint.get(name) ?? 0) + 1);
    } else {
      result.failures.push(`${path}: ${r.status} ${r.body.slice(0, 120)}`);
    }
  };
  const tasks: Promise<void>[] = [];
  for (let w = 0; w < h1Workers; w++) {
    tasks.push((async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      for (let i = 0; !isStopping; i++) {
        const path = `/h1/${w}-${i}`;
        try {
          note(path, await h1GetText(port, path, agent, 10_000));
        } catch (err) {
          result.failures.push(`${path}: ${(err as Error).message}`);
        }
      }
      agent.destroy();
    })());
  }
  const session = http2.connect(`http://${HOST}:${port}`);
  session.on('error', (err) => result.failures.push(`h2c session: ${err.message}`));
  for (let w = 0; w < h2Streams; w++) {
    tasks.push((async () => {
      for (let i = 0; !isStopping; i++) {
        const path = `/h2/${w}-${i}`;
        try {
          note(path, await h2Get(session, path));
        } catch (err) {
          result.failures.push(`${path}: ${(err as Error).message}`);
        }
      }
    })());
  }
  return {
    result,
    async stop() {
      isStopping = true;
      await Promise.all(tasks);
      session.close();
    },
  };
}

async function waitForTraffic(result: LoadResult, name: string, more: number, timeoutMs: number): Promise<void> {
  const target = (result.byEndpoint.get(name) ?? 0) + more;
  const end = Date.now() + timeoutMs;
  while ((result.byEndpoint.get(name) ?? 0) < target) {
    if (Date.now() > end) throw new Error(`endpoint ${name} got no traffic back within ${timeoutMs} ms (${JSON.stringify([...result.byEndpoint])})`);
    await delay(50);
  }
}

describe('endpoint restarts under load', () => {
  const a: Endpoint = { name: 'A', h1Port: 0, h2Port: 0, child: null };
  const b: Endpoint = { name: 'B', h1Port: 0, h2Port: 0, child: null };
  let sk: SkiffProcess | null = null;
  let listen = 0;

  before(async () => {
    const [admin, l, a1, a2, b1, b2] = await freePorts(6);
    listen = l;
    Object.assign(a, { h1Port: a1, h2Port: a2 });
    Object.assign(b, { h1Port: b1, h2Port: b2 });
    await Promise.all([startEndpoint(a), startEndpoint(b)]);
    // Balancers that send to a restarted endpoint at once (p2c-ewma would keep A idle for
    // 10-20 s behind its decaying failure penalty, by design: EWMA_DECAY_MS), so the second
    // stop hits pooled connections and requests in flight; a short ejection for the same reason.
    const cluster = (name: string, protocol: string, balancer: string, pa: number, pb: number): string =>
      `  - name: ${name}
    protocol: ${protocol}
    loadBalancer: ${balancer}
    endpoints: [${HOST}:${pa}, ${HOST}:${pb}]
    connectTimeout: 1s
    retries: { attempts: 3, retryOn: [connect-failure, refused-stream, reset] }
    outlierDetection: { consecutiveConnectFailures: 3, baseEjectionTime: 500ms, maxEjectionTime: 1s }
`;
    sk = await startSkiff(`admin: { address: ${HOST}:${admin} }
listeners:
  - { name: in, address: ${HOST}:${listen}, protocols: [http1, h2c], routes: r }
routes:
  r:
    - { match: { prefix: /h1/ }, cluster: app-h1 }
    - { match: { prefix: /h2/ }, cluster: app-h2c }
clusters:
${cluster('app-h1', 'http1', 'round-robin', a.h1Port, b.h1Port)}${cluster('app-h2c', 'h2c', 'least-request', a.h2Port, b.h2Port)}`);
  });

  after(async () => {
    await sk?.stop();
    await stopEndpoint(a, 'SIGKILL');
    await stopEndpoint(b, 'SIGKILL');
  });

  it('idempotent GETs over HTTP/1.1 and h2c see zero failures while an endpoint is stopped (graceful, then hard) and restarted twice', async () => {
    assert.ok(sk !== null);
    const load = startLoad(listen, 6, 6);
    const phases: string[] = [];
    const t0 = performance.now();
    const mark = (what: string): void => {
      phases.push(`${((performance.now() - t0) / 1000).toFixed(1)} s ${what}: ok ${load.result.ok}, failed ${load.result.failures.length}, ${JSON.stringify([...load.result.byEndpoint])}`);
    };
    try {
      await waitForTraffic(load.result, 'A', 100, 10_000);
      await waitForTraffic(load.result, 'B', 100, 10_000);
      mark('steady');
      await stopEndpoint(a, 'SIGTERM');
      mark('A stopped (SIGTERM)');
      await delay(800);
      await startEndpoint(a);
      mark('A restarted');
      await waitForTraffic(load.result, 'A', 100, 10_000);
      mark('A serving again');
      await stopEndpoint(a, 'SIGKILL');
      mark('A killed (SIGKILL)');
      await delay(800);
      await startEndpoint(a);
      mark('A restarted');
      await waitForTraffic(load.result, 'A', 100, 10_000);
      mark('A serving again');
    } finally {
      await load.stop();
    }
    mark('end');
    const clusters = ((await (await fetch(`http://${HOST}:${sk.adminPort}/clusters`)).json()) as { clusters: Array<{ name: string; retries: object; retriesBudgetExhausted: number; ejectionsTotal: number }> }).clusters;
    const retries = clusters.map((c) => `${c.name} retries ${JSON.stringify(c.retries)}, budget exhausted ${c.retriesBudgetExhausted}, ejections ${c.ejectionsTotal}`);
    process.stdout.write(`# endpoint restarts:\n${[...phases, ...retries].map((p) => `#   ${p}`).join('\n')}\n`);
    assert.deepEqual(load.result.failures, [], `failed requests:\n${load.result.failures.slice(0, 20).join('\n')}`);
    assert.ok(load.result.ok > 1000, `load ran (${load.result.ok} requests)`);
  });
});
