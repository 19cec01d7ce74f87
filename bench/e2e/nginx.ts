/**
 * nginx twice: as the shared upstream (on LOAD_CORE) and as a proxy under test (on
 * PROXY_CORE). Both run in the foreground (`daemon off`) with master + one worker, so the
 * spawned PID is the master and the worker is its child (CPU and RSS are read per tree).
 * Each instance gets its own prefix directory for the pid file, error log and temp paths.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePorts, startServer, waitForPort, type Server } from '../lib/spawn.js';
import { renderFile } from '../lib/template.js';
import { ECHO_MODULE } from '../lib/tools.js';
import { LOAD_CORE, PROXY_CORE, type RunningTarget, type TargetContext, type TargetDef, type Upstream } from './layout.js';

async function startNginx(name: string, dir: string, conf: string, core: number, ports: readonly number[]): Promise<Server> {
  mkdirSync(dir, { recursive: true });
  const confPath = join(dir, 'nginx.conf');
  writeFileSync(confPath, conf);
  const server = startServer({
    name,
    core,
    cmd: 'nginx',
    args: ['-p', dir, '-c', confPath, '-e', join(dir, 'error.log'), '-g', 'daemon off;'],
  });
  for (const p of ports) await waitForPort(p, 10_000, server);
  return server;
}

/** The upstream: "ok" on GET (HTTP/1.1 and h2c ports), the body read first on POST /post. */
export async function startUpstream(root: string, workDir: string, tools: ReadonlySet<string>): Promise<Upstream> {
  const [h1Port, h2Port] = await freePorts(2);
  const postReady = tools.has('nginx-echo');
  const conf = renderFile(join(root, 'bench/e2e/conf/upstream.nginx.conf'), {
    ECHO_LOAD: postReady ? `load_module ${ECHO_MODULE};` : '# echo module missing: POST scenario skipped',
    DIR: join(workDir, 'upstream'),
    H1_PORT: h1Port,
    H2_PORT: h2Port,
    POST_BODY: postReady ? '            echo_read_request_body;\n            echo -n "ok";' : '            return 501;',
  });
  const server = await startNginx('upstream nginx', join(workDir, 'upstream'), conf, LOAD_CORE, [h1Port, h2Port]);
  return { server, h1Port, h2Port, postReady };
}

export const nginxTarget: TargetDef = {
  name: 'nginx',
  label: 'nginx',
  needs: ['nginx'],
  async start(ctx: TargetContext): Promise<RunningTarget> {
    const [h1Port, h2Port] = await freePorts(2);
    const dir = join(ctx.workDir, 'nginx-proxy');
    const conf = renderFile(join(ctx.root, 'bench/e2e/conf/proxy.nginx.conf'), {
      DIR: dir,
      UPSTREAM_PORT: ctx.upstream.h1Port,
      H1_PORT: h1Port,
      H2_PORT: h2Port,
    });
    const server = await startNginx('nginx proxy', dir, conf, PROXY_CORE, [h1Port, h2Port]);
    return { name: 'nginx', h1Port, h2Port, h2Note: null, server, stop: () => server.stop() };
  },
};

/** "direct": no proxy, the load goes straight at the upstream's ports. */
export const directTarget: TargetDef = {
  name: 'direct',
  label: 'direct',
  needs: [],
  start(ctx: TargetContext): Promise<RunningTarget> {
    return Promise.resolve({
      name: 'direct',
      h1Port: ctx.upstream.h1Port,
      h2Port: ctx.upstream.h2Port,
      h2Note: null,
      server: null,
      stop: () => Promise.resolve(),
    });
  },
};
