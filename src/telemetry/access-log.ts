/**
 * The access log: one JSON line per finished request (Envoy's field set, snake_case), written
 * by pino to an asynchronous destination (sonic-boom, `sync: false`): lines are appended to an
 * in-memory buffer and written by the event loop in batches, so a slow disk or pipe never
 * blocks the request path. Off by default; `telemetry.accessLog.sampleRate` logs a share.
 */
import { pino } from 'pino';
import type { AccessLogConfig } from '../config/types.js';
import type { RequestContext } from '../context.js';
import { responseFlagOf } from '../errors.js';
import { getHeader } from '../headers.js';

const PROTOCOL_NAME: Readonly<Record<string, string>> = { http1: 'HTTP/1.1', h2: 'HTTP/2', h3: 'HTTP/3' };
/**
 * Bound of the in-memory buffer in front of the destination (~50,000 lines): a destination
 * that stops draining (a full pipe, a stalled disk) costs at most this much memory; lines past
 * it are dropped and counted (`dropped`), never queued. sonic-boom's default is no bound.
 */
export const ACCESS_LOG_BUFFER_BYTES = 16 * 1024 * 1024;

/** One access log record; field names follow Envoy's default JSON access log. */
interface AccessRecord {
  start_time: string;
  method: string;
  authority: string;
  path: string;
  protocol: string;
  response_code: number;
  response_flags: string;
  bytes_received: number;
  bytes_sent: number;
  duration_ms: number;
  upstream_host: string | null;
  upstream_cluster: string | null;
  upstream_service_time_ms: number | null;
  request_id: string;
  trace_id: string | null;
  downstream_remote_address: string;
  downstream_peer_principal: string | null;
  user_agent: string | null;
  listener: string;
  error: string | null;
}

export class AccessLog {
  readonly path: string;
  readonly sampleRate: number;
  /** Lines written (handed to the destination). */
  lines: number;
  /** Lines dropped because the buffer held ACCESS_LOG_BUFFER_BYTES already. */
  dropped: number;
  private readonly logger: pino.Logger;
  private readonly dest: pino.DestinationStream & { flushSync(): void; end(): void };

  constructor(cfg: AccessLogConfig) {
    this.path = cfg.path;
    this.sampleRate = cfg.sampleRate;
    this.lines = 0;
    this.dropped = 0;
    const target = cfg.path === 'stdout' ? 1 : cfg.path === 'stderr' ? 2 : cfg.path;
    const dest = pino.destination({ dest: target, sync: false, mkdir: true, maxLength: ACCESS_LOG_BUFFER_BYTES });
    dest.on('drop', () => {
      this.dropped++;
    });
    this.dest = dest;
    this.logger = pino(
      // Every line says what it is ("type":"access"): stdout may carry other output too.
      // (An empty level object would make pino 10 write `{,`.)
      { level: 'info', base: null, timestamp: false, formatters: { level: () => ({ type: 'access' }) } },
      this.dest,
    );
  }

  /** Logs `ctx` unless sampled out. `traceId` is the trace the request belongs to, if known; `now` its end (performance.now()). */
  write(ctx: RequestContext, traceId: string | null, now: number): void {
    if (this.sampleRate < 1 && Math.random() >= this.sampleRate) return;
    const upstreamTime = ctx.upstreamHeadTime > 0 && ctx.upstreamStartTime > 0 ? round3(ctx.upstreamHeadTime - ctx.upstreamStartTime) : null;
    const record: AccessRecord = {
      start_time: new Date(performance.timeOrigin + ctx.startTime).toISOString(),
      method: ctx.method,
      authority: ctx.authority,
      path: ctx.path,
      protocol: PROTOCOL_NAME[ctx.protocol],
      response_code: ctx.responseStatus,
      response_flags: responseFlagOf(ctx.error),
      bytes_received: ctx.requestBody.totalBytes,
      bytes_sent: ctx.responseBody.totalBytes,
      duration_ms: round3(now - ctx.startTime),
      upstream_host: ctx.endpoint === null ? null : ctx.endpoint.key,
      upstream_cluster: ctx.cluster === null ? null : ctx.cluster.name,
      upstream_service_time_ms: upstreamTime,
      request_id: ctx.requestId,
      trace_id: traceId,
      downstream_remote_address: ctx.remoteAddress,
      downstream_peer_principal: ctx.peerIdentity === '' ? null : ctx.peerIdentity,
      user_agent: getHeader(ctx.rawHeaders, 'user-agent'),
      listener: ctx.listenerName,
      error: ctx.error === null ? null : ctx.error.code,
    };
    this.logger.info(record);
    this.lines++;
  }

  /** Writes out what is buffered (shutdown). */
  flush(): void {
    try {
      this.dest.flushSync();
    } catch {
      // Not open yet or already closed: nothing buffered to lose.
    }
  }

  close(): void {
    this.flush();
    this.dest.end();
  }
}

function round3(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/**
 * The trace id of the downstream's W3C `traceparent` (version-traceid-spanid-flags), for the
 * access log when Skiff's own tracing is off; null when absent or malformed.
 */
export function traceIdFromHeaders(raw: readonly string[]): string | null {
  const tp = getHeader(raw, 'traceparent');
  if (tp === null || tp.length < 55 || tp.charCodeAt(2) !== 45 /* - */) return null;
  const id = tp.slice(3, 35);
  return /^[0-9a-f]{32}$/.test(id) && id !== '00000000000000000000000000000000' ? id : null;
}
