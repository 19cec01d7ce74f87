// Balancing and resilience through the real sidecar (dist/src/cli.js) with real upstream
// servers on 127.0.0.1 whose behaviour each test sets (delay, status, up or down): endpoint
// killed and restarted under load, P2C over peak EWMA against slow and fast-failing
// endpoints, the retry budget against an always-failing upstream, circuit breakers, per-try
// timeouts, idempotency, and the outbound listener used as an HTTP proxy.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { curl } from '../helpers/clients.js';
import { scrapeMetrics, sampleValue, sumSamples } from '../helpers/prometheus.js';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

/** An HTTP/1.1 upstream whose delay and status can be changed, stopped and restarted on its port. */
class TestUpstream {
  port = 0;
  delayMs: number;
  status: number;
  hits = 0;
  private server: http.Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(delayMs = 0, status = 200) {
    this.delayMs = delayMs;
    this.status = status;
  }

  async start(port = 0): Promise<this> {
    const server = http.createServer((req, res) => {
      this.hits++;
      req.resume();
      const answer = (): void => {
        res.writeHead(this.status, { 'content-type': 'text/plain', 'x-upstream': String(this.port) });
        res.end(`${this.status} from ${this.port} ${req.method} ${req.url} host=${req.headers.host}\n`);
      };
      if (this.delayMs > 0) setTimeout(answer, this.delayMs);
      else answer();
    });
    server.keepAliveTimeout = 60_000;
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
    return this;
  }

  /** Stops listening and drops every connection (a crashed endpoint). */
  async kill(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s === null) return;
    for (const sock of this.sockets) sock.destroy();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

const upstreams: TestUpstream[] = [];
const sidecars: SkiffProcess[] = [];
after(async () => {
  await Promise.all(sidecars.map((s) => s.stop()));
  await Promise.all(upstreams.map((u) => u.kill()));
});

async function upstream(delayMs = 0, status = 200): Promise<TestUpstream> {
  const u = await new TestUpstream(delayMs, status).start();
  upstreams.push(u);
  return u;
}

/** One sidecar with a single route to cluster `app`, whose YAML body is `clusterYaml`. */
async function sidecar(clusterYaml: string, listenerExtra = ''): Promise<{ sk: SkiffProcess; port: number }> {
  const [admin, listen] = await freePorts(2);
  const sk = await startSkiff(`admin: { address: "127.0.0.1:${admin}" }
listeners:
  - name: main
    address: 127.0.0.1:${listen}
    protocols: [http1, h2c]
    routes: main
${listenerExtra}routes:
  main:
    - match: { prefix: / }
      cluster: app
      timeout: 10s
clusters:
  - name: app
    protocol: http1
${clusterYaml}`);
  sidecars.push(sk);
  return { sk, port: listen };
}

const agent = new Agent({ keepAliveTimeout: 10_000, connections: 64 });
after(() => agent.close());

interface Result {
  status: number;
  upstream: string;
  code: string;
}

async function get(port: number, path = '/', method = 'GET'): Promise<Result> {
  const res = await request(`http://127.0.0.1:${port}${path}`, { method, dispatcher: agent, body: method === 'POST' ? 'x' : undefined });
  await res.body.text();
  return { status: res.statusCode, upstream: String(res.headers['x-upstream'] ?? ''), code: String(res.headers['x-skiff-error'] ?? '') };
}

/** `total` requests with `concurrency` in flight; `between(i)` runs before request i. */
async function load(port: number, total: number, concurrency: number, between?: (i: number) => Promise<void> | void): Promise<Result[]> {
  const results: Result[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      if (between !== undefined) await between(i);
      results.push(await get(port));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

function countBy(results: readonly Result[], key: (r: Result) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of results) out[key(r)] = (out[key(r)] ?? 0) + 1;
  return out;
}

interface ClustersDoc {
  clusters: { name: string; endpoints: { address: string; ejected: boolean; health: string; ejections: number }[] }[];
}

async function clusters(sk: SkiffProcess): Promise<ClustersDoc> {
  return (await (await fetch(`http://127.0.0.1:${sk.adminPort}/clusters`)).json()) as ClustersDoc;
}

describe('one of two endpoints killed under load, then restarted', () => {
  it('no idempotent request fails, the endpoint is ejected, and it gets traffic again once back', async () => {
    const a = await upstream(2);
    const b = await upstream(2);
    // Round robin keeps sending the dead endpoint its turn, so outlier detection sees the
    // connect failures at once (P2C over peak EWMA would mostly stop choosing it after the
    // first failure's penalty, and eject it only when a later probe fails again).
    const { sk, port } = await sidecar(`    endpoints: [127.0.0.1:${a.port}, 127.0.0.1:${b.port}]
    loadBalancer: round-robin
    outlierDetection: { consecutive5xx: 3, consecutiveConnectFailures: 2, baseEjectionTime: 1s }
`);
    const results = await load(port, 400, 8, async (i) => {
      if (i === 100) await b.kill();
    });
    const failed = results.filter((r) => r.status !== 200);
    assert.deepEqual(failed, [], `every request succeeded (${failed.length} failed)`);
    const ep = (await clusters(sk)).clusters[0].endpoints.find((e) => e.address === `127.0.0.1:${b.port}`);
    assert.ok(ep !== undefined && ep.ejections >= 1, `the dead endpoint was ejected: ${JSON.stringify(ep)}`);
    const families = await scrapeMetrics(`http://127.0.0.1:${sk.adminPort}/metrics`);
    assert.ok(sumSamples(families, 'skiff_upstream_retries_total', { cluster: 'app' }) >= 1, 'the failures were retried');
    assert.ok((sampleValue(families, 'skiff_outlier_ejections_total', { cluster: 'app' }) ?? 0) >= 1);

    await b.start(b.port);
    const hitsBefore = b.hits;
    // Once its ejection runs out (1 s per ejection so far) the endpoint is probed and,
    // answering well, used again.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const e = (await clusters(sk)).clusters[0].endpoints.find((x) => x.address === `127.0.0.1:${b.port}`);
      if (e !== undefined && !e.ejected) break;
      assert.ok(Date.now() < deadline, 'the ejection ends');
      await new Promise((r) => setTimeout(r, 100));
    }
    const again = await load(port, 200, 4);
    assert.ok(again.every((r) => r.status === 200));
    assert.ok(b.hits - hitsBefore >= 20, `the restarted endpoint receives traffic again: ${b.hits - hitsBefore} of 200`);
  });
});

describe('P2C over peak EWMA', () => {
  it('a slow endpoint receives a measurably smaller share than a fast one', async () => {
    const fast = await upstream(2);
    const slow = await upstream(80);
    const { port } = await sidecar(`    endpoints: [127.0.0.1:${fast.port}, 127.0.0.1:${slow.port}]
    loadBalancer: p2c-ewma
`);
    const results = await load(port, 300, 6);
    const by = countBy(results, (r) => r.upstream);
    const slowShare = (by[String(slow.port)] ?? 0) / results.length;
    assert.ok(slowShare < 0.2, `slow endpoint share ${(slowShare * 100).toFixed(1)}% (${JSON.stringify(by)})`);
  });

  it('an endpoint answering fast 503s does not receive a larger share', async () => {
    const failing = await upstream(0, 503);
    const healthy = await upstream(15);
    const { port } = await sidecar(`    endpoints: [127.0.0.1:${failing.port}, 127.0.0.1:${healthy.port}]
    loadBalancer: p2c-ewma
    retries: { attempts: 0 }
    outlierDetection: null
`);
    const results = await load(port, 300, 4);
    const failingShare = results.filter((r) => r.status === 503).length / results.length;
    assert.ok(failingShare < 0.25, `the fast-failing endpoint got ${(failingShare * 100).toFixed(1)}% of requests`);
  });
});

describe('retries', () => {
  it('against an upstream failing every request, attempts stay within the retry budget (counted)', async () => {
    const broken = await upstream(0, 503);
    const { sk, port } = await sidecar(`    endpoints: [127.0.0.1:${broken.port}]
    retries: { attempts: 2, budgetPercent: 20, minRetriesPerSecond: 1, backoffBase: 1ms, backoffMax: 2ms }
    outlierDetection: null
`);
    const results = await load(port, 100, 1);
    assert.ok(results.every((r) => r.status === 503), 'the 503 reaches the client once retries are spent');
    const retries = broken.hits - 100;
    // Budget over the 10 s window: 1/s floor x 10 s + 20% of 100 requests = 30 (without it: 200).
    assert.ok(retries > 0 && retries <= 30, `retries made: ${retries}`);
    const families = await scrapeMetrics(`http://127.0.0.1:${sk.adminPort}/metrics`);
    assert.equal(sumSamples(families, 'skiff_upstream_retries_total', { cluster: 'app' }), retries, 'every retry is counted');
    assert.ok((sampleValue(families, 'skiff_retry_budget_exhausted_total', { cluster: 'app' }) ?? 0) > 0, 'refused retries are counted');
  });

  it('a GET answered 503 is retried, a POST is not (not idempotent)', async () => {
    const broken = await upstream(0, 503);
    const { port } = await sidecar(`    endpoints: [127.0.0.1:${broken.port}]
    retries: { attempts: 2, backoffBase: 1ms, backoffMax: 2ms }
    outlierDetection: null
`);
    assert.equal((await get(port, '/post', 'POST')).status, 503);
    assert.equal(broken.hits, 1, 'the POST went upstream once');
    assert.equal((await get(port, '/get')).status, 503);
    assert.equal(broken.hits, 1 + 3, 'the GET was tried three times');
  });

  it('a per-try timeout moves a request from a stalled endpoint to a healthy one', async () => {
    const stalled = await upstream(3000);
    const healthy = await upstream(1);
    const { port } = await sidecar(`    endpoints: [127.0.0.1:${stalled.port}, 127.0.0.1:${healthy.port}]
    loadBalancer: round-robin
    retries: { attempts: 2, perTryTimeout: 150ms, retryOn: [gateway-error, connect-failure] }
    outlierDetection: null
`);
    const started = Date.now();
    const results = await load(port, 10, 2);
    assert.ok(results.every((r) => r.status === 200 && r.upstream === String(healthy.port)), JSON.stringify(countBy(results, (r) => `${r.status}/${r.upstream}`)));
    assert.ok(Date.now() - started < 2500, 'no request waited for the stalled endpoint');
    assert.ok(stalled.hits >= 1, 'the stalled endpoint was tried');
  });
});

describe('circuit breakers', () => {
  it('requests above maxRequests fail fast with 503 SKIFF_ERR_OVERLOADED, and are counted', async () => {
    const slow = await upstream(300);
    const { sk, port } = await sidecar(`    endpoints: [127.0.0.1:${slow.port}]
    circuitBreakers: { maxRequests: 2 }
`);
    const results = await Promise.all(Array.from({ length: 8 }, () => get(port)));
    const ok = results.filter((r) => r.status === 200).length;
    const refused = results.filter((r) => r.status === 503 && r.code === 'SKIFF_ERR_OVERLOADED').length;
    assert.equal(ok, 2, 'two requests in flight at once');
    assert.equal(refused, 6);
    assert.equal(slow.hits, 2, 'the refused ones never reached the upstream');
    const families = await scrapeMetrics(`http://127.0.0.1:${sk.adminPort}/metrics`);
    assert.equal(sampleValue(families, 'skiff_circuit_breaker_overflows_total', { cluster: 'app', limit: 'maxRequests' }), 6);
    assert.equal(sampleValue(families, 'istio_requests_total', { response_code: '503', response_flags: 'UO' }), 6);
  });
});

describe('the outbound listener as an HTTP proxy', () => {
  it('absolute-form requests (HTTP_PROXY) are routed by their authority', async () => {
    const backend = await upstream(0);
    const [admin, listen] = await freePorts(2);
    const sk = await startSkiff(`admin: { address: "127.0.0.1:${admin}" }
listeners:
  - name: outbound
    direction: outbound
    address: 127.0.0.1:${listen}
    protocols: [http1, h2c]
    routes: outbound
routes:
  outbound:
    - match: { authority: backend.mesh.internal }
      cluster: backend
clusters:
  - name: backend
    protocol: http1
    endpoints: [127.0.0.1:${backend.port}]
`);
    sidecars.push(sk);
    const res = await curl(['-x', `http://127.0.0.1:${listen}`, 'http://backend.mesh.internal/orders?id=7']);
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), `200 from ${backend.port} GET /orders?id=7 host=backend.mesh.internal\n`);
    const other = await curl(['-x', `http://127.0.0.1:${listen}`, 'http://unknown.mesh.internal/']);
    assert.equal(other.status, 404, 'an authority without a route is 404 NR');
  });
});
