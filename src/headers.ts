/**
 * Header handling on flat [name, value, ...] lists, without building header objects.
 * Names from HTTP/1.1 keep their original case, so every comparison here is
 * case-insensitive and checks the length first (most names are rejected on length alone).
 */

/** ASCII case-insensitive equality of `name` with a lower-case `lower`. */
export function nameIs(name: string, lower: string): boolean {
  if (name.length !== lower.length) return false;
  if (name === lower) return true;
  for (let i = 0; i < lower.length; i++) {
    let c = name.charCodeAt(i);
    if (c >= 65 && c <= 90) c |= 0x20;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * Hop-by-hop fields (RFC 9110 §7.6.1) plus the ones the proxy sets itself. Returns true for
 * connection, keep-alive, proxy-connection, te, transfer-encoding, upgrade, and (when
 * `skipHost`) host.
 */
export function isHopByHop(name: string): boolean {
  switch (name.length) {
    case 2: return nameIs(name, 'te');
    case 7: return nameIs(name, 'upgrade');
    case 10: return nameIs(name, 'connection') || nameIs(name, 'keep-alive');
    case 16: return nameIs(name, 'proxy-connection');
    case 17: return nameIs(name, 'transfer-encoding');
    default: return false;
  }
}

/** First value of `lower` in a flat list, or null. */
export function getHeader(raw: readonly string[], lower: string): string | null {
  for (let i = 0; i < raw.length; i += 2) {
    if (nameIs(raw[i], lower)) return raw[i + 1];
  }
  return null;
}

/**
 * Names listed in a Connection header that are not standard options. Those fields are
 * hop-by-hop too and must be dropped. Returns null (no allocation) in the usual case.
 */
export function connectionListed(raw: readonly string[]): string[] | null {
  let listed: string[] | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    if (!nameIs(raw[i], 'connection')) continue;
    const value = raw[i + 1];
    // The usual values name no other field: skip the split (one allocation per response).
    if (nameIs(value, 'keep-alive') || nameIs(value, 'close')) continue;
    const tokens = value.split(',');
    for (const t of tokens) {
      const token = t.trim().toLowerCase();
      if (token === '' || token === 'close' || token === 'keep-alive' || token === 'upgrade') continue;
      if (listed === null) listed = [];
      listed.push(token);
    }
  }
  return listed;
}

function isListed(name: string, listed: string[] | null): boolean {
  if (listed === null) return false;
  for (let i = 0; i < listed.length; i++) if (nameIs(name, listed[i])) return true;
  return false;
}

/** Fields that the proxy replaces on the way upstream. */
function isProxySet(name: string): boolean {
  switch (name.length) {
    case 4: return nameIs(name, 'host');
    case 15: return nameIs(name, 'x-forwarded-for');
    case 17: return nameIs(name, 'x-forwarded-proto');
    case 12: return nameIs(name, 'x-request-id');
    // Skiff answers `Expect: 100-continue` itself (node:http sends the 100), so it is not forwarded.
    case 6: return nameIs(name, 'expect');
    default: return false;
  }
}

export interface ForwardInfo {
  readonly rawHeaders: readonly string[];
  readonly remoteAddress: string;
  readonly scheme: string;
  readonly requestId: string;
  /** Trace-context fields the tracer sets ([name, value, ...]); empty when tracing is off. */
  readonly traceHeaders: readonly string[];
  /** Lower-case names of the tracer's fields, dropped from the downstream's when it sets its own. */
  readonly traceFields: readonly string[];
}

function isLowerListed(name: string, lower: readonly string[]): boolean {
  for (let i = 0; i < lower.length; i++) if (nameIs(name, lower[i])) return true;
  return false;
}

/**
 * Writes the upstream request's regular fields into `out` (cleared first): the downstream
 * fields minus hop-by-hop ones, pseudo-headers and the proxy-set ones, then
 * x-forwarded-for (appended to any earlier hops), x-forwarded-proto and x-request-id.
 * `out` is the context's reused scratch list, so a warm context allocates nothing here
 * beyond the x-forwarded-for string. `joinCookies` (HTTP/1.1 upstreams) joins split Cookie
 * fields into one.
 */
export function buildUpstreamHeaders(info: ForwardInfo, out: string[], joinCookies: boolean): void {
  // Written by index and truncated once at the end: `out.length = 0` followed by pushes made
  // V8 drop and regrow the backing store on every call (512 of 617 bytes per call in
  // bench/micro; 0 bytes this way).
  let n = 0;
  const raw = info.rawHeaders;
  const listed = connectionListed(raw);
  let xff: string | null = null;
  let cookieAt = -1;
  const traced = info.traceHeaders.length > 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.charCodeAt(0) === 58 /* ':' */) continue;
    if (isHopByHop(name) || isListed(name, listed)) continue;
    // With tracing on, Skiff's CLIENT span is the upstream's parent: the downstream's
    // trace-context fields are replaced, not forwarded next to the new ones.
    if (traced && isLowerListed(name, info.traceFields)) continue;
    if (isProxySet(name)) {
      if (nameIs(name, 'x-forwarded-for')) xff = xff === null ? raw[i + 1] : xff + ', ' + raw[i + 1];
      continue;
    }
    // HTTP/2 clients may split Cookie into several fields; HTTP/1.1 allows one, joined with
    // "; " (RFC 9113 §8.2.3). Regression: test/e2e/proxy-matrix.test.ts "split cookies".
    if (joinCookies && name.length === 6 && nameIs(name, 'cookie')) {
      if (cookieAt >= 0) {
        out[cookieAt + 1] = out[cookieAt + 1] + '; ' + raw[i + 1];
        continue;
      }
      cookieAt = n;
    }
    out[n++] = name;
    out[n++] = raw[i + 1];
  }
  out[n++] = 'x-forwarded-for';
  out[n++] = xff === null ? info.remoteAddress : xff + ', ' + info.remoteAddress;
  out[n++] = 'x-forwarded-proto';
  out[n++] = info.scheme;
  out[n++] = 'x-request-id';
  out[n++] = info.requestId;
  if (traced) {
    const t = info.traceHeaders;
    for (let i = 0; i < t.length; i++) out[n++] = t[i];
  }
  out.length = n;
}

/**
 * Writes the response fields for downstream into `out`: upstream's minus hop-by-hop ones
 * and pseudo-headers.
 */
export function buildResponseHeaders(raw: readonly string[], out: string[]): void {
  let n = 0;
  const listed = connectionListed(raw);
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.charCodeAt(0) === 58) continue;
    if (isHopByHop(name) || isListed(name, listed)) continue;
    out[n++] = name;
    out[n++] = raw[i + 1];
  }
  out.length = n;
}
