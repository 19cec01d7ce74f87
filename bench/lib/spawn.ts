/**
 * Child processes for the bench rig: long-lived servers pinned to a core, and bounded
 * one-shot commands (load generators, version probes).
 *
 * Contract:
 * - Pinning uses `taskset -c CORE cmd ...`: taskset execs the command, so the child's PID is
 *   the server's PID (what /proc readings and stop() use).
 * - Every process started here is stopped by PID only: SIGTERM, then SIGKILL after a grace.
 *   If the runner exits or is interrupted, every server still running is SIGKILLed by PID.
 * - One-shot commands always have a time limit; past it they are SIGKILLed and the result says
 *   so (timedOut). Nothing here waits unbounded.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';

const OUTPUT_LIMIT = 1024 * 1024;
const STOP_GRACE_MS = 3000;

const live = new Set<ChildProcess>();
let hooked = false;

function killAllLive(): void {
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

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', killAllLive);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping the servers it started\n`);
      killAllLive();
      process.exit(130);
    });
  }
}

/** Keeps the last OUTPUT_LIMIT characters a stream produced. */
class Tail {
  private text = '';
  push(chunk: Buffer): void {
    this.text += chunk.toString('utf8');
    if (this.text.length > OUTPUT_LIMIT) this.text = this.text.slice(-OUTPUT_LIMIT);
  }
  toString(): string {
    return this.text;
  }
}

export interface ServerSpec {
  name: string;
  /** Core to pin to with taskset, or null for no pinning. */
  core: number | null;
  cmd: string;
  args: readonly string[];
  cwd?: string;
  env?: Record<string, string>;
}

export interface Server {
  readonly name: string;
  readonly pid: number;
  output(): string;
  /** True while the process has not exited. */
  alive(): boolean;
  /** SIGTERM by PID, SIGKILL after a grace period; resolves when it exited. Idempotent. */
  stop(): Promise<void>;
}

function pinned(core: number | null, cmd: string, args: readonly string[]): [string, string[]] {
  return core === null ? [cmd, [...args]] : ['taskset', ['-c', String(core), cmd, ...args]];
}

export function startServer(spec: ServerSpec): Server {
  hookExit();
  const [cmd, args] = pinned(spec.core, spec.cmd, spec.args);
  const child = spawn(cmd, args, {
    cwd: spec.cwd,
    env: { ...process.env, ...spec.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid === undefined) throw new Error(`${spec.name}: could not start ${spec.cmd}`);
  const pid = child.pid;
  live.add(child);
  const out = new Tail();
  child.stdout?.on('data', (c: Buffer) => out.push(c));
  child.stderr?.on('data', (c: Buffer) => out.push(c));
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      live.delete(child);
      resolve();
    });
    child.once('error', (err) => {
      out.push(Buffer.from(`spawn error: ${err.message}\n`));
      live.delete(child);
      resolve();
    });
  });
  let stopping: Promise<void> | null = null;
  return {
    name: spec.name,
    pid,
    output: () => out.toString(),
    alive: () => child.exitCode === null && child.signalCode === null,
    stop(): Promise<void> {
      if (stopping !== null) return stopping;
      stopping = (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          return;
        }
        const timer = setTimeout(() => {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone meanwhile
          }
        }, STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface CommandSpec {
  cmd: string;
  args: readonly string[];
  core?: number | null;
  /** Hard limit; the command is SIGKILLed by PID past it. */
  timeoutMs: number;
  env?: Record<string, string>;
}

/** Runs a command to completion (bounded by timeoutMs), capturing its output. */
export function runCommand(spec: CommandSpec): Promise<CommandResult> {
  hookExit();
  const [cmd, args] = pinned(spec.core ?? null, spec.cmd, spec.args);
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...spec.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    const out = new Tail();
    const err = new Tail();
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.stderr?.on('data', (c: Buffer) => err.push(c));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }, spec.timeoutMs);
    const finish = (code: number | null, extra = ''): void => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, stdout: out.toString(), stderr: err.toString() + extra, timedOut });
    };
    child.once('error', (e) => finish(null, `spawn error: ${e.message}\n`));
    // 'close' (not 'exit'): the output pipes are drained by then.
    child.once('close', (code) => finish(code));
  });
}

/** Whether `cmd` is on PATH (via `command -v`). */
export async function hasCommand(cmd: string): Promise<boolean> {
  const r = await runCommand({ cmd: 'sh', args: ['-c', `command -v ${cmd}`], timeoutMs: 5000 });
  return r.code === 0;
}

/** n distinct free TCP ports on 127.0.0.1 (held open together while picking, then closed). */
export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const server = net.createServer();
      servers.push(server);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

/** Resolves once a TCP connect to 127.0.0.1:port succeeds; throws after timeoutMs. */
export async function waitForPort(port: number, timeoutMs: number, server?: Server): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      sock.once('connect', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    if (server !== undefined && !server.alive()) {
      throw new Error(`${server.name} exited before listening on ${port}:\n${server.output().slice(-2000)}`);
    }
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
