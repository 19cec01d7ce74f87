/**
 * haproxy (Debian package) as a proxy under test on PROXY_CORE: `haproxy -db` stays in the
 * foreground as one process. HTTP/2 in needs `proto h2` on a cleartext bind; when this build
 * does not list an h2 frontend multiplexer or rejects the bind, the target runs without an
 * h2 port and the report says why.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePorts, runCommand, startServer, waitForPort } from '../lib/spawn.js';
import { renderFile } from '../lib/template.js';
import { PROXY_CORE, type RunningTarget, type TargetContext, type TargetDef } from './layout.js';

function renderConfig(ctx: TargetContext, h1Port: number, h2Port: number | null): string {
  return renderFile(join(ctx.root, 'bench/e2e/conf/haproxy.cfg'), {
    H1_PORT: h1Port,
    H2_BIND: h2Port === null ? '    # no cleartext h2 bind (see the report)' : `    bind 127.0.0.1:${h2Port} proto h2`,
    UPSTREAM_PORT: ctx.upstream.h1Port,
  });
}

export const haproxyTarget: TargetDef = {
  name: 'haproxy',
  label: 'haproxy',
  needs: ['haproxy'],
  async start(ctx: TargetContext): Promise<RunningTarget> {
    const [h1Port, h2PortFree] = await freePorts(2);
    const dir = join(ctx.workDir, 'haproxy');
    mkdirSync(dir, { recursive: true });
    const cfg = join(dir, 'haproxy.cfg');

    let h2Port: number | null = h2PortFree;
    let h2Note: string | null = null;
    const vv = await runCommand({ cmd: 'haproxy', args: ['-vv'], timeoutMs: 10_000 });
    if (!/^\s*h2\s*:.*side=FE/m.test(vv.stdout)) {
      h2Port = null;
      h2Note = 'this haproxy build lists no h2 frontend multiplexer';
    } else {
      writeFileSync(cfg, renderConfig(ctx, h1Port, h2Port));
      const check = await runCommand({ cmd: 'haproxy', args: ['-c', '-f', cfg], timeoutMs: 10_000 });
      if (check.code !== 0) {
        h2Port = null;
        h2Note = `haproxy rejected "bind ... proto h2": ${(check.stdout + check.stderr).trim().split('\n')[0]}`;
      }
    }
    if (h2Note !== null) ctx.log(`  haproxy: no HTTP/2 in: ${h2Note}`);
    writeFileSync(cfg, renderConfig(ctx, h1Port, h2Port));

    const server = startServer({ name: 'haproxy', core: PROXY_CORE, cmd: 'haproxy', args: ['-db', '-f', cfg] });
    await waitForPort(h1Port, 10_000, server);
    if (h2Port !== null) await waitForPort(h2Port, 10_000, server);
    return { name: 'haproxy', h1Port, h2Port, h2Note, server, stop: () => server.stop() };
  },
};
