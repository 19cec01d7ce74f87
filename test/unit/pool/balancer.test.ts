// The balancer and resilience state in isolation (src/pool/balancer.ts): peak EWMA, the
// three balancers, failure penalties, outlier ejection and the retry budget. The end-to-end
// behaviour through real sidecars is in test/e2e/resilience.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_OUTLIER_DETECTION, DEFAULT_RETRIES } from '../../../src/config/load.js';
import type { ClusterConfig, LoadBalancerKind, RetryPolicy } from '../../../src/config/types.js';
import { ClusterState, DEFAULT_RTT_MS, EWMA_DECAY_MS, EndpointStats, FAILURE_PENALTY_MS, RetryBudget, pickEndpoint, recordOutcome } from '../../../src/pool/balancer.js';

interface P {
  readonly name: string;
  readonly stats: EndpointStats;
}

function endpoints(n: number): P[] {
  return Array.from({ length: n }, (_, i) => ({ name: `e${i}`, stats: new EndpointStats() }));
}

function cluster(outlier = true): ClusterConfig {
  return { name: 'c', outlierDetection: outlier ? { ...DEFAULT_OUTLIER_DETECTION, consecutive5xx: 3, baseEjectionTimeMs: 1000, maxEjectionTimeMs: 5000 } : null } as unknown as ClusterConfig;
}

function share(pools: P[], kind: LoadBalancerKind, n: number, now: number, onPick?: (p: P) => void): Map<string, number> {
  const state = new ClusterState('c');
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const p = pickEndpoint(pools, kind, state, null, now);
    assert.ok(p !== undefined);
    counts.set(p.name, (counts.get(p.name) ?? 0) + 1);
    onPick?.(p);
  }
  return counts;
}

describe('EndpointStats: peak EWMA', () => {
  it('starts at the default RTT, jumps to a higher sample, averages in a lower one, and decays while idle', () => {
    const s = new EndpointStats();
    assert.equal(s.cost(0), DEFAULT_RTT_MS);
    s.observe(100, 1000);
    assert.equal(s.cost(1000), 100, 'a sample above the estimate replaces it (peak)');
    s.observe(10, 1000 + EWMA_DECAY_MS);
    const c = s.cost(1000 + EWMA_DECAY_MS);
    assert.ok(c > 10 && c < 100, `a lower sample is averaged in: ${c}`);
    assert.ok(s.cost(1000 + 10 * EWMA_DECAY_MS) < 1, 'idle, the estimate decays towards 0');
  });
});

describe('pickEndpoint', () => {
  it('round robin visits every endpoint in turn and skips ejected ones', () => {
    const pools = endpoints(3);
    const counts = share(pools, 'round-robin', 300, 1);
    assert.deepEqual([...counts.values()], [100, 100, 100]);
    pools[1].stats.ejectedUntil = 10_000;
    const after = share(pools, 'round-robin', 100, 1);
    assert.equal(after.get('e1'), undefined, 'the ejected endpoint gets nothing');
  });

  it('when every endpoint is ejected, all of them are used (panic), not none', () => {
    const pools = endpoints(2);
    for (const p of pools) p.stats.ejectedUntil = 10_000;
    const counts = share(pools, 'p2c-ewma', 100, 1);
    assert.equal((counts.get('e0') ?? 0) + (counts.get('e1') ?? 0), 100);
  });

  it('least-request prefers the endpoint with fewer requests in flight', () => {
    const pools = endpoints(2);
    pools[0].stats.activeRequests = 10;
    const counts = share(pools, 'least-request', 200, 1);
    assert.equal(counts.get('e1'), 200, 'with two endpoints, P2C compares both every time');
  });

  it('p2c-ewma sends a slow endpoint a smaller share than a fast one', () => {
    const pools = endpoints(3);
    const now = 5000;
    pools[0].stats.observe(200, now);
    pools[1].stats.observe(5, now);
    pools[2].stats.observe(5, now);
    const counts = share(pools, 'p2c-ewma', 3000, now);
    assert.ok((counts.get('e0') ?? 0) < 100, `slow endpoint share: ${JSON.stringify([...counts])}`);
  });

  it('an endpoint failing fast does not attract traffic for being quick', () => {
    const pools = endpoints(3);
    const state = new ClusterState('c');
    const c = cluster(false);
    let now = 1000;
    // e0 answers 503 in 1 ms; e1 and e2 answer 200 in 20 ms. Feed outcomes as picks happen.
    const counts = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      now += 1;
      const p = pickEndpoint(pools, 'p2c-ewma', state, null, now) as P;
      counts.set(p.name, (counts.get(p.name) ?? 0) + 1);
      if (p.name === 'e0') recordOutcome(p.stats, state, pools, c, 1, '5xx', now);
      else recordOutcome(p.stats, state, pools, c, 20, 'ok', now);
    }
    const failing = counts.get('e0') ?? 0;
    assert.ok(failing < 3000 / 3 / 4, `the fast-failing endpoint got ${failing} of 3000 (a fair share is 1000)`);
    assert.ok(pools[0].stats.cost(now) >= FAILURE_PENALTY_MS * 0.5, 'its estimate carries the failure penalty');
  });

  it('a retry avoids the previous endpoint when another one is healthy', () => {
    const pools = endpoints(2);
    const state = new ClusterState('c');
    for (let i = 0; i < 50; i++) assert.equal(pickEndpoint(pools, 'p2c-ewma', state, pools[0], 1), pools[1]);
    for (let i = 0; i < 50; i++) assert.equal(pickEndpoint(pools, 'round-robin', state, pools[1], 1), pools[0]);
  });
});

describe('outlier detection', () => {
  it('consecutive 5xx eject an endpoint for a growing time, within the ejection share', () => {
    const pools = endpoints(4);
    const state = new ClusterState('c');
    const c = cluster();
    let ejected = false;
    for (let i = 0; i < 3; i++) ejected = recordOutcome(pools[0].stats, state, pools, c, 1, '5xx', 100);
    assert.equal(ejected, true, 'the third consecutive 5xx ejects');
    assert.equal(pools[0].stats.isEjected(100), true);
    assert.equal(pools[0].stats.isEjected(100 + 999), true);
    assert.equal(pools[0].stats.isEjected(100 + 1000), false, 'back after the base ejection time');
    for (let i = 0; i < 3; i++) recordOutcome(pools[0].stats, state, pools, c, 1, '5xx', 2000);
    assert.equal(pools[0].stats.isEjected(2000 + 1500), true, 'the second ejection lasts twice as long');
    assert.equal(pools[0].stats.isEjected(2000 + 2000), false);
    assert.equal(state.ejectionsTotal, 2);
  });

  it('a success in between resets the count; at most maxEjectionPercent of endpoints are ejected', () => {
    const pools = endpoints(2);
    const state = new ClusterState('c');
    const c = cluster();
    recordOutcome(pools[0].stats, state, pools, c, 1, '5xx', 1);
    recordOutcome(pools[0].stats, state, pools, c, 1, '5xx', 1);
    recordOutcome(pools[0].stats, state, pools, c, 1, 'ok', 1);
    recordOutcome(pools[0].stats, state, pools, c, 1, '5xx', 1);
    assert.equal(pools[0].stats.isEjected(1), false);
    for (let i = 0; i < 3; i++) recordOutcome(pools[0].stats, state, pools, c, 1, '5xx', 1);
    assert.equal(pools[0].stats.isEjected(1), true);
    for (let i = 0; i < 10; i++) recordOutcome(pools[1].stats, state, pools, c, 1, '5xx', 1);
    assert.equal(pools[1].stats.isEjected(1), false, '50% of two endpoints: the second stays in');
  });

  it('connect failures count too; outlier detection off ejects nothing', () => {
    const pools = endpoints(2);
    const state = new ClusterState('c');
    for (let i = 0; i < 5; i++) recordOutcome(pools[0].stats, state, pools, { ...cluster(), outlierDetection: { ...DEFAULT_OUTLIER_DETECTION, consecutive5xx: 100 } } as ClusterConfig, 1, 'connect-failure', 1);
    assert.equal(pools[0].stats.isEjected(1), true, 'five consecutive connect failures eject');
    for (let i = 0; i < 20; i++) recordOutcome(pools[1].stats, state, pools, cluster(false), 1, '5xx', 1);
    assert.equal(pools[1].stats.isEjected(1), false);
  });
});

describe('RetryBudget', () => {
  const policy: RetryPolicy = { ...DEFAULT_RETRIES, budgetPercent: 20, minRetriesPerSecond: 1 };

  it('allows the floor plus a share of recent requests, and no more', () => {
    const b = new RetryBudget();
    let t = 100_000;
    for (let i = 0; i < 100; i++) b.onRequest(t);
    assert.equal(b.remaining(policy, t), 10 + 20, 'floor 1/s over 10 s plus 20% of 100 requests');
    let granted = 0;
    while (b.tryAcquire(policy, t)) granted++;
    assert.equal(granted, 30);
    assert.equal(b.tryAcquire(policy, t), false);
    t += 11_000;
    assert.equal(b.remaining(policy, t), 10, 'ten seconds later the window is empty again');
  });
});
