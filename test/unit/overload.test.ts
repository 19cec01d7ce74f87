// The overload manager's state machine with a fake heap: marks as shares and as bytes, the
// hysteresis (off below 95% of the mark), an immediate re-evaluation on configure() (a config
// reload), and the rate-limited log of state changes. The e2e side is test/e2e/overload.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_LIMITS } from '../../src/config/load.js';
import type { Limits, MemoryMark } from '../../src/config/types.js';
import { OverloadManager, thresholdOf, type HeapSample } from '../../src/overload.js';

const MiB = 1024 * 1024;

function limits(high: MemoryMark, connection: MemoryMark): Limits {
  return { ...DEFAULT_LIMITS, memoryHighWatermark: high, memoryConnectionWatermark: connection };
}

class FakeHeap {
  used = 100 * MiB;
  limit = 1000 * MiB;
  read = (): HeapSample => ({ used: this.used, limit: this.limit });
}

class Lines {
  readonly lines: { level: string; msg: string; obj: object }[] = [];
  info(obj: object, msg: string): void {
    this.lines.push({ level: 'info', msg, obj });
  }
  warn(obj: object, msg: string): void {
    this.lines.push({ level: 'warn', msg, obj });
  }
}

describe('OverloadManager', () => {
  it('thresholds: a share of the heap limit, bytes, or off', () => {
    assert.equal(thresholdOf({ ratio: 0.9, bytes: 0 }, 1000), 900);
    assert.equal(thresholdOf({ ratio: 0, bytes: 64 }, 1000), 64);
    assert.equal(thresholdOf({ ratio: 0, bytes: 0 }, 1000), Infinity);
  });

  it('never sheds without configure() (the engine default)', () => {
    const heap = new FakeHeap();
    heap.used = heap.limit;
    const m = new OverloadManager(null, heap.read);
    m.sample(0);
    assert.equal(m.isShedding, false);
    assert.equal(m.isRefusingConnections, false);
  });

  it('sheds at the high mark and stops below 95% of it; refuses connections at the lower mark', () => {
    const heap = new FakeHeap();
    const log = new Lines();
    const m = new OverloadManager(log, heap.read);
    m.configure(limits({ ratio: 0.9, bytes: 0 }, { ratio: 0.8, bytes: 0 }));
    assert.deepEqual([m.isRefusingConnections, m.isShedding], [false, false]);
    heap.used = 800 * MiB;
    m.sample(1000);
    assert.deepEqual([m.isRefusingConnections, m.isShedding], [true, false]);
    heap.used = 900 * MiB;
    m.sample(2000);
    assert.deepEqual([m.isRefusingConnections, m.isShedding], [true, true]);
    assert.equal(m.sheddingEpisodes, 1);
    heap.used = 860 * MiB; // above 95% of 900 MiB (855): still shedding
    m.sample(3000);
    assert.equal(m.isShedding, true);
    heap.used = 850 * MiB;
    m.sample(4000);
    assert.deepEqual([m.isRefusingConnections, m.isShedding], [true, false]);
    heap.used = 700 * MiB;
    m.sample(5000);
    assert.deepEqual([m.isRefusingConnections, m.isShedding], [false, false]);
    assert.deepEqual(
      log.lines.map((l) => `${l.level} ${l.msg}`),
      [
        'warn overload: refusing new connections (heap over limits.memoryConnectionWatermark)',
        'warn overload: shedding new requests with 503 (heap over limits.memoryHighWatermark)',
        'info overload: accepting new requests again',
        'info overload: accepting new connections again',
      ],
    );
    assert.deepEqual(
      { ...log.lines[1].obj },
      {
        heapUsed: 900 * MiB,
        heapLimit: 1000 * MiB,
        heapUsedPercent: 90,
        memoryHighWatermark: '90%',
        memoryConnectionWatermark: '80%',
        isShedding: true,
        isRefusingConnections: true,
        unloggedChanges: false,
      },
    );
  });

  it('configure() (a reload) re-evaluates at once, in bytes too', () => {
    const heap = new FakeHeap();
    const m = new OverloadManager(null, heap.read);
    m.configure(limits({ ratio: 0, bytes: 1 * MiB }, { ratio: 0, bytes: 0 }));
    assert.equal(m.isShedding, true);
    m.configure(limits({ ratio: 0.95, bytes: 0 }, { ratio: 0, bytes: 0 }));
    assert.equal(m.isShedding, false, 'raising the mark lifts shedding without waiting for the timer');
  });

  it('logs at most two state changes a second, then the state it is left in', () => {
    const heap = new FakeHeap();
    const log = new Lines();
    const m = new OverloadManager(log, heap.read);
    m.configure(limits({ ratio: 0.5, bytes: 0 }, { ratio: 0, bytes: 0 }));
    // Flapping within one second: on, off, on, off, on.
    for (let i = 0; i < 5; i++) {
      heap.used = i % 2 === 0 ? 600 * MiB : 100 * MiB;
      m.sample(10_000 + i * 100);
    }
    assert.equal(m.isShedding, true);
    assert.equal(log.lines.length, 2);
    // Stable from here: the next second's first sample logs the state it ended in.
    m.sample(11_050);
    assert.equal(log.lines.length, 3);
    assert.match(log.lines[2].msg, /state now: shedding requests, accepting connections/);
    assert.equal((log.lines[2].obj as { unloggedChanges: boolean }).unloggedChanges, true);
    m.sample(11_300);
    assert.equal(log.lines.length, 3, 'nothing more while nothing changes');
  });
});
