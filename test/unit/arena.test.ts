// ContextArena and RequestContext lifetime (DESIGN invariant 4): a context is recycled only
// when its three holds are released, a recycled context carries a new generation, a late use
// of the old generation throws SKIFF_ERR_STALE_CONTEXT, and the free list is bounded.
import type { EndpointPool } from '../../src/pool/endpoint-pool.js';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ContextArena } from '../../src/arena.js';
import { Hold, type RequestContext } from '../../src/context.js';
import { ErrorCode, SkiffError } from '../../src/errors.js';

const BUF = 64 * 1024;

function releaseAll(ctx: RequestContext): void {
  ctx.release(Hold.Response);
  ctx.release(Hold.RequestBody);
  ctx.release(Hold.Telemetry);
}

function isStale(err: unknown): boolean {
  return err instanceof SkiffError && err.code === ErrorCode.StaleContext && err.source === 'internal';
}

describe('ContextArena', () => {
  it('acquire on an empty arena builds a context holding all three holds', () => {
    const arena = new ContextArena(BUF);
    const ctx = arena.acquire();
    assert.equal(ctx.holds, Hold.All);
    assert.equal(Hold.All, Hold.Response | Hold.RequestBody | Hold.Telemetry);
    assert.equal(ctx.owner, arena);
    assert.equal(arena.misses, 1);
    assert.equal(arena.hits, 0);
    assert.equal(arena.live, 1);
    assert.equal(arena.freeCount, 0);
  });

  it('releasing the holds recycles the context; the next acquire reuses it with a new generation', () => {
    const arena = new ContextArena(BUF);
    const ctx = arena.acquire();
    const gen = ctx.generation;
    releaseAll(ctx);
    assert.equal(arena.live, 0);
    assert.equal(arena.released, 1);
    assert.equal(arena.freeCount, 1);
    assert.equal(ctx.generation, gen + 1);

    const again = arena.acquire();
    assert.equal(again, ctx, 'the recycled context comes back');
    assert.equal(again.generation, gen + 1);
    assert.equal(again.holds, Hold.All);
    assert.equal(arena.hits, 1);
    assert.equal(arena.misses, 1);
    assert.equal(arena.live, 1);
    assert.equal(arena.freeCount, 0);

    releaseAll(again);
    assert.equal(arena.acquire().generation, gen + 2, 'every recycle bumps the generation');
  });

  it('check(oldGen) throws SKIFF_ERR_STALE_CONTEXT after a recycle; the current generation passes', () => {
    const arena = new ContextArena(BUF);
    const ctx = arena.acquire();
    const oldGen = ctx.generation;
    assert.doesNotThrow(() => ctx.check(oldGen));
    assert.equal(ctx.isLive(oldGen), true);
    releaseAll(ctx);
    assert.throws(() => ctx.check(oldGen), isStale);
    assert.equal(ctx.isLive(oldGen), false);

    const reused = arena.acquire();
    assert.equal(reused, ctx);
    assert.throws(() => reused.check(oldGen), isStale, 'the old generation stays stale in the next life');
    assert.doesNotThrow(() => reused.check(reused.generation));
    try {
      reused.check(oldGen);
      assert.fail('check did not throw');
    } catch (err) {
      assert.ok(err instanceof SkiffError);
      assert.equal(err.code, 'SKIFF_ERR_STALE_CONTEXT');
      assert.match(err.message, new RegExp(`generation ${oldGen}`));
    }
  });

  for (const order of [
    [Hold.Response, Hold.RequestBody, Hold.Telemetry],
    [Hold.Telemetry, Hold.Response, Hold.RequestBody],
    [Hold.RequestBody, Hold.Telemetry, Hold.Response],
  ] as const) {
    it(`is not recycled until all three holds are released (order ${order.join(',')})`, () => {
      const arena = new ContextArena(BUF);
      const ctx = arena.acquire();
      const gen = ctx.generation;
      ctx.method = 'POST';
      ctx.path = '/x';
      for (let i = 0; i < order.length; i++) {
        ctx.release(order[i]);
        const isLast = i === order.length - 1;
        if (!isLast) {
          assert.equal(ctx.generation, gen, `still the same life after releasing ${order[i]}`);
          assert.equal(ctx.method, 'POST', 'fields untouched before the last hold');
          assert.equal(arena.live, 1);
          assert.equal(arena.freeCount, 0);
          assert.equal(arena.released, 0);
          // Releasing the same hold twice must not count as another hold.
          ctx.release(order[i]);
          assert.equal(ctx.generation, gen);
          assert.equal(arena.freeCount, 0);
        }
      }
      assert.equal(ctx.generation, gen + 1);
      assert.equal(arena.live, 0);
      assert.equal(arena.released, 1);
      assert.equal(arena.freeCount, 1);
    });
  }

  it('a hold released after the recycle does not recycle the context twice', () => {
    const arena = new ContextArena(BUF);
    const ctx = arena.acquire();
    releaseAll(ctx);
    const gen = ctx.generation;
    ctx.release(Hold.Response);
    ctx.release(Hold.All);
    assert.equal(ctx.generation, gen);
    assert.equal(arena.released, 1);
    assert.equal(arena.freeCount, 1);
    assert.equal(arena.live, 0);
  });

  it('recycle resets request state in place (fields, bodies, timer)', () => {
    const arena = new ContextArena(BUF);
    const ctx = arena.acquire();
    const requestBody = ctx.requestBody;
    const outHeaders = ctx.outHeaders;
    ctx.method = 'PUT';
    ctx.path = '/p';
    ctx.authority = 'a.example';
    ctx.rawHeaders = ['x-a', '1'];
    ctx.contentLength = 10;
    ctx.hasRequestBody = true;
    ctx.requestId = 'rid';
    ctx.endpoint = { key: '127.0.0.1:1' } as unknown as EndpointPool;
    ctx.responseStatus = 502;
    ctx.isResponseStarted = true;
    ctx.isFinished = true;
    ctx.isUpstreamDone = true;
    ctx.error = new SkiffError(ErrorCode.Internal, 'internal', 'x');
    ctx.outHeaders.push('a', 'b');
    ctx.responseHeaders.push('c', 'd');
    ctx.requestBody.push(Buffer.from('hello'));
    ctx.requestBody.end();
    let isTimerFired = false;
    ctx.timer = setTimeout(() => {
      isTimerFired = true;
    }, 1);
    releaseAll(ctx);

    assert.equal(ctx.method, '');
    assert.equal(ctx.path, '');
    assert.equal(ctx.authority, '');
    assert.deepEqual(ctx.rawHeaders, []);
    assert.equal(ctx.contentLength, -1);
    assert.equal(ctx.hasRequestBody, false);
    assert.equal(ctx.requestId, '');
    assert.equal(ctx.endpoint, null);
    assert.equal(ctx.responseStatus, 0);
    assert.equal(ctx.isResponseStarted, false);
    assert.equal(ctx.isFinished, false);
    assert.equal(ctx.isUpstreamDone, false);
    assert.equal(ctx.error, null);
    assert.equal(ctx.timer, null);
    assert.equal(ctx.outHeaders, outHeaders, 'scratch lists are reused, not reallocated');
    // The lists keep their length (no backing-store churn) but hold nothing of the old request.
    assert.ok(ctx.outHeaders.every((v) => v === ''), 'no header value outlives its request');
    assert.ok(ctx.responseHeaders.every((v) => v === ''), 'no header value outlives its request');
    assert.equal(ctx.requestBody, requestBody, 'frame queues are reused');
    assert.equal(ctx.requestBody.isOpen, true);
    assert.equal(ctx.requestBody.totalBytes, 0);
    assert.equal(ctx.requestBody.bufferedBytes, 0);
    assert.equal(ctx.requestBody.hasEnded, false);
    return new Promise<void>((resolve) => {
      setTimeout(() => {
        assert.equal(isTimerFired, false, 'the recycle cleared the pending timer');
        resolve();
      }, 20);
    });
  });

  it('the free list is bounded by maxFree; contexts past it are dropped', () => {
    const arena = new ContextArena(BUF, 2);
    assert.equal(arena.maxFree, 2);
    const ctxs: RequestContext[] = [];
    for (let i = 0; i < 5; i++) ctxs.push(arena.acquire());
    assert.equal(arena.misses, 5);
    assert.equal(arena.live, 5);
    for (const c of ctxs) releaseAll(c);
    assert.equal(arena.released, 5);
    assert.equal(arena.live, 0);
    assert.equal(arena.freeCount, 2);

    const a = arena.acquire();
    const b = arena.acquire();
    const c = arena.acquire();
    assert.equal(arena.hits, 2);
    assert.equal(arena.misses, 6, 'the third acquire builds a new context');
    assert.ok(ctxs.includes(a) && ctxs.includes(b));
    assert.ok(!ctxs.includes(c));
    assert.equal(arena.freeCount, 0);
  });

  it('a steady acquire/release loop allocates one context and reuses it', () => {
    const arena = new ContextArena(BUF);
    for (let i = 0; i < 1000; i++) releaseAll(arena.acquire());
    assert.equal(arena.misses, 1);
    assert.equal(arena.hits, 999);
    assert.equal(arena.released, 1000);
    assert.equal(arena.live, 0);
    assert.equal(arena.freeCount, 1);
  });
});
