/**
 * The micro benchmark cases: hot functions of the core, called on realistic inputs.
 *
 * Each case's `run` performs `batch` operations in a loop written out in the case itself (not a
 * shared wrapper calling a callback: closures made at one site share their feedback, so a
 * shared loop would make the inner call polymorphic and measure the dispatch, not the code).
 * Results go to `sink` so the optimizer cannot drop the work.
 */
import { ContextArena } from '../../src/arena.js';
import { parseConfig } from '../../src/config/load.js';
import type { ClusterConfig, RouteConfig, SocketAddress } from '../../src/config/types.js';
import { Hold } from '../../src/context.js';
import type { SkiffError } from '../../src/errors.js';
import { FrameQueue, type FrameSink, type FrameSource } from '../../src/frames.js';
import { buildResponseHeaders, buildUpstreamHeaders, getHeader, type ForwardInfo } from '../../src/headers.js';
import { EndpointPool } from '../../src/pool/endpoint-pool.js';
import type { ConnEvents, Connector, UpstreamConn, UpstreamHandler } from '../../src/pool/types.js';
import type { RequestContext } from '../../src/context.js';
import type { RouteTable } from '../../src/routing/router.js';

export interface MicroCase {
  readonly name: string;
  /** Operations per call of `run`. */
  readonly batch: number;
  /** What one operation is. */
  readonly op: string;
  readonly run: () => void;
  /** Throws when the fixture does not do what the case claims (checked once before timing). */
  readonly check: () => void;
}

/** Keeps results alive so no work is optimized away. */
export const sink: { value: unknown; count: number } = { value: null, count: 0 };

function assert(cond: boolean, message: string): void {
  if (!cond) throw new Error(`micro fixture: ${message}`);
}

// ---- fixtures ------------------------------------------------------------------------------

/** A browser-like HTTP/1.1 request head as node's rawHeaders gives it: 12 fields, mixed case. */
const REQUEST_HEADERS: readonly string[] = [
  'Host', 'shop.example.com:8443',
  'User-Agent', 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
  'Accept', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
  'Accept-Language', 'en-US,en;q=0.5',
  'Accept-Encoding', 'gzip, deflate, br, zstd',
  'Connection', 'keep-alive',
  'Cookie', 'session=4f2a9c1e7b3d; theme=dark; _ga=GA1.2.1234567890.1700000000',
  'Referer', 'https://shop.example.com/app/catalog?page=2',
  'Content-Type', 'application/json',
  'X-Forwarded-For', '203.0.113.7',
  'traceparent', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
  'Cache-Control', 'no-cache',
];

/** An upstream response head as undici's raw list gives it: 9 fields, two of them hop-by-hop. */
const RESPONSE_HEADERS: readonly string[] = [
  'content-type', 'application/json; charset=utf-8',
  'content-length', '1324',
  'date', 'Thu, 26 Nov 2026 10:00:00 GMT',
  'server', 'app/1.4.2',
  'cache-control', 'private, max-age=0',
  'etag', 'W/"52c-18f2a9c1e7b"',
  'vary', 'Accept-Encoding',
  'connection', 'keep-alive',
  'keep-alive', 'timeout=5',
];

const CONFIG = `listeners:
  - name: inbound
    address: 127.0.0.1:15006
    protocols: [http1, h2c]
    routes: main
routes:
  main:
    - match: { authority: api.example.com, prefix: /v1/ }
      cluster: api
    - match: { authority: "*.internal.example.com" }
      cluster: internal
    - match: { path: /healthz }
      cluster: health
    - match: { prefix: /static/, headers: { x-canary: "1" } }
      cluster: canary
    - match: { prefix: /app/ }
      cluster: app
clusters:
  - { name: api, protocol: http1, endpoints: [127.0.0.1:9001] }
  - { name: internal, protocol: http1, endpoints: [127.0.0.1:9002] }
  - { name: health, protocol: http1, endpoints: [127.0.0.1:9003] }
  - { name: canary, protocol: http1, endpoints: [127.0.0.1:9004] }
  - { name: app, protocol: h2c, endpoints: [127.0.0.1:9005] }
`;

/** Accepts everything, or pauses after every chunk when `accept` is false. */
class BenchSink implements FrameSink {
  accept: boolean;
  bytes: number;
  ends: number;

  constructor() {
    this.accept = true;
    this.bytes = 0;
    this.ends = 0;
  }

  onData(chunk: Buffer): boolean {
    this.bytes += chunk.length;
    return this.accept;
  }

  onTrailers(_raw: readonly string[]): void {}

  onEnd(): void {
    this.ends++;
  }

  onReset(_err: SkiffError): void {}
}

class BenchSource implements FrameSource {
  pauses: number;
  resumes: number;

  constructor() {
    this.pauses = 0;
    this.resumes = 0;
  }

  pauseSource(): void {
    this.pauses++;
  }

  resumeSource(): void {
    this.resumes++;
  }
}

/** A connection object as the pool sees it (no socket): multiplexed, 100 stream slots. */
class FakeConn implements UpstreamConn {
  readonly endpointKey: string;
  readonly isMultiplexed: boolean;
  activeStreams: number;
  maxStreams: number;
  isClosed: boolean;
  idleSince: number;

  constructor(endpointKey: string) {
    this.endpointKey = endpointKey;
    this.isMultiplexed = true;
    this.activeStreams = 0;
    this.maxStreams = 100;
    this.isClosed = false;
    this.idleSince = 0;
  }

  dispatch(_ctx: RequestContext, _gen: number, _handler: UpstreamHandler): void {}

  close(): void {
    this.isClosed = true;
  }
}

class NoConnector implements Connector {
  connect(_endpoint: SocketAddress, _cluster: ClusterConfig, _events: ConnEvents): Promise<UpstreamConn> {
    return Promise.reject(new Error('micro bench: no connects'));
  }
}

// ---- cases ---------------------------------------------------------------------------------

export function buildCases(): MicroCase[] {
  const snapshot = parseConfig(CONFIG, 'bench/micro (inline)', process.cwd(), 1);
  const table = snapshot.routeTables.get('main') as RouteTable;
  const appCluster = snapshot.clusters.get('app') as ClusterConfig;
  const cases: MicroCase[] = [];

  // headers
  const info: ForwardInfo = { rawHeaders: REQUEST_HEADERS, remoteAddress: '10.0.0.12', scheme: 'http', requestId: '8d3f5a52-7c1e-4b8a-9f2d-0c6e1a4b7d93', traceHeaders: [], traceFields: [] };
  const outUp: string[] = [];
  cases.push({
    name: 'buildUpstreamHeaders (12 fields, h1 upstream)',
    batch: 1000,
    op: 'one request head',
    run: () => {
      for (let i = 0; i < 1000; i++) buildUpstreamHeaders(info, outUp, true);
      sink.value = outUp[outUp.length - 1];
    },
    check: () => {
      buildUpstreamHeaders(info, outUp, true);
      // 12 in, minus Host, Connection, X-Forwarded-For, plus 3 proxy-set fields.
      assert(outUp.length === 24, `upstream head has ${outUp.length / 2} fields, expected 12`);
      assert(getHeader(outUp, 'x-forwarded-for') === '203.0.113.7, 10.0.0.12', 'x-forwarded-for not appended');
      assert(getHeader(outUp, 'connection') === null, 'connection not removed');
    },
  });
  const outResp: string[] = [];
  cases.push({
    name: 'buildResponseHeaders (9 fields)',
    batch: 1000,
    op: 'one response head',
    run: () => {
      for (let i = 0; i < 1000; i++) buildResponseHeaders(RESPONSE_HEADERS, outResp);
      sink.value = outResp[0];
    },
    check: () => {
      buildResponseHeaders(RESPONSE_HEADERS, outResp);
      assert(outResp.length === 14, `response head has ${outResp.length / 2} fields, expected 7`);
    },
  });
  cases.push({
    name: 'getHeader hit (9th of 12, other case)',
    batch: 1000,
    op: 'one lookup',
    run: () => {
      let v: string | null = null;
      for (let i = 0; i < 1000; i++) v = getHeader(REQUEST_HEADERS, 'content-type');
      sink.value = v;
    },
    check: () => assert(getHeader(REQUEST_HEADERS, 'content-type') === 'application/json', 'content-type not found'),
  });
  cases.push({
    name: 'getHeader miss (12 fields)',
    batch: 1000,
    op: 'one lookup',
    run: () => {
      let v: string | null = null;
      for (let i = 0; i < 1000; i++) v = getHeader(REQUEST_HEADERS, 'authorization');
      sink.value = v;
    },
    check: () => assert(getHeader(REQUEST_HEADERS, 'authorization') === null, 'authorization found'),
  });

  // frames, ready sink: every push goes straight to the sink. The byte counters are reset per
  // batch: left to grow past 2^31 (a 2 GiB body) they stop being small integers and every
  // push would allocate a 16-byte heap number, which no real body of this size does.
  const chunk16k = Buffer.alloc(16 * 1024, 0x61);
  const readyQueue = new FrameQueue(256 * 1024);
  const readySink = new BenchSink();
  const readySource = new BenchSource();
  readyQueue.source = readySource;
  readyQueue.attachSink(readySink);
  cases.push({
    name: 'FrameQueue push, ready sink (16 KiB)',
    batch: 1000,
    op: 'one DATA frame',
    run: () => {
      readyQueue.totalBytes = 0;
      readySink.bytes = 0;
      for (let i = 0; i < 1000; i++) readyQueue.push(chunk16k);
      sink.count += readySink.bytes & 1;
    },
    check: () => {
      const before = readySink.bytes;
      readyQueue.push(chunk16k);
      assert(readySink.bytes === before + chunk16k.length, 'chunk not delivered');
      assert(readyQueue.bufferedBytes === 0, 'ready queue buffered data');
    },
  });

  // frames, paused sink: the sink pauses at the first chunk, 8 more are queued (256 KiB, the
  // high watermark: the source is paused), then the sink resumes and takes all of them (the
  // source is resumed under the low watermark).
  const chunk32k = Buffer.alloc(32 * 1024, 0x62);
  const pausedQueue = new FrameQueue(256 * 1024);
  const pausedSink = new BenchSink();
  const pausedSource = new BenchSource();
  pausedQueue.source = pausedSource;
  pausedQueue.attachSink(pausedSink);
  const pausedCycle = (): void => {
    pausedSink.accept = false;
    for (let j = 0; j < 9; j++) pausedQueue.push(chunk32k);
    pausedSink.accept = true;
    pausedQueue.resumeSink();
  };
  cases.push({
    name: 'FrameQueue paused sink: 9x32 KiB, pause, resume+flush',
    batch: 100,
    op: 'one cycle (9 frames)',
    run: () => {
      pausedQueue.totalBytes = 0;
      pausedSink.bytes = 0;
      for (let i = 0; i < 100; i++) {
        pausedSink.accept = false;
        for (let j = 0; j < 9; j++) pausedQueue.push(chunk32k);
        pausedSink.accept = true;
        pausedQueue.resumeSink();
      }
      sink.count += pausedSource.resumes & 1;
    },
    check: () => {
      const p = pausedSource.pauses;
      const r = pausedSource.resumes;
      const b = pausedSink.bytes;
      pausedCycle();
      assert(pausedSource.pauses === p + 1 && pausedSource.resumes === r + 1, 'source not paused and resumed once per cycle');
      assert(pausedSink.bytes === b + 9 * chunk32k.length && pausedQueue.bufferedBytes === 0, 'queue not drained');
    },
  });

  // arena: acquire, then the three holds released in the engine's order; the last recycles.
  const arena = new ContextArena(256 * 1024);
  cases.push({
    name: 'arena acquire + release (3 holds, recycle)',
    batch: 1000,
    op: 'one context life',
    run: () => {
      for (let i = 0; i < 1000; i++) {
        const ctx = arena.acquire();
        ctx.method = 'GET';
        ctx.path = '/app/cart';
        ctx.release(Hold.Telemetry);
        ctx.release(Hold.Response);
        ctx.release(Hold.RequestBody);
      }
      sink.count += arena.hits & 1;
    },
    check: () => {
      const ctx = arena.acquire();
      const misses = arena.misses;
      const gen = ctx.generation;
      ctx.release(Hold.Telemetry);
      ctx.release(Hold.Response);
      assert(arena.live === 1 && ctx.generation === gen, 'context back before its last hold');
      ctx.release(Hold.RequestBody);
      assert(ctx.generation === gen + 1 && arena.live === 0, 'context not recycled after its last hold');
      const again = arena.acquire();
      assert(again === ctx && arena.misses === misses, 'free list not reused');
      again.release(Hold.All);
    },
  });

  // pool: a hit on a multiplexed connection; the slot is handed back by decrementing the count
  // directly, so only tryAcquire is timed (onStreamDone reads the clock when the count hits 0).
  const pool = new EndpointPool({ host: '127.0.0.1', port: 9005 }, appCluster, new NoConnector());
  const conn = new FakeConn(pool.key);
  pool.conns.push(conn);
  cases.push({
    name: 'EndpointPool.tryAcquire hit (fake conn)',
    batch: 1000,
    op: 'one acquire',
    run: () => {
      let c: UpstreamConn | undefined;
      for (let i = 0; i < 1000; i++) {
        c = pool.tryAcquire();
        if (c !== undefined) c.activeStreams--;
      }
      sink.value = c;
    },
    check: () => {
      const c = pool.tryAcquire();
      assert(c === conn && conn.activeStreams === 1, 'tryAcquire did not hit');
      conn.activeStreams--;
    },
  });

  // router: five routes (exact host + prefix, wildcard host, exact path, prefix + header,
  // prefix); an upper-case authority with a port and a query string, matching the last one.
  cases.push({
    name: 'RouteTable.match, 5 routes, hit on 5th',
    batch: 1000,
    op: 'one match',
    run: () => {
      let r: RouteConfig | null = null;
      for (let i = 0; i < 1000; i++) r = table.match('Shop.Example.com:8443', '/app/cart?id=42', REQUEST_HEADERS);
      sink.value = r;
    },
    check: () => {
      const r = table.match('Shop.Example.com:8443', '/app/cart?id=42', REQUEST_HEADERS);
      assert(r !== null && r.cluster === 'app', `matched ${r === null ? 'nothing' : r.cluster}, expected app`);
    },
  });
  cases.push({
    name: 'RouteTable.match, 5 routes, hit on 1st',
    batch: 1000,
    op: 'one match',
    run: () => {
      let r: RouteConfig | null = null;
      for (let i = 0; i < 1000; i++) r = table.match('API.example.com', '/v1/orders/17', REQUEST_HEADERS);
      sink.value = r;
    },
    check: () => {
      const r = table.match('API.example.com', '/v1/orders/17', REQUEST_HEADERS);
      assert(r !== null && r.cluster === 'api', `matched ${r === null ? 'nothing' : r.cluster}, expected api`);
    },
  });

  return cases;
}

/** The empty case: what a batch loop costs by itself (subtracted from nothing; shown for scale). */
export const EMPTY_BATCH = 1000;
export function emptyRun(): void {
  for (let i = 0; i < EMPTY_BATCH; i++) sink.count++;
}
