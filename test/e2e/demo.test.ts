// `npm run demo` (issue 5, item 8): runs the compiled demo (dist/demo/run.js) as a child
// process and checks that it exits 0 and prints the chain with both SPIFFE IDs on the hop and
// the intruder's 403. The demo starts and stops its own two sidecars and two services.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { SPIFFE } from '../helpers/mesh-certs.js';
import { repoPath, repoRoot } from '../helpers/repo-root.js';

const LIMIT_MS = 20_000;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the demo; SIGTERM by PID after LIMIT_MS (the demo then stops its sidecars), SIGKILL 5 s later. */
function runDemo(args: string[] = []): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [repoPath('dist', 'demo', 'run.js'), ...args], { cwd: repoRoot(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const kill = (signal: NodeJS.Signals): void => {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(child.pid, signal);
        } catch {
          // exited meanwhile
        }
      }
    };
    const term = setTimeout(() => kill('SIGTERM'), LIMIT_MS);
    const hard = setTimeout(() => kill('SIGKILL'), LIMIT_MS + 5000);
    const onExit = (): void => kill('SIGKILL');
    process.once('exit', onExit);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(term);
      clearTimeout(hard);
      process.removeListener('exit', onExit);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

describe('npm run demo', () => {
  it('runs the two-service mesh, prints the identities on the hop and the 403, exits 0', { timeout: LIMIT_MS + 10_000 }, async () => {
    const started = Date.now();
    const run = await runDemo();
    const elapsed = Date.now() - started;
    const ctx = `\n--- stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr}`;
    assert.equal(run.code, 0, `exit code ${run.code} (signal ${run.signal})${ctx}`);
    assert.ok(elapsed < LIMIT_MS, `took ${elapsed} ms${ctx}`);

    const lines = run.stdout.split('\n');
    const has = (re: RegExp): boolean => lines.some((l) => re.test(l));
    const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    assert.ok(has(/^client -> frontend-app :\d+ -> frontend sidecar \(outbound :\d+, HTTP\/1\.1 proxy/), `the first hop${ctx}`);
    assert.ok(has(new RegExp(`HTTP/2 \\+ mTLS, peer verified as ${esc(SPIFFE.backend)}$`)), `the backend's ID on the hop${ctx}`);
    assert.ok(has(new RegExp(`backend sidecar \\(inbound mesh :\\d+, peer ${esc(SPIFFE.frontend)} authorized\\)`)), `the frontend's ID on the hop${ctx}`);
    assert.ok(has(/-> backend-app :\d+: \{"greeting":"hello from backend-app"\}/), `the backend app's answer${ctx}`);
    assert.ok(has(new RegExp(`downstream_peer_principal=${esc(SPIFFE.frontend)} protocol=HTTP/2 response_code=200`)), `the access log line${ctx}`);
    assert.ok(has(new RegExp(`^intruder \\(${esc(SPIFFE.intruder)}\\) -> backend sidecar: 403 SKIFF_ERR_FORBIDDEN`)), `the 403 line${ctx}`);
    assert.ok(has(/^frontend sidecar admin: http:\/\/127\.0\.0\.1:\d+\//) && has(/^backend sidecar admin: +http:\/\/127\.0\.0\.1:\d+\//), `the admin URLs${ctx}`);
    assert.ok(has(/^stopped both sidecars and both services$/), `the shutdown line${ctx}`);
    assert.equal(run.stderr, '', 'nothing on stderr');

    // Both sidecars (their PIDs are printed with the admin URLs) are gone.
    const pids = [...run.stdout.matchAll(/\(pid (\d+)[;)]/g)].map((m) => Number(m[1]));
    assert.equal(pids.length, 2, `two sidecar PIDs printed${ctx}`);
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `sidecar ${pid} still running`);
  });

  it('rejects an unknown argument with exit 2', { timeout: 10_000 }, async () => {
    const run = await runDemo(['--nope']);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /unknown argument --nope/);
  });
});
