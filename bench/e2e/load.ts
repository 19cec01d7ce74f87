/**
 * Load generators: wrk (HTTP/1.1) and h2load (HTTP/2, cleartext prior knowledge), each run
 * pinned to a core, bounded by its own duration and by a hard kill timeout, with the output
 * parsed into numbers. A run that fails, times out or cannot be parsed throws.
 */
import { parseWrkDurationUs } from '../lib/stats.js';
import { runCommand } from '../lib/spawn.js';

/** Past the requested duration, how long a load generator may take before it is killed. */
const KILL_AFTER_MS = 30_000;

export interface LoadResult {
  /** Completed requests (wrk: all responses; h2load: done). */
  requests: number;
  durationS: number;
  rps: number;
  /** Latency percentiles in µs (wrk only; null for h2load). */
  p50Us: number | null;
  p99Us: number | null;
  /** Socket errors, timeouts, failed streams. */
  errors: number;
  /** Responses that were not 2xx/3xx. */
  non2xx: number;
}

export interface WrkOptions {
  url: string;
  connections: number;
  durationS: number;
  core: number;
  /** A wrk Lua script (the POST body). */
  script?: string;
}

export async function runWrk(o: WrkOptions): Promise<LoadResult> {
  const args = ['-t1', `-c${o.connections}`, `-d${o.durationS}s`, '--timeout', '5s', '--latency'];
  if (o.script !== undefined) args.push('-s', o.script);
  args.push(o.url);
  const r = await runCommand({ cmd: 'wrk', args, core: o.core, timeoutMs: o.durationS * 1000 + KILL_AFTER_MS });
  if (r.timedOut) throw new Error(`wrk did not finish within ${o.durationS}s + ${KILL_AFTER_MS / 1000}s`);
  if (r.code !== 0) throw new Error(`wrk exited ${r.code}: ${r.stderr.trim()}`);
  return parseWrk(r.stdout);
}

export function parseWrk(out: string): LoadResult {
  const done = /(\d+) requests in ([\d.]+\w+),/.exec(out);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /^\s+50%\s+(\S+)/m.exec(out);
  const p99 = /^\s+99%\s+(\S+)/m.exec(out);
  if (done === null || rps === null) throw new Error(`cannot parse wrk output:\n${out}`);
  const durationUs = parseWrkDurationUs(done[2]);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    requests: Number(done[1]),
    durationS: durationUs === null ? NaN : durationUs / 1e6,
    rps: Number(rps[1]),
    p50Us: p50 === null ? null : parseWrkDurationUs(p50[1]),
    p99Us: p99 === null ? null : parseWrkDurationUs(p99[1]),
    errors: sock === null ? 0 : Number(sock[1]) + Number(sock[2]) + Number(sock[3]) + Number(sock[4]),
    non2xx: non2xx === null ? 0 : Number(non2xx[1]),
  };
}

export interface H2loadOptions {
  url: string;
  clients: number;
  streams: number;
  durationS: number;
  core: number;
}

/**
 * h2load in timing mode (-D). No --warm-up-time: the proxy's CPU is read over the whole run,
 * so every request it served must be counted.
 */
export async function runH2load(o: H2loadOptions): Promise<LoadResult> {
  const args = ['-t1', `-c${o.clients}`, `-m${o.streams}`, '-D', String(o.durationS), o.url];
  const r = await runCommand({ cmd: 'h2load', args, core: o.core, timeoutMs: o.durationS * 1000 + KILL_AFTER_MS });
  if (r.timedOut) throw new Error(`h2load did not finish within ${o.durationS}s + ${KILL_AFTER_MS / 1000}s`);
  if (r.code !== 0) throw new Error(`h2load exited ${r.code}: ${(r.stderr + r.stdout).trim().slice(-1000)}`);
  return parseH2load(r.stdout);
}

export function parseH2load(out: string): LoadResult {
  const fin = /finished in ([\d.]+)(s|ms), ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (fin === null || req === null) throw new Error(`cannot parse h2load output:\n${out}`);
  const durationS = Number(fin[1]) / (fin[2] === 'ms' ? 1000 : 1);
  return {
    requests: Number(req[3]),
    durationS,
    rps: Number(fin[3]),
    p50Us: null,
    p99Us: null,
    // h2load's "failed" also counts 4xx/5xx responses; errors here are transport failures only.
    errors: Number(req[6]) + Number(req[7]),
    non2xx: codes === null ? 0 : Number(codes[3]) + Number(codes[4]),
  };
}
