/**
 * Skiff's strict HTTP/1.1 head parser and chunked-body decoder (RFC 9112), shared by the
 * listener codec (requests) and the upstream codec (responses).
 *
 * Strictness is the point: everything a request-smuggling attack needs ambiguity for is an
 * error here, never "repaired": bare CR or LF, obs-fold, whitespace before a colon, invalid
 * token characters, control characters in values, conflicting or malformed Content-Length,
 * Content-Length together with Transfer-Encoding, any transfer coding other than a final
 * `chunked`, oversized chunk-size lines. Errors are returned as values (a ParseError code
 * and message), never thrown: a hostile peer must not make the hot path unwind.
 *
 * Headers come out as a flat [name, value, ...] list of latin1 strings sliced from one
 * decoded head string (V8 slices share the parent's storage: no copy per field).
 */

/** Token characters (RFC 9110 §5.6.2): 1 where allowed. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) TCHAR[c] = 1;
for (let c = 65; c <= 90; c++) TCHAR[c] = 1;
for (let c = 97; c <= 122; c++) TCHAR[c] = 1;

/** Characters never allowed anywhere in a head, plus CR or LF not part of a CRLF pair. */
const INVALID_HEAD = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n/;

/**
 * Characters of a `uri-host` that is a reg-name or an IPv4 address (RFC 3986 §3.2.2):
 * unreserved, sub-delims and `%` of pct-encoded; 1 where allowed. Everything a URL parser
 * might read as the end of the host or the start of userinfo (`@ / \ ? # [ ]` and space) is out.
 */
const REG_NAME = new Uint8Array(128);
for (const c of "-._~!$&'()*+,;=%") REG_NAME[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) REG_NAME[c] = 1;
for (let c = 65; c <= 90; c++) REG_NAME[c] = 1;
for (let c = 97; c <= 122; c++) REG_NAME[c] = 1;

/**
 * Is `s` a valid `uri-host [ ":" port ]` (RFC 9110 §7.2: the Host field, and the authority of an
 * absolute-form target), with no userinfo? An IP-literal is `[` hex, `:`, `.` or reg-name
 * characters `]`. The empty string passes (an empty Host is allowed); callers that need a host
 * check the length. A Host the upstream would read differently from the router (a space, a
 * path, `user@`) must be refused: RFC 9112 §3.2 makes that a 400.
 */
export function isValidAuthority(s: string): boolean {
  const len = s.length;
  let i = 0;
  if (len > 0 && s.charCodeAt(0) === 91 /* [ */) {
    const close = s.indexOf(']');
    if (close < 2) return false;
    for (i = 1; i < close; i++) {
      const c = s.charCodeAt(i);
      if (c >= 128 || (REG_NAME[c] === 0 && c !== 58 /* : */)) return false;
    }
    i = close + 1;
  } else {
    for (; i < len; i++) {
      const c = s.charCodeAt(i);
      if (c === 58 /* : */) break;
      if (c >= 128 || REG_NAME[c] === 0) return false;
    }
  }
  if (i === len) return true;
  if (s.charCodeAt(i) !== 58 || len - i - 1 > 5) return false;
  for (i++; i < len; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/**
 * Does a request head still arriving (no blank line yet) already hold something INVALID_HEAD
 * refuses once it is whole: a control character, a bare LF, a CR followed by anything but LF?
 * The listener asks this of each partial head so that a head that can never become valid (bare
 * LF line ends, binary junk, a TLS ClientHello on a cleartext port) is answered 400 at once,
 * not 408 after the head timeout (e2e: test/e2e/h1-hostile.test.ts, "bare LF line ends
 * throughout"). `start` is where the head begins; `from` (>= start) where the unchecked bytes
 * begin: pass the previous length minus one so a CR that ended the last read is checked
 * against the byte after it. A CR as the very last byte waits for the next read.
 */
export function hasInvalidHeadByte(buf: Buffer, start: number, from: number): boolean {
  const len = buf.length;
  for (let i = from; i < len; i++) {
    const c = buf[i];
    if ((c >= 32 && c !== 127) || c === 9) continue;
    if (c === 13) {
      if (i + 1 < len && buf[i + 1] !== 10) return true;
      continue;
    }
    if (c === 10 && i > start && buf[i - 1] === 13) continue;
    return true;
  }
  return false;
}

export function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || TCHAR[c] === 0) return false;
  }
  return true;
}

export const enum ParseErrorKind {
  BadRequest = 0,
  HeadersTooLarge = 1,
  Unsupported = 2,
  /** The head did not arrive within the head timeout (408). */
  Timeout = 3,
}

export class ParseError {
  readonly kind: ParseErrorKind;
  readonly message: string;
  constructor(kind: ParseErrorKind, message: string) {
    this.kind = kind;
    this.message = message;
  }
}

/** Framing facts both heads share. */
export class MessageFraming {
  /** Declared body length; -1 when there is no Content-Length. */
  contentLength: number;
  isChunked: boolean;
  /** `Connection: close` seen (or HTTP/1.0 without keep-alive). */
  isClose: boolean;
  constructor() {
    this.contentLength = -1;
    this.isChunked = false;
    this.isClose = false;
  }
}

export class RequestHead extends MessageFraming {
  method: string;
  target: string;
  /** 11 for HTTP/1.1, 10 for HTTP/1.0. */
  version: number;
  rawHeaders: string[];
  host: string | null;
  /** The first x-request-id value, found in the same pass as Host (no second scan). */
  requestId: string | null;
  isExpectContinue: boolean;
  constructor() {
    super();
    this.method = '';
    this.target = '';
    this.version = 11;
    this.rawHeaders = [];
    this.host = null;
    this.requestId = null;
    this.isExpectContinue = false;
  }
}

export class ResponseHead extends MessageFraming {
  status: number;
  version: number;
  rawHeaders: string[];
  constructor() {
    super();
    this.status = 0;
    this.version = 11;
    this.rawHeaders = [];
  }
}

/** ASCII case-insensitive equality with a lower-case literal. */
export function eqLower(s: string, lower: string): boolean {
  if (s.length !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) c |= 0x20;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

function trimOws(s: string, from: number): string {
  let a = from;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return s.slice(a, b);
}

function isDigits(s: string): boolean {
  if (s.length === 0 || s.length > 15) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** Does a comma-separated field value contain `token` (case-insensitive)? */
export function hasToken(value: string, token: string): boolean {
  let start = 0;
  while (start <= value.length) {
    let end = value.indexOf(',', start);
    if (end < 0) end = value.length;
    let a = start;
    let b = end;
    while (a < b && (value.charCodeAt(a) === 32 || value.charCodeAt(a) === 9)) a++;
    while (b > a && (value.charCodeAt(b - 1) === 32 || value.charCodeAt(b - 1) === 9)) b--;
    if (b - a === token.length && eqLower(value.slice(a, b), token)) return true;
    start = end + 1;
  }
  return false;
}

/**
 * Why a Transfer-Encoding other than exactly `chunked` is refused. RFC 9112 §6.3: when chunked
 * is not the final coding the body length cannot be known, so the answer MUST be 400 and close
 * (`xchunked`, `chunked, identity`, `gzip`, `"chunked"`, `chunked;q=1`); so is chunked applied
 * twice (§7). Only a list that does end in chunked names a coding we do not implement: 501
 * (§6.1). Until e2e test/e2e/h1-hostile.test.ts ("TE: xchunked"), all of these were 501.
 */
function transferCodingError(value: string): ParseError {
  let last = '';
  let hasEarlierChunked = false;
  let start = 0;
  while (start <= value.length) {
    let end = value.indexOf(',', start);
    if (end < 0) end = value.length;
    const coding = trimOws(value.slice(start, end), 0);
    if (coding.length > 0) {
      if (eqLower(last, 'chunked')) hasEarlierChunked = true;
      last = coding;
    }
    start = end + 1;
  }
  if (!eqLower(last, 'chunked') || hasEarlierChunked) return new ParseError(ParseErrorKind.BadRequest, 'transfer-encoding does not end in a single chunked');
  return new ParseError(ParseErrorKind.Unsupported, 'only transfer-encoding: chunked is supported');
}

/**
 * Parses the header lines of `head` from `pos` (just after the start line's CRLF) into
 * `msg.rawHeaders`, applying the framing rules. Returns null or the first error.
 */
function parseFields(head: string, pos: number, msg: MessageFraming, raw: string[], maxFields: number): ParseError | null {
  let sawCl = false;
  let sawTe = false;
  const len = head.length;
  while (pos < len) {
    let eol = head.indexOf('\r\n', pos);
    if (eol < 0) eol = len;
    const first = head.charCodeAt(pos);
    if (first === 32 || first === 9) return new ParseError(ParseErrorKind.BadRequest, 'obsolete line folding is not accepted');
    const colon = head.indexOf(':', pos);
    if (colon < 0 || colon >= eol) return new ParseError(ParseErrorKind.BadRequest, 'header line without a colon');
    const name = head.slice(pos, colon);
    if (!isToken(name)) return new ParseError(ParseErrorKind.BadRequest, 'invalid header name');
    const value = trimOws(head.slice(colon + 1, eol), 0);
    if (raw.length >= maxFields * 2) return new ParseError(ParseErrorKind.HeadersTooLarge, `more than ${maxFields} header fields`);
    raw.push(name, value);
    switch (name.length) {
      case 14:
        if (eqLower(name, 'content-length')) {
          if (!isDigits(value)) return new ParseError(ParseErrorKind.BadRequest, 'invalid content-length');
          const n = Number(value);
          if (sawCl && n !== msg.contentLength) return new ParseError(ParseErrorKind.BadRequest, 'conflicting content-length fields');
          sawCl = true;
          msg.contentLength = n;
        }
        break;
      case 17:
        if (eqLower(name, 'transfer-encoding')) {
          if (sawTe) return new ParseError(ParseErrorKind.BadRequest, 'repeated transfer-encoding');
          sawTe = true;
          if (!eqLower(value, 'chunked')) return transferCodingError(value);
          msg.isChunked = true;
        }
        break;
      case 10:
        if (eqLower(name, 'connection') && hasToken(value, 'close')) msg.isClose = true;
        break;
      default:
        break;
    }
    pos = eol + 2;
  }
  if (sawCl && sawTe) return new ParseError(ParseErrorKind.BadRequest, 'content-length together with transfer-encoding');
  return null;
}

export interface HeadLimits {
  readonly maxFields: number;
}

/**
 * Parses a request head: `head` is the latin1 text up to, not including, the blank line's
 * CRLFCRLF. Returns the head or a ParseError.
 */
export function parseRequestHead(head: string, limits: HeadLimits): RequestHead | ParseError {
  if (INVALID_HEAD.test(head)) return new ParseError(ParseErrorKind.BadRequest, 'invalid characters or bare CR/LF in the request head');
  let lineEnd = head.indexOf('\r\n');
  if (lineEnd < 0) lineEnd = head.length;
  const sp1 = head.indexOf(' ');
  const sp2 = sp1 < 0 ? -1 : head.indexOf(' ', sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || sp2 >= lineEnd || sp2 === sp1 + 1) return new ParseError(ParseErrorKind.BadRequest, 'invalid request line');
  const req = new RequestHead();
  const method = head.slice(0, sp1);
  if (!isToken(method)) return new ParseError(ParseErrorKind.BadRequest, 'invalid method');
  const version = head.slice(sp2 + 1, lineEnd);
  if (version === 'HTTP/1.1') req.version = 11;
  else if (version === 'HTTP/1.0') req.version = 10;
  else return new ParseError(ParseErrorKind.BadRequest, 'unsupported HTTP version');
  req.method = method;
  req.target = head.slice(sp1 + 1, sp2);
  const raw = req.rawHeaders;
  let hostCount = 0;
  let keepAlive10 = false;
  const err = parseFields(head, lineEnd + 2, req, raw, limits.maxFields);
  if (err !== null) return err;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.length === 4 && eqLower(name, 'host')) {
      hostCount++;
      req.host = raw[i + 1];
    } else if (name.length === 12 && req.requestId === null && eqLower(name, 'x-request-id')) {
      req.requestId = raw[i + 1];
    } else if (name.length === 6 && eqLower(name, 'expect')) {
      if (eqLower(raw[i + 1], '100-continue')) req.isExpectContinue = true;
    } else if (req.version === 10 && name.length === 10 && eqLower(name, 'connection') && hasToken(raw[i + 1], 'keep-alive')) {
      keepAlive10 = true;
    }
  }
  if (hostCount > 1) return new ParseError(ParseErrorKind.BadRequest, 'more than one host field');
  if (hostCount === 0 && req.version === 11) return new ParseError(ParseErrorKind.BadRequest, 'missing host field');
  if (req.host !== null && !isValidAuthority(req.host)) return new ParseError(ParseErrorKind.BadRequest, 'invalid host field');
  if (req.version === 10) {
    if (req.isChunked) return new ParseError(ParseErrorKind.BadRequest, 'transfer-encoding in an HTTP/1.0 request');
    if (!keepAlive10) req.isClose = true;
  }
  const t = req.target.charCodeAt(0);
  if (req.method === 'CONNECT') {
    // authority-form; the engine refuses CONNECT with 405.
  } else if (t !== 47 /* / */ && req.target !== '*') {
    if (!req.target.startsWith('http://') && !req.target.startsWith('https://')) return new ParseError(ParseErrorKind.BadRequest, 'invalid request target');
    // absolute-form: the authority (up to the first `/`, as H1ServerConn.startRequest splits it)
    // becomes the routed and forwarded Host, so it must be a plain host[:port]: no userinfo
    // (`http://user@host/`), no `#@` or `\@` tricks, not empty (RFC 9110 §4.2.1, §4.2.4).
    const from = req.target.indexOf('://') + 3;
    const slash = req.target.indexOf('/', from);
    const authority = req.target.slice(from, slash < 0 ? req.target.length : slash);
    if (authority.length === 0 || !isValidAuthority(authority)) return new ParseError(ParseErrorKind.BadRequest, 'invalid authority in the request target');
  }
  return req;
}

/** Parses a response head (status line and fields) the same strict way. */
export function parseResponseHead(head: string, limits: HeadLimits): ResponseHead | ParseError {
  if (INVALID_HEAD.test(head)) return new ParseError(ParseErrorKind.BadRequest, 'invalid characters or bare CR/LF in the response head');
  let lineEnd = head.indexOf('\r\n');
  if (lineEnd < 0) lineEnd = head.length;
  // HTTP/1.x SP 3DIGIT SP [reason]
  if (lineEnd < 12 || head.charCodeAt(8) !== 32 || !head.startsWith('HTTP/1.')) return new ParseError(ParseErrorKind.BadRequest, 'invalid status line');
  const minor = head.charCodeAt(7);
  const res = new ResponseHead();
  if (minor === 49) res.version = 11;
  else if (minor === 48) res.version = 10;
  else return new ParseError(ParseErrorKind.BadRequest, 'unsupported HTTP version');
  const d0 = head.charCodeAt(9) - 48;
  const d1 = head.charCodeAt(10) - 48;
  const d2 = head.charCodeAt(11) - 48;
  if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return new ParseError(ParseErrorKind.BadRequest, 'invalid status code');
  if (lineEnd > 12 && head.charCodeAt(12) !== 32) return new ParseError(ParseErrorKind.BadRequest, 'invalid status line');
  res.status = d0 * 100 + d1 * 10 + d2;
  const err = parseFields(head, lineEnd + 2, res, res.rawHeaders, limits.maxFields);
  if (err !== null) return err;
  if (res.version === 10) {
    let keepAlive = false;
    const raw = res.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i].length === 10 && eqLower(raw[i], 'connection') && hasToken(raw[i + 1], 'keep-alive')) keepAlive = true;
    }
    if (!keepAlive) res.isClose = true;
  }
  return res;
}

// ---- chunked bodies -----------------------------------------------------------------------

export const enum ChunkState {
  Size = 0,
  Data = 1,
  DataCr = 2,
  DataLf = 3,
  Trailers = 4,
  Done = 5,
  Failed = 6,
}

/** What the decoder reports; implemented by the codecs (one implementer each). */
export interface ChunkSink {
  onChunkData(data: Buffer): void;
  onChunkTrailers(rawTrailers: string[]): void;
  onChunkEnd(): void;
}

const MAX_SIZE_LINE = 4096;
/**
 * Chunk-extension bytes allowed in one body, all chunks together. Extensions are read and
 * dropped, so without a total they let a client stream without end while its body never grows
 * toward maxBodyBytes (Node's CVE-2024-22019; Node allows 16 KiB too). e2e:
 * test/e2e/h1-hostile.test.ts "chunk extensions over 16 KiB in total".
 */
const MAX_EXTENSION_BYTES = 16384;
const MAX_TRAILER_BYTES = 16384;

/**
 * Incremental chunked decoder. `feed` consumes from `buf[start..]` and returns how many bytes
 * belonged to the body (the rest belongs to the next message), or -1 on a framing error
 * (`error` says which). Data is handed on as subarrays of the input: no copies.
 */
export class ChunkedDecoder {
  state: ChunkState;
  private remaining: number;
  private line: string;
  /** Chunk-extension bytes seen in this body (MAX_EXTENSION_BYTES). */
  private extensionBytes: number;
  error: string;

  constructor() {
    this.state = ChunkState.Size;
    this.remaining = 0;
    this.line = '';
    this.extensionBytes = 0;
    this.error = '';
  }

  reset(): void {
    this.state = ChunkState.Size;
    this.remaining = 0;
    this.line = '';
    this.extensionBytes = 0;
    this.error = '';
  }

  feed(buf: Buffer, start: number, sink: ChunkSink): number {
    let i = start;
    const len = buf.length;
    while (i < len) {
      switch (this.state) {
        case ChunkState.Size: {
          const lf = buf.indexOf(10, i);
          const end = lf < 0 ? len : lf + 1;
          this.line += buf.toString('latin1', i, end);
          i = end;
          if (this.line.length > MAX_SIZE_LINE) return this.fail('chunk size line too long');
          if (lf < 0) break;
          const line = this.line;
          this.line = '';
          if (line.length < 3 || line.charCodeAt(line.length - 2) !== 13) return this.fail('chunk size line without CRLF');
          const semi = line.indexOf(';');
          const hexEnd = semi < 0 ? line.length - 2 : semi;
          const hex = line.slice(0, hexEnd);
          if (hex.length === 0 || hex.length > 12 || !/^[0-9a-fA-F]+$/.test(hex)) return this.fail('invalid chunk size');
          if (semi >= 0) {
            if (/[\x00-\x08\x0a-\x1f\x7f]/.test(line.slice(semi, line.length - 2))) return this.fail('invalid chunk extension');
            this.extensionBytes += line.length - 2 - semi;
            if (this.extensionBytes > MAX_EXTENSION_BYTES) return this.fail('chunk extensions too large');
          }
          const size = parseInt(hex, 16);
          if (size === 0) {
            this.state = ChunkState.Trailers;
          } else {
            this.remaining = size;
            this.state = ChunkState.Data;
          }
          break;
        }
        case ChunkState.Data: {
          const n = Math.min(this.remaining, len - i);
          sink.onChunkData(i === 0 && n === len ? buf : buf.subarray(i, i + n));
          i += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = ChunkState.DataCr;
          break;
        }
        case ChunkState.DataCr:
          if (buf[i] !== 13) return this.fail('chunk data not followed by CRLF');
          i++;
          this.state = ChunkState.DataLf;
          break;
        case ChunkState.DataLf:
          if (buf[i] !== 10) return this.fail('chunk data not followed by CRLF');
          i++;
          this.state = ChunkState.Size;
          break;
        case ChunkState.Trailers: {
          // Trailer section: lines until an empty line. Collected as text, then parsed.
          const lf = buf.indexOf(10, i);
          const end = lf < 0 ? len : lf + 1;
          this.line += buf.toString('latin1', i, end);
          i = end;
          if (this.line.length > MAX_TRAILER_BYTES) return this.fail('trailer section too large');
          if (lf < 0) break;
          const text = this.line;
          if (!text.endsWith('\r\n')) return this.fail('trailer line without CRLF');
          if (text.length === 2 || text.endsWith('\r\n\r\n')) {
            this.line = '';
            const body = text.length === 2 ? '' : text.slice(0, text.length - 4);
            if (body.length > 0) {
              const trailers = parseTrailers(body);
              if (trailers === null) return this.fail('invalid trailer section');
              sink.onChunkTrailers(trailers);
            }
            this.state = ChunkState.Done;
            sink.onChunkEnd();
            return i - start;
          }
          break;
        }
        default:
          return i - start;
      }
    }
    return i - start;
  }

  private fail(message: string): number {
    this.state = ChunkState.Failed;
    this.error = message;
    return -1;
  }
}

function parseTrailers(text: string): string[] | null {
  if (INVALID_HEAD.test(text)) return null;
  const raw: string[] = [];
  const framing = new MessageFraming();
  const err = parseFields(text, 0, framing, raw, 100);
  if (err !== null) return null;
  // Framing fields are not allowed in trailers; drop them rather than forward them.
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i];
    if (eqLower(n, 'content-length') || eqLower(n, 'transfer-encoding') || eqLower(n, 'host') || eqLower(n, 'trailer')) continue;
    out.push(n, raw[i + 1]);
  }
  return out;
}
