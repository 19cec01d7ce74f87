// xDS (issue 8) seen from outside: the real sidecar configured only by a management server
// written in the test with @grpc/grpc-js (test/helpers/xds-server.ts), serving delta and
// state-of-the-world ADS from fixtures, in front of real HTTP/1.1 and h2c upstreams.
//   (a) initial configuration serves traffic, over delta; and over state-of-the-world when
//       the server has no delta (the client falls back on UNIMPLEMENTED);
//   (b) an endpoint added and one removed under load: zero failed requests, then only the
//       remaining endpoints answer;
//   (c) a route change takes effect;
//   (d) an unsupported filter is NACKed with an error naming it, the previous config keeps
//       serving;
//   (e) the management server restarts: config kept, the client reconnects and resyncs, and
//       a change made while it was away arrives;
//   (f) a delta removal removes the cluster (its route then answers 503);
//   (g) /config_dump shows each resource's version; the node identity reaches the server.
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE } from '../../mesh/xds/protos.js';
import { ensureCerts } from '../helpers/certs.js';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { startXdsServer, type XdsServer } from '../helpers/xds-server.js';
import { edsCluster, faultFilter, httpListener, loadAssignment, route, routeConfiguration, virtualHost } from '../helpers/xds-fixtures.js';

const NODE_ID = 'sidecar~127.0.0.1~web-0.default~default.svc.cluster.local';

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface NamedUpstream {
  readonly name: string;
  readonly port: number;
  hits: number;
  close(): Promise<void>;
}

/** An HTTP/1.1 (or h2c) server answering its own name. */
async function namedUpstream(name: string, h2 = false): Promise<NamedUpstream> {
  const up = { name, port: 0, hits: 0, close: async () => {} };
  const handler = (_req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): void => {
    up.hits++;
    res.setHeader('content-type', 'text/plain');
    res.end(name);
  };
  const server = h2 ? http2.createServer(handler) : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  up.port = (server.address() as AddressInfo).port;
  up.close = () =>
    new Promise<void>((resolve) => {
      if ('closeAllConnections' in server) server.closeAllConnections();
      server.close(() => resolve());
    });
  return up;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

function get(port: number, path = '/', host = 'svc.local'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent, headers: { host } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

async function eventually<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean, ms = 8000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: T | undefined;
  for (;;) {
    try {
      last = await fn();
      if (ok(last)) return last;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms (last: ${JSON.stringify(last)})`);
    await delay(25);
  }
}

/** Steady GETs from `workers` keep-alive clients until stopped; counts failures. */
function load(port: number, workers = 4): { stop(): Promise<{ ok: number; failed: string[]; bodies: Map<string, number> }> } {
  let isRunning = true;
  let ok = 0;
  const failed: string[] = [];
  const bodies = new Map<string, number>();
  const loops = Array.from({ length: workers }, async () => {
    while (isRunning) {
      try {
        const r = await get(port);
        if (r.status === 200) {
          ok++;
          bodies.set(r.body, (bodies.get(r.body) ?? 0) + 1);
        } else failed.push(`${r.status} ${r.body.slice(0, 80)}`);
      } catch (err) {
        failed.push((err as Error).message);
      }
    }
  });
  return {
    async stop() {
      isRunning = false;
      await Promise.all(loops);
      return { ok, failed, bodies };
    },
  };
}

function skiffYaml(admin: number, server: string, extra = '', xdsExtra = ''): string {
  return `admin: { address: 127.0.0.1:${admin} }
xds:
  server: ${server}
${xdsExtra}  node:
    id: ${NODE_ID}
    cluster: web
    locality: { region: eu-west-1, zone: eu-west-1a }
    metadata: { ISTIO_VERSION: "1.24.0" }
  backoffBase: 50ms
  backoffMax: 400ms
  initialFetchTimeout: 20s
${extra}telemetry: { logLevel: info }
`;
}

async function configDump(admin: number): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${admin}/config_dump`);
  return (await res.json()) as Record<string, unknown>;
}

/** Sets up listener L on `port` with routes R → cluster `cluster` (EDS `cluster`) with `endpoints`. */
function serveBasic(xds: XdsServer, port: number, endpoints: readonly NamedUpstream[], cluster = 'backend'): void {
  xds.store.update((s) => {
    s.set(CLUSTER_TYPE, cluster, edsCluster(cluster));
    s.set(ENDPOINT_TYPE, cluster, loadAssignment(cluster, endpoints.map((u) => ({ host: '127.0.0.1', port: u.port }))));
    s.set(LISTENER_TYPE, 'inbound_http', httpListener('inbound_http', { host: '127.0.0.1', port }, 'routes'));
    s.set(ROUTE_TYPE, 'routes', routeConfiguration('routes', [virtualHost('all', ['*'], [route({ prefix: '/', cluster })])]));
  });
}

describe('xDS: the sidecar configured by a management server (delta ADS)', { timeout: 120_000 }, () => {
  let xds: XdsServer;
  let sk: SkiffProcess;
  let a: NamedUpstream;
  let b: NamedUpstream;
  let c: NamedUpstream;
  let h2up: NamedUpstream;
  let admin: number;
  let port: number;

  before(async () => {
    [a, b, c, h2up] = await Promise.all([namedUpstream('a'), namedUpstream('b'), namedUpstream('c'), namedUpstream('h2', true)]);
    [admin, port] = await freePorts(2);
    xds = await startXdsServer();
    serveBasic(xds, port, [a]);
    sk = await startSkiff(skiffYaml(admin, xds.address));
  });

  after(async () => {
    await sk?.stop();
    await xds?.stop();
    agent.destroy();
    await Promise.all([a, b, c, h2up].map((u) => u?.close()));
  });

  it('(a) serves traffic from the initial configuration; the server saw the node identity and ACKs', async () => {
    const r = await get(port);
    assert.deepEqual(r, { status: 200, body: 'a' });
    const first = xds.requests.find((q) => q.form === 'delta' && q.node !== null);
    assert.ok(first, 'a delta request with the node');
    assert.equal(first.node?.id, NODE_ID);
    assert.equal(first.node?.cluster, 'web');
    assert.deepEqual(first.node?.locality, { region: 'eu-west-1', zone: 'eu-west-1a' });
    assert.equal(xds.requests.filter((q) => q.node !== null).length, 1, 'node only on the first request of the stream');
    for (const t of [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]) assert.ok(xds.acked(t), `ACK for ${t}\n${xds.describeRequests()}`);
    assert.equal(xds.requests.filter((q) => q.kind === 'nack').length, 0, xds.describeRequests());
    // Named types are subscribed by name; the wildcard ones as wildcards.
    const eds = xds.requests.find((q) => q.typeUrl === ENDPOINT_TYPE && q.subscribe.length > 0);
    assert.deepEqual(eds?.subscribe, ['backend']);
    const rds = xds.requests.find((q) => q.typeUrl === ROUTE_TYPE && q.subscribe.length > 0);
    assert.deepEqual(rds?.subscribe, ['routes']);
  });

  it('(g) /config_dump shows the stream and each resource with its version', async () => {
    const dump = await configDump(admin);
    const x = dump.xds as { client: { form: string; connected: boolean }; synced: boolean; resources: Record<string, { name: string; version: string }[]> };
    assert.equal(x.client.form, 'delta');
    assert.equal(x.client.connected, true);
    assert.equal(x.synced, true);
    const cl = x.resources.clusters.find((r) => r.name === 'backend');
    assert.equal(cl?.version, xds.store.versionOf(CLUSTER_TYPE, 'backend'));
    assert.equal(x.resources.endpoints[0].version, xds.store.versionOf(ENDPOINT_TYPE, 'backend'));
    assert.equal(x.resources.listeners[0].version, xds.store.versionOf(LISTENER_TYPE, 'inbound_http'));
    assert.equal(x.resources.routes[0].version, xds.store.versionOf(ROUTE_TYPE, 'routes'));
    const listeners = dump.listeners as { name: string }[];
    assert.deepEqual(listeners.map((l) => l.name), ['inbound_http']);
  });

  it('(b) an endpoint added and one removed under load: zero failed requests', async () => {
    const run = load(port);
    await delay(300);
    xds.store.set(ENDPOINT_TYPE, 'backend', loadAssignment('backend', [a, b].map((u) => ({ host: '127.0.0.1', port: u.port }))));
    await eventually('b answers', async () => b.hits, (h) => h > 5);
    xds.store.set(ENDPOINT_TYPE, 'backend', loadAssignment('backend', [b, c].map((u) => ({ host: '127.0.0.1', port: u.port }))));
    await eventually('c answers', async () => c.hits, (h) => h > 5);
    await delay(300);
    const res = await run.stop();
    assert.deepEqual(res.failed, [], `failed requests: ${res.failed.slice(0, 5).join(', ')}`);
    assert.ok(res.ok > 50, `requests under load: ${res.ok}`);
    // After the removal, a no longer gets requests.
    const aBefore = a.hits;
    for (let i = 0; i < 20; i++) assert.notEqual((await get(port)).body, 'a');
    assert.equal(a.hits, aBefore);
  });

  it('(c) a route change takes effect (a path to a new h2c cluster; a host-specific virtual host)', async () => {
    xds.store.update((s) => {
      s.set(CLUSTER_TYPE, 'h2', edsCluster('h2', { http2: true }));
      s.set(ENDPOINT_TYPE, 'h2', loadAssignment('h2', [{ host: '127.0.0.1', port: h2up.port }]));
      s.set(ROUTE_TYPE, 'routes', routeConfiguration('routes', [
        virtualHost('special', ['special.local', 'special.local:80'], [route({ prefix: '/', cluster: 'backend' })]),
        virtualHost('all', ['*'], [route({ prefix: '/grpcish', cluster: 'h2' }), route({ prefix: '/', cluster: 'backend' })]),
      ]));
    });
    const r = await eventually('route to h2', () => get(port, '/grpcish/x'), (v) => v.status === 200 && v.body === 'h2');
    assert.equal(r.body, 'h2');
    assert.equal((await get(port, '/grpcish/y', 'special.local')).body !== 'h2', true, 'the exact-domain virtual host wins');
    assert.notEqual((await get(port, '/other')).body, 'h2');
  });

  it('(d) an unsupported http filter is NACKed with its name; the previous config keeps serving', async () => {
    const before = xds.nacks(LISTENER_TYPE).length;
    xds.store.set(LISTENER_TYPE, 'inbound_http', httpListener('inbound_http', { host: '127.0.0.1', port }, 'routes', { httpFilters: [faultFilter()] }));
    const nack = await xds.waitForNack(LISTENER_TYPE);
    assert.ok(xds.nacks(LISTENER_TYPE).length > before);
    assert.match(nack.errorDetail?.message ?? '', /envoy\.filters\.http\.fault/);
    assert.match(nack.errorDetail?.message ?? '', /HTTPFault/);
    assert.equal((await get(port, '/grpcish/z')).body, 'h2', 'the running config still serves');
    assert.match(sk.stderr(), /xDS update rejected \(NACK\)/);
    // A fixed listener is accepted again.
    xds.store.set(LISTENER_TYPE, 'inbound_http', httpListener('inbound_http', { host: '127.0.0.1', port }, 'routes'));
    await xds.waitForAck(LISTENER_TYPE, xds.store.versionOf(LISTENER_TYPE, 'inbound_http'));
    const dump = await configDump(admin);
    const x = dump.xds as { client: { types: Record<string, { lastNack: { message: string } | null }> } };
    assert.match(x.client.types[LISTENER_TYPE].lastNack?.message ?? '', /fault/);
  });

  it('(e) the management server restarts: config kept while it is away, reconnect and resync', async () => {
    const connectsBefore = ((await configDump(admin)).xds as { client: { connects: number } }).client.connects;
    await xds.stop();
    for (let i = 0; i < 10; i++) assert.equal((await get(port, '/grpcish/1')).body, 'h2', 'serving while disconnected');
    // A change made while the sidecar is disconnected.
    xds.store.set(ENDPOINT_TYPE, 'backend', loadAssignment('backend', [{ host: '127.0.0.1', port: a.port }]));
    await xds.restart();
    await eventually('reconnected and resynced', () => get(port, '/'), (v) => v.body === 'a');
    const dump = await configDump(admin);
    const x = dump.xds as { client: { connects: number; connected: boolean } };
    assert.ok(x.client.connects > connectsBefore);
    assert.equal(x.client.connected, true);
    // The resubscription told the server what it already had.
    const resync = [...xds.requests].reverse().find((q) => q.typeUrl === CLUSTER_TYPE && q.kind === 'initial');
    assert.ok(resync !== undefined && Object.keys(resync.initialResourceVersions).includes('backend'), xds.describeRequests());
  });

  it('(f) a delta removal removes the cluster: its route answers 503', async () => {
    xds.store.remove(CLUSTER_TYPE, 'h2');
    const r = await eventually('h2 removed', () => get(port, '/grpcish/q'), (v) => v.status === 503);
    assert.equal(r.status, 503);
    const dump = await configDump(admin);
    const clusters = dump.clusters as { name: string; endpoints: unknown[] }[];
    assert.deepEqual(clusters.find((cl) => cl.name === 'h2')?.endpoints, [], 'the route keeps an empty cluster of that name');
    const x = dump.xds as { resources: { clusters: { name: string }[]; endpoints: { name: string }[] } };
    assert.deepEqual(x.resources.clusters.map((r2) => r2.name), ['backend']);
    assert.deepEqual(x.resources.endpoints.map((r2) => r2.name), ['backend'], 'its endpoints are forgotten too');
    const unsub = xds.requests.find((q) => q.typeUrl === ENDPOINT_TYPE && q.unsubscribe.includes('h2'));
    assert.ok(unsub, 'the EDS name is unsubscribed');
    assert.equal((await get(port, '/')).status, 200);
  });
});

describe('xDS: state-of-the-world fallback', { timeout: 60_000 }, () => {
  let xds: XdsServer;
  let sk: SkiffProcess;
  let a: NamedUpstream;
  let b: NamedUpstream;
  let admin: number;
  let port: number;

  before(async () => {
    [a, b] = await Promise.all([namedUpstream('a'), namedUpstream('b')]);
    [admin, port] = await freePorts(2);
    xds = await startXdsServer({ delta: false });
    serveBasic(xds, port, [a]);
    sk = await startSkiff(skiffYaml(admin, xds.address));
  });

  after(async () => {
    await sk?.stop();
    await xds?.stop();
    await Promise.all([a, b].map((u) => u?.close()));
  });

  it('falls back to StreamAggregatedResources when delta is UNIMPLEMENTED, and serves', async () => {
    assert.deepEqual(await get(port), { status: 200, body: 'a' });
    const dump = await configDump(admin);
    assert.equal((dump.xds as { client: { form: string } }).client.form, 'sotw');
    assert.ok(xds.requests.some((q) => q.form === 'sotw' && q.kind === 'ack' && q.typeUrl === LISTENER_TYPE));
    assert.match(sk.stderr(), /no delta xDS; using state-of-the-world/);
  });

  it('an endpoint change under load: zero failures; a cluster missing from the next full response is removed', async () => {
    const run = load(port);
    await delay(200);
    xds.store.set(ENDPOINT_TYPE, 'backend', loadAssignment('backend', [{ host: '127.0.0.1', port: b.port }]));
    await eventually('b answers', async () => b.hits, (h) => h > 5);
    const res = await run.stop();
    assert.deepEqual(res.failed, []);
    xds.store.update((s) => {
      s.set(CLUSTER_TYPE, 'other', edsCluster('other'));
      s.set(ENDPOINT_TYPE, 'other', loadAssignment('other', [{ host: '127.0.0.1', port: a.port }]));
      s.set(ROUTE_TYPE, 'routes', routeConfiguration('routes', [virtualHost('all', ['*'], [route({ prefix: '/other', cluster: 'other' }), route({ prefix: '/', cluster: 'backend' })])]));
    });
    await eventually('other serves', () => get(port, '/other'), (v) => v.body === 'a');
    xds.store.remove(CLUSTER_TYPE, 'other');
    await eventually('other removed', () => get(port, '/other'), (v) => v.status === 503);
  });

  it('an invalid cluster is NACKed with the last accepted version; the running config stays', async () => {
    const acceptedVersion = [...xds.requests].reverse().find((q) => q.typeUrl === CLUSTER_TYPE && q.kind === 'ack')?.versionInfo;
    xds.store.set(CLUSTER_TYPE, 'ring', { ...edsCluster('ring'), lbPolicy: 'RING_HASH' });
    const nack = await xds.waitForNack(CLUSTER_TYPE);
    assert.match(nack.errorDetail?.message ?? '', /Cluster "ring": lb_policy RING_HASH is not supported/);
    assert.equal(nack.versionInfo, acceptedVersion);
    assert.equal((await get(port)).status, 200);
  });
});

describe('xDS alongside a file: warming, and names the file owns', { timeout: 60_000 }, () => {
  let xds: XdsServer;
  let sk: SkiffProcess;
  let a: NamedUpstream;
  let admin: number;
  let filePort: number;
  let xdsPort: number;

  before(async () => {
    a = await namedUpstream('a');
    [admin, filePort, xdsPort] = await freePorts(3);
    xds = await startXdsServer();
    const fileParts = `listeners:
  - { name: file_listener, address: 127.0.0.1:${filePort}, protocols: [http1], routes: file_routes }
routes:
  file_routes:
    - { match: { prefix: / }, cluster: file_cluster }
clusters:
  - { name: file_cluster, protocol: http1, endpoints: [127.0.0.1:${a.port}] }
`;
    sk = await startSkiff(skiffYaml(admin, xds.address, fileParts).replace('initialFetchTimeout: 20s', 'initialFetchTimeout: 1s'));
  });

  after(async () => {
    await sk?.stop();
    await xds?.stop();
    await a?.close();
  });

  it('the file listener serves; an EDS cluster without endpoints is warming and not used until they come', async () => {
    assert.equal((await get(filePort)).body, 'a');
    xds.store.update((s) => {
      s.set(CLUSTER_TYPE, 'late', edsCluster('late'));
      s.set(LISTENER_TYPE, 'x', httpListener('x', { host: '127.0.0.1', port: xdsPort }, 'xr'));
      // An xDS route may use a cluster the file defines.
      s.set(ROUTE_TYPE, 'xr', routeConfiguration('xr', [virtualHost('all', ['*'], [route({ prefix: '/late', cluster: 'late' }), route({ prefix: '/', cluster: 'file_cluster' })])]));
    });
    await eventually('xDS listener up', () => get(xdsPort), (v) => v.body === 'a');
    const dump = await configDump(admin);
    assert.deepEqual((dump.xds as { warming: { clusters: string[] } }).warming.clusters, ['late']);
    assert.equal((await get(xdsPort, '/late')).status, 503, 'not warm: no cluster of that name yet');
    xds.store.set(ENDPOINT_TYPE, 'late', loadAssignment('late', [{ host: '127.0.0.1', port: a.port }]));
    await eventually('late warm', () => get(xdsPort, '/late'), (v) => v.status === 200);
  });

  it('an xDS cluster named like a file cluster is NACKed', async () => {
    xds.store.set(CLUSTER_TYPE, 'file_cluster', edsCluster('file_cluster'));
    const nack = await xds.waitForNack(CLUSTER_TYPE);
    assert.match(nack.errorDetail?.message ?? '', /the config file has a cluster of that name/);
    assert.equal((await get(filePort)).body, 'a');
  });
});

describe('xDS over a unix socket with mutual TLS (a pilot-agent style local socket)', { timeout: 60_000 }, () => {
  let xds: XdsServer;
  let sk: SkiffProcess;
  let a: NamedUpstream;
  let admin: number;
  let port: number;
  let dir: string;

  before(async () => {
    a = await namedUpstream('a');
    [admin, port] = await freePorts(2);
    dir = mkdtempSync(join(tmpdir(), 'skiff-xds-'));
    const certs = ensureCerts();
    xds = await startXdsServer({ unixSocket: join(dir, 'xds.sock'), tls: { cert: certs.pem.cert, key: certs.pem.key, ca: certs.pem.ca } });
    serveBasic(xds, port, [a]);
    const tls = `  tls: { ca: ${certs.ca}, cert: ${certs.clientCert}, key: ${certs.clientKey}, servername: localhost }\n`;
    sk = await startSkiff(skiffYaml(admin, xds.address, '', tls));
  });

  after(async () => {
    await sk?.stop();
    await xds?.stop();
    await a?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('connects over unix:/path with a client certificate, and serves', async () => {
    assert.deepEqual(await get(port), { status: 200, body: 'a' });
    assert.ok(xds.acked(LISTENER_TYPE));
    const dump = await configDump(admin);
    const x = dump.xds as { config: { server: string; tls: { key: string } }; client: { server: string } };
    assert.match(x.config.server, /^unix:.*xds\.sock$/);
    assert.equal(x.config.tls.key, '[redacted]', 'key paths are redacted like other secrets');
  });
});
