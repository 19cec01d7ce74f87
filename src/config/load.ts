/**
 * Config loading: YAML text → validated, frozen ConfigSnapshot (DESIGN invariant 6).
 *
 * Pipeline: `yaml` parses with a LineCounter (syntax errors become issues with their line),
 * zod checks shape, units and per-object rules (schema.ts), then `build` runs the checks that
 * span the document (references, unique names, clashing addresses) and fills defaults. Every
 * problem is collected, not just the first, and each is reported as `FILE:LINE: key.path:
 * message`, the line found by walking the YAML node tree along the issue's path (a missing key
 * reports the line of its parent). Nothing here touches sockets or certificate files: TLS paths
 * are only resolved against the config file's folder; reading them is the listener's job.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isAlias, isMap, isNode, isScalar, isSeq, LineCounter, parseDocument, visit, type Document } from 'yaml';
import type * as z from 'zod';
import { RouteTable } from '../routing/router.js';
import { DEFAULT_CONFIG_SOURCE, DEFAULT_CONFIG_YAML } from './default.js';
import { configErrorMap, configSchema, type RawCluster, type RawConfig, type RawListener } from './schema.js';
import type {
  CircuitBreakers,
  ClusterConfig,
  ConfigSnapshot,
  IdentityConfig,
  OutlierDetection,
  RetryPolicy,
  Limits,
  ListenerConfig,
  MemoryMark,
  RouteConfig,
  SocketAddress,
  TelemetryConfig,
  TlsFiles,
  UpstreamTls,
  XdsConfig,
} from './types.js';

export interface ConfigIssue {
  /** Key path in the document, e.g. `listeners[0].address`; '' for the document itself. */
  readonly path: string;
  /** 1-based line in the source; 0 when unknown. */
  readonly line: number;
  readonly message: string;
}

/** Every problem found in one config source. `message` lists them, one `FILE:LINE: path: message` per line. */
export class ConfigError extends Error {
  readonly source: string;
  readonly issues: readonly ConfigIssue[];

  constructor(source: string, issues: readonly ConfigIssue[]) {
    super(issues.map((i) => formatIssue(source, i)).join('\n'));
    this.name = 'ConfigError';
    this.source = source;
    this.issues = Object.freeze(issues.slice());
  }
}

function formatIssue(source: string, issue: ConfigIssue): string {
  const where = issue.line > 0 ? `${source}:${issue.line}` : source;
  return issue.path === '' ? `${where}: ${issue.message}` : `${where}: ${issue.path}: ${issue.message}`;
}

export const DEFAULT_LIMITS: Limits = Object.freeze({
  maxHeaderBytes: 16384,
  streamBufferBytes: 256 * 1024,
  headersTimeoutMs: 10_000,
  requestBodyTimeoutMs: 30_000,
  keepAliveTimeoutMs: 60_000,
  drainTimeoutMs: 20_000,
  // Envoy's per-listener limit is unset by default and Istio sets none; 10,000 bounds a
  // sidecar's sockets and their buffers (~10 KB to ~100 KB each) well under a container's
  // memory while no single workload's fan-in reaches it. Same as the QUIC endpoint's default.
  maxConnections: 10_000,
  // limits.maxRequestsPerConnection unset: unlimited on HTTP/1.1 and HTTP/2, as Envoy's
  // max_requests_per_connection (Node's HTTP/2 GOAWAY is one-step, so requests a client sent
  // before it saw the GOAWAY are refused, retry-safe but errors to clients that do not retry);
  // 10,000 on HTTP/3, whose GOAWAY is two-step (nothing refused), because quiche 0.18 remembers
  // every finished stream id of a connection in a set that only grows (docs/DESIGN.md, Soak).
  maxRequestsPerConnection: 0,
  maxRequestsPerH3Connection: 10_000,
  // Shares of V8's heap limit (docs/DESIGN.md "Limits"): connections are refused first, then
  // requests shed, with headroom left for the requests in flight to finish.
  memoryHighWatermark: Object.freeze({ ratio: 0.9, bytes: 0 }),
  memoryConnectionWatermark: Object.freeze({ ratio: 0.85, bytes: 0 }),
});
export const DEFAULT_ROUTE_TIMEOUT_MS = 15_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
export const DEFAULT_MAX_CONNECTIONS_HTTP1 = 64;
export const DEFAULT_MAX_CONNECTIONS_H2 = 4;
export const DEFAULT_MAX_PENDING = 1024;
export const DEFAULT_RETRIES: RetryPolicy = Object.freeze({
  attempts: 2,
  budgetPercent: 20,
  minRetriesPerSecond: 10,
  perTryTimeoutMs: 0,
  backoffBaseMs: 25,
  backoffMaxMs: 250,
  retryOn: Object.freeze(['connect-failure', 'refused-stream', 'reset', '503'] as const),
});
export const DEFAULT_OUTLIER_DETECTION: OutlierDetection = Object.freeze({
  consecutive5xx: 5,
  consecutiveConnectFailures: 5,
  baseEjectionTimeMs: 30_000,
  maxEjectionTimeMs: 300_000,
  maxEjectionPercent: 50,
});
export const DEFAULT_CIRCUIT_BREAKERS: CircuitBreakers = Object.freeze({ maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024 });

type PathSegment = string | number;

/**
 * Parses and validates one config document. `source` names it in messages (a file path or
 * 'embedded default'); relative TLS paths are resolved against `baseDir`. Throws ConfigError
 * listing every issue; never returns a partial snapshot.
 */
export function parseConfig(text: string, source: string, baseDir: string, version: number): ConfigSnapshot {
  const lineCounter = new LineCounter();
  // logLevel 'error': the library's own warnings (e.g. a map used as a key) would go to
  // process.emitWarning, i.e. the sidecar's stderr; the schema reports such keys itself.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, logLevel: 'error' });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => ({ path: '', line: lineCounter.linePos(e.pos[0]).line, message: `YAML: ${e.message}` })),
    );
  }
  let data: unknown;
  try {
    data = doc.toJS();
  } catch (err) {
    // Unresolved aliases and alias bombs surface here, not in doc.errors.
    throw new ConfigError(source, [{ path: '', line: aliasLine(doc, lineCounter), message: `YAML: ${err instanceof Error ? err.message : String(err)}` }]);
  }
  // Every issue names a key or a line (test/unit/config/fuzz.test.ts): an empty document its first.
  if (data === null || data === undefined) throw new ConfigError(source, [{ path: '', line: 1, message: 'the document is empty' }]);
  const lines = new LineFinder(doc, lineCounter);
  return validate(data, source, baseDir, version, (path, message) => lines.issue(path, message), false);
}

/**
 * Validates a document that is already plain data (no YAML): the xDS source composes the
 * file's document with the resources the control plane sent and builds the snapshot here, so
 * xDS resources go through exactly the checks a file does. Issues carry paths, no lines.
 * `fromXds` allows clusters without endpoints (EDS may deliver none: requests then get 503
 * no_healthy_upstream, as in Envoy) and documents without listeners.
 */
export function parseConfigObject(data: unknown, source: string, baseDir: string, version: number, fromXds: boolean): ConfigSnapshot {
  return validate(data, source, baseDir, version, (path, message) => ({ path: formatPath(path), line: 0, message }), fromXds);
}

type IssueAt = (path: readonly PathSegment[], message: string) => ConfigIssue;

function validate(data: unknown, source: string, baseDir: string, version: number, issueAt: IssueAt, fromXds: boolean): ConfigSnapshot {
  if (data === null || data === undefined) {
    throw new ConfigError(source, [{ path: '', line: 0, message: 'the document is empty' }]);
  }
  const result = configSchema.safeParse(data, { error: configErrorMap });
  if (!result.success) {
    const issues: ConfigIssue[] = [];
    const report = (iss: z.core.$ZodIssue, prefix: readonly PathSegment[]): void => {
      const path = [...prefix, ...iss.path.filter(isSegment)];
      if (iss.code === 'unrecognized_keys') {
        for (const key of iss.keys) issues.push(issueAt([...path, key], `unknown key "${key}"`));
        return;
      }
      if (iss.code === 'invalid_union') {
        // `tls: mesh | { ... }`: when the value is a map, the map branch's own issues say what
        // is wrong (a missing key) better than "is mesh or { cert, key }".
        const branch = iss.errors.find((b) => b.some((e) => e.path.length > 0));
        if (branch !== undefined) {
          for (const e of branch) report(e, path);
          return;
        }
      }
      issues.push(issueAt(path, iss.message));
    };
    for (const iss of result.error.issues) report(iss, []);
    throw new ConfigError(source, sortIssues(issues));
  }
  const issues: ConfigIssue[] = [];
  const snapshot = build(result.data, source, baseDir, version, (path, message) => issues.push(issueAt(path, message)), fromXds);
  if (issues.length > 0) throw new ConfigError(source, sortIssues(issues));
  documents.set(snapshot, { document: data as Readonly<Record<string, unknown>>, baseDir });
  return snapshot;
}

/** The plain document each snapshot was built from (the xDS source composes the file's with its resources). */
const documents = new WeakMap<ConfigSnapshot, { readonly document: Readonly<Record<string, unknown>>; readonly baseDir: string }>();

/** The document (plain data, before validation) and base folder a snapshot was built from. */
export function documentOf(snapshot: ConfigSnapshot): { readonly document: Readonly<Record<string, unknown>>; readonly baseDir: string } {
  const d = documents.get(snapshot);
  if (d === undefined) throw new Error(`config version ${snapshot.version} was not built by the config loader`);
  return d;
}

/** Reads a config file; relative TLS and CA paths are resolved against the file's folder. */
export function loadConfigFile(path: string, version: number): ConfigSnapshot {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [{ path: '', line: 0, message: `cannot read the file: ${err instanceof Error ? err.message : String(err)}` }]);
  }
  return parseConfig(text, path, dirname(resolve(path)), version);
}

/** The embedded default (one inbound listener on 127.0.0.1:15006 to 127.0.0.1:8080, admin on 15000). */
export function defaultSnapshot(version: number): ConfigSnapshot {
  return parseConfig(DEFAULT_CONFIG_YAML, DEFAULT_CONFIG_SOURCE, process.cwd(), version);
}

// ---------------------------------------------------------------------------------------
// Build: cross-document checks and defaults
// ---------------------------------------------------------------------------------------

type Report = (path: readonly PathSegment[], message: string) => void;

function build(raw: RawConfig, source: string, baseDir: string, version: number, report: Report, fromXds: boolean): ConfigSnapshot {
  const rawListeners = raw.listeners ?? [];
  if (!fromXds && raw.xds === undefined && rawListeners.length === 0) report(['listeners'], 'at least one listener is needed (or an xds block to bring them)');
  const clusters = new Map<string, ClusterConfig>();
  (raw.clusters ?? []).forEach((c, i) => {
    if (clusters.has(c.name)) {
      report(['clusters', i, 'name'], `duplicate cluster name "${c.name}"`);
      return;
    }
    if (!fromXds && c.endpoints.length === 0) report(['clusters', i, 'endpoints'], 'a cluster needs at least one endpoint');
    clusters.set(c.name, buildCluster(c, baseDir));
  });

  const routeTables = new Map<string, RouteTable>();
  for (const [tableName, entries] of Object.entries(raw.routes ?? {})) {
    const routes: RouteConfig[] = [];
    entries.forEach((r, i) => {
      if (!clusters.has(r.cluster)) report(['routes', tableName, i, 'cluster'], `no cluster named "${r.cluster}"`);
      routes.push(Object.freeze({
        match: r.match,
        cluster: r.cluster,
        timeoutMs: r.timeout ?? DEFAULT_ROUTE_TIMEOUT_MS,
        authorize: Object.freeze((r.authorize ?? []).slice()),
      }));
    });
    routeTables.set(tableName, new RouteTable(Object.freeze(routes)));
  }

  const identity: IdentityConfig | null =
    raw.identity === undefined
      ? null
      : Object.freeze({
          cert: resolve(baseDir, raw.identity.cert),
          key: resolve(baseDir, raw.identity.key),
          trustBundle: resolve(baseDir, raw.identity.trustBundle),
        });
  (raw.clusters ?? []).forEach((c, i) => {
    if (c.tls === 'mesh' && identity === null) report(['clusters', i, 'tls'], 'tls: mesh needs a top-level identity block (cert, key, trustBundle)');
  });

  const listeners: ListenerConfig[] = [];
  const names = new Map<string, number>();
  const addresses = new Map<string, string>();
  let admin: SocketAddress | null = null;
  if (raw.admin !== undefined && raw.admin !== null) {
    admin = Object.freeze(raw.admin.address);
    claimAddress(addresses, admin, 'admin', ['admin', 'address'], report);
  }
  rawListeners.forEach((l, i) => {
    const first = names.get(l.name);
    if (first !== undefined) report(['listeners', i, 'name'], `duplicate listener name "${l.name}" (first at listeners[${first}])`);
    else names.set(l.name, i);
    if (!routeTables.has(l.routes)) report(['listeners', i, 'routes'], `no route table named "${l.routes}"`);
    claimAddress(addresses, l.address, `listeners[${i}]`, ['listeners', i, 'address'], report);
    if (l.tls === 'mesh' && identity === null) report(['listeners', i, 'tls'], 'tls: mesh needs a top-level identity block (cert, key, trustBundle)');
    if (l.authorize !== undefined && l.tls !== 'mesh') report(['listeners', i, 'authorize'], 'authorize needs tls: mesh (peers are identified by their certificates)');
    listeners.push(buildListener(l, baseDir));
  });

  const limits: Limits =
    raw.limits === undefined
      ? DEFAULT_LIMITS
      : Object.freeze({
          maxHeaderBytes: raw.limits.maxHeaderBytes ?? DEFAULT_LIMITS.maxHeaderBytes,
          streamBufferBytes: raw.limits.streamBufferBytes ?? DEFAULT_LIMITS.streamBufferBytes,
          headersTimeoutMs: raw.limits.headersTimeout ?? DEFAULT_LIMITS.headersTimeoutMs,
          requestBodyTimeoutMs: raw.limits.requestBodyTimeout ?? DEFAULT_LIMITS.requestBodyTimeoutMs,
          keepAliveTimeoutMs: raw.limits.keepAliveTimeout ?? DEFAULT_LIMITS.keepAliveTimeoutMs,
          drainTimeoutMs: raw.limits.drainTimeout ?? DEFAULT_LIMITS.drainTimeoutMs,
          maxConnections: raw.limits.maxConnections ?? DEFAULT_LIMITS.maxConnections,
          maxRequestsPerConnection: raw.limits.maxRequestsPerConnection ?? DEFAULT_LIMITS.maxRequestsPerConnection,
          maxRequestsPerH3Connection: raw.limits.maxRequestsPerConnection ?? DEFAULT_LIMITS.maxRequestsPerH3Connection,
          memoryHighWatermark: memoryMarkOf(raw.limits.memoryHighWatermark, DEFAULT_LIMITS.memoryHighWatermark),
          memoryConnectionWatermark: memoryMarkOf(raw.limits.memoryConnectionWatermark, DEFAULT_LIMITS.memoryConnectionWatermark),
        });

  return Object.freeze({
    version,
    source,
    admin,
    identity,
    listeners: Object.freeze(listeners),
    listenerByName: new Map(listeners.map((l) => [l.name, l])),
    hasAuthorization:
      listeners.some((l) => l.authorize.length > 0) || [...routeTables.values()].some((t) => t.routes.some((r) => r.authorize.length > 0)),
    routeTables,
    clusters,
    limits,
    telemetry: buildTelemetry(raw.telemetry, baseDir),
    xds: buildXds(raw.xds, baseDir),
  });
}

export const DEFAULT_XDS_INITIAL_FETCH_TIMEOUT_MS = 15_000;
export const DEFAULT_XDS_BACKOFF_BASE_MS = 500;
export const DEFAULT_XDS_BACKOFF_MAX_MS = 30_000;

function buildXds(x: RawConfig['xds'], baseDir: string): XdsConfig | null {
  if (x === undefined) return null;
  const file = (p: string | undefined): string | null => (p === undefined ? null : resolve(baseDir, p));
  return Object.freeze({
    server: x.server,
    protocol: x.protocol ?? 'auto',
    node: Object.freeze({
      id: x.node.id,
      cluster: x.node.cluster ?? '',
      locality: Object.freeze({ region: x.node.locality?.region ?? '', zone: x.node.locality?.zone ?? '', subZone: x.node.locality?.subZone ?? '' }),
      metadata: Object.freeze({ ...(x.node.metadata ?? {}) }),
    }),
    tls:
      x.tls === undefined || x.tls === null
        ? null
        : Object.freeze({ ca: file(x.tls.ca), cert: file(x.tls.cert), key: file(x.tls.key), servername: x.tls.servername ?? null }),
    initialFetchTimeoutMs: x.initialFetchTimeout ?? DEFAULT_XDS_INITIAL_FETCH_TIMEOUT_MS,
    backoffBaseMs: x.backoffBase ?? DEFAULT_XDS_BACKOFF_BASE_MS,
    backoffMaxMs: x.backoffMax ?? DEFAULT_XDS_BACKOFF_MAX_MS,
  });
}

function memoryMarkOf(raw: MemoryMark | undefined, fallback: MemoryMark): MemoryMark {
  return raw === undefined ? fallback : Object.freeze({ ratio: raw.ratio, bytes: raw.bytes });
}

function buildTelemetry(t: RawConfig['telemetry'], baseDir: string): TelemetryConfig {
  const tr = t?.tracing;
  const al = t?.accessLog;
  const path = al?.path ?? 'stdout';
  return Object.freeze({
    serviceName: t?.serviceName ?? null,
    logLevel: t?.logLevel ?? 'info',
    tracing: Object.freeze({
      enabled: tr?.enabled ?? null,
      sampling: tr?.sampling ?? null,
      endpoint: tr?.endpoint ?? null,
      protocol: tr?.protocol ?? null,
      propagators: tr?.propagators === undefined ? null : Object.freeze(tr.propagators.slice()),
    }),
    accessLog: Object.freeze({
      enabled: al?.enabled ?? false,
      path: path === 'stdout' || path === 'stderr' ? path : resolve(baseDir, path),
      sampleRate: al?.sampleRate ?? 1,
    }),
  });
}

/** Two sockets on one fixed host:port cannot both listen; port 0 (ephemeral) never clashes. */
function claimAddress(taken: Map<string, string>, a: SocketAddress, owner: string, path: readonly PathSegment[], report: Report): void {
  if (a.port === 0) return;
  const key = `${a.host}|${a.port}`;
  const other = taken.get(key);
  if (other !== undefined) report(path, `address already used by ${other}`);
  else taken.set(key, owner);
}

function buildListener(l: RawListener, baseDir: string): ListenerConfig {
  const tls: TlsFiles | null =
    l.tls === undefined || l.tls === null || l.tls === 'mesh' ? null : Object.freeze({ cert: resolve(baseDir, l.tls.cert), key: resolve(baseDir, l.tls.key) });
  return Object.freeze({
    name: l.name,
    direction: l.direction ?? 'inbound',
    address: Object.freeze(l.address),
    protocols: Object.freeze(l.protocols.slice()),
    tls,
    meshTls: l.tls === 'mesh',
    authorize: Object.freeze((l.authorize ?? []).slice()),
    routes: l.routes,
  });
}

function buildCluster(c: RawCluster, baseDir: string): ClusterConfig {
  let tls: UpstreamTls | null = null;
  const meshTls = c.tls === 'mesh';
  if (c.tls !== undefined && c.tls !== null && c.tls !== 'mesh') {
    tls = Object.freeze({
      ca: c.tls.ca === undefined || c.tls.ca === null ? null : resolve(baseDir, c.tls.ca),
      servername: c.tls.servername ?? null,
      insecureSkipVerify: c.tls.insecureSkipVerify ?? false,
    });
  } else if (c.protocol === 'h2' && !meshTls) {
    tls = Object.freeze({ ca: null, servername: null, insecureSkipVerify: false });
  }
  const r = c.retries;
  const retries: RetryPolicy =
    r === undefined
      ? DEFAULT_RETRIES
      : Object.freeze({
          attempts: r.attempts ?? DEFAULT_RETRIES.attempts,
          budgetPercent: r.budgetPercent ?? DEFAULT_RETRIES.budgetPercent,
          minRetriesPerSecond: r.minRetriesPerSecond ?? DEFAULT_RETRIES.minRetriesPerSecond,
          perTryTimeoutMs: r.perTryTimeout ?? DEFAULT_RETRIES.perTryTimeoutMs,
          backoffBaseMs: r.backoffBase ?? DEFAULT_RETRIES.backoffBaseMs,
          backoffMaxMs: r.backoffMax ?? DEFAULT_RETRIES.backoffMaxMs,
          retryOn: r.retryOn === undefined ? DEFAULT_RETRIES.retryOn : Object.freeze(r.retryOn.slice()),
        });
  const o = c.outlierDetection;
  const outlierDetection: OutlierDetection | null =
    o === null
      ? null
      : o === undefined
        ? DEFAULT_OUTLIER_DETECTION
        : Object.freeze({
            consecutive5xx: o.consecutive5xx ?? DEFAULT_OUTLIER_DETECTION.consecutive5xx,
            consecutiveConnectFailures: o.consecutiveConnectFailures ?? DEFAULT_OUTLIER_DETECTION.consecutiveConnectFailures,
            baseEjectionTimeMs: o.baseEjectionTime ?? DEFAULT_OUTLIER_DETECTION.baseEjectionTimeMs,
            maxEjectionTimeMs: o.maxEjectionTime ?? DEFAULT_OUTLIER_DETECTION.maxEjectionTimeMs,
            maxEjectionPercent: o.maxEjectionPercent ?? DEFAULT_OUTLIER_DETECTION.maxEjectionPercent,
          });
  const cb = c.circuitBreakers;
  const circuitBreakers: CircuitBreakers =
    cb === undefined
      ? DEFAULT_CIRCUIT_BREAKERS
      : Object.freeze({
          maxConnections: cb.maxConnections ?? DEFAULT_CIRCUIT_BREAKERS.maxConnections,
          maxPendingRequests: cb.maxPendingRequests ?? DEFAULT_CIRCUIT_BREAKERS.maxPendingRequests,
          maxRequests: cb.maxRequests ?? DEFAULT_CIRCUIT_BREAKERS.maxRequests,
        });
  return Object.freeze({
    name: c.name,
    protocol: c.protocol,
    endpoints: Object.freeze(c.endpoints.map((e) => Object.freeze(e))),
    maxBodyBytes: c.maxBodyBytes ?? 0,
    connectTimeoutMs: c.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS,
    idleTimeoutMs: c.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS,
    maxConnectionsPerEndpoint:
      c.maxConnectionsPerEndpoint ?? (c.protocol === 'http1' ? DEFAULT_MAX_CONNECTIONS_HTTP1 : DEFAULT_MAX_CONNECTIONS_H2),
    maxPendingPerEndpoint: c.maxPendingPerEndpoint ?? DEFAULT_MAX_PENDING,
    tls,
    meshTls,
    peerIdentity: c.peerIdentity ?? null,
    loadBalancer: c.loadBalancer ?? 'p2c-ewma',
    retries,
    outlierDetection,
    circuitBreakers,
  });
}

// ---------------------------------------------------------------------------------------
// Issue paths and lines
// ---------------------------------------------------------------------------------------

function isSegment(s: PropertyKey): s is PathSegment {
  return typeof s === 'string' || typeof s === 'number';
}

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  // Stable: issues on one line keep the order they were found in; unknown lines go last.
  return issues.sort((a, b) => (a.line === 0 ? Infinity : a.line) - (b.line === 0 ? Infinity : b.line));
}

const IDENT_RE = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** `['listeners', 0, 'address']` → `listeners[0].address`; odd keys are quoted: `routes["a.b"]`. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (IDENT_RE.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** The line of the alias toJS() failed on: the first unresolved one, else the first alias (an alias bomb); 1 if none. */
function aliasLine(doc: Document, lineCounter: LineCounter): number {
  let first = 0;
  let unresolved = 0;
  visit(doc, {
    Alias(_key, node) {
      const line = node.range === undefined || node.range === null ? 0 : lineCounter.linePos(node.range[0]).line;
      if (first === 0) first = line;
      if (node.resolve(doc) !== undefined) return undefined;
      unresolved = line;
      return visit.BREAK;
    },
  });
  return unresolved || first || 1;
}

/** Maps issue paths to lines by walking the YAML node tree. */
class LineFinder {
  private readonly doc: Document;
  private readonly lineCounter: LineCounter;

  constructor(doc: Document, lineCounter: LineCounter) {
    this.doc = doc;
    this.lineCounter = lineCounter;
  }

  issue(path: readonly PathSegment[], message: string): ConfigIssue {
    return { path: formatPath(path), line: this.lineOf(path), message };
  }

  /**
   * The line of the key at the end of `path` (for a list item, the item's own line). When the
   * path leaves the document (a missing key), the line of the deepest node that exists.
   */
  lineOf(path: readonly PathSegment[]): number {
    let node: unknown = this.doc.contents;
    let line = this.nodeLine(node);
    for (const seg of path) {
      node = this.deref(node);
      if (isMap(node)) {
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
        if (pair === undefined) break;
        line = this.nodeLine(pair.key) || this.nodeLine(pair.value) || line;
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number') {
        const item: unknown = node.items[seg];
        if (item === undefined) break;
        line = this.nodeLine(item) || line;
        node = item;
      } else {
        break;
      }
    }
    return line;
  }

  private deref(node: unknown): unknown {
    return isAlias(node) ? node.resolve(this.doc) : node;
  }

  private nodeLine(node: unknown): number {
    if (!isNode(node) || node.range === undefined || node.range === null) return 0;
    return this.lineCounter.linePos(node.range[0]).line;
  }
}
