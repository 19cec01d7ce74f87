/**
 * The zod schema of a Skiff config file (the public contract; see docs and load.ts). It checks
 * shape and units and normalizes values: durations to ms, sizes to bytes, addresses to
 * SocketAddress, header names and authorities to lower case. Every object is strict, so a
 * misspelt key is an error instead of a silently ignored setting. Checks local to one object
 * (protocols vs tls, path vs prefix) run here too, so they are reported alongside other field
 * errors; checks across the document (references, unique names) and defaults that depend on
 * other keys live in load.ts.
 *
 * Paths of issues are paths into the YAML document; load.ts maps them back to line numbers.
 */
import * as z from 'zod';
import type { HeaderMatch, MemoryMark, RouteMatch, SocketAddress } from './types.js';

/** Node's timers treat anything above this as 1 ms; longer durations are rejected. */
export const MAX_DURATION_MS = 2_147_483_647;

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const SIZE_UNITS: Readonly<Record<string, number>> = { B: 1, KiB: 1024, MiB: 1024 * 1024, GiB: 1024 * 1024 * 1024 };
const DURATION_RE = /^(\d+)(ms|s|m|h)$/;
const SIZE_RE = /^(\d+)(B|KiB|MiB|GiB)?$/;
const PORT_RE = /^\d{1,5}$/;
const IPV4_OCTET_RE = /^(0|[1-9]\d{0,2})$/;
const HEX_GROUP_RE = /^[0-9a-fA-F]{1,4}$/;
/** RFC 9110 token: the characters allowed in a header field name. */
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** One DNS label (letters, digits, inner hyphens, underscores tolerated). */
const LABEL_RE = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$/;

// ---------------------------------------------------------------------------------------
// Value parsers: pure functions, exported for tests and for the control plane's own inputs.
// Each returns the value, or a string saying what is wrong (a message for the issue).
// ---------------------------------------------------------------------------------------

export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly message: string };

function ok<T>(value: T): Parsed<T> {
  return { ok: true, value };
}
function fail<T>(message: string): Parsed<T> {
  return { ok: false, message };
}

/** `250ms`, `15s`, `2m`, `1h`, or an integer number of milliseconds (number or digits). */
export function parseDuration(v: unknown): Parsed<number> {
  let ms: number;
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0) return fail(`invalid duration ${v}: a plain number is a whole number of milliseconds >= 0`);
    ms = v;
  } else if (typeof v === 'string') {
    const s = v.trim();
    const m = DURATION_RE.exec(s);
    if (m !== null) ms = Number(m[1]) * DURATION_UNITS[m[2]];
    else if (/^\d+$/.test(s)) ms = Number(s);
    else return fail(`invalid duration "${v}": use 250ms, 15s, 2m, 1h or a whole number of milliseconds`);
  } else {
    return fail(`invalid duration: expected a string like 15s or a number of milliseconds, got ${describe(v)}`);
  }
  if (ms > MAX_DURATION_MS) return fail(`duration ${String(v)} is too long (at most ${MAX_DURATION_MS} ms, about 24 days)`);
  return ok(ms);
}

/** An integer number of bytes, or `64KiB`, `1MiB`, `1GiB` (also `512B`). */
export function parseSize(v: unknown): Parsed<number> {
  let bytes: number;
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) return fail(`invalid size ${v}: a plain number is a whole number of bytes >= 0`);
    bytes = v;
  } else if (typeof v === 'string') {
    const m = SIZE_RE.exec(v.trim());
    if (m === null) return fail(`invalid size "${v}": use a whole number of bytes or 64KiB, 1MiB, 1GiB`);
    bytes = Number(m[1]) * SIZE_UNITS[m[2] ?? 'B'];
    if (!Number.isSafeInteger(bytes)) return fail(`size "${v}" is too large`);
  } else {
    return fail(`invalid size: expected a number of bytes or a string like 64KiB, got ${describe(v)}`);
  }
  return ok(bytes);
}

const PERCENT_RE = /^(\d{1,3}(?:\.\d+)?)%$/;

/**
 * A memory mark (limits.memoryHighWatermark, limits.memoryConnectionWatermark): `90%` (a share
 * of V8's heap limit, above 0 and at most 100%) or a size (`768MiB`, bytes of heap in use);
 * 0 turns the mark off. No bare 0..1 ratio: a plain number is bytes, as in every size.
 */
export function parseMemoryMark(v: unknown): Parsed<MemoryMark> {
  if (typeof v === 'string') {
    const m = PERCENT_RE.exec(v.trim());
    if (m !== null) {
      const percent = Number(m[1]);
      if (percent <= 0 || percent > 100) return fail(`invalid memory mark "${v}": a percentage must be above 0% and at most 100%`);
      return ok({ ratio: percent / 100, bytes: 0 });
    }
  }
  const size = parseSize(v);
  if (!size.ok) return fail(`invalid memory mark ${typeof v === 'string' ? `"${v}"` : String(v)}: use a share of the heap limit like 90% or a size like 768MiB (0 turns it off)`);
  return ok({ ratio: 0, bytes: size.value });
}

/**
 * `host:port` where host is an IPv4 literal, `localhost` or a bracketed IPv6 literal
 * (`[::1]:15006`). The returned host has no brackets (what node's net module expects).
 * Port 0 (ephemeral) only when `allowPortZero`.
 */
export function parseAddress(s: string, allowPortZero: boolean): Parsed<SocketAddress> {
  let host: string;
  let portText: string;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0) return fail(`invalid address "${s}": missing "]" after the IPv6 literal`);
    host = s.slice(1, close).toLowerCase();
    if (!isIPv6(host)) return fail(`invalid address "${s}": "${host}" is not an IPv6 literal`);
    if (s.charAt(close + 1) !== ':') return fail(`invalid address "${s}": expected [ipv6]:port`);
    portText = s.slice(close + 2);
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) return fail(`invalid address "${s}": expected host:port`);
    host = s.slice(0, colon);
    portText = s.slice(colon + 1);
    if (host.includes(':')) {
      return fail(`invalid address "${s}": an IPv6 literal must be in brackets, e.g. [::1]:${portText}`);
    }
    if (host.toLowerCase() === 'localhost') host = 'localhost';
    else if (!isIPv4(host)) {
      return fail(`invalid address "${s}": host must be an IPv4 literal, localhost or a bracketed IPv6 literal`);
    }
  }
  if (!PORT_RE.test(portText)) return fail(`invalid address "${s}": port must be a number`);
  const port = Number(portText);
  const min = allowPortZero ? 0 : 1;
  if (port < min || port > 65535) return fail(`invalid address "${s}": port must be ${min}..65535`);
  return ok({ host, port });
}

export function isIPv4(s: string): boolean {
  const parts = s.split('.');
  if (parts.length !== 4) return false;
  for (const p of parts) {
    if (!IPV4_OCTET_RE.test(p) || Number(p) > 255) return false;
  }
  return true;
}

/** An IPv6 literal without brackets or zone: 8 groups, `::` once, optional dotted IPv4 tail. */
export function isIPv6(s: string): boolean {
  if (s.length < 2 || s.length > 45) return false;
  const gap = s.indexOf('::');
  if (gap >= 0 && s.indexOf('::', gap + 1) >= 0) return false;
  const head = gap < 0 ? s : s.slice(0, gap);
  const tail = gap < 0 ? '' : s.slice(gap + 2);
  const groups = [...(head === '' ? [] : head.split(':')), ...(tail === '' ? [] : tail.split(':'))];
  // A dotted IPv4 may only end the address (not stand before a trailing `::`).
  const lastCanBeV4 = gap < 0 || tail !== '';
  let count = 0;
  for (let i = 0; i < groups.length; i++) {
    const g = groups[i];
    if (i === groups.length - 1 && lastCanBeV4 && g.includes('.')) {
      if (!isIPv4(g)) return false;
      count += 2;
    } else if (HEX_GROUP_RE.test(g)) {
      count++;
    } else {
      return false;
    }
  }
  return gap >= 0 ? count <= 7 : count === 8;
}

/**
 * A route's `authority`: an exact host or `*.suffix`, no port. Returns it lower-case, a bare
 * IPv6 literal bracketed (`::1` → `[::1]`, the form it has in a Host header), or null for `*`.
 */
export function parseAuthority(s: string): Parsed<string | null> {
  const a = s.trim().toLowerCase();
  if (a === '*') return ok(null);
  if (a.startsWith('[')) {
    if (!a.endsWith(']') || !isIPv6(a.slice(1, -1))) {
      return fail(`invalid authority "${s}": expected a host without port, e.g. example.com, *.example.com or [::1]`);
    }
    return ok(a);
  }
  if (a.includes(':')) {
    if (isIPv6(a)) return ok(`[${a}]`);
    return fail(`invalid authority "${s}": give the host without a port`);
  }
  const host = a.endsWith('.') ? a.slice(0, -1) : a;
  const labels = host.split('.');
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i];
    if (i === 0 && l === '*' && labels.length > 1) continue;
    if (!LABEL_RE.test(l)) {
      return fail(`invalid authority "${s}": expected a host name, *.suffix, an IPv4 literal or a bracketed IPv6 literal`);
    }
  }
  return ok(host);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'a map' : typeof v;
}

// ---------------------------------------------------------------------------------------
// Schema pieces
// ---------------------------------------------------------------------------------------

function fromParsed<T>(r: Parsed<T>, ctx: z.RefinementCtx): T {
  if (r.ok) return r.value;
  ctx.addIssue({ code: 'custom', message: r.message });
  return z.NEVER;
}

const duration = z.unknown().transform((v, ctx) => fromParsed(parseDuration(v), ctx));
const positiveDuration = duration.refine((ms) => ms > 0, 'must be greater than 0');
const size = z.unknown().transform((v, ctx) => fromParsed(parseSize(v), ctx));
const positiveSize = size.refine((n) => n > 0, 'must be greater than 0');
const memoryMark = z.unknown().transform((v, ctx) => fromParsed(parseMemoryMark(v), ctx));
const listenAddress = z.string().transform((s, ctx) => fromParsed(parseAddress(s, true), ctx));
const endpointAddress = z.string().transform((s, ctx) => fromParsed(parseAddress(s, false), ctx));
const name = z.string().min(1, 'must not be empty');
const nonEmptyPath = z.string().min(1, 'must not be empty');

export const listenerProtocol = z.enum(['http1', 'h2c', 'h2', 'h3']);
export const upstreamProtocol = z.enum(['http1', 'h2c', 'h2', 'h3']);

const adminSchema = z.strictObject({
  address: listenAddress,
});

const limitsSchema = z.strictObject({
  maxHeaderBytes: positiveSize.optional(),
  streamBufferBytes: positiveSize.optional(),
  headersTimeout: duration.optional(),
  requestBodyTimeout: duration.optional(),
  keepAliveTimeout: duration.optional(),
  drainTimeout: duration.optional(),
  maxConnections: z.int().min(1).optional(),
  maxRequestsPerConnection: z.int().min(0).optional(),
  memoryHighWatermark: memoryMark.optional(),
  memoryConnectionWatermark: memoryMark.optional(),
});

const listenerTlsSchema = z.strictObject({
  cert: nonEmptyPath,
  key: nonEmptyPath,
});

/** `spiffe://TRUST_DOMAIN/PATH` (SPIFFE ID spec: lower-case trust domain, a path). */
const SPIFFE_RE = /^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$/;
export const spiffeId = z.string().regex(SPIFFE_RE, 'must be a SPIFFE ID: spiffe://TRUST_DOMAIN/PATH, e.g. spiffe://example.org/ns/default/sa/web');
const authorizeList = z.array(spiffeId).min(1, 'list at least one SPIFFE ID, or leave authorize out');

const identitySchema = z.strictObject({
  cert: nonEmptyPath,
  key: nonEmptyPath,
  trustBundle: nonEmptyPath,
});

const listenerSchema = z
  .strictObject({
    name,
    direction: z.enum(['inbound', 'outbound']).optional(),
    address: listenAddress,
    protocols: z.array(listenerProtocol),
    tls: z.union([z.literal('mesh'), listenerTlsSchema], { error: 'tls is "mesh" or { cert, key }' }).nullable().optional(),
    authorize: authorizeList.optional(),
    routes: name,
  })
  // Runs even when other keys of the listener are wrong (`when`), so "h2 needs tls" is reported
  // in the same pass as, say, a bad address; it only needs `protocols` to be a list.
  .superRefine((l, ctx) => checkListenerProtocols(l.protocols, l.tls !== undefined && l.tls !== null, ctx), {
    when: (payload) => hasListProperty(payload.value, 'protocols'),
  });

function hasListProperty(v: unknown, key: string): boolean {
  return typeof v === 'object' && v !== null && Array.isArray((v as Record<string, unknown>)[key]);
}

/** Protocols non-empty and unique; h2 and h3 only with tls; h2c only without. Elements may be unvalidated. */
function checkListenerProtocols(protocols: readonly unknown[], hasTls: boolean, ctx: z.RefinementCtx): void {
  if (protocols.length === 0) {
    ctx.addIssue({ code: 'custom', path: ['protocols'], message: 'must list at least one protocol (http1, h2c, h2, h3)' });
  }
  protocols.forEach((p, i) => {
    if (protocols.indexOf(p) !== i) {
      ctx.addIssue({ code: 'custom', path: ['protocols', i], message: `duplicate protocol "${String(p)}"` });
    } else if (p === 'h2' && !hasTls) {
      ctx.addIssue({ code: 'custom', path: ['protocols', i], message: 'h2 needs tls (add a tls block, or use h2c for cleartext HTTP/2)' });
    } else if (p === 'h3' && !hasTls) {
      ctx.addIssue({ code: 'custom', path: ['protocols', i], message: 'h3 needs tls (HTTP/3 runs over QUIC, which is always encrypted)' });
    } else if (p === 'h2c' && hasTls) {
      ctx.addIssue({ code: 'custom', path: ['protocols', i], message: 'h2c is cleartext and cannot be used on a listener with tls (use h2)' });
    }
  });
}

const routeMatchSchema = z
  .strictObject({
    path: z.string().optional(),
    prefix: z.string().optional(),
    authority: z.string().optional(),
    headers: z.record(z.string(), z.string({ error: 'header value must be a string (quote numbers and booleans)' })).optional(),
  })
  .transform((m, ctx): RouteMatch => {
    if (m.path !== undefined && m.prefix !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['prefix'], message: 'use either path or prefix, not both' });
    }
    if (m.path === undefined && m.prefix === undefined && m.authority === undefined && m.headers === undefined) {
      ctx.addIssue({ code: 'custom', message: 'a match needs at least one of path, prefix, authority, headers' });
    }
    for (const key of ['path', 'prefix'] as const) {
      const p = m[key];
      if (p !== undefined && !p.startsWith('/')) ctx.addIssue({ code: 'custom', path: [key], message: `must start with "/"` });
      else if (p !== undefined && p.includes('?')) ctx.addIssue({ code: 'custom', path: [key], message: 'must not contain a query ("?")' });
    }
    let authority: string | null = null;
    if (m.authority !== undefined) {
      const a = parseAuthority(m.authority);
      if (a.ok) authority = a.value;
      else ctx.addIssue({ code: 'custom', path: ['authority'], message: a.message });
    }
    const headers: HeaderMatch[] = [];
    if (m.headers !== undefined) {
      for (const [rawName, value] of Object.entries(m.headers)) {
        const lower = rawName.toLowerCase();
        if (!TOKEN_RE.test(rawName)) {
          ctx.addIssue({ code: 'custom', path: ['headers', rawName], message: `invalid header name "${rawName}"` });
        } else if (headers.some((h) => h.name === lower)) {
          ctx.addIssue({ code: 'custom', path: ['headers', rawName], message: `duplicate header name "${lower}" (names are case-insensitive)` });
        } else {
          headers.push(Object.freeze({ name: lower, value }));
        }
      }
    }
    return Object.freeze({
      authority,
      path: m.path ?? null,
      prefix: m.prefix ?? null,
      headers: Object.freeze(headers),
    });
  });

const routeSchema = z.strictObject({
  match: routeMatchSchema,
  cluster: name,
  timeout: duration.optional(),
  authorize: authorizeList.optional(),
});

const retryOn = z.enum(['connect-failure', 'refused-stream', 'reset', '503', 'gateway-error']);

const retriesSchema = z.strictObject({
  attempts: z.int().min(0).max(10).optional(),
  budgetPercent: z.number().min(0).max(100).optional(),
  minRetriesPerSecond: z.int().min(0).optional(),
  perTryTimeout: duration.optional(),
  backoffBase: positiveDuration.optional(),
  backoffMax: positiveDuration.optional(),
  retryOn: z.array(retryOn).optional(),
});

const outlierSchema = z.strictObject({
  consecutive5xx: z.int().min(1).optional(),
  consecutiveConnectFailures: z.int().min(1).optional(),
  baseEjectionTime: positiveDuration.optional(),
  maxEjectionTime: positiveDuration.optional(),
  maxEjectionPercent: z.number().min(0).max(100).optional(),
});

const circuitBreakersSchema = z.strictObject({
  maxConnections: z.int().min(1).optional(),
  maxPendingRequests: z.int().min(0).optional(),
  maxRequests: z.int().min(1).optional(),
});

const upstreamTlsSchema = z.strictObject({
  ca: nonEmptyPath.nullable().optional(),
  servername: z.string().min(1, 'must not be empty').nullable().optional(),
  insecureSkipVerify: z.boolean().optional(),
});

const clusterSchema = z
  .strictObject({
    name,
    protocol: upstreamProtocol,
    // At least one in a file (load.ts build): an xDS cluster may have none.
    endpoints: z.array(endpointAddress),
    maxBodyBytes: size.optional(),
    connectTimeout: positiveDuration.optional(),
    idleTimeout: positiveDuration.optional(),
    maxConnectionsPerEndpoint: z.int().min(1).optional(),
    maxPendingPerEndpoint: z.int().min(0).optional(),
    tls: z.union([z.literal('mesh'), upstreamTlsSchema], { error: 'tls is "mesh" or { ca, servername, insecureSkipVerify }' }).nullable().optional(),
    peerIdentity: spiffeId.optional(),
    loadBalancer: z.enum(['p2c-ewma', 'round-robin', 'least-request']).optional(),
    retries: retriesSchema.optional(),
    outlierDetection: outlierSchema.nullable().optional(),
    circuitBreakers: circuitBreakersSchema.optional(),
  })
  .superRefine((c, ctx) => {
    if (c.protocol === 'h2c' && c.tls !== undefined && c.tls !== null) {
      ctx.addIssue({ code: 'custom', path: ['tls'], message: 'h2c is cleartext; use protocol h2 for HTTP/2 over TLS' });
    }
    if (c.peerIdentity !== undefined && c.tls !== 'mesh') {
      ctx.addIssue({ code: 'custom', path: ['peerIdentity'], message: 'peerIdentity needs tls: mesh' });
    }
  });

const ratio = z.number().min(0, 'must be between 0 and 1').max(1, 'must be between 0 and 1');

const tracingSchema = z.strictObject({
  enabled: z.boolean().optional(),
  sampling: ratio.optional(),
  endpoint: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).optional(),
  protocol: z.enum(['http/protobuf', 'http/json', 'grpc']).optional(),
  propagators: z.array(z.enum(['tracecontext', 'baggage', 'b3', 'b3multi'])).min(1, 'list at least one propagator').optional(),
});

const accessLogSchema = z.strictObject({
  enabled: z.boolean().optional(),
  path: z.string().min(1, 'must not be empty').optional(),
  sampleRate: ratio.optional(),
});

export const logLevel = z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']);

const telemetrySchema = z.strictObject({
  serviceName: z.string().min(1, 'must not be empty').optional(),
  logLevel: logLevel.optional(),
  tracing: tracingSchema.optional(),
  accessLog: accessLogSchema.optional(),
});

/**
 * The xDS control plane (mesh/xds/): `server` is `host:port` (an IP literal or localhost) or
 * `unix:/path/to.sock` (Istio's pilot-agent socket); `node.id` is what the control plane
 * knows this sidecar by (Istio: `sidecar~IP~POD.NS~NS.svc.cluster.local`).
 */
const xdsSchema = z.strictObject({
  server: z.string().refine((s) => /^unix:.+/.test(s) || parseAddress(s, false).ok, {
    message: 'must be host:port (an IP literal or localhost) or unix:/path/to/socket',
  }),
  protocol: z.enum(['auto', 'delta', 'sotw']).optional(),
  node: z.strictObject({
    id: z.string().min(1, 'must not be empty'),
    cluster: z.string().optional(),
    locality: z.strictObject({ region: z.string().optional(), zone: z.string().optional(), subZone: z.string().optional() }).optional(),
    metadata: z.record(z.string(), z.string({ error: 'metadata values must be strings' })).optional(),
  }),
  tls: z
    .strictObject({
      ca: nonEmptyPath.optional(),
      cert: nonEmptyPath.optional(),
      key: nonEmptyPath.optional(),
      servername: z.string().min(1, 'must not be empty').optional(),
    })
    .refine((t) => (t.cert === undefined) === (t.key === undefined), { message: 'give both cert and key (client certificate) or neither' })
    .nullable()
    .optional(),
  initialFetchTimeout: duration.optional(),
  backoffBase: positiveDuration.optional(),
  backoffMax: positiveDuration.optional(),
});

/** The whole file. `listeners` is required unless an `xds` block brings them (load.ts); `routes` and `clusters` may be left out. */
export const configSchema = z.strictObject({
  admin: adminSchema.nullable().optional(),
  identity: identitySchema.optional(),
  limits: limitsSchema.optional(),
  telemetry: telemetrySchema.optional(),
  xds: xdsSchema.optional(),
  listeners: z.array(listenerSchema).optional(),
  routes: z.record(z.string().min(1, 'route table names must not be empty'), z.array(routeSchema)).optional(),
  clusters: z.array(clusterSchema).optional(),
});

export type RawConfig = z.output<typeof configSchema>;
export type RawListener = z.output<typeof listenerSchema>;
export type RawRoute = z.output<typeof routeSchema>;
export type RawCluster = z.output<typeof clusterSchema>;

/** Per-parse error map: a missing required key says so instead of "expected string, received undefined". */
export const configErrorMap: z.core.$ZodErrorMap = (iss) => {
  if (iss.input === undefined && (iss.code === 'invalid_type' || iss.code === 'invalid_value')) return 'required key is missing';
  return undefined;
};
