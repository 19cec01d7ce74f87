/**
 * Admin endpoint logic (transport in protocols/admin/server.ts): readiness, liveness and a
 * JSON stats document with the arena, pool and engine counters that tests and the bench read.
 */
import type { ContextArena } from './arena.js';
import type { ProxyEngine } from './proxy/engine.js';
import type { UpstreamPools } from './pool/upstream-pools.js';
import type { ConfigSnapshot } from './config/types.js';

export interface AdminView {
  readonly ready: boolean;
  readonly arena: ContextArena;
  readonly engine: ProxyEngine;
  readonly pools: UpstreamPools;
  readonly store: { readonly current: ConfigSnapshot };
}

export interface AdminReply {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
}

const TEXT = 'text/plain; charset=utf-8';
const JSON_TYPE = 'application/json';

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

export function adminResponse(view: AdminView, method: string, rawPath: string): AdminReply {
  const q = rawPath.indexOf('?');
  const path = q < 0 ? rawPath : rawPath.slice(0, q);
  if (method !== 'GET' && method !== 'HEAD') return { status: 405, contentType: TEXT, body: 'method not allowed\n' };
  switch (path) {
    case '/ready':
      return view.ready ? { status: 200, contentType: TEXT, body: 'ready\n' } : { status: 503, contentType: TEXT, body: 'not ready\n' };
    case '/live':
      return { status: 200, contentType: TEXT, body: 'live\n' };
    case '/stats':
      return { status: 200, contentType: JSON_TYPE, body: JSON.stringify(statsOf(view), null, 2) + '\n' };
    default:
      return { status: 404, contentType: TEXT, body: 'unknown admin path; try /ready, /live, /stats\n' };
  }
}
