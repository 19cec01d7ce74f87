/**
 * Admin endpoint logic (transport in protocols/admin/server.ts), Envoy's admin port in
 * spirit: readiness and liveness probes, Prometheus metrics, the running config, the clusters
 * with their endpoints' state, the log level, and a drain switch. Everything here reads the
 * runtime through `AdminView`; only POST /logging and POST /drain change anything.
 */
import type { ContextArena } from './arena.js';
import type { ProxyEngine } from './proxy/engine.js';
import type { UpstreamPools } from './pool/upstream-pools.js';
import type { ClusterConfig, ConfigSnapshot, LogLevel } from './config/types.js';
import type { Telemetry } from './telemetry/telemetry.js';
import { LOG_LEVELS, isLogLevel, type Logger } from './telemetry/logger.js';

export interface AdminView {
  readonly ready: boolean;
  readonly arena: ContextArena;
  readonly engine: ProxyEngine;
  readonly pools: UpstreamPools;
  readonly store: { readonly current: ConfigSnapshot };
  readonly telemetry: Telemetry;
  readonly logger: Logger;
  /** Starts a graceful drain (no new connections, GOAWAY); resolves when it has begun. */
  drain(): void;
  readonly isDraining: boolean;
  /** The xDS source, when configured: its stream state and each resource's version. */
  readonly xds: { status(): object } | null;
}

export interface AdminReply {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
}

const TEXT = 'text/plain; charset=utf-8';
const JSON_TYPE = 'application/json';

const PATHS = ['/ready', '/live', '/metrics', '/stats', '/config_dump', '/clusters', '/logging', 'POST /drain'];

export function statsOf(view: AdminView): object {
  const a = view.arena;
  const mem = process.memoryUsage();
  return {
    memory: { rss: mem.rss, heapUsed: mem.heapUsed, heapTotal: mem.heapTotal, external: mem.external, arrayBuffers: mem.arrayBuffers },
    arena: { hits: a.hits, misses: a.misses, released: a.released, live: a.live, free: a.freeCount },
    engine: { inFlight: view.engine.inFlight, requestsTotal: view.engine.requestsTotal },
    pools: view.pools.all().map((p) => ({
      cluster: p.cluster.name,
      endpoint: p.key,
      protocol: p.cluster.protocol,
      connections: p.conns.length,
      connecting: p.connecting,
      activeStreams: p.conns.reduce((n, c) => n + c.activeStreams, 0),
      maxStreams: p.conns.map((c) => c.maxStreams),
      pending: p.pendingCount,
      hits: p.hits,
      slowAcquires: p.slowAcquires,
      connectsStarted: p.connectsStarted,
      connectFailures: p.connectFailures,
    })),
    config: { version: view.store.current.version, source: view.store.current.source },
  };
}

/** /clusters: each cluster's endpoints with health, latency estimate and ejection state. */
export function clustersOf(view: AdminView): object {
  const snap = view.store.current;
  const pools = view.pools.all();
  const now = performance.now();
  return {
    clusters: [...snap.clusters.values()].map((c) => ({
      name: c.name,
      protocol: c.protocol,
      loadBalancer: c.loadBalancer,
      ...clusterStateOf(view, c),
      endpoints: c.endpoints.map((e) => {
        const key = e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
        const p = pools.find((x) => x.key === key && x.cluster.name === c.name);
        return {
          address: key,
          // No active health checking: an endpoint is unhealthy while its connects fail or
          // while outlier detection has it ejected.
          health: p === undefined ? 'unknown' : p.stats.isEjected(now) || p.stats.consecutiveConnectFailures > 0 ? 'unhealthy' : 'healthy',
          consecutiveConnectFailures: p === undefined ? 0 : p.stats.consecutiveConnectFailures,
          consecutive5xx: p === undefined ? 0 : p.stats.consecutive5xx,
          /** Peak-EWMA latency estimate (what the p2c-ewma balancer compares). */
          latencyEwmaMs: p === undefined || p.stats.ewmaStamp === 0 ? null : round3(p.stats.cost(now)),
          activeRequests: p === undefined ? 0 : p.stats.activeRequests,
          ejected: p === undefined ? false : p.stats.isEjected(now),
          ejectedForMs: p === undefined || !p.stats.isEjected(now) ? 0 : Math.round(p.stats.ejectedUntil - now),
          ejections: p === undefined ? 0 : p.stats.ejections,
          requests: p === undefined ? 0 : p.stats.requests,
          failures: p === undefined ? 0 : p.stats.failures,
          connections: p === undefined ? 0 : p.conns.length,
          activeStreams: p === undefined ? 0 : p.conns.reduce((n, x) => n + x.activeStreams, 0),
          pending: p === undefined ? 0 : p.pendingCount,
          connectsStarted: p === undefined ? 0 : p.connectsStarted,
          connectFailures: p === undefined ? 0 : p.connectFailures,
        };
      }),
    })),
  };
}

function clusterStateOf(view: AdminView, c: ClusterConfig): object {
  const st = view.pools.stateOf(c);
  return {
    activeRequests: st.activeRequests,
    pendingRequests: st.pendingRequests,
    retries: st.retries,
    retryBudgetRemaining: st.budget.remaining(c.retries, performance.now()),
    retriesBudgetExhausted: st.retriesBudgetExhausted,
    circuitBreakerOverflows: st.overflows,
    ejectionsTotal: st.ejectionsTotal,
  };
}

const SECRET_KEY_RE = /^(key|password|passphrase|token|secret|privateKey)$/i;

/** /config_dump: the running snapshot as JSON, secrets and URL credentials redacted. */
export function configDumpOf(view: AdminView): object {
  const s = view.store.current;
  const dump = {
    version: s.version,
    source: s.source,
    admin: s.admin,
    listeners: s.listeners,
    routes: Object.fromEntries([...s.routeTables].map(([name, table]) => [name, table.routes])),
    clusters: [...s.clusters.values()],
    limits: s.limits,
    telemetry: s.telemetry,
    xds: view.xds === null ? null : { config: s.xds, ...view.xds.status() },
  };
  return JSON.parse(JSON.stringify(dump, redact)) as object;
}

function redact(this: unknown, key: string, value: unknown): unknown {
  if (SECRET_KEY_RE.test(key) && value !== null && value !== undefined) return '[redacted]';
  if (typeof value === 'string' && /^[a-z][a-z0-9+.-]*:\/\/[^/@\s]*@/i.test(value)) {
    return value.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/i, '$1[redacted]@');
  }
  return value;
}

function json(status: number, body: unknown): AdminReply {
  return { status, contentType: JSON_TYPE, body: JSON.stringify(body, null, 2) + '\n' };
}

function text(status: number, body: string): AdminReply {
  return { status, contentType: TEXT, body };
}

/** GET /logging shows the level; POST /logging?level=debug sets it (Envoy's form). */
function logging(view: AdminView, method: string, query: URLSearchParams): AdminReply {
  if (method === 'POST') {
    const level = query.get('level');
    if (level === null) return text(400, `give the level: POST /logging?level=LEVEL (one of ${LOG_LEVELS.join(', ')})\n`);
    if (!isLogLevel(level)) return text(400, `unknown level "${level}": use one of ${LOG_LEVELS.join(', ')}\n`);
    const before = view.logger.level;
    view.logger.level = level;
    view.logger.info({ from: before, to: level }, 'log level changed through the admin port');
  }
  const accessLog = view.telemetry.accessLog;
  return json(200, {
    level: view.logger.level as LogLevel,
    levels: LOG_LEVELS,
    accessLog: accessLog === null ? { enabled: false } : { enabled: true, path: accessLog.path, sampleRate: accessLog.sampleRate },
  });
}

export async function adminResponse(view: AdminView, method: string, rawPath: string): Promise<AdminReply> {
  const q = rawPath.indexOf('?');
  const path = q < 0 ? rawPath : rawPath.slice(0, q);
  const query = new URLSearchParams(q < 0 ? '' : rawPath.slice(q + 1));
  const isRead = method === 'GET' || method === 'HEAD';
  if (path === '/logging' && (isRead || method === 'POST')) return logging(view, method, query);
  if (path === '/drain') {
    if (method !== 'POST') return text(405, 'use POST /drain\n');
    const wasDraining = view.isDraining;
    view.drain();
    return json(200, { draining: true, alreadyDraining: wasDraining, inFlight: view.engine.inFlight });
  }
  if (!isRead) return text(405, `method not allowed; ${PATHS.join(', ')}\n`);
  switch (path) {
    case '/ready':
      return view.ready ? text(200, 'ready\n') : text(503, view.isDraining ? 'draining\n' : 'not ready\n');
    case '/live':
      return text(200, 'live\n');
    case '/metrics': {
      const m = view.telemetry.metrics;
      return { status: 200, contentType: m.contentType, body: await m.scrape() };
    }
    case '/stats':
      return json(200, statsOf(view));
    case '/config_dump':
      return json(200, configDumpOf(view));
    case '/clusters':
      return json(200, clustersOf(view));
    default:
      return text(404, `unknown admin path; try ${PATHS.join(', ')}\n`);
  }
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
