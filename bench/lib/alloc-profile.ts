/**
 * Two ways of counting bytes allocated on the V8 heap, used by bench/alloc.ts (per proxied
 * request) and bench/micro/run.ts (per call):
 *
 * 1. **Sampling heap profiler** (`HeapProfiler.startSampling` through `node:inspector`) with
 *    `includeObjectsCollectedByMinorGC` and `includeObjectsCollectedByMajorGC`, so garbage that
 *    died young still counts. Without those flags the profile keeps only survivors (checked on
 *    Node 20.20: a loop allocating 1 KiB arrays shows ~3 B/op without them, 1,027 B/op with
 *    them). V8 scales each sample to an unbiased estimate of the bytes it stands for, so the
 *    sum of `selfSize` over the tree is the bytes allocated; the tree gives the sites.
 * 2. **GC accounting** (`v8.GCProfiler`): the sum over every GC of `usedHeapSize` before minus
 *    after (what that GC freed), plus the change of `used_heap_size` over the window. Exact
 *    (no sampling), but process-wide and without sites.
 *
 * Both count the V8 heap only: Buffer contents live outside it (only the small JS objects that
 * point at them are on the heap). The same GC sum over `externalMemory` does NOT measure them:
 * tried on Node 20.20, a loop of `Buffer.allocUnsafeSlow(65536)` showed ~190 B/op, because
 * backing stores are freed by the array-buffer sweeper after the GC's "after" snapshot. So no
 * off-heap figure is reported.
 */
import { readFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { SourceMap, type SourceMapPayload } from 'node:module';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import { REPO_ROOT } from './alloc-common.js';

// ---- GC accounting ------------------------------------------------------------------------

export interface GcAccount {
  /** Bytes allocated on the V8 heap during the window. */
  readonly heapBytes: number;
  readonly scavenges: number;
  readonly otherGcs: number;
  readonly ms: number;
}

export class GcAccounting {
  private profiler: v8.GCProfiler | null;
  private heap0: number;
  private t0: number;

  constructor() {
    this.profiler = null;
    this.heap0 = 0;
    this.t0 = 0;
  }

  start(): void {
    this.profiler = new v8.GCProfiler();
    this.profiler.start();
    this.t0 = performance.now();
    this.heap0 = v8.getHeapStatistics().used_heap_size;
  }

  stop(): GcAccount {
    const used = v8.getHeapStatistics().used_heap_size;
    const ms = performance.now() - this.t0;
    const profiler = this.profiler;
    if (profiler === null) throw new Error('GcAccounting.stop() before start()');
    this.profiler = null;
    const result = profiler.stop();
    let freedHeap = 0;
    let scavenges = 0;
    let otherGcs = 0;
    for (const g of result.statistics) {
      freedHeap += g.beforeGC.heapStatistics.usedHeapSize - g.afterGC.heapStatistics.usedHeapSize;
      if (g.gcType === 'Scavenge' || g.gcType === 'MinorMarkCompact') scavenges++;
      else otherGcs++;
    }
    return {
      heapBytes: freedHeap + used - this.heap0,
      scavenges,
      otherGcs,
      ms,
    };
  }
}

/** Runs `fn` once inside a GC accounting window (call `gc()` first for a quiet start). */
export function accountAllocations(fn: () => void): GcAccount {
  const acc = new GcAccounting();
  acc.start();
  fn();
  return acc.stop();
}

// ---- sampling heap profiler ---------------------------------------------------------------

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
  readonly columnNumber: number;
}

interface ProfileNode {
  readonly callFrame: CallFrame;
  readonly selfSize: number;
  readonly children: readonly ProfileNode[];
}

interface SamplingProfile {
  readonly head: ProfileNode;
}

/** `HeapProfiler.startSampling` parameters; @types/node 20 lacks the two GC flags. */
interface StartSamplingParams {
  readonly samplingInterval: number;
  readonly includeObjectsCollectedByMinorGC: boolean;
  readonly includeObjectsCollectedByMajorGC: boolean;
}

export class HeapSampler {
  private readonly session: Session;
  private isRunning: boolean;

  constructor() {
    this.session = new Session();
    this.isRunning = false;
  }

  private post(method: string, params: object = {}): Promise<object | undefined> {
    return new Promise((res, rej) => {
      this.session.post(method, params, (err, result) => (err !== null ? rej(err) : res(result)));
    });
  }

  /** Starts sampling every ~`intervalBytes` bytes, counting objects collected by any GC. */
  async start(intervalBytes: number): Promise<void> {
    this.session.connect();
    await this.post('HeapProfiler.enable');
    const params: StartSamplingParams = {
      samplingInterval: intervalBytes,
      includeObjectsCollectedByMinorGC: true,
      includeObjectsCollectedByMajorGC: true,
    };
    await this.post('HeapProfiler.startSampling', params);
    this.isRunning = true;
  }

  async stop(): Promise<SamplingProfile> {
    if (!this.isRunning) throw new Error('HeapSampler.stop() before start()');
    const result = (await this.post('HeapProfiler.stopSampling')) as { profile: SamplingProfile } | undefined;
    await this.post('HeapProfiler.disable');
    this.session.disconnect();
    this.isRunning = false;
    if (result === undefined) throw new Error('HeapProfiler.stopSampling returned nothing');
    return result.profile;
  }
}

export interface AllocationSite {
  /** Function name (V8's; `(anonymous)` when it has none). */
  readonly fn: string;
  /**
   * Where the *function* starts (the sampling profiler records function frames, not the
   * allocating line): `src/headers.ts:104` for our code (mapped through the source map),
   * `node:internal/...:line` or `node_modules/...:line` otherwise.
   */
  readonly where: string;
  readonly selfBytes: number;
  /** selfBytes as a share of all sampled bytes. */
  readonly share: number;
}

export interface ProfileSummary {
  /** Sum of selfSize over the whole tree: estimated bytes allocated. */
  readonly totalBytes: number;
  /** Functions by bytes allocated in their own frame. */
  readonly topSelf: readonly AllocationSite[];
  /**
   * Bytes attributed to the innermost Skiff frame (dist/src, dist/protocols, dist/mesh) on the
   * stack, callees outside Skiff included (node:http internals called from our adapter, etc.):
   * which of our functions causes the allocation.
   */
  readonly topSkiffCallers: readonly AllocationSite[];
}

const SKIFF_DIRS = ['src', 'protocols', 'mesh'].map((d) => resolve(REPO_ROOT, 'dist', d) + '/');
const sourceMaps = new Map<string, SourceMap | null>();

function sourceMapFor(file: string): SourceMap | null {
  let sm = sourceMaps.get(file);
  if (sm !== undefined) return sm;
  sm = null;
  try {
    sm = new SourceMap(JSON.parse(readFileSync(file + '.map', 'utf8')) as SourceMapPayload);
  } catch {
    sm = null;
  }
  sourceMaps.set(file, sm);
  return sm;
}

/** Readable location of a frame; Skiff's own frames are mapped back to the .ts line. */
function locate(cf: CallFrame): { where: string; isSkiff: boolean } {
  const url = cf.url;
  if (url === '') return { where: '(native)', isSkiff: false };
  if (!url.startsWith('file://')) return { where: `${url}:${cf.lineNumber + 1}`, isSkiff: false };
  const file = fileURLToPath(url);
  const isSkiff = SKIFF_DIRS.some((d) => file.startsWith(d));
  const sm = file.startsWith(REPO_ROOT + '/dist/') ? sourceMapFor(file) : null;
  if (sm !== null) {
    const e = sm.findEntry(cf.lineNumber, cf.columnNumber);
    if ('originalSource' in e && typeof e.originalSource === 'string') {
      const src = e.originalSource.startsWith('file://') ? fileURLToPath(e.originalSource) : resolve(dirname(file), e.originalSource);
      return { where: `${relative(REPO_ROOT, src)}:${e.originalLine + 1}`, isSkiff };
    }
  }
  const rel = file.startsWith(REPO_ROOT + '/') ? relative(REPO_ROOT, file) : file;
  const nm = rel.lastIndexOf('node_modules/');
  return { where: `${nm >= 0 ? rel.slice(nm) : rel}:${cf.lineNumber + 1}`, isSkiff };
}

/** Sums the profile by function (self) and by innermost Skiff frame; top `n` of each. */
export function summarizeProfile(profile: SamplingProfile, n: number): ProfileSummary {
  const self = new Map<string, { fn: string; where: string; bytes: number }>();
  const callers = new Map<string, { fn: string; where: string; bytes: number }>();
  const locCache = new Map<string, { where: string; isSkiff: boolean }>();
  let total = 0;
  // Explicit stack: the tree may be deep, and this runs after the measurement window.
  const stack: { node: ProfileNode; skiff: string }[] = [{ node: profile.head, skiff: '' }];
  let visited = 0;
  while (stack.length > 0 && visited < 5_000_000) {
    visited++;
    const { node, skiff } = stack.pop() as { node: ProfileNode; skiff: string };
    const cf = node.callFrame;
    const fn = cf.functionName === '' ? '(anonymous)' : cf.functionName;
    const locKey = `${cf.url}:${cf.lineNumber}:${cf.columnNumber}`;
    let loc = locCache.get(locKey);
    if (loc === undefined) {
      loc = locate(cf);
      locCache.set(locKey, loc);
    }
    const key = `${fn} ${loc.where}`;
    const callerKey = loc.isSkiff ? key : skiff;
    if (node.selfSize > 0) {
      total += node.selfSize;
      const s = self.get(key);
      if (s === undefined) self.set(key, { fn, where: loc.where, bytes: node.selfSize });
      else s.bytes += node.selfSize;
      const ck = callerKey === '' ? '(no Skiff frame on the stack)' : callerKey;
      const c = callers.get(ck);
      if (c === undefined) {
        const sp = ck.indexOf(' ');
        callers.set(ck, callerKey === '' ? { fn: ck, where: '', bytes: node.selfSize } : { fn: ck.slice(0, sp), where: ck.slice(sp + 1), bytes: node.selfSize });
      } else {
        c.bytes += node.selfSize;
      }
    }
    for (const child of node.children) stack.push({ node: child, skiff: callerKey });
  }
  const top = (m: Map<string, { fn: string; where: string; bytes: number }>): AllocationSite[] =>
    [...m.values()]
      .sort((a, b) => b.bytes - a.bytes)
      .slice(0, n)
      .map((s) => ({ fn: s.fn, where: s.where, selfBytes: s.bytes, share: total > 0 ? s.bytes / total : 0 }));
  return { totalBytes: total, topSelf: top(self), topSkiffCallers: top(callers) };
}
