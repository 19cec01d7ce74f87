/**
 * Makes sure the external tools the rig needs are installed, with Debian's apt-get.
 *
 * Contract:
 * - Only what is missing is installed; `apt-get update` runs once, and only if something is.
 * - Installing nginx or haproxy on Debian normally starts the packaged service (nginx on
 *   0.0.0.0:80). The rig must bind only 127.0.0.1 and run its own configs, so while apt runs a
 *   temporary /usr/sbin/policy-rc.d answers 101 ("action forbidden"): no service starts. The
 *   file is removed afterwards (only if this code created it).
 * - A tool that still is not there afterwards is reported missing; the caller skips the
 *   targets and scenarios that need it with a message. Needs root (apt-get).
 */
import { existsSync, unlinkSync, writeFileSync } from 'node:fs';
import { hasCommand, runCommand } from './spawn.js';

export interface Tool {
  /** What the rig calls it (also the key in the result). */
  name: string;
  /** Debian package that provides it. */
  pkg: string;
  /** A command on PATH, or an absolute file path, whose presence means installed. */
  probe: { command: string } | { file: string };
}

/** Where Debian's libnginx-mod-http-echo puts the dynamic module. */
export const ECHO_MODULE = '/usr/lib/nginx/modules/ngx_http_echo_module.so';

export const TOOLS: readonly Tool[] = [
  { name: 'wrk', pkg: 'wrk', probe: { command: 'wrk' } },
  { name: 'h2load', pkg: 'nghttp2-client', probe: { command: 'h2load' } },
  { name: 'nginx', pkg: 'nginx', probe: { command: 'nginx' } },
  { name: 'nginx-echo', pkg: 'libnginx-mod-http-echo', probe: { file: ECHO_MODULE } },
  { name: 'haproxy', pkg: 'haproxy', probe: { command: 'haproxy' } },
];

const POLICY_RC = '/usr/sbin/policy-rc.d';

async function present(tool: Tool): Promise<boolean> {
  return 'command' in tool.probe ? hasCommand(tool.probe.command) : existsSync(tool.probe.file);
}

export type Log = (line: string) => void;

/** Installs missing tools; returns the names of the tools available afterwards. */
export async function ensureTools(log: Log): Promise<Set<string>> {
  const available = new Set<string>();
  const missing: Tool[] = [];
  for (const t of TOOLS) {
    if (await present(t)) available.add(t.name);
    else missing.push(t);
  }
  if (missing.length === 0) return available;

  log(`installing missing tools with apt-get: ${missing.map((t) => t.pkg).join(' ')}`);
  if (process.getuid?.() !== 0) {
    log('  not root: cannot run apt-get; the targets that need these tools are skipped');
    return available;
  }
  const env = { DEBIAN_FRONTEND: 'noninteractive' };
  const update = await runCommand({ cmd: 'apt-get', args: ['update', '-q'], timeoutMs: 300_000, env });
  if (update.code !== 0) log(`  apt-get update failed (${update.timedOut ? 'timed out' : `exit ${update.code}`}); trying the install anyway`);

  const createdPolicy = !existsSync(POLICY_RC);
  if (createdPolicy) writeFileSync(POLICY_RC, '#!/bin/sh\n# bench/lib/tools.ts: no service starts during apt-get\nexit 101\n', { mode: 0o755 });
  try {
    const install = (pkgs: string[]): ReturnType<typeof runCommand> =>
      runCommand({ cmd: 'apt-get', args: ['install', '-y', '-q', '--no-install-recommends', ...pkgs], timeoutMs: 600_000, env });
    const all = await install(missing.map((t) => t.pkg));
    if (all.code !== 0) {
      // One bad package must not cost the others: retry them one at a time.
      log(`  apt-get install of all at once failed; trying one by one`);
      for (const t of missing) {
        const one = await install([t.pkg]);
        if (one.code !== 0) log(`  ${t.pkg}: ${one.stderr.trim().split('\n').slice(-2).join(' / ')}`);
      }
    }
  } finally {
    if (createdPolicy) unlinkSync(POLICY_RC);
  }
  for (const t of missing) {
    if (await present(t)) {
      available.add(t.name);
      log(`  ${t.name}: installed`);
    } else {
      log(`  ${t.name}: NOT available after apt-get (package ${t.pkg})`);
    }
  }
  return available;
}
