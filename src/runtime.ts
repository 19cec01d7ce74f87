/**
 * The bootstrap: wires a snapshot store, the arena, the pools, the engine, the listeners and
 * the admin endpoint into one running sidecar, and drains it on shutdown. This file (with
 * cli.ts) is the only place in src/ that may import protocols/.
 */
import { isDeepStrictEqual } from 'node:util';
import { ContextArena } from './arena.js';
import type { ConfigSnapshot, Limits, ListenerConfig } from './config/types.js';
import { ProxyEngine } from './proxy/engine.js';
import { OverloadManager } from './overload.js';
import { UpstreamPools } from './pool/upstream-pools.js';
import { ConfigStore } from '../mesh/config-store.js';
import { ConfigFileSource } from '../mesh/file-source.js';
import { IdentityStore } from '../mesh/identity.js';
import type { XdsSource } from '../mesh/xds/source.js';
import { AdminServer, Listener, createConnectors, type AdminResponse } from '../protocols/index.js';
import { adminResponse } from './admin.js';
import type { LogLevel } from './config/types.js';
import { AccessLog } from './telemetry/access-log.js';
import { createLogger, type Logger } from './telemetry/logger.js';
import { Metrics } from './telemetry/metrics.js';
import { Telemetry } from './telemetry/telemetry.js';
import type { ClusterState } from './pool/balancer.js';
import { Tracing, isTracingEnabled } from './telemetry/tracing.js';

export interface RuntimeOptions {
  /** Overrides the config's `telemetry.logLevel` (the bench runs silent). */
  readonly logLevel?: LogLevel;
  /** The file the snapshot came from: watched, and reloaded when it changes (mesh/file-source.ts). */
  readonly configPath?: string;
}

/** How long shutdown waits for the last spans to be exported. */
const TRACE_FLUSH_MS = 3000;
/**
 * Shutdown, once no request is in flight: how long connections may take to close by
 * themselves before they are destroyed (within the drain timeout). Above HTTP/3's wait for
 * the last acknowledgements (protocols/h3/server.ts ACK_LINGER_MAX_MS).
 */
const CLOSE_LINGER_MS = 3000;

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
  isDraining: boolean;
  private isStopping: boolean;
  private closing: Promise<unknown> | null;
  readonly logger: Logger;
  readonly telemetry: Telemetry;
  /** This sidecar's mesh identity (`identity:` in the config), loaded and watched by start(); null without one. */
  readonly identity: IdentityStore | null;
  private readonly configPath: string | null;
  /** Watches `configPath` once started; null without a file. */
  configSource: ConfigFileSource | null;
  /** Listeners a reload replaced or removed, draining their connections. */
  private readonly retiring: Set<Listener>;
  /** The xDS control plane (`xds:` in the config), started by start(); null without one. */
  xds: XdsSource | null;

  constructor(snapshot: ConfigSnapshot, options: RuntimeOptions = {}) {
    this.store = new ConfigStore(snapshot);
    this.arena = new ContextArena(snapshot.limits.streamBufferBytes);
    const logger = createLogger(options.logLevel ?? snapshot.telemetry.logLevel);
    this.identity = snapshot.identity === null ? null : new IdentityStore(snapshot.identity, { log: logger });
    this.pools = new UpstreamPools(createConnectors(this.identity));
    const overload = new OverloadManager(logger);
    overload.configure(snapshot.limits);
    this.engine = new ProxyEngine(this.store, this.pools, overload);
    this.listeners = [];
    this.ports = new Map();
    this.adminPort = 0;
    this.admin = null;
    this.isReady = false;
    this.isDraining = false;
    this.isStopping = false;
    this.closing = null;
    this.configPath = options.configPath ?? null;
    this.configSource = null;
    this.retiring = new Set();
    this.xds = null;
    this.logger = logger;
    const tel = snapshot.telemetry;
    const metrics = new Metrics(serviceNameOf(snapshot), {
      arena: this.arena,
      engine: this.engine,
      pools: this.pools,
      listenerStats: this.listeners,
      overload: this.engine.overload,
      traceStats: () => (this.telemetry.tracing === null ? null : this.telemetry.tracing.stats),
      accessLogLines: () => (this.telemetry.accessLog === null ? null : this.telemetry.accessLog.lines),
      accessLogDropped: () => (this.telemetry.accessLog === null ? null : this.telemetry.accessLog.dropped),
      clusterStates: () => {
        const now = performance.now();
        const out: { state: ClusterState; budgetRemaining: number }[] = [];
        for (const c of this.store.current.clusters.values()) {
          const state = this.pools.stateOf(c);
          out.push({ state, budgetRemaining: state.budget.remaining(c.retries, now) });
        }
        return out;
      },
    });
    this.telemetry = new Telemetry(metrics, tel.accessLog.enabled ? new AccessLog(tel.accessLog) : null, null, this.logger);
    this.engine.setObserver(this.telemetry);
  }

  async start(): Promise<void> {
    const snap = this.store.current;
    const log = this.logger;
    if (this.identity !== null) {
      // Invalid identity files fail the start (cli.ts: "cannot start", exit 1).
      const id = this.identity.load();
      this.identity.watch();
      log.info({ spiffeId: id.spiffeId, serial: id.serialNumber, notAfter: id.notAfter.toISOString(), trustBundle: this.identity.config.trustBundle }, 'mesh identity loaded');
    }
    if (isTracingEnabled(snap.telemetry)) {
      const tracing = await Tracing.start(snap.telemetry, serviceNameOf(snap), log);
      this.telemetry.tracing = tracing;
      log.info({ protocol: tracing.protocol, propagators: tracing.propagators, service: tracing.serviceName }, 'tracing on');
    }
    if (this.telemetry.accessLog !== null) {
      const a = this.telemetry.accessLog;
      log.info({ path: a.path, sampleRate: a.sampleRate }, 'access log on');
    }
    if (snap.admin !== null) {
      this.admin = new AdminServer(snap.admin, { handle: (m, p, b) => this.adminHandle(m, p, b) });
      this.adminPort = await this.admin.listen();
      log.info({ address: `${snap.admin.host}:${this.adminPort}` }, 'admin listening');
    }
    for (const cfg of snap.listeners) {
      const l = this.newListener(cfg, snap);
      const port = await l.listen();
      this.listeners.push(l);
      this.ports.set(cfg.name, port);
      log.info({ listener: cfg.name, address: `${cfg.address.host}:${port}`, protocols: cfg.protocols, direction: cfg.direction }, 'listener on');
    }
    // Loaded only with an xds block: @grpc/grpc-js and protobufjs cost ~5-13 MiB of RSS that a
    // sidecar without a control plane should not pay. Before isReady: /ready must see the
    // source (it waits for the first responses), not a moment without one.
    const xdsModule = snap.xds === null ? null : await import('../mesh/xds/source.js');
    this.engine.overload.start();
    this.isReady = true;
    if (snap.xds !== null && xdsModule !== null) {
      const xds = new xdsModule.XdsSource({ config: snap.xds, base: snap, versions: this.store, apply: (next) => this.applySnapshot(next), log });
      this.xds = xds;
      xds.start();
      log.info({ server: snap.xds.server, node: snap.xds.node.id, protocol: snap.xds.protocol }, 'xDS client started');
    }
    if (this.configPath !== null) {
      this.configSource = new ConfigFileSource({
        path: this.configPath,
        versions: this.store,
        // With xDS, a file edit is recomposed with the resources the control plane sent.
        apply: (next) => (this.xds !== null ? this.xds.setBase(next) : this.applySnapshot(next)),
        log: this.logger,
      });
      await this.configSource.start();
    }
  }

  /** The one place listeners are built (start and reloads). Binds nothing. */
  private newListener(cfg: ListenerConfig, snap: ConfigSnapshot): Listener {
    return new Listener(this.engine, this.arena, cfg, snap.limits, this.identity, this.logger);
  }

  /**
   * A config reload: validates what only the runtime can (new listeners are built, and those
   * on fresh addresses bound, before the swap; a failure throws and the running snapshot stays),
   * swaps the store, reconciles the upstream pools, then reconciles listeners by name. A
   * listener whose config is deep-equal (and whose limits did not change) keeps its socket and
   * its connections and serves the new snapshot from the next request on; a changed or
   * removed one is drained (close, in-flight requests finish, destroyed after the drain
   * timeout) and a changed or added one started. In-flight requests keep the snapshot they
   * read (`ctx.snapshot`). One call at a time (ConfigFileSource serialises them).
   * Rejected alternative: restart every listener on every reload (simple, but it drops every
   * keep-alive connection and refuses connects for a moment).
   */
  async applySnapshot(next: ConfigSnapshot): Promise<void> {
    if (this.isStopping) throw new Error('the runtime is stopping');
    const prev = this.store.current;
    const log = this.logger;
    const touchListeners = !this.isDraining;
    const limitsChanged = !sameListenerLimits(prev.limits, next.limits);
    const kept = new Set<string>();
    const retire: Listener[] = [];
    const fresh: Listener[] = [];
    if (touchListeners) {
      for (const l of this.listeners) {
        const cfg = next.listenerByName.get(l.config.name);
        const isSame = cfg !== undefined && !limitsChanged && isDeepStrictEqual(l.config, cfg);
        if (isSame) kept.add(l.config.name);
        else retire.push(l);
      }
      // Built before the swap: unreadable TLS files reject the reload here.
      for (const cfg of next.listeners) if (!kept.has(cfg.name)) fresh.push(this.newListener(cfg, next));
    }
    // Listeners on addresses no retiring listener holds are bound before the swap too; the
    // others must wait for their predecessor to let go of the port.
    const heldPorts = new Set<number>();
    for (const l of retire) heldPorts.add(this.ports.get(l.config.name) ?? l.config.address.port);
    const early = fresh.filter((l) => l.config.address.port === 0 || !heldPorts.has(l.config.address.port));
    const late = fresh.filter((l) => !early.includes(l));
    const bound = new Map<Listener, number>();
    try {
      for (const l of early) bound.set(l, await l.listen());
    } catch (err) {
      for (const l of bound.keys()) void l.close();
      throw err;
    }

    this.store.swap(next);
    this.pools.reconcile(next);

    if (touchListeners) {
      for (const l of retire) this.retireListener(l, next.limits.drainTimeoutMs);
      const failed: string[] = [];
      for (const l of late) {
        try {
          bound.set(l, await l.listen());
        } catch (err) {
          failed.push(l.config.name);
          log.error({ listener: l.config.name, err }, `listener ${l.config.name} cannot listen after the reload: ${(err as Error).message}`);
        }
      }
      const byName = new Map<string, Listener>();
      for (const l of this.listeners) if (kept.has(l.config.name)) byName.set(l.config.name, l);
      for (const [l, port] of bound) {
        byName.set(l.config.name, l);
        this.ports.set(l.config.name, port);
        log.info({ listener: l.config.name, address: `${l.config.address.host}:${port}`, protocols: l.config.protocols, direction: l.config.direction }, 'listener on');
      }
      for (const l of retire) if (!next.listenerByName.has(l.config.name)) this.ports.delete(l.config.name);
      for (const name of failed) this.ports.delete(name);
      // In config order; the array object stays (metrics hold it).
      this.listeners.length = 0;
      for (const cfg of next.listeners) {
        const l = byName.get(cfg.name);
        if (l !== undefined) this.listeners.push(l);
      }
    }
    // Applied in place, no listener restart: the memory marks (re-evaluated now) and
    // maxConnections on every listener kept (new ones were built with it).
    this.engine.overload.configure(next.limits);
    for (const l of this.listeners) l.setMaxConnections(next.limits.maxConnections);
    log.info(describeReload(prev, next, kept, retire, fresh), `config version ${next.version} applied`);
    const restartOnly: string[] = [];
    if (!isDeepStrictEqual(prev.admin, next.admin)) restartOnly.push('admin');
    if (!isDeepStrictEqual(prev.telemetry, next.telemetry)) restartOnly.push('telemetry');
    // The IdentityStore is built once from the first snapshot (it watches its own files).
    if (!isDeepStrictEqual(prev.identity, next.identity)) restartOnly.push('identity');
    if (!isDeepStrictEqual(prev.xds, next.xds)) restartOnly.push('xds');
    if (prev.limits.streamBufferBytes !== next.limits.streamBufferBytes) restartOnly.push('limits.streamBufferBytes');
    if (restartOnly.length > 0) log.warn({ keys: restartOnly }, `config changes to ${restartOnly.join(', ')} take effect after a restart`);
  }

  /** Close (no new connections, idle ones go), wait for in-flight requests, destroy at the deadline. */
  private retireListener(l: Listener, drainMs: number): void {
    this.retiring.add(l);
    const timer = setTimeout(() => l.destroyAll(), drainMs);
    timer.unref();
    void l.close().then(() => {
      clearTimeout(timer);
      this.retiring.delete(l);
      this.logger.info({ listener: l.config.name }, 'listener closed');
    });
  }

  private adminHandle(method: string, path: string, _body: string): Promise<AdminResponse> {
    return adminResponse(this, method, path);
  }

  /** Started, not draining, and with xDS, the first configuration received (or its initial fetch timeout passed). */
  get ready(): boolean {
    return this.isReady && !this.isDraining && (this.xds === null || this.xds.isSynced);
  }

  /**
   * Starts draining: listeners stop accepting, idle HTTP/1.1 connections close, HTTP/2
   * sessions get GOAWAY; in-flight requests go on. /ready answers 503 from now on. Used by
   * POST /drain (the process keeps running until it is told to stop) and by `stop`.
   */
  drain(): void {
    if (this.isDraining) return;
    this.isDraining = true;
    this.logger.info({ inFlight: this.engine.inFlight }, 'draining');
    this.closing = Promise.all(this.listeners.map((l) => l.close()));
  }

  /**
   * Graceful stop: drain, wait for in-flight requests up to the drain timeout, then close
   * everything, flush the access log and export the last spans. Resolves with the number of
   * requests that were cut off by the timeout.
   */
  async stop(): Promise<number> {
    if (this.isStopping) return 0;
    this.isStopping = true;
    if (this.configSource !== null) await this.configSource.close();
    if (this.xds !== null) this.xds.close();
    this.drain();
    const drainMs = this.store.current.limits.drainTimeoutMs;
    const deadline = Date.now() + drainMs;
    while (this.engine.inFlight > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
    }
    const cut = this.engine.inFlight;
    if (cut === 0) {
      // The requests are done, but their last bytes may still be on the way: connections
      // close by themselves once they are out (HTTP/1.1 after the response, HTTP/2 when node
      // closes the session after GOAWAY, HTTP/3 once the last responses are acknowledged).
      // Destroying them at once cut the HTTP/3 responses still unacknowledged, which the
      // client saw as failed requests (test/e2e/drain.test.ts). Bounded: a client that keeps
      // an idle connection open does not hold the exit to the drain timeout.
      let timer: NodeJS.Timeout | null = null;
      const linger = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, Math.max(0, Math.min(deadline - Date.now(), CLOSE_LINGER_MS)));
      });
      await Promise.race([this.closing, linger]);
      if (timer !== null) clearTimeout(timer);
    }
    this.engine.overload.stop();
    for (const l of this.listeners) l.destroyAll();
    for (const l of this.retiring) l.destroyAll();
    await this.closing;
    this.pools.close();
    if (this.identity !== null) this.identity.close();
    if (this.admin !== null) await this.admin.close();
    if (this.telemetry.accessLog !== null) this.telemetry.accessLog.close();
    const tracing = this.telemetry.tracing;
    if (tracing !== null) {
      let timer: NodeJS.Timeout | null = null;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, TRACE_FLUSH_MS);
      });
      await Promise.race([tracing.shutdown().catch(() => undefined), timeout]);
      if (timer !== null) clearTimeout(timer);
    }
    return cut;
  }
}

/** service.name and the Istio workload label: the config, then OTEL_SERVICE_NAME, then "skiff". */
function serviceNameOf(snap: ConfigSnapshot): string {
  return snap.telemetry.serviceName ?? (process.env.OTEL_SERVICE_NAME || 'skiff');
}

/**
 * The limits a listener takes at construction; a change rebuilds every listener.
 * (maxConnections is applied in place, see applySnapshot; requestBodyTimeoutMs was missing
 * here, so a reload changing only it was silently ignored.)
 */
function sameListenerLimits(a: Limits, b: Limits): boolean {
  return (
    a.maxHeaderBytes === b.maxHeaderBytes &&
    a.headersTimeoutMs === b.headersTimeoutMs &&
    a.requestBodyTimeoutMs === b.requestBodyTimeoutMs &&
    a.keepAliveTimeoutMs === b.keepAliveTimeoutMs &&
    a.maxRequestsPerConnection === b.maxRequestsPerConnection &&
    a.maxRequestsPerH3Connection === b.maxRequestsPerH3Connection &&
    a.streamBufferBytes === b.streamBufferBytes
  );
}

/** The fields of the one info line a reload logs: what changed. */
function describeReload(prev: ConfigSnapshot, next: ConfigSnapshot, kept: ReadonlySet<string>, retired: readonly Listener[], started: readonly Listener[]): object {
  const names = (ls: readonly Listener[]): string[] => ls.map((l) => l.config.name);
  const clusters = { added: [] as string[], removed: [] as string[], changed: [] as string[] };
  for (const [name, c] of next.clusters) {
    const old = prev.clusters.get(name);
    if (old === undefined) clusters.added.push(name);
    else if (!isDeepStrictEqual(old, c)) clusters.changed.push(name);
  }
  for (const name of prev.clusters.keys()) if (!next.clusters.has(name)) clusters.removed.push(name);
  const routeTables: string[] = [];
  for (const [name, t] of next.routeTables) {
    const old = prev.routeTables.get(name);
    if (old === undefined || !isDeepStrictEqual(old.routes, t.routes)) routeTables.push(name);
  }
  for (const name of prev.routeTables.keys()) if (!next.routeTables.has(name)) routeTables.push(name);
  return {
    version: next.version,
    previous: prev.version,
    source: next.source,
    listeners: { kept: [...kept], stopped: names(retired), started: names(started) },
    clusters,
    routeTablesChanged: routeTables,
  };
}
