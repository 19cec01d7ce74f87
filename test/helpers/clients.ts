// Real command-line clients for end-to-end tests (curl, nghttp), run as child processes,
// plus a memory probe for a PID.
import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Lower-case header name -> every value, in arrival order. */
export type HeaderMap = Record<string, string[]>;

export interface ClientResult {
  /** Final response status; 0 when no response head arrived. */
  status: number;
  headers: HeaderMap;
  /** Response trailers (curl: from its header dump; nghttp: always empty). */
  trailers: HeaderMap;
  body: Buffer;
  stderr: string;
  /** The client's exit code (non-zero on transport errors, e.g. a reset mid-body). */
  exitCode: number | null;
  /** "1.1", "2", "3" as the client reports it; "" when unknown. */
  httpVersion: string;
}

export interface RunOptions {
  /** Kill the client (SIGKILL, by its PID) after this long; default 30 000 ms. */
  timeoutMs?: number;
  /** Bytes for the client's stdin (e.g. curl --data-binary @-). */
  stdin?: Buffer | string;
}

interface Ran {
  stdout: Buffer;
  stderr: string;
  exitCode: number | null;
}

function run(cmd: string, args: string[], opts: RunOptions): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // exited meanwhile
        }
      }
    }, opts.timeoutMs ?? 30_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8'), exitCode: code });
    });
    if (opts.stdin !== undefined && child.stdin !== null) {
      child.stdin.on('error', () => {});
      child.stdin.end(opts.stdin);
    }
  });
}

function addHeader(map: HeaderMap, name: string, value: string): void {
  const key = name.toLowerCase();
  const list = map[key];
  if (list === undefined) map[key] = [value];
  else list.push(value);
}

/**
 * Parses a curl header dump (-D): one block per response head (1xx, redirects, the final
 * one), each "HTTP/x NNN" + fields + blank line; trailer fields, if any, follow the final
 * block's blank line. Keeps the last block.
 */
export function parseHeaderDump(text: string): { status: number; headers: HeaderMap; trailers: HeaderMap } {
  let status = 0;
  let headers: HeaderMap = {};
  let trailers: HeaderMap = {};
  let isInTrailers = false;
  for (const line of text.split(/\r?\n/)) {
    const statusLine = /^HTTP\/[\d.]+\s+(\d{3})/.exec(line);
    if (statusLine !== null) {
      status = Number(statusLine[1]);
      headers = {};
      trailers = {};
      isInTrailers = false;
      continue;
    }
    if (line === '') {
      if (status !== 0) isInTrailers = true;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    addHeader(isInTrailers ? trailers : headers, name, value);
  }
  return { status, headers, trailers };
}

/**
 * Runs `curl -sS -D <tmp> -o <tmp> -w %{http_version} ...args` and splits the response into
 * status, headers, trailers and body. Pass the URL and any request options in `args`
 * (e.g. `--http2-prior-knowledge`, `--http2 --cacert ca.pem`, `-X POST --data-binary @f`);
 * don't pass -o, -D, -i or -w, the wrapper owns them. Never rejects on a curl failure:
 * look at exitCode and stderr (e.g. exit 18 or 56 for a response cut mid-body).
 */
export async function curl(args: string[], opts: RunOptions = {}): Promise<ClientResult> {
  const dir = mkdtempSync(join(tmpdir(), 'skiff-curl-'));
  try {
    const headerFile = join(dir, 'headers');
    const bodyFile = join(dir, 'body');
    writeFileSync(headerFile, '');
    writeFileSync(bodyFile, '');
    const ran = await run('curl', ['-sS', '-D', headerFile, '-o', bodyFile, '-w', '%{http_version}', ...args], opts);
    const parsed = parseHeaderDump(readFileSync(headerFile, 'latin1'));
    const version = ran.stdout.toString('utf8').trim();
    return {
      status: parsed.status,
      headers: parsed.headers,
      trailers: parsed.trailers,
      body: readFileSync(bodyFile),
      stderr: ran.stderr,
      exitCode: ran.exitCode,
      httpVersion: version === '0' ? '' : version,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface NghttpOptions extends RunOptions {
  /** Request headers; pseudo-headers allowed (e.g. ':method': 'PUT'). */
  headers?: Record<string, string> | Array<[string, string]>;
  /** Request body (nghttp sends POST unless :method is given). */
  data?: Buffer | string;
  /** Extra nghttp arguments, e.g. ['-m', '10'] or ['--cert', c, '--key', k]. */
  args?: string[];
}

let hasNghttp: boolean | null = null;

/** True when the nghttp binary (Debian: nghttp2-client) is on PATH. */
export function isNghttpInstalled(): boolean {
  if (hasNghttp === null) {
    const r = spawnSync('nghttp', ['--version'], { stdio: 'ignore' });
    hasNghttp = r.error === undefined && r.status === 0;
  }
  return hasNghttp;
}

interface HarHeader {
  name: string;
  value: string;
}

interface HarEntry {
  response?: { status?: number; httpVersion?: string; headers?: HarHeader[] };
}

/**
 * Runs nghttp (HTTP/2 only: h2c prior knowledge for http://, ALPN h2 for https://; it does
 * not verify certificates) against one URL. The body comes from stdout, status and headers
 * from its HAR output; with `-m N` the body is every response concatenated and
 * status/headers are the first response's. Throws if nghttp is not installed.
 */
export async function nghttp(url: string, opts: NghttpOptions = {}): Promise<ClientResult> {
  if (!isNghttpInstalled()) {
    throw new Error('nghttp is not installed (apt-get install nghttp2-client; .ci/run does this)');
  }
  const dir = mkdtempSync(join(tmpdir(), 'skiff-nghttp-'));
  try {
    const harFile = join(dir, 'out.har');
    const args = ['--har', harFile];
    const headerList = Array.isArray(opts.headers) ? opts.headers : Object.entries(opts.headers ?? {});
    for (const [name, value] of headerList) args.push('-H', `${name}: ${value}`);
    if (opts.data !== undefined) {
      const dataFile = join(dir, 'data');
      writeFileSync(dataFile, opts.data);
      args.push('-d', dataFile);
    }
    args.push(...(opts.args ?? []), url);
    const ran = await run('nghttp', args, opts);
    let status = 0;
    const headers: HeaderMap = {};
    let httpVersion = '';
    try {
      const har = JSON.parse(readFileSync(harFile, 'utf8')) as { log?: { entries?: HarEntry[] } };
      const response = har.log?.entries?.[0]?.response;
      if (response !== undefined) {
        status = response.status ?? 0;
        httpVersion = response.httpVersion === 'HTTP/2.0' ? '2' : (response.httpVersion ?? '');
        for (const h of response.headers ?? []) if (!h.name.startsWith(':')) addHeader(headers, h.name, h.value);
      }
    } catch {
      // no HAR written: the connection failed; stderr says why
    }
    return { status, headers, trailers: {}, body: ran.stdout, stderr: ran.stderr, exitCode: ran.exitCode, httpVersion };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * GET http://127.0.0.1:PORT/PATH with node:http; resolves with the status and the body as text.
 * `timeoutMs` without any socket activity fails the request ('client timeout').
 */
export function h1GetText(port: number, path: string, agent: http.Agent | false, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
  });
}

/** Open file descriptors of a process, from /proc/PID/fd (Linux only): the leak checks' measure. */
export function fdCountOfPid(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Polls (every 50 ms) until `pid` has at most `limit` open descriptors or `ms` pass; the last count. */
export async function fdsSettleTo(pid: number, limit: number, ms: number): Promise<number> {
  const deadline = Date.now() + ms;
  let n = fdCountOfPid(pid);
  while (n > limit && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    n = fdCountOfPid(pid);
  }
  return n;
}

/** Resident set size of a process in bytes, from VmRSS in /proc/PID/status (Linux only). */
export function rssOfPid(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (m === null) throw new Error(`rssOfPid: no VmRSS for pid ${pid} (zombie or kernel thread?)`);
  return Number(m[1]) * 1024;
}
