/**
 * The rig's fixed layout and shared types (issue 3).
 *
 * Two cores: the proxy under test runs alone on PROXY_CORE; the nginx upstream and the load
 * generator share LOAD_CORE. "direct" sends the load straight at the upstream (same cores,
 * no proxy), so it is the ceiling of the client + upstream side.
 *
 * Exception, single-connection latency: each wake-up across the two vCPUs costs ~35-40 µs on
 * this machine, so the client runs on PROXY_CORE (with the proxy). For "direct" the client is
 * on PROXY_CORE as well: both paths then cross cores the same two times (to the upstream and
 * back), and the difference between a proxy and direct is the proxy's own latency.
 */
import type { Server } from '../lib/spawn.js';

export const PROXY_CORE = 0;
export const LOAD_CORE = 1;

/** A target as the scenarios see it: where to send HTTP/1.1 and HTTP/2 load. */
export interface RunningTarget {
  name: string;
  h1Port: number;
  /** Cleartext HTTP/2 (prior knowledge) port, or null when the target has no h2c in. */
  h2Port: number | null;
  /** Why there is no h2Port (shown in the report), when it is null. */
  h2Note: string | null;
  /**
   * The process under test (CPU and RSS are read from its tree), or null for "direct", which
   * has no proxy.
   */
  server: Server | null;
  stop(): Promise<void>;
}

/** The shared upstream: nginx on LOAD_CORE. */
export interface Upstream {
  server: Server;
  h1Port: number;
  h2Port: number;
  /** False when the echo module is missing: POST cannot be answered correctly. */
  postReady: boolean;
}

export interface TargetContext {
  root: string;
  /** A scratch directory for this run (configs, pid files, temp paths). */
  workDir: string;
  upstream: Upstream;
  tools: ReadonlySet<string>;
  log: (line: string) => void;
}

export interface TargetDef {
  name: string;
  /** Column header in the table. */
  label: string;
  /** Tools (see lib/tools.ts) without which the target is skipped. */
  needs: readonly string[];
  start(ctx: TargetContext): Promise<RunningTarget>;
}
