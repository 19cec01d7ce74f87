/**
 * The bootstrap: wires a snapshot store, the arena, the pools, the engine, the listeners and
 * the admin endpoint into one running sidecar, and drains it on shutdown. This file (with
 * cli.ts) is the only place in src/ that may import protocols/.
 */
import { ContextArena } from './arena.js';
import type { ConfigSnapshot } from './config/types.js';
import { ProxyEngine } from './proxy/engine.js';
import { UpstreamPools } from './pool/upstream-pools.js';
import { ConfigStore } from '../mesh/config-store.js';
import { AdminServer, Listener, createConnectors, type AdminResponse } from '../protocols/index.js';
import { adminResponse } from './admin.js';

export interface RuntimeOptions {
  /** Where log lines go (stderr by default). */
  readonly log?: (line: string) => void;
}

export class Runtime {
  readonly store: ConfigStore;
  readonly arena: ContextArena;
  readonly pools: UpstreamPools;
  readonly engine: ProxyEngine;
  readonly listeners: Listener[];
  /** Bound ports by listener name (differs from the config with port 0). */
  readonly ports: Map<string, number>;
  adminPort: number;
  private admin: AdminServer | null;
  private isReady: boolean;
  private isDraining: boolean;
  private readonly log: (line: string) => void;

  constructor(snapshot: ConfigSnapshot, options: RuntimeOptions = {}) {
    this.store = new ConfigStore(snapshot);
    this.arena = new ContextArena(snapshot.limits.streamBufferBytes);
    this.pools = new UpstreamPools(createConnectors());
    this.engine = new ProxyEngine(this.store, this.pools);
    this.listeners = [];
    this.ports = new Map();
    this.adminPort = 0;
    this.admin = null;
    this.isReady = false;
    this.isDraining = false;
    this.log = options.log ?? ((line: string) => process.stderr.write(line + '\n'));
  }

  async start(): Promise<void> {
    const snap = this.store.current;
    if (snap.admin !== null) {
      this.admin = new AdminServer(snap.admin, { handle: (m, p, b) => this.adminHandle(m, p, b) });
      this.adminPort = await this.admin.listen();
      this.log(`skiff: admin listening on ${snap.admin.host}:${this.adminPort}`);
    }
    for (const cfg of snap.listeners) {
      const l = new Listener(this.engine, this.arena, cfg, snap.limits);
      const port = await l.listen();
      this.listeners.push(l);
      this.ports.set(cfg.name, port);
      this.log(`skiff: listener ${cfg.name} on ${cfg.address.host}:${port} (${cfg.protocols.join(', ')})`);
    }
    this.isReady = true;
  }

  private adminHandle(method: string, path: string, _body: string): AdminResponse {
    return adminResponse(this, method, path);
  }

  get ready(): boolean {
    return this.isReady && !this.isDraining;
  }

  /**
   * Graceful stop: stop accepting (HTTP/2 sessions get GOAWAY), wait for in-flight requests
   * up to the drain timeout, then close everything. Resolves with the number of requests that
   * were cut off by the timeout.
   */
  async stop(): Promise<number> {
    if (this.isDraining) return 0;
    this.isDraining = true;
    const drainMs = this.store.current.limits.drainTimeoutMs;
    const closing = Promise.all(this.listeners.map((l) => l.close()));
    const deadline = Date.now() + drainMs;
    while (this.engine.inFlight > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
    }
    const cut = this.engine.inFlight;
    for (const l of this.listeners) l.destroyAll();
    await closing;
    this.pools.close();
    if (this.admin !== null) await this.admin.close();
    return cut;
  }
}
