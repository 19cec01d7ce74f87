/**
 * node:http2 accepts outgoing headers only as an object (Node 20); these convert at the
 * protocol boundary. Names are lower-cased (HTTP/2 requires it; HTTP/1.1 upstreams keep case)
 * and repeated names become arrays.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';

export function flatToHeaderObject(raw: readonly string[]): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    const value = raw[i + 1];
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = [String(prev), value];
  }
  return out;
}

export function headerObjectToFlat(headers: IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const name of Object.keys(headers)) {
    const v = headers[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.push(name, x);
    else out.push(name, String(v));
  }
  return out;
}
