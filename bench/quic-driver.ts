/**
 * `node dist/bench/quic-driver.js [--seconds 3] [--bulk-mib 256] [--payload 1350] [--no-pin]`
 *
 * The QUIC driver (protocols/quic) on its own, Skiff client endpoint against Skiff server
 * endpoint on 127.0.0.1. Prints a table and writes bench/results/quic-driver.json.
 *
 * Layout: the server endpoint runs in a child process (this script with `--serve`), pinned
 * to core 0 with taskset; this process is the client, on core 1. The server answers every
 * stream when its FIN arrives: a 100-byte response, or for a request "D<bytes>" a download of
 * that many bytes (written with backpressure: streamWrite partial accepts + onStreamWritable).
 *
 * Figures:
 * - handshakes/s: sequential connect() (full 1-RTT handshake, ECDSA P-256 certificate,
 *   verification against the test CA) then close(); p50/p99 handshake latency.
 * - req/s sequential: one connection, one new bidi stream per request (32-byte request with
 *   FIN, 100-byte response with FIN), the next request starting from the response's handler.
 * - req/s 50 streams: the same with 50 requests in flight on one connection.
 * - req/s 50 connections: 50 connections with one request in flight each.
 * - bulk MiB/s: one connection, one stream, upload (client writes, server reads) and
 *   download (server writes, client reads), flow control and congestion control included.
 * - CPU split: a second run of the 50-stream and upload phases with quiche's Connection
 *   methods wrapped (both processes) to add up wall time spent inside each binding call
 *   (recv, send, streamRecv, streamSend, the rest) plus node:dgram's send(). Binding calls
 *   are synchronous on this thread, so their wall time is CPU time of this process; the share
 *   is that sum over the process's CPU time (process.cpuUsage) in the window; "JS + libuv"
 *   is the remainder (driver JS, handler, dgram receive path, GC). The wrappers cost two
 *   performance.now() per call, so the instrumented throughput is lower; the shares are
 *   what this run is for, the throughput figures come from the uninstrumented run. Wall time
 *   also counts time the process was preempted: on a busy machine the shares overshoot
 *   (jsAndLibuv turns negative), so the JSON records the load average at start.
 * - cpu µs per operation, both processes (process.cpuUsage; the server reports its own over
 *   stdin/stdout): robust to other load, unlike the rates.
 * - slab strategy: the 50-stream and download phases again with `ownedStreamData: true`.
 * - timers: the cost of re-arming one setTimeout per connection flush (the rejected design)
 *   against the endpoint timer's deadline scan per connection (the chosen one).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { quiche } from '../protocols/quic/binding.js';
import {
  QuicEndpoint,
  createClientConfig,
  createServerConfig,
  type QuicConfig,
  type QuicConnection,
  type QuicConnectionHandler,
} from '../protocols/quic/index.js';
import { repoRoot } from './lib/system.js';

const args = process.argv.slice(2);
function arg(name: string, dflt: number): number {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? Number(args[i + 1]) : dflt;
}
const SECONDS = arg('--seconds', 3);
const BULK_MIB = arg('--bulk-mib', 256);
/** Max UDP payload both sides use. 1350 is the real-network setting; larger only shows what per-datagram costs do on loopback. */
const PAYLOAD = arg('--payload', 1350);
const REQUEST = Buffer.alloc(32, 0x71);
const RESPONSE = Buffer.alloc(100, 0x72);

const root = repoRoot();
const certDir = join(root, 'test', 'certs', 'out');

// ---- CPU split instrumentation (bench only) --------------------------------------------

type SplitKey = 'recv' | 'send' | 'streamRecv' | 'streamSend' | 'otherQuiche' | 'dgramSend';
const split: Record<SplitKey, number> = { recv: 0, send: 0, streamRecv: 0, streamSend: 0, otherQuiche: 0, dgramSend: 0 };
const calls: Record<SplitKey, number> = { recv: 0, send: 0, streamRecv: 0, streamSend: 0, otherQuiche: 0, dgramSend: 0 };

function wrap(proto: Record<string, unknown>, name: string, key: SplitKey): void {
  const orig = proto[name];
  if (typeof orig !== 'function') return;
  const fn = orig as (...a: unknown[]) => unknown;
  proto[name] = function wrapped(this: unknown, ...a: unknown[]): unknown {
    const t = performance.now();
    try {
      return fn.apply(this, a);
    } finally {
      split[key] += performance.now() - t;
      calls[key]++;
    }
  };
}

function instrument(): void {
  const proto = (quiche.Connection as unknown as { prototype: Record<string, unknown> }).prototype;
  const main: Record<string, SplitKey> = { recv: 'recv', send: 'send', streamRecv: 'streamRecv', streamSend: 'streamSend' };
  for (const name of Object.getOwnPropertyNames(proto)) {
    if (name === 'constructor') continue;
    const d = Object.getOwnPropertyDescriptor(proto, name);
    if (d === undefined || typeof d.value !== 'function') continue;
    wrap(proto, name, main[name] ?? 'otherQuiche');
  }
  wrap(dgram.Socket.prototype as unknown as Record<string, unknown>, 'send', 'dgramSend');
}

function resetSplit(): void {
  for (const k of Object.keys(split) as SplitKey[]) {
    split[k] = 0;
    calls[k] = 0;
  }
}

interface SplitReport {
  cpuMs: number;
  shares: Record<string, number>;
  calls: Record<string, number>;
  nsPerCall: Record<string, number>;
}

function splitReport(cpuMicros: number): SplitReport {
  const cpuMs = cpuMicros / 1000;
  const shares: Record<string, number> = {};
  const nsPerCall: Record<string, number> = {};
  let sum = 0;
  for (const k of Object.keys(split) as SplitKey[]) {
    shares[k] = round((split[k] / cpuMs) * 100, 1);
    nsPerCall[k] = calls[k] === 0 ? 0 : Math.round((split[k] * 1e6) / calls[k]);
    sum += split[k];
  }
  shares['jsAndLibuv'] = round(((cpuMs - sum) / cpuMs) * 100, 1);
  return { cpuMs: round(cpuMs, 1), shares, calls: { ...calls }, nsPerCall };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

// ---- server (child process) ------------------------------------------------------------

async function serve(): Promise<void> {
  if (args.includes('--instrument')) instrument();
  const config = createServerConfig({
    certPem: readFileSync(join(certDir, 'server.pem')),
    keyPem: readFileSync(join(certDir, 'server-key.pem')),
    initialMaxStreamsBidi: 1000,
    maxUdpPayload: PAYLOAD,
  });
  const pending = new Map<number, number>();
  const downloads = new Map<number, number>();
  const chunk = Buffer.alloc(64 * 1024, 0x64);
  const pump = (conn: QuicConnection, id: number): void => {
    let left = downloads.get(id) ?? 0;
    while (left > 0) {
      const n = conn.streamWrite(id, left > chunk.length ? chunk : chunk.subarray(0, left), left <= chunk.length);
      if (n < 0) {
        downloads.delete(id);
        return;
      }
      left -= n;
      if (n < Math.min(left + n, chunk.length)) break;
    }
    if (left === 0) downloads.delete(id);
    else downloads.set(id, left);
  };
  const handler: QuicConnectionHandler = {
    onEstablished() {},
    onStreamData(conn, id, data, fin) {
      if (!fin) {
        pending.set(id, (pending.get(id) ?? 0) + data.length);
        return;
      }
      if (data.length > 0 && data[0] === 0x44 && data.length < 32) {
        downloads.set(id, Number(data.subarray(1).toString('latin1')));
        pump(conn, id);
        return;
      }
      pending.delete(id);
      conn.streamWrite(id, RESPONSE, true);
    },
    onStreamReset() {},
    onStreamStopSending() {},
    onStreamWritable(conn, id) {
      pump(conn, id);
    },
    onClosed() {},
  };
  const ep = await QuicEndpoint.open({ host: '127.0.0.1', server: { config, onConnection: () => handler }, maxConnections: 100_000 });
  const cpu0 = process.cpuUsage();
  process.stdout.write(`${JSON.stringify({ port: ep.port })}\n`);
  const rl = createInterface({ input: process.stdin });
  let cpuMark = process.cpuUsage();
  rl.on('line', (line) => {
    if (line === 'mark') {
      resetSplit();
      cpuMark = process.cpuUsage();
      process.stdout.write('{"marked":true}\n');
    } else if (line === 'report') {
      const d = process.cpuUsage(cpuMark);
      process.stdout.write(`${JSON.stringify({ split: splitReport(d.user + d.system) })}\n`);
    }
  });
  rl.on('close', () => {
    const d = process.cpuUsage(cpu0);
    void d;
    void ep.close(0, '', 500).then(() => process.exit(0));
  });
}

// ---- client (this process) -------------------------------------------------------------

class ServerProc {
  readonly child: ChildProcess;
  private readonly lines: string[] = [];
  private waiter: ((line: string) => void) | null = null;

  constructor(instrumented: boolean, pin: boolean) {
    const self = fileURLToPath(import.meta.url);
    const nodeArgs = [self, '--serve', '--payload', String(PAYLOAD), ...(instrumented ? ['--instrument'] : [])];
    this.child = pin ? spawn('taskset', ['-c', '0', process.execPath, ...nodeArgs], { stdio: ['pipe', 'pipe', 'inherit'] }) : spawn(process.execPath, nodeArgs, { stdio: ['pipe', 'pipe', 'inherit'] });
    const rl = createInterface({ input: this.child.stdout as NodeJS.ReadableStream });
    rl.on('line', (line) => {
      if (this.waiter !== null) {
        const w = this.waiter;
        this.waiter = null;
        w(line);
      } else this.lines.push(line);
    });
  }

  next(timeoutMs = 10_000): Promise<string> {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('bench: server child did not answer')), timeoutMs);
      this.waiter = (l) => {
        clearTimeout(t);
        resolve(l);
      };
    });
  }

  async command(cmd: string): Promise<unknown> {
    (this.child.stdin as NodeJS.WritableStream).write(`${cmd}\n`);
    return JSON.parse(await this.next()) as unknown;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.pid === undefined) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    (this.child.stdin as NodeJS.WritableStream).end();
    const t = setTimeout(() => {
      if (this.child.pid !== undefined && this.child.exitCode === null) process.kill(this.child.pid, 'SIGKILL');
    }, 3000);
    await exited;
    clearTimeout(t);
  }
}

function pctl(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number;
}

const NOOP: QuicConnectionHandler = {
  onEstablished() {},
  onStreamData() {},
  onStreamReset() {},
  onStreamStopSending() {},
  onStreamWritable() {},
  onClosed() {},
};

async function handshakes(ep: QuicEndpoint, port: number, seconds: number): Promise<{ perSecond: number; p50Ms: number; p99Ms: number; count: number }> {
  const lat: number[] = [];
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    const t = performance.now();
    const conn = await ep.connect('127.0.0.1', port, null, NOOP, { timeoutMs: 5000 });
    lat.push(performance.now() - t);
    conn.close(0, '');
  }
  const total = lat.reduce((a, b) => a + b, 0);
  lat.sort((a, b) => a - b);
  return { perSecond: Math.round(lat.length / (total / 1000)), p50Ms: round(pctl(lat, 0.5), 3), p99Ms: round(pctl(lat, 0.99), 3), count: lat.length };
}

/** `inflight` requests in flight over `conns`, each finished response starting the next; no Promise per request. */
async function requests(conns: QuicConnection[], inflightPerConn: number, seconds: number): Promise<{ reqPerSec: number; p50Us: number; p99Us: number; count: number }> {
  let done = 0;
  let stopAt = 0;
  let active = 0;
  const lat: number[] = [];
  const started = new Map<number, number>();
  let finish: () => void = () => {};
  const finished = new Promise<void>((r) => (finish = r));
  const start = (conn: QuicConnection): void => {
    const id = conn.openBidi();
    if (id < 0) throw new Error(`bench: openBidi refused (${conn.peerStreamsLeftBidi()} left)`);
    active++;
    if (conns.length === 1 && (done & 15) === 0) started.set(id, performance.now());
    conn.streamWrite(id, REQUEST, true);
  };
  const handler: QuicConnectionHandler = {
    ...NOOP,
    onStreamData(conn, id, _data, fin) {
      if (!fin) return;
      done++;
      active--;
      const t = started.get(id);
      if (t !== undefined) {
        lat.push(performance.now() - t);
        started.delete(id);
      }
      if (performance.now() < stopAt) start(conn);
      else if (active === 0) finish();
    },
  };
  for (const c of conns) c.handler = handler;
  const t0 = performance.now();
  stopAt = t0 + seconds * 1000;
  for (const c of conns) for (let i = 0; i < inflightPerConn; i++) start(c);
  await finished;
  const elapsed = performance.now() - t0;
  lat.sort((a, b) => a - b);
  return { reqPerSec: Math.round(done / (elapsed / 1000)), p50Us: Math.round(pctl(lat, 0.5) * 1000), p99Us: Math.round(pctl(lat, 0.99) * 1000), count: done };
}

async function upload(conn: QuicConnection, mib: number): Promise<{ mibPerSec: number; seconds: number }> {
  const chunk = Buffer.alloc(64 * 1024, 0x75);
  const total = mib * 1024 * 1024;
  let left = total;
  const id = conn.openBidi();
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((r) => (resolveDone = r));
  const pump = (): void => {
    while (left > 0) {
      const len = Math.min(left, chunk.length);
      const n = conn.streamWrite(id, len === chunk.length ? chunk : chunk.subarray(0, len), len === left);
      if (n < 0) throw new Error(`bench: upload write failed: ${conn.lastStreamError?.message}`);
      left -= n;
      if (n < len) return;
    }
  };
  conn.handler = {
    ...NOOP,
    onStreamData(_c, sid, _d, fin) {
      if (sid === id && fin) resolveDone();
    },
    onStreamWritable(_c, sid) {
      if (sid === id) pump();
    },
  };
  const t0 = performance.now();
  pump();
  await done;
  const s = (performance.now() - t0) / 1000;
  return { mibPerSec: round(mib / s, 1), seconds: round(s, 2) };
}

async function download(conn: QuicConnection, mib: number): Promise<{ mibPerSec: number; seconds: number }> {
  const total = mib * 1024 * 1024;
  let got = 0;
  const id = conn.openBidi();
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((r) => (resolveDone = r));
  conn.handler = {
    ...NOOP,
    onStreamData(_c, sid, data, fin) {
      if (sid !== id) return;
      got += data.length;
      if (fin) resolveDone();
    },
  };
  const t0 = performance.now();
  conn.streamWrite(id, Buffer.from(`D${total}`), true);
  await done;
  if (got !== total) throw new Error(`bench: download got ${got} of ${total} bytes`);
  const s = (performance.now() - t0) / 1000;
  return { mibPerSec: round(mib / s, 1), seconds: round(s, 2) };
}

/** Runs `phase` with CPU accounting on both sides; adds cpu µs per operation (client, server). */
async function measured<T extends object>(server: ServerProc, ops: (r: T) => number, phase: () => Promise<T>): Promise<T & { clientCpuUsPerOp: number; serverCpuUsPerOp: number }> {
  await server.command('mark');
  const cpu = process.cpuUsage();
  const r = await phase();
  const d = process.cpuUsage(cpu);
  const srv = ((await server.command('report')) as { split: SplitReport }).split;
  const n = Math.max(1, ops(r));
  return { ...r, clientCpuUsPerOp: round((d.user + d.system) / n, 1), serverCpuUsPerOp: round((srv.cpuMs * 1000) / n, 1) };
}

/** The timer decision's two costs, measured: re-arming a per-connection setTimeout vs scanning deadlines. */
async function timerCosts(port: number, clientConfig: QuicConfig): Promise<Record<string, number>> {
  const N = 200_000;
  let t: NodeJS.Timeout = setTimeout(() => {}, 1000);
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    clearTimeout(t);
    t = setTimeout(NOOP_FN, 25 + (i & 7));
  }
  const rearmNs = ((performance.now() - t0) * 1e6) / N;
  clearTimeout(t);
  const ep = await QuicEndpoint.open({ host: '127.0.0.1', client: clientConfig, maxConnections: 100_000 });
  const conns: QuicConnection[] = [];
  for (let i = 0; i < 1000; i++) conns.push(await ep.connect('127.0.0.1', port, null, NOOP));
  await new Promise((r) => setTimeout(r, 50));
  // onTimer with every deadline in the future is a pure scan of 1,000 connections.
  const rounds = 2000;
  const t1 = performance.now();
  for (let i = 0; i < rounds; i++) ep.onTimer();
  const scanNsPerConn = ((performance.now() - t1) * 1e6) / (rounds * conns.length);
  for (const c of conns) c.close();
  await ep.close(0, '', 2000);
  return { perConnectionRearmNs: Math.round(rearmNs), endpointScanNsPerConnection: round(scanNsPerConn, 1), connectionsScanned: conns.length };
}

function NOOP_FN(): void {}

async function main(): Promise<void> {
  const pin = !args.includes('--no-pin');
  if (pin) {
    // This process on core 1; the server child on core 0.
    const r = spawn('taskset', ['-pc', '1', String(process.pid)], { stdio: 'ignore' });
    await new Promise((resolve) => r.once('exit', resolve));
  }
  const clientConfig = createClientConfig({ caPem: readFileSync(join(certDir, 'ca.pem')), initialMaxStreamsBidi: 1000, maxUdpPayload: PAYLOAD });
  const result: Record<string, unknown> = {
    when: new Date().toISOString(),
    node: process.version,
    cmd: `node dist/bench/quic-driver.js ${args.join(' ')}`.trim(),
    layout: pin ? 'server child on core 0, client on core 1 (taskset)' : 'unpinned',
    loadAverageAtStart: os.loadavg().map((x) => round(x, 2)),
    seconds: SECONDS,
    datagramPayload: PAYLOAD,
  };

  // Uninstrumented run.
  let server = new ServerProc(false, pin);
  const { port } = JSON.parse(await server.next()) as { port: number };
  const ep = await QuicEndpoint.open({ host: '127.0.0.1', client: clientConfig, maxConnections: 100_000 });
  const owned = await QuicEndpoint.open({ host: '127.0.0.1', client: clientConfig, ownedStreamData: true });
  try {
    await handshakes(ep, port, 0.5); // warm-up
    result['handshakes'] = await measured(server, (r) => r.count, () => handshakes(ep, port, SECONDS));
    const one = await ep.connect('127.0.0.1', port, null, NOOP);
    await requests([one], 1, 0.5);
    result['sequential'] = await measured(server, (r) => r.count, () => requests([one], 1, SECONDS));
    await requests([one], 50, 0.5);
    result['streams50'] = await measured(server, (r) => r.count, () => requests([one], 50, SECONDS));
    const many: QuicConnection[] = [];
    for (let i = 0; i < 50; i++) many.push(await ep.connect('127.0.0.1', port, null, NOOP));
    result['connections50'] = await measured(server, (r) => r.count, () => requests(many, 1, SECONDS));
    for (const c of many) c.close();
    const bulkConn = await ep.connect('127.0.0.1', port, null, NOOP);
    await upload(bulkConn, 16);
    result['upload'] = { mib: BULK_MIB, ...(await measured(server, () => BULK_MIB, () => upload(bulkConn, BULK_MIB))) };
    result['download'] = { mib: BULK_MIB, ...(await measured(server, () => BULK_MIB, () => download(bulkConn, BULK_MIB))) };
    bulkConn.close();
    one.close();
    // Slab strategy: the same download and 50-stream phases with ownedStreamData on the client.
    const ownedConn = await owned.connect('127.0.0.1', port, null, NOOP);
    await requests([ownedConn], 50, 0.5);
    result['ownedStreamData'] = {
      streams50: await measured(server, (r) => r.count, () => requests([ownedConn], 50, SECONDS)),
      download: { mib: BULK_MIB, ...(await measured(server, () => BULK_MIB, () => download(ownedConn, BULK_MIB))) },
    };
    ownedConn.close();
    result['timers'] = await timerCosts(port, clientConfig);
    result['clientCounters'] = { ...ep.counters };
    result['socketBuffers'] = ep.socketBufferSizes();
  } finally {
    await Promise.all([ep.close(0, '', 1000), owned.close(0, '', 1000)]);
    await server.stop();
  }

  // Instrumented run: CPU split.
  instrument();
  server = new ServerProc(true, pin);
  const port2 = (JSON.parse(await server.next()) as { port: number }).port;
  const ep2 = await QuicEndpoint.open({ host: '127.0.0.1', client: clientConfig });
  try {
    const conn = await ep2.connect('127.0.0.1', port2, null, NOOP);
    await requests([conn], 50, 0.5);
    await server.command('mark');
    resetSplit();
    let cpu = process.cpuUsage();
    const r50 = await requests([conn], 50, SECONDS);
    let d = process.cpuUsage(cpu);
    const s50 = splitReport(d.user + d.system);
    const srv50 = ((await server.command('report')) as { split: SplitReport }).split;
    await server.command('mark');
    resetSplit();
    cpu = process.cpuUsage();
    const up = await upload(conn, BULK_MIB / 2);
    d = process.cpuUsage(cpu);
    const sUp = splitReport(d.user + d.system);
    const srvUp = ((await server.command('report')) as { split: SplitReport }).split;
    result['cpuSplit'] = {
      method:
        'wall time inside each quiche Connection method and dgram.Socket#send (performance.now() wrappers), over process CPU time (process.cpuUsage) in the window; ' +
        'wall time includes time the process was preempted, so on a busy machine the shares add up to more than 100% (jsAndLibuv < 0): read them from a run with a low loadAverageAtStart',
      streams50: { instrumentedReqPerSec: r50.reqPerSec, client: s50, server: srv50 },
      upload: { instrumentedMibPerSec: up.mibPerSec, client: sUp, server: srvUp },
    };
    conn.close();
  } finally {
    await ep2.close(0, '', 1000);
    await server.stop();
  }

  const outDir = join(root, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'quic-driver.json'), `${JSON.stringify(result, null, 2)}\n`);
  type Row = { clientCpuUsPerOp: number; serverCpuUsPerOp: number };
  const hs = result['handshakes'] as { perSecond: number; p50Ms: number } & Row;
  const seq = result['sequential'] as { reqPerSec: number; p50Us: number; p99Us: number } & Row;
  const s50r = result['streams50'] as { reqPerSec: number } & Row;
  const c50r = result['connections50'] as { reqPerSec: number } & Row;
  const upr = result['upload'] as { mibPerSec: number } & Row;
  const dnr = result['download'] as { mibPerSec: number } & Row;
  const own = result['ownedStreamData'] as { streams50: { reqPerSec: number } & Row; download: { mibPerSec: number } & Row };
  const timers = result['timers'] as Record<string, number>;
  const cpu = (r: Row, unit: string): string => `cpu/${unit}: client ${r.clientCpuUsPerOp} µs, server ${r.serverCpuUsPerOp} µs`;
  process.stdout.write(
    [
      `load average at start          ${(result['loadAverageAtStart'] as number[]).join(' ')}`,
      `handshakes/s (sequential)      ${hs.perSecond}  (p50 ${hs.p50Ms} ms; ${cpu(hs, 'handshake')})`,
      `req/s sequential, 1 conn       ${seq.reqPerSec}  (p50 ${seq.p50Us} µs, p99 ${seq.p99Us} µs; ${cpu(seq, 'req')})`,
      `req/s 50 streams, 1 conn       ${s50r.reqPerSec}  (${cpu(s50r, 'req')})`,
      `req/s 50 conns x 1 stream      ${c50r.reqPerSec}  (${cpu(c50r, 'req')})`,
      `bulk upload, 1 stream          ${upr.mibPerSec} MiB/s  (${cpu(upr, 'MiB')})`,
      `bulk download, 1 stream        ${dnr.mibPerSec} MiB/s  (${cpu(dnr, 'MiB')})`,
      `owned stream data: 50 streams  ${own.streams50.reqPerSec} req/s (${cpu(own.streams50, 'req')}); download ${own.download.mibPerSec} MiB/s (${cpu(own.download, 'MiB')})`,
      `timers: per-connection re-arm  ${timers['perConnectionRearmNs']} ns per flush; endpoint scan ${timers['endpointScanNsPerConnection']} ns per connection per fire`,
      '',
    ].join('\n'),
  );
  process.stdout.write(`${JSON.stringify(result['cpuSplit'], null, 2)}\n`);
}

if (args.includes('--serve')) {
  void serve();
} else {
  main().catch((err: unknown) => {
    process.stderr.write(`bench/quic-driver: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
