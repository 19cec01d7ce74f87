// Hostile HTTP/1.1 against the real sidecar (dist/src/cli.js), end to end (issue 7, item 1).
//
// A request-smuggling corpus (conflicting Content-Length, CL with TE, TE variants, obs-fold,
// bare LF and CR, invalid token characters, oversized chunk sizes and extensions, absolute-form
// tricks, bad Host fields) is sent as raw bytes on fresh sockets: each one is answered with
// its 4xx, the sidecar closes the connection, and the recording upstream
// (test/helpers/raw-upstream.ts) proves what reached the service. For a bad head that is
// nothing at all. For a bad chunked body, whose head was valid and was already streamed on
// (Skiff does not buffer request bodies), the upstream exchange is cut: the service never
// sees a complete request, the connection that carried the partial one is closed rather than
// reused, and the bytes after the bad framing (a smuggled request) never arrive.
//
// Then: header size and count limits (431), slowloris on heads (a head dripped byte by byte,
// which defeats per-read idle timers, is cut by `headersTimeout`) and on bodies, and
// pipelining (garbage after a good request, a request smuggled inside a body, several good
// requests in one write).
//
// All along, a well-behaved keep-alive client beside the attacker keeps asking for /good/N on
// one connection: after every case it must have received a fresh 200, and at the end it saw no
// error and never had to reconnect, the sidecar is still running, and /stats shows every
// request context back in the arena.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startRawRecordingUpstream, type RawRecordingUpstream } from '../helpers/raw-upstream.js';
import { freePorts, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

const MAX_HEADER_BYTES = 4096;
const MAX_FIELDS = 128; // protocols/h1/server-conn.ts MAX_FIELDS
const MAX_BODY = 1024 * 1024;
const HEADERS_TIMEOUT_MS = 1000;
const BODY_TIMEOUT_MS = 1500;
/** Every attack carries this marker; the good client's traffic never does. */
const MARK = 'zqx';

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

// ---- responses --------------------------------------------------------------------------

interface ParsedResponse {
  status: number;
  /** Lower-case name -> values. */
  headers: Map<string, string[]>;
  body: string;
}

/** Takes one complete response (Content-Length or chunked framing) off the front of `text`. */
function takeResponse(text: string): { res: ParsedResponse; rest: string } | null {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const lines = text.slice(0, end).split('\r\n');
  const m = /^HTTP\/1\.1 (\d{3})/.exec(lines[0]);
  if (m === null) throw new Error(`not a status line: ${JSON.stringify(lines[0])}`);
  const headers = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).toLowerCase();
    const list = headers.get(name) ?? [];
    list.push(line.slice(colon + 1).trim());
    headers.set(name, list);
  }
  let pos = end + 4;
  let body = '';
  const cl = headers.get('content-length');
  if (cl !== undefined) {
    const n = Number(cl[0]);
    if (text.length < pos + n) return null;
    body = text.slice(pos, pos + n);
    pos += n;
  } else if (headers.get('transfer-encoding')?.[0] === 'chunked') {
    for (;;) {
      const eol = text.indexOf('\r\n', pos);
      if (eol < 0) return null;
      const size = parseInt(text.slice(pos, eol), 16);
      if (size === 0) {
        const fin = text.indexOf('\r\n\r\n', eol);
        if (fin < 0) return null;
        pos = fin + 4;
        break;
      }
      if (text.length < eol + 2 + size + 2) return null;
      body += text.slice(eol + 2, eol + 2 + size);
      pos = eol + 2 + size + 2;
    }
  }
  return { res: { status: Number(m[1]), headers, body }, rest: text.slice(pos) };
}

function allResponses(text: string): ParsedResponse[] {
  const out: ParsedResponse[] = [];
  let rest = text;
  while (rest.length > 0) {
    const r = takeResponse(rest);
    if (r === null) throw new Error(`incomplete response: ${JSON.stringify(rest.slice(0, 300))}`);
    out.push(r.res);
    rest = r.rest;
  }
  return out;
}

function hasOneResponse(text: string): boolean {
  return takeResponse(text) !== null;
}

// ---- raw exchanges ----------------------------------------------------------------------

interface Exchange {
  /** Everything the sidecar sent (latin1). */
  text: string;
  /** The sidecar ended (FIN) or reset the connection; false if our own timer cut it. */
  isClosedByPeer: boolean;
  isReset: boolean;
  /** ms from connect to close. */
  ms: number;
  /** How many of the parts were written before the connection closed. */
  partsWritten: number;
}

/**
 * Connects to the listener, writes `parts` (the first at once, the rest `gapMs` apart),
 * and collects what comes back until the connection closes (or `until` says enough, or
 * `maxMs` passed: then it destroys the socket itself).
 */
function exchange(port: number, parts: ReadonlyArray<string | Buffer>, opts: { gapMs?: number; maxMs?: number; until?: (text: string) => boolean } = {}): Promise<Exchange> {
  const gapMs = opts.gapMs ?? 0;
  const maxMs = opts.maxMs ?? 5000;
  return new Promise((resolve) => {
    const started = Date.now();
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let isPeer = false;
    let isReset = false;
    let written = 0;
    let gapTimer: NodeJS.Timeout | null = null;
    const writeNext = (): void => {
      if (s.destroyed || !s.writable || written >= parts.length) return;
      const p = parts[written++];
      s.write(typeof p === 'string' ? Buffer.from(p, 'latin1') : p);
      if (written < parts.length) gapTimer = setTimeout(writeNext, gapMs);
    };
    s.on('connect', writeNext);
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      if (opts.until?.(Buffer.concat(chunks).toString('latin1')) === true) s.destroy();
    });
    s.on('end', () => {
      isPeer = true;
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ECONNRESET' || e.code === 'EPIPE') {
        isPeer = true;
        isReset = true;
      }
    });
    const killer = setTimeout(() => s.destroy(), maxMs);
    s.on('close', () => {
      clearTimeout(killer);
      if (gapTimer !== null) clearTimeout(gapTimer);
      resolve({ text: Buffer.concat(chunks).toString('latin1'), isClosedByPeer: isPeer, isReset, ms: Date.now() - started, partsWritten: written });
    });
  });
}

// ---- the well-behaved neighbour -----------------------------------------------------------

/** Keep-alive GETs of /good/N on one raw connection, one at a time, ~20 ms apart. */
class GoodClient {
  ok = 0;
  readonly errors: string[] = [];
  reconnects = 0;
  private readonly port: number;
  private socket: net.Socket | null = null;
  private buf = '';
  private n = 0;
  private isStopped = false;
  private waiter: ((r: ParsedResponse | Error) => void) | null = null;
  private loop: Promise<void> | null = null;

  constructor(port: number) {
    this.port = port;
  }

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.isStopped = true;
    await this.loop;
    this.socket?.destroy();
  }

  /** Resolves once at least one more good answer arrived after this call. */
  async progressed(what: string): Promise<void> {
    const before = this.ok;
    await waitFor(`a good answer after ${what} (errors: ${this.errors.join('; ')})`, () => this.ok > before, 5000);
  }

  private connect(): net.Socket {
    const s = net.connect(this.port, '127.0.0.1');
    s.setNoDelay(true);
    s.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      if (this.waiter === null) return;
      let r: { res: ParsedResponse; rest: string } | null;
      try {
        r = takeResponse(this.buf);
      } catch (e) {
        this.settle(e as Error);
        return;
      }
      if (r === null) return;
      this.buf = r.rest;
      this.settle(r.res);
    });
    s.on('error', () => {});
    s.on('close', () => {
      if (this.socket === s) this.socket = null;
      this.settle(new Error('the sidecar closed the good connection'));
    });
    return s;
  }

  private settle(r: ParsedResponse | Error): void {
    const w = this.waiter;
    this.waiter = null;
    if (w !== null) w(r);
  }

  private async request(path: string): Promise<ParsedResponse> {
    if (this.socket === null) {
      if (this.n > 1) this.reconnects++;
      this.buf = '';
      this.socket = this.connect();
    }
    const s = this.socket;
    const answer = new Promise<ParsedResponse | Error>((resolve) => {
      this.waiter = resolve;
    });
    s.write(`GET ${path} HTTP/1.1\r\nHost: good.test\r\nUser-Agent: good-neighbour\r\n\r\n`, 'latin1');
    const timer = setTimeout(() => this.settle(new Error(`no answer to ${path} in 5 s`)), 5000);
    const r = await answer;
    clearTimeout(timer);
    if (r instanceof Error) {
      s.destroy();
      throw r;
    }
    return r;
  }

  private async run(): Promise<void> {
    while (!this.isStopped) {
      const path = `/good/${this.n++}`;
      try {
        const r = await this.request(path);
        if (r.status === 200 && r.body === `up:${path}`) this.ok++;
        else this.errors.push(`${path}: ${r.status} ${r.body.slice(0, 100)}`);
      } catch (e) {
        this.errors.push(`${path}: ${(e as Error).message}`);
      }
      await delay(20);
    }
  }
}

// ---- the corpus ---------------------------------------------------------------------------

interface HostileCase {
  readonly name: string;
  readonly bytes: string;
  readonly status: number;
}

const H = 'Host: skiff.test\r\n';
const SMUGGLED = `GET /${MARK}-smuggled HTTP/1.1\r\nHost: skiff.test\r\n\r\n`;
const post = (fields: string): string => `POST /${MARK} HTTP/1.1\r\n${H}${fields}\r\n`;

/** Bad heads: nothing at all may reach the upstream. */
const HEAD_CASES: readonly HostileCase[] = [
  // Content-Length
  { name: 'CL: two conflicting values', bytes: post('Content-Length: 5\r\nContent-Length: 6\r\n') + 'hello' + SMUGGLED, status: 400 },
  { name: 'CL: list "1, 2"', bytes: post('Content-Length: 1, 2\r\n') + 'hi', status: 400 },
  { name: 'CL: list of equal values "5, 5" (refused, not merged)', bytes: post('Content-Length: 5, 5\r\n') + 'hello', status: 400 },
  { name: 'CL: "+5"', bytes: post('Content-Length: +5\r\n') + 'hello', status: 400 },
  { name: 'CL: "-1"', bytes: post('Content-Length: -1\r\n') + SMUGGLED, status: 400 },
  { name: 'CL: hex "0x5"', bytes: post('Content-Length: 0x5\r\n') + 'hello', status: 400 },
  { name: 'CL: "5.0"', bytes: post('Content-Length: 5.0\r\n') + 'hello', status: 400 },
  { name: 'CL: "5 0" (inner space)', bytes: post('Content-Length: 5 0\r\n') + 'hello', status: 400 },
  { name: 'CL: empty', bytes: post('Content-Length: \r\n') + SMUGGLED, status: 400 },
  { name: 'CL: 20 digits (overflows 2^53)', bytes: post('Content-Length: 18446744073709551621\r\n') + 'hello', status: 400 },
  { name: 'CL: 15 digits, over maxBodyBytes', bytes: post('Content-Length: 999999999999999\r\n') + 'hello', status: 413 },
  { name: 'CL: vertical tab after the value', bytes: post('Content-Length: 5\x0b\r\n') + 'hello', status: 400 },
  // CL together with TE
  { name: 'CL.TE (CL first)', bytes: post('Content-Length: 6\r\nTransfer-Encoding: chunked\r\n') + '0\r\n\r\nG' + SMUGGLED, status: 400 },
  { name: 'TE.CL (TE first)', bytes: post('Transfer-Encoding: chunked\r\nContent-Length: 3\r\n') + '8\r\nSMUGGLED\r\n0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'CL with TE: identity', bytes: post('Content-Length: 5\r\nTransfer-Encoding: identity\r\n') + 'hello', status: 400 },
  // TE variants (TE.TE): RFC 9112 §6.3: chunked not final is 400 and close; §6.1: a coding we do not implement is 501.
  { name: 'TE: xchunked', bytes: post('Transfer-Encoding: xchunked\r\n') + '0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'TE: chunkedx', bytes: post('Transfer-Encoding: chunkedx\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: "chunked, identity" (chunked not last)', bytes: post('Transfer-Encoding: chunked, identity\r\n') + '0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'TE: identity', bytes: post('Transfer-Encoding: identity\r\n') + SMUGGLED, status: 400 },
  { name: 'TE: gzip (chunked not last)', bytes: post('Transfer-Encoding: gzip\r\n') + SMUGGLED, status: 400 },
  { name: 'TE: "gzip, chunked" (an unimplemented coding)', bytes: post('Transfer-Encoding: gzip, chunked\r\n') + '0\r\n\r\n', status: 501 },
  { name: 'TE: "chunked, chunked"', bytes: post('Transfer-Encoding: chunked, chunked\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: two chunked fields', bytes: post('Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: chunked then identity fields', bytes: post('Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: quoted "chunked"', bytes: post('Transfer-Encoding: "chunked"\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: chunked with a parameter', bytes: post('Transfer-Encoding: chunked;q=1\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: "ch unked"', bytes: post('Transfer-Encoding: ch unked\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: space before the colon', bytes: post('Transfer-Encoding : chunked\r\n') + '0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'TE: tab before the colon', bytes: post('Transfer-Encoding\t: chunked\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: vertical tab before the value', bytes: post('Transfer-Encoding: \x0bchunked\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: NUL inside the value', bytes: post('Transfer-Encoding: chunk\x00ed\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: folded onto the previous field (obs-fold)', bytes: post('X-A: 1\r\n Transfer-Encoding: chunked\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: value folded onto the next line', bytes: post('Transfer-Encoding:\r\n chunked\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: after a bare-LF line end', bytes: post('X-A: 1\nTransfer-Encoding: chunked\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: after a bare CR', bytes: post('X-A: 1\rTransfer-Encoding: chunked\r\n') + '0\r\n\r\n', status: 400 },
  { name: 'TE: in an HTTP/1.0 request', bytes: `POST /${MARK} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, status: 400 },
  // line endings
  { name: 'bare LF line ends throughout', bytes: `GET /${MARK} HTTP/1.1\nHost: skiff.test\n\n`, status: 400 },
  { name: 'bare LF after the request line', bytes: `GET /${MARK} HTTP/1.1\nHost: skiff.test\r\n\r\n`, status: 400 },
  { name: 'bare CR line ends throughout', bytes: `GET /${MARK} HTTP/1.1\rHost: skiff.test\r\r`, status: 400 },
  { name: 'CR CR LF line end', bytes: `GET /${MARK} HTTP/1.1\r\nHost: skiff.test\r\r\n\r\n`, status: 400 },
  { name: 'bare LF ends the head ("\\r\\n\\n")', bytes: `GET /${MARK} HTTP/1.1\r\nHost: skiff.test\r\n\n`, status: 400 },
  // field lines
  { name: 'NUL in a field value', bytes: `GET /${MARK} HTTP/1.1\r\n${H}X-A: a\x00b\r\n\r\n`, status: 400 },
  { name: 'DEL in a field value', bytes: `GET /${MARK} HTTP/1.1\r\n${H}X-A: a\x7f\r\n\r\n`, status: 400 },
  { name: 'form feed in a field value', bytes: `GET /${MARK} HTTP/1.1\r\n${H}X-A: a\x0cb\r\n\r\n`, status: 400 },
  { name: 'space before the colon of Host', bytes: `GET /${MARK} HTTP/1.1\r\nHost : skiff.test\r\n\r\n`, status: 400 },
  { name: 'invalid token character in a field name', bytes: `GET /${MARK} HTTP/1.1\r\n${H}X(A): 1\r\n\r\n`, status: 400 },
  { name: 'slash in a field name', bytes: `GET /${MARK} HTTP/1.1\r\n${H}X/A: 1\r\n\r\n`, status: 400 },
  { name: 'non-ASCII field name', bytes: `GET /${MARK} HTTP/1.1\r\n${H}X-\xe9: 1\r\n\r\n`, status: 400 },
  { name: 'empty field name', bytes: `GET /${MARK} HTTP/1.1\r\n${H}: 1\r\n\r\n`, status: 400 },
  { name: 'field line without a colon', bytes: `GET /${MARK} HTTP/1.1\r\n${H}nocolon\r\n\r\n`, status: 400 },
  { name: 'whitespace before the first field line', bytes: `GET /${MARK} HTTP/1.1\r\n ${H}\r\n`, status: 400 },
  { name: 'obs-fold in a plain field', bytes: `GET /${MARK} HTTP/1.1\r\n${H}X-A: 1\r\n\t2\r\n\r\n`, status: 400 },
  // request line
  { name: 'invalid character in the method', bytes: `G(T /${MARK} HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'NUL in the method', bytes: `GE\x00T /${MARK} HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'two spaces in the request line', bytes: `GET  /${MARK} HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'tabs in the request line', bytes: `GET\t/${MARK}\tHTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'space inside the target', bytes: `GET /${MARK} x HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'trailing space after the version', bytes: `GET /${MARK} HTTP/1.1 \r\n${H}\r\n`, status: 400 },
  { name: 'HTTP/1.2', bytes: `GET /${MARK} HTTP/1.2\r\n${H}\r\n`, status: 400 },
  { name: 'HTTP/2.0 on an HTTP/1.1 listener', bytes: `GET /${MARK} HTTP/2.0\r\n${H}\r\n`, status: 400 },
  { name: 'the HTTP/2 connection preface', bytes: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n${MARK}`, status: 400 },
  { name: 'lower-case version', bytes: `GET /${MARK} http/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'HTTP/0.9-style request line (no version)', bytes: `GET /${MARK}\r\n\r\n`, status: 400 },
  { name: 'missing target', bytes: `GET HTTP/1.1\r\n${H}X-${MARK}: 1\r\n\r\n`, status: 400 },
  { name: 'relative target', bytes: `GET ${MARK}/a HTTP/1.1\r\n${H}\r\n`, status: 400 },
  // Host
  { name: 'missing Host on HTTP/1.1', bytes: `GET /${MARK} HTTP/1.1\r\nX-A: 1\r\n\r\n`, status: 400 },
  { name: 'two Host fields', bytes: `GET /${MARK} HTTP/1.1\r\n${H}Host: other.test\r\n\r\n`, status: 400 },
  { name: 'Host with a space', bytes: `GET /${MARK} HTTP/1.1\r\nHost: skiff.test other.test\r\n\r\n`, status: 400 },
  { name: 'Host with a path', bytes: `GET /${MARK} HTTP/1.1\r\nHost: skiff.test/${MARK}\r\n\r\n`, status: 400 },
  { name: 'Host with userinfo', bytes: `GET /${MARK} HTTP/1.1\r\nHost: ${MARK}@skiff.test\r\n\r\n`, status: 400 },
  { name: 'Host with a non-numeric port', bytes: `GET /${MARK} HTTP/1.1\r\nHost: skiff.test:${MARK}\r\n\r\n`, status: 400 },
  // absolute-form tricks
  { name: 'absolute-form with userinfo', bytes: `GET http://${MARK}@skiff.test/ HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'absolute-form with user:password', bytes: `GET http://u:${MARK}@skiff.test/ HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'absolute-form with an empty authority', bytes: `GET http:///${MARK} HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'absolute-form with "#@" in the authority', bytes: `GET http://evil.test#@skiff.test/${MARK} HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'absolute-form with a backslash in the authority', bytes: `GET http://skiff.test\\@evil.test/${MARK} HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'absolute-form with a non-http scheme', bytes: `GET ftp://skiff.test/${MARK} HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'absolute-form file:///', bytes: `GET file:///${MARK} HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'scheme without "//"', bytes: `GET http:/${MARK} HTTP/1.1\r\n${H}\r\n`, status: 400 },
  // not HTTP at all
  { name: 'a TLS ClientHello on the cleartext port', bytes: `\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03${MARK}`, status: 400 },
];

const chunkedPost = `POST /${MARK}-body HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n`;

/** Bad chunked bodies behind a valid head; each is followed by a smuggled request. */
const BODY_CASES: readonly HostileCase[] = [
  { name: 'chunk size overflow (18 hex digits)', bytes: chunkedPost + 'ffffffffffffffffff\r\nhello\r\n0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'chunk size with a bad hex digit', bytes: chunkedPost + '5g\r\nhello\r\n0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'chunk size "0x5"', bytes: chunkedPost + '0x5\r\nhello\r\n0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'negative chunk size', bytes: chunkedPost + '-5\r\nhello\r\n0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'chunk size with leading space', bytes: chunkedPost + ' 5\r\nhello\r\n0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'empty chunk-size line', bytes: chunkedPost + '\r\nhello\r\n0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'chunk-size line ended by a bare LF', bytes: chunkedPost + '5\nhello\r\n0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'chunk data not followed by CRLF', bytes: chunkedPost + '5\r\nhelloXX0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'chunk data longer than its size (TE desync)', bytes: chunkedPost + '3\r\nhello\r\n0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'oversized chunk extension (5000 bytes)', bytes: chunkedPost + `5;${'x'.repeat(5000)}\r\nhello\r\n0\r\n\r\n` + SMUGGLED, status: 400 },
  { name: 'chunk extensions over 16 KiB in total, each under the line limit', bytes: chunkedPost + `1;${'e'.repeat(3000)}\r\na\r\n`.repeat(8) + '0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'chunk extension with a bare CR', bytes: chunkedPost + '5;a=b\rc\r\nhello\r\n0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'chunk extension with NUL', bytes: chunkedPost + '5;a=\x00\r\nhello\r\n0\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'trailer line ended by a bare LF', bytes: chunkedPost + '5\r\nhello\r\n0\r\nX-T: 1\n\r\n' + SMUGGLED, status: 400 },
  { name: 'obs-fold in the trailer section', bytes: chunkedPost + '5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'invalid trailer field name', bytes: chunkedPost + '5\r\nhello\r\n0\r\nX(T): 1\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'Content-Length and Transfer-Encoding in the trailer section', bytes: chunkedPost + '5\r\nhello\r\n0\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n' + SMUGGLED, status: 400 },
  { name: 'last chunk without its final CRLF, a request as "trailers"', bytes: chunkedPost + '5\r\nhello\r\n0\r\n' + SMUGGLED, status: 400 },
];

/** Odd but legal: each must be forwarded exactly once with the right framing. */
interface LegalCase {
  readonly name: string;
  readonly bytes: string;
  readonly target: string;
  readonly body: string;
  /** The Host the upstream must see; null: the endpoint's address (no authority given). */
  readonly host: string | null;
}

const LEGAL_CASES: readonly LegalCase[] = [
  { name: 'TE with a tab as OWS ("Transfer-Encoding:\\tchunked")', bytes: `POST /${MARK}-l1 HTTP/1.1\r\n${H}Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, target: `/${MARK}-l1`, body: 'hello', host: 'skiff.test' },
  { name: 'TE in upper case', bytes: `POST /${MARK}-l2 HTTP/1.1\r\n${H}Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, target: `/${MARK}-l2`, body: 'hello', host: 'skiff.test' },
  { name: 'CL with leading zeros', bytes: `POST /${MARK}-l3 HTTP/1.1\r\n${H}Content-Length: 0005\r\n\r\nhello`, target: `/${MARK}-l3`, body: 'hello', host: 'skiff.test' },
  { name: 'CL repeated with the same value', bytes: `POST /${MARK}-l4 HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`, target: `/${MARK}-l4`, body: 'hello', host: 'skiff.test' },
  { name: 'empty lines before the request line', bytes: `\r\n\r\nGET /${MARK}-l5 HTTP/1.1\r\n${H}\r\n`, target: `/${MARK}-l5`, body: '', host: 'skiff.test' },
  { name: 'absolute-form: the target authority wins over Host', bytes: `GET http://other.test/${MARK}-l6 HTTP/1.1\r\n${H}\r\n`, target: `/${MARK}-l6`, body: '', host: 'other.test' },
  { name: 'chunk extension and trailers', bytes: `POST /${MARK}-l7 HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;name="v"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n`, target: `/${MARK}-l7`, body: 'hello', host: 'skiff.test' },
  { name: 'HTTP/1.0 without Host', bytes: `GET /${MARK}-l8 HTTP/1.0\r\n\r\n`, target: `/${MARK}-l8`, body: '', host: null },
  { name: 'IPv6 literal Host with a port', bytes: `GET /${MARK}-l9 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n`, target: `/${MARK}-l9`, body: '', host: '[::1]:8080' },
  { name: 'obs-text in a field value; OWS around values', bytes: `GET /${MARK}-l10 HTTP/1.1\r\nHost:skiff.test \t\r\nX-A: caf\xe9\r\n\r\n`, target: `/${MARK}-l10`, body: '', host: 'skiff.test' },
];

// ---- the test ------------------------------------------------------------------------------

interface Stats {
  arena: { live: number };
  engine: { inFlight: number };
}

describe('HTTP/1.1 hostile input end to end', { timeout: 90_000 }, () => {
  let up: RawRecordingUpstream;
  let skiff: SkiffProcess;
  let port = 0;
  let good: GoodClient;

  const stats = async (): Promise<Stats> => (await (await fetch(`http://127.0.0.1:${skiff.adminPort}/stats`)).json()) as Stats;
  const otherRequests = (): string[] => up.requests.filter((r) => !r.target.startsWith('/good/')).map((r) => `${r.method} ${r.target}`);

  before(async () => {
    up = await startRawRecordingUpstream();
    const [listen, admin] = await freePorts(2);
    port = listen;
    skiff = await startSkiff(`admin: { address: 127.0.0.1:${admin} }
limits: { maxHeaderBytes: ${MAX_HEADER_BYTES}, headersTimeout: ${HEADERS_TIMEOUT_MS}ms, requestBodyTimeout: ${BODY_TIMEOUT_MS}ms, keepAliveTimeout: 10s }
listeners:
  - { name: in, address: 127.0.0.1:${port}, protocols: [http1], routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app }
clusters:
  - { name: app, protocol: http1, endpoints: [127.0.0.1:${up.port}], maxBodyBytes: ${MAX_BODY} }
`);
    good = new GoodClient(port);
    good.start();
    await good.progressed('start');
  });

  after(async () => {
    await good?.stop();
    await skiff?.stop();
    await up?.close();
  });

  /** Sends one attack on a fresh socket; asserts the status, `connection: close` and the close. */
  async function attack(bytes: string, status: number): Promise<ParsedResponse> {
    const ex = await exchange(port, [bytes]);
    assert.ok(ex.isClosedByPeer, `the sidecar did not close the connection (got ${JSON.stringify(ex.text.slice(0, 200))})`);
    const responses = allResponses(ex.text);
    assert.equal(responses.length, 1, `one response, got ${responses.map((r) => r.status).join(', ')}`);
    const res = responses[0];
    assert.equal(res.status, status, `status ${res.status}: ${res.body}`);
    assert.deepEqual(res.headers.get('connection'), ['close']);
    return res;
  }

  describe('bad heads: 4xx, closed, nothing forwarded', () => {
    for (const c of HEAD_CASES) {
      it(c.name, async () => {
        assert.ok(c.bytes.includes(MARK), 'the case carries the marker');
        const bytesBefore = up.bytes();
        const otherBefore = otherRequests().length;
        await attack(c.bytes, c.status);
        await good.progressed(c.name);
        assert.equal(otherRequests().length, otherBefore, `forwarded: ${otherRequests().slice(otherBefore).join(', ')}`);
        assert.ok(!up.received().slice(bytesBefore).includes(MARK), 'no attack byte reached the upstream');
        assert.deepEqual(up.junk, []);
      });
    }
  });

  describe('bad chunked bodies: 400, closed, no complete request forwarded', () => {
    for (const c of BODY_CASES) {
      it(c.name, async () => {
        const bytesBefore = up.bytes();
        const otherBefore = otherRequests().length;
        await attack(c.bytes, c.status);
        await good.progressed(c.name);
        // The valid head may have been streamed on; the exchange must then be cut, not left
        // open on a connection that goes back to the pool.
        await waitFor('no half-sent request left open upstream', () => up.openPartials() === 0, 3000);
        assert.deepEqual(otherRequests().slice(otherBefore), [], 'no complete attack request reached the upstream');
        assert.ok(!up.received().slice(bytesBefore).includes(`${MARK}-smuggled`), 'the smuggled request never reached the upstream');
        assert.deepEqual(up.junk, []);
      });
    }
  });

  it('a bad chunk after the head and a good chunk went upstream: that upstream connection is closed, not reused', async () => {
    const s = net.connect(port, '127.0.0.1');
    let text = '';
    let isEnded = false;
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    s.on('end', () => {
      isEnded = true;
    });
    s.on('error', () => {});
    const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
    await new Promise<void>((resolve) => s.once('connect', () => resolve()));
    const bytesBefore = up.bytes();
    s.write(`POST /${MARK}-split HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`, 'latin1');
    await waitFor('the head and first chunk upstream', () => up.received().slice(bytesBefore).includes('hello'), 3000);
    const truncatedBefore = up.truncated.length;
    s.write(`zz\r\n${SMUGGLED}`, 'latin1');
    await Promise.race([closed, delay(5000)]);
    s.destroy();
    assert.ok(isEnded, 'the sidecar closed the connection');
    const responses = allResponses(text);
    assert.deepEqual(responses.map((r) => r.status), [400]);
    assert.deepEqual(responses[0].headers.get('connection'), ['close']);
    await waitFor('the upstream connection with the half request closed', () => up.truncated.length > truncatedBefore && up.openPartials() === 0, 3000);
    assert.equal(up.requests.filter((r) => r.target === `/${MARK}-split`).length, 0);
    assert.ok(!up.received().slice(bytesBefore).includes(`${MARK}-smuggled`));
    await good.progressed('bad chunk after forwarding');
  });

  describe('odd but legal requests are forwarded once, framed right', () => {
    for (const c of LEGAL_CASES) {
      it(c.name, async () => {
        const ex = await exchange(port, [c.bytes], { until: hasOneResponse });
        const responses = allResponses(ex.text);
        assert.equal(responses.length, 1);
        assert.equal(responses[0].status, 200, responses[0].body);
        assert.equal(responses[0].body, `up:${c.target}`);
        const seen = up.requests.filter((r) => r.target === c.target);
        assert.equal(seen.length, 1, `forwarded ${seen.length} times`);
        assert.equal(seen[0].body.toString('latin1'), c.body);
        const hosts = seen[0].headers.filter(([n]) => n.toLowerCase() === 'host').map(([, v]) => v);
        assert.deepEqual(hosts, [c.host ?? `127.0.0.1:${up.port}`]);
        await good.progressed(c.name);
      });
    }
  });

  describe('header size and count limits', () => {
    it(`a head just under maxHeaderBytes (${MAX_HEADER_BYTES}) is served`, async () => {
      const start = `GET /${MARK}-big-ok HTTP/1.1\r\n${H}X-Pad: `;
      const head = start + 'p'.repeat(MAX_HEADER_BYTES - start.length - 2) + '\r\n';
      assert.equal(head.length, MAX_HEADER_BYTES);
      const ex = await exchange(port, [head + '\r\n'], { until: hasOneResponse });
      assert.equal(allResponses(ex.text)[0].status, 200);
    });

    it('one field over maxHeaderBytes: 431, closed, nothing forwarded', async () => {
      const otherBefore = otherRequests().length;
      const res = await attack(`GET /${MARK} HTTP/1.1\r\n${H}X-Pad: ${'p'.repeat(MAX_HEADER_BYTES)}\r\n\r\n`, 431);
      assert.deepEqual(res.headers.get('x-skiff-error'), ['SKIFF_ERR_HEADERS_TOO_LARGE']);
      assert.equal(otherRequests().length, otherBefore);
      await good.progressed('431');
    });

    it('a head that never ends is cut at maxHeaderBytes with 431', async () => {
      const otherBefore = otherRequests().length;
      const ex = await exchange(port, [`GET /${MARK} HTTP/1.1\r\n${H}`, ...Array.from({ length: 10 }, (_, i) => `X-${i}: ${'v'.repeat(1000)}\r\n`)], { gapMs: 10 });
      assert.ok(ex.isClosedByPeer);
      assert.equal(allResponses(ex.text)[0].status, 431);
      assert.ok(ex.partsWritten < 11, `all ${ex.partsWritten} parts were read before the cut`);
      assert.equal(otherRequests().length, otherBefore);
      await good.progressed('endless head');
    });

    it(`${MAX_FIELDS} fields are served; ${MAX_FIELDS + 1} are 431`, async () => {
      const fields = (n: number): string => Array.from({ length: n - 1 }, (_, i) => `X-${i}: v\r\n`).join('');
      const ok = await exchange(port, [`GET /${MARK}-fields-ok HTTP/1.1\r\n${H}${fields(MAX_FIELDS)}\r\n`], { until: hasOneResponse });
      assert.equal(allResponses(ok.text)[0].status, 200);
      const otherBefore = otherRequests().length;
      const res = await attack(`GET /${MARK} HTTP/1.1\r\n${H}${fields(MAX_FIELDS + 1)}\r\n`, 431);
      assert.deepEqual(res.headers.get('x-skiff-error'), ['SKIFF_ERR_HEADERS_TOO_LARGE']);
      assert.equal(otherRequests().length, otherBefore);
      await good.progressed('too many fields');
    });
  });

  describe('slowloris', () => {
    const dripHead = `GET /${MARK}-drip HTTP/1.1\r\n${H}X-Slow: ${'s'.repeat(40)}\r\n\r\n`;

    it('a head dripped a byte every 100 ms on a new connection: 408 at headersTimeout, closed', async () => {
      const parts = dripHead.split('');
      const ex = await exchange(port, parts, { gapMs: 100, maxMs: 15_000 });
      assert.ok(ex.isClosedByPeer, 'the sidecar closed the connection');
      assert.equal(allResponses(ex.text)[0].status, 408);
      assert.ok(ex.ms >= HEADERS_TIMEOUT_MS - 100, `cut after ${ex.ms} ms, before the head timeout`);
      assert.ok(ex.partsWritten < parts.length, `the whole head (${parts.length} bytes) went in over ${ex.ms} ms`);
      assert.ok(!up.received().includes(`${MARK}-drip`));
      await good.progressed('head drip');
    });

    it('the same drip after a good request on a keep-alive connection is cut too', async () => {
      const first = `GET /${MARK}-ka HTTP/1.1\r\n${H}\r\n`;
      const parts = [first, ...dripHead.split('')];
      const ex = await exchange(port, parts, { gapMs: 100, maxMs: 15_000 });
      assert.ok(ex.isClosedByPeer);
      const responses = allResponses(ex.text);
      assert.deepEqual(responses.map((r) => r.status), [200, 408]);
      assert.ok(ex.partsWritten < parts.length);
      assert.ok(!up.received().includes(`${MARK}-drip`));
      await good.progressed('keep-alive head drip');
    });

    it('a body that keeps coming, slowly but within requestBodyTimeout, is not cut', async () => {
      const pieces = Array.from({ length: 10 }, (_, i) => `piece${i}|`);
      const body = pieces.join('');
      const parts = [`POST /${MARK}-steady HTTP/1.1\r\n${H}Content-Length: ${body.length}\r\n\r\n`, ...pieces];
      // 10 gaps of 250 ms: 2.5 s in all, over the 1.5 s body timeout, each gap far under it.
      const ex = await exchange(port, parts, { gapMs: 250, maxMs: 10_000 });
      const responses = allResponses(ex.text);
      assert.equal(responses[0]?.status, 200, ex.text.slice(0, 300));
      const seen = up.requests.filter((r) => r.target === `/${MARK}-steady`);
      assert.equal(seen.length, 1);
      assert.equal(seen[0].body.toString('latin1'), body);
      await good.progressed('steady body');
    });

    it('a body that stalls: 408, closed, the upstream never sees a complete request', async () => {
      const parts = [`POST /${MARK}-stall HTTP/1.1\r\n${H}Content-Length: 100\r\n\r\n`, 'x'.repeat(40)];
      const ex = await exchange(port, parts, { maxMs: 10_000 });
      assert.ok(ex.isClosedByPeer);
      const res = allResponses(ex.text);
      assert.equal(res[0].status, 408);
      assert.deepEqual(res[0].headers.get('connection'), ['close']);
      assert.ok(ex.ms >= BODY_TIMEOUT_MS - 100, `cut after ${ex.ms} ms`);
      assert.equal(up.requests.filter((r) => r.target === `/${MARK}-stall`).length, 0);
      await waitFor('the half-sent upstream request is cut', () => up.openPartials() === 0, 3000);
      await good.progressed('stalled body');
    });
  });

  describe('pipelining', () => {
    it('a good request then garbage in one write: 200, then 400 and close; the garbage is never forwarded', async () => {
      const ex = await exchange(port, [`GET /${MARK}-p1 HTTP/1.1\r\n${H}\r\nGARBAGE ${MARK}-junk\r\n\r\n`]);
      assert.ok(ex.isClosedByPeer);
      const responses = allResponses(ex.text);
      assert.deepEqual(responses.map((r) => r.status), [200, 400]);
      assert.equal(responses[0].body, `up:/${MARK}-p1`);
      assert.equal(up.requests.filter((r) => r.target === `/${MARK}-p1`).length, 1);
      assert.ok(!up.received().includes(`${MARK}-junk`));
      await good.progressed('pipelined garbage');
    });

    it('a good request then binary junk with no head end: 200, then 400 at once', async () => {
      const ex = await exchange(port, [`GET /${MARK}-p2 HTTP/1.1\r\n${H}\r\n\x00\x01\x02${MARK}-junk\xff`], { maxMs: 5000 });
      assert.ok(ex.isClosedByPeer);
      // 400, not 408: refused when the junk arrived, not when the head timeout ran out.
      assert.deepEqual(allResponses(ex.text).map((r) => r.status), [200, 400]);
      assert.ok(!up.received().includes(`${MARK}-junk`));
      await good.progressed('pipelined binary junk');
    });

    it('a good request then a CL.TE request: 200, then 400 and close', async () => {
      const ex = await exchange(port, [`GET /${MARK}-p3 HTTP/1.1\r\n${H}\r\n` + post('Content-Length: 6\r\nTransfer-Encoding: chunked\r\n').replace(`/${MARK} `, `/${MARK}-p3b `) + '0\r\n\r\nG' + SMUGGLED]);
      assert.ok(ex.isClosedByPeer);
      assert.deepEqual(allResponses(ex.text).map((r) => r.status), [200, 400]);
      assert.equal(up.requests.filter((r) => r.target.startsWith(`/${MARK}-p3`)).length, 1);
      assert.ok(!up.received().includes(`${MARK}-p3b`));
      assert.ok(!up.received().includes(`${MARK}-smuggled`));
      await good.progressed('pipelined CL.TE');
    });

    it('a request smuggled inside a Content-Length body is body, forwarded once; the connection stays in sync', async () => {
      const inner = `GET /${MARK}-inner HTTP/1.1\r\n${H}\r\n`;
      const s = net.connect(port, '127.0.0.1');
      let text = '';
      s.on('data', (d: Buffer) => {
        text += d.toString('latin1');
      });
      s.on('error', () => {});
      await new Promise<void>((resolve) => s.once('connect', () => resolve()));
      s.write(`POST /${MARK}-outer HTTP/1.1\r\n${H}Content-Length: ${inner.length}\r\n\r\n${inner}`, 'latin1');
      await waitFor('the outer response', () => takeResponse(text) !== null, 3000);
      s.write(`GET /${MARK}-after HTTP/1.1\r\n${H}\r\n`, 'latin1');
      await waitFor('the second response', () => {
        const r = takeResponse(text);
        return r !== null && takeResponse(r.rest) !== null;
      }, 3000);
      s.destroy();
      assert.deepEqual(allResponses(text).map((r) => `${r.status} ${r.body}`), [`200 up:/${MARK}-outer`, `200 up:/${MARK}-after`]);
      const outer = up.requests.filter((r) => r.target === `/${MARK}-outer`);
      assert.equal(outer.length, 1);
      assert.equal(outer[0].body.toString('latin1'), inner);
      assert.equal(up.requests.filter((r) => r.target === `/${MARK}-inner`).length, 0);
      await good.progressed('smuggled in a body');
    });

    it('three good requests in one write (GET, POST with CL, chunked POST) are answered in order', async () => {
      const bytes =
        `GET /${MARK}-q1 HTTP/1.1\r\n${H}\r\n` +
        `POST /${MARK}-q2 HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nabc` +
        `POST /${MARK}-q3 HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n` +
        `GET /${MARK}-q4 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`;
      const ex = await exchange(port, [bytes]);
      assert.ok(ex.isClosedByPeer);
      assert.deepEqual(allResponses(ex.text).map((r) => `${r.status} ${r.body}`), [1, 2, 3, 4].map((i) => `200 up:/${MARK}-q${i}`));
      const seen = up.requests.filter((r) => r.target.startsWith(`/${MARK}-q`));
      assert.deepEqual(seen.map((r) => `${r.target} ${r.body.toString('latin1')}`), [`/${MARK}-q1 `, `/${MARK}-q2 abc`, `/${MARK}-q3 de`, `/${MARK}-q4 `]);
      await good.progressed('pipelined good requests');
    });

    it('a request refused up front (413 on the declared length) closes; its body is never read as a request', async () => {
      const bytesBefore = up.bytes();
      const ex = await exchange(port, [`POST /${MARK}-big HTTP/1.1\r\n${H}Content-Length: ${MAX_BODY + 1}\r\n\r\n${SMUGGLED}`]);
      assert.ok(ex.isClosedByPeer);
      const responses = allResponses(ex.text);
      assert.deepEqual(responses.map((r) => r.status), [413]);
      assert.deepEqual(responses[0].headers.get('connection'), ['close']);
      assert.ok(!up.received().slice(bytesBefore).includes(MARK));
      await good.progressed('413 with a smuggled body');
    });

    it('framing fields sent as trailers are dropped, not forwarded; the next request stays in sync', async () => {
      const bytes =
        `POST /${MARK}-tr HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n` +
        `Content-Length: 50\r\nHost: evil.test\r\nTrailer: X-T\r\nX-T: 1\r\n\r\n` +
        `GET /${MARK}-tr2 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`;
      const ex = await exchange(port, [bytes]);
      assert.deepEqual(allResponses(ex.text).map((r) => `${r.status} ${r.body}`), [`200 up:/${MARK}-tr`, `200 up:/${MARK}-tr2`]);
      const seen = up.requests.filter((r) => r.target === `/${MARK}-tr`);
      assert.equal(seen.length, 1);
      assert.equal(seen[0].body.toString('latin1'), 'hello');
      assert.deepEqual(seen[0].trailers, [['X-T', '1']]);
      assert.equal(up.requests.filter((r) => r.target === `/${MARK}-tr2`).length, 1);
      await good.progressed('forbidden trailers');
    });

    it('a request after "Connection: close" is never read', async () => {
      const ex = await exchange(port, [`GET /${MARK}-c1 HTTP/1.1\r\n${H}Connection: close\r\n\r\nGET /${MARK}-c2 HTTP/1.1\r\n${H}\r\n`]);
      assert.ok(ex.isClosedByPeer);
      assert.deepEqual(allResponses(ex.text).map((r) => r.status), [200]);
      assert.ok(!up.received().includes(`${MARK}-c2`));
      await good.progressed('after close');
    });
  });

  it('afterwards: the sidecar is up, the neighbour never failed, every context is back', async () => {
    await good.progressed('the end');
    await good.stop();
    assert.deepEqual(good.errors, []);
    assert.equal(good.reconnects, 0);
    assert.ok(good.ok > HEAD_CASES.length, `only ${good.ok} good answers`);
    assert.equal(skiff.pid > 0 && (await Promise.race([skiff.exited.then(() => 'exited'), delay(10).then(() => 'running')])), 'running');
    await waitFor('arena.live and engine.inFlight back to 0', async () => {
      const s = await stats();
      return s.arena.live === 0 && s.engine.inFlight === 0;
    }, 5000);
    assert.deepEqual(up.junk, []);
    assert.ok(!up.received().includes(`${MARK}-smuggled`));
    assert.doesNotMatch(skiff.stderr(), /TypeError|RangeError|ReferenceError|at .*\.js:\d+/);
  });
});
