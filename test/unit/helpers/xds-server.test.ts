// Tests of the xDS test fixtures themselves: the ADS management server (test/helpers/xds-server.ts)
// driven by a raw gRPC client written here (no Skiff code), and the Envoy resource builders
// (test/helpers/xds-fixtures.ts) checked field by field against the loaded protos. A failing
// xDS client test can then blame the client, not its control plane.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  CLUSTER_TYPE,
  DELTA_METHOD,
  ENDPOINT_TYPE,
  LISTENER_TYPE,
  ROUTE_TYPE,
  SOTW_METHOD,
  loadXdsProtos,
  type Message,
  type PackedAny,
} from '../../../mesh/xds/protos.js';
import {
  FAULT_TYPE,
  duration,
  edsCluster,
  faultFilter,
  httpListener,
  loadAssignment,
  route,
  routeConfiguration,
  staticCluster,
  unknownFields,
  virtualHost,
  type EnvoyObject,
} from '../../helpers/xds-fixtures.js';
import { XdsServer, XdsStore, isPackedAny, startXdsServer, type XdsForm } from '../../helpers/xds-server.js';

const protos = loadXdsProtos();
const NODE = { id: 'sidecar-1', cluster: 'test' };

/** A raw ADS call: send requests, read decoded responses in order, see how it ended. */
class AdsCall {
  private readonly client: grpc.Client;
  private readonly call: grpc.ClientDuplexStream<object, Message>;
  private readonly queue: Message[] = [];
  private waiter: (() => void) | null = null;
  /** Settles when the call ends: null for OK, the error otherwise. */
  readonly ended: Promise<grpc.ServiceError | null>;

  constructor(port: number, form: XdsForm) {
    this.client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const [req, res] = form === 'sotw' ? [protos.discoveryRequest, protos.discoveryResponse] : [protos.deltaDiscoveryRequest, protos.deltaDiscoveryResponse];
    this.call = this.client.makeBidiStreamRequest(
      form === 'sotw' ? SOTW_METHOD : DELTA_METHOD,
      (v: object) => protos.encode(req, v),
      (b: Buffer) => protos.decode(res, b),
    );
    this.call.on('data', (m: Message) => {
      this.queue.push(m);
      this.waiter?.();
    });
    this.ended = new Promise((resolve) => {
      this.call.on('error', (e: grpc.ServiceError) => resolve(e));
      this.call.on('status', (s: grpc.StatusObject) => {
        if (s.code === grpc.status.OK) resolve(null);
      });
    });
    this.ended.then(() => this.waiter?.(), () => undefined);
  }

  send(msg: object): void {
    this.call.write(msg);
  }

  /** Responses received and not yet taken. */
  get pending(): number {
    return this.queue.length;
  }

  async next(timeoutMs = 3000): Promise<Message> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('no xDS response');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          this.waiter = null;
          resolve();
        };
      });
    }
    return this.queue.shift() as Message;
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }
}

function resourcesOf(res: Message): PackedAny[] {
  const r = res.resources;
  return Array.isArray(r) ? r.filter(isPackedAny) : [];
}

/** Names of a SotW response's resources (clusterName for endpoints). */
function sotwNames(res: Message): string[] {
  return resourcesOf(res).map((a) => {
    const m = protos.unpack(a);
    return String(m.name ?? m.clusterName);
  });
}

interface DeltaResource {
  name: string;
  version: string;
  resource: PackedAny;
}

function deltaResources(res: Message): DeltaResource[] {
  const r = res.resources;
  if (!Array.isArray(r)) return [];
  return r.map((x: unknown) => {
    const o = x as { name?: unknown; version?: unknown; resource?: unknown };
    assert.ok(isPackedAny(o.resource));
    return { name: String(o.name), version: String(o.version), resource: o.resource };
  });
}

function removedOf(res: Message): string[] {
  return Array.isArray(res.removedResources) ? res.removedResources.map(String) : [];
}

/** How many responses the server has sent on one stream. */
const sentOn = (s: XdsServer, stream: number): number => s.responses.filter((r) => r.stream === stream).length;

describe('xds test server: state of the world', () => {
  let server: XdsServer;
  const calls: AdsCall[] = [];
  const open = (): AdsCall => {
    const c = new AdsCall(server.port, 'sotw');
    calls.push(c);
    return c;
  };

  before(async () => {
    server = await startXdsServer();
    server.store.update((s) => {
      s.set(CLUSTER_TYPE, 'a', edsCluster('a'));
      s.set(CLUSTER_TYPE, 'b', edsCluster('b', { http2: true }));
      s.set(ENDPOINT_TYPE, 'a', loadAssignment('a', [{ host: '127.0.0.1', port: 9001 }]));
      s.set(ENDPOINT_TYPE, 'b', loadAssignment('b', [{ host: '127.0.0.1', port: 9002 }]));
      s.set(LISTENER_TYPE, 'out', httpListener('out', { host: '127.0.0.1', port: 15001 }, 'routes'));
      s.set(ROUTE_TYPE, 'routes', routeConfiguration('routes', [virtualHost('all', ['*'], [route({ prefix: '/', cluster: 'a' })])]));
    });
  });
  after(async () => {
    for (const c of calls) c.close();
    await server.stop();
  });

  it('answers the first CDS and LDS requests with every resource (wildcard) and records the node', async () => {
    const c = open();
    c.send({ node: NODE, typeUrl: CLUSTER_TYPE });
    const cds = await c.next();
    assert.equal(cds.typeUrl, CLUSTER_TYPE);
    assert.deepEqual(sotwNames(cds), ['a', 'b']);
    assert.equal(cds.versionInfo, server.store.typeVersion(CLUSTER_TYPE));
    assert.equal(typeof cds.nonce, 'string');
    c.send({ typeUrl: LISTENER_TYPE, resourceNames: ['*'] });
    const lds = await c.next();
    assert.deepEqual(sotwNames(lds), ['out']);
    assert.ok(Number(lds.nonce) > Number(cds.nonce), 'nonces increase');
    const first = await server.waitForRequest((r) => r.form === 'sotw' && r.typeUrl === CLUSTER_TYPE && r.kind === 'initial');
    assert.equal(first.node?.id, 'sidecar-1');
    assert.equal(server.openStreams, 1);
  });

  it('answers RDS and EDS with the requested names that exist; a name change is answered', async () => {
    const c = open();
    c.send({ node: NODE, typeUrl: ENDPOINT_TYPE, resourceNames: ['a', 'missing'] });
    const r1 = await c.next();
    assert.deepEqual(sotwNames(r1), ['a']);
    c.send({ typeUrl: ENDPOINT_TYPE, resourceNames: ['a', 'b'], versionInfo: r1.versionInfo, responseNonce: r1.nonce });
    const r2 = await c.next();
    assert.deepEqual(sotwNames(r2), ['a', 'b']);
    c.send({ typeUrl: ROUTE_TYPE, resourceNames: ['routes'] });
    assert.deepEqual(sotwNames(await c.next()), ['routes']);
    // An empty list for a non-wildcard type means no interest: an empty response.
    const c2 = open();
    c2.send({ node: NODE, typeUrl: ROUTE_TYPE });
    assert.deepEqual(sotwNames(await c2.next()), []);
  });

  it('records an ACK and a NACK without resending', async () => {
    const c = open();
    c.send({ node: NODE, typeUrl: CLUSTER_TYPE });
    const res = await c.next();
    const stream = server.responses.find((r) => r.nonce === res.nonce)?.stream ?? -1;
    const sentBefore = sentOn(server, stream);
    c.send({ typeUrl: CLUSTER_TYPE, versionInfo: res.versionInfo, responseNonce: res.nonce });
    const ack = await server.waitForRequest((r) => r.stream === stream && r.kind === 'ack');
    assert.equal(ack.respondsToVersion, res.versionInfo);
    assert.ok(server.acked(CLUSTER_TYPE, String(res.versionInfo)));
    c.send({ typeUrl: CLUSTER_TYPE, versionInfo: res.versionInfo, responseNonce: res.nonce, errorDetail: { code: 3, message: 'cluster b: unsupported' } });
    const nack = await server.waitForRequest((r) => r.stream === stream && r.kind === 'nack');
    assert.equal(nack.errorDetail?.message, 'cluster b: unsupported');
    assert.equal(nack.errorDetail?.code, 3);
    assert.ok(server.nacks(CLUSTER_TYPE).some((r) => r.stream === stream));
    assert.equal(sentOn(server, stream), sentBefore, 'neither the ACK nor the NACK caused a response');
    assert.equal(c.pending, 0);
  });

  it('pushes a new version on update and drops a removed resource (wildcard); ignores stale nonces', async () => {
    const c = open();
    c.send({ node: NODE, typeUrl: CLUSTER_TYPE });
    const r1 = await c.next();
    c.send({ typeUrl: CLUSTER_TYPE, versionInfo: r1.versionInfo, responseNonce: r1.nonce });
    c.send({ typeUrl: ENDPOINT_TYPE, resourceNames: ['a'] });
    const e1 = await c.next();
    c.send({ typeUrl: ENDPOINT_TYPE, resourceNames: ['a'], versionInfo: e1.versionInfo, responseNonce: e1.nonce });
    await server.waitForAck(ENDPOINT_TYPE, String(e1.versionInfo));

    const v2 = server.store.set(CLUSTER_TYPE, 'c', edsCluster('c'));
    const r2 = await c.next();
    assert.equal(r2.versionInfo, v2);
    assert.deepEqual(sotwNames(r2), ['a', 'b', 'c']);

    const v3 = server.store.remove(CLUSTER_TYPE, 'c') ? server.store.typeVersion(CLUSTER_TYPE) : '';
    const r3 = await c.next();
    assert.equal(r3.versionInfo, v3);
    assert.deepEqual(sotwNames(r3), ['a', 'b']);

    // An EDS change to a name this stream does not want is not pushed to it.
    const stream = server.responses.find((r) => r.nonce === e1.nonce)?.stream ?? -1;
    const sent = sentOn(server, stream);
    server.store.set(ENDPOINT_TYPE, 'b', loadAssignment('b', [{ host: '127.0.0.1', port: 9003 }]));
    assert.equal(sentOn(server, stream), sent);
    // A request carrying r2's nonce is stale now (r3 is latest): its new names are ignored.
    c.send({ typeUrl: CLUSTER_TYPE, resourceNames: ['a'], versionInfo: r2.versionInfo, responseNonce: r2.nonce });
    const stale = await server.waitForRequest((r) => r.stream === stream && r.kind === 'stale');
    assert.equal(stale.responseNonce, r2.nonce);
    assert.equal(sentOn(server, stream), sent);
  });

  it('pushes one response per type for a batch, both at the batch version', async () => {
    const c = open();
    c.send({ node: NODE, typeUrl: CLUSTER_TYPE });
    await c.next();
    c.send({ typeUrl: ENDPOINT_TYPE, resourceNames: ['a'] });
    await c.next();
    const v = server.store.update((s) => {
      s.set(CLUSTER_TYPE, 'a', edsCluster('a', { connectTimeoutMs: 2500 }));
      s.set(ENDPOINT_TYPE, 'a', loadAssignment('a', [{ host: '127.0.0.1', port: 9011 }]));
    });
    const cds = await c.next();
    const eds = await c.next();
    assert.equal(cds.typeUrl, CLUSTER_TYPE, 'clusters before endpoints');
    assert.equal(eds.typeUrl, ENDPOINT_TYPE);
    assert.equal(cds.versionInfo, v);
    assert.equal(eds.versionInfo, v);
    assert.equal(c.pending, 0);
  });
});

describe('xds test server: delta', () => {
  let server: XdsServer;
  const calls: AdsCall[] = [];
  const open = (): AdsCall => {
    const c = new AdsCall(server.port, 'delta');
    calls.push(c);
    return c;
  };

  before(async () => {
    server = await startXdsServer();
    server.store.update((s) => {
      s.set(CLUSTER_TYPE, 'a', edsCluster('a'));
      s.set(CLUSTER_TYPE, 'b', edsCluster('b'));
      s.set(ENDPOINT_TYPE, 'a', loadAssignment('a', [{ host: '127.0.0.1', port: 9001 }]));
      s.set(ENDPOINT_TYPE, 'b', loadAssignment('b', [{ host: '127.0.0.1', port: 9002 }]));
    });
  });
  after(async () => {
    for (const c of calls) c.close();
    await server.stop();
  });

  it('answers a wildcard first request with everything, then only what changed, and removals', async () => {
    const c = open();
    c.send({ node: NODE, typeUrl: CLUSTER_TYPE });
    const r1 = await c.next();
    assert.equal(r1.typeUrl, CLUSTER_TYPE);
    assert.deepEqual(deltaResources(r1).map((r) => [r.name, r.version]), [
      ['a', server.store.versionOf(CLUSTER_TYPE, 'a')],
      ['b', server.store.versionOf(CLUSTER_TYPE, 'b')],
    ]);
    assert.equal(protos.unpack(deltaResources(r1)[0].resource).name, 'a');
    assert.equal(r1.systemVersionInfo, server.store.typeVersion(CLUSTER_TYPE));
    c.send({ typeUrl: CLUSTER_TYPE, responseNonce: r1.nonce });
    const ack = await server.waitForRequest((r) => r.form === 'delta' && r.kind === 'ack' && r.responseNonce === r1.nonce);
    assert.equal(ack.respondsToVersion, r1.systemVersionInfo);

    const v = server.store.set(CLUSTER_TYPE, 'b', edsCluster('b', { lbPolicy: 'LEAST_REQUEST' }));
    const r2 = await c.next();
    assert.deepEqual(deltaResources(r2).map((r) => [r.name, r.version]), [['b', v]]);
    assert.deepEqual(removedOf(r2), []);

    server.store.remove(CLUSTER_TYPE, 'b');
    const r3 = await c.next();
    assert.deepEqual(deltaResources(r3), []);
    assert.deepEqual(removedOf(r3), ['b']);

    c.send({ typeUrl: CLUSTER_TYPE, responseNonce: r3.nonce, errorDetail: { code: 3, message: 'no' } });
    const nack = await server.waitForNack(CLUSTER_TYPE);
    assert.equal(nack.kind, 'nack');
    assert.equal(c.pending, 0);
    server.store.set(CLUSTER_TYPE, 'b', edsCluster('b'));
    assert.deepEqual(deltaResources(await c.next()).map((r) => r.name), ['b']);
  });

  it('sends named subscriptions only, handles subscribe and unsubscribe', async () => {
    const c = open();
    c.send({ node: NODE, typeUrl: ENDPOINT_TYPE, resourceNamesSubscribe: ['a'] });
    const r1 = await c.next();
    assert.deepEqual(deltaResources(r1).map((r) => r.name), ['a']);
    c.send({ typeUrl: ENDPOINT_TYPE, responseNonce: r1.nonce, resourceNamesSubscribe: ['b'], resourceNamesUnsubscribe: ['a'] });
    const r2 = await c.next();
    assert.deepEqual(deltaResources(r2).map((r) => r.name), ['b']);
    const stream = server.responses.find((r) => r.nonce === r2.nonce)?.stream ?? -1;
    const sent = sentOn(server, stream);
    server.store.set(ENDPOINT_TYPE, 'a', loadAssignment('a', [{ host: '127.0.0.1', port: 9005 }]));
    assert.equal(sentOn(server, stream), sent, 'no push for an unsubscribed name');
    // Re-subscribing to a name the client has resends it.
    c.send({ typeUrl: ENDPOINT_TYPE, resourceNamesSubscribe: ['b'] });
    assert.deepEqual(deltaResources(await c.next()).map((r) => r.name), ['b']);
    // A subscription to a name that does not exist yet is answered when it appears.
    c.send({ typeUrl: ENDPOINT_TYPE, resourceNamesSubscribe: ['later'] });
    await server.waitForRequest((r) => r.stream === stream && r.subscribe.includes('later'));
    assert.equal(sentOn(server, stream), sent + 1);
    server.store.set(ENDPOINT_TYPE, 'later', loadAssignment('later', [{ host: '127.0.0.1', port: 9006 }]));
    assert.deepEqual(deltaResources(await c.next()).map((r) => r.name), ['later']);
  });

  it('honours initial_resource_versions on a new stream', async () => {
    const store = server.store;
    store.set(CLUSTER_TYPE, 'c', edsCluster('c'));
    const c = open();
    c.send({
      node: NODE,
      typeUrl: CLUSTER_TYPE,
      initialResourceVersions: { a: store.versionOf(CLUSTER_TYPE, 'a'), b: 'old', gone: '1' },
    });
    const r = await c.next();
    assert.deepEqual(deltaResources(r).map((x) => x.name), ['b', 'c']);
    assert.deepEqual(removedOf(r), ['gone']);
    const req = await server.waitForRequest((x) => x.form === 'delta' && x.initialResourceVersions.gone === '1');
    assert.equal(req.kind, 'initial');
    // Everything the client has is current: a wildcard first request still gets an (empty) answer.
    const c2 = open();
    c2.send({ node: NODE, typeUrl: CLUSTER_TYPE, initialResourceVersions: Object.fromEntries(store.names(CLUSTER_TYPE).map((n) => [n, store.versionOf(CLUSTER_TYPE, n) ?? ''])) });
    const r2 = await c2.next();
    assert.deepEqual(deltaResources(r2), []);
    assert.deepEqual(removedOf(r2), []);
  });

  it('replaceAll sends only the entries whose bytes changed', async () => {
    const c = open();
    c.send({ node: NODE, typeUrl: ENDPOINT_TYPE, resourceNamesSubscribe: ['*'] });
    const r1 = await c.next();
    const names = deltaResources(r1).map((r) => r.name);
    assert.ok(names.includes('a') && names.includes('b'));
    const a = server.store.get(ENDPOINT_TYPE, 'a')?.resource as EnvoyObject;
    server.store.replaceAll(ENDPOINT_TYPE, { a, b: loadAssignment('b', [{ host: '127.0.0.1', port: 9100 }]) });
    const r2 = await c.next();
    assert.deepEqual(deltaResources(r2).map((r) => r.name), ['b']);
    assert.deepEqual(removedOf(r2).sort(), names.filter((n) => n !== 'a' && n !== 'b').sort());
  });
});

describe('xds test server: forms, stop and restart', () => {
  it('answers a disabled form with UNIMPLEMENTED and still serves the other', async () => {
    const server = await startXdsServer({ delta: false });
    server.store.set(CLUSTER_TYPE, 'a', edsCluster('a'));
    const d = new AdsCall(server.port, 'delta');
    d.send({ node: NODE, typeUrl: CLUSTER_TYPE });
    const err = await d.ended;
    assert.equal(err?.code, grpc.status.UNIMPLEMENTED);
    const s = new AdsCall(server.port, 'sotw');
    s.send({ node: NODE, typeUrl: CLUSTER_TYPE });
    assert.deepEqual(sotwNames(await s.next()), ['a']);
    d.close();
    s.close();
    await server.stop();
  });

  it('stop() disconnects clients; restart() serves the same store on the same port', async () => {
    const server = await startXdsServer();
    const port = server.port;
    server.store.set(CLUSTER_TYPE, 'a', edsCluster('a'));
    const c1 = new AdsCall(port, 'sotw');
    c1.send({ node: NODE, typeUrl: CLUSTER_TYPE });
    const r1 = await c1.next();
    const d1 = new AdsCall(port, 'delta');
    d1.send({ node: NODE, typeUrl: CLUSTER_TYPE });
    const dr1 = await d1.next();
    await server.waitForStreams(2);

    await server.stop();
    assert.equal(server.openStreams, 0);
    assert.equal((await c1.ended)?.code, grpc.status.UNAVAILABLE, 'the client saw the stream fail');
    assert.equal((await d1.ended)?.code, grpc.status.UNAVAILABLE);

    assert.equal(await server.restart(), port);
    const c2 = new AdsCall(port, 'sotw');
    c2.send({ node: NODE, typeUrl: CLUSTER_TYPE, versionInfo: r1.versionInfo });
    const r2 = await c2.next();
    assert.equal(r2.versionInfo, r1.versionInfo, 'same store, same version');
    assert.deepEqual(sotwNames(r2), ['a']);
    assert.ok(Number(r2.nonce) > Number(r1.nonce), 'nonces keep increasing across restarts');
    const [a] = deltaResources(dr1);
    const d2 = new AdsCall(port, 'delta');
    d2.send({ node: NODE, typeUrl: CLUSTER_TYPE, initialResourceVersions: { a: a.version } });
    assert.deepEqual(deltaResources(await d2.next()), [], 'the client already has a');
    await server.waitForStreams(2);

    // An abrupt stop (forceShutdown) is seen too; a second server object on the same port and store works.
    await server.stop('abrupt');
    assert.notEqual(await c2.ended, null);
    const other = await startXdsServer({ port, store: server.store });
    const c3 = new AdsCall(port, 'sotw');
    c3.send({ node: NODE, typeUrl: CLUSTER_TYPE });
    assert.equal((await c3.next()).versionInfo, r1.versionInfo);
    for (const c of [c1, d1, c2, d2, c3]) c.close();
    await other.stop();
  });

  it('keeps versions unique across stores', () => {
    const s1 = new XdsStore();
    const s2 = new XdsStore();
    const v1 = s1.set(CLUSTER_TYPE, 'a', edsCluster('a'));
    const v2 = s2.set(CLUSTER_TYPE, 'a', edsCluster('a'));
    assert.notEqual(v1, v2);
    assert.equal(s1.remove(CLUSTER_TYPE, 'nope'), false);
    assert.equal(s1.version, v1, 'removing nothing is no change');
  });

  it('stores a raw PackedAny of a type Skiff does not load', async () => {
    const server = await startXdsServer();
    const secretType = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
    const raw: PackedAny = { type_url: secretType, value: Buffer.from([0x0a, 0x01, 0x73]) }; // name = "s"
    server.store.set(secretType, 's', raw);
    const c = new AdsCall(server.port, 'sotw');
    c.send({ node: NODE, typeUrl: secretType, resourceNames: ['s'] });
    const res = await c.next();
    const [any] = resourcesOf(res);
    assert.equal(any.type_url, secretType);
    assert.deepEqual(Buffer.from(any.value), raw.value);
    c.close();
    await server.stop();
  });
});

// ---------------------------------------------------------------------------------------
// Fixtures

/**
 * unknownFields is clean and unpack(pack(x)) gives x back exactly. (protobufjs encodes a field
 * set to its proto3 default, e.g. priority DEFAULT, so even those come back.)
 */
function assertRoundTrip(typeUrl: string, obj: EnvoyObject): void {
  assert.deepEqual(unknownFields(typeUrl, obj), []);
  assert.deepEqual(protos.unpack(protos.pack(typeUrl, obj)), { '@type': typeUrl, ...obj });
}

describe('xds fixtures', () => {
  it('edsCluster and staticCluster round-trip through pack/unpack with every option', () => {
    assertRoundTrip(CLUSTER_TYPE, edsCluster('a'));
    const full = edsCluster('b', {
      serviceName: 'b-eds',
      connectTimeoutMs: 1500,
      http2: true,
      lbPolicy: 'LEAST_REQUEST',
      circuitBreakers: { maxConnections: 10, maxPendingRequests: 20, maxRequests: 30, maxRetries: 3 },
      outlierDetection: { consecutive5xx: 5, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 50 },
    });
    assertRoundTrip(CLUSTER_TYPE, full);
    const back = protos.unpack(protos.pack(CLUSTER_TYPE, full)) as Record<string, Record<string, unknown>>;
    assert.deepEqual(back.connectTimeout, { seconds: 1, nanos: 500_000_000 });
    assert.deepEqual(back.edsClusterConfig, { edsConfig: { ads: {} }, serviceName: 'b-eds' });
    assert.deepEqual(back.typedExtensionProtocolOptions['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'], {
      '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
      explicitHttpConfig: { http2ProtocolOptions: {} },
    });
    assert.deepEqual(back.outlierDetection.consecutive_5xx, { value: 5 });
    assertRoundTrip(CLUSTER_TYPE, staticCluster('s', [{ host: '127.0.0.1', port: 8080 }], { lbPolicy: 'RANDOM' }));
  });

  it('loadAssignment, httpListener, routeConfiguration round-trip', () => {
    assertRoundTrip(ENDPOINT_TYPE, loadAssignment('a', [{ host: '127.0.0.1', port: 1 }, { host: '127.0.0.2', port: 2, healthStatus: 'DRAINING', weight: 3 }], { healthStatus: 'HEALTHY', locality: { region: 'r', zone: 'z', subZone: 's' }, priority: 1 }));
    const la = protos.unpack(protos.pack(ENDPOINT_TYPE, loadAssignment('a', [{ host: '127.0.0.1', port: 9001 }]))) as Record<string, unknown>;
    assert.deepEqual(la.endpoints, [{ lbEndpoints: [{ endpoint: { address: { socketAddress: { address: '127.0.0.1', portValue: 9001 } } } }] }]);
    assertRoundTrip(LISTENER_TYPE, httpListener('out', { host: '127.0.0.1', port: 15001 }, 'outbound'));
    assertRoundTrip(LISTENER_TYPE, httpListener('in', { host: '127.0.0.1', port: 15006 }, 'inbound', { codecType: 'HTTP2', trafficDirection: 'INBOUND', statPrefix: 'ingress' }));
    assertRoundTrip(
      ROUTE_TYPE,
      routeConfiguration('r', [
        virtualHost('vh', ['a.local', 'a.local:80'], [
          route({ path: '/exact', cluster: 'a', timeoutMs: 250, name: 'exact' }),
          route({ prefix: '/api', headers: { 'x-env': 'canary' }, cluster: 'b' }),
          route({ cluster: 'c' }),
        ]),
      ]),
    );
    assert.deepEqual(duration(2500), { seconds: 2, nanos: 500_000_000 });
  });

  it('faultFilter is a raw PackedAny that survives pack/unpack inside a listener', () => {
    const listener = httpListener('out', { host: '127.0.0.1', port: 15001 }, 'routes', { httpFilters: [faultFilter()] });
    assert.deepEqual(unknownFields(LISTENER_TYPE, listener), []);
    const back = protos.unpack(protos.pack(LISTENER_TYPE, listener)) as { filterChains: Array<{ filters: Array<{ typedConfig: { httpFilters: Array<{ name: string; typedConfig: unknown }> } }> }> };
    const filters = back.filterChains[0].filters[0].typedConfig.httpFilters;
    assert.deepEqual(filters.map((f) => f.name), ['envoy.filters.http.fault', 'envoy.filters.http.router']);
    const fault = filters[0].typedConfig;
    assert.ok(isPackedAny(fault));
    assert.equal(fault.type_url, FAULT_TYPE);
    assert.ok(fault.value.length > 0);
  });

  it('unknownFields catches misspelled keys, bad enum names and unloaded @type Anys', () => {
    const bad = { ...edsCluster('x'), edsClusterConfg: {}, lbPolicy: 'ROUND_ROBBIN', outlierDetection: { consecutive5xx: { value: 1 } } };
    const problems = unknownFields(CLUSTER_TYPE, bad);
    assert.equal(problems.length, 3, problems.join('\n'));
    const l = httpListener('l', { host: '127.0.0.1', port: 1 }, 'r', { httpFilters: [{ name: 'f', typedConfig: { '@type': FAULT_TYPE } }] });
    assert.equal(unknownFields(LISTENER_TYPE, l).length, 1);
  });
});
