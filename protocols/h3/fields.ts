/**
 * Validation of decoded HTTP/3 field sections (RFC 9114 §4.2, §4.3, §4.4; RFC 9110 §5.1, §5.5,
 * §8.6). A section failing these rules is *malformed*: a stream error H3_MESSAGE_ERROR (§4.1.2),
 * which a server may precede with a 400 response. The request layer calls these after QPACK
 * decoding (MessageReader does by default); they fill a reusable FieldInfo with what they had
 * to look at anyway (pseudo-header values, Content-Length), so nobody scans the list twice.
 *
 * Rules enforced:
 *  - names: non-empty, RFC 9110 token characters, no upper case (§4.2);
 *  - values: no NUL, CR, LF or other control characters except HTAB, no leading or trailing
 *    SP/HTAB (RFC 9110 §5.5; the same bytes the HTTP/1.1 parser refuses, so nothing that
 *    passes here can smuggle a line break into an HTTP/1.1 upstream);
 *  - connection-specific fields (connection, keep-alive, proxy-connection, transfer-encoding,
 *    upgrade) are malformed; `te` only in requests and only as "trailers" (§4.2);
 *  - pseudo-header fields: only the defined ones, each at most once, all before regular fields,
 *    none in trailers, request ones only in requests and :status only in responses (§4.3);
 *  - requests: :method, :scheme and a non-empty :path exactly once, except CONNECT (only
 *    :authority) and extended CONNECT (RFC 9220: :protocol plus all four); :authority or host
 *    for http/https, equal when both are present, without userinfo (§4.3.1); :method a token,
 *    :scheme RFC 3986 syntax, :path / :authority / host visible ASCII only (they end up on an
 *    HTTP/1.1 request line, where a space or obs-text would be a smuggling vector);
 *  - responses: exactly one :status of three digits, 101 refused (HTTP/3 has no Upgrade, §4.5);
 *  - Content-Length: digits only, every occurrence identical (RFC 9110 §8.6).
 */

import { H3Error, H3_MESSAGE_ERROR } from './frames.js';

/** What validation learned about a section. Reused: `reset()` before each section. */
export class FieldInfo {
  method: string;
  scheme: string;
  authority: string;
  path: string;
  /** Extended CONNECT protocol (RFC 9220), '' if absent. */
  protocol: string;
  /** Host header value, '' if absent. */
  host: string;
  /** Response status, -1 for requests. */
  status: number;
  /** Declared Content-Length, -1 if absent. */
  contentLength: number;
  constructor() {
    this.method = '';
    this.scheme = '';
    this.authority = '';
    this.path = '';
    this.protocol = '';
    this.host = '';
    this.status = -1;
    this.contentLength = -1;
  }

  reset(): void {
    this.method = '';
    this.scheme = '';
    this.authority = '';
    this.path = '';
    this.protocol = '';
    this.host = '';
    this.status = -1;
    this.contentLength = -1;
  }

  /** A classic CONNECT (tunnel): only DATA may follow the header section. */
  get isConnect(): boolean {
    return this.method === 'CONNECT' && this.protocol === '';
  }
}

/** Lower-case token characters (RFC 9110 §5.6.2 minus A-Z): 1 where allowed in a field name. */
const NAME_CHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~") NAME_CHAR[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) NAME_CHAR[c] = 1;
for (let c = 97; c <= 122; c++) NAME_CHAR[c] = 1;

/** Token characters including upper case (methods are case-sensitive tokens). */
const TOKEN_CHAR = NAME_CHAR.slice();
for (let c = 65; c <= 90; c++) TOKEN_CHAR[c] = 1;

function isToken(s: string): boolean {
  const n = s.length;
  if (n === 0) return false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || TOKEN_CHAR[c] === 0) return false;
  }
  return true;
}

/** A valid regular (non-pseudo) HTTP/3 field name: a lower-case token. */
export function isValidFieldName(name: string): boolean {
  const n = name.length;
  if (n === 0) return false;
  for (let i = 0; i < n; i++) {
    const c = name.charCodeAt(i);
    if (c >= 128 || NAME_CHAR[c] === 0) return false;
  }
  return true;
}

/**
 * A valid field value: VCHAR, obs-text (0x80-0xff), SP and HTAB, without leading or trailing
 * whitespace. Empty is valid.
 */
export function isValidFieldValue(value: string): boolean {
  const n = value.length;
  if (n === 0) return true;
  let c = value.charCodeAt(0);
  if (c === 0x20 || c === 0x09) return false;
  c = value.charCodeAt(n - 1);
  if (c === 0x20 || c === 0x09) return false;
  for (let i = 0; i < n; i++) {
    c = value.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f || c > 0xff) return false;
  }
  return true;
}

function malformed(message: string): H3Error {
  return new H3Error(H3_MESSAGE_ERROR, message, false);
}

/** Connection-specific fields (RFC 9114 §4.2; RFC 9110 §7.6.1). `te` is handled apart. */
function isConnectionSpecific(name: string): boolean {
  switch (name) {
    case 'connection':
    case 'keep-alive':
    case 'proxy-connection':
    case 'transfer-encoding':
    case 'upgrade':
      return true;
    default:
      return false;
  }
}

/** Parses one Content-Length value into info (all occurrences must agree). */
function checkContentLength(value: string, info: FieldInfo): H3Error | null {
  const n = value.length;
  if (n === 0 || n > 15) return malformed(`invalid content-length "${value}"`);
  let v = 0;
  for (let i = 0; i < n; i++) {
    const c = value.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return malformed(`invalid content-length "${value}"`);
    v = v * 10 + c;
  }
  if (info.contentLength >= 0 && info.contentLength !== v) return malformed('conflicting content-length values');
  info.contentLength = v;
  return null;
}

/**
 * Checks the regular fields from index `start` on (pseudo-header fields there are out of
 * order), shared by the three section kinds.
 */
function checkRegularFields(fields: readonly string[], start: number, info: FieldInfo, isRequest: boolean): H3Error | null {
  const n = fields.length;
  for (let i = start; i < n; i += 2) {
    const name = fields[i];
    const value = fields[i + 1];
    if (name.length > 0 && name.charCodeAt(0) === 0x3a) {
      return malformed(`pseudo-header field ${name} after a regular field`);
    }
    if (!isValidFieldName(name)) return malformed(`invalid field name "${name}"`);
    if (!isValidFieldValue(value)) return malformed(`invalid value for field ${name}`);
    if (isConnectionSpecific(name)) return malformed(`connection-specific field ${name}`);
    switch (name) {
      case 'te':
        if (!isRequest || value.toLowerCase() !== 'trailers') return malformed(`te: ${value} is not allowed`);
        break;
      case 'content-length': {
        const err = checkContentLength(value, info);
        if (err !== null) return err;
        break;
      }
      case 'host':
        if (info.host !== '' && info.host !== value) return malformed('conflicting host fields');
        info.host = value;
        break;
      default:
        break;
    }
  }
  return null;
}

/**
 * A request-target part safe to put on an HTTP/1.1 request line: visible ASCII only (no SP,
 * HTAB, controls or obs-text). A space in :path would otherwise split the request line.
 */
function isVisibleAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

/** RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). */
function isScheme(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i) | 0x20; // fold case for letters
    const isAlpha = c >= 0x61 && c <= 0x7a;
    if (i === 0 ? !isAlpha : !isAlpha && !(c >= 0x30 && c <= 0x39) && c !== 0x2b && c !== 0x2d && c !== 0x2e) {
      return false;
    }
  }
  return true;
}

function isHttpScheme(scheme: string): boolean {
  return scheme === 'https' || scheme === 'http';
}

/** Options for request validation. */
export interface RequestValidationOptions {
  /** We sent SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 9220): :protocol is allowed. */
  isExtendedConnectEnabled?: boolean;
}

/**
 * Validates a request header section (`fields` = [name, value, ...]) and fills `info`.
 * Returns null, or an H3_MESSAGE_ERROR stream error saying what is malformed.
 */
export function validateRequestFields(
  fields: readonly string[],
  info: FieldInfo,
  options: RequestValidationOptions = {},
): H3Error | null {
  info.reset();
  if ((fields.length & 1) !== 0) return malformed('odd field list');
  let i = 0;
  let seen = 0; // bit per pseudo-header: method 1, scheme 2, authority 4, path 8, protocol 16
  const n = fields.length;
  for (; i < n; i += 2) {
    const name = fields[i];
    if (name.length === 0 || name.charCodeAt(0) !== 0x3a) break;
    const value = fields[i + 1];
    if (!isValidFieldValue(value)) return malformed(`invalid value for ${name}`);
    let bit: number;
    switch (name) {
      case ':method':
        bit = 1;
        info.method = value;
        break;
      case ':scheme':
        bit = 2;
        info.scheme = value;
        break;
      case ':authority':
        bit = 4;
        info.authority = value;
        break;
      case ':path':
        bit = 8;
        info.path = value;
        break;
      case ':protocol':
        if (options.isExtendedConnectEnabled !== true) return malformed(':protocol without extended CONNECT');
        bit = 16;
        info.protocol = value;
        break;
      case ':status':
        return malformed(':status in a request');
      default:
        return malformed(`unknown pseudo-header field ${name}`);
    }
    if ((seen & bit) !== 0) return malformed(`duplicate ${name}`);
    seen |= bit;
  }
  const err = checkRegularFields(fields, i, info, true);
  if (err !== null) return err;

  if ((seen & 1) === 0 || info.method === '') return malformed('missing :method');
  if (!isToken(info.method)) return malformed(`invalid :method "${info.method}"`);
  if (!isVisibleAscii(info.path)) return malformed('invalid characters in :path');
  if (!isVisibleAscii(info.authority) || !isVisibleAscii(info.host)) {
    return malformed('invalid characters in :authority or host');
  }
  if ((seen & 2) !== 0 && !isScheme(info.scheme)) return malformed(`invalid :scheme "${info.scheme}"`);
  if (info.method === 'CONNECT' && (seen & 16) === 0) {
    // Classic CONNECT (§4.4): :authority only.
    if ((seen & (2 | 8)) !== 0) return malformed('CONNECT with :scheme or :path');
    if (info.authority === '') return malformed('CONNECT without :authority');
    return null;
  }
  if ((seen & 16) !== 0 && info.method !== 'CONNECT') return malformed(':protocol on a non-CONNECT request');
  if ((seen & 2) === 0 || info.scheme === '') return malformed('missing :scheme');
  if ((seen & 8) === 0 || info.path === '') return malformed('missing or empty :path');
  if (isHttpScheme(info.scheme)) {
    const p = info.path.charCodeAt(0);
    if (p !== 0x2f && !(info.path === '*' && info.method === 'OPTIONS')) {
      return malformed(`:path "${info.path}" is neither origin-form nor OPTIONS *`);
    }
    if (info.authority === '' && info.host === '') return malformed('missing :authority and host');
    // §4.3.1: no deprecated userinfo in http/https authorities.
    if (info.authority.includes('@') || info.host.includes('@')) return malformed('userinfo in :authority or host');
  }
  if ((seen & 4) !== 0 && info.authority === '') return malformed('empty :authority');
  if (info.host !== '' && info.authority !== '' && info.host !== info.authority) {
    return malformed(':authority and host differ');
  }
  if ((seen & 16) !== 0 && info.authority === '') return malformed('extended CONNECT without :authority');
  return null;
}

/**
 * Validates a response header section and fills `info.status` / `info.contentLength`.
 * Returns null, or an H3_MESSAGE_ERROR stream error.
 */
export function validateResponseFields(fields: readonly string[], info: FieldInfo): H3Error | null {
  info.reset();
  if ((fields.length & 1) !== 0) return malformed('odd field list');
  let i = 0;
  const n = fields.length;
  for (; i < n; i += 2) {
    const name = fields[i];
    if (name.length === 0 || name.charCodeAt(0) !== 0x3a) break;
    if (name !== ':status') return malformed(`${name} in a response`);
    if (info.status >= 0) return malformed('duplicate :status');
    const value = fields[i + 1];
    if (value.length !== 3) return malformed(`invalid :status "${value}"`);
    const d0 = value.charCodeAt(0) - 48;
    const d1 = value.charCodeAt(1) - 48;
    const d2 = value.charCodeAt(2) - 48;
    if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return malformed(`invalid :status "${value}"`);
    info.status = d0 * 100 + d1 * 10 + d2;
    if (info.status === 101) return malformed('101 Switching Protocols is not allowed in HTTP/3');
  }
  if (info.status < 0) return malformed('missing :status');
  return checkRegularFields(fields, i, info, false);
}

/** Validates a trailer section: no pseudo-header fields, same field rules. */
export function validateTrailerFields(fields: readonly string[], info: FieldInfo): H3Error | null {
  if ((fields.length & 1) !== 0) return malformed('odd field list');
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i];
    if (name.length > 0 && name.charCodeAt(0) === 0x3a) return malformed(`pseudo-header field ${name} in trailers`);
  }
  // Trailers carry no framing (RFC 9110 §6.5.1): keep the header section's Content-Length.
  const contentLength = info.contentLength;
  const host = info.host;
  info.contentLength = -1;
  info.host = '';
  const err = checkRegularFields(fields, 0, info, false);
  info.contentLength = contentLength;
  info.host = host;
  return err;
}
