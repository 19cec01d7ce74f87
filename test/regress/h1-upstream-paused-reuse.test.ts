// Bug (2026-11-26, found by the proxy matrix as a rare 504): a slow downstream reader makes the
// frame queue pause the HTTP/1.1 upstream socket. The queue resumes a source only while the
// body is still open, so when the response's END arrived in the same read that paused the
// socket, the connection went back to the pool still paused, and the next request on it
// waited for a response it could never read, until the route timeout answered 504.
// Fix: H1ClientConn.finish() resumes the socket before the slot is reused.
//
// The codec is driven directly on real sockets: a raw upstream writes a two-chunk response in
// one write, the response sink refuses its first chunk (a stalled client), the queue's
// watermark is 1 byte, so the second chunk pauses the socket in the same step as END.
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { ContextArena } from '../../src/arena.js';
import type { RequestContext } from '../../src/context.js';
import type { SkiffError } from '../../src/errors.js';
import type { FrameSink } from '../../src/frames.js';
import { DEFAULT_CIRCUIT_BREAKERS, DEFAULT_RETRIES } from '../../src/config/load.js';
import type { ClusterConfig } from '../../src/config/types.js';
import type { ConnEvents, UpstreamConn, UpstreamHandler } from '../../src/pool/types.js';
import { H1ClientConnector } from '../../protocols/h1/client-conn.js';

const TWO_CHUNKS = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n';
const SMALL = 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsmall';

let server: net.Server;
let port = 0;

before(async () => {
  server = net.createServer((s) => {
    let n = 0;
    s.on('data', (d: Buffer) => {
      // One response per request head, in one write each.
      for (let i = d.indexOf('\r\n\r\n'); i >= 0; i = d.indexOf('\r\n\r\n', i + 4)) s.write(n++ === 0 ? TWO_CHUNKS : SMALL);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as net.AddressInfo).port;
});

after(async () => {
  await new Promise<void>((r) => server.close(() => r()));
});

class StalledSink implements FrameSink {
  data = '';
  ended = false;
  onData(chunk: Buffer): boolean { this.data += chunk.toString(); return false; }
  onTrailers(): void {}
  onEnd(): void { this.ended = true; }
  onReset(): void {}
}

class Recorder implements UpstreamHandler, ConnEvents {
  statuses: number[] = [];
  done: RequestContext[] = [];
  errors: SkiffError[] = [];
  sinks = new Map<RequestContext, StalledSink>();
  onUpstreamHead(ctx: RequestContext, _gen: number, status: number): void {
    this.statuses.push(status);
    const sink = new StalledSink();
    this.sinks.set(ctx, sink);
    ctx.responseBody.attachSink(sink);
  }
  onUpstreamDone(ctx: RequestContext): void { this.done.push(ctx); }
  onUpstreamError(_ctx: RequestContext, _gen: number, err: SkiffError): void { this.errors.push(err); }
  onStreamDone(conn: UpstreamConn): void { conn.activeStreams--; }
  onConnClosed(): void {}
  onCapacity(): void {}
}

function request(arena: ContextArena, path: string): RequestContext {
  const ctx = arena.acquire();
  ctx.method = 'GET';
  ctx.path = path;
  ctx.authority = 'upstream.test';
  ctx.rawHeaders = [];
  ctx.remoteAddress = '127.0.0.1';
  ctx.requestId = 'r';
  ctx.requestBody.end();
  ctx.responseBody.highWatermark = 1;
  return ctx;
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!check() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return check();
}

it('the next exchange on a connection paused at END still reads its response', async () => {
  const cluster: ClusterConfig = {
    name: 'c', protocol: 'http1', endpoints: [{ host: '127.0.0.1', port }], maxBodyBytes: 0,
    connectTimeoutMs: 2000, idleTimeoutMs: 60_000, maxConnectionsPerEndpoint: 1, maxPendingPerEndpoint: 10, tls: null,
    meshTls: false, peerIdentity: null, loadBalancer: 'round-robin', retries: DEFAULT_RETRIES, outlierDetection: null,
    circuitBreakers: DEFAULT_CIRCUIT_BREAKERS,
  };
  const rec = new Recorder();
  const conn = await new H1ClientConnector().connect({ host: '127.0.0.1', port }, cluster, rec);
  const arena = new ContextArena(1024);
  try {
    const first = request(arena, '/first');
    conn.activeStreams++;
    conn.dispatch(first, first.generation, rec);
    assert.ok(await until(() => rec.done.length === 1, 2000), 'first response completes');
    assert.equal(rec.sinks.get(first)?.data, 'abc', 'the stalled sink took one chunk; the rest waits in the queue');

    const second = request(arena, '/second');
    conn.activeStreams++;
    conn.dispatch(second, second.generation, rec);
    assert.ok(await until(() => rec.done.length === 2, 2000), 'the second response is read (socket not left paused)');
    assert.deepEqual(rec.statuses, [200, 200]);
    assert.equal(rec.sinks.get(second)?.data, 'small');
    assert.deepEqual(rec.errors, []);
  } finally {
    conn.close();
  }
});
