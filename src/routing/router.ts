/**
 * RouteTable: one compiled route table of a config snapshot. `match()` runs once per request on
 * the hot path, so the constructor turns every RouteConfig into a CompiledRoute of one stable
 * shape (all fields set, nulls instead of absent keys), and `match()` allocates nothing: the
 * host and the path without its query are handled as index ranges of the strings it is given,
 * and case-insensitive comparisons fold ASCII letters code by code instead of calling
 * toLowerCase (rejected: lower-casing the authority and header names per request costs one
 * string per call whenever the client sends upper case, and HTTP/1.1 clients mostly do).
 *
 * Matching rules (first matching route in config order wins):
 * - authority: the host without port (`[v6]:port` keeps its brackets), case-insensitive; an
 *   exact host, or `*.suffix`, which matches any host with at least one label before the
 *   suffix (`a.example.com`, `a.b.example.com`, not `example.com`); null matches any;
 * - path: exact (`path`) or plain string prefix (`prefix`) of the path up to `?`;
 * - headers: every entry must match; name case-insensitive, value exact; a repeated header
 *   matches when any occurrence does.
 */
import type { RouteConfig } from '../config/types.js';

const CHAR_DOT = 46;
const CHAR_OPEN_BRACKET = 91;
const CHAR_UPPER_A = 65;
const CHAR_UPPER_Z = 90;

/** How a compiled route checks the authority. */
const enum HostRule {
  Any = 0,
  Exact = 1,
  /** `*.suffix`: the host ends with `.suffix` and is longer than it. */
  Wildcard = 2,
}

/** How a compiled route checks the path. */
const enum PathRule {
  Any = 0,
  Exact = 1,
  Prefix = 2,
  /** A hand-built match whose exact path lies outside its prefix. */
  Never = 3,
}

/** One route, precompiled. Every field is set in the constructor, in one order. */
class CompiledRoute {
  readonly route: RouteConfig;
  readonly hostRule: HostRule;
  /** Lower-case host for Exact, lower-case `.suffix` (leading dot kept) for Wildcard. */
  readonly host: string;
  readonly pathRule: PathRule;
  readonly path: string;
  /** Lower-case names, parallel to `headerValues`; empty arrays when there is no header rule. */
  readonly headerNames: readonly string[];
  readonly headerValues: readonly string[];

  constructor(route: RouteConfig) {
    const m = route.match;
    this.route = route;
    if (m.authority === null || m.authority === '' || m.authority === '*') {
      this.hostRule = HostRule.Any;
      this.host = '';
    } else {
      const host = normalizeHostPattern(m.authority);
      if (host.startsWith('*.')) {
        this.hostRule = HostRule.Wildcard;
        this.host = host.slice(1);
      } else {
        this.hostRule = HostRule.Exact;
        this.host = host;
      }
    }
    if (m.path !== null) {
      // The config loader never sets both; a hand-built match with both means "both hold".
      this.pathRule = m.prefix === null || m.path.startsWith(m.prefix) ? PathRule.Exact : PathRule.Never;
      this.path = m.path;
    } else if (m.prefix !== null && m.prefix !== '') {
      this.pathRule = PathRule.Prefix;
      this.path = m.prefix;
    } else {
      this.pathRule = PathRule.Any;
      this.path = '';
    }
    const names: string[] = [];
    const values: string[] = [];
    for (const h of m.headers) {
      names.push(h.name.toLowerCase());
      values.push(h.value);
    }
    this.headerNames = names;
    this.headerValues = values;
  }

  /**
   * `hostEnd` is where the host ends in `authority` (it starts at 0); `pathEnd` is where the
   * path ends in `path` (the `?`, or its length).
   */
  matches(authority: string, hostEnd: number, path: string, pathEnd: number, rawHeaders: readonly string[]): boolean {
    switch (this.hostRule) {
      case HostRule.Any:
        break;
      case HostRule.Exact:
        if (hostEnd !== this.host.length || !startsWithLower(authority, 0, this.host)) return false;
        break;
      case HostRule.Wildcard: {
        const start = hostEnd - this.host.length;
        if (start <= 0 || !startsWithLower(authority, start, this.host)) return false;
        break;
      }
    }
    switch (this.pathRule) {
      case PathRule.Any:
        break;
      case PathRule.Exact:
        if (pathEnd !== this.path.length || !path.startsWith(this.path)) return false;
        break;
      case PathRule.Prefix:
        if (pathEnd < this.path.length || !path.startsWith(this.path)) return false;
        break;
      case PathRule.Never:
        return false;
    }
    const names = this.headerNames;
    for (let i = 0; i < names.length; i++) {
      if (!hasHeader(rawHeaders, names[i], this.headerValues[i])) return false;
    }
    return true;
  }
}

/**
 * An immutable, compiled route table. Safe to share between requests and snapshots; `match`
 * never allocates and never throws.
 */
export class RouteTable {
  /** The routes as configured, in order (frozen). */
  readonly routes: readonly RouteConfig[];
  private readonly compiled: readonly CompiledRoute[];
  /** False when no route looks at the authority: `match` then skips finding the host. */
  private readonly needsHost: boolean;
  /** False when no route looks at the path: `match` then skips looking for `?`. */
  private readonly needsPath: boolean;

  constructor(routes: readonly RouteConfig[]) {
    this.routes = Object.isFrozen(routes) ? routes : Object.freeze(routes.slice());
    const compiled: CompiledRoute[] = [];
    let needsHost = false;
    let needsPath = false;
    for (const r of this.routes) {
      const c = new CompiledRoute(r);
      if (c.hostRule !== HostRule.Any) needsHost = true;
      if (c.pathRule !== PathRule.Any) needsPath = true;
      compiled.push(c);
    }
    this.compiled = Object.freeze(compiled);
    this.needsHost = needsHost;
    this.needsPath = needsPath;
  }

  /**
   * The first route, in config order, that matches the request; null when none does.
   * `authority` is the Host header or `:authority` (port allowed, '' when absent), `path` the
   * request target in origin form (query allowed), `rawHeaders` the parser's flat
   * [name, value, ...] list (names in any case).
   */
  match(authority: string, path: string, rawHeaders: readonly string[]): RouteConfig | null {
    const hostEnd = this.needsHost ? hostEndOf(authority) : 0;
    let pathEnd = path.length;
    if (this.needsPath) {
      const q = path.indexOf('?');
      if (q >= 0) pathEnd = q;
    }
    const compiled = this.compiled;
    for (let i = 0; i < compiled.length; i++) {
      const c = compiled[i];
      if (c.matches(authority, hostEnd, path, pathEnd, rawHeaders)) return c.route;
    }
    return null;
  }
}

/**
 * The host part of an authority, lower-case, without port or trailing dot:
 * `Example.COM:8080` → `example.com`, `[::1]:8080` → `[::1]`. Returns the argument itself (no
 * allocation) when it is already in that form.
 */
export function hostOf(authority: string): string {
  const end = hostEndOf(authority);
  const host = end === authority.length ? authority : authority.slice(0, end);
  return hasUpper(host) ? host.toLowerCase() : host;
}

/** Index where the host of `authority` ends: before `:port`, after `]`, before a trailing dot. */
function hostEndOf(authority: string): number {
  let end: number;
  if (authority.charCodeAt(0) === CHAR_OPEN_BRACKET) {
    const close = authority.indexOf(']');
    end = close < 0 ? authority.length : close + 1;
  } else {
    const colon = authority.indexOf(':');
    end = colon < 0 ? authority.length : colon;
  }
  if (end > 0 && authority.charCodeAt(end - 1) === CHAR_DOT) end--;
  return end;
}

/** Lower-cases a configured authority pattern and brackets a bare IPv6 literal. */
function normalizeHostPattern(authority: string): string {
  let host = authority.toLowerCase();
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (host.charCodeAt(0) !== CHAR_OPEN_BRACKET && host.indexOf(':') >= 0) host = `[${host}]`;
  return host;
}

/**
 * True when `s` holds `lower` at `offset`, ignoring the case of ASCII letters in `s`.
 * `lower` must already be lower-case. Tries the native comparison first: the common case
 * (the client sent lower case) costs one call.
 */
function startsWithLower(s: string, offset: number, lower: string): boolean {
  if (s.startsWith(lower, offset)) return true;
  const n = lower.length;
  if (offset + n > s.length) return false;
  for (let i = 0; i < n; i++) {
    let c = s.charCodeAt(offset + i);
    if (c >= CHAR_UPPER_A && c <= CHAR_UPPER_Z) c += 32;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/** True when some header in the flat list is named `lowerName` (any case) with exactly `value`. */
function hasHeader(rawHeaders: readonly string[], lowerName: string, value: string): boolean {
  const n = lowerName.length;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i];
    if (name.length === n && rawHeaders[i + 1] === value && startsWithLower(name, 0, lowerName)) return true;
  }
  return false;
}

function hasUpper(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= CHAR_UPPER_A && c <= CHAR_UPPER_Z) return true;
  }
  return false;
}
