// Observability, end to end: real sidecars (dist/src/cli.js), a real service, curl and
// node:http2 as clients, an OTLP/HTTP receiver decoding the exporters' protobuf, and the
// admin port's /metrics read with a Prometheus text parser.
//
// - Traces: client -> sidecar "frontend" (outbound) -> h2c -> sidecar "backend" (inbound)
//   -> HTTP/1.1 service is one trace of four spans with the right parent links, and the
//   service sees a traceparent of that trace whose parent is backend's CLIENT span. B3 in
//   gives W3C out and the reverse.
// - Metrics: istio_requests_total equals the requests sent, by status code and protocol.
// - Access log: one JSON line per request with the right fields, 502 and 504 included.
// - Exporter down: requests still succeed, dropped spans are counted, RSS stays bounded.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { curl, rssOfPid } from '../helpers/clients.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { scrapeMetrics, sampleValue, sumSamples } from '../helpers/prometheus.js';
import { freePort, freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { startH1Upstream, type H1Upstream } from '../helpers/upstreams.js';

/** Export batches every 100 ms so tests do not wait for the 5 s default. */
const FAST_EXPORT = { OTEL_BSP_SCHEDULE_DELAY: '100' };

function header(raw: readonly string[], name: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) return raw[i + 1];
  return undefined;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await delay(25);
  }
  assert.fail(`timed out waiting for ${what}`);
}

function h2Get(port: number, path: string, count: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const statuses: number[] = [];
    let done = 0;
    for (let i = 0; i < count; i++) {
      const req = session.request({ ':path': path });
      req.on('response', (h) => statuses.push(Number(h[':status'])));
      req.on('error', reject);
      req.resume();
      req.on('end', () => {
        if (++done === count) {
          session.close();
          resolve(statuses);
        }
      });
      req.end();
    }
  });
}

describe('tracing across two sidecars', () => {
  let service: H1Upstream;
  let receiver: OtlpReceiver;
  let frontend: SkiffProcess;
  let backend: SkiffProcess;
  let frontendPort: number;
  let backendPort: number;

  before(async () => {
    service = await startH1Upstream();
    receiver = await startOtlpReceiver();
    const [fAdmin, fListen, bAdmin, bListen] = await freePorts(4);
    frontendPort = fListen;
    backendPort = bListen;
    backend = await startSkiff(
      `admin: { address: "127.0.0.1:${bAdmin}" }
telemetry:
  serviceName: backend
  tracing: { enabled: true, endpoint: "${receiver.url}" }
listeners:
  - name: inbound
    address: 127.0.0.1:${bListen}
    protocols: [http1, h2c]
    routes: inbound
routes:
  inbound:
    - match: { prefix: / }
      cluster: service
clusters:
  - name: service
    protocol: http1
    endpoints: [127.0.0.1:${service.port}]
`,
      { env: FAST_EXPORT },
    );
    // The frontend's tracing settings come from the standard OTEL_* variables only.
    frontend = await startSkiff(
      `admin: { address: "127.0.0.1:${fAdmin}" }
listeners:
  - name: outbound
    direction: outbound
    address: 127.0.0.1:${fListen}
    protocols: [http1, h2c]
    routes: outbound
routes:
  outbound:
    - match: { prefix: / }
      cluster: backend
clusters:
  - name: backend
    protocol: h2c
    endpoints: [127.0.0.1:${bListen}]
`,
      { env: { ...FAST_EXPORT, OTEL_SERVICE_NAME: 'frontend', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' } },
    );
  });

  after(async () => {
    await Promise.all([frontend?.stop(), backend?.stop()]);
    await Promise.all([service?.close(), receiver?.close()]);
  });

  /** The spans of one trace, once all `n` arrived. */
  async function traceSpans(traceId: string, n: number): Promise<ReceivedSpan[]> {
    let spans: ReceivedSpan[] = [];
    await waitFor(`${n} spans of trace ${traceId}`, () => {
      spans = receiver.spans.filter((s) => s.traceId === traceId);
      return spans.length >= n;
    }, 10_000);
    return spans;
  }

  it('one request through both sidecars is one trace with SERVER and CLIENT spans of each, correctly parented', async () => {
    const before = service.requests.length;
    const res = await curl([`http://127.0.0.1:${frontendPort}/echo/traced?x=1`, '-H', 'user-agent: trace-test']);
    assert.equal(res.status, 200);
    const seen = service.requests[before];
    const traceparent = header(seen.rawHeaders, 'traceparent');
    assert.ok(traceparent !== undefined, 'the service received a traceparent');
    const [version, traceId, parentId, flags] = traceparent.split('-');
    assert.equal(version, '00');
    assert.match(traceId, /^[0-9a-f]{32}$/);
    assert.equal(flags, '01', 'sampled');

    const spans = await traceSpans(traceId, 4);
    assert.equal(spans.length, 4, `exactly four spans: ${spans.map((s) => `${s.resource['service.name']}/${s.kind}`).join(', ')}`);
    const find = (service: string, kind: string): ReceivedSpan => {
      const s = spans.find((x) => x.resource['service.name'] === service && x.kind === kind);
      assert.ok(s !== undefined, `${service} ${kind} span`);
      return s;
    };
    const fServer = find('frontend', 'SERVER');
    const fClient = find('frontend', 'CLIENT');
    const bServer = find('backend', 'SERVER');
    const bClient = find('backend', 'CLIENT');
    assert.equal(fServer.parentSpanId, '', 'the first hop starts the trace');
    assert.equal(fClient.parentSpanId, fServer.spanId);
    assert.equal(bServer.parentSpanId, fClient.spanId, 'the backend continues the frontend CLIENT span');
    assert.equal(bClient.parentSpanId, bServer.spanId);
    assert.equal(parentId, bClient.spanId, "the service's parent is the backend's CLIENT span");

    // HTTP semantic-convention attributes plus Skiff's own.
    assert.equal(fServer.name, 'GET');
    assert.equal(fServer.attributes['http.request.method'], 'GET');
    assert.equal(fServer.attributes['url.path'], '/echo/traced');
    assert.equal(fServer.attributes['http.response.status_code'], 200);
    assert.equal(fServer.attributes['network.protocol.version'], '1.1');
    assert.equal(fServer.attributes['user_agent.original'], 'trace-test');
    assert.equal(fServer.attributes['skiff.cluster'], 'backend');
    assert.equal(fServer.attributes['skiff.response_flags'], '-');
    assert.equal(fClient.attributes['server.address'], '127.0.0.1');
    assert.equal(fClient.attributes['server.port'], backendPort);
    assert.equal(fClient.attributes['network.protocol.version'], '2', 'the frontend reached the backend over h2c');
    assert.equal(bServer.attributes['network.protocol.version'], '2');
    assert.equal(bClient.attributes['server.port'], service.port);
    assert.equal(bClient.attributes['http.response.status_code'], 200);
    assert.equal(bClient.attributes['skiff.cluster'], 'service');
    for (const s of spans) {
      assert.equal(s.status.code, 0, `${s.kind} span status unset for a 200`);
      assert.ok(s.endNs >= s.startNs, 'span ends after it starts');
    }
    assert.ok(fServer.startNs <= fClient.startNs && fClient.startNs <= bServer.startNs, 'spans start in hop order');
  });

  it('B3 in gives W3C (and B3) out, continuing the caller\'s trace', async () => {
    const traceId = '463ac35c9f6413ad48485a3953bb6124';
    const spanId = 'a2fb4a1d1a96d312';
    const before = service.requests.length;
    const res = await curl([
      `http://127.0.0.1:${frontendPort}/echo/b3`,
      '-H', `x-b3-traceid: ${traceId}`, '-H', `x-b3-spanid: ${spanId}`, '-H', 'x-b3-sampled: 1',
    ]);
    assert.equal(res.status, 200);
    const seen = service.requests[before];
    const traceparent = header(seen.rawHeaders, 'traceparent') ?? '';
    assert.equal(traceparent.split('-')[1], traceId, 'W3C traceparent carries the B3 trace id');
    assert.equal(header(seen.rawHeaders, 'x-b3-traceid'), traceId);
    assert.notEqual(header(seen.rawHeaders, 'x-b3-spanid'), spanId, 'the B3 span id is the new parent, not the caller\'s');
    const spans = await traceSpans(traceId, 4);
    const fServer = spans.find((s) => s.resource['service.name'] === 'frontend' && s.kind === 'SERVER');
    assert.equal(fServer?.parentSpanId, spanId, "the frontend SERVER span is a child of the caller's B3 span");
  });

  it('W3C in gives B3 out, continuing the caller\'s trace', async () => {
    const traceId = '0af7651916cd43dd8448eb211c80319c';
    const parent = 'b7ad6b7169203331';
    const before = service.requests.length;
    const res = await curl([`http://127.0.0.1:${frontendPort}/echo/w3c`, '-H', `traceparent: 00-${traceId}-${parent}-01`, '-H', 'tracestate: vendor=abc']);
    assert.equal(res.status, 200);
    const seen = service.requests[before];
    assert.equal(header(seen.rawHeaders, 'x-b3-traceid'), traceId, 'B3 trace id equals the W3C one');
    assert.equal(header(seen.rawHeaders, 'x-b3-sampled'), '1');
    assert.equal((header(seen.rawHeaders, 'traceparent') ?? '').split('-')[1], traceId);
    assert.equal(header(seen.rawHeaders, 'tracestate'), 'vendor=abc', `tracestate travels on: ${JSON.stringify(seen.rawHeaders)}`);
    const spans = await traceSpans(traceId, 4);
    const fServer = spans.find((s) => s.resource['service.name'] === 'frontend' && s.kind === 'SERVER');
    assert.equal(fServer?.parentSpanId, parent);
  });

  it('a 4xx from the service marks the CLIENT span as an error and leaves the SERVER span unset', async () => {
    const traceId = 'aaaabbbbccccddddeeeeffff00001111';
    // The service answers 404: an error on the CLIENT span, not on the SERVER span.
    const res = await curl([`http://127.0.0.1:${frontendPort}/status/404`, '-H', `traceparent: 00-${traceId}-1111222233334444-01`]);
    assert.equal(res.status, 404);
    const spans = await traceSpans(traceId, 4);
    const bClient = spans.find((s) => s.resource['service.name'] === 'backend' && s.kind === 'CLIENT');
    const bServer = spans.find((s) => s.resource['service.name'] === 'backend' && s.kind === 'SERVER');
    assert.equal(bClient?.status.code, 2, 'CLIENT span of a 404 is an error (semconv)');
    assert.equal(bClient?.attributes['error.type'], '404');
    assert.equal(bServer?.status.code, 0, 'SERVER span of a 404 is not an error (semconv)');
  });

  it('the sidecars count the spans they exported', async () => {
    const families = await scrapeMetrics(`http://127.0.0.1:${backend.adminPort}/metrics`);
    assert.ok((sampleValue(families, 'skiff_trace_spans_exported_total') ?? 0) >= 8);
    assert.equal(sampleValue(families, 'skiff_trace_spans_dropped_total', { reason: 'queue_full' }), 0);
  });
});

describe('metrics and access log', () => {
  let service: H1Upstream;
  let sk: SkiffProcess;
  let port: number;
  let dir: string;
  let logPath: string;

  before(async () => {
    service = await startH1Upstream();
    dir = mkdtempSync(join(tmpdir(), 'skiff-obs-'));
    logPath = join(dir, 'access.log');
    const deadPort = await freePort();
    const [admin, listen] = await freePorts(2);
    port = listen;
    sk = await startSkiff(`admin: { address: "127.0.0.1:${admin}" }
telemetry:
  serviceName: shop
  accessLog: { enabled: true, path: "${logPath}" }
listeners:
  - name: inbound
    address: 127.0.0.1:${listen}
    protocols: [http1, h2c]
    routes: inbound
routes:
  inbound:
    - match: { prefix: /dead }
      cluster: dead
    - match: { prefix: /slow }
      cluster: service
      timeout: 200ms
    - match: { prefix: /status }
      cluster: service
    - match: { prefix: /echo }
      cluster: service
clusters:
  - name: service
    protocol: http1
    endpoints: [127.0.0.1:${service.port}]
  - name: dead
    protocol: http1
    connectTimeout: 1s
    endpoints: [127.0.0.1:${deadPort}]
`);
  });

  after(async () => {
    await sk?.stop();
    await service?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('istio_requests_total equals the requests sent, by status code and protocol', async () => {
    for (let i = 0; i < 6; i++) assert.equal((await curl([`http://127.0.0.1:${port}/echo/a`])).status, 200);
    const posted = await curl([`http://127.0.0.1:${port}/echo/a`, '--data-binary', 'hello, skiff']);
    assert.equal(posted.body.toString(), 'hello, skiff');
    for (let i = 0; i < 3; i++) assert.equal((await curl([`http://127.0.0.1:${port}/status/503`])).status, 503);
    assert.equal((await curl([`http://127.0.0.1:${port}/nowhere`])).status, 404);
    const h2 = await h2Get(port, '/echo/b', 5);
    assert.deepEqual(h2, [200, 200, 200, 200, 200]);
    assert.equal((await curl([`http://127.0.0.1:${port}/dead/x`])).status, 502);
    assert.equal((await curl([`http://127.0.0.1:${port}/slow/1000`])).status, 504);

    const families = await scrapeMetrics(`http://127.0.0.1:${sk.adminPort}/metrics`);
    const base = { reporter: 'destination', destination_workload: 'shop', request_protocol: 'http' };
    assert.equal(sampleValue(families, 'istio_requests_total', { ...base, response_code: '200', downstream_protocol: 'http1', destination_service: 'service', response_flags: '-' }), 7);
    assert.equal(sampleValue(families, 'istio_requests_total', { ...base, response_code: '200', downstream_protocol: 'h2' }), 5);
    assert.equal(sampleValue(families, 'istio_requests_total', { ...base, response_code: '503', downstream_protocol: 'http1' }), 3);
    assert.equal(sampleValue(families, 'istio_requests_total', { ...base, response_code: '404', response_flags: 'NR', destination_service: 'unknown' }), 1);
    assert.equal(sampleValue(families, 'istio_requests_total', { response_code: '502', response_flags: 'UF', destination_service: 'dead' }), 1);
    assert.equal(sampleValue(families, 'istio_requests_total', { response_code: '504', response_flags: 'UT' }), 1);
    assert.equal(sumSamples(families, 'istio_requests_total'), 18, 'every request counted once');
    assert.equal(sumSamples(families, 'istio_request_duration_milliseconds_count'), 18);
    assert.equal(sumSamples(families, 'istio_response_bytes_count'), 18);
    // Skiff internals are there and sane.
    assert.equal(sampleValue(families, 'skiff_requests_in_flight'), 0);
    assert.ok((sampleValue(families, 'skiff_arena_free_contexts') ?? -1) >= 1);
    assert.equal(sampleValue(families, 'skiff_buffered_frame_bytes'), 0);
    assert.ok(sampleValue(families, 'skiff_pool_connections', { cluster: 'service' }) !== undefined);
    assert.ok((sampleValue(families, 'skiff_upstream_connect_failures_total', { cluster: 'dead' }) ?? 0) >= 1);
    // curl opens one connection per request (13), node:http2 one for its five streams.
    assert.equal(sumSamples(families, 'istio_tcp_connections_opened_total', { listener: 'inbound' }), 14);
    assert.ok((sampleValue(families, 'process_resident_memory_bytes') ?? 0) > 0);
  });

  it('the access log has one JSON line per request with the right fields, 502 and 504 included', async () => {
    // The destination writes asynchronously; wait until every request of the test above is in.
    let lines: Record<string, unknown>[] = [];
    await waitFor('18 access log lines', () => {
      const text = (() => {
        try {
          return readFileSync(logPath, 'utf8');
        } catch {
          return '';
        }
      })();
      lines = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
      return lines.length >= 18;
    }, 5000);
    assert.equal(lines.length, 18);
    for (const l of lines) {
      assert.equal(l.type, 'access');
      assert.match(String(l.start_time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.equal(typeof l.duration_ms, 'number');
      assert.match(String(l.request_id), /^[0-9a-f-]{36}$/);
      assert.equal(l.downstream_remote_address, '127.0.0.1');
    }
    const ok = lines.find((l) => l.path === '/echo/a');
    assert.ok(ok !== undefined);
    assert.equal(ok.method, 'GET');
    assert.equal(ok.protocol, 'HTTP/1.1');
    assert.equal(ok.response_code, 200);
    assert.equal(ok.response_flags, '-');
    assert.equal(ok.upstream_host, `127.0.0.1:${service.port}`);
    assert.equal(ok.upstream_cluster, 'service');
    assert.equal(typeof ok.upstream_service_time_ms, 'number');
    const post = lines.find((l) => l.method === 'POST');
    assert.equal(post?.bytes_received, 12, 'request body bytes');
    assert.equal(post?.bytes_sent, 12, 'response body bytes (the echo)');
    assert.equal(ok.authority, `127.0.0.1:${port}`);
    assert.equal(lines.filter((l) => l.protocol === 'HTTP/2').length, 5);
    const bad = lines.find((l) => l.response_code === 502);
    assert.ok(bad !== undefined, 'the 502 is logged');
    assert.equal(bad.response_flags, 'UF');
    assert.equal(bad.error, 'SKIFF_ERR_UPSTREAM_CONNECT');
    assert.equal(bad.upstream_service_time_ms, null, 'no upstream answered');
    const slow = lines.find((l) => l.response_code === 504);
    assert.ok(slow !== undefined, 'the 504 is logged');
    assert.equal(slow.response_flags, 'UT');
    assert.ok((slow.duration_ms as number) >= 190, `the 504 took the route timeout: ${String(slow.duration_ms)} ms`);
    const noRoute = lines.find((l) => l.response_code === 404);
    assert.equal(noRoute?.response_flags, 'NR');
    assert.equal(noRoute?.upstream_host, null);
  });

  it('/logging changes the log level at runtime; a bad level is refused', async () => {
    const base = `http://127.0.0.1:${sk.adminPort}`;
    const get = await (await fetch(`${base}/logging`)).json() as { level: string; accessLog: { enabled: boolean } };
    assert.equal(get.level, 'info');
    assert.equal(get.accessLog.enabled, true);
    const set = await fetch(`${base}/logging?level=debug`, { method: 'POST' });
    assert.equal(set.status, 200);
    assert.equal(((await set.json()) as { level: string }).level, 'debug');
    const bad = await fetch(`${base}/logging?level=loud`, { method: 'POST' });
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /unknown level "loud"/);
    assert.equal(((await (await fetch(`${base}/logging`)).json()) as { level: string }).level, 'debug');
    await waitFor('the change logged', () => /"msg":"log level changed through the admin port"/.test(sk.stderr()), 2000);
  });

  it('/clusters shows endpoints with health and latency; /config_dump the running config', async () => {
    const base = `http://127.0.0.1:${sk.adminPort}`;
    const clusters = (await (await fetch(`${base}/clusters`)).json()) as { clusters: { name: string; endpoints: { address: string; health: string; latencyEwmaMs: number | null; ejected: boolean }[] }[] };
    const svc = clusters.clusters.find((c) => c.name === 'service');
    assert.equal(svc?.endpoints[0].health, 'healthy');
    assert.ok((svc?.endpoints[0].latencyEwmaMs ?? 0) > 0);
    assert.equal(svc?.endpoints[0].ejected, false);
    const dead = clusters.clusters.find((c) => c.name === 'dead');
    assert.equal(dead?.endpoints[0].health, 'unhealthy');
    const dump = (await (await fetch(`${base}/config_dump`)).json()) as { version: number; clusters: { name: string }[]; telemetry: { serviceName: string }; routes: Record<string, unknown[]> };
    assert.equal(dump.version, 1);
    assert.deepEqual(dump.clusters.map((c) => c.name).sort(), ['dead', 'service']);
    assert.equal(dump.telemetry.serviceName, 'shop');
    assert.equal(dump.routes.inbound.length, 4);
  });
});

describe('the trace exporter down', () => {
  it('requests still succeed, dropped spans are counted, memory stays bounded', async () => {
    const receiver = await startOtlpReceiver({ mode: 'stall' });
    const service = await startH1Upstream();
    const [admin, listen] = await freePorts(2);
    const sk = await startSkiff(`admin: { address: "127.0.0.1:${admin}" }
telemetry:
  tracing: { enabled: true, endpoint: "${receiver.url}" }
listeners:
  - name: inbound
    address: 127.0.0.1:${listen}
    protocols: [http1, h2c]
    routes: inbound
routes:
  inbound:
    - match: { prefix: / }
      cluster: service
clusters:
  - name: service
    protocol: http1
    endpoints: [127.0.0.1:${service.port}]
`, { env: { OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_BSP_MAX_QUEUE_SIZE: '256', OTEL_BSP_EXPORT_TIMEOUT: '1000', OTEL_EXPORTER_OTLP_TIMEOUT: '500' } });
    try {
      // Bounded load: 6 rounds of 500 HTTP/2 requests (two spans each), RSS sampled per round.
      const rss: number[] = [];
      for (let round = 0; round < 6; round++) {
        const statuses = await h2Get(listen, '/ok', 500);
        assert.equal(statuses.length, 500);
        assert.ok(statuses.every((s) => s === 200), 'every request succeeds with the exporter down');
        rss.push(rssOfPid(sk.pid));
      }
      const families = await scrapeMetrics(`http://127.0.0.1:${sk.adminPort}/metrics`);
      const dropped = sumSamples(families, 'skiff_trace_spans_dropped_total');
      assert.ok(dropped > 1000, `dropped spans are counted: ${dropped}`);
      assert.ok((sampleValue(families, 'skiff_trace_spans_queued') ?? Infinity) <= 256, 'the queue stays within its bound');
      assert.equal(sampleValue(families, 'skiff_trace_spans_exported_total'), 0);
      // Memory: after the first round's warm-up, the last rounds add no more than noise.
      const growth = rss[rss.length - 1] - rss[1];
      assert.ok(growth < 24 * 1024 * 1024, `RSS per round (MiB): ${rss.map((r) => (r / 1048576).toFixed(1)).join(', ')}`);
      assert.ok(receiver.requests >= 1, 'the exporter did try');
    } finally {
      await sk.stop();
      await Promise.all([service.close(), receiver.close()]);
    }
  });
});
