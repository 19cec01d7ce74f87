/**
 * The four measured scenarios of issue 3. Each says whether it applies to a target (or why
 * not), runs its load once, and turns the load result plus the proxy's CPU ticks into figures.
 *
 * - get:     HTTP/1.1 GET /, wrk -t1 -c50 on LOAD_CORE: req/s, p50, p99, proxy CPU µs/request.
 * - latency: HTTP/1.1 GET /, wrk -t1 -c1 (sequential) on PROXY_CORE: p50, p99 (see layout.ts).
 * - post:    1 MiB POST /post, wrk -t1 -c10 + conf/post.lua on LOAD_CORE: MiB/s of request
 *            bodies forwarded (req/s x 1 MiB), proxy CPU µs per MiB.
 * - h2:      HTTP/2 prior knowledge GET /, h2load -t1 -c10 -m10 on LOAD_CORE: req/s, CPU.
 */
import { join } from 'node:path';
import { CLK_TCK } from '../lib/proc.js';
import { LOAD_CORE, PROXY_CORE, type RunningTarget, type Upstream } from './layout.js';
import { runH2load, runWrk, type LoadResult } from './load.js';
import type { Metrics, ScenarioName } from './result.js';

export interface Scenario {
  name: ScenarioName;
  /** Tools without which the scenario is skipped everywhere. */
  needs: readonly string[];
  /** Null when it applies to the target, else the reason it is skipped. */
  skipReason(target: RunningTarget, upstream: Upstream): string | null;
  run(target: RunningTarget, durationS: number, root: string): Promise<LoadResult>;
  /** proxyTicks: CPU ticks of the target's process tree over the run (null for direct). */
  metrics(load: LoadResult, proxyTicks: number | null): Metrics;
}

function cpuUsPer(ticks: number | null, count: number): number | null {
  if (ticks === null || count <= 0) return null;
  return ((ticks / CLK_TCK) * 1e6) / count;
}

const url = (port: number, path: string): string => `http://127.0.0.1:${port}${path}`;

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'get',
    needs: ['wrk'],
    skipReason: () => null,
    run: (t, d) => runWrk({ url: url(t.h1Port, '/'), connections: 50, durationS: d, core: LOAD_CORE }),
    metrics: (l, ticks) => ({ rps: l.rps, p50Us: l.p50Us, p99Us: l.p99Us, cpuUsPerReq: cpuUsPer(ticks, l.requests) }),
  },
  {
    name: 'latency',
    needs: ['wrk'],
    skipReason: () => null,
    run: (t, d) => runWrk({ url: url(t.h1Port, '/'), connections: 1, durationS: d, core: PROXY_CORE }),
    metrics: (l, ticks) => ({ p50Us: l.p50Us, p99Us: l.p99Us, rps: l.rps, cpuUsPerReq: cpuUsPer(ticks, l.requests) }),
  },
  {
    name: 'post',
    needs: ['wrk'],
    skipReason: (_t, up) => (up.postReady ? null : 'the upstream cannot read POST bodies (nginx echo module missing)'),
    run: (t, d, root) =>
      runWrk({ url: url(t.h1Port, '/post'), connections: 10, durationS: d, core: LOAD_CORE, script: join(root, 'bench/e2e/conf/post.lua') }),
    // Each request carries exactly 1 MiB, so MiB/s of forwarded bodies = requests per second.
    metrics: (l, ticks) => ({ mibPerS: l.rps, p99Us: l.p99Us, cpuUsPerMiB: cpuUsPer(ticks, l.requests) }),
  },
  {
    name: 'h2',
    needs: ['h2load'],
    skipReason: (t) => (t.h2Port === null ? (t.h2Note ?? 'no cleartext HTTP/2 in') : null),
    run: (t, d) => runH2load({ url: url(t.h2Port ?? 0, '/'), clients: 10, streams: 10, durationS: d, core: LOAD_CORE }),
    metrics: (l, ticks) => ({ rps: l.rps, cpuUsPerReq: cpuUsPer(ticks, l.requests) }),
  },
];
