/**
 * Small helpers shared by the allocation bench (bench/alloc.ts), the soak (bench/soak.ts) and
 * the micro benchmarks: repository paths, result files, child processes that announce
 * themselves with one JSON line, bounded waits. Nothing here touches src/.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from dist/bench/lib/). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Absolute path of a compiled bench helper, e.g. `libScript('alloc-upstream.js')`. */
export function libScript(name: string): string {
  return join(dirname(fileURLToPath(import.meta.url)), name);
}

/** `2026-11-26T10-31-07Z`: sortable, safe in file names, one file per run. */
export function stamp(d: Date = new Date()): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

/** The commit measured and whether the working tree had changes (the figures belong to both). */
export function gitState(): { sha: string; dirty: boolean } {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 5000 }).trim();
    const status = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 5000 });
    return { sha, dirty: status.trim() !== '' };
  } catch {
    return { sha: 'unknown', dirty: true };
  }
}

/** Writes `bench/results/<prefix>-<stamp>.json` and returns its path. */
export function writeResult(prefix: string, data: unknown): string {
  const dir = join(REPO_ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${prefix}-${stamp()}.json`);
  writeFileSync(file, JSON.stringify(data, null, 2) + '\n');
  return file;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** n distinct free TCP ports on 127.0.0.1 (held open together while picking). */
export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const server = net.createServer();
      servers.push(server);
      ports.push(
        await new Promise<number>((res, rej) => {
          server.once('error', rej);
          server.listen(0, '127.0.0.1', () => res((server.address() as net.AddressInfo).port));
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

/** A child process that prints one JSON object on its first stdout line when it is ready. */
export interface ReadyChild<T> {
  readonly child: ChildProcess;
  readonly ready: T;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
}

/**
 * Spawns `command args` and waits (at most `timeoutMs`) for its first stdout line, parsed as
 * JSON. Later stdout lines go to `onLine`. The child is killed by its PID on timeout.
 */
export function spawnReady<T>(
  command: string,
  args: readonly string[],
  timeoutMs: number,
  onLine: ((line: string) => void) | null = null,
  options: SpawnOptions = {},
): Promise<ReadyChild<T>> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'], ...options });
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  return new Promise<ReadyChild<T>>((res, rej) => {
    let buf = '';
    let isReady = false;
    const timer = setTimeout(() => {
      if (isReady) return;
      child.kill('SIGKILL');
      rej(new Error(`${command} ${args.join(' ')}: not ready within ${timeoutMs} ms`));
    }, timeoutMs);
    const out = child.stdout;
    if (out === null) {
      clearTimeout(timer);
      rej(new Error('spawnReady needs a piped stdout'));
      return;
    }
    out.setEncoding('utf8');
    out.on('data', (text: string) => {
      buf += text;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!isReady) {
          isReady = true;
          clearTimeout(timer);
          try {
            res({ child, ready: JSON.parse(line) as T, exited });
          } catch (err) {
            child.kill('SIGKILL');
            rej(new Error(`${command}: bad ready line ${JSON.stringify(line)}: ${(err as Error).message}`));
          }
        } else if (onLine !== null) {
          onLine(line);
        }
      }
    });
    void exited.then((code) => {
      if (!isReady) {
        clearTimeout(timer);
        rej(new Error(`${command} ${args.join(' ')} exited (${code}) before it was ready`));
      }
    });
  });
}

/** Sends SIGTERM to one child by PID, then SIGKILL if it has not exited within `graceMs`. */
export async function stopChild(child: ChildProcess, exited: Promise<number | null>, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut && child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(1000)]);
  }
}

/** Waits for a child to exit, at most `timeoutMs`; false on timeout. */
export async function waitExit(exited: Promise<number | null>, timeoutMs: number): Promise<boolean> {
  return Promise.race([exited.then(() => true), sleep(timeoutMs).then(() => false)]);
}

/** Whether `cmd` is on PATH. */
export function hasCommand(cmd: string): Promise<boolean> {
  return new Promise((res) => {
    const c = spawn('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    c.once('exit', (code) => res(code === 0));
    c.once('error', () => res(false));
  });
}

/** `--name value` / `--name=value` / `--flag` parsing for the bench scripts (no dependency). */
export function parseFlags(argv: readonly string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq > 0) {
      flags.set(a.slice(2, eq), a.slice(eq + 1));
    } else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) {
      flags.set(a.slice(2), argv[++i]);
    } else {
      flags.set(a.slice(2), 'true');
    }
  }
  return flags;
}

export function numberFlag(flags: Map<string, string>, name: string, fallback: number): number {
  const v = flags.get(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${v}`);
  return n;
}

/** Right-aligned text table. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
