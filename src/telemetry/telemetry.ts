/**
 * The engine's request observer: metrics always, the access log and traces when configured.
 * One object with one shape, whatever is enabled (the engine's call site stays monomorphic);
 * the disabled parts cost a null check.
 */
import type { RequestContext } from '../context.js';
import { ErrorCode, type SkiffError } from '../errors.js';
import type { Logger } from './logger.js';
import type { RequestObserver } from '../proxy/engine.js';
import { traceIdFromHeaders, type AccessLog } from './access-log.js';
import type { Metrics } from './metrics.js';
import type { Tracing } from './tracing.js';

/** Denied requests logged per second at most (a flood of them must not flood the log). */
const DENIALS_LOGGED_PER_SECOND = 10;

export class Telemetry implements RequestObserver {
  readonly metrics: Metrics;
  accessLog: AccessLog | null;
  tracing: Tracing | null;
  private readonly logger: Logger | null;
  private denialSecond: number;
  private denialsThisSecond: number;

  constructor(metrics: Metrics, accessLog: AccessLog | null, tracing: Tracing | null, logger: Logger | null = null) {
    this.metrics = metrics;
    this.accessLog = accessLog;
    this.tracing = tracing;
    this.logger = logger;
    this.denialSecond = 0;
    this.denialsThisSecond = 0;
  }

  onRequestStart(ctx: RequestContext): void {
    if (this.tracing !== null) this.tracing.onRequestStart(ctx);
  }

  onUpstreamStart(ctx: RequestContext): void {
    if (this.tracing !== null) this.tracing.onUpstreamStart(ctx);
  }

  onUpstreamEnd(ctx: RequestContext, err: SkiffError | null): void {
    if (this.tracing !== null) this.tracing.onUpstreamEnd(ctx, err);
  }

  onRequestDone(ctx: RequestContext): void {
    this.metrics.observe(ctx);
    if (this.accessLog !== null) {
      const trace = ctx.trace;
      const traceId = trace !== null ? trace.server.spanContext().traceId : traceIdFromHeaders(ctx.rawHeaders);
      this.accessLog.write(ctx, traceId);
    }
    if (ctx.error !== null && ctx.error.code === ErrorCode.Forbidden) this.logDenial(ctx);
    if (this.tracing !== null) this.tracing.onRequestDone(ctx);
  }

  /** Authorization refusals are logged with the identity the peer presented. */
  private logDenial(ctx: RequestContext): void {
    if (this.logger === null) return;
    const second = Math.floor(performance.now() / 1000);
    if (second !== this.denialSecond) {
      if (this.denialsThisSecond > DENIALS_LOGGED_PER_SECOND) {
        this.logger.warn({ suppressed: this.denialsThisSecond - DENIALS_LOGGED_PER_SECOND }, 'more requests denied than logged');
      }
      this.denialSecond = second;
      this.denialsThisSecond = 0;
    }
    if (++this.denialsThisSecond > DENIALS_LOGGED_PER_SECOND) return;
    this.logger.warn(
      { peer: ctx.peerIdentity === '' ? null : ctx.peerIdentity, listener: ctx.listenerName, method: ctx.method, path: ctx.path, remote: ctx.remoteAddress, reason: ctx.error === null ? '' : ctx.error.message },
      'request denied: peer not authorized',
    );
  }
}
