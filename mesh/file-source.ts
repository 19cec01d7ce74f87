/**
 * ConfigFileSource: the control plane's file form (issue 5 item 6). Watches one YAML config
 * file and hands every new, valid snapshot to `apply`; a file that does not validate is
 * logged (every `FILE:LINE: key: message` line) and the running snapshot stays.
 *
 * What counts as "the file changed":
 * - in-place writes and editor-style replacement (write a temp file, rename it over the
 *   config): `fs.watch` on the file's *directory*, so a rename that replaces the inode is seen
 *   (a watch on the file itself would follow the old inode and go quiet);
 * - the Kubernetes ConfigMap/Secret layout, `config.yaml -> ..data/config.yaml` with
 *   `..data -> ..2026_11_26_...` swapped by renaming `..data_tmp` over `..data`: events on
 *   names starting with `..` count, and the directory of the file's resolved target is watched
 *   too (for a plain symlink to a file elsewhere);
 * - a poll (stat through symlinks: inode, size, mtime) every `pollMs`, because fs.watch misses
 *   events on some filesystems (NFS, some overlay and FUSE mounts) and can fail outright.
 *
 * Events are debounced (`debounceMs` after the last event of a burst, at most `maxWaitMs`
 * after the first), the content is hashed and an unchanged hash is a no-op, so a burst of
 * events or a touch costs one read. Checks never overlap: an event during a check or an
 * `apply` runs one more check after it. A missing file (mid-replacement, or deleted) is
 * logged once and waited out. The text validated is exactly the text hashed: the file is read
 * once per check and parsed with `parseConfig`, the same function `loadConfigFile` uses.
 */
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile, realpath, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { ConfigError, parseConfig } from '../src/config/load.js';
import type { ConfigSnapshot } from '../src/config/types.js';

/** The slice of a pino logger the source uses. */
export interface FileSourceLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface ConfigFileSourceOptions {
  /** The config file (may be a symlink). */
  readonly path: string;
  /** Where the next snapshot's version comes from (the ConfigStore). */
  readonly versions: { readonly nextVersion: number; readonly current: { readonly version: number } };
  /**
   * Called with each new valid snapshot, one call at a time. A rejection (or throw) is logged
   * as a failed reload; the callee must then have left the running snapshot in place.
   */
  readonly apply: (next: ConfigSnapshot) => void | Promise<void>;
  readonly log: FileSourceLog;
  /** Quiet time after the last event before the file is read; default 150 ms. */
  readonly debounceMs?: number;
  /** A steady stream of events still gets a check this long after the first; default 1000 ms. */
  readonly maxWaitMs?: number;
  /** Stat poll period; 0 turns polling off; default 2000 ms. */
  readonly pollMs?: number;
  /** false: no fs.watch, polling only (tests; filesystems without inotify); default true. */
  readonly useWatch?: boolean;
}

const DEFAULT_DEBOUNCE_MS = 150;
const DEFAULT_MAX_WAIT_MS = 1000;
const DEFAULT_POLL_MS = 2000;

export class ConfigFileSource {
  readonly path: string;
  private readonly dir: string;
  private readonly base: string;
  private readonly opts: ConfigFileSourceOptions;
  private readonly debounceMs: number;
  private readonly maxWaitMs: number;
  private readonly pollMs: number;
  private dirWatcher: FSWatcher | null;
  private targetWatcher: FSWatcher | null;
  /** Directory and name of the symlink's resolved target, when it lies outside `dir`. */
  private targetDir: string | null;
  private targetBase: string | null;
  private debounceTimer: NodeJS.Timeout | null;
  private firstEventAt: number;
  private pollTimer: NodeJS.Timeout | null;
  private isPolling: boolean;
  private lastStatKey: string;
  /** sha256 of the last content read (applied or rejected), and of the running config's. */
  private lastHash: string;
  private runningHash: string;
  private isBusy: boolean;
  private isDirty: boolean;
  private isMissing: boolean;
  private isClosed: boolean;
  private running: Promise<void> | null;
  /** Counters for tests and logs. */
  applied: number;
  rejected: number;
  checks: number;

  constructor(opts: ConfigFileSourceOptions) {
    this.path = resolve(opts.path);
    this.dir = dirname(this.path);
    this.base = basename(this.path);
    this.opts = opts;
    this.debounceMs = opts.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    this.maxWaitMs = Math.max(this.debounceMs, opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS);
    this.pollMs = opts.pollMs ?? DEFAULT_POLL_MS;
    this.dirWatcher = null;
    this.targetWatcher = null;
    this.targetDir = null;
    this.targetBase = null;
    this.debounceTimer = null;
    this.firstEventAt = 0;
    this.pollTimer = null;
    this.isPolling = false;
    this.lastStatKey = '';
    this.lastHash = '';
    this.runningHash = '';
    this.isBusy = false;
    this.isDirty = false;
    this.isMissing = false;
    this.isClosed = false;
    this.running = null;
    this.applied = 0;
    this.rejected = 0;
    this.checks = 0;
  }

  /**
   * Starts watching. The file's current content is taken as the running one (the caller
   * loaded it just before); only later changes are applied.
   */
  async start(): Promise<void> {
    try {
      this.lastHash = hashOf(await readFile(this.path));
      this.runningHash = this.lastHash;
    } catch {
      // Missing now: the first version that appears is applied.
    }
    this.lastStatKey = await this.statKey();
    if (this.opts.useWatch !== false) {
      this.watchDir();
      await this.watchTarget();
    }
    if (this.pollMs > 0) {
      this.pollTimer = setInterval(() => void this.poll(), this.pollMs);
      this.pollTimer.unref();
    }
  }

  /** Stops watching and polling; a check in progress finishes (its `apply` is awaited). */
  async close(): Promise<void> {
    this.isClosed = true;
    if (this.debounceTimer !== null) clearTimeout(this.debounceTimer);
    this.debounceTimer = null;
    if (this.pollTimer !== null) clearInterval(this.pollTimer);
    this.pollTimer = null;
    this.closeWatcher('dir');
    this.closeWatcher('target');
    if (this.running !== null) await this.running;
  }

  /** Checks the file now (no debounce); resolves when the check, and any apply, is done. */
  checkNow(): Promise<void> {
    if (this.debounceTimer !== null) clearTimeout(this.debounceTimer);
    this.debounceTimer = null;
    return this.check();
  }

  // ---- change detection ----

  private watchDir(): void {
    if (this.isClosed || this.dirWatcher !== null) return;
    try {
      const w = watch(this.dir, { persistent: false }, (_event, name) => {
        // null: the platform did not say which entry changed.
        if (name === null || name === this.base || name.startsWith('..')) this.schedule();
      });
      w.on('error', () => this.closeWatcher('dir'));
      this.dirWatcher = w;
    } catch (err) {
      this.opts.log.warn({ file: this.path, err: errMessage(err) }, 'config watch unavailable; polling only');
    }
  }

  /** Watches the directory of the symlink target when it is not the config's own folder. */
  private async watchTarget(): Promise<void> {
    let real: string;
    try {
      real = await realpath(this.path);
    } catch {
      return; // missing right now; retried on the next check
    }
    const dir = dirname(real);
    if (this.isClosed) return;
    if (dir === this.dir || dir.startsWith(`${this.dir}/..`)) {
      // The Kubernetes layout: the timestamped folder is replaced, never edited; the events
      // on `..data` in the config's folder cover it.
      this.closeWatcher('target');
      return;
    }
    if (dir === this.targetDir && this.targetWatcher !== null) return;
    this.closeWatcher('target');
    this.targetDir = dir;
    this.targetBase = basename(real);
    try {
      const w = watch(dir, { persistent: false }, (_event, name) => {
        if (name === null || name === this.targetBase) this.schedule();
      });
      w.on('error', () => this.closeWatcher('target'));
      this.targetWatcher = w;
    } catch {
      this.targetDir = null; // the poll covers it
    }
  }

  private closeWatcher(which: 'dir' | 'target'): void {
    const w = which === 'dir' ? this.dirWatcher : this.targetWatcher;
    if (w === null) return;
    w.close();
    if (which === 'dir') this.dirWatcher = null;
    else {
      this.targetWatcher = null;
      this.targetDir = null;
    }
  }

  private async poll(): Promise<void> {
    if (this.isClosed || this.isPolling) return;
    this.isPolling = true;
    try {
      // A watcher that died (its folder replaced, inotify limits) is re-created here.
      if (this.opts.useWatch !== false) this.watchDir();
      const key = await this.statKey();
      if (key !== this.lastStatKey) {
        this.lastStatKey = key;
        this.schedule();
      }
    } finally {
      this.isPolling = false;
    }
  }

  /** inode, size and mtime of the file through symlinks; '' when missing. */
  private async statKey(): Promise<string> {
    try {
      const s = await stat(this.path);
      return `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return '';
    }
  }

  /** Debounce: `debounceMs` after the last event, but no later than `maxWaitMs` after the first. */
  private schedule(): void {
    if (this.isClosed) return;
    const now = Date.now();
    if (this.debounceTimer === null) this.firstEventAt = now;
    else clearTimeout(this.debounceTimer);
    const wait = Math.max(0, Math.min(this.debounceMs, this.firstEventAt + this.maxWaitMs - now));
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = null;
      void this.check();
    }, wait);
    this.debounceTimer.unref();
  }

  // ---- load, validate, apply ----

  private check(): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    if (this.isBusy) {
      this.isDirty = true;
      return this.running ?? Promise.resolve();
    }
    this.isBusy = true;
    this.running = (async () => {
      try {
        do {
          this.isDirty = false;
          await this.checkOnce();
        } while (this.isDirty && !this.isClosed);
      } finally {
        this.isBusy = false;
        this.running = null;
      }
    })();
    return this.running;
  }

  private async checkOnce(): Promise<void> {
    this.checks++;
    const log = this.opts.log;
    const running = this.opts.versions.current.version;
    let bytes: Buffer;
    try {
      bytes = await readFile(this.path);
    } catch (err) {
      if (!this.isMissing) {
        this.isMissing = true;
        log.warn({ file: this.path, version: running, err: errMessage(err) }, `config file unreadable; keeping version ${running}`);
      }
      return;
    }
    if (this.isMissing) {
      this.isMissing = false;
      log.info({ file: this.path }, 'config file is back');
    }
    if (this.opts.useWatch !== false) await this.watchTarget();
    const hash = hashOf(bytes);
    if (hash === this.lastHash) return;
    this.lastHash = hash;
    this.lastStatKey = await this.statKey();
    if (hash === this.runningHash) {
      // A bad edit reverted: nothing to apply, but say the file is fine again.
      log.info({ file: this.path, version: running }, `config file matches the running version ${running} again`);
      return;
    }
    let next: ConfigSnapshot;
    try {
      next = parseConfig(bytes.toString('utf8'), this.path, this.dir, this.opts.versions.nextVersion);
    } catch (err) {
      this.rejected++;
      const issues = err instanceof ConfigError ? err.message.split('\n') : [errMessage(err)];
      const more = issues.length > 1 ? ` (+${issues.length - 1} more)` : '';
      log.error({ file: this.path, version: running, issues }, `config rejected, keeping version ${running}: ${issues[0]}${more}`);
      return;
    }
    try {
      await this.opts.apply(next);
      this.runningHash = hash;
      this.applied++;
    } catch (err) {
      this.rejected++;
      log.error({ file: this.path, version: this.opts.versions.current.version, err: errMessage(err) }, `config reload failed, keeping version ${this.opts.versions.current.version}: ${errMessage(err)}`);
    }
  }
}

function hashOf(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
