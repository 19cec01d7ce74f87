// Regression: the P2C balancer (src/pool/balancer.ts pickEndpoint) drew its second candidate
// with a fallback that returned any pool when no second eligible one was left, the avoided
// pool (a retry's previous endpoint) and ejected pools included, and then picked it whenever
// its cost was lower. With two endpoints there is never a second eligible candidate on a
// retry, so a retry went back to the endpoint that had just refused the connection whenever
// that endpoint's penalised estimate (1 s) was below the healthy one's estimate times its
// requests in flight: under load, every try of a request could land on the stopped endpoint
// and the request failed with 502 (test/e2e/endpoint-restart.test.ts, about 1 run in 2). An
// ejected endpoint with a fresh (optimistic) estimate was picked the same way. Now a lone
// eligible candidate is the answer.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { ClusterState, EndpointStats, FAILURE_PENALTY_MS, pickEndpoint } from '../../src/pool/balancer.js';

interface P {
  readonly name: string;
  readonly stats: EndpointStats;
}

function pools(): [P, P] {
  return [
    { name: 'down', stats: new EndpointStats() },
    { name: 'up', stats: new EndpointStats() },
  ];
}

it('a retry never goes back to the avoided endpoint while another one is eligible, even when it looks cheaper', () => {
  const [down, up] = pools();
  const now = 1000;
  down.stats.observe(FAILURE_PENALTY_MS, now); // it just refused a connection
  up.stats.observe(200, now); // a slow moment...
  up.stats.activeRequests = 6; // ...under load: cost 200 x 7 > 1000
  const state = new ClusterState('c');
  for (let i = 0; i < 500; i++) assert.equal(pickEndpoint([down, up], 'p2c-ewma', state, down, now), up);
  for (let i = 0; i < 500; i++) assert.equal(pickEndpoint([up, down], 'least-request', state, down, now), up);
});

it('an ejected endpoint is not picked while another one is eligible, even with a lower cost', () => {
  const [down, up] = pools();
  const now = 1000;
  down.stats.ejectedUntil = now + 5000; // its estimate is fresh: DEFAULT_RTT_MS, the cheapest there is
  up.stats.observe(50, now);
  up.stats.activeRequests = 3;
  const state = new ClusterState('c');
  for (let i = 0; i < 500; i++) assert.equal(pickEndpoint([down, up], 'p2c-ewma', state, null, now), up);
});
