// Tests of the observability test helpers against real producers, with no sidecar involved:
// spans exported by the OpenTelemetry SDK's own OTLP exporters (protobuf and JSON) into
// test/helpers/otlp-receiver.ts, and a prom-client registry served over node:http read by
// test/helpers/prometheus.ts. A failing observability test can then blame Skiff, not these.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter as OTLPJsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OTLPProtoTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import client from 'prom-client';
import { decodeJsonExport, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../../helpers/otlp-receiver.js';
import { findFamily, parseMetrics, sampleValue, scrapeMetrics, sumSamples } from '../../helpers/prometheus.js';

/** A provider exporting every ended span through `exporter`. */
function providerFor(exporter: SpanExporter): BasicTracerProvider {
  return new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'skiff-helpers-test', 'service.version': '0.1.0' }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
}

interface Made {
  parent: Span;
  child: Span;
}

/** A SERVER span with a CLIENT child: attributes of every scalar kind, an event, an error. */
function makeTwoSpans(provider: BasicTracerProvider): Made {
  const tracer = provider.getTracer('skiff-helpers-test-scope', '1.2.3');
  const parent = tracer.startSpan('ingress GET /app', {
    kind: SpanKind.SERVER,
    attributes: { 'http.request.method': 'GET', 'http.response.status_code': 200, 'skiff.ratio': 0.25, 'skiff.cached': false, 'skiff.tags': ['a', 'b'] },
  });
  const child = tracer.startSpan('upstream app', { kind: SpanKind.CLIENT, attributes: { 'server.address': '127.0.0.1', 'server.port': 9005 } }, trace.setSpan(ROOT_CONTEXT, parent));
  child.addEvent('retry', { attempt: 2 });
  child.setStatus({ code: SpanStatusCode.ERROR, message: 'upstream reset' });
  child.end();
  parent.end();
  return { parent, child };
}

function byName(spans: readonly ReceivedSpan[], name: string): ReceivedSpan {
  const s = spans.find((x) => x.name === name);
  assert.ok(s !== undefined, `no span ${name} in ${spans.map((x) => x.name).join(', ')}`);
  return s;
}

function checkTwoSpans(spans: readonly ReceivedSpan[], made: Made, encoding: 'protobuf' | 'json'): void {
  assert.equal(spans.length, 2);
  const p = byName(spans, 'ingress GET /app');
  const c = byName(spans, 'upstream app');
  const pc = made.parent.spanContext();
  const cc = made.child.spanContext();
  assert.match(p.traceId, /^[0-9a-f]{32}$/);
  assert.match(p.spanId, /^[0-9a-f]{16}$/);
  assert.equal(p.traceId, pc.traceId);
  assert.equal(p.spanId, pc.spanId);
  assert.equal(p.parentSpanId, '');
  assert.equal(c.traceId, pc.traceId);
  assert.equal(c.spanId, cc.spanId);
  assert.equal(c.parentSpanId, pc.spanId);
  assert.equal(p.kind, 'SERVER');
  assert.equal(c.kind, 'CLIENT');
  assert.deepEqual(p.attributes, { 'http.request.method': 'GET', 'http.response.status_code': 200, 'skiff.ratio': 0.25, 'skiff.cached': false, 'skiff.tags': ['a', 'b'] });
  assert.deepEqual(c.attributes, { 'server.address': '127.0.0.1', 'server.port': 9005 });
  assert.deepEqual(c.status, { code: SpanStatusCode.ERROR, message: 'upstream reset' });
  assert.deepEqual(p.status, { code: SpanStatusCode.UNSET, message: '' });
  assert.equal(c.events.length, 1);
  assert.equal(c.events[0].name, 'retry');
  assert.deepEqual(c.events[0].attributes, { attempt: 2 });
  assert.equal(p.resource['service.name'], 'skiff-helpers-test');
  assert.equal(p.scope, 'skiff-helpers-test-scope');
  assert.equal(p.scopeVersion, '1.2.3');
  for (const s of [p, c]) {
    assert.equal(s.encoding, encoding);
    assert.ok(s.startNs <= s.endNs, `${s.name}: start after end`);
    const nowNs = BigInt(Date.now()) * 1_000_000n;
    assert.ok(nowNs - s.startNs < 60_000_000_000n && s.startNs <= nowNs + 1_000_000_000n, `${s.name}: start ${s.startNs} is not about now`);
  }
  assert.ok(c.startNs >= p.startNs && c.endNs <= p.endNs, 'child not inside parent');
}

/** Ended spans as ReadableSpans (to call an exporter's export() directly). */
function readableSpans(): ReadableSpan[] {
  const mem = new InMemorySpanExporter();
  const provider = providerFor(mem);
  makeTwoSpans(provider);
  return mem.getFinishedSpans();
}

function exportOnce(exporter: SpanExporter, spans: ReadableSpan[]): Promise<ExportResult> {
  return new Promise((resolve) => exporter.export(spans, resolve));
}

describe('otlp receiver', () => {
  let receiver: OtlpReceiver | null = null;
  afterEach(async () => {
    await receiver?.close();
    receiver = null;
  });

  it('decodes protobuf exports from OTLPTraceExporter (exporter-trace-otlp-proto)', async () => {
    receiver = await startOtlpReceiver();
    const provider = providerFor(new OTLPProtoTraceExporter({ url: receiver.url }));
    const made = makeTwoSpans(provider);
    await provider.forceFlush();
    const spans = await receiver.waitForSpans(2, 5000);
    checkTwoSpans(spans, made, 'protobuf');
    assert.ok(receiver.requests >= 1);
    assert.ok(receiver.exports.every((e) => e.contentType === 'application/x-protobuf' && e.status === 200 && e.error === null));
    await provider.shutdown();
  });

  it('decodes OTLP/JSON exports from OTLPTraceExporter (exporter-trace-otlp-http), hex ids', async () => {
    receiver = await startOtlpReceiver();
    const provider = providerFor(new OTLPJsonTraceExporter({ url: receiver.url }));
    const made = makeTwoSpans(provider);
    await provider.forceFlush();
    const spans = await receiver.waitForSpans(2, 5000);
    checkTwoSpans(spans, made, 'json');
    assert.ok(receiver.exports.every((e) => e.contentType === 'application/json' && e.status === 200));
    await provider.shutdown();
  });

  it('answers an export with the same spans in both encodings identically', async () => {
    receiver = await startOtlpReceiver();
    const spans = readableSpans();
    const proto = new OTLPProtoTraceExporter({ url: receiver.url });
    const json = new OTLPJsonTraceExporter({ url: receiver.url });
    assert.equal((await exportOnce(proto, spans)).code, ExportResultCode.SUCCESS);
    assert.equal((await exportOnce(json, spans)).code, ExportResultCode.SUCCESS);
    const got = await receiver.waitForSpans(4, 5000);
    const strip = (s: ReceivedSpan): Omit<ReceivedSpan, 'encoding'> => {
      const { encoding: _encoding, ...rest } = s;
      return rest;
    };
    assert.deepEqual(got.slice(2).map(strip), got.slice(0, 2).map(strip));
    assert.equal(receiver.requests, 2);
    await proto.shutdown();
    await json.shutdown();
  });

  it('fail mode: answers 503 (with retry-after), records no spans, the exporter retries then fails', async () => {
    receiver = await startOtlpReceiver({ mode: 'fail', retryAfterSeconds: 0 });
    const exporter = new OTLPProtoTraceExporter({ url: receiver.url, timeoutMillis: 5000 });
    const result = await exportOnce(exporter, readableSpans());
    assert.equal(result.code, ExportResultCode.FAILED);
    assert.equal(receiver.spans.length, 0);
    assert.equal(receiver.requests, 6, 'one attempt and the OTLP exporter base\'s 5 retries');
    assert.ok(receiver.exports.every((e) => e.status === 503 && e.spans === 0));
    // Back to normal: the next export lands.
    receiver.setMode('ok');
    assert.equal((await exportOnce(exporter, readableSpans())).code, ExportResultCode.SUCCESS);
    assert.equal((await receiver.waitForSpans(2, 5000)).length, 2);
    await exporter.shutdown();
  });

  it('fail mode with a non-retryable status: one request, export fails', async () => {
    receiver = await startOtlpReceiver({ mode: 'fail', failStatus: 400 });
    const exporter = new OTLPJsonTraceExporter({ url: receiver.url, timeoutMillis: 5000 });
    assert.equal((await exportOnce(exporter, readableSpans())).code, ExportResultCode.FAILED);
    assert.equal(receiver.requests, 1);
    await exporter.shutdown();
  });

  it('stall mode: never answers, the exporter times out, close() ends the stalled request', async () => {
    receiver = await startOtlpReceiver({ mode: 'stall' });
    const exporter = new OTLPProtoTraceExporter({ url: receiver.url, timeoutMillis: 300 });
    const t0 = Date.now();
    const result = await exportOnce(exporter, readableSpans());
    assert.equal(result.code, ExportResultCode.FAILED);
    assert.ok(Date.now() - t0 < 5000, 'export did not time out');
    assert.ok(receiver.requests >= 1);
    assert.equal(receiver.exports[0].status, null);
    assert.equal(receiver.spans.length, 0);
    await assert.rejects(receiver.waitForSpans(1, 50), /only 0 span/);
    await exporter.shutdown();
    await receiver.close();
    await receiver.close(); // idempotent
  });

  it('decodes hand-written OTLP/JSON: snake_case, int64 strings, arrays, kvlists, bytes; rejects base64 ids', async () => {
    receiver = await startOtlpReceiver();
    const body = {
      resource_spans: [
        {
          resource: { attributes: [{ key: 'service.name', value: { stringValue: 'hand' } }] },
          scope_spans: [
            {
              scope: { name: 'hand-scope' },
              spans: [
                {
                  trace_id: '0AF7651916CD43DD8448EB211C80319C',
                  span_id: 'b7ad6b7169203331',
                  name: 'hand',
                  kind: 2,
                  start_time_unix_nano: '1700000000000000001',
                  endTimeUnixNano: 1700000000000001000,
                  attributes: [
                    { key: 'i', value: { intValue: '9007199254740991' } },
                    { key: 'd', value: { doubleValue: 1.5 } },
                    { key: 'b', value: { boolValue: true } },
                    { key: 'arr', value: { arrayValue: { values: [{ stringValue: 'x' }, { intValue: 3 }] } } },
                    { key: 'kv', value: { kvlistValue: { values: [{ key: 'k', value: { stringValue: 'v' } }] } } },
                    { key: 'raw', value: { bytesValue: Buffer.from([0xde, 0xad]).toString('base64') } },
                  ],
                  status: { code: 1 },
                },
              ],
            },
          ],
        },
      ],
    };
    const res = await fetch(receiver.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    const [s] = await receiver.waitForSpans(1, 2000);
    assert.equal(s.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(s.parentSpanId, '');
    assert.equal(s.kind, 'SERVER');
    assert.equal(s.startNs, 1700000000000000001n);
    assert.deepEqual(s.attributes, { i: 9007199254740991, d: 1.5, b: true, arr: ['x', 3], kv: { k: 'v' }, raw: 'dead' });
    assert.deepEqual(s.status, { code: 1, message: '' });
    assert.deepEqual(s.resource, { 'service.name': 'hand' });
    assert.equal(s.scope, 'hand-scope');

    const bad = structuredClone(body);
    bad.resource_spans[0].scope_spans[0].spans[0].trace_id = Buffer.alloc(16, 1).toString('base64');
    const r400 = await fetch(receiver.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(bad) });
    assert.equal(r400.status, 400);
    assert.match(await r400.text(), /not hex/);
    assert.throws(() => decodeJsonExport(Buffer.from(JSON.stringify(bad))), /not hex/);
    assert.equal((await fetch(`${receiver.endpoint}/v1/metrics`, { method: 'POST' })).status, 404);
    assert.equal((await fetch(receiver.url)).status, 405);
    assert.equal(receiver.spans.length, 1);
  });
});

describe('prometheus scrape helpers', () => {
  let server: http.Server;
  let url: string;
  const registry = new client.Registry();

  before(async () => {
    const labelNames = ['destination_service', 'response_code'];
    const requests = new client.Counter({ name: 'istio_requests_total', help: 'Requests', labelNames, registers: [registry] });
    const duration = new client.Histogram({ name: 'istio_request_duration_milliseconds', help: 'Duration', labelNames, buckets: [1, 10, 100], registers: [registry] });
    const odd = new client.Gauge({ name: 'skiff_odd_label', help: 'Label escaping\nand a second help line', labelNames: ['v'], registers: [registry] });
    requests.inc({ destination_service: 'reviews', response_code: '200' }, 5);
    requests.inc({ destination_service: 'reviews', response_code: '503' }, 2);
    requests.inc({ destination_service: 'ratings', response_code: '200' }, 1);
    for (const v of [0.5, 5, 50, 500]) duration.observe({ destination_service: 'reviews', response_code: '200' }, v);
    duration.observe({ destination_service: 'ratings', response_code: '200' }, 7);
    odd.set({ v: 'a "quoted" \\ back\nslash' }, -1.5);
    server = http.createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('scrapes families with types, help and every labelled histogram series', async () => {
    const families = await scrapeMetrics(url);
    const counter = findFamily(families, 'istio_requests_total');
    assert.equal(counter?.type, 'counter');
    assert.equal(counter?.help, 'Requests');
    assert.equal(counter?.samples.length, 3);
    const hist = findFamily(families, 'istio_request_duration_milliseconds');
    assert.equal(hist?.type, 'histogram');
    // 2 series x (4 buckets incl. +Inf + _sum + _count)
    assert.equal(hist?.samples.length, 12);
    assert.equal(findFamily(families, 'skiff_odd_label')?.help, 'Label escaping\nand a second help line');
  });

  it('sampleValue: exact labels, a unique subset, ambiguity, absence', async () => {
    const families = await scrapeMetrics(url);
    assert.equal(sampleValue(families, 'istio_requests_total', { destination_service: 'reviews', response_code: '503' }), 2);
    assert.equal(sampleValue(families, 'istio_requests_total', { destination_service: 'ratings' }), 1);
    assert.throws(() => sampleValue(families, 'istio_requests_total', { destination_service: 'reviews' }), /2 series match/);
    assert.equal(sampleValue(families, 'istio_requests_total', { destination_service: 'details' }), undefined);
    assert.equal(sampleValue(families, 'no_such_metric', {}), undefined);
    const reviews = { destination_service: 'reviews', response_code: '200' };
    assert.equal(sampleValue(families, 'istio_request_duration_milliseconds_count', reviews), 4);
    assert.equal(sampleValue(families, 'istio_request_duration_milliseconds_sum', reviews), 555.5);
    assert.equal(sampleValue(families, 'istio_request_duration_milliseconds_bucket', { ...reviews, le: '10' }), 2);
    assert.equal(sampleValue(families, 'istio_request_duration_milliseconds_bucket', { ...reviews, le: '+Inf' }), 4);
    assert.equal(sampleValue(families, 'skiff_odd_label', { v: 'a "quoted" \\ back\nslash' }), -1.5);
  });

  it('sumSamples: counters and histogram _count/_sum over a label filter', async () => {
    const families = await scrapeMetrics(url);
    assert.equal(sumSamples(families, 'istio_requests_total', {}), 8);
    assert.equal(sumSamples(families, 'istio_requests_total', { destination_service: 'reviews' }), 7);
    assert.equal(sumSamples(families, 'istio_requests_total', { response_code: '200' }), 6);
    assert.equal(sumSamples(families, 'istio_requests_total', { response_code: '404' }), 0);
    assert.equal(sumSamples(families, 'istio_request_duration_milliseconds_count', { response_code: '200' }), 5);
    assert.equal(sumSamples(families, 'istio_request_duration_milliseconds_sum', {}), 562.5);
    assert.equal(sumSamples(families, 'istio_request_duration_milliseconds_bucket', { le: '10' }), 3);
  });

  it('parseMetrics: special values, no trailing newline, untyped lines', () => {
    const families = parseMetrics('# TYPE up gauge\nup{job="a"} 1\nup{job="b"} +Inf\nlonely_total 3');
    assert.equal(sampleValue(families, 'up', { job: 'b' }), Number.POSITIVE_INFINITY);
    assert.equal(sampleValue(families, 'lonely_total'), 3);
    assert.equal(findFamily(families, 'lonely_total')?.type, 'untyped');
  });

  it('scrapeMetrics throws on a non-200 answer', async () => {
    await assert.rejects(scrapeMetrics(url.replace('/metrics', '/nope')), /HTTP 404/);
  });
});
