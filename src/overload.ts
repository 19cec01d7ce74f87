/**
 * The overload manager: Envoy's, reduced to one resource and two actions. The resource is V8's
 * heap in use (`used_heap_size`), sampled every 250 ms; each action has its own mark in
 * `limits` (a share of V8's `heap_size_limit` or a number of bytes, see MemoryMark):
 *
 * - `memoryConnectionWatermark` (default 85%): listeners refuse new connections (TCP accepted
 *   and closed at once, QUIC Initials dropped); established connections keep working. Envoy's
 *   `reject_incoming_connections`.
 * - `memoryHighWatermark` (default 90%): every new request is answered 503
 *   `SKIFF_ERR_LOAD_SHED` with `retry-after: 1`, response flag OM, before routing. Envoy's
 *   `stop_accepting_requests` ("envoy overloaded", flag OM; Envoy sends no retry-after).
 *
 * The request path reads `isShedding`, a field: no call, no syscall per request. The timer is
 * the only place memory is measured. `v8.getHeapStatistics()` costs ~0.4 µs a call on this
 * machine (Node 20, 200k-iteration loop), so four samples a second cost ~1.5 µs of CPU per
 * second. Rejected: `process.memoryUsage.rss()` (~10 µs: it reads /proc/self/stat; and RSS
 * keeps what malloc has not returned to the kernel, so after a peak shedding could latch on
 * with little live data); `process.memoryUsage()` (~10 µs, the same read plus the heap); a
 * check per request (a syscall or a V8 call on the hot path).
 *
 * Hysteresis: an action turns on at its mark and off below 95% of it, so a heap hovering at
 * the mark does not flip the state on every sample. A reload (`configure`) re-evaluates at once.
 * State changes are logged (warn on, info off), at most two lines a second; a change that was
 * not logged is logged (as the state now) on the first sample the budget allows.
 */
import v8 from 'node:v8';
import type { Limits, MemoryMark } from './config/types.js';
import { LogBudget } from './telemetry/log-budget.js';

/** How often the heap is sampled (Envoy's overload manager refresh_interval example: 250 ms). */
export const SAMPLE_INTERVAL_MS = 250;
/** An action turns off below this share of its mark. */
export const RELEASE_FACTOR = 0.95;
const CHANGES_LOGGED_PER_SECOND = 2;
const OFF: MemoryMark = Object.freeze({ ratio: 0, bytes: 0 });

export interface HeapSample {
  /** Bytes of V8 heap in use. */
  readonly used: number;
  /** V8's heap limit (`heap_size_limit`), bytes. */
  readonly limit: number;
}

/** Reads the heap; tests pass their own. */
export type HeapSampler = () => HeapSample;

export interface OverloadLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

function readV8Heap(): HeapSample {
  const s = v8.getHeapStatistics();
  return { used: s.used_heap_size, limit: s.heap_size_limit };
}

/** The mark in bytes for a heap `limit`; Infinity when the mark is off. */
export function thresholdOf(mark: MemoryMark, limit: number): number {
  if (mark.bytes > 0) return mark.bytes;
  if (mark.ratio > 0) return mark.ratio * limit;
  return Infinity;
}

/** The mark as written in the config, for log lines. */
export function describeMark(mark: MemoryMark): string {
  if (mark.bytes > 0) return `${mark.bytes} bytes`;
  if (mark.ratio > 0) return `${Math.round(mark.ratio * 10_000) / 100}%`;
  return 'off';
}

function nextState(isOn: boolean, used: number, threshold: number): boolean {
  return isOn ? used >= threshold * RELEASE_FACTOR : used >= threshold;
}

function onSampleTimer(m: OverloadManager): void {
  m.sample(performance.now());
}

export class OverloadManager {
  /** New requests are answered 503 while this is true (the engine reads it per request). */
  isShedding: boolean;
  /** Listeners refuse new connections while this is true (read per accepted connection). */
  isRefusingConnections: boolean;
  /** Requests shed so far (the engine counts them). */
  requestsShed: number;
  /** Times shedding was turned on. */
  sheddingEpisodes: number;
  /** Heap in use and V8's heap limit at the last sample, bytes. */
  heapUsed: number;
  heapLimit: number;
  private highMark: MemoryMark;
  private connectionMark: MemoryMark;
  private readonly sampler: HeapSampler;
  private readonly log: OverloadLog | null;
  private readonly logBudget: LogBudget;
  /** A state change was not logged for lack of budget: the state is logged when it allows. */
  private isLogOwed: boolean;
  private timer: NodeJS.Timeout | null;

  /** Without `configure()` both marks are off and nothing is ever shed. */
  constructor(log: OverloadLog | null = null, sampler: HeapSampler = readV8Heap) {
    this.isShedding = false;
    this.isRefusingConnections = false;
    this.requestsShed = 0;
    this.sheddingEpisodes = 0;
    this.heapUsed = 0;
    this.heapLimit = 0;
    this.highMark = OFF;
    this.connectionMark = OFF;
    this.sampler = sampler;
    this.log = log;
    this.logBudget = new LogBudget(CHANGES_LOGGED_PER_SECOND);
    this.isLogOwed = false;
    this.timer = null;
  }

  /** Takes the marks of `limits` (start and every reload) and re-evaluates the state at once. */
  configure(limits: Limits): void {
    this.highMark = limits.memoryHighWatermark;
    this.connectionMark = limits.memoryConnectionWatermark;
    this.sample(performance.now());
  }

  /** Samples now and every SAMPLE_INTERVAL_MS (an unref'd timer). Idempotent. */
  start(): void {
    if (this.timer !== null) return;
    this.sample(performance.now());
    this.timer = setInterval(onSampleTimer, SAMPLE_INTERVAL_MS, this);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** One sample: reads the heap and updates both states (`now` is performance.now(), for the log budget). */
  sample(now: number): void {
    const heap = this.sampler();
    this.heapUsed = heap.used;
    this.heapLimit = heap.limit;
    const shed = nextState(this.isShedding, heap.used, thresholdOf(this.highMark, heap.limit));
    const refuse = nextState(this.isRefusingConnections, heap.used, thresholdOf(this.connectionMark, heap.limit));
    const isShedChanged = shed !== this.isShedding;
    const isRefuseChanged = refuse !== this.isRefusingConnections;
    this.isShedding = shed;
    this.isRefusingConnections = refuse;
    if (isShedChanged && shed) this.sheddingEpisodes++;
    if (isShedChanged || isRefuseChanged) this.logChange(now, isShedChanged, isRefuseChanged);
    else if (this.isLogOwed) this.logChange(now, false, false);
  }

  private logChange(now: number, isShedChanged: boolean, isRefuseChanged: boolean): void {
    const log = this.log;
    if (log === null) return;
    if (!this.logBudget.take(now)) {
      this.isLogOwed = true;
      return;
    }
    const wasOwed = this.isLogOwed;
    this.isLogOwed = false;
    const fields = {
      heapUsed: this.heapUsed,
      heapLimit: this.heapLimit,
      heapUsedPercent: this.heapLimit > 0 ? Math.round((this.heapUsed / this.heapLimit) * 1000) / 10 : 0,
      memoryHighWatermark: describeMark(this.highMark),
      memoryConnectionWatermark: describeMark(this.connectionMark),
      isShedding: this.isShedding,
      isRefusingConnections: this.isRefusingConnections,
      unloggedChanges: wasOwed,
    };
    const parts: string[] = [];
    if (isShedChanged) parts.push(this.isShedding ? 'shedding new requests with 503 (heap over limits.memoryHighWatermark)' : 'accepting new requests again');
    if (isRefuseChanged) parts.push(this.isRefusingConnections ? 'refusing new connections (heap over limits.memoryConnectionWatermark)' : 'accepting new connections again');
    if (parts.length === 0) parts.push(`state now: ${this.isShedding ? 'shedding requests' : 'accepting requests'}, ${this.isRefusingConnections ? 'refusing connections' : 'accepting connections'}`);
    const isWorse = (isShedChanged && this.isShedding) || (isRefuseChanged && this.isRefusingConnections);
    if (isWorse) log.warn(fields, `overload: ${parts.join('; ')}`);
    else log.info(fields, `overload: ${parts.join('; ')}`);
  }
}
