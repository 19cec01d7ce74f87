/**
 * ContextArena: the per-process free list of RequestContexts (DESIGN invariant 4).
 * `acquire()` pops a recycled context or builds a new one; a context returns through
 * `RequestContext.release()` once its last hold is gone. The free list is bounded: past
 * `maxFree` a returned context is dropped for the GC, so a burst does not pin memory forever.
 * Counters (`hits`, `misses`, `released`) are for tests, metrics and the bench.
 */
import { Hold, RequestContext, type ContextOwner } from './context.js';

export class ContextArena implements ContextOwner {
  private readonly free: RequestContext[];
  readonly maxFree: number;
  bufferBytes: number;
  hits: number;
  misses: number;
  released: number;
  live: number;

  constructor(bufferBytes: number, maxFree = 4096) {
    this.free = [];
    this.maxFree = maxFree;
    this.bufferBytes = bufferBytes;
    this.hits = 0;
    this.misses = 0;
    this.released = 0;
    this.live = 0;
  }

  /** A fresh context holding all three holds (response, request body, telemetry). */
  acquire(): RequestContext {
    let ctx = this.free.pop();
    if (ctx === undefined) {
      ctx = new RequestContext(this.bufferBytes);
      ctx.owner = this;
      this.misses++;
    } else {
      this.hits++;
    }
    ctx.holds = Hold.All;
    this.live++;
    return ctx;
  }

  releaseContext(ctx: RequestContext): void {
    this.live--;
    this.released++;
    ctx.recycle(this.bufferBytes);
    if (this.free.length < this.maxFree) this.free.push(ctx);
  }

  get freeCount(): number {
    return this.free.length;
  }
}
