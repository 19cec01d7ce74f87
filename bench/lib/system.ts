/**
 * Facts about the machine and the checkout, recorded with every result.
 */
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCommand } from './spawn.js';

/**
 * The repository root: the nearest ancestor of this file with Skiff's package.json. Works
 * from both bench/lib (sources) and dist/bench/lib (compiled).
 */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'skiff') return dir;
    dir = dirname(dir);
  }
  throw new Error('bench: cannot find the repository root (package.json named skiff)');
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memGiB: number;
  kernel: string;
  node: string;
  hostname: string;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    hostname: os.hostname(),
  };
}

export interface GitInfo {
  sha: string;
  /** True when the work tree has uncommitted changes (the figures are then of sha + changes). */
  dirty: boolean;
}

export async function gitInfo(root: string): Promise<GitInfo> {
  const sha = await runCommand({ cmd: 'git', args: ['-C', root, 'rev-parse', '--short', 'HEAD'], timeoutMs: 10_000 });
  const st = await runCommand({ cmd: 'git', args: ['-C', root, 'status', '--porcelain'], timeoutMs: 10_000 });
  return { sha: sha.code === 0 ? sha.stdout.trim() : 'nogit', dirty: st.code === 0 && st.stdout.trim() !== '' };
}

/** First line of a tool's version output (stdout or stderr), or null when it fails. */
export async function toolVersion(cmd: string, args: readonly string[]): Promise<string | null> {
  const r = await runCommand({ cmd, args, timeoutMs: 10_000 });
  const text = `${r.stdout}\n${r.stderr}`.trim();
  if (text === '' || r.code === null) return null;
  return text.split('\n')[0].trim();
}
