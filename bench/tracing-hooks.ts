/**
 * The tracer's per-request cost in isolation: one RequestContext driven through the four
 * observer hooks Tracing implements (request start, upstream start, upstream end, request done)
 * with no I/O, at a given sampling ratio; the exporter points at a closed port (spans are queued
 * and dropped, not sent). Run: `node dist/bench/tracing-hooks.js [0.01]` (the ratio; default
 * runs 0, 0.01 and 1 in turn).
 */
import type { TelemetryConfig } from '../src/config/types.js';
import { RequestContext } from '../src/context.js';
import { createLogger } from '../src/telemetry/logger.js';
import { Tracing } from '../src/telemetry/tracing.js';

const WARMUP = 20_000;
const N = 50_000;

async function measure(sampling: number): Promise<number> {
  const cfg: TelemetryConfig = {
    serviceName: null,
    logLevel: 'silent',
    tracing: { enabled: true, sampling, endpoint: 'http://127.0.0.1:1/v1/traces', protocol: null, propagators: null },
    accessLog: { enabled: false, path: 'stdout', sampleRate: 1 },
  };
  const t = await Tracing.start(cfg, 'bench', createLogger('silent'));
  const ctx = new RequestContext(1024);
  ctx.method = 'GET';
  ctx.path = '/';
  ctx.protocol = 'http1';
  ctx.rawHeaders = ['Host', 'localhost', 'User-Agent', 'wrk', 'Accept', '*/*'];
  const one = (): void => {
    t.onRequestStart(ctx);
    t.onUpstreamStart(ctx);
    t.onUpstreamEnd(ctx, null);
    t.onRequestDone(ctx);
  };
  for (let i = 0; i < WARMUP; i++) one();
  const started = performance.now();
  for (let i = 0; i < N; i++) one();
  const us = ((performance.now() - started) / N) * 1000;
  await Promise.race([t.shutdown().catch(() => undefined), new Promise((r) => setTimeout(r, 200))]);
  return us;
}

const arg = process.argv[2];
for (const s of arg === undefined ? [0, 0.01, 1] : [Number(arg)]) {
  process.stdout.write(`sampling ${s}: ${(await measure(s)).toFixed(2)} µs per request (${N} requests, no I/O)\n`);
}
process.exit(0);
