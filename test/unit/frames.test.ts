// FrameQueue (DESIGN invariant 2): chunks pass by reference, buffering is bounded by the
// high watermark with source pause/resume, maxTotalBytes turns into a BODY_TOO_LARGE reset,
// a reset overtakes buffered data and reaches the sink once, and the queue is closed after
// END or RESET.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, SkiffError } from '../../src/errors.js';
import { FrameQueue, type FrameSink, type FrameSource } from '../../src/frames.js';

type Event =
  | { kind: 'data'; chunk: Buffer }
  | { kind: 'trailers'; raw: readonly string[] }
  | { kind: 'end' }
  | { kind: 'reset'; err: SkiffError };

/** A sink that records every frame; `accept` decides what onData returns. */
class RecordingSink implements FrameSink {
  readonly events: Event[] = [];
  /** onData returns true for this many more chunks, then false. Infinity = always ready. */
  budget = Infinity;

  onData(chunk: Buffer): boolean {
    this.events.push({ kind: 'data', chunk });
    this.budget--;
    return this.budget > 0;
  }

  onTrailers(raw: readonly string[]): void {
    this.events.push({ kind: 'trailers', raw });
  }

  onEnd(): void {
    this.events.push({ kind: 'end' });
  }

  onReset(err: SkiffError): void {
    this.events.push({ kind: 'reset', err });
  }

  get data(): Buffer[] {
    const out: Buffer[] = [];
    for (const e of this.events) if (e.kind === 'data') out.push(e.chunk);
    return out;
  }

  get kinds(): string[] {
    return this.events.map((e) => e.kind);
  }

  count(kind: Event['kind']): number {
    return this.events.filter((e) => e.kind === kind).length;
  }
}

class CountingSource implements FrameSource {
  pauses = 0;
  resumes = 0;
  isPaused = false;

  pauseSource(): void {
    this.pauses++;
    this.isPaused = true;
  }

  resumeSource(): void {
    this.resumes++;
    this.isPaused = false;
  }
}

const chunk = (n: number, fill = 0x61): Buffer => Buffer.alloc(n, fill);

describe('FrameQueue', () => {
  it('passes chunks straight through, by reference, when the sink is ready', () => {
    const q = new FrameQueue(1024);
    const sink = new RecordingSink();
    const source = new CountingSource();
    q.source = source;
    q.attachSink(sink);
    const a = chunk(100);
    const b = chunk(5000); // bigger than the high watermark: still no buffering
    q.push(a);
    assert.equal(sink.events.length, 1, 'delivered synchronously inside push');
    q.push(b);
    assert.equal(sink.data[0], a, 'same Buffer object, not a copy');
    assert.equal(sink.data[1], b);
    assert.equal(q.bufferedBytes, 0);
    assert.equal(q.totalBytes, 5100);
    assert.equal(source.pauses, 0);
    q.pushTrailers(['x-t', '1']);
    q.end();
    assert.deepEqual(sink.kinds, ['data', 'data', 'trailers', 'end']);
    assert.equal(q.isDone, true);
  });

  it('ignores empty chunks', () => {
    const q = new FrameQueue(1024);
    const sink = new RecordingSink();
    q.attachSink(sink);
    q.push(Buffer.alloc(0));
    assert.equal(sink.events.length, 0);
    assert.equal(q.totalBytes, 0);
  });

  it('buffers while the sink is paused and delivers in order on resumeSink', () => {
    const q = new FrameQueue(1024);
    const sink = new RecordingSink();
    sink.budget = 1; // first onData returns false
    q.attachSink(sink);
    const c1 = chunk(10, 1);
    const c2 = chunk(10, 2);
    const c3 = chunk(10, 3);
    q.push(c1);
    assert.equal(q.isSinkPaused, true);
    q.push(c2);
    q.push(c3);
    assert.equal(sink.data.length, 1, 'nothing more reaches a paused sink');
    assert.equal(q.bufferedBytes, 20);
    sink.budget = Infinity;
    q.resumeSink();
    assert.deepEqual(sink.data, [c1, c2, c3]);
    assert.equal(sink.data[1], c2);
    assert.equal(q.bufferedBytes, 0);
    assert.equal(q.isSinkPaused, false);
  });

  it('buffers before a sink is attached and flushes on attachSink', () => {
    const q = new FrameQueue(1024);
    q.push(chunk(3, 1));
    q.pushTrailers(['a', 'b']);
    q.end();
    assert.equal(q.isDone, false, 'END is pushed but not delivered yet');
    const sink = new RecordingSink();
    q.attachSink(sink);
    assert.deepEqual(sink.kinds, ['data', 'trailers', 'end']);
    assert.equal(q.isDone, true);
  });

  it('pauses the source at the high watermark and resumes it under the low watermark after resumeSink', () => {
    const q = new FrameQueue(1000); // low watermark 250
    assert.equal(q.lowWatermark, 250);
    const sink = new RecordingSink();
    const source = new CountingSource();
    q.source = source;
    sink.budget = 1;
    q.attachSink(sink);
    q.push(chunk(100)); // delivered, sink now paused
    for (let i = 0; i < 9; i++) q.push(chunk(100));
    assert.equal(q.bufferedBytes, 900);
    assert.equal(source.pauses, 0, 'below the high watermark');
    q.push(chunk(100));
    assert.equal(q.bufferedBytes, 1000);
    assert.equal(source.pauses, 1, 'paused at the high watermark');
    assert.equal(q.isSourcePaused, true);
    q.push(chunk(100)); // a source may overshoot a little; no second pause call
    assert.equal(source.pauses, 1);

    // The sink takes 7 chunks and pauses again: 400 bytes left, above the low watermark.
    sink.budget = 7;
    q.resumeSink();
    assert.equal(q.bufferedBytes, 400);
    assert.equal(source.resumes, 0, 'still above the low watermark');
    assert.equal(q.isSourcePaused, true);

    // It takes 2 more: 200 bytes left, under the low watermark.
    sink.budget = 2;
    q.resumeSink();
    assert.equal(q.bufferedBytes, 200);
    assert.equal(source.resumes, 1, 'resumed under the low watermark');
    assert.equal(q.isSourcePaused, false);

    sink.budget = Infinity;
    q.resumeSink();
    assert.equal(q.bufferedBytes, 0);
    assert.equal(sink.data.length, 12);
    assert.equal(source.pauses, 1);
    assert.equal(source.resumes, 1);
  });

  it('resumeSink on a sink that is not paused does nothing', () => {
    const q = new FrameQueue(100);
    const sink = new RecordingSink();
    q.attachSink(sink);
    q.resumeSink();
    assert.equal(sink.events.length, 0);
  });

  it('maxTotalBytes overflow resets with SKIFF_ERR_BODY_TOO_LARGE, once', () => {
    const q = new FrameQueue(1 << 20);
    q.maxTotalBytes = 1024;
    const sink = new RecordingSink();
    const source = new CountingSource();
    q.source = source;
    q.attachSink(sink);
    q.push(chunk(1000));
    q.push(chunk(24)); // exactly the limit is fine
    assert.equal(sink.count('reset'), 0);
    q.push(chunk(1));
    assert.equal(sink.count('reset'), 1);
    const ev = sink.events[sink.events.length - 1];
    assert.equal(ev.kind, 'reset');
    if (ev.kind === 'reset') {
      assert.ok(ev.err instanceof SkiffError);
      assert.equal(ev.err.code, ErrorCode.BodyTooLarge);
      assert.equal(ev.err.source, 'downstream');
    }
    assert.equal(sink.data.length, 2, 'the overflowing chunk is not delivered');
    assert.equal(q.isDone, true);
    assert.equal(q.resetError?.code, ErrorCode.BodyTooLarge);
    q.push(chunk(10));
    q.end();
    assert.equal(sink.events.length, 3, 'nothing after the reset');
  });

  it('maxTotalBytes overflow while buffered (no sink yet) reaches the sink on attach', () => {
    const q = new FrameQueue(1 << 20);
    q.maxTotalBytes = 10;
    q.push(chunk(6));
    q.push(chunk(6));
    const sink = new RecordingSink();
    q.attachSink(sink);
    assert.deepEqual(sink.kinds, ['reset'], 'buffered data is dropped, only the reset arrives');
    const ev = sink.events[0];
    assert.ok(ev.kind === 'reset' && ev.err.code === ErrorCode.BodyTooLarge);
  });

  it('reset drops buffered data, resumes a paused source and reaches the sink exactly once', () => {
    const q = new FrameQueue(100);
    const sink = new RecordingSink();
    const source = new CountingSource();
    q.source = source;
    sink.budget = 1;
    q.attachSink(sink);
    q.push(chunk(50)); // delivered; sink paused
    q.push(chunk(60));
    q.push(chunk(60)); // 120 buffered >= 100: source paused
    assert.equal(source.pauses, 1);
    const err = new SkiffError(ErrorCode.UpstreamReset, 'upstream', 'boom');
    q.reset(err);
    assert.equal(q.bufferedBytes, 0);
    assert.equal(source.resumes, 1, 'a paused producer is let go so it can drain');
    assert.equal(sink.count('reset'), 1, 'a reset overtakes buffered data even with a paused sink');
    const ev = sink.events[sink.events.length - 1];
    assert.ok(ev.kind === 'reset' && ev.err === err);
    q.reset(new SkiffError(ErrorCode.Internal, 'internal', 'second'));
    sink.budget = Infinity;
    q.resumeSink();
    q.push(chunk(5));
    q.pushTrailers(['x', 'y']);
    q.end();
    assert.deepEqual(sink.kinds, ['data', 'reset'], 'one data frame before, nothing after');
    assert.equal(q.resetError, err, 'the first reset wins');
  });

  it('a reset before a sink is attached is delivered once on attach', () => {
    const q = new FrameQueue(100);
    q.push(chunk(10));
    const err = new SkiffError(ErrorCode.DownstreamReset, 'downstream', 'gone');
    q.reset(err);
    const sink = new RecordingSink();
    q.attachSink(sink);
    assert.deepEqual(sink.kinds, ['reset']);
  });

  it('frames after END are ignored, and a reset after a delivered END is ignored', () => {
    const q = new FrameQueue(100);
    const sink = new RecordingSink();
    q.attachSink(sink);
    q.push(chunk(1));
    q.end();
    q.push(chunk(1));
    q.pushTrailers(['a', 'b']);
    q.end();
    q.reset(new SkiffError(ErrorCode.Internal, 'internal', 'late'));
    assert.deepEqual(sink.kinds, ['data', 'end']);
    assert.equal(q.totalBytes, 1);
    assert.equal(q.resetError, null);
  });

  it('frames pushed after END but before it is delivered are ignored too', () => {
    const q = new FrameQueue(100);
    q.push(chunk(1));
    q.end();
    q.push(chunk(1));
    q.pushTrailers(['a', 'b']);
    const sink = new RecordingSink();
    q.attachSink(sink);
    assert.deepEqual(sink.kinds, ['data', 'end']);
  });

  it('a reset while END still waits in the buffer overtakes it', () => {
    const q = new FrameQueue(100);
    q.push(chunk(1));
    q.end();
    q.reset(new SkiffError(ErrorCode.DownstreamReset, 'downstream', 'gone'));
    const sink = new RecordingSink();
    q.attachSink(sink);
    assert.deepEqual(sink.kinds, ['reset']);
  });

  it('keeps trailers after the data and before END, buffered or not', () => {
    const q = new FrameQueue(1024);
    const sink = new RecordingSink();
    sink.budget = 1;
    q.attachSink(sink);
    const raw = ['grpc-status', '0', 'grpc-message', 'OK'];
    q.push(chunk(1, 1));
    q.push(chunk(1, 2));
    q.pushTrailers(raw);
    q.end();
    assert.deepEqual(sink.kinds, ['data']);
    sink.budget = Infinity;
    q.resumeSink();
    assert.deepEqual(sink.kinds, ['data', 'data', 'trailers', 'end']);
    const t = sink.events[2];
    assert.ok(t.kind === 'trailers' && t.raw === raw, 'trailers passed by reference');
  });

  it('grows its ring past 16 entries and keeps order, also when the head has wrapped', () => {
    const q = new FrameQueue(1 << 20);
    const sink = new RecordingSink();
    sink.budget = 1;
    q.attachSink(sink);
    const sent: Buffer[] = [];
    const send = (): void => {
      const b = Buffer.from([sent.length & 0xff, sent.length >> 8]);
      sent.push(b);
      q.push(b);
    };
    send(); // delivered, sink paused
    for (let i = 0; i < 12; i++) send(); // 12 buffered at slots 0..11
    sink.budget = 6;
    q.resumeSink(); // takes 6: head at 6
    for (let i = 0; i < 40; i++) send(); // wraps the 16-slot ring, then grows twice
    q.pushTrailers(['x-n', String(sent.length)]);
    q.end();
    sink.budget = Infinity;
    q.resumeSink();
    assert.equal(sink.data.length, sent.length);
    for (let i = 0; i < sent.length; i++) assert.equal(sink.data[i], sent[i], `chunk ${i} in order`);
    const kinds = sink.kinds;
    assert.deepEqual(kinds.slice(-2), ['trailers', 'end']);
    assert.equal(q.bufferedBytes, 0);
  });

  it('recycle returns it to a fresh open queue', () => {
    const q = new FrameQueue(100);
    q.maxTotalBytes = 5;
    q.push(chunk(10));
    q.recycle(200);
    assert.equal(q.isOpen, true);
    assert.equal(q.maxTotalBytes, 0);
    assert.equal(q.highWatermark, 200);
    assert.equal(q.lowWatermark, 50);
    assert.equal(q.resetError, null);
    const sink = new RecordingSink();
    q.attachSink(sink);
    q.push(chunk(7));
    q.end();
    assert.deepEqual(sink.kinds, ['data', 'end']);
  });
});
