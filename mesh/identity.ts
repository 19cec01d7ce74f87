/**
 * This sidecar's mesh identity (issue 5, item 3): its SPIFFE certificate chain, private key and
 * the trust bundle of peers, read from files and rotated without a restart.
 *
 * `IdentityStore` loads and validates the three files (every PEM parses, the key belongs to the
 * leaf certificate, the leaf carries a `spiffe://` URI SAN, it has not expired) and exposes the
 * result as one immutable `IdentityMaterial`. `watch()` then follows the files for rotation:
 * it watches their *directories* (and those of their symlink targets), because the ways new
 * material arrives replace directory entries rather than write into the watched inode:
 *
 * - atomic rename (`cert.pem.tmp` renamed over `cert.pem`): an event named `cert.pem`;
 * - the Kubernetes secret/configmap volume: `cert.pem -> ..data/cert.pem`,
 *   `..data -> ..2026_11_26_...`, updated by renaming a new `..data_tmp` symlink over `..data`:
 *   events named `..something`.
 *
 * Events are debounced (100 ms by default) because a rotation touches several files; then the
 * whole set is re-read and re-validated. A set that fails validation (unreadable, not a
 * certificate, key mismatch, no SPIFFE ID) is rejected with a logged error and the old material
 * stays in force; the next event tries again. Subscribers (`onChange`) are told after a swap,
 * synchronously, in registration order: the listeners swap their secure context, the
 * connectors read `current` on every dial.
 *
 * No sockets here (DESIGN invariant 1): node:crypto's X509Certificate does the parsing; the TLS
 * side lives in protocols/tls/mesh.ts.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { type FSWatcher, readFileSync, realpathSync, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { IdentityConfig } from '../src/config/types.js';

/** One validated set of identity files. Immutable; a rotation makes a new one. */
export interface IdentityMaterial {
  /** The certificate chain as read (leaf first), PEM. */
  readonly certPem: Buffer;
  readonly keyPem: Buffer;
  /** The trust bundle (peers' CAs), PEM. */
  readonly caPem: Buffer;
  /** This sidecar's SPIFFE ID (the leaf's first `spiffe://` URI SAN). */
  readonly spiffeId: string;
  /** Serial number of the leaf (hex, as node:crypto prints it). */
  readonly serialNumber: string;
  readonly notAfter: Date;
  /** 1 for the first load, +1 on every accepted rotation. */
  readonly version: number;
}

/** The subset of a pino logger the store uses. */
export interface IdentityLog {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface IdentityStoreOptions {
  /** Quiet period after the last file event before re-reading; default 100 ms. */
  readonly debounceMs?: number;
  readonly log?: IdentityLog | null;
}

export type IdentityListener = (next: IdentityMaterial, prev: IdentityMaterial) => void;

/** A file set that cannot serve as an identity; the message names the file and the problem. */
export class IdentityError extends Error {
  override readonly name = 'IdentityError';
}

const DEFAULT_DEBOUNCE_MS = 100;

export class IdentityStore {
  readonly config: IdentityConfig;
  private material: IdentityMaterial | null;
  private readonly listeners: IdentityListener[];
  private readonly debounceMs: number;
  private readonly log: IdentityLog | null;
  /** Watched directory -> its watcher and the entry names in it that matter. */
  private readonly watchers: Map<string, { watcher: FSWatcher; names: Set<string> }>;
  private timer: NodeJS.Timeout | null;
  private isWatching: boolean;
  /** Reloads attempted and rejected since start (for tests and /stats). */
  rejected: number;

  constructor(config: IdentityConfig, opts: IdentityStoreOptions = {}) {
    this.config = config;
    this.material = null;
    this.listeners = [];
    this.debounceMs = opts.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    this.log = opts.log ?? null;
    this.watchers = new Map();
    this.timer = null;
    this.isWatching = false;
    this.rejected = 0;
  }

  /** Loads the files (first time). Throws IdentityError when they do not form a valid identity. */
  load(): IdentityMaterial {
    this.material = readIdentity(this.config, 1);
    return this.material;
  }

  /** The material in force. Throws before `load()` succeeded. */
  get current(): IdentityMaterial {
    if (this.material === null) throw new IdentityError('identity not loaded');
    return this.material;
  }

  /** Calls `cb` after every accepted rotation; returns the unsubscribe function. */
  onChange(cb: IdentityListener): () => void {
    this.listeners.push(cb);
    return () => {
      const i = this.listeners.indexOf(cb);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /**
   * Re-reads the files now. Unchanged bytes: nothing happens (false). A valid new set is
   * swapped in and announced (true). An invalid one is logged and rejected (false); the old
   * material stays.
   */
  reload(): boolean {
    const prev = this.current;
    let next: IdentityMaterial;
    try {
      const files = readFiles(this.config);
      if (files.cert.equals(prev.certPem) && files.key.equals(prev.keyPem) && files.ca.equals(prev.caPem)) return false;
      next = validate(this.config, files, prev.version + 1);
    } catch (err) {
      this.rejected++;
      this.log?.error(
        { err: (err as Error).message, cert: this.config.cert, key: this.config.key, trustBundle: this.config.trustBundle, keeping: prev.serialNumber },
        'mesh identity rotation rejected; keeping the current certificate',
      );
      return false;
    } finally {
      // Symlink targets may have moved (Kubernetes ..data swap): follow them.
      if (this.isWatching) this.syncWatchers();
    }
    this.material = next;
    this.log?.info(
      { spiffeId: next.spiffeId, serial: next.serialNumber, notAfter: next.notAfter.toISOString(), version: next.version, previousSerial: prev.serialNumber },
      'mesh identity rotated',
    );
    for (const l of this.listeners.slice()) l(next, prev);
    return true;
  }

  /** Starts following the files (idempotent). The watchers do not keep the process alive. */
  watch(): void {
    if (this.isWatching) return;
    this.isWatching = true;
    this.syncWatchers();
  }

  /** Stops watching and cancels a pending reload. */
  close(): void {
    this.isWatching = false;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    for (const w of this.watchers.values()) w.watcher.close();
    this.watchers.clear();
  }

  /** Directories to watch: each file's own, and its resolved target's when it is a symlink. */
  private wantedDirs(): Map<string, Set<string>> {
    const want = new Map<string, Set<string>>();
    const add = (path: string): void => {
      const dir = dirname(path);
      let names = want.get(dir);
      if (names === undefined) want.set(dir, (names = new Set()));
      names.add(basename(path));
    };
    for (const path of [this.config.cert, this.config.key, this.config.trustBundle]) {
      add(path);
      try {
        const real = realpathSync(path);
        if (real !== path) add(real);
      } catch {
        // missing right now (mid-rename); its directory is watched anyway
      }
    }
    return want;
  }

  private syncWatchers(): void {
    const want = this.wantedDirs();
    for (const [dir, w] of this.watchers) {
      if (!want.has(dir)) {
        w.watcher.close();
        this.watchers.delete(dir);
      }
    }
    for (const [dir, names] of want) {
      const have = this.watchers.get(dir);
      if (have !== undefined) {
        have.names = names;
        continue;
      }
      let watcher: FSWatcher;
      try {
        watcher = watch(dir, { persistent: false });
      } catch (err) {
        this.log?.warn({ dir, err: (err as Error).message }, 'cannot watch identity directory');
        continue;
      }
      const entry = { watcher, names };
      watcher.on('change', (_event: string, name: string | Buffer | null) => this.onFsEvent(entry.names, name));
      watcher.on('error', () => {
        // The directory went away (an old Kubernetes ..2026_... dir): drop the watcher; the
        // next reload re-resolves the targets.
        watcher.close();
        if (this.watchers.get(dir)?.watcher === watcher) this.watchers.delete(dir);
        this.schedule();
      });
      this.watchers.set(dir, entry);
    }
  }

  private onFsEvent(names: Set<string>, name: string | Buffer | null): void {
    // null: the platform did not say which entry; `..x`: the Kubernetes atomic writer.
    const entry = name === null ? null : name.toString();
    if (entry === null || names.has(entry) || entry.startsWith('..')) this.schedule();
  }

  /** Debounce: the reload runs once the files were quiet for `debounceMs`. */
  private schedule(): void {
    if (!this.isWatching) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.isWatching) this.reload();
    }, this.debounceMs);
    this.timer.unref();
  }
}

// ---- validation ---------------------------------------------------------------------------

interface IdentityFiles {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
}

function readOne(what: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new IdentityError(`${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function readFiles(config: IdentityConfig): IdentityFiles {
  return { cert: readOne('cert', config.cert), key: readOne('key', config.key), ca: readOne('trustBundle', config.trustBundle) };
}

/** Reads and validates the identity files; throws IdentityError. */
export function readIdentity(config: IdentityConfig, version: number): IdentityMaterial {
  return validate(config, readFiles(config), version);
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

function parseCerts(what: string, path: string, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString('latin1').match(PEM_CERT);
  if (blocks === null) throw new IdentityError(`${what} ${path}: no PEM certificate in the file`);
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new IdentityError(`${what} ${path}: certificate ${i + 1} does not parse: ${(err as Error).message}`);
    }
  });
}

function validate(config: IdentityConfig, files: IdentityFiles, version: number): IdentityMaterial {
  const chain = parseCerts('cert', config.cert, files.cert);
  const bundle = parseCerts('trustBundle', config.trustBundle, files.ca);
  const leaf = chain[0];
  let isMatch: boolean;
  try {
    isMatch = leaf.checkPrivateKey(createPrivateKey(files.key));
  } catch (err) {
    throw new IdentityError(`key ${config.key}: not a usable private key: ${(err as Error).message}`);
  }
  if (!isMatch) throw new IdentityError(`key ${config.key} does not belong to the certificate in ${config.cert} (serial ${leaf.serialNumber})`);
  const spiffeId = spiffeIdOf(leaf);
  if (spiffeId === '') throw new IdentityError(`cert ${config.cert}: no spiffe:// URI SAN (subjectAltName: ${leaf.subjectAltName ?? 'none'})`);
  const notAfter = new Date(leaf.validTo);
  if (notAfter.getTime() <= Date.now()) throw new IdentityError(`cert ${config.cert} (${spiffeId}) expired at ${notAfter.toISOString()}`);
  // The leaf must chain to the bundle (through the chain's intermediates): peers verify us with
  // the same trust domain's CA, so a leaf from elsewhere is a wrong file, not a rotation. A
  // federated bundle adds foreign CAs next to our own; it does not replace it.
  if (!chainsTo(leaf, chain.slice(1), bundle)) {
    throw new IdentityError(`cert ${config.cert} (${spiffeId}) is not issued by a CA in ${config.trustBundle}`);
  }
  return Object.freeze({
    certPem: files.cert,
    keyPem: files.key,
    caPem: files.ca,
    spiffeId,
    serialNumber: leaf.serialNumber,
    notAfter,
    version,
  });
}

/** True when `cert` is signed, through `intermediates`, by a certificate of `roots`. */
function chainsTo(cert: X509Certificate, intermediates: readonly X509Certificate[], roots: readonly X509Certificate[]): boolean {
  let at = cert;
  for (let depth = 0; depth <= intermediates.length; depth++) {
    for (const root of roots) if (isIssuedBy(at, root)) return true;
    const next = intermediates.find((c) => isIssuedBy(at, c));
    if (next === undefined) return false;
    at = next;
  }
  return false;
}

function isIssuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

// ---- SPIFFE IDs ---------------------------------------------------------------------------

/** The first `spiffe://` URI SAN of a certificate (X509Certificate or DER bytes); '' when none. */
export function spiffeIdOf(cert: X509Certificate | Buffer): string {
  let x509: X509Certificate;
  try {
    x509 = Buffer.isBuffer(cert) ? new X509Certificate(cert) : cert;
  } catch {
    return '';
  }
  return spiffeIdFromSan(x509.subjectAltName);
}

/**
 * The first `spiffe://` URI in a subjectAltName string as node prints it
 * (`URI:spiffe://td/ns/a/sa/b, IP Address:127.0.0.1`; values with special characters come
 * JSON-quoted: `URI:"spiffe://..."`). '' when there is none.
 */
export function spiffeIdFromSan(san: string | undefined): string {
  if (san === undefined || san === '') return '';
  let i = 0;
  while (i < san.length) {
    const colon = san.indexOf(':', i);
    if (colon < 0) return '';
    const kind = san.slice(i, colon);
    let value: string;
    let end: number;
    if (san.charCodeAt(colon + 1) === 34 /* " */) {
      // JSON string: find the closing quote that is not escaped.
      let j = colon + 2;
      while (j < san.length && san.charCodeAt(j) !== 34) j += san.charCodeAt(j) === 92 /* \ */ ? 2 : 1;
      try {
        value = JSON.parse(san.slice(colon + 1, j + 1)) as string;
      } catch {
        return '';
      }
      end = j + 1;
    } else {
      const comma = san.indexOf(', ', colon);
      end = comma < 0 ? san.length : comma;
      value = san.slice(colon + 1, end);
    }
    if (kind === 'URI' && value.startsWith('spiffe://')) return value;
    const next = san.indexOf(', ', end);
    if (next < 0) return '';
    i = next + 2;
  }
  return '';
}
