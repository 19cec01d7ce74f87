/**
 * The tracer's per-request state, kept on `RequestContext.trace` while tracing is on: the
 * SERVER span, the context the CLIENT spans are children of, and the current attempt's CLIENT
 * span. A type of its own so the context can name it without importing the SDK.
 */
import type { Context, Span } from '@opentelemetry/api';

export class RequestTrace {
  readonly server: Span;
  /** The extracted parent context with the SERVER span set: the parent of every CLIENT span. */
  readonly serverContext: Context;
  client: Span | null;

  constructor(server: Span, serverContext: Context) {
    this.server = server;
    this.serverContext = serverContext;
    this.client = null;
  }
}
