// gRPC through the sidecar: @grpc/grpc-js client -> Skiff listener (http1 + h2c, the preface
// picks HTTP/2) -> cluster protocol h2c -> grpc-js server (startGrpcUpstream). Statuses,
// messages and trailer metadata must survive the proxy; bidirectional streaming must really
// stream (each response before the client ends); a client deadline cancels the upstream call.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';
import { grpcClient, startGrpcUpstream, type EchoClient, type EchoMsg, type Upstream } from '../helpers/upstreams.js';

interface Stats {
  arena: { live: number };
  engine: { inFlight: number; requestsTotal: number };
  pools: Array<{ cluster: string; connections: number; activeStreams: number; protocol: string }>;
}

async function stats(adminPort: number): Promise<Stats> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/stats`);
  return (await res.json()) as Stats;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

/** Reads a duplex stream message by message, with a timeout per message. */
class Reader {
  private readonly queue: EchoMsg[] = [];
  private readonly waiting: Array<(m: EchoMsg | null) => void> = [];
  isEnded = false;
  status: grpc.StatusObject | null = null;
  error: grpc.ServiceError | null = null;

  constructor(call: grpc.ClientDuplexStream<Partial<EchoMsg>, EchoMsg>) {
    call.on('data', (m: EchoMsg) => {
      const w = this.waiting.shift();
      if (w !== undefined) w(m);
      else this.queue.push(m);
    });
    call.on('end', () => {
      this.isEnded = true;
      for (const w of this.waiting.splice(0)) w(null);
    });
    call.on('error', (err: grpc.ServiceError) => {
      this.error = err;
      for (const w of this.waiting.splice(0)) w(null);
    });
    call.on('status', (s: grpc.StatusObject) => {
      this.status = s;
    });
  }

  next(ms = 5000): Promise<EchoMsg | null> {
    const m = this.queue.shift();
    if (m !== undefined) return Promise.resolve(m);
    if (this.isEnded || this.error !== null) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no message within ${ms} ms`)), ms);
      this.waiting.push((v) => {
        clearTimeout(timer);
        resolve(v);
      });
    });
  }
}

describe('gRPC through the sidecar (h2c listener -> h2c cluster)', { timeout: 60_000 }, () => {
  let up: Upstream;
  let skiff: SkiffProcess;
  let client: EchoClient;
  let port: number;

  before(async () => {
    up = await startGrpcUpstream();
    const [listenPort, adminPort] = await freePorts(2);
    port = listenPort;
    skiff = await startSkiff(`
admin:
  address: 127.0.0.1:${adminPort}
listeners:
  - name: in
    address: 127.0.0.1:${port}
    protocols: [http1, h2c]
    routes: main
routes:
  main:
    - match: { prefix: /skiff.test.Echo/ }
      cluster: grpc
      timeout: 10s
clusters:
  - name: grpc
    protocol: h2c
    endpoints: [127.0.0.1:${up.port}]
`);
    client = grpcClient(port);
  });

  after(async () => {
    client?.close();
    if (skiff !== undefined) await skiff.stop();
    await up?.close();
  });

  it('unary call: OK with the echoed message', async () => {
    const r = await client.unary({ text: 'hello', n: 41 }, { metadata: { 'x-client': 'c1' } });
    assert.equal(r.error, null, String(r.error?.message));
    assert.deepEqual(r.response, { text: 'hello', n: 41 });
    assert.equal(r.status.code, grpc.status.OK);
    const rec = up.requests.at(-1);
    assert.ok(rec !== undefined);
    assert.equal(rec.path, '/skiff.test.Echo/Unary');
    const md = Object.fromEntries(Array.from({ length: rec.rawHeaders.length / 2 }, (_, i) => [rec.rawHeaders[2 * i], rec.rawHeaders[2 * i + 1]]));
    assert.equal(md['x-client'], 'c1', `request metadata forwarded: ${JSON.stringify(rec.rawHeaders)}`);
  });

  it('unary call: NOT_FOUND with its message and the x-detail trailer preserved', async () => {
    const r = await client.unary({ text: 'fail', n: 1 });
    assert.equal(r.response, null);
    assert.ok(r.error !== null, 'an error status');
    assert.equal(r.error.code, grpc.status.NOT_FOUND, `status ${r.error.code} ${JSON.stringify(r.error.details)}, trailers ${JSON.stringify(r.status.metadata.toJSON())}`);
    assert.equal(r.error.details, 'nope');
    assert.equal(r.status.code, grpc.status.NOT_FOUND);
    assert.equal(r.status.details, 'nope');
    assert.deepEqual(r.status.metadata.get('x-detail'), ['why'], `trailers: ${JSON.stringify(r.status.metadata.toJSON())}`);
  });

  it('many sequential unary calls share one upstream HTTP/2 connection', async () => {
    for (let i = 0; i < 20; i++) {
      const r = await client.unary({ text: `m${i}`, n: i });
      assert.deepEqual(r.response, { text: `m${i}`, n: i });
    }
    const pool = (await stats(skiff.adminPort)).pools.find((p) => p.cluster === 'grpc');
    assert.ok(pool !== undefined);
    assert.equal(pool.connections, 1);
  });

  it('bidirectional streaming: each response arrives before the client ends (true streaming)', async () => {
    const call = client.bidi();
    const reader = new Reader(call);
    for (let i = 0; i < 5; i++) {
      call.write({ text: `ping${i}`, n: i * 10 });
      const m = await reader.next();
      assert.deepEqual(m, { text: `ping${i}`, n: i * 10 + 1 }, `response ${i} while the request stream is still open`);
      assert.equal(reader.isEnded, false);
    }
    call.end();
    assert.equal(await reader.next(), null, 'the server ends after the client ends');
    await waitFor('the final status', () => reader.status !== null);
    assert.equal(reader.status?.code, grpc.status.OK);
    assert.equal(reader.error, null);
    const rec = up.requests.filter((r) => r.path === '/skiff.test.Echo/Bidi').at(-1);
    assert.ok(rec !== undefined && rec.isComplete && !rec.isAborted);
  });

  it('bidirectional streaming: a burst of messages each way keeps order', async () => {
    const call = client.bidi();
    const reader = new Reader(call);
    const n = 50;
    for (let i = 0; i < n; i++) call.write({ text: `burst${i}`, n: i });
    const first = await reader.next();
    assert.deepEqual(first, { text: 'burst0', n: 1 });
    call.end();
    for (let i = 1; i < n; i++) assert.deepEqual(await reader.next(), { text: `burst${i}`, n: i + 1 });
    assert.equal(await reader.next(), null);
    await waitFor('the final status', () => reader.status !== null);
    assert.equal(reader.status?.code, grpc.status.OK);
  });

  it('several bidi streams at once on one connection stay independent', async () => {
    const calls = [0, 1, 2].map(() => {
      const call = client.bidi();
      return { call, reader: new Reader(call) };
    });
    for (let round = 0; round < 3; round++) {
      for (const [k, { call }] of calls.entries()) call.write({ text: `s${k}r${round}`, n: k * 100 + round });
      for (const [k, { reader }] of calls.entries()) {
        assert.deepEqual(await reader.next(), { text: `s${k}r${round}`, n: k * 100 + round + 1 });
      }
    }
    for (const { call } of calls) call.end();
    for (const { reader } of calls) {
      assert.equal(await reader.next(), null);
      await waitFor('status', () => reader.status !== null);
      assert.equal(reader.status?.code, grpc.status.OK);
    }
  });

  it('deadline exceeded: the client gets DEADLINE_EXCEEDED and the call ends at the upstream and in the sidecar', async () => {
    const seen = up.requests.length;
    const call = client.bidi({ deadlineMs: 300 });
    const reader = new Reader(call);
    call.write({ text: 'wait', n: 0 });
    assert.deepEqual(await reader.next(), { text: 'wait', n: 1 });
    // Never end the request stream: the server waits for it until the deadline.
    const t0 = Date.now();
    assert.equal(await reader.next(3000), null);
    assert.ok(reader.error !== null, 'the call failed');
    assert.equal(reader.error.code, grpc.status.DEADLINE_EXCEEDED);
    assert.ok(Date.now() - t0 < 2000);
    const rec = up.requests.slice(seen).find((r) => r.path === '/skiff.test.Echo/Bidi');
    assert.ok(rec !== undefined);
    // The upstream call is over (the fixture marks a cancelled bidi call complete: grpc-js ends
    // its read side on cancel), and the sidecar holds no stream for it any more.
    await waitFor('the upstream call to end', () => rec.isComplete || rec.isAborted, 2000);
    let last: Stats | null = null;
    try {
      await waitFor('no in-flight request and no active upstream stream', async () => {
        last = await stats(skiff.adminPort);
        return last.engine.inFlight === 0 && last.pools.every((p) => p.activeStreams === 0);
      }, 2000);
    } catch {
      assert.fail(`the cancelled call still holds sidecar state: ${JSON.stringify(last)}`);
    }
  });

  it('leaves no request in flight and every context back in the arena', async () => {
    let last: Stats | null = null;
    try {
      await waitFor('idle sidecar', async () => {
        last = await stats(skiff.adminPort);
        return last.engine.inFlight === 0 && last.arena.live === 0 && last.pools.every((p) => p.activeStreams === 0);
      }, 3000);
    } catch {
      assert.fail(`not idle after the gRPC calls: ${JSON.stringify(last)}`);
    }
    assert.doesNotMatch(skiff.stderr(), /^\s+at .+:\d+:\d+\)?$/m, skiff.stderr());
  });
});
