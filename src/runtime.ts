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
import type { LogLevel } from './config/types.js';
import { AccessLog } from './telemetry/access-log.js';
import { createLogger, type Logger } from './telemetry/logger.js';
import { Metrics } from './telemetry/metrics.js';
import { Telemetry } from './telemetry/telemetry.js';
import { Tracing, isTracingEnabled } from './telemetry/tracing.js';

export interface RuntimeOptions {
  /** Overrides the config's `telemetry.logLevel` (the bench runs silent). */
  readonly logLevel?: LogLevel;
}

/** How long shutdown waits for the last spans to be exported. */
const TRACE_FLUSH_MS = 3000;

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
    this.isStopping = false;
    this.closing = null;
    this.logger = createLogger(options.logLevel ?? snapshot.telemetry.logLevel);
    const tel = snapshot.telemetry;
    const metrics = new Metrics(serviceNameOf(snapshot), {
      arena: this.arena,
      engine: this.engine,
      pools: this.pools,
      listenerStats: this.listeners,
      traceStats: () => (this.telemetry.tracing === null ? null : this.telemetry.tracing.stats),
      accessLogLines: () => (this.telemetry.accessLog === null ? null : this.telemetry.accessLog.lines),
    });
    this.telemetry = new Telemetry(metrics, tel.accessLog.enabled ? new AccessLog(tel.accessLog) : null, null, this.logger);
    this.engine.setObserver(this.telemetry);
  }

  async start(): Promise<void> {
    const snap = this.store.current;
    const log = this.logger;
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
      const l = new Listener(this.engine, this.arena, cfg, snap.limits);
      const port = await l.listen();
      this.listeners.push(l);
      this.ports.set(cfg.name, port);
      log.info({ listener: cfg.name, address: `${cfg.address.host}:${port}`, protocols: cfg.protocols, direction: cfg.direction }, 'listener on');
    }
    this.isReady = true;
  }

  private adminHandle(method: string, path: string, _body: string): Promise<AdminResponse> {
    return adminResponse(this, method, path);
  }

  get ready(): boolean {
    return this.isReady && !this.isDraining;
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
    this.drain();
    const drainMs = this.store.current.limits.drainTimeoutMs;
    const deadline = Date.now() + drainMs;
    while (this.engine.inFlight > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
    }
    const cut = this.engine.inFlight;
    for (const l of this.listeners) l.destroyAll();
    await this.closing;
    this.pools.close();
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
