// Envoy resources → Skiff config (mesh/xds/translate.ts, state.ts): every resource goes
// through the real protos (packed and unpacked as it arrives on the wire), is translated, and
// the composed document is validated by the same loader a file goes through.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseConfigObject } from '../../../src/config/load.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, loadXdsProtos, type Message } from '../../../mesh/xds/protos.js';
import { compose, XdsState } from '../../../mesh/xds/state.js';
import {
  XdsNack,
  translateCluster,
  translateClusterLoadAssignment,
  translateListener,
  translateRouteConfiguration,
} from '../../../mesh/xds/translate.js';
import { edsCluster, faultFilter, httpListener, loadAssignment, route, routeConfiguration, staticCluster, virtualHost } from '../../helpers/xds-fixtures.js';

const protos = loadXdsProtos();

/** As the client sees it: packed by the server, unpacked here. */
function wire(typeUrl: string, obj: object): Message {
  return protos.unpack(protos.pack(typeUrl, obj));
}

function nack(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof XdsNack && re.test(err.message), `expected an XdsNack matching ${re}`);
}

describe('Cluster', () => {
  it('EDS over ADS: name, connect timeout, round robin by default, HTTP/1.1, no outlier detection, safe retries only', () => {
    const c = translateCluster(wire(CLUSTER_TYPE, edsCluster('web', { connectTimeoutMs: 1500 })));
    assert.equal(c.edsName, 'web');
    assert.equal(c.staticEndpoints, null);
    assert.deepEqual(c.doc, {
      name: 'web',
      connectTimeout: 1500,
      loadBalancer: 'round-robin',
      protocol: 'http1',
      outlierDetection: null,
      retries: { retryOn: ['connect-failure', 'refused-stream'] },
    });
  });

  it('service_name, HTTP/2, least request, circuit breakers, outlier detection', () => {
    const c = translateCluster(
      wire(
        CLUSTER_TYPE,
        edsCluster('web', {
          serviceName: 'web.default',
          http2: true,
          lbPolicy: 'LEAST_REQUEST',
          circuitBreakers: { maxConnections: 10, maxPendingRequests: 0, maxRequests: 50, maxRetries: 4294967295 },
          outlierDetection: { consecutive5xx: 3, intervalMs: 5000, baseEjectionTimeMs: 10_000, maxEjectionPercent: 30 },
        }),
      ),
    );
    assert.equal(c.edsName, 'web.default');
    assert.equal(c.doc.protocol, 'h2c');
    assert.equal(c.doc.loadBalancer, 'least-request');
    assert.deepEqual(c.doc.circuitBreakers, { maxConnections: 10, maxPendingRequests: 0, maxRequests: 50 });
    assert.deepEqual(c.doc.outlierDetection, { consecutive5xx: 3, baseEjectionTime: 10_000, maxEjectionPercent: 30 });
  });

  it('STATIC with inline endpoints (IPv6 bracketed); unhealthy and draining endpoints left out', () => {
    const c = translateCluster(
      wire(CLUSTER_TYPE, staticCluster('s', [{ host: '127.0.0.1', port: 8080 }, { host: '::1', port: 8081 }, { host: '127.0.0.2', port: 1, healthStatus: 'DRAINING' }])),
    );
    assert.deepEqual(c.staticEndpoints, ['127.0.0.1:8080', '[::1]:8081']);
  });

  it('upstream TLS: sni and a CA file; HTTP/2 over TLS is h2', () => {
    const c = translateCluster(
      wire(CLUSTER_TYPE, {
        ...edsCluster('t', { http2: true }),
        transportSocket: {
          name: 'envoy.transport_sockets.tls',
          typedConfig: {
            '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
            sni: 'api.internal',
            commonTlsContext: { validationContext: { trustedCa: { filename: '/etc/ca.pem' } } },
          },
        },
      }),
    );
    assert.equal(c.doc.protocol, 'h2');
    assert.deepEqual(c.doc.tls, { servername: 'api.internal', ca: '/etc/ca.pem' });
  });

  it('refuses what Skiff does not do, naming the field', () => {
    nack(() => translateCluster(wire(CLUSTER_TYPE, { ...edsCluster('x'), lbPolicy: 'RING_HASH' })), /Cluster "x": lb_policy RING_HASH is not supported/);
    nack(() => translateCluster(wire(CLUSTER_TYPE, { name: 'x', type: 'STRICT_DNS', loadAssignment: loadAssignment('x', []) })), /STRICT_DNS is not supported/);
    nack(() => translateCluster(wire(CLUSTER_TYPE, { ...edsCluster('x'), lbSubsetConfig: { fallbackPolicy: 'ANY_ENDPOINT' } })), /field lb_subset_config is not supported/);
    nack(() => translateCluster(wire(CLUSTER_TYPE, edsCluster('x', { circuitBreakers: { maxRetries: 3 } }))), /max_retries/);
    nack(() => translateCluster(wire(CLUSTER_TYPE, { ...edsCluster('x'), edsClusterConfig: { edsConfig: { path: '/etc/eds.yaml' } } })), /field path is not supported/);
    nack(() => translateCluster(wire(CLUSTER_TYPE, { name: 'x', type: 'STATIC' })), /needs load_assignment/);
  });
});

describe('ClusterLoadAssignment', () => {
  it('endpoints by health; weights equal or absent', () => {
    const e = translateClusterLoadAssignment(
      wire(ENDPOINT_TYPE, loadAssignment('c', [
        { host: '10.0.0.1', port: 80, healthStatus: 'HEALTHY', weight: 1 },
        { host: '10.0.0.2', port: 80, healthStatus: 'UNHEALTHY', weight: 1 },
        { host: '10.0.0.3', port: 80, healthStatus: 'DEGRADED', weight: 1 },
        { host: '10.0.0.4', port: 80, healthStatus: 'TIMEOUT', weight: 1 },
      ], { locality: { region: 'r', zone: 'z' } })),
    );
    assert.deepEqual(e, { name: 'c', endpoints: ['10.0.0.1:80', '10.0.0.3:80'] });
  });

  it('refuses unequal weights, priorities above 0, drop overloads', () => {
    nack(() => translateClusterLoadAssignment(wire(ENDPOINT_TYPE, loadAssignment('c', [{ host: '10.0.0.1', port: 80, weight: 1 }, { host: '10.0.0.2', port: 80, weight: 3 }]))), /unequal endpoint weights/);
    nack(() => translateClusterLoadAssignment(wire(ENDPOINT_TYPE, loadAssignment('c', [{ host: '10.0.0.1', port: 80 }], { priority: 1 }))), /priority 1 is not supported/);
    nack(() => translateClusterLoadAssignment(wire(ENDPOINT_TYPE, { ...loadAssignment('c', []), policy: { dropOverloads: [{ category: 'x' }] } })), /field drop_overloads is not supported/);
  });
});

describe('Listener', () => {
  it('an HTTP connection manager over RDS: cleartext AUTO is http1 + h2c; direction from traffic_direction', () => {
    const l = translateListener(wire(LISTENER_TYPE, httpListener('in', { host: '127.0.0.1', port: 15006 }, 'r', { trafficDirection: 'OUTBOUND' })));
    assert.equal(l.rds, 'r');
    assert.deepEqual(l.doc, { name: 'in', direction: 'outbound', address: '127.0.0.1:15006', protocols: ['http1', 'h2c'] });
    const h2 = translateListener(wire(LISTENER_TYPE, httpListener('in', { host: '127.0.0.1', port: 1 }, 'r', { codecType: 'HTTP2' })));
    assert.deepEqual(h2.doc.protocols, ['h2c']);
  });

  it('tls_inspector is accepted; an unsupported http filter is refused by name and type', () => {
    const withInspector = { ...httpListener('in', { host: '127.0.0.1', port: 1 }, 'r'), listenerFilters: [{ name: 'envoy.filters.listener.tls_inspector', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector' } }] };
    assert.equal(translateListener(wire(LISTENER_TYPE, withInspector)).name, 'in');
    nack(
      () => translateListener(wire(LISTENER_TYPE, httpListener('in', { host: '127.0.0.1', port: 1 }, 'r', { httpFilters: [faultFilter()] }))),
      /http filter "envoy\.filters\.http\.fault" \(type\.googleapis\.com\/envoy\.extensions\.filters\.http\.fault\.v3\.HTTPFault\) is not supported/,
    );
    nack(() => translateListener(wire(LISTENER_TYPE, httpListener('in', { host: '127.0.0.1', port: 1 }, 'r', { codecType: 'HTTP3' }))), /codec_type HTTP3/);
    const two = httpListener('in', { host: '127.0.0.1', port: 1 }, 'r');
    nack(() => translateListener(wire(LISTENER_TYPE, { ...two, filterChains: [...(two.filterChains as object[]), ...(two.filterChains as object[])] })), /exactly one filter chain/);
  });

  it('inline route_config', () => {
    const l = httpListener('in', { host: '127.0.0.1', port: 1 }, 'unused');
    const chain = (l.filterChains as { filters: { typedConfig: Record<string, unknown> }[] }[])[0];
    const hcm = { ...chain.filters[0].typedConfig };
    delete hcm.rds;
    hcm.routeConfig = routeConfiguration('inline', [virtualHost('v', ['*'], [route({ prefix: '/', cluster: 'c' })])]);
    const t = translateListener(wire(LISTENER_TYPE, { ...l, filterChains: [{ filters: [{ ...chain.filters[0], typedConfig: hcm }] }] }));
    assert.equal(t.rds, null);
    assert.deepEqual(t.inlineRoutes, [{ match: { prefix: '/' }, cluster: 'c' }]);
  });
});

describe('RouteConfiguration', () => {
  it('virtual hosts flattened by domain specificity; ports dropped; headers and timeouts', () => {
    const r = translateRouteConfiguration(
      wire(ROUTE_TYPE, routeConfiguration('r', [
        virtualHost('any', ['*'], [route({ prefix: '/', cluster: 'fallback' })]),
        virtualHost('wild', ['*.example.com'], [route({ path: '/exact', cluster: 'w', timeoutMs: 2500 })]),
        virtualHost('api', ['api.example.com', 'api.example.com:8080'], [route({ prefix: '/v1', headers: { 'x-canary': '1' }, cluster: 'canary' }), route({ prefix: '/', cluster: 'api' })]),
      ])),
    );
    assert.deepEqual(r.routes, [
      { match: { prefix: '/v1', headers: { 'x-canary': '1' }, authority: 'api.example.com' }, cluster: 'canary' },
      { match: { prefix: '/', authority: 'api.example.com' }, cluster: 'api' },
      { match: { path: '/exact', authority: '*.example.com' }, cluster: 'w', timeout: 2500 },
      { match: { prefix: '/' }, cluster: 'fallback' },
    ]);
  });

  it('refuses regex, redirects, weighted clusters, retry policies, domains in two virtual hosts', () => {
    const rc = (routes: Record<string, unknown>[], domains = ['*']): object => routeConfiguration('r', [virtualHost('v', domains, routes)]);
    nack(() => translateRouteConfiguration(wire(ROUTE_TYPE, rc([{ match: { safeRegex: { regex: '.*' } }, route: { cluster: 'c' } }]))), /field safe_regex is not supported/);
    nack(() => translateRouteConfiguration(wire(ROUTE_TYPE, rc([{ match: { prefix: '/' }, redirect: { hostRedirect: 'x' } }]))), /only route actions/);
    nack(() => translateRouteConfiguration(wire(ROUTE_TYPE, rc([{ match: { prefix: '/' }, route: { weightedClusters: { clusters: [{ name: 'a', weight: { value: 1 } }] } } }]))), /weighted_clusters/);
    nack(() => translateRouteConfiguration(wire(ROUTE_TYPE, rc([{ match: { prefix: '/' }, route: { cluster: 'c', retryPolicy: { retryOn: '5xx' } } }]))), /field retry_policy is not supported/);
    nack(() => translateRouteConfiguration(wire(ROUTE_TYPE, routeConfiguration('r', [virtualHost('a', ['x.com'], []), virtualHost('b', ['x.com:9090'], [])]))), /also in virtual_hosts\[0\]/);
    nack(() => translateRouteConfiguration(wire(ROUTE_TYPE, rc([], ['foo*']))), /domain "foo\*" is not supported/);
  });
});

describe('composition with the file and the loader', () => {
  const base = { admin: { address: '127.0.0.1:15000' }, xds: { server: '127.0.0.1:1', node: { id: 'n' } } };

  function stateWith(resources: [string, string, object][]): XdsState {
    let s = new XdsState();
    for (const [typeUrl, name, obj] of resources) {
      s = s.withUpdate({ typeUrl: typeUrl as typeof CLUSTER_TYPE, upserts: [{ name, version: '1', resource: wire(typeUrl, obj) }], removals: [] });
    }
    return s;
  }

  it('a complete set builds a snapshot the data plane uses', () => {
    const s = stateWith([
      [CLUSTER_TYPE, 'c', edsCluster('c')],
      [ENDPOINT_TYPE, 'c', loadAssignment('c', [{ host: '127.0.0.1', port: 8080 }])],
      [LISTENER_TYPE, 'l', httpListener('l', { host: '127.0.0.1', port: 15006 }, 'r')],
      [ROUTE_TYPE, 'r', routeConfiguration('r', [virtualHost('v', ['*'], [route({ prefix: '/', cluster: 'c' })])])],
    ]);
    const comp = compose(base, s, null);
    assert.deepEqual(comp.warming, { clusters: [], listeners: [] });
    const snap = parseConfigObject(comp.document, 'test', '/', 2, true);
    assert.equal(snap.listeners[0].name, 'l');
    assert.deepEqual(snap.clusters.get('c')?.endpoints, [{ host: '127.0.0.1', port: 8080 }]);
    assert.equal(snap.routeTables.get('r')?.match('x', '/a', [])?.cluster, 'c');
  });

  it('warming: a cluster without endpoints and a listener without routes are held back; a route to a missing cluster gets an empty one', () => {
    const s = stateWith([
      [CLUSTER_TYPE, 'c', edsCluster('c')],
      [LISTENER_TYPE, 'l', httpListener('l', { host: '127.0.0.1', port: 15006 }, 'r')],
    ]);
    const comp = compose(base, s, null);
    assert.deepEqual(comp.warming, { clusters: ['c'], listeners: ['l'] });
    assert.deepEqual(comp.document.listeners, []);
    const s2 = s.withUpdate({ typeUrl: ROUTE_TYPE, upserts: [{ name: 'r', version: '1', resource: wire(ROUTE_TYPE, routeConfiguration('r', [virtualHost('v', ['*'], [route({ prefix: '/', cluster: 'c' })])])) }], removals: [] });
    const comp2 = compose(base, s2, comp);
    assert.deepEqual(comp2.warming, { clusters: ['c'], listeners: [] });
    assert.deepEqual(comp2.document.clusters, [{ name: 'c', protocol: 'http1', endpoints: [] }]);
    const snap = parseConfigObject(comp2.document, 'test', '/', 2, true);
    assert.deepEqual(snap.clusters.get('c')?.endpoints, []);
  });

  it('an endpoint that is a host name is refused by the loader (no DNS)', () => {
    const s = stateWith([
      [CLUSTER_TYPE, 'c', edsCluster('c')],
      [ENDPOINT_TYPE, 'c', loadAssignment('c', [{ host: 'reviews.default.svc', port: 9080 }])],
    ]);
    assert.throws(() => parseConfigObject(compose(base, s, null).document, 'test', '/', 2, true), /clusters\[0\]\.endpoints\[0\].*IPv4 literal/);
  });
});

describe('fuzzing the translators', () => {
  /** JSON-ish values shaped like decoded messages, with some real field names mixed in. */
  const key = fc.oneof(
    fc.constantFrom('name', 'type', 'edsClusterConfig', 'loadAssignment', 'endpoints', 'lbEndpoints', 'endpoint', 'address', 'socketAddress', 'portValue',
      'filterChains', 'filters', 'typedConfig', '@type', 'httpFilters', 'rds', 'routeConfigName', 'virtualHosts', 'domains', 'routes', 'match', 'route',
      'prefix', 'path', 'cluster', 'clusterName', 'connectTimeout', 'seconds', 'nanos', 'value', 'healthStatus', 'codecType', 'headers', 'stringMatch', 'exact'),
    fc.string({ maxLength: 8 }),
  );
  const value = fc.letrec((tie) => ({
    v: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.string({ maxLength: 12 }),
      fc.integer(),
      fc.double(),
      fc.boolean(),
      fc.constant(null),
      fc.array(tie('v'), { maxLength: 3 }),
      fc.dictionary(key, tie('v'), { maxKeys: 5 }),
    ),
  })).v;
  const messageArb = fc.dictionary(key, value, { maxKeys: 8 });

  it('random messages are translated or refused with an XdsNack, never anything else', () => {
    fc.assert(
      fc.property(messageArb, (m) => {
        for (const fn of [translateCluster, translateClusterLoadAssignment, translateListener, translateRouteConfiguration]) {
          try {
            fn(m as Message);
          } catch (err) {
            if (!(err instanceof XdsNack)) throw err;
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('random bytes as a resource: unpack fails cleanly or the translator decides', () => {
    fc.assert(
      fc.property(fc.constantFrom(CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE), fc.uint8Array({ maxLength: 200 }), (typeUrl, bytes) => {
        let m: Message;
        try {
          m = protos.unpack({ type_url: typeUrl, value: bytes });
        } catch (err) {
          assert.ok(err instanceof Error);
          return;
        }
        const fn = { [CLUSTER_TYPE]: translateCluster, [ENDPOINT_TYPE]: translateClusterLoadAssignment, [LISTENER_TYPE]: translateListener, [ROUTE_TYPE]: translateRouteConfiguration }[typeUrl];
        try {
          fn(m);
        } catch (err) {
          if (!(err instanceof XdsNack)) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });
});
