/**
 * `node dist/bench/h3.js [--seconds 5] [--bulk-mib 64] [--no-pin]`
 *
 * Skiff's HTTP/3 listener against Skiff's HTTP/2 (h2c) listener, same sidecar, same run, same
 * HTTP/1.1 upstream (node:http in this process answering "ok" or N bytes). Writes
 * bench/results/h3-<timestamp>.json and prints a table.
 *
 * Layout: the sidecar (dist/src/cli.js) is pinned to core 0 with `taskset -a -cp 0`; this
 * process (clients and upstream) runs on core 1. Clients: HTTP/3 through Skiff's own pieces
 * (test/helpers/h3-client.ts: the QUIC driver, QPACK, MessageReader), HTTP/2 through
 * node:http2. gtlsclient was not used: one process per run, and it prints every frame; the
 * in-process client costs less CPU per request than the sidecar (see clientCpuShare in the
 * JSON: the client's CPU time over the sidecar's), so the sidecar is the bottleneck.
 *
 * Figures per protocol:
 * - seq req/s: one connection, one GET at a time;
 * - 50-stream req/s: one connection, 50 GETs in flight;
 * - bulk MiB/s: one connection, one GET at a time of `--bulk-mib` MiB;
 * - sidecar CPU µs per request (from /proc/PID/stat), which is robust to other load.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { ensureCerts } from '../test/helpers/certs.js';
import { H3TestClient } from '../test/helpers/h3-client.js';
import { repoRoot } from '../test/helpers/repo-root.js';
import { freePort, freePorts, startSkiff } from '../test/helpers/skiff.js';

const HOST = '127.0.0.1';
const args = process.argv.slice(2);
function opt(name: string, dflt: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
}
const SECONDS = opt('seconds', 5);
const BULK_MIB = opt('bulk-mib', 64);
const PIN = !args.includes('--no-pin');

const CHUNK = Buffer.alloc(256 * 1024, 0x78);

function upstreamServer(): http.Server {
  return http.createServer((req, res) => {
    const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
    if (m === null) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
      return;
    }
    let left = Number(m[1]);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': left });
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  });
}

/** CPU seconds (user + system) of a process from /proc. */
function procCpu(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Phase {
  requests: number;
  seconds: number;
  reqPerSec: number;
  mibPerSec: number;
  sidecarCpuUsPerReq: number;
  clientCpuShare: number;
}

type Send = (path: string) => Promise<number>;

async function phase(pid: number, concurrency: number, path: string, send: Send, seconds: number): Promise<Phase> {
  const t0 = performance.now();
  const c0 = procCpu(pid);
  const u0 = process.cpuUsage();
  const end = t0 + seconds * 1000;
  let requests = 0;
  let bytes = 0;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      bytes += await send(path);
      requests++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const wall = (performance.now() - t0) / 1000;
  const sidecar = procCpu(pid) - c0;
  const u = process.cpuUsage(u0);
  const client = (u.user + u.system) / 1e6;
  return {
    requests,
    seconds: wall,
    reqPerSec: requests / wall,
    mibPerSec: bytes / 1048576 / wall,
    sidecarCpuUsPerReq: (sidecar * 1e6) / requests,
    clientCpuShare: sidecar > 0 ? client / sidecar : 0,
  };
}

function h2Sender(session: http2.ClientHttp2Session): Send {
  return (path) =>
    new Promise((resolve, reject) => {
      const req = session.request({ ':path': path });
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => resolve(n));
      req.on('error', reject);
      req.end();
    });
}

function h3Sender(client: H3TestClient): Send {
  return async (path) => {
    const r = await client.request(path, { discardBody: true });
    if (r.status !== 200) throw new Error(`HTTP/3 status ${r.status}`);
    return 0;
  };
}

async function main(): Promise<void> {
  const certs = ensureCerts();
  const upstream = upstreamServer();
  await new Promise<void>((r) => upstream.listen(0, HOST, () => r()));
  const upPort = (upstream.address() as AddressInfo).port;
  const tlsPort = await freePort({ udp: true });
  const [plainPort, adminPort] = await freePorts(2);
  const sk = await startSkiff(`admin: { address: ${HOST}:${adminPort} }
telemetry: { logLevel: warn }
limits: { maxRequestsPerConnection: 0 }   # one connection per measured client, as in bench/e2e
listeners:
  - { name: tls, address: ${HOST}:${tlsPort}, protocols: [http1, h2, h3], tls: { cert: ${certs.cert}, key: ${certs.key} }, routes: r }
  - { name: plain, address: ${HOST}:${plainPort}, protocols: [http1, h2c], routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app }
clusters:
  - { name: app, protocol: http1, endpoints: [${HOST}:${upPort}] }
`);
  let pinned = false;
  if (PIN && os.cpus().length > 1) {
    try {
      execFileSync('taskset', ['-a', '-cp', '0', String(sk.pid)], { stdio: 'ignore' });
      execFileSync('taskset', ['-a', '-cp', '1', String(process.pid)], { stdio: 'ignore' });
      pinned = true;
    } catch {
      pinned = false;
    }
  }
  const h3 = await H3TestClient.connect(HOST, tlsPort, certs.pem.ca);
  const h2 = http2.connect(`http://${HOST}:${plainPort}`);
  // The h3 bulk sender counts bytes through a separate request path (discardBody keeps the count).
  const h3Bulk: Send = async (path) => {
    const r = await h3.request(path, { discardBody: true });
    if (r.status !== 200) throw new Error(`HTTP/3 status ${r.status}`);
    return Number(path.slice('/bytes/'.length));
  };
  const bulkPath = `/bytes/${BULK_MIB * 1048576}`;
  const results: Record<string, Record<string, Phase>> = { h3: {}, h2c: {} };
  try {
    // Warm-up both paths (JIT, pools, windows).
    await phase(sk.pid, 10, '/', h3Sender(h3), 1);
    await phase(sk.pid, 10, '/', h2Sender(h2), 1);
    for (const [name, send, bulk] of [
      ['h3', h3Sender(h3), h3Bulk],
      ['h2c', h2Sender(h2), h2Sender(h2)],
    ] as const) {
      results[name].sequential = await phase(sk.pid, 1, '/', send, SECONDS);
      results[name].streams50 = await phase(sk.pid, 50, '/', send, SECONDS);
      results[name].bulk = await phase(sk.pid, 1, bulkPath, bulk, SECONDS);
    }
  } finally {
    await h3.close();
    h2.close();
    await sk.stop();
    await new Promise<void>((r) => upstream.close(() => r()));
  }
  const out = {
    bench: 'h3',
    date: new Date().toISOString(),
    commit: gitCommit(),
    node: process.version,
    cpus: os.cpus().length,
    loadavg: os.loadavg(),
    pinned,
    seconds: SECONDS,
    bulkMiB: BULK_MIB,
    client: 'in-process: Skiff QUIC driver + H3 pieces (h3), node:http2 (h2c)',
    results,
  };
  const dir = join(repoRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `h3-${out.date.replace(/[:.]/g, '-').slice(0, 19)}Z.json`);
  writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  const row = (label: string, f: (p: Phase) => string): void => {
    console.log(`${label.padEnd(34)} ${f(results.h3.sequential).padStart(10)} ${f(results.h2c.sequential).padStart(10)} | ${f(results.h3.streams50).padStart(10)} ${f(results.h2c.streams50).padStart(10)}`);
  };
  console.log(`${''.padEnd(34)} ${'h3 seq'.padStart(10)} ${'h2c seq'.padStart(10)} | ${'h3 50str'.padStart(10)} ${'h2c 50str'.padStart(10)}`);
  row('req/s', (p) => p.reqPerSec.toFixed(0));
  row('sidecar CPU µs/req', (p) => p.sidecarCpuUsPerReq.toFixed(1));
  row('client CPU / sidecar CPU', (p) => p.clientCpuShare.toFixed(2));
  console.log(`bulk (${BULK_MIB} MiB GETs, one connection): h3 ${results.h3.bulk.mibPerSec.toFixed(1)} MiB/s, h2c ${results.h2c.bulk.mibPerSec.toFixed(1)} MiB/s`);
  console.log(`wrote ${file}`);
}

function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot(), encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
