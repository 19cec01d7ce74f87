/**
 * The engine's request observer: metrics always, the access log and traces when configured.
 * One object with one shape, whatever is enabled (the engine's call site stays monomorphic);
 * the disabled parts cost a null check.
 */
import type { RequestContext } from '../context.js';
import { ErrorCode, type SkiffError } from '../errors.js';
import { LogBudget } from './log-budget.js';
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
  private readonly denials: LogBudget;

  constructor(metrics: Metrics, accessLog: AccessLog | null, tracing: Tracing | null, logger: Logger | null = null) {
    this.metrics = metrics;
    this.accessLog = accessLog;
    this.tracing = tracing;
    this.logger = logger;
    this.denials = new LogBudget(DENIALS_LOGGED_PER_SECOND);
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
    const now = performance.now();
    this.metrics.observe(ctx, now);
    if (this.accessLog !== null) {
      const trace = ctx.trace;
      const traceId = trace !== null ? trace.server.spanContext().traceId : traceIdFromHeaders(ctx.rawHeaders);
      this.accessLog.write(ctx, traceId, now);
    }
    if (ctx.error !== null && ctx.error.code === ErrorCode.Forbidden) this.logDenial(ctx, now);
    if (this.tracing !== null) this.tracing.onRequestDone(ctx);
  }

  /** Authorization refusals are logged with the identity the peer presented. */
  private logDenial(ctx: RequestContext, now: number): void {
    if (this.logger === null) return;
    const allowed = this.denials.take(now);
    if (this.denials.suppressed > 0) this.logger.warn({ suppressed: this.denials.suppressed }, 'more requests denied than logged');
    if (!allowed) return;
    this.logger.warn(
      { peer: ctx.peerIdentity === '' ? null : ctx.peerIdentity, listener: ctx.listenerName, method: ctx.method, path: ctx.path, remote: ctx.remoteAddress, reason: ctx.error === null ? '' : ctx.error.message },
      'request denied: peer not authorized',
    );
  }
}
