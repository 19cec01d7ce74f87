/**
 * The engine's request observer: metrics always, the access log and traces when configured.
 * One object with one shape, whatever is enabled (the engine's call site stays monomorphic);
 * the disabled parts cost a null check.
 */
import type { RequestContext } from '../context.js';
import type { SkiffError } from '../errors.js';
import type { RequestObserver } from '../proxy/engine.js';
import { traceIdFromHeaders, type AccessLog } from './access-log.js';
import type { Metrics } from './metrics.js';
import type { Tracing } from './tracing.js';

export class Telemetry implements RequestObserver {
  readonly metrics: Metrics;
  accessLog: AccessLog | null;
  tracing: Tracing | null;

  constructor(metrics: Metrics, accessLog: AccessLog | null, tracing: Tracing | null) {
    this.metrics = metrics;
    this.accessLog = accessLog;
    this.tracing = tracing;
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
    if (this.tracing !== null) this.tracing.onRequestDone(ctx);
  }
}
