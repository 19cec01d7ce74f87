import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, defaultSnapshot, loadConfigFile, parseConfig, type ConfigIssue } from '../../../src/config/load.js';
import { parseAddress, parseAuthority, parseDuration, parseMemoryMark, parseSize } from '../../../src/config/schema.js';
import type { ConfigSnapshot } from '../../../src/config/types.js';

// Compiled to dist/test/unit/config/; the fixtures stay in the source tree.
const FIXTURES = fileURLToPath(new URL('../../../../test/fixtures/config/', import.meta.url));
const EXAMPLE = join(FIXTURES, 'example.yaml');

/** Lines of YAML joined with newlines: line N of the document is element N-1. */
function yaml(...lines: string[]): string {
  return lines.join('\n') + '\n';
}

/** A valid minimal document; tests splice bad lines into copies of it. */
const MINIMAL = [
  'listeners:', //                       1
  '  - name: in', //                     2
  '    address: 127.0.0.1:15006', //     3
  '    protocols: [http1, h2c]', //      4
  '    routes: main', //                 5
  'routes:', //                          6
  '  main:', //                          7
  '    - match: { prefix: / }', //       8
  '      cluster: app', //               9
  'clusters:', //                        10
  '  - name: app', //                    11
  '    protocol: http1', //              12
  '    endpoints: [127.0.0.1:8080]', //  13
];

/** MINIMAL with line `n` (1-based) replaced by `replacement` (which may hold several lines). */
function withLine(n: number, ...replacement: string[]): string {
  const lines = MINIMAL.slice();
  lines.splice(n - 1, 1, ...replacement);
  return yaml(...lines);
}

function parse(text: string): ConfigSnapshot {
  return parseConfig(text, 'test.yaml', '/etc/skiff', 1);
}

function issuesOf(text: string): readonly ConfigIssue[] {
  try {
    parse(text);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.ok(err.issues.length > 0);
    return err.issues;
  }
  assert.fail('expected a ConfigError');
}

/** Asserts that parsing fails with an issue at `path` on `line` whose message matches. */
function expectIssue(text: string, path: string, line: number, message?: RegExp): ConfigIssue {
  const issues = issuesOf(text);
  const hit = issues.find((i) => i.path === path);
  assert.ok(hit !== undefined, `no issue at ${path}; got ${JSON.stringify(issues)}`);
  assert.equal(hit.line, line, `line of ${path}: ${JSON.stringify(hit)}`);
  if (message !== undefined) assert.match(hit.message, message);
  return hit;
}

describe('parseConfig: valid input', () => {
  it('the minimal document parses, with every default filled in', () => {
    const s = parse(yaml(...MINIMAL));
    assert.equal(s.version, 1);
    assert.equal(s.source, 'test.yaml');
    assert.equal(s.admin, null);
    assert.deepEqual(s.limits, {
      maxHeaderBytes: 16384,
      streamBufferBytes: 262144,
      headersTimeoutMs: 10_000,
      requestBodyTimeoutMs: 30_000,
      keepAliveTimeoutMs: 60_000,
      drainTimeoutMs: 20_000,
      maxConnections: 10_000,
      maxRequestsPerConnection: 0,
      maxRequestsPerH3Connection: 10_000,
      memoryHighWatermark: { ratio: 0.9, bytes: 0 },
      memoryConnectionWatermark: { ratio: 0.85, bytes: 0 },
    });
    assert.deepEqual(s.listeners, [
      { name: 'in', direction: 'inbound', address: { host: '127.0.0.1', port: 15006 }, protocols: ['http1', 'h2c'], tls: null, meshTls: false, authorize: [], routes: 'main' },
    ]);
    assert.deepEqual(s.telemetry, {
      serviceName: null,
      logLevel: 'info',
      tracing: { enabled: null, sampling: null, endpoint: null, protocol: null, propagators: null },
      accessLog: { enabled: false, path: 'stdout', sampleRate: 1 },
    });
    assert.deepEqual(s.clusters.get('app'), {
      name: 'app',
      protocol: 'http1',
      endpoints: [{ host: '127.0.0.1', port: 8080 }],
      maxBodyBytes: 0,
      connectTimeoutMs: 5000,
      idleTimeoutMs: 60_000,
      maxConnectionsPerEndpoint: 64,
      maxPendingPerEndpoint: 1024,
      tls: null,
      meshTls: false,
      peerIdentity: null,
      loadBalancer: 'p2c-ewma',
      retries: {
        attempts: 2,
        budgetPercent: 20,
        minRetriesPerSecond: 10,
        perTryTimeoutMs: 0,
        backoffBaseMs: 25,
        backoffMaxMs: 250,
        retryOn: ['connect-failure', 'refused-stream', 'reset', '503'],
      },
      outlierDetection: { consecutive5xx: 5, consecutiveConnectFailures: 5, baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 300_000, maxEjectionPercent: 50 },
      circuitBreakers: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024 },
    });
    assert.equal(s.identity, null);
    const table = s.routeTables.get('main');
    assert.ok(table !== undefined);
    assert.deepEqual(table.routes, [
      { match: { authority: null, path: null, prefix: '/', headers: [] }, cluster: 'app', timeoutMs: 15_000, authorize: [] },
    ]);
  });

  it('the full example parses (loadConfigFile resolves TLS paths against its folder)', () => {
    const s = loadConfigFile(EXAMPLE, 7);
    assert.equal(s.version, 7);
    assert.equal(s.source, EXAMPLE);
    assert.deepEqual(s.admin, { host: '127.0.0.1', port: 15000 });
    assert.equal(s.limits.streamBufferBytes, 256 * 1024);
    assert.deepEqual(
      s.listeners.map((l) => l.name),
      ['inbound', 'inbound-tls', 'outbound'],
    );
    const tlsListener = s.listeners[1];
    assert.deepEqual(tlsListener.protocols, ['http1', 'h2']);
    assert.deepEqual(tlsListener.tls, {
      cert: join(dirname(EXAMPLE), 'certs/server.pem'),
      key: join(dirname(EXAMPLE), 'certs/server-key.pem'),
    });
    assert.deepEqual(s.listeners[2].address, { host: '::1', port: 0 }, 'IPv6 host without brackets, port 0 allowed');

    const inbound = s.routeTables.get('inbound');
    assert.ok(inbound !== undefined);
    assert.deepEqual(
      inbound.routes.map((r) => [r.cluster, r.timeoutMs]),
      [
        ['local-app', 0],
        ['local-app-h2', 120_000],
        ['local-app', 15_000],
      ],
    );
    assert.deepEqual(inbound.routes[1].match.headers, [{ name: 'x-canary', value: 'true' }], 'header names lower-cased');
    assert.equal(inbound.match('x', '/api/a', ['X-Canary', 'true'])?.cluster, 'local-app-h2');
    assert.equal(inbound.match('x', '/api/a', [])?.cluster, 'local-app');
    assert.equal(inbound.match('x', '/healthz?probe=1', [])?.timeoutMs, 0);

    const outbound = s.routeTables.get('outbound');
    assert.ok(outbound !== undefined);
    assert.equal(outbound.routes[0].match.authority, '*.payments.svc', 'authority lower-cased');
    assert.equal(outbound.routes[1].match.authority, '[::1]', 'a bare IPv6 authority is bracketed');
    assert.equal(outbound.match('Ledger.Payments.svc:80', '/', [])?.cluster, 'local-app-h2');
    assert.equal(outbound.match('[::1]:9', '/', [])?.cluster, 'local-app');

    const app = s.clusters.get('local-app');
    assert.ok(app !== undefined);
    assert.deepEqual(app.endpoints, [
      { host: '127.0.0.1', port: 8080 },
      { host: 'localhost', port: 8081 },
      { host: '::1', port: 8082 },
    ]);
    assert.deepEqual(app.tls, { ca: join(dirname(EXAMPLE), 'certs/ca.pem'), servername: 'foo', insecureSkipVerify: false });

    const h2 = s.clusters.get('local-app-h2');
    assert.ok(h2 !== undefined);
    assert.equal(h2.maxBodyBytes, 1024 * 1024);
    assert.equal(h2.connectTimeoutMs, 250);
    assert.equal(h2.idleTimeoutMs, 90_000, 'a plain integer is milliseconds');
    assert.equal(h2.maxConnectionsPerEndpoint, 4, 'HTTP/2 default');
    assert.deepEqual(h2.tls, { ca: null, servername: null, insecureSkipVerify: false }, 'h2 gets a default tls block');
  });

  it('the embedded default parses to the documented values', () => {
    const s = defaultSnapshot(3);
    assert.equal(s.version, 3);
    assert.equal(s.source, 'embedded default');
    assert.deepEqual(s.admin, { host: '127.0.0.1', port: 15000 });
    assert.deepEqual(s.listeners, [
      { name: 'inbound', direction: 'inbound', address: { host: '127.0.0.1', port: 15006 }, protocols: ['http1', 'h2c'], tls: null, meshTls: false, authorize: [], routes: 'inbound' },
    ]);
    const table = s.routeTables.get('inbound');
    assert.ok(table !== undefined);
    assert.deepEqual(table.routes, [
      { match: { authority: null, path: null, prefix: '/', headers: [] }, cluster: 'local-app', timeoutMs: 15_000, authorize: [] },
    ]);
    const app = s.clusters.get('local-app');
    assert.ok(app !== undefined);
    assert.equal(app.protocol, 'http1');
    assert.deepEqual(app.endpoints, [{ host: '127.0.0.1', port: 8080 }]);
    assert.equal(table.match('localhost:15006', '/anything?x', [])?.cluster, 'local-app');
  });

  it('freezes the snapshot and everything in it', () => {
    const s = loadConfigFile(EXAMPLE, 1);
    const frozen = [
      s,
      s.limits,
      s.admin,
      s.listeners,
      s.listeners[0],
      s.listeners[0].address,
      s.listeners[0].protocols,
      s.listeners[1].tls,
      ...[...s.clusters.values()].flatMap((c) => [c, c.endpoints, c.endpoints[0], c.tls]),
      ...[...s.routeTables.values()].flatMap((t) => t.routes.flatMap((r) => [t.routes, r, r.match, r.match.headers])),
    ];
    for (const o of frozen) assert.ok(Object.isFrozen(o), JSON.stringify(o));
  });

  it('reads sizes and durations in every documented form', () => {
    const s = parse(
      yaml(
        'limits:',
        '  maxHeaderBytes: 64KiB',
        '  streamBufferBytes: 1048576',
        '  headersTimeout: 250ms',
        '  keepAliveTimeout: 2m',
        '  drainTimeout: 1h',
        ...MINIMAL,
      ),
    );
    assert.deepEqual(s.limits, {
      maxHeaderBytes: 65536,
      streamBufferBytes: 1048576,
      headersTimeoutMs: 250,
      requestBodyTimeoutMs: 30_000,
      keepAliveTimeoutMs: 120_000,
      drainTimeoutMs: 3_600_000,
      maxConnections: 10_000,
      maxRequestsPerConnection: 0,
      maxRequestsPerH3Connection: 10_000,
      memoryHighWatermark: { ratio: 0.9, bytes: 0 },
      memoryConnectionWatermark: { ratio: 0.85, bytes: 0 },
    });
  });

  it('limits.maxRequestsPerConnection: unset is none on HTTP/1.1 and HTTP/2 and 10,000 on HTTP/3; set, it applies to all three', () => {
    const unset = parse(yaml(...MINIMAL));
    assert.equal(unset.limits.maxRequestsPerConnection, 0);
    assert.equal(unset.limits.maxRequestsPerH3Connection, 10_000);
    for (const n of [0, 1, 250_000]) {
      const s = parse(yaml('limits:', `  maxRequestsPerConnection: ${n}`, ...MINIMAL));
      assert.equal(s.limits.maxRequestsPerConnection, n);
      assert.equal(s.limits.maxRequestsPerH3Connection, n);
    }
    assert.throws(() => parse(yaml('limits:', '  maxRequestsPerConnection: -1', ...MINIMAL)), /maxRequestsPerConnection/);
  });

  it('limits: maxConnections and the memory marks as a share of the heap limit, a size, or 0 (off)', () => {
    const s = parse(yaml('limits:', '  maxConnections: 3', '  memoryHighWatermark: 92.5%', '  memoryConnectionWatermark: 768MiB', ...MINIMAL));
    assert.equal(s.limits.maxConnections, 3);
    assert.deepEqual(s.limits.memoryHighWatermark, { ratio: 0.925, bytes: 0 });
    assert.deepEqual(s.limits.memoryConnectionWatermark, { ratio: 0, bytes: 768 * 1024 * 1024 });
    assert.ok(Object.isFrozen(s.limits.memoryHighWatermark));
    const plain = parse(yaml('limits:', '  memoryHighWatermark: 1048576', '  memoryConnectionWatermark: 0', ...MINIMAL));
    assert.deepEqual(plain.limits.memoryHighWatermark, { ratio: 0, bytes: 1048576 });
    assert.deepEqual(plain.limits.memoryConnectionWatermark, { ratio: 0, bytes: 0 }, '0 turns the mark off');
    const full = parse(yaml('limits:', '  memoryHighWatermark: 100%', ...MINIMAL));
    assert.deepEqual(full.limits.memoryHighWatermark, { ratio: 1, bytes: 0 });
    assert.deepEqual(full.limits.memoryConnectionWatermark, { ratio: 0.85, bytes: 0 }, 'a key left out keeps its default');
  });

  it('telemetry settings parse; the access log path is relative to the config file', () => {
    const s = parse(yaml(
      'telemetry:',
      '  serviceName: shop',
      '  logLevel: warn',
      '  tracing: { enabled: true, sampling: 0.25, endpoint: "http://127.0.0.1:4318/v1/traces", protocol: http/json, propagators: [b3, tracecontext] }',
      '  accessLog: { enabled: true, path: logs/access.log, sampleRate: 0.5 }',
      ...withLine(2, '  - name: in', '    direction: outbound').trimEnd().split('\n'),
    ));
    assert.deepEqual(s.telemetry, {
      serviceName: 'shop',
      logLevel: 'warn',
      tracing: { enabled: true, sampling: 0.25, endpoint: 'http://127.0.0.1:4318/v1/traces', protocol: 'http/json', propagators: ['b3', 'tracecontext'] },
      accessLog: { enabled: true, path: '/etc/skiff/logs/access.log', sampleRate: 0.5 },
    });
    assert.equal(s.listeners[0].direction, 'outbound');
    const std = parse(yaml('telemetry:', '  accessLog: { enabled: true, path: stderr }', ...MINIMAL));
    assert.equal(std.telemetry.accessLog.path, 'stderr');
  });

  it('admin: null means no admin listener', () => {
    assert.equal(parse(yaml('admin: null', ...MINIMAL)).admin, null);
    assert.deepEqual(parse(yaml('admin:', '  address: "[::1]:0"', ...MINIMAL)).admin, { host: '::1', port: 0 });
  });

  it('an http1 cluster with tls is an HTTPS upstream; h2c and http1 default to no tls', () => {
    const s = parse(
      yaml(
        ...MINIMAL,
        '    tls: { insecureSkipVerify: true, ca: /abs/ca.pem }',
        '  - name: mux',
        '    protocol: h2c',
        '    endpoints: [127.0.0.1:9000]',
      ),
    );
    assert.deepEqual(s.clusters.get('app')?.tls, { ca: '/abs/ca.pem', servername: null, insecureSkipVerify: true });
    assert.equal(s.clusters.get('mux')?.tls, null);
    assert.equal(s.clusters.get('mux')?.maxConnectionsPerEndpoint, 4);
  });

  it('a route may match on authority or headers alone', () => {
    const s = parse(withLine(8, '    - match: { authority: API.local }', '      cluster: app', '    - match: { headers: { X-Env: prod } }'));
    const routes = s.routeTables.get('main')?.routes ?? [];
    assert.equal(routes[0].match.authority, 'api.local');
    assert.deepEqual(routes[1].match.headers, [{ name: 'x-env', value: 'prod' }]);
  });
});

describe('parseConfig: each bad input names its key path and line', () => {
  it('an unknown key (a typo) is an error on its own line', () => {
    expectIssue(withLine(5, '    route: main'), 'listeners[0].route', 5, /unknown key "route"/);
    expectIssue(yaml('admin:', '  adress: 127.0.0.1:1', ...MINIMAL), 'admin.adress', 2, /unknown key/);
    expectIssue(yaml(...MINIMAL, 'cluster: []'), 'cluster', 14, /unknown key/);
    expectIssue(withLine(8, '    - match: { prefix: /, methods: [GET] }'), 'routes.main[0].match.methods', 8);
  });

  it('a required key that is missing is reported on its parent line', () => {
    const text = yaml(...MINIMAL.slice(0, 2), ...MINIMAL.slice(3));
    expectIssue(text, 'listeners[0].address', 2, /required/);
    expectIssue(withLine(12), 'clusters[0].protocol', 11, /required/);
  });

  it('bad addresses', () => {
    expectIssue(withLine(3, '    address: 127.0.0.1'), 'listeners[0].address', 3, /host:port/);
    expectIssue(withLine(3, '    address: 127.0.0.1:65536'), 'listeners[0].address', 3, /port/);
    expectIssue(withLine(3, '    address: 256.0.0.1:80'), 'listeners[0].address', 3, /IPv4/);
    expectIssue(withLine(3, '    address: example.com:80'), 'listeners[0].address', 3, /IPv4 literal, localhost/);
    expectIssue(withLine(3, '    address: ::1:80'), 'listeners[0].address', 3, /brackets/);
    expectIssue(withLine(3, '    address: "[::g]:80"'), 'listeners[0].address', 3, /IPv6/);
    expectIssue(withLine(3, '    address: 15006'), 'listeners[0].address', 3, /string/);
    expectIssue(withLine(13, '    endpoints: [127.0.0.1:0]'), 'clusters[0].endpoints[0]', 13, /1\.\.65535/);
    expectIssue(
      withLine(13, '    endpoints:', '      - 127.0.0.1:8080', '      - 127.0.0.1:x'),
      'clusters[0].endpoints[1]',
      15,
      /port must be a number/,
    );
  });

  it('mesh settings parse: identity, tls: mesh, authorize, and the cluster resilience keys', () => {
    const s = parse(yaml(
      'identity: { cert: certs/me.pem, key: certs/me-key.pem, trustBundle: certs/ca.pem }',
      'listeners:',
      '  - name: mesh',
      '    address: 127.0.0.1:15008',
      '    protocols: [h2]',
      '    tls: mesh',
      '    authorize: [spiffe://example.org/ns/default/sa/frontend]',
      '    routes: main',
      'routes:',
      '  main:',
      '    - match: { prefix: /admin }',
      '      cluster: app',
      '      authorize: [spiffe://example.org/ns/ops/sa/admin]',
      'clusters:',
      '  - name: app',
      '    protocol: h2',
      '    tls: mesh',
      '    peerIdentity: spiffe://example.org/ns/default/sa/backend',
      '    loadBalancer: least-request',
      '    endpoints: [127.0.0.1:25008]',
      '    retries: { attempts: 3, budgetPercent: 10, perTryTimeout: 2s, retryOn: [connect-failure, gateway-error] }',
      '    outlierDetection: { consecutive5xx: 3, baseEjectionTime: 10s }',
      '    circuitBreakers: { maxRequests: 100 }',
    ));
    assert.deepEqual(s.identity, { cert: '/etc/skiff/certs/me.pem', key: '/etc/skiff/certs/me-key.pem', trustBundle: '/etc/skiff/certs/ca.pem' });
    const l = s.listeners[0];
    assert.equal(l.meshTls, true);
    assert.equal(l.tls, null);
    assert.deepEqual(l.authorize, ['spiffe://example.org/ns/default/sa/frontend']);
    assert.deepEqual(s.routeTables.get('main')?.routes[0].authorize, ['spiffe://example.org/ns/ops/sa/admin']);
    const c = s.clusters.get('app');
    assert.ok(c !== undefined);
    assert.equal(c.meshTls, true);
    assert.equal(c.tls, null, 'mesh TLS is not the plain-TLS block');
    assert.equal(c.peerIdentity, 'spiffe://example.org/ns/default/sa/backend');
    assert.equal(c.loadBalancer, 'least-request');
    assert.deepEqual(c.retries, { attempts: 3, budgetPercent: 10, minRetriesPerSecond: 10, perTryTimeoutMs: 2000, backoffBaseMs: 25, backoffMaxMs: 250, retryOn: ['connect-failure', 'gateway-error'] });
    assert.deepEqual(c.outlierDetection, { consecutive5xx: 3, consecutiveConnectFailures: 5, baseEjectionTimeMs: 10_000, maxEjectionTimeMs: 300_000, maxEjectionPercent: 50 });
    assert.deepEqual(c.circuitBreakers, { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 100 });
    const off = parse(withLine(13, '    endpoints: [127.0.0.1:8080]', '    outlierDetection: null'));
    assert.equal(off.clusters.get('app')?.outlierDetection, null);
  });

  it('bad mesh settings', () => {
    const meshListener = (...extra: string[]): string => {
      const lines = MINIMAL.slice();
      lines.splice(3, 2, '    protocols: [h2]', '    routes: main', ...extra);
      return yaml(...lines);
    };
    expectIssue(meshListener('    tls: mesh'), 'listeners[0].tls', 6, /identity/);
    expectIssue(withLine(5, '    routes: main', '    authorize: [spiffe://example.org/ns/a/sa/b]'), 'listeners[0].authorize', 6, /tls: mesh/);
    expectIssue(withLine(5, '    routes: main', '    authorize: [frontend]'), 'listeners[0].authorize[0]', 6, /SPIFFE ID/);
    expectIssue(withLine(13, '    endpoints: [127.0.0.1:8080]', '    tls: mesh'), 'clusters[0].tls', 14, /identity/);
    expectIssue(withLine(13, '    endpoints: [127.0.0.1:8080]', '    peerIdentity: spiffe://example.org/x'), 'clusters[0].peerIdentity', 14, /tls: mesh/);
    expectIssue(withLine(13, '    endpoints: [127.0.0.1:8080]', '    loadBalancer: random'), 'clusters[0].loadBalancer', 14);
    expectIssue(withLine(13, '    endpoints: [127.0.0.1:8080]', '    retries: { attempts: -1 }'), 'clusters[0].retries.attempts', 14);
    expectIssue(withLine(13, '    endpoints: [127.0.0.1:8080]', '    retries: { retryOn: [always] }'), 'clusters[0].retries.retryOn[0]', 14);
    expectIssue(withLine(13, '    endpoints: [127.0.0.1:8080]', '    outlierDetection: { maxEjectionPercent: 150 }'), 'clusters[0].outlierDetection.maxEjectionPercent', 14);
    expectIssue(withLine(13, '    endpoints: [127.0.0.1:8080]', '    tls: { servername: x, bogus: 1 }'), 'clusters[0].tls.bogus', 14, /unknown key/);
  });

  it('bad telemetry settings', () => {
    expectIssue(yaml('telemetry:', '  tracing:', '    sampling: 1.5', ...MINIMAL), 'telemetry.tracing.sampling', 3, /between 0 and 1/);
    expectIssue(yaml('telemetry:', '  tracing: { propagators: [w3c] }', ...MINIMAL), 'telemetry.tracing.propagators[0]', 2);
    expectIssue(yaml('telemetry:', '  tracing: { endpoint: "127.0.0.1:4318" }', ...MINIMAL), 'telemetry.tracing.endpoint', 2, /http/);
    expectIssue(yaml('telemetry:', '  tracing: { protocol: thrift }', ...MINIMAL), 'telemetry.tracing.protocol', 2);
    expectIssue(yaml('telemetry:', '  logLevel: loud', ...MINIMAL), 'telemetry.logLevel', 2);
    expectIssue(yaml('telemetry:', '  accessLog: { sampleRate: -0.1 }', ...MINIMAL), 'telemetry.accessLog.sampleRate', 2, /between 0 and 1/);
    expectIssue(yaml('telemetry:', '  accessLog: { enable: true }', ...MINIMAL), 'telemetry.accessLog.enable', 2, /unknown key/);
    expectIssue(withLine(2, '  - name: in', '    direction: sideways'), 'listeners[0].direction', 3);
  });

  it('bad durations and sizes', () => {
    expectIssue(withLine(9, '      cluster: app', '      timeout: 15 s'), 'routes.main[0].timeout', 10, /invalid duration/);
    expectIssue(withLine(9, '      cluster: app', '      timeout: 1.5s'), 'routes.main[0].timeout', 10, /invalid duration/);
    expectIssue(withLine(9, '      cluster: app', '      timeout: -1'), 'routes.main[0].timeout', 10, /invalid duration/);
    expectIssue(withLine(9, '      cluster: app', '      timeout: 30d'), 'routes.main[0].timeout', 10, /invalid duration/);
    expectIssue(withLine(9, '      cluster: app', '      timeout: 1000h'), 'routes.main[0].timeout', 10, /too long/);
    expectIssue(yaml('limits:', '  headersTimeout: soon', ...MINIMAL), 'limits.headersTimeout', 2, /invalid duration/);
    expectIssue(yaml('limits:', '', '  maxHeaderBytes: 16KB', ...MINIMAL), 'limits.maxHeaderBytes', 3, /invalid size/);
    expectIssue(yaml('limits:', '  streamBufferBytes: 0', ...MINIMAL), 'limits.streamBufferBytes', 2, /greater than 0/);
    expectIssue(yaml('limits:', '  maxConnections: 0', ...MINIMAL), 'limits.maxConnections', 2);
    expectIssue(yaml('limits:', '  maxConnections: 1.5', ...MINIMAL), 'limits.maxConnections', 2);
    expectIssue(yaml('limits:', '  memoryHighWatermark: 0.9', ...MINIMAL), 'limits.memoryHighWatermark', 2, /invalid memory mark 0\.9: use a share of the heap limit like 90%/);
    expectIssue(yaml('limits:', '  memoryHighWatermark: 0%', ...MINIMAL), 'limits.memoryHighWatermark', 2, /above 0% and at most 100%/);
    expectIssue(yaml('limits:', '  memoryHighWatermark: 101%', ...MINIMAL), 'limits.memoryHighWatermark', 2, /above 0% and at most 100%/);
    expectIssue(yaml('limits:', '', '  memoryConnectionWatermark: lots', ...MINIMAL), 'limits.memoryConnectionWatermark', 3, /invalid memory mark "lots"/);
    expectIssue(yaml('limits:', '  memoryConnectionWatermark: 1GB', ...MINIMAL), 'limits.memoryConnectionWatermark', 2, /invalid memory mark/);
    expectIssue(withLine(13, '    endpoints: [127.0.0.1:8080]', '    connectTimeout: 0'), 'clusters[0].connectTimeout', 14, /greater than 0/);
  });

  it('a route naming a missing cluster', () => {
    expectIssue(withLine(9, '      cluster: ap'), 'routes.main[0].cluster', 9, /no cluster named "ap"/);
  });

  it('a listener naming a missing route table', () => {
    expectIssue(withLine(5, '    routes: mian'), 'listeners[0].routes', 5, /no route table named "mian"/);
  });

  it('h2 on a listener without tls, and h2c on one with tls', () => {
    expectIssue(withLine(4, '    protocols: [http1, h2]'), 'listeners[0].protocols[1]', 4, /h2 needs tls/);
    expectIssue(
      withLine(4, '    protocols:', '      - h2c', '      - http1', '    tls: { cert: c.pem, key: k.pem }'),
      'listeners[0].protocols[0]',
      5,
      /h2c is cleartext/,
    );
  });

  it('an xds block: defaults, paths resolved, listeners optional, bad values named', () => {
    const s = parse(yaml('xds:', '  server: unix:/etc/istio/proxy/XDS', '  node: { id: sidecar~10.0.0.1~web-0.shop~shop.svc.cluster.local }'));
    assert.deepEqual(s.listeners, []);
    assert.deepEqual(s.xds, {
      server: 'unix:/etc/istio/proxy/XDS',
      protocol: 'auto',
      node: { id: 'sidecar~10.0.0.1~web-0.shop~shop.svc.cluster.local', cluster: '', locality: { region: '', zone: '', subZone: '' }, metadata: {} },
      tls: null,
      initialFetchTimeoutMs: 15_000,
      backoffBaseMs: 500,
      backoffMaxMs: 30_000,
    });
    const t = parse(yaml('xds:', '  server: 127.0.0.1:15010', '  protocol: sotw', '  node: { id: n, cluster: c, locality: { zone: z }, metadata: { A: "1" } }',
      '  tls: { ca: ca.pem, cert: c.pem, key: k.pem }', '  initialFetchTimeout: 2s', ...MINIMAL));
    assert.equal(t.xds?.protocol, 'sotw');
    assert.deepEqual(t.xds?.tls, { ca: '/etc/skiff/ca.pem', cert: '/etc/skiff/c.pem', key: '/etc/skiff/k.pem', servername: null });
    assert.equal(t.xds?.initialFetchTimeoutMs, 2000);
    assert.equal(t.listeners.length, 1);
    assert.equal(parse(yaml(...MINIMAL)).xds, null);
    expectIssue(yaml('xds:', '  server: istiod:15010', '  node: { id: n }'), 'xds.server', 2, /host:port .* or unix:/);
    expectIssue(yaml('xds:', '  server: 127.0.0.1:15010', '  node: { id: n }', '  tls: { cert: c.pem }'), 'xds.tls', 4, /both cert and key/);
    expectIssue(yaml('xds:', '  server: 127.0.0.1:15010'), 'xds.node', 1, /required/);
    expectIssue(yaml('xds:', '  server: 127.0.0.1:15010', '  node: { id: n }', '  protocol: rest'), 'xds.protocol', 4);
  });

  it('h3 on a listener needs tls; with tls it parses', () => {
    expectIssue(withLine(4, '    protocols: [http1, h3]'), 'listeners[0].protocols[1]', 4, /h3 needs tls/);
    const s = parse(withLine(4, '    protocols: [http1, h2, h3]', '    tls: { cert: /abs/c.pem, key: /abs/k.pem }'));
    assert.deepEqual(s.listeners[0].protocols, ['http1', 'h2', 'h3']);
  });

  it('an h3 cluster parses with or without a tls block', () => {
    const s = parse(
      yaml(
        ...MINIMAL,
        '  - name: quic',
        '    protocol: h3',
        '    endpoints: [127.0.0.1:9443]',
        '  - name: quic-ca',
        '    protocol: h3',
        '    endpoints: [127.0.0.1:9444]',
        '    tls: { ca: /abs/ca.pem, servername: app.internal }',
      ),
    );
    assert.equal(s.clusters.get('quic')?.protocol, 'h3');
    assert.deepEqual(s.clusters.get('quic-ca')?.tls, { ca: '/abs/ca.pem', servername: 'app.internal', insecureSkipVerify: false });
  });

  it('h2 without tls is reported in the same pass as other errors of the listener', () => {
    const issues = issuesOf(withLine(3, '    address: nowhere', '    protocols: [h2]').replace('    protocols: [http1, h2c]\n', ''));
    assert.deepEqual(
      issues.map((i) => [i.path, i.line]),
      [
        ['listeners[0].address', 3],
        ['listeners[0].protocols[0]', 4],
      ],
    );
  });

  it('protocols must be known, non-empty and unique', () => {
    expectIssue(withLine(4, '    protocols: []'), 'listeners[0].protocols', 4, /at least one/);
    expectIssue(withLine(4, '    protocols: [http1, http1]'), 'listeners[0].protocols[1]', 4, /duplicate protocol/);
    expectIssue(withLine(4, '    protocols: [http3]'), 'listeners[0].protocols[0]', 4);
    expectIssue(withLine(12, '    protocol: grpc'), 'clusters[0].protocol', 12);
  });

  it('a YAML syntax error becomes an issue with its line', () => {
    const issue = expectIssue(withLine(8, '    - match: { prefix: / '), '', 9, /YAML/);
    assert.equal(issue.path, '');
    expectIssue(yaml('listeners:', '  - name: a', '  name: b'), '', 3, /YAML/);
    expectIssue(yaml('listeners:', "  - name: 'open"), '', 3, /YAML/);
  });

  it('a duplicate YAML key is a syntax error on its line', () => {
    expectIssue(withLine(5, '    routes: main', '    routes: other'), '', 6, /unique/);
  });

  it('duplicate listener and cluster names', () => {
    const text = yaml(
      ...MINIMAL.slice(0, 5),
      '  - name: in', //                     6
      '    address: 127.0.0.1:15007', //     7
      '    protocols: [http1]', //           8
      '    routes: main', //                 9
      ...MINIMAL.slice(5),
      '  - name: app', //                    18
      '    protocol: h2c', //                19
      '    endpoints: [127.0.0.1:8081]', //  20
    );
    expectIssue(text, 'listeners[1].name', 6, /duplicate listener name "in"/);
    expectIssue(text, 'clusters[1].name', 18, /duplicate cluster name "app"/);
  });

  it('two listeners on one fixed address; port 0 never clashes', () => {
    const twice = (port: number): string =>
      yaml(
        ...MINIMAL.slice(0, 2),
        `    address: 127.0.0.1:${port}`,
        ...MINIMAL.slice(3, 5),
        '  - name: other',
        `    address: 127.0.0.1:${port}`,
        '    protocols: [http1]',
        '    routes: main',
        ...MINIMAL.slice(5),
      );
    expectIssue(twice(15006), 'listeners[1].address', 7, /already used by listeners\[0\]/);
    assert.equal(parse(twice(0)).listeners.length, 2);
  });

  it('route match rules', () => {
    expectIssue(withLine(8, '    - match: { path: /a, prefix: /b }'), 'routes.main[0].match.prefix', 8, /not both/);
    expectIssue(withLine(8, '    - match: {}'), 'routes.main[0].match', 8, /at least one/);
    expectIssue(withLine(8, '    - match: { prefix: api }'), 'routes.main[0].match.prefix', 8, /start with "\/"/);
    expectIssue(withLine(8, '    - match: { path: "a/b" }'), 'routes.main[0].match.path', 8, /start with "\/"/);
    expectIssue(withLine(8, '    - match: { authority: "example.com:80" }'), 'routes.main[0].match.authority', 8, /without a port/);
    expectIssue(withLine(8, '    - match: { authority: "a.*.com" }'), 'routes.main[0].match.authority', 8, /invalid authority/);
    expectIssue(
      withLine(8, '    - match:', '        headers:', '          x-version: 2'),
      'routes.main[0].match.headers.x-version',
      10,
      /must be a string/,
    );
    expectIssue(
      withLine(8, '    - match:', '        headers:', '          X-A: a', '          x-a: b'),
      'routes.main[0].match.headers.x-a',
      11,
      /duplicate header name/,
    );
    expectIssue(
      withLine(8, '    - match:', '        headers: { "bad name": x }'),
      'routes.main[0].match.headers["bad name"]',
      9,
      /invalid header name/,
    );
  });

  it('cluster rules', () => {
    expectIssue(withLine(13, '    endpoints: []'), 'clusters[0].endpoints', 13, /at least one endpoint/);
    expectIssue(withLine(12, '    protocol: h2c', '    tls: {}'), 'clusters[0].tls', 13, /h2c is cleartext/);
    expectIssue(withLine(13, '    endpoints: [127.0.0.1:8080]', '    maxConnectionsPerEndpoint: 0'), 'clusters[0].maxConnectionsPerEndpoint', 14);
  });

  it('a listener needs both cert and key in its tls block', () => {
    expectIssue(withLine(5, '    routes: main', '    tls:', '      cert: c.pem'), 'listeners[0].tls.key', 6, /required/);
  });

  it('an empty document or one without listeners', () => {
    // Line 1: every issue names a key or a line (test/unit/config/fuzz.test.ts).
    expectIssue('', '', 1, /empty/);
    expectIssue('# nothing\n', '', 1, /empty/);
    expectIssue(yaml('admin:', '  address: 127.0.0.1:15000'), 'listeners', 1, /at least one listener is needed \(or an xds block/);
    expectIssue(yaml('listeners: []'), 'listeners', 1, /at least one listener/);
    expectIssue(yaml('- a', '- b'), '', 1, /object/);
  });

  it('collects every issue, sorted by line, and formats FILE:LINE: path: message', () => {
    const text = withLine(3, '    address: nowhere');
    const bad = text.replace('      cluster: app', '      cluster: app\n      timeot: 1s').replace('protocol: http1', 'protocol: http9');
    try {
      parse(bad);
      assert.fail('expected a ConfigError');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(
        err.issues.map((i) => [i.path, i.line]),
        [
          ['listeners[0].address', 3],
          ['routes.main[0].timeot', 10],
          ['clusters[0].protocol', 13],
        ],
      );
      const lines = err.message.split('\n');
      assert.equal(lines.length, 3);
      assert.match(lines[0], /^test\.yaml:3: listeners\[0\]\.address: invalid address "nowhere"/);
      assert.equal(lines[1], 'test.yaml:10: routes.main[0].timeot: unknown key "timeot"');
      assert.match(lines[2], /^test\.yaml:13: clusters\[0\]\.protocol: /);
      assert.equal(err.source, 'test.yaml');
      assert.equal(err.name, 'ConfigError');
    }
  });

  it('a file that cannot be read is a ConfigError naming it', () => {
    const missing = join(FIXTURES, 'does-not-exist.yaml');
    assert.throws(
      () => loadConfigFile(missing, 1),
      (err: unknown) => err instanceof ConfigError && err.issues[0].line === 0 && err.message.startsWith(`${missing}: cannot read`),
    );
  });
});

describe('value parsers', () => {
  it('parseDuration', () => {
    assert.deepEqual(parseDuration('250ms'), { ok: true, value: 250 });
    assert.deepEqual(parseDuration('15s'), { ok: true, value: 15_000 });
    assert.deepEqual(parseDuration('2m'), { ok: true, value: 120_000 });
    assert.deepEqual(parseDuration('1h'), { ok: true, value: 3_600_000 });
    assert.deepEqual(parseDuration(0), { ok: true, value: 0 });
    assert.deepEqual(parseDuration(1500), { ok: true, value: 1500 });
    assert.deepEqual(parseDuration('1500'), { ok: true, value: 1500 });
    for (const bad of ['', 's', '1.5s', '-1s', '1d', 1.5, -1, true, null, [1]]) {
      assert.equal(parseDuration(bad).ok, false, String(bad));
    }
    assert.equal(parseDuration('596h').ok, true);
    assert.equal(parseDuration('597h').ok, false, 'beyond what a Node timer can hold');
  });

  it('parseSize', () => {
    assert.deepEqual(parseSize(16384), { ok: true, value: 16384 });
    assert.deepEqual(parseSize('64KiB'), { ok: true, value: 65536 });
    assert.deepEqual(parseSize('1MiB'), { ok: true, value: 1048576 });
    assert.deepEqual(parseSize('1GiB'), { ok: true, value: 1073741824 });
    assert.deepEqual(parseSize('512B'), { ok: true, value: 512 });
    for (const bad of ['1KB', '1 kib', '1.5MiB', -1, 0.5, 'lots', null]) {
      assert.equal(parseSize(bad).ok, false, String(bad));
    }
  });

  it('parseMemoryMark', () => {
    assert.deepEqual(parseMemoryMark('90%'), { ok: true, value: { ratio: 0.9, bytes: 0 } });
    assert.deepEqual(parseMemoryMark(' 12.5% '), { ok: true, value: { ratio: 0.125, bytes: 0 } });
    assert.deepEqual(parseMemoryMark('100%'), { ok: true, value: { ratio: 1, bytes: 0 } });
    assert.deepEqual(parseMemoryMark('512MiB'), { ok: true, value: { ratio: 0, bytes: 512 * 1024 * 1024 } });
    assert.deepEqual(parseMemoryMark(4096), { ok: true, value: { ratio: 0, bytes: 4096 } });
    assert.deepEqual(parseMemoryMark(0), { ok: true, value: { ratio: 0, bytes: 0 } });
    for (const bad of ['0%', '100.1%', '1000%', '-5%', '90 %', '%', 0.9, '0.9', '1KB', null, true]) {
      assert.equal(parseMemoryMark(bad).ok, false, String(bad));
    }
  });

  it('parseAddress', () => {
    assert.deepEqual(parseAddress('127.0.0.1:15006', false), { ok: true, value: { host: '127.0.0.1', port: 15006 } });
    assert.deepEqual(parseAddress('LOCALHOST:1', false), { ok: true, value: { host: 'localhost', port: 1 } });
    assert.deepEqual(parseAddress('[::1]:15006', false), { ok: true, value: { host: '::1', port: 15006 } });
    assert.deepEqual(parseAddress('[::]:0', true), { ok: true, value: { host: '::', port: 0 } });
    assert.deepEqual(parseAddress('[::FFFF:10.0.0.1]:80', false), { ok: true, value: { host: '::ffff:10.0.0.1', port: 80 } });
    assert.deepEqual(parseAddress('[1:2:3:4:5:6:7:8]:80', false), { ok: true, value: { host: '1:2:3:4:5:6:7:8', port: 80 } });
    assert.deepEqual(parseAddress('0.0.0.0:0', true), { ok: true, value: { host: '0.0.0.0', port: 0 } });
    const bad = [
      '127.0.0.1:0',
      '127.0.0.1',
      '127.0.0.1:',
      '127.0.0.1:+80',
      '127.0.0.1:70000',
      '01.0.0.1:80',
      '1.2.3:80',
      'host.local:80',
      '::1:80',
      '[::1]80',
      '[::1:80',
      '[1:2:3:4:5:6:7:8:9]:80',
      '[1::2::3]:80',
      '[fe80::1%eth0]:80',
      '[::1.2.3.4::]:80',
      '',
    ];
    for (const s of bad) assert.equal(parseAddress(s, false).ok, false, s);
  });

  it('parseAuthority', () => {
    assert.deepEqual(parseAuthority('Example.COM'), { ok: true, value: 'example.com' });
    assert.deepEqual(parseAuthority('*.Example.com'), { ok: true, value: '*.example.com' });
    assert.deepEqual(parseAuthority('*'), { ok: true, value: null });
    assert.deepEqual(parseAuthority('::1'), { ok: true, value: '[::1]' });
    assert.deepEqual(parseAuthority('[::1]'), { ok: true, value: '[::1]' });
    assert.deepEqual(parseAuthority('10.0.0.1'), { ok: true, value: '10.0.0.1' });
    assert.deepEqual(parseAuthority('svc.local.'), { ok: true, value: 'svc.local' });
    for (const bad of ['example.com:80', '[::1]:80', 'a.*.com', '*example.com', '', 'a..b', '-a.com']) {
      assert.equal(parseAuthority(bad).ok, false, bad);
    }
  });
});
