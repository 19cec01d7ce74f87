// Runs the real sidecar (dist/src/cli.js) as a child process for end-to-end tests, and picks
// free ports for its configuration.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { repoRoot } from './repo-root.js';

export interface FreePortOptions {
  /** Also require the same port number to be free for UDP (an HTTP/3 listener). */
  udp?: boolean;
}

/**
 * A port on 127.0.0.1 that was free a moment ago: listens on 0, reads the port, closes.
 * Another process may still take it before the caller binds it; that race is accepted
 * (the alternative, handing the child a listening fd, needs support in the sidecar).
 */
export async function freePort(opts: FreePortOptions = {}): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const server = net.createServer();
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const addr = server.address();
        if (addr === null || typeof addr === 'string') reject(new Error('freePort: no TCP address'));
        else resolve(addr.port);
      });
    });
    const isUdpFree = opts.udp === true ? await udpFree(port) : true;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (isUdpFree) return port;
  }
  throw new Error('freePort: no port free for both TCP and UDP after 50 tries');
}

/** n distinct free ports (all held open together while picking, so they differ). */
export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const server = net.createServer();
      servers.push(server);
      ports.push(await new Promise<number>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
      }));
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    sock.once('error', () => {
      sock.close();
      resolve(false);
    });
    sock.bind(port, '127.0.0.1', () => sock.close(() => resolve(true)));
  });
}

export interface StartSkiffOptions {
  /** Extra environment for the child (merged over process.env). */
  env?: Record<string, string>;
  /** The admin port; if absent it is read from `admin.address` in the YAML. */
  adminPort?: number;
  /** How long to wait for /ready to answer 200; default 10 000 ms. */
  readyTimeoutMs?: number;
  /** Extra CLI arguments after `--config FILE`. */
  args?: string[];
  /** Script to run instead of dist/src/cli.js (absolute, or relative to the repo root). */
  entry?: string;
  /** Run without `--config FILE` (the embedded default); `adminPort` is then required. */
  noConfig?: boolean;
}

export interface SkiffProcess {
  pid: number;
  adminPort: number;
  /** The config file written for this run. */
  configPath: string;
  /** Everything the child wrote so far. */
  stdout(): string;
  stderr(): string;
  /**
   * Sends `signal` (default SIGTERM) by PID and waits for exit; after 5 s sends SIGKILL.
   * Resolves with the exit code (null if killed by a signal). Idempotent; removes the
   * temp config dir.
   */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Resolves when the child exits by itself or by stop(). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const READY_POLL_MS = 50;
const STOP_GRACE_MS = 5000;
const OUTPUT_LIMIT = 8 * 1024 * 1024;

/** Every child still running, killed by PID if the test process exits without stop(). */
const live = new Set<ChildProcess>();
let isExitHookSet = false;

function killLiveChildren(): void {
  for (const child of live) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

/** The port of `admin.address` ("host:port", a port number, or { port }) in the YAML. */
export function adminPortFromYaml(configYaml: string): number {
  let address: unknown;
  try {
    const doc: unknown = parseYaml(configYaml);
    if (doc !== null && typeof doc === 'object' && 'admin' in doc) {
      const admin = (doc as { admin: unknown }).admin;
      if (admin !== null && typeof admin === 'object' && 'address' in admin) address = (admin as { address: unknown }).address;
    }
  } catch {
    // fall through to the regex below
  }
  if (typeof address === 'number') return address;
  if (typeof address === 'string') {
    const m = /:(\d+)$/.exec(address);
    if (m !== null) return Number(m[1]);
  }
  if (address !== null && typeof address === 'object' && 'port' in address) {
    const port = Number((address as { port: unknown }).port);
    if (Number.isInteger(port)) return port;
  }
  const m = /admin:[\s\S]*?address:\s*["']?[\w.:[\]-]*?:(\d+)/.exec(configYaml);
  if (m !== null) return Number(m[1]);
  throw new Error('startSkiff: no admin.address port in the config; pass opts.adminPort');
}

function getStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Writes `configYaml` to a temp dir, spawns `node dist/src/cli.js --config FILE` from the
 * repo root, and resolves once GET http://127.0.0.1:ADMIN/ready answers 200 (polled every
 * 50 ms). Rejects, with the captured stderr, if the child exits first or is not ready in
 * time (the child is then killed). Build first: this runs the compiled CLI.
 */
export async function startSkiff(configYaml: string, opts: StartSkiffOptions = {}): Promise<SkiffProcess> {
  const adminPort = opts.adminPort ?? (opts.noConfig === true ? 15000 : adminPortFromYaml(configYaml));
  const dir = mkdtempSync(join(tmpdir(), 'skiff-test-'));
  const configPath = join(dir, 'skiff.yaml');
  writeFileSync(configPath, configYaml);

  const root = repoRoot();
  const entry = resolvePath(root, opts.entry ?? join('dist', 'src', 'cli.js'));
  const configArgs = opts.noConfig === true ? [] : ['--config', configPath];
  const child = spawn(process.execPath, [entry, ...configArgs, ...(opts.args ?? [])], {
    cwd: root,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (!isExitHookSet) {
    isExitHookSet = true;
    process.on('exit', killLiveChildren);
  }
  live.add(child);

  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (s: string) => {
    if (out.length < OUTPUT_LIMIT) out += s;
  });
  child.stderr?.on('data', (s: string) => {
    if (err.length < OUTPUT_LIMIT) err += s;
  });

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));

  let stopping: Promise<number | null> | null = null;
  const stop = (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        try {
          process.kill(child.pid, signal);
        } catch {
          // exited meanwhile
        }
        const grace = setTimeout(() => {
          if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
            try {
              process.kill(child.pid, 'SIGKILL');
            } catch {
              // exited meanwhile
            }
          }
        }, STOP_GRACE_MS);
        const { code } = await exited;
        clearTimeout(grace);
        rmSync(dir, { recursive: true, force: true });
        return code;
      }
      rmSync(dir, { recursive: true, force: true });
      return child.exitCode;
    })();
    return stopping;
  };

  const fail = async (why: string): Promise<never> => {
    await stop('SIGKILL');
    throw new Error(`startSkiff: ${why}\n--- config ---\n${configYaml}\n--- stderr ---\n${err}\n--- stdout ---\n${out.slice(-4000)}`);
  };

  if (child.pid === undefined) {
    const e = await spawnError;
    return fail(`spawn failed: ${e.message}`);
  }

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 10_000);
  let lastStatus = 'no answer';
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      return fail(`sidecar exited before ready (code ${child.exitCode}, signal ${child.signalCode})`);
    }
    try {
      const status = await getStatus(adminPort, '/ready');
      if (status === 200) break;
      lastStatus = `status ${status}`;
    } catch (e) {
      lastStatus = (e as Error).message;
    }
    if (Date.now() >= deadline) {
      return fail(`GET http://127.0.0.1:${adminPort}/ready not 200 within ${opts.readyTimeoutMs ?? 10_000} ms (last: ${lastStatus})`);
    }
    // Wake early if the child dies instead of sleeping the full interval.
    await Promise.race([delay(READY_POLL_MS), exited]);
  }

  return {
    pid: child.pid,
    adminPort,
    configPath,
    stdout: () => out,
    stderr: () => err,
    stop,
    exited,
  };
}

/** The ports and files of `plainAndTlsConfig`. */
export interface PlainAndTlsPorts {
  readonly admin: number;
  readonly plain: number;
  readonly tls: number;
  readonly upstream: number;
  /** PEM file paths for the TLS listener (test/helpers/certs.ts `TestCerts`). */
  readonly cert: string;
  readonly key: string;
}

/**
 * The config several end-to-end tests share: listener `plain` (HTTP/1.1 and h2c) and listener
 * `tls` (HTTP/1.1, h2 and HTTP/3 on one port), route table `r` sending everything to the http1
 * cluster `app` on 127.0.0.1:`upstream`; `limits` is the flow map's body ('' for none).
 */
export function plainAndTlsConfig(p: PlainAndTlsPorts, limits = ''): string {
  return `admin: { address: 127.0.0.1:${p.admin} }
${limits === '' ? '' : `limits: { ${limits} }\n`}listeners:
  - { name: plain, address: 127.0.0.1:${p.plain}, protocols: [http1, h2c], routes: r }
  - { name: tls, address: 127.0.0.1:${p.tls}, protocols: [http1, h2, h3], tls: { cert: ${p.cert}, key: ${p.key} }, routes: r }
routes:
  r:
    - { match: { prefix: / }, cluster: app }
clusters:
  - { name: app, protocol: http1, endpoints: [127.0.0.1:${p.upstream}] }
`;
}
