// An OTLP/HTTP trace receiver for tests: what a collector would see of Skiff's spans.
//
// Listens on 127.0.0.1 (ephemeral port) with node:http and accepts POST /v1/traces as
// `application/x-protobuf` (ExportTraceServiceRequest, decoded with protobufjs from the subset
// of the opentelemetry-proto v1 schema below) or `application/json` (OTLP/JSON: trace and span
// ids as hex, 64-bit integers as decimal strings or numbers, enums as integers; field names
// lowerCamelCase, snake_case accepted too). gzip / deflate request bodies are inflated. A good
// export is answered 200 with an empty ExportTraceServiceResponse in the request's encoding.
//
// Failure modes, for exporter tests (set at start or switched with setMode):
//   'ok'     decode and record the spans, answer 200
//   'fail'   answer `failStatus` (default 503, optionally with retry-after) without recording spans
//   'stall'  read the body, never answer (the request stays open until close())
// Every POST /v1/traces counts in `requests` and gets an entry in `exports`, whatever the mode.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import protobuf from 'protobufjs';

// ---------------------------------------------------------------------------------------
// Schema: a subset of opentelemetry-proto v1 (common.proto, resource.proto, trace.proto,
// collector/trace/v1/trace_service.proto), with the upstream package names, field names,
// types and field numbers (checked against open-telemetry/opentelemetry-proto at ac2c4b5,
// 2026-08-18). Omitted: KeyValue.key_strindex, AnyValue.string_value_strindex (profiles
// only), Resource.entity_refs, the *_schema_url fields, Span.links; unknown fields are
// skipped by the decoder.

const COMMON_PROTO = `
syntax = "proto3";
package opentelemetry.proto.common.v1;
message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
    KeyValueList kvlist_value = 6;
    bytes bytes_value = 7;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue {
  string key = 1;
  AnyValue value = 2;
}
message InstrumentationScope {
  string name = 1;
  string version = 2;
  repeated KeyValue attributes = 3;
  uint32 dropped_attributes_count = 4;
}
`;

const RESOURCE_PROTO = `
syntax = "proto3";
package opentelemetry.proto.resource.v1;
message Resource {
  repeated opentelemetry.proto.common.v1.KeyValue attributes = 1;
  uint32 dropped_attributes_count = 2;
}
`;

const TRACE_PROTO = `
syntax = "proto3";
package opentelemetry.proto.trace.v1;
message ResourceSpans {
  opentelemetry.proto.resource.v1.Resource resource = 1;
  repeated ScopeSpans scope_spans = 2;
}
message ScopeSpans {
  opentelemetry.proto.common.v1.InstrumentationScope scope = 1;
  repeated Span spans = 2;
}
message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  fixed32 flags = 16;
  string name = 5;
  enum SpanKind {
    SPAN_KIND_UNSPECIFIED = 0;
    SPAN_KIND_INTERNAL = 1;
    SPAN_KIND_SERVER = 2;
    SPAN_KIND_CLIENT = 3;
    SPAN_KIND_PRODUCER = 4;
    SPAN_KIND_CONSUMER = 5;
  }
  SpanKind kind = 6;
  fixed64 start_time_unix_nano = 7;
  fixed64 end_time_unix_nano = 8;
  repeated opentelemetry.proto.common.v1.KeyValue attributes = 9;
  uint32 dropped_attributes_count = 10;
  message Event {
    fixed64 time_unix_nano = 1;
    string name = 2;
    repeated opentelemetry.proto.common.v1.KeyValue attributes = 3;
    uint32 dropped_attributes_count = 4;
  }
  repeated Event events = 11;
  uint32 dropped_events_count = 12;
  Status status = 15;
}
message Status {
  string message = 2;
  enum StatusCode {
    STATUS_CODE_UNSET = 0;
    STATUS_CODE_OK = 1;
    STATUS_CODE_ERROR = 2;
  }
  StatusCode code = 3;
}
`;

const TRACE_SERVICE_PROTO = `
syntax = "proto3";
package opentelemetry.proto.collector.trace.v1;
message ExportTraceServiceRequest {
  repeated opentelemetry.proto.trace.v1.ResourceSpans resource_spans = 1;
}
message ExportTraceServiceResponse {
  ExportTracePartialSuccess partial_success = 1;
}
message ExportTracePartialSuccess {
  int64 rejected_spans = 1;
  string error_message = 2;
}
`;

let schema: { request: protobuf.Type; response: protobuf.Type } | null = null;

/** The two collector messages, parsed once. */
export function otlpTraceSchema(): { request: protobuf.Type; response: protobuf.Type } {
  if (schema !== null) return schema;
  const root = new protobuf.Root();
  for (const text of [COMMON_PROTO, RESOURCE_PROTO, TRACE_PROTO, TRACE_SERVICE_PROTO]) protobuf.parse(text, root);
  root.resolveAll();
  schema = {
    request: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest'),
    response: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse'),
  };
  return schema;
}

// ---------------------------------------------------------------------------------------
// What tests see

/** An attribute value: AnyValue flattened. int64 becomes a number (exact up to 2^53), bytes
 * become a hex string, arrays and key-value lists nest. */
export type AttributeValue = string | number | boolean | AttributeValue[] | { [key: string]: AttributeValue };

export type SpanKindName = 'UNSPECIFIED' | 'INTERNAL' | 'SERVER' | 'CLIENT' | 'PRODUCER' | 'CONSUMER';

export interface ReceivedEvent {
  name: string;
  timeNs: bigint;
  attributes: Record<string, AttributeValue>;
}

export interface ReceivedSpan {
  /** 32 lower-case hex digits. */
  traceId: string;
  /** 16 lower-case hex digits. */
  spanId: string;
  /** 16 hex digits, or '' for a root span. */
  parentSpanId: string;
  traceState: string;
  name: string;
  kind: SpanKindName;
  startNs: bigint;
  endNs: bigint;
  attributes: Record<string, AttributeValue>;
  events: ReceivedEvent[];
  /** code as in OTLP and @opentelemetry/api SpanStatusCode: 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string };
  /** Attributes of the span's resource (service.name, ...). */
  resource: Record<string, AttributeValue>;
  /** Instrumentation scope name ('' when absent). */
  scope: string;
  scopeVersion: string;
  /** Which encoding carried it. */
  encoding: 'protobuf' | 'json';
}

export type OtlpReceiverMode = 'ok' | 'fail' | 'stall';

export interface OtlpReceiverOptions {
  /** Default 'ok'. */
  mode?: OtlpReceiverMode;
  /** Status answered in 'fail' mode; default 503 (retryable for OTLP exporters). */
  failStatus?: number;
  /** In 'fail' mode, send `retry-after: N` (OTLP exporters then retry after N s, not their
   * own 1 s+ backoff; 0 makes a retrying exporter's attempts immediate). */
  retryAfterSeconds?: number;
}

/** One POST /v1/traces as received. */
export interface ExportRecord {
  contentType: string;
  contentEncoding: string;
  /** Body bytes as received (before inflating). */
  bodyBytes: number;
  /** Spans decoded from it (0 when failed, stalled or undecodable). */
  spans: number;
  /** Status answered; null while stalled. */
  status: number | null;
  /** Decode error, if any (answered 400). */
  error: string | null;
}

export interface OtlpReceiver {
  port: number;
  /** The traces endpoint, `http://127.0.0.1:PORT/v1/traces` (an exporter's `url`). */
  url: string;
  /** `http://127.0.0.1:PORT` (an OTEL_EXPORTER_OTLP_ENDPOINT-style base). */
  endpoint: string;
  /** Every span received, in arrival order. */
  spans: ReceivedSpan[];
  /** POST /v1/traces requests seen (all modes). */
  readonly requests: number;
  exports: ExportRecord[];
  mode: OtlpReceiverMode;
  setMode(mode: OtlpReceiverMode): void;
  /** Resolves with a copy of `spans` once at least n spans arrived; rejects after timeoutMs. */
  waitForSpans(n: number, timeoutMs?: number): Promise<ReceivedSpan[]>;
  /** Closes the listener, destroys connections (stalled requests included). Idempotent. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------
// Decoding: protobufjs toObject() output and OTLP/JSON share one normalizer. Both are plain
// objects with camelCase keys; they differ in ids (bytes vs hex strings), bytes values (bytes
// vs base64) and 64-bit integers (decimal strings from toObject({ longs: String }); strings or
// numbers in JSON).

type Loose = Record<string, unknown>;

const KIND_NAMES: readonly SpanKindName[] = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];

function isRecord(v: unknown): v is Loose {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/** o[camel] ?? o[snake]. */
function field(o: Loose, camel: string): unknown {
  const v = o[camel];
  if (v !== undefined && v !== null) return v;
  const snake = camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  return snake === camel ? undefined : (o[snake] ?? undefined);
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** A trace/span id: bytes (protobuf) or hex (JSON); '' when absent or empty. */
function idHex(v: unknown, what: string): string {
  if (v === undefined || v === null) return '';
  if (v instanceof Uint8Array) return toHex(v);
  if (typeof v === 'string') {
    if (v !== '' && !/^[0-9a-fA-F]+$/.test(v)) throw new Error(`${what} is not hex: ${JSON.stringify(v)} (OTLP/JSON ids are hex, not base64)`);
    return v.toLowerCase();
  }
  throw new Error(`${what} has type ${typeof v}`);
}

function toBigInt(v: unknown): bigint {
  if (v === undefined || v === null || v === '') return 0n;
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return BigInt(Math.trunc(v));
  if (typeof v === 'string') return BigInt(v);
  // A Long (protobufjs with the long package) when toObject was not asked for strings.
  return BigInt(String(v));
}

function enumNumber<T extends string>(v: unknown, names: readonly T[], prefix: string): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string') {
    const i = names.indexOf(v.replace(prefix, '') as T);
    if (i >= 0) return i;
  }
  return 0;
}

function anyValue(v: unknown): AttributeValue {
  if (!isRecord(v)) return '';
  const s = field(v, 'stringValue');
  if (s !== undefined) return str(s);
  const b = field(v, 'boolValue');
  if (b !== undefined) return b === true;
  const i = field(v, 'intValue');
  if (i !== undefined) return Number(toBigInt(i));
  const d = field(v, 'doubleValue');
  if (d !== undefined) return Number(d);
  const arr = field(v, 'arrayValue');
  if (arr !== undefined) return isRecord(arr) ? list(arr.values).map(anyValue) : [];
  const kv = field(v, 'kvlistValue');
  if (kv !== undefined) return isRecord(kv) ? keyValues(kv.values) : {};
  const bytes = field(v, 'bytesValue');
  if (bytes instanceof Uint8Array) return toHex(bytes);
  if (typeof bytes === 'string') return Buffer.from(bytes, 'base64').toString('hex');
  return '';
}

function keyValues(v: unknown): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const kv of list(v)) {
    if (isRecord(kv)) out[str(kv.key)] = anyValue(kv.value);
  }
  return out;
}

/** The spans of one ExportTraceServiceRequest (as a protobufjs toObject() or OTLP/JSON). */
export function spansFromRequest(req: unknown, encoding: 'protobuf' | 'json'): ReceivedSpan[] {
  if (!isRecord(req)) throw new Error('export request is not an object');
  const out: ReceivedSpan[] = [];
  for (const rs of list(field(req, 'resourceSpans'))) {
    if (!isRecord(rs)) continue;
    const res = field(rs, 'resource');
    const resource = isRecord(res) ? keyValues(res.attributes) : {};
    for (const ss of list(field(rs, 'scopeSpans'))) {
      if (!isRecord(ss)) continue;
      const sc = ss.scope;
      const scope = isRecord(sc) ? str(sc.name) : '';
      const scopeVersion = isRecord(sc) ? str(sc.version) : '';
      for (const sp of list(ss.spans)) {
        if (!isRecord(sp)) continue;
        const st = sp.status;
        const kind = enumNumber(sp.kind, KIND_NAMES, 'SPAN_KIND_');
        out.push({
          traceId: idHex(field(sp, 'traceId'), 'traceId'),
          spanId: idHex(field(sp, 'spanId'), 'spanId'),
          parentSpanId: idHex(field(sp, 'parentSpanId'), 'parentSpanId'),
          traceState: str(field(sp, 'traceState')),
          name: str(sp.name),
          kind: KIND_NAMES[kind] ?? 'UNSPECIFIED',
          startNs: toBigInt(field(sp, 'startTimeUnixNano')),
          endNs: toBigInt(field(sp, 'endTimeUnixNano')),
          attributes: keyValues(sp.attributes),
          events: list(sp.events)
            .filter(isRecord)
            .map((e) => ({ name: str(e.name), timeNs: toBigInt(field(e, 'timeUnixNano')), attributes: keyValues(e.attributes) })),
          status: isRecord(st) ? { code: enumNumber(st.code, ['UNSET', 'OK', 'ERROR'], 'STATUS_CODE_'), message: str(st.message) } : { code: 0, message: '' },
          resource,
          scope,
          scopeVersion,
          encoding,
        });
      }
    }
  }
  return out;
}

/** Decodes a binary ExportTraceServiceRequest. */
export function decodeProtobufExport(body: Uint8Array): ReceivedSpan[] {
  const { request } = otlpTraceSchema();
  const msg = request.decode(body);
  return spansFromRequest(request.toObject(msg, { longs: String, enums: Number, defaults: false, arrays: true }), 'protobuf');
}

/** Decodes an OTLP/JSON ExportTraceServiceRequest. */
export function decodeJsonExport(body: Uint8Array): ReceivedSpan[] {
  return spansFromRequest(JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8')) as unknown, 'json');
}

// ---------------------------------------------------------------------------------------
// The server

const gunzip = promisify(zlib.gunzip);
const inflate = promisify(zlib.inflate);

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

interface Waiter {
  n: number;
  resolve: (spans: ReceivedSpan[]) => void;
}

export async function startOtlpReceiver(options: OtlpReceiverOptions = {}): Promise<OtlpReceiver> {
  const failStatus = options.failStatus ?? 503;
  const spans: ReceivedSpan[] = [];
  const exportsSeen: ExportRecord[] = [];
  const waiters = new Set<Waiter>();
  const stalled = new Set<http.ServerResponse>();
  let requests = 0;
  let closing: Promise<void> | null = null;

  const wake = (): void => {
    for (const w of waiters) {
      if (spans.length >= w.n) {
        waiters.delete(w);
        w.resolve(spans.slice());
      }
    }
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/v1/traces') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { allow: 'POST', 'content-type': 'text/plain' }).end('POST only\n');
      return;
    }
    requests++;
    const contentType = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    const contentEncoding = (req.headers['content-encoding'] ?? '').trim().toLowerCase();
    const raw = await readBody(req);
    const record: ExportRecord = { contentType, contentEncoding, bodyBytes: raw.length, spans: 0, status: null, error: null };
    exportsSeen.push(record);
    if (receiver.mode === 'stall') {
      stalled.add(res);
      res.once('close', () => stalled.delete(res));
      return;
    }
    if (receiver.mode === 'fail') {
      record.status = failStatus;
      const headers: http.OutgoingHttpHeaders = { 'content-type': 'text/plain' };
      if (options.retryAfterSeconds !== undefined) headers['retry-after'] = String(options.retryAfterSeconds);
      res.writeHead(failStatus, headers).end('receiver told to fail\n');
      return;
    }
    const isJson = contentType === 'application/json';
    try {
      if (!isJson && contentType !== 'application/x-protobuf') throw new Error(`unsupported content-type ${JSON.stringify(contentType)}`);
      const body = contentEncoding === 'gzip' ? await gunzip(raw) : contentEncoding === 'deflate' ? await inflate(raw) : raw;
      const got = isJson ? decodeJsonExport(body) : decodeProtobufExport(body);
      record.spans = got.length;
      spans.push(...got);
    } catch (err) {
      record.error = err instanceof Error ? err.message : String(err);
      record.status = 400;
      res.writeHead(400, { 'content-type': 'text/plain' }).end(`bad export: ${record.error}\n`);
      return;
    }
    record.status = 200;
    if (isJson) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    } else {
      const { response } = otlpTraceSchema();
      const empty = Buffer.from(response.encode(response.create({})).finish());
      res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': empty.length }).end(empty);
    }
    wake();
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  const receiver: OtlpReceiver = {
    port,
    url: `http://127.0.0.1:${port}/v1/traces`,
    endpoint: `http://127.0.0.1:${port}`,
    spans,
    get requests() {
      return requests;
    },
    exports: exportsSeen,
    mode: options.mode ?? 'ok',
    setMode(mode: OtlpReceiverMode) {
      receiver.mode = mode;
    },
    waitForSpans(n: number, timeoutMs = 5000) {
      if (spans.length >= n) return Promise.resolve(spans.slice());
      return new Promise<ReceivedSpan[]>((resolve, reject) => {
        const w: Waiter = {
          n,
          resolve: (s) => {
            clearTimeout(timer);
            resolve(s);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`waitForSpans(${n}): only ${spans.length} span(s) after ${timeoutMs} ms (${requests} export request(s), mode ${receiver.mode})`));
        }, timeoutMs);
        waiters.add(w);
      });
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const res of stalled) res.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
  return receiver;
}
