/**
 * The two npm proxies as targets, each its own node process on PROXY_CORE running one of the
 * small scripts next to this file (compiled to dist/bench/e2e/).
 */
import { join } from 'node:path';
import { freePorts, startServer, waitForPort } from '../lib/spawn.js';
import { PROXY_CORE, type RunningTarget, type TargetContext, type TargetDef } from './layout.js';

export const httpProxyTarget: TargetDef = {
  name: 'http-proxy',
  label: 'http-proxy',
  needs: [],
  async start(ctx: TargetContext): Promise<RunningTarget> {
    const [port] = await freePorts(1);
    const server = startServer({
      name: 'http-proxy',
      core: PROXY_CORE,
      cmd: process.execPath,
      args: [join(ctx.root, 'dist/bench/e2e/target-http-proxy.js'), '--port', String(port), '--upstream', String(ctx.upstream.h1Port)],
      cwd: ctx.root,
    });
    await waitForPort(port, 15_000, server);
    return { name: 'http-proxy', h1Port: port, h2Port: null, h2Note: 'http-proxy has no HTTP/2 server', server, stop: () => server.stop() };
  },
};

/**
 * Starts `dist/bench/e2e/<script>` on PROXY_CORE with `--port`, `--h2-port` and `--upstream`,
 * and waits for both ports.
 */
async function startTwoPortScript(ctx: TargetContext, name: string, processName: string, script: string): Promise<RunningTarget> {
  const [port, h2Port] = await freePorts(2);
  const server = startServer({
    name: processName,
    core: PROXY_CORE,
    cmd: process.execPath,
    args: [
      join(ctx.root, 'dist/bench/e2e', script),
      '--port', String(port),
      '--h2-port', String(h2Port),
      '--upstream', String(ctx.upstream.h1Port),
    ],
    cwd: ctx.root,
  });
  await waitForPort(port, 15_000, server);
  await waitForPort(h2Port, 15_000, server);
  return { name, h1Port: port, h2Port, h2Note: null, server, stop: () => server.stop() };
}

export const fastifyTarget: TargetDef = {
  name: 'fastify',
  label: '@fastify/http-proxy',
  needs: [],
  start: (ctx: TargetContext) => startTwoPortScript(ctx, 'fastify', '@fastify/http-proxy', 'target-fastify.js'),
};

/**
 * Opt-in: the least Node can do per scenario (bench/e2e/target-node-floor.ts): a raw `net`
 * pipe for HTTP/1.1, a minimal node:http2 -> HTTP/1.1 forwarder for HTTP/2. Not a proxy: a
 * floor to read Skiff's figures against in the same run.
 */
export const nodeFloorTarget: TargetDef = {
  name: 'node-floor',
  label: 'Node floor (raw pipe / bare node:http2)',
  needs: [],
  start: (ctx: TargetContext) => startTwoPortScript(ctx, 'node-floor', 'node-floor', 'target-node-floor.js'),
};
