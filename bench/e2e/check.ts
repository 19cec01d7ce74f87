/**
 * Before any load: does each target answer correctly? GET / must give 200 "ok"; a 1 MiB POST
 * to /post must give 200 "ok" (proves the body went through to the upstream, which reads it
 * before answering); HTTP/2 in must complete a few requests with h2load. A target that fails
 * GET is skipped; a failed POST or HTTP/2 check skips only that scenario.
 */
import { runCommand } from '../lib/spawn.js';
import type { RunningTarget, Upstream } from './layout.js';

export interface CheckResult {
  get: string | null;
  post: string | null;
  h2: string | null;
}

async function expectOk(url: string, init: RequestInit): Promise<string | null> {
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
    const body = await res.text();
    if (res.status !== 200 || body.trim() !== 'ok') return `${init.method ?? 'GET'} ${url}: ${res.status} ${JSON.stringify(body.slice(0, 80))}`;
    return null;
  } catch (err) {
    return `${init.method ?? 'GET'} ${url}: ${(err as Error).message}`;
  }
}

export async function checkTarget(t: RunningTarget, upstream: Upstream, h2loadAvailable: boolean): Promise<CheckResult> {
  const base = `http://127.0.0.1:${t.h1Port}`;
  const get = await expectOk(`${base}/`, { method: 'GET' });
  const post = upstream.postReady
    ? await expectOk(`${base}/post`, {
        method: 'POST',
        body: Buffer.alloc(1024 * 1024, 0x78),
        headers: { 'content-type': 'application/octet-stream' },
      })
    : null;
  let h2: string | null = null;
  if (t.h2Port !== null && h2loadAvailable) {
    const r = await runCommand({ cmd: 'h2load', args: ['-n20', '-c2', '-m2', `http://127.0.0.1:${t.h2Port}/`], timeoutMs: 15_000 });
    if (r.code !== 0 || !/20 succeeded/.test(r.stdout)) h2 = `h2load check failed: ${(r.stdout + r.stderr).trim().split('\n').slice(-3).join(' / ')}`;
  }
  return { get, post, h2 };
}
