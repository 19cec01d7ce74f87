// Process lifecycle seen from outside: the embedded default config, the CLI's flags, and
// SIGTERM draining in-flight HTTP/1.1 and HTTP/2 requests before a clean exit.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import http2 from 'node:http2';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts, startSkiff } from '../helpers/skiff.js';
import { repoPath } from '../helpers/repo-root.js';
import { curl } from '../helpers/clients.js';

function runCli(args: string[], timeoutMs = 10_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [repoPath('dist/src/cli.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`cli timed out: ${stderr}`)); }, timeoutMs);
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

/** An upstream answering "ok" after `delayMs`. */
async function slowUpstream(delayMs: number): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume();
    setTimeout(() => res.end(`done ${req.url ?? ''}`), delayMs);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return { port, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

describe('CLI', () => {
  it('--check-config accepts a valid file and exits 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'skiff-cli-'));
    const file = join(dir, 'ok.yaml');
    writeFileSync(file, 'listeners:\n  - name: a\n    address: 127.0.0.1:0\n    protocols: [http1]\n    routes: r\nroutes:\n  r:\n    - match: { prefix: / }\n      cluster: c\nclusters:\n  - name: c\n    protocol: http1\n    endpoints: [127.0.0.1:9]\n');
    const res = await runCli(['--check-config', file]);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /ok/);
  });

  it('--check-config names the key and line of an error and exits 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'skiff-cli-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'listeners:\n  - name: a\n    address: 127.0.0.1:notaport\n    protocols: [http1]\n    routes: r\nroutes:\n  r:\n    - match: { prefix: / }\n      cluster: c\nclusters:\n  - name: c\n    protocol: http1\n    endpoints: [127.0.0.1:9]\n');
    const res = await runCli(['--check-config', file]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /bad\.yaml:3: listeners\[0\]\.address/);
  });

  it('rejects an unknown flag with usage and exit 2', async () => {
    const res = await runCli(['--frobnicate']);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /unknown argument: --frobnicate/);
    assert.match(res.stderr, /usage: skiff/);
  });

  it('with no flags runs the embedded default (127.0.0.1:15006 -> 127.0.0.1:8080, admin 15000)', async (t) => {
    // The default's ports are fixed; skip rather than fail when something else holds them.
    const probe = await curl(['-s', '-m', '1', 'http://127.0.0.1:15000/ready']);
    if (probe.exitCode === 0) {
      t.skip('port 15000 is in use on this machine');
      return;
    }
    const up = http.createServer((req, res) => res.end(`app saw ${req.url ?? ''}`));
    const upOk = await new Promise<boolean>((r) => {
      up.once('error', () => r(false));
      up.listen(8080, '127.0.0.1', () => r(true));
    });
    if (!upOk) {
      t.skip('port 8080 is in use on this machine');
      return;
    }
    const sk = await startSkiff('', { adminPort: 15000, noConfig: true });
    try {
      const h1 = await curl(['-s', 'http://127.0.0.1:15006/hello']);
      assert.equal(h1.status, 200);
      assert.equal(h1.body.toString(), 'app saw /hello');
      const h2 = await curl(['-s', '--http2-prior-knowledge', 'http://127.0.0.1:15006/h2']);
      assert.equal(h2.status, 200);
      assert.equal(h2.httpVersion, '2');
      assert.equal(h2.body.toString(), 'app saw /h2');
    } finally {
      assert.equal(await sk.stop(), 0);
      up.close();
    }
  });
});

describe('SIGTERM drain', () => {
  let upstream: { port: number; close(): Promise<void> };
  before(async () => { upstream = await slowUpstream(800); });
  after(async () => { await upstream.close(); });

  it('finishes in-flight HTTP/1.1 and HTTP/2 requests, refuses new connections, exits 0', async () => {
    const [listen, admin] = await freePorts(2);
    const yaml = `admin: { address: 127.0.0.1:${admin} }
limits: { drainTimeout: 5s }
listeners:
  - name: in
    address: 127.0.0.1:${listen}
    protocols: [http1, h2c]
    routes: r
routes:
  r:
    - match: { prefix: / }
      cluster: app
clusters:
  - name: app
    protocol: http1
    endpoints: [127.0.0.1:${upstream.port}]
`;
    const sk = await startSkiff(yaml);
    const h1 = new Promise<{ status: number; body: string }>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: listen, path: '/one', agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => { body += d.toString(); });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      }).on('error', reject);
    });
    const session = http2.connect(`http://127.0.0.1:${listen}`);
    session.on('error', () => undefined);
    const h2 = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = session.request({ ':path': '/two' });
      let status = 0;
      let body = '';
      req.on('response', (h) => { status = Number(h[':status']); });
      req.on('data', (d: Buffer) => { body += d.toString(); });
      req.on('end', () => resolve({ status, body }));
      req.on('error', reject);
      req.end();
    });
    await new Promise((r) => setTimeout(r, 200)); // both requests are at the upstream now
    const exitCode = sk.stop('SIGTERM');
    await new Promise((r) => setTimeout(r, 150));
    const refused = await curl(['-s', '-m', '2', `http://127.0.0.1:${listen}/late`]);
    assert.notEqual(refused.exitCode, 0, 'a new connection after SIGTERM must be refused');
    assert.deepEqual(await h1, { status: 200, body: 'done /one' });
    assert.deepEqual(await h2, { status: 200, body: 'done /two' });
    session.close();
    assert.equal(await exitCode, 0);
    assert.match(sk.stderr(), /"signal":"SIGTERM".*"msg":"signal received, draining"/);
  });
});
