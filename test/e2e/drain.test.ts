// SIGTERM under load (issue 7 item 6), seen from outside: the real sidecar with a cleartext
// listener (HTTP/1.1 + h2c) and a TLS listener with HTTP/3, in front of an upstream that
// answers each request after 300-800 ms, while keep-alive HTTP/1.1 clients, an h2c session
// and an HTTP/3 connection keep requests in flight on all three protocols.
//   (a) every request issued before the signal completes with 200 and its own body;
//   (b) the h2c client gets GOAWAY (NO_ERROR; node's 'goaway' event and, on a raw connection,
//       the frame itself with the last stream id), the HTTP/3 client a GOAWAY frame on the
//       server's control stream whose id lies above every stream it had opened;
//   (c) new TCP connections are refused while the drain is still running;
//   (d) with a short limits.drainTimeout, requests still running at the deadline are cut, the
//       log says how many, and the process still exits 0;
//   (e) the exit code is 0.
// Clients behave as real ones do: after GOAWAY, or once their connection is gone, they stop.
// Nothing here asserts tight timings (2 shared cores): the upstream's delays only make sure
// requests are in flight when the signal arrives.
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ensureCerts, type TestCerts } from '../helpers/certs.js';
import { connectRaw, Flag, FrameType, headers, requestBlock } from '../helpers/h2-frames.js';
import { H3TestClient } from '../helpers/h3-client.js';
import { h1GetText } from '../helpers/clients.js';
import { freePort, freePorts, plainAndTlsConfig, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

const HOST = '127.0.0.1';

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** An upstream answering `done PATH` after the delay in the path: GET /d/MS/anything. */
async function startDelayUpstream(): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    const url = req.url ?? '/';
    const m = /^\/d\/(\d+)\//.exec(url);
    req.resume();
    const timer = setTimeout(() => res.end(`done ${url}`), m === null ? 0 : Number(m[1]));
    res.on('close', () => clearTimeout(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

type Proto = 'h1' | 'h2' | 'h3';

interface Outcome {
  proto: Proto;
  path: string;
  /** performance.now() when the request was issued / when it settled. */
  startedAt: number;
  endedAt: number;
  status: number;
  body: string;
  error: string | null;
}

/** Shared state of one load run: what happened, when the signal went, when to stop. */
class LoadRun {
  readonly outcomes: Outcome[] = [];
  signalAt = Infinity;
  isStopped = false;
  isAfterSignal(): boolean {
    return performance.now() >= this.signalAt;
  }
  record(proto: Proto, path: string, startedAt: number, status: number, body: string, error: string | null): Outcome {
    const o: Outcome = { proto, path, startedAt, endedAt: performance.now(), status, body, error };
    this.outcomes.push(o);
    return o;
  }
}

/** 300-800 ms, spread so that some request is always close to finishing and some just started. */
function upstreamDelay(): number {
  return 300 + Math.floor(Math.random() * 501);
}

function h2Get(session: http2.ClientHttp2Session, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let s: http2.ClientHttp2Stream;
    try {
      s = session.request({ ':path': path });
    } catch (err) {
      reject(err as Error);
      return;
    }
    let status = 0;
    let body = '';
    s.setEncoding('utf8');
    s.on('response', (h) => { status = Number(h[':status']); });
    s.on('data', (d: string) => { body += d; });
    s.on('end', () => {
      if (status === 0) reject(new Error('stream ended without a response'));
      else resolve({ status, body });
    });
    s.on('close', () => reject(new Error(`stream closed before its end (RST_STREAM ${s.rstCode ?? 'none'})`)));
    s.on('error', reject);
    s.end();
  });
}

/** Sequential keep-alive GETs on one connection; stops at the first failure after the signal. */
async function h1Worker(run: LoadRun, port: number, w: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; !run.isStopped; i++) {
    const path = `/d/${upstreamDelay()}/h1-${w}-${i}`;
    const t = performance.now();
    try {
      const r = await h1GetText(port, path, agent, 15_000);
      run.record('h1', path, t, r.status, r.body, null);
    } catch (err) {
      run.record('h1', path, t, 0, '', (err as Error).message);
      if (run.isAfterSignal()) break;
    }
  }
  agent.destroy();
}

/** Sequential GETs on a shared h2c session; stops once the session refuses new streams. */
async function h2Worker(run: LoadRun, session: http2.ClientHttp2Session, w: number): Promise<void> {
  for (let i = 0; !run.isStopped && !session.closed && !session.destroyed; i++) {
    const path = `/d/${upstreamDelay()}/h2-${w}-${i}`;
    const t = performance.now();
    try {
      const r = await h2Get(session, path);
      run.record('h2', path, t, r.status, r.body, null);
    } catch (err) {
      run.record('h2', path, t, 0, '', (err as Error).message);
      if (run.isAfterSignal()) break;
    }
  }
}

/** HTTP/3 request counter: the client opens bidi streams 0, 4, 8, ... in request() order. */
interface H3Counter {
  issued: number;
  issuedBeforeSignal: number;
}

/** Sequential GETs on a shared HTTP/3 connection; stops after the server's GOAWAY. */
async function h3Worker(run: LoadRun, client: H3TestClient, counter: H3Counter, w: number): Promise<void> {
  for (let i = 0; !run.isStopped && client.goawayIds.length === 0 && !client.isClosing; i++) {
    const path = `/d/${upstreamDelay()}/h3-${w}-${i}`;
    const t = performance.now();
    counter.issued++;
    if (!run.isAfterSignal()) counter.issuedBeforeSignal++;
    try {
      const r = await client.request(path);
      run.record('h3', path, t, r.status, r.body.toString('utf8'), null);
    } catch (err) {
      run.record('h3', path, t, 0, '', (err as Error).message);
      if (run.isAfterSignal()) break;
    }
  }
}

/** Resolves with the connect error code ('' when the connection was accepted). */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    s.once('connect', () => {
      s.destroy();
      resolve('');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

function config(adminPort: number, plainPort: number, tlsPort: number, upstreamPort: number, certs: TestCerts, drainTimeout: string): string {
  return plainAndTlsConfig({ admin: adminPort, plain: plainPort, tls: tlsPort, upstream: upstreamPort, cert: certs.cert, key: certs.key }, `drainTimeout: ${drainTimeout}`);
}

function summary(outcomes: readonly Outcome[]): string {
  return outcomes
    .slice(0, 20)
    .map((o) => `${o.proto} ${o.path}: ${o.error ?? `${o.status} ${o.body.slice(0, 60)}`}`)
    .join('\n');
}

describe('SIGTERM drain under load (HTTP/1.1, h2c, HTTP/3)', () => {
  let certs: TestCerts;
  let upstream: { port: number; close(): Promise<void> };
  const started: SkiffProcess[] = [];
  const clients: H3TestClient[] = [];

  before(async () => {
    certs = ensureCerts();
    upstream = await startDelayUpstream();
  });

  after(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    for (const sk of started) await sk.stop('SIGKILL');
    await upstream.close();
  });

  async function start(drainTimeout: string): Promise<{ sk: SkiffProcess; plainPort: number; tlsPort: number }> {
    const tlsPort = await freePort({ udp: true });
    const [adminPort, plainPort] = await freePorts(2);
    const sk = await startSkiff(config(adminPort, plainPort, tlsPort, upstream.port, certs, drainTimeout));
    started.push(sk);
    return { sk, plainPort, tlsPort };
  }

  it('finishes every request started before SIGTERM, sends GOAWAY on HTTP/2 and HTTP/3, refuses new connections, exits 0', async () => {
    const { sk, plainPort, tlsPort } = await start('10s');
    const run = new LoadRun();

    // The clients: 6 keep-alive HTTP/1.1 connections, one h2c session with 6 streams at a
    // time, one HTTP/3 connection with 6 streams at a time, and one raw HTTP/2 connection.
    const session = http2.connect(`http://${HOST}:${plainPort}`);
    session.on('error', () => undefined);
    const h2Goaways: Array<{ code: number; lastStreamId: number }> = [];
    session.on('goaway', (code: number, lastStreamId: number) => h2Goaways.push({ code, lastStreamId }));
    const h3 = await H3TestClient.connect(HOST, tlsPort, certs.pem.ca);
    clients.push(h3);
    const raw = await connectRaw(plainPort);
    const h3Counter: H3Counter = { issued: 0, issuedBeforeSignal: 0 };
    const workers: Promise<void>[] = [];
    for (let w = 0; w < 6; w++) {
      workers.push(h1Worker(run, plainPort, w), h2Worker(run, session, w), h3Worker(run, h3, h3Counter, w));
    }

    await delay(1500); // steady load on every protocol
    // The raw connection's one request (stream 1) is at the upstream when the signal comes.
    await raw.write(headers(1, requestBlock(`${HOST}:${plainPort}`, '/d/700/raw'), Flag.END_HEADERS | Flag.END_STREAM));
    await delay(100);

    run.signalAt = performance.now();
    const exitCode = sk.stop('SIGTERM');
    let hasExited = false;
    void exitCode.then(() => { hasExited = true; });

    // (c) New TCP connections are refused while the drain runs (polled: the sidecar notices
    // the signal on its next event-loop turn).
    let plainRefusal = '';
    let tlsRefusal = '';
    const pollEnd = performance.now() + 3000;
    while (performance.now() < pollEnd && (plainRefusal === '' || tlsRefusal === '')) {
      await delay(25);
      if (plainRefusal === '') plainRefusal = await tryConnect(plainPort);
      if (tlsRefusal === '') tlsRefusal = await tryConnect(tlsPort);
    }
    const refusedDuringDrain = !hasExited;

    const code = await exitCode;
    run.isStopped = true;
    await Promise.race([Promise.all(workers), delay(5000)]);
    await raw.closed;
    session.destroy();

    const before = run.outcomes.filter((o) => o.startedAt < run.signalAt);
    const failedBefore = before.filter((o) => o.error !== null || o.status !== 200 || o.body !== `done ${o.path}`);
    const counts = (p: Proto): { before: number; inFlight: number; after: number; afterOk: number } => ({
      before: before.filter((o) => o.proto === p).length,
      inFlight: before.filter((o) => o.proto === p && o.endedAt > run.signalAt).length,
      after: run.outcomes.filter((o) => o.proto === p && o.startedAt >= run.signalAt).length,
      afterOk: run.outcomes.filter((o) => o.proto === p && o.startedAt >= run.signalAt && o.status === 200).length,
    });
    const byProto = { h1: counts('h1'), h2: counts('h2'), h3: counts('h3') };
    process.stdout.write(`# drain: ${JSON.stringify(byProto)}; h2 goaway ${JSON.stringify(h2Goaways)}; raw goaway ${JSON.stringify(raw.goaway)}; h3 goaway ids ${JSON.stringify(h3.goawayIds)} (streams issued before the signal: ${h3Counter.issuedBeforeSignal}); refused: tcp ${plainRefusal}, tls ${tlsRefusal}\n`);

    // (e) and the log
    assert.equal(code, 0, sk.stderr().slice(-3000));
    assert.match(sk.stderr(), /"msg":"signal received, draining"/);
    assert.doesNotMatch(sk.stderr(), /drain timeout cut requests short/);
    // (a) Every request issued before the signal completed with 200 and its own body, and the
    // drain had work to do on every protocol (requests in flight when the signal came).
    assert.deepEqual(failedBefore, [], `requests started before SIGTERM failed:\n${summary(failedBefore)}`);
    for (const p of ['h1', 'h2', 'h3'] as const) {
      assert.ok(byProto[p].before >= 6, `${p}: load ran before the signal (${JSON.stringify(byProto[p])})`);
      assert.ok(byProto[p].inFlight >= 1, `${p}: requests were in flight at the signal (${JSON.stringify(byProto[p])})`);
    }
    // (b) GOAWAY: HTTP/2 (node's client event, and the raw frame on its own connection).
    assert.ok(h2Goaways.length >= 1, 'the h2c session got GOAWAY');
    assert.equal(h2Goaways[0].code, 0, 'HTTP/2 GOAWAY with NO_ERROR');
    assert.ok(raw.goaway !== null, 'the raw HTTP/2 connection got a GOAWAY frame');
    assert.equal(raw.goaway.code, 0);
    assert.equal(raw.goaway.lastStreamId, 1, 'the raw connection\'s in-flight stream is covered by GOAWAY');
    assert.ok((raw.frameCounts.get(FrameType.HEADERS) ?? 0) >= 1, 'the raw stream got its response after GOAWAY');
    assert.ok((raw.frameCounts.get(FrameType.DATA) ?? 0) >= 1, 'the raw stream got its response body');
    // (b) GOAWAY on HTTP/3's control stream, above every stream opened before the signal.
    assert.ok(h3.goawayIds.length >= 1, 'the HTTP/3 client got GOAWAY on the control stream');
    const lastH3Goaway = h3.goawayIds[h3.goawayIds.length - 1];
    assert.equal(lastH3Goaway % 4, 0, 'a client bidi stream id');
    assert.ok(lastH3Goaway >= 4 * h3Counter.issuedBeforeSignal, `GOAWAY id ${lastH3Goaway} refuses none of the ${h3Counter.issuedBeforeSignal} streams opened before the signal`);
    // (c)
    assert.equal(plainRefusal, 'ECONNREFUSED', 'new TCP connections to the cleartext listener are refused after SIGTERM');
    assert.equal(tlsRefusal, 'ECONNREFUSED', 'new TCP connections to the TLS listener are refused after SIGTERM');
    assert.ok(refusedDuringDrain, 'connections were refused while the drain was still running');
  });

  it('cuts the requests still running at limits.drainTimeout, logs how many, and exits 0', async () => {
    const { sk, plainPort, tlsPort } = await start('1s');
    const run = new LoadRun();
    const session = http2.connect(`http://${HOST}:${plainPort}`);
    session.on('error', () => undefined);
    const h3 = await H3TestClient.connect(HOST, tlsPort, certs.pem.ca);
    clients.push(h3);
    const one = async (proto: Proto, path: string): Promise<Outcome> => {
      const t = performance.now();
      try {
        const r = proto === 'h1' ? await h1GetText(plainPort, path, false, 15_000) : proto === 'h2' ? await h2Get(session, path) : await h3.request(path).then((x) => ({ status: x.status, body: x.body.toString('utf8') }));
        return run.record(proto, path, t, r.status, r.body, null);
      } catch (err) {
        return run.record(proto, path, t, 0, '', (err as Error).message);
      }
    };
    // Three requests the upstream holds for 20 s (far past the drain timeout), three it
    // answers after 300 ms (well inside it).
    const long = [one('h1', '/d/20000/long-h1'), one('h2', '/d/20000/long-h2'), one('h3', '/d/20000/long-h3')];
    const short = [one('h1', '/d/300/short-h1'), one('h2', '/d/300/short-h2'), one('h3', '/d/300/short-h3')];
    await delay(150);
    run.signalAt = performance.now();
    const code = await sk.stop('SIGTERM');
    const cutAt = performance.now();
    const shortDone = await Promise.all(short);
    const longDone = await Promise.all(long);
    session.destroy();
    process.stdout.write(`# drain timeout: exit after ${Math.round(cutAt - run.signalAt)} ms; long: ${longDone.map((o) => `${o.proto} ${o.error ?? o.status}`).join('; ')}\n`);

    assert.equal(code, 0, sk.stderr().slice(-3000));
    for (const o of shortDone) assert.deepEqual([o.status, o.body], [200, `done ${o.path}`], `${o.proto}: a request that ends inside the drain timeout completes`);
    for (const o of longDone) {
      assert.notEqual(o.status, 200, `${o.proto}: the request running at the deadline was cut`);
      assert.ok(o.error !== null, `${o.proto}: the client saw its request fail (${o.status})`);
      assert.ok(o.endedAt - run.signalAt < 10_000, `${o.proto}: cut near the drain timeout, not when the upstream answered`);
    }
    assert.match(sk.stderr(), /"cut":3[,}].*"msg":"drain timeout cut requests short"/);
  });
});
