/**
 * The frame model (DESIGN invariant 2). A body moves as DATA, TRAILERS, END and RESET frames
 * through one FrameQueue per direction per request. Chunks pass by reference and are never
 * concatenated. Buffering is bounded by a high watermark: past it the queue pauses its source
 * (socket, HTTP/2 stream, QUIC stream) and resumes it under the low watermark once the sink has
 * drained. A separate optional limit on the total body size (`maxTotalBytes`) turns into a
 * SKIFF_ERR_BODY_TOO_LARGE reset.
 *
 * Contract:
 * - exactly one producer calls push/pushTrailers/end/reset; it registers a FrameSource so the
 *   queue can pause and resume it;
 * - exactly one consumer attaches a FrameSink; a sink whose onData returns false is paused
 *   and calls `resumeSink()` when it can take more (e.g. on the socket's 'drain');
 * - after END or RESET has been delivered the queue is closed; later pushes are ignored, so a
 *   producer racing a reset loses nothing else.
 */
import { ErrorCode, SkiffError } from './errors.js';

/** The producer side, as the queue sees it. Implemented by protocol adapters and codecs. */
export interface FrameSource {
  pauseSource(): void;
  resumeSource(): void;
}

/** The consumer side. Implemented by protocol writers (downstream) and codecs (upstream). */
export interface FrameSink {
  /** Returns false when the sink wants no more data until it calls `resumeSink()`. */
  onData(chunk: Buffer): boolean;
  /** Trailers as a flat [name, value, ...] list, exactly as the producer's parser gave it. */
  onTrailers(rawTrailers: readonly string[]): void;
  onEnd(): void;
  onReset(err: SkiffError): void;
}

export const enum FrameKind {
  Data = 0,
  Trailers = 1,
  End = 2,
}

export const enum QueueState {
  /** Frames may still arrive. */
  Open = 0,
  /** END or RESET was pushed (it may still wait in the buffer). */
  Closed = 1,
  /** END or RESET was delivered to the sink. */
  Done = 2,
}

const EMPTY_TRAILERS: readonly string[] = [];

/**
 * Process-wide total of bytes waiting in frame queues (every queue's `bufferedBytes` summed),
 * for the `skiff_buffered_frame_bytes` gauge. One add per buffered chunk, none on the fast path.
 */
export const frameTotals = { bufferedBytes: 0 };
const INITIAL_RING = 16;

export class FrameQueue {
  source: FrameSource | null;
  sink: FrameSink | null;
  state: QueueState;
  /** Bytes pushed but not yet handed to the sink. */
  bufferedBytes: number;
  /** Bytes pushed in total (the body size so far). */
  totalBytes: number;
  highWatermark: number;
  lowWatermark: number;
  /** 0 means unlimited. */
  maxTotalBytes: number;
  isSourcePaused: boolean;
  isSinkPaused: boolean;
  /** True once the END frame has been pushed (as opposed to a reset). */
  hasEnded: boolean;
  resetError: SkiffError | null;
  // Ring buffer of pending frames: parallel arrays keep every slot monomorphic.
  private kinds: FrameKind[];
  private chunks: (Buffer | null)[];
  private trailers: (readonly string[] | null)[];
  private head: number;
  private count: number;
  private isFlushing: boolean;

  constructor(highWatermark: number) {
    this.source = null;
    this.sink = null;
    this.state = QueueState.Open;
    this.bufferedBytes = 0;
    this.totalBytes = 0;
    this.highWatermark = highWatermark;
    this.lowWatermark = highWatermark >>> 2;
    this.maxTotalBytes = 0;
    this.isSourcePaused = false;
    this.isSinkPaused = false;
    this.hasEnded = false;
    this.resetError = null;
    this.kinds = new Array<FrameKind>(INITIAL_RING).fill(FrameKind.Data);
    this.chunks = new Array<Buffer | null>(INITIAL_RING).fill(null);
    this.trailers = new Array<readonly string[] | null>(INITIAL_RING).fill(null);
    this.head = 0;
    this.count = 0;
    this.isFlushing = false;
  }

  /** Back to a fresh queue for a recycled context; the ring arrays are kept. */
  recycle(highWatermark: number): void {
    for (let i = 0; i < this.count; i++) {
      const slot = (this.head + i) & (this.chunks.length - 1);
      this.chunks[slot] = null;
      this.trailers[slot] = null;
    }
    this.source = null;
    this.sink = null;
    this.state = QueueState.Open;
    frameTotals.bufferedBytes -= this.bufferedBytes;
    this.bufferedBytes = 0;
    this.totalBytes = 0;
    this.highWatermark = highWatermark;
    this.lowWatermark = highWatermark >>> 2;
    this.maxTotalBytes = 0;
    this.isSourcePaused = false;
    this.isSinkPaused = false;
    this.hasEnded = false;
    this.resetError = null;
    this.head = 0;
    this.count = 0;
    this.isFlushing = false;
  }

  get isDone(): boolean {
    return this.state === QueueState.Done;
  }

  get isOpen(): boolean {
    return this.state === QueueState.Open;
  }

  // ---- producer side -------------------------------------------------------------------

  /** Pushes a DATA frame. Pauses the source when the buffer passes the high watermark. */
  push(chunk: Buffer): void {
    if (this.state !== QueueState.Open) return;
    const len = chunk.length;
    if (len === 0) return;
    this.totalBytes += len;
    if (this.maxTotalBytes > 0 && this.totalBytes > this.maxTotalBytes) {
      this.reset(new SkiffError(ErrorCode.BodyTooLarge, 'downstream', `body exceeds ${this.maxTotalBytes} bytes`));
      return;
    }
    if (this.count === 0 && this.sink !== null && !this.isSinkPaused) {
      // Fast path: nothing waits, hand the chunk straight over.
      if (!this.sink.onData(chunk)) this.isSinkPaused = true;
      return;
    }
    this.enqueue(FrameKind.Data, chunk, null);
    this.bufferedBytes += len;
    frameTotals.bufferedBytes += len;
    if (this.bufferedBytes >= this.highWatermark && !this.isSourcePaused && this.source !== null) {
      this.isSourcePaused = true;
      this.source.pauseSource();
    }
  }

  pushTrailers(rawTrailers: readonly string[]): void {
    if (this.state !== QueueState.Open) return;
    if (this.count === 0 && this.sink !== null && !this.isSinkPaused) {
      this.sink.onTrailers(rawTrailers);
      return;
    }
    this.enqueue(FrameKind.Trailers, null, rawTrailers);
  }

  /** Pushes END. Closes the queue for the producer. */
  end(): void {
    if (this.state !== QueueState.Open) return;
    this.state = QueueState.Closed;
    this.hasEnded = true;
    if (this.count === 0 && this.sink !== null && !this.isSinkPaused) {
      this.state = QueueState.Done;
      this.sink.onEnd();
      return;
    }
    this.enqueue(FrameKind.End, null, null);
  }

  /**
   * RESET: drops whatever is buffered and tells the sink at once (a reset overtakes data).
   * Either side may call it; the first reset wins, later ones are ignored.
   */
  reset(err: SkiffError): void {
    if (this.state === QueueState.Done) return;
    this.state = QueueState.Done;
    this.resetError = err;
    this.dropBuffered();
    // A paused producer is let go so it can drain and discard the rest of its input.
    if (this.isSourcePaused && this.source !== null) {
      this.isSourcePaused = false;
      this.source.resumeSource();
    }
    if (this.sink !== null) this.sink.onReset(err);
  }

  // ---- consumer side -------------------------------------------------------------------

  /** Attaches the consumer and delivers whatever is already buffered. */
  attachSink(sink: FrameSink): void {
    this.sink = sink;
    this.isSinkPaused = false;
    if (this.state === QueueState.Done && this.resetError !== null) {
      sink.onReset(this.resetError);
      return;
    }
    this.flush();
  }

  /** Detaches the consumer without ending the body (e.g. an upstream attempt that failed). */
  detachSink(): void {
    this.sink = null;
  }

  /** Called by a paused sink when it can take more. */
  resumeSink(): void {
    if (!this.isSinkPaused) return;
    this.isSinkPaused = false;
    this.flush();
  }

  private flush(): void {
    if (this.isFlushing) return;
    this.isFlushing = true;
    const sink = this.sink;
    while (this.count > 0 && sink !== null && !this.isSinkPaused && this.sink === sink) {
      const slot = this.head;
      const kind = this.kinds[slot];
      const chunk = this.chunks[slot];
      const trailers = this.trailers[slot];
      this.chunks[slot] = null;
      this.trailers[slot] = null;
      this.head = (slot + 1) & (this.chunks.length - 1);
      this.count--;
      if (kind === FrameKind.Data) {
        this.bufferedBytes -= (chunk as Buffer).length;
        frameTotals.bufferedBytes -= (chunk as Buffer).length;
        if (!sink.onData(chunk as Buffer)) this.isSinkPaused = true;
      } else if (kind === FrameKind.Trailers) {
        sink.onTrailers(trailers ?? EMPTY_TRAILERS);
      } else {
        this.state = QueueState.Done;
        sink.onEnd();
      }
    }
    this.isFlushing = false;
    if (this.isSourcePaused && this.bufferedBytes <= this.lowWatermark && this.source !== null && this.state === QueueState.Open) {
      this.isSourcePaused = false;
      this.source.resumeSource();
    }
  }

  private enqueue(kind: FrameKind, chunk: Buffer | null, trailers: readonly string[] | null): void {
    if (this.count === this.chunks.length) this.grow();
    const slot = (this.head + this.count) & (this.chunks.length - 1);
    this.kinds[slot] = kind;
    this.chunks[slot] = chunk;
    this.trailers[slot] = trailers;
    this.count++;
  }

  private grow(): void {
    const size = this.chunks.length;
    const kinds = new Array<FrameKind>(size * 2).fill(FrameKind.Data);
    const chunks = new Array<Buffer | null>(size * 2).fill(null);
    const trailers = new Array<readonly string[] | null>(size * 2).fill(null);
    for (let i = 0; i < this.count; i++) {
      const from = (this.head + i) & (size - 1);
      kinds[i] = this.kinds[from];
      chunks[i] = this.chunks[from];
      trailers[i] = this.trailers[from];
    }
    this.kinds = kinds;
    this.chunks = chunks;
    this.trailers = trailers;
    this.head = 0;
  }

  private dropBuffered(): void {
    for (let i = 0; i < this.count; i++) {
      const slot = (this.head + i) & (this.chunks.length - 1);
      this.chunks[slot] = null;
      this.trailers[slot] = null;
    }
    this.head = 0;
    this.count = 0;
    frameTotals.bufferedBytes -= this.bufferedBytes;
    this.bufferedBytes = 0;
  }
}
