/**
 * XdsSource: the control plane's xDS form (issue 8). It holds the resources the ADS client
 * (client.ts) receives, composes them with the config file's document (state.ts) and hands
 * each new snapshot to the runtime, exactly as the file source does for file edits. A
 * response that does not translate, does not validate as a Skiff config, or that the runtime
 * cannot start (a listener that cannot bind) is NACKed and the running snapshot stays.
 *
 * The file keeps its part: admin, identity, limits, telemetry, and any listeners, routes and
 * clusters of its own, which xDS resources may not shadow (a clashing name is NACKed). An edit
 * of the file recomposes it with the xDS resources held (`setBase`).
 */
import { ConfigError, documentOf, parseConfigObject } from '../../src/config/load.js';
import type { ConfigSnapshot, XdsConfig } from '../../src/config/types.js';
import { XdsClient, type XdsClientLog, type XdsClientStatus } from './client.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, loadXdsProtos, type ResourceType } from './protos.js';
import { XdsState, compose, sameDocument, type Composition, type ResourceUpdate } from './state.js';

export interface XdsSourceOptions {
  readonly config: XdsConfig;
  /** The snapshot built from the file (its document is the base of every composition). */
  readonly base: ConfigSnapshot;
  readonly versions: { readonly nextVersion: number };
  /** Starts a snapshot (Runtime.applySnapshot); a rejection NACKs the update. */
  readonly apply: (next: ConfigSnapshot) => Promise<void>;
  readonly log: XdsClientLog;
}

export class XdsSource {
  private readonly opts: XdsSourceOptions;
  readonly client: XdsClient;
  private state: XdsState;
  private composition: Composition;
  private base: ConfigSnapshot;
  /** Types that have had at least one response (accepted or not). */
  private readonly answered: Set<ResourceType>;
  private readonly startedAt: number;
  /** Serialises updates and file edits. */
  private chain: Promise<void>;

  constructor(opts: XdsSourceOptions) {
    this.opts = opts;
    this.base = opts.base;
    this.state = new XdsState();
    this.composition = compose(documentOf(opts.base).document, this.state, null);
    this.answered = new Set();
    this.startedAt = Date.now();
    this.chain = Promise.resolve();
    this.client = new XdsClient(opts.config, loadXdsProtos(), {
      update: (u) => this.serial(() => this.update(u)),
      wanted: (t) => (t === ENDPOINT_TYPE ? this.state.endpointNames() : t === ROUTE_TYPE ? this.state.routeNames() : new Set()),
      versions: (t) => new Map([...this.state.mapOf(t)].map(([name, v]) => [name, v.version])),
    }, opts.log);
  }

  start(): void {
    this.client.start();
  }

  close(): void {
    this.client.close();
  }

  /**
   * True once the first Listener and Cluster responses have been handled and nothing is
   * warming, or once the initial fetch timeout has passed (the sidecar then serves what it
   * has, as Envoy does after initial_fetch_timeout).
   */
  get isSynced(): boolean {
    if (Date.now() - this.startedAt >= this.opts.config.initialFetchTimeoutMs) return true;
    const w = this.composition.warming;
    return this.answered.has(CLUSTER_TYPE) && this.answered.has(LISTENER_TYPE) && w.clusters.length === 0 && w.listeners.length === 0;
  }

  /** A new file snapshot: recomposed with the xDS resources and applied (errors are thrown to the file source). */
  setBase(next: ConfigSnapshot): Promise<void> {
    return this.serial(async () => {
      const comp = compose(documentOf(next).document, this.state, this.composition);
      await this.applyComposition(comp, next);
      this.base = next;
      this.composition = comp;
    });
  }

  /** For /config_dump: the stream, and every resource held with its version. */
  status(): { readonly client: XdsClientStatus; readonly synced: boolean; readonly warming: Composition['warming']; readonly resources: object } {
    const list = (t: ResourceType): { name: string; version: string }[] =>
      [...this.state.mapOf(t)].map(([name, v]) => ({ name, version: v.version }));
    return {
      client: this.client.status(),
      synced: this.isSynced,
      warming: this.composition.warming,
      resources: { clusters: list(CLUSTER_TYPE), endpoints: list(ENDPOINT_TYPE), listeners: list(LISTENER_TYPE), routes: list(ROUTE_TYPE) },
    };
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const run = this.chain.then(fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async update(u: ResourceUpdate): Promise<void> {
    this.answered.add(u.typeUrl);
    const next = this.state.withUpdate(u);
    // Endpoints and routes nothing references any more are forgotten (and unsubscribed).
    next.retain(ENDPOINT_TYPE, next.endpointNames());
    next.retain(ROUTE_TYPE, next.routeNames());
    const comp = compose(documentOf(this.base).document, next, this.composition);
    if (!sameDocument(this.composition, comp)) await this.applyComposition(comp, this.base);
    this.state = next;
    this.composition = comp;
  }

  private async applyComposition(comp: Composition, base: ConfigSnapshot): Promise<void> {
    let snapshot: ConfigSnapshot;
    try {
      snapshot = parseConfigObject(comp.document, `${base.source} + xDS ${this.opts.config.server}`, documentOf(base).baseDir, this.opts.versions.nextVersion, true);
    } catch (err) {
      if (err instanceof ConfigError) throw new Error(`the configuration does not validate: ${err.issues.map((i) => (i.path === '' ? i.message : `${i.path}: ${i.message}`)).join('; ')}`);
      throw err;
    }
    await this.opts.apply(snapshot);
  }
}
