// An xDS ADS management server for tests: a real gRPC server on 127.0.0.1 (@grpc/grpc-js) that
// serves both ADS forms, state-of-the-world (StreamAggregatedResources) and delta
// (DeltaAggregatedResources), from an in-memory resource store, and records every request and
// response so tests can assert on the conversation.
//
// The service definition is built by hand from the method paths in mesh/xds/protos.ts and the
// protobufjs types it loads; no proto-loader. A form switched off is simply not registered, so
// grpc-js answers calls to it with UNIMPLEMENTED (the status a client falls back on).
//
// Protocol behaviour follows envoyproxy.io "xDS REST and gRPC protocol":
//
// SotW, per stream and type:
//   - LDS and CDS are wildcard when the first request names nothing ("legacy" wildcard, kept while
//     later requests name nothing either); any type is wildcard while its names include "*".
//     A wildcard response carries every resource of the type, so a removal is an absence.
//     Otherwise the response carries the requested names that exist (possibly none).
//   - A response goes out when a type is first requested, when a non-stale request changes the
//     subscription, and when a store change alters what the stream would be sent (compared by
//     name and resource version). An ACK or NACK alone never causes a resend.
//   - A request whose response_nonce is not the latest nonce sent for its type is stale: recorded,
//     otherwise ignored. ACK/NACK: a request carrying the latest nonce, NACK when error_detail is set.
//   - version_info is the type's version: the store's version counter at the type's last change.
// Delta, per stream and type:
//   - Wildcard when the first request subscribes to nothing or to "*"; "*" in unsubscribe leaves
//     wildcard. Named subscriptions are kept beside it.
//   - The server tracks which version of each resource the client has. initial_resource_versions
//     (first request only) seeds it, so matching resources are not resent and names the client has
//     that no longer exist (and it still wants) are sent in removed_resources.
//   - Subscribing to a name resends it even if the client seems to have it (the spec's "the
//     client may have forgotten"); unsubscribing forgets it (resent if still covered by wildcard).
//   - A response carries only what changed; none is sent when nothing changed, except that the
//     first request for a wildcard type is always answered (possibly empty), so a client waiting
//     for its first response is never stuck (go-control-plane does the same).
//   - ACK/NACK: a request whose response_nonce was sent on this stream for this type; NACK when
//     error_detail is set. Delta requests are not superseded, so subscription changes apply
//     whatever nonce they carry.
// Not implemented: resource aliases and locators (xdstp), TTLs and heartbeats, the delta
// "resource does not exist" marker (a Resource with a name and no body), per-node resource sets
// (every client sees the same store), waiting for an ACK before sending the next update.
import * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import {
  CLUSTER_TYPE,
  DELTA_METHOD,
  ENDPOINT_TYPE,
  LISTENER_TYPE,
  ROUTE_TYPE,
  SOTW_METHOD,
  loadXdsProtos,
  type Message,
  type PackedAny,
  type XdsProtos,
} from '../../mesh/xds/protos.js';

export type XdsForm = 'sotw' | 'delta';

/** A resource as stored: what the test gave, its packed Any (as sent) and its version. */
export interface StoredResource {
  /** A plain camelCase object (packed with `pack`) or a PackedAny sent as is. */
  readonly resource: object;
  readonly packed: PackedAny;
  /** The store's version counter when this resource last changed. */
  readonly version: string;
}

export function isPackedAny(value: unknown): value is PackedAny {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as { type_url?: unknown; value?: unknown };
  return typeof v.type_url === 'string' && v.value instanceof Uint8Array;
}

/** Order in which a batch touching several types is pushed: make before break (CDS, EDS, LDS, RDS). */
const PUSH_ORDER: readonly string[] = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE];
/** Types whose empty first SotW request means "everything" (legacy wildcard). */
const WILDCARD_TYPES: ReadonlySet<string> = new Set([LISTENER_TYPE, CLUSTER_TYPE]);
const WILDCARD = '*';

/**
 * Shared by every store in the process, so versions never repeat even across stores: a client
 * reconnecting to a fresh store with initial_resource_versions from an old one cannot match by
 * accident.
 */
let versionCounter = 0;

export type StoreListener = (changedTypes: readonly string[]) => void;

/**
 * Resources by type URL and name. Each change (or each `update` batch) takes the next value of a
 * process-wide version counter; it becomes the version of every resource changed and of every type
 * touched. Listeners hear of a change once, after it is applied, with the types it touched.
 */
export class XdsStore {
  private readonly protos: XdsProtos = loadXdsProtos();
  private readonly types = new Map<string, Map<string, StoredResource>>();
  private readonly typeVersions = new Map<string, string>();
  private readonly listeners = new Set<StoreListener>();
  private depth = 0;
  private pendingVersion = '';
  private pendingTypes = new Set<string>();
  private lastVersion = '0';

  /** The version of the last change to this store ('0' before any). */
  get version(): string {
    return this.lastVersion;
  }

  /** The version of the last change to a type ('0' if it never changed). */
  typeVersion(typeUrl: string): string {
    return this.typeVersions.get(typeUrl) ?? '0';
  }

  get(typeUrl: string, name: string): StoredResource | undefined {
    return this.types.get(typeUrl)?.get(name);
  }

  /** The version of one resource, or undefined if absent. */
  versionOf(typeUrl: string, name: string): string | undefined {
    return this.get(typeUrl, name)?.version;
  }

  names(typeUrl: string): string[] {
    return [...(this.types.get(typeUrl)?.keys() ?? [])];
  }

  /** A read-only view of one type's resources, in insertion order. */
  entries(typeUrl: string): ReadonlyMap<string, StoredResource> {
    return this.types.get(typeUrl) ?? new Map<string, StoredResource>();
  }

  /**
   * Adds or replaces a resource; always a change (a new version), even with identical content.
   * Throws at once for a plain object of a type that is not loaded (give a PackedAny instead).
   * Returns the new version.
   */
  set(typeUrl: string, name: string, resource: object): string {
    const packed = this.packOf(typeUrl, resource);
    return this.batch(() => this.put(typeUrl, name, resource, packed));
  }

  /** Removes a resource; returns whether it existed (no change, no version, if it did not). */
  remove(typeUrl: string, name: string): boolean {
    let existed = false;
    this.batch(() => {
      const map = this.types.get(typeUrl);
      existed = map?.delete(name) ?? false;
      if (existed) this.pendingTypes.add(typeUrl);
    });
    return existed;
  }

  /**
   * Makes `resources` the whole set of a type, like a snapshot: names missing from it are removed,
   * and only new entries and entries whose encoded bytes differ get the new version (so delta
   * streams are sent only those). Returns the store version afterwards.
   */
  replaceAll(typeUrl: string, resources: ReadonlyMap<string, object> | Readonly<Record<string, object>>): string {
    const next = resources instanceof Map ? resources : new Map(Object.entries(resources));
    const packed = new Map<string, PackedAny>();
    for (const [name, r] of next) packed.set(name, this.packOf(typeUrl, r));
    this.batch(() => {
      const map = this.types.get(typeUrl);
      if (map !== undefined) {
        for (const name of [...map.keys()]) {
          if (!next.has(name)) {
            map.delete(name);
            this.pendingTypes.add(typeUrl);
          }
        }
      }
      for (const [name, r] of next) {
        const p = packed.get(name) as PackedAny;
        const old = map?.get(name);
        if (old !== undefined && old.packed.type_url === p.type_url && Buffer.compare(old.packed.value, p.value) === 0) continue;
        this.put(typeUrl, name, r, p);
      }
    });
    return this.lastVersion;
  }

  /**
   * Applies several changes as one: they share one version and listeners hear once, after `fn`
   * returns (or throws: changes made before the throw stay). Returns the store version afterwards.
   */
  update(fn: (store: XdsStore) => void): string {
    this.batch(() => fn(this));
    return this.lastVersion;
  }

  /** Subscribes to changes; returns the unsubscribe function. */
  onChange(listener: StoreListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  private packOf(typeUrl: string, resource: object): PackedAny {
    return isPackedAny(resource) ? resource : this.protos.pack(typeUrl, resource);
  }

  private put(typeUrl: string, name: string, resource: object, packed: PackedAny): string {
    let map = this.types.get(typeUrl);
    if (map === undefined) {
      map = new Map();
      this.types.set(typeUrl, map);
    }
    map.set(name, { resource, packed, version: this.pendingVersion });
    this.pendingTypes.add(typeUrl);
    return this.pendingVersion;
  }

  private batch(fn: () => void): string {
    if (this.depth++ === 0) {
      this.pendingVersion = String(versionCounter + 1);
      this.pendingTypes = new Set();
    }
    try {
      fn();
    } finally {
      if (--this.depth === 0 && this.pendingTypes.size > 0) {
        versionCounter = Number(this.pendingVersion);
        this.lastVersion = this.pendingVersion;
        const touched = [...this.pendingTypes].sort(byPushOrder);
        for (const t of touched) this.typeVersions.set(t, this.pendingVersion);
        this.pendingTypes = new Set();
        for (const l of [...this.listeners]) l(touched);
      }
    }
    return this.pendingVersion;
  }
}

function byPushOrder(a: string, b: string): number {
  const ia = PUSH_ORDER.indexOf(a);
  const ib = PUSH_ORDER.indexOf(b);
  return (ia < 0 ? PUSH_ORDER.length : ia) - (ib < 0 ? PUSH_ORDER.length : ib) || (a < b ? -1 : a > b ? 1 : 0);
}

// ---------------------------------------------------------------------------------------
// Recording

/**
 * How the server read a request:
 *   'initial'  the first request for its type on the stream
 *   'ack'      carries the nonce of a response for its type (SotW: the latest one), no error_detail
 *   'nack'     likewise, with error_detail
 *   'stale'    carries a nonce that is not (SotW: no longer) current; ignored for subscriptions in SotW
 *   'request'  no nonce, not the first: a spontaneous subscription change
 */
export type RequestKind = 'initial' | 'ack' | 'nack' | 'stale' | 'request';

export interface RecordedRequest {
  /** Position among all requests this server recorded (0-based). */
  readonly seq: number;
  readonly form: XdsForm;
  /** The server's id of the stream (1-based, unique across restarts of one XdsServer). */
  readonly stream: number;
  readonly kind: RequestKind;
  readonly typeUrl: string;
  /** The node as sent on this request (normally only the first request of a stream has one). */
  readonly node: Message | null;
  /** SotW version_info ('' for delta). */
  readonly versionInfo: string;
  readonly responseNonce: string;
  readonly errorDetail: { readonly code: number; readonly message: string } | null;
  /** SotW resource_names. */
  readonly resourceNames: readonly string[];
  /** Delta resource_names_subscribe / _unsubscribe / initial_resource_versions. */
  readonly subscribe: readonly string[];
  readonly unsubscribe: readonly string[];
  readonly initialResourceVersions: Readonly<Record<string, string>>;
  /** For an ack or nack: the version of the response it answers (SotW version_info, delta system_version_info). */
  readonly respondsToVersion: string | null;
  /** The decoded message. */
  readonly raw: Message;
}

export interface RecordedResponse {
  readonly seq: number;
  readonly form: XdsForm;
  readonly stream: number;
  readonly typeUrl: string;
  readonly nonce: string;
  /** SotW version_info or delta system_version_info. */
  readonly version: string;
  /** Names of the resources carried, in order. */
  readonly resourceNames: readonly string[];
  /** Delta: the version of each resource carried. SotW: each resource's store version. */
  readonly resourceVersions: Readonly<Record<string, string>>;
  /** Delta removed_resources ([] for SotW). */
  readonly removed: readonly string[];
}

// ---------------------------------------------------------------------------------------
// Streams

interface StreamHost {
  readonly store: XdsStore;
  nextNonce(): string;
  record(req: Omit<RecordedRequest, 'seq'>): void;
  sent(res: Omit<RecordedResponse, 'seq'>): void;
}

type Call = grpc.ServerDuplexStream<Message, object>;

interface SotwTypeState {
  wildcard: boolean;
  /** Wildcard by an empty first request (LDS/CDS), kept while requests stay empty. */
  legacyWildcard: boolean;
  names: Set<string>;
  lastNonce: string | null;
  lastVersion: string;
  /** name@version of what was last sent, to tell whether a store change matters to this stream. */
  lastFingerprint: string | null;
}

interface DeltaTypeState {
  wildcard: boolean;
  names: Set<string>;
  /** What the server believes the client holds: name -> version. */
  known: Map<string, string>;
  /** Nonces sent for this type -> the system version they carried. */
  nonces: Map<string, string>;
}

abstract class AdsStream {
  isClosed = false;
  constructor(
    readonly id: number,
    protected readonly host: StreamHost,
    protected readonly call: Call,
  ) {}

  abstract onRequest(msg: Message): void;
  abstract onStoreChange(types: readonly string[]): void;

  /** Ends the call with a status (grpc-js: an 'error' on a server stream becomes its status). */
  fail(code: grpc.status, details: string): void {
    const err: Partial<grpc.StatusObject> = { code, details, metadata: new grpc.Metadata() };
    this.call.emit('error', err);
  }

  protected write(msg: object): void {
    if (this.isClosed) return;
    this.call.write(msg);
  }
}

class SotwStream extends AdsStream {
  private readonly types = new Map<string, SotwTypeState>();

  onRequest(msg: Message): void {
    const typeUrl = str(msg.typeUrl);
    const names = strings(msg.resourceNames);
    const nonce = str(msg.responseNonce);
    const errorDetail = statusOf(msg.errorDetail);
    const state = this.types.get(typeUrl);
    let kind: RequestKind;
    if (state === undefined) kind = 'initial';
    else if (nonce === '') kind = 'request';
    else if (nonce === state.lastNonce) kind = errorDetail === null ? 'ack' : 'nack';
    else kind = 'stale';
    this.host.record({
      form: 'sotw',
      stream: this.id,
      kind,
      typeUrl,
      node: nodeOf(msg.node),
      versionInfo: str(msg.versionInfo),
      responseNonce: nonce,
      errorDetail,
      resourceNames: names,
      subscribe: [],
      unsubscribe: [],
      initialResourceVersions: {},
      respondsToVersion: kind === 'ack' || kind === 'nack' ? (state as SotwTypeState).lastVersion : null,
      raw: msg,
    });
    if (typeUrl === '' || kind === 'stale') return;
    const sub = sotwSubscription(typeUrl, names, state ?? null);
    if (state === undefined) {
      this.types.set(typeUrl, { ...sub, lastNonce: null, lastVersion: '', lastFingerprint: null });
      this.respond(typeUrl, true);
      return;
    }
    const changed = sub.wildcard !== state.wildcard || sub.names.size !== state.names.size || [...sub.names].some((n) => !state.names.has(n));
    state.wildcard = sub.wildcard;
    state.legacyWildcard = sub.legacyWildcard;
    state.names = sub.names;
    if (changed) this.respond(typeUrl, true);
  }

  onStoreChange(types: readonly string[]): void {
    for (const t of types) if (this.types.has(t)) this.respond(t, false);
  }

  private respond(typeUrl: string, force: boolean): void {
    const state = this.types.get(typeUrl) as SotwTypeState;
    const entries = this.host.store.entries(typeUrl);
    const selected: Array<[string, StoredResource]> = [];
    if (state.wildcard) selected.push(...entries);
    else {
      for (const n of state.names) {
        const r = entries.get(n);
        if (r !== undefined) selected.push([n, r]);
      }
    }
    const fingerprint = selected.map(([n, r]) => `${n}@${r.version}`).join('\n');
    if (!force && fingerprint === state.lastFingerprint) return;
    const nonce = this.host.nextNonce();
    const version = this.host.store.typeVersion(typeUrl);
    state.lastNonce = nonce;
    state.lastVersion = version;
    state.lastFingerprint = fingerprint;
    this.write({ versionInfo: version, resources: selected.map(([, r]) => r.packed), typeUrl, nonce });
    this.host.sent({
      form: 'sotw',
      stream: this.id,
      typeUrl,
      nonce,
      version,
      resourceNames: selected.map(([n]) => n),
      resourceVersions: Object.fromEntries(selected.map(([n, r]) => [n, r.version])),
      removed: [],
    });
  }
}

function sotwSubscription(typeUrl: string, names: readonly string[], prev: SotwTypeState | null): { wildcard: boolean; legacyWildcard: boolean; names: Set<string> } {
  const named = new Set(names.filter((n) => n !== WILDCARD));
  if (names.includes(WILDCARD)) return { wildcard: true, legacyWildcard: false, names: named };
  if (names.length === 0) {
    const legacy = WILDCARD_TYPES.has(typeUrl) && (prev === null || prev.legacyWildcard);
    return { wildcard: legacy, legacyWildcard: legacy, names: named };
  }
  return { wildcard: false, legacyWildcard: false, names: named };
}

class DeltaStream extends AdsStream {
  private readonly types = new Map<string, DeltaTypeState>();

  onRequest(msg: Message): void {
    const typeUrl = str(msg.typeUrl);
    const subscribe = strings(msg.resourceNamesSubscribe);
    const unsubscribe = strings(msg.resourceNamesUnsubscribe);
    const initial = stringMap(msg.initialResourceVersions);
    const nonce = str(msg.responseNonce);
    const errorDetail = statusOf(msg.errorDetail);
    let state = this.types.get(typeUrl);
    let kind: RequestKind;
    if (state === undefined) kind = 'initial';
    else if (nonce === '') kind = 'request';
    else if (state.nonces.has(nonce)) kind = errorDetail === null ? 'ack' : 'nack';
    else kind = 'stale';
    this.host.record({
      form: 'delta',
      stream: this.id,
      kind,
      typeUrl,
      node: nodeOf(msg.node),
      versionInfo: '',
      responseNonce: nonce,
      errorDetail,
      resourceNames: [],
      subscribe,
      unsubscribe,
      initialResourceVersions: initial,
      respondsToVersion: kind === 'ack' || kind === 'nack' ? ((state as DeltaTypeState).nonces.get(nonce) ?? null) : null,
      raw: msg,
    });
    if (typeUrl === '') return;
    let first = false;
    if (state === undefined) {
      first = true;
      state = {
        wildcard: subscribe.length === 0 || subscribe.includes(WILDCARD),
        names: new Set(subscribe.filter((n) => n !== WILDCARD)),
        known: new Map(Object.entries(initial)),
        nonces: new Map(),
      };
      this.types.set(typeUrl, state);
    } else {
      for (const n of subscribe) {
        if (n === WILDCARD) state.wildcard = true;
        else {
          state.names.add(n);
          state.known.delete(n); // must be resent even if the client seems to have it
        }
      }
    }
    for (const n of unsubscribe) {
      if (n === WILDCARD) state.wildcard = false;
      else {
        state.names.delete(n);
        state.known.delete(n);
      }
    }
    this.push(typeUrl, first && state.wildcard);
  }

  onStoreChange(types: readonly string[]): void {
    for (const t of types) if (this.types.has(t)) this.push(t, false);
  }

  private push(typeUrl: string, force: boolean): void {
    const state = this.types.get(typeUrl) as DeltaTypeState;
    const entries = this.host.store.entries(typeUrl);
    const wants = (n: string): boolean => state.wildcard || state.names.has(n);
    const resources: Array<{ name: string; version: string; resource: PackedAny }> = [];
    const removed: string[] = [];
    for (const [name, r] of entries) {
      if (wants(name) && state.known.get(name) !== r.version) resources.push({ name, version: r.version, resource: r.packed });
    }
    for (const name of [...state.known.keys()]) {
      if (!wants(name)) state.known.delete(name); // the client dropped it itself
      else if (!entries.has(name)) {
        removed.push(name);
        state.known.delete(name);
      }
    }
    if (!force && resources.length === 0 && removed.length === 0) return;
    for (const r of resources) state.known.set(r.name, r.version);
    const nonce = this.host.nextNonce();
    const version = this.host.store.typeVersion(typeUrl);
    state.nonces.set(nonce, version);
    this.write({ systemVersionInfo: version, resources, typeUrl, removedResources: removed, nonce });
    this.host.sent({
      form: 'delta',
      stream: this.id,
      typeUrl,
      nonce,
      version,
      resourceNames: resources.map((r) => r.name),
      resourceVersions: Object.fromEntries(resources.map((r) => [r.name, r.version])),
      removed,
    });
  }
}

// ---------------------------------------------------------------------------------------
// Decoded-message accessors (decode() leaves unset fields absent)

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

function stringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof v === 'object' && v !== null) {
    for (const [k, x] of Object.entries(v)) if (typeof x === 'string') out[k] = x;
  }
  return out;
}

function statusOf(v: unknown): { code: number; message: string } | null {
  if (typeof v !== 'object' || v === null) return null;
  const s = v as { code?: unknown; message?: unknown };
  return { code: typeof s.code === 'number' ? s.code : 0, message: str(s.message) };
}

function nodeOf(v: unknown): Message | null {
  return typeof v === 'object' && v !== null ? (v as Message) : null;
}

// ---------------------------------------------------------------------------------------
// Server

export interface XdsServerOptions {
  /** Port on 127.0.0.1; 0 (default) picks one, which later restarts reuse. */
  port?: number;
  /** Serve StreamAggregatedResources (default true); off, calls get UNIMPLEMENTED. */
  sotw?: boolean;
  /** Serve DeltaAggregatedResources (default true); off, calls get UNIMPLEMENTED. */
  delta?: boolean;
  /** The resources to serve; a new empty store when absent. Pass an old server's store to keep state. */
  store?: XdsStore;
  /** Listen on this unix socket path instead of 127.0.0.1 (Istio's pilot-agent socket form). */
  unixSocket?: string;
  /** Serve over TLS with these PEM files (server certificate and key; with `ca`, client certificates are required). */
  tls?: { cert: Buffer; key: Buffer; ca?: Buffer };
}

interface Waiter {
  check(): boolean;
}

/**
 * The management server. `start()` binds 127.0.0.1 and returns the port; `stop()` closes every
 * stream (clients see the disconnect); `start()` again (or `restart()`) binds the same port with the
 * same store, records and nonce sequence.
 *
 * Everything is synchronous inside the server: a store change is pushed to open streams before
 * `store.set(...)` returns, and a request is recorded and fully handled (its response, if any,
 * written and recorded) before a `waitForRequest` promise for it settles. So "no response was
 * sent" can be asserted right after awaiting the request, without sleeping.
 */
export class XdsServer {
  readonly store: XdsStore;
  readonly requests: RecordedRequest[] = [];
  readonly responses: RecordedResponse[] = [];
  private readonly protos: XdsProtos = loadXdsProtos();
  private readonly isSotwServed: boolean;
  private readonly isDeltaServed: boolean;
  private server: grpc.Server | null = null;
  private boundPort: number;
  private readonly streams = new Set<AdsStream>();
  private streamCounter = 0;
  private nonceCounter = 0;
  private unsubscribeStore: (() => void) | null = null;
  private waiters = new Set<Waiter>();

  private readonly unixSocket: string | null;
  private readonly tls: XdsServerOptions['tls'] | null;

  constructor(options: XdsServerOptions = {}) {
    this.store = options.store ?? new XdsStore();
    this.unixSocket = options.unixSocket ?? null;
    this.tls = options.tls ?? null;
    this.boundPort = options.port ?? 0;
    this.isSotwServed = options.sotw ?? true;
    this.isDeltaServed = options.delta ?? true;
  }

  /** The bound port (the requested one before the first start). */
  get port(): number {
    return this.boundPort;
  }

  /** `127.0.0.1:port` or `unix:/path`, for a client's target. */
  get address(): string {
    return this.unixSocket !== null ? `unix:${this.unixSocket}` : `127.0.0.1:${this.boundPort}`;
  }

  get isRunning(): boolean {
    return this.server !== null;
  }

  /** Streams currently open (both forms). */
  get openStreams(): number {
    return this.streams.size;
  }

  /** Binds and serves; resolves with the port. Throws if already running. */
  async start(): Promise<number> {
    if (this.server !== null) throw new Error('xds server already running');
    const server = new grpc.Server();
    const definition: Record<string, grpc.MethodDefinition<object, Message>> = {};
    const impl: grpc.UntypedServiceImplementation = {};
    if (this.isSotwServed) {
      definition.StreamAggregatedResources = this.method(SOTW_METHOD, this.protos.discoveryRequest, this.protos.discoveryResponse);
      impl.StreamAggregatedResources = (call: Call) => this.open('sotw', call);
    }
    if (this.isDeltaServed) {
      definition.DeltaAggregatedResources = this.method(DELTA_METHOD, this.protos.deltaDiscoveryRequest, this.protos.deltaDiscoveryResponse);
      impl.DeltaAggregatedResources = (call: Call) => this.open('delta', call);
    }
    if (Object.keys(definition).length > 0) server.addService(definition, impl);
    const port = await new Promise<number>((resolve, reject) => {
      const tls = this.tls;
      const creds =
        tls === null || tls === undefined
          ? grpc.ServerCredentials.createInsecure()
          : grpc.ServerCredentials.createSsl(tls.ca ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], tls.ca !== undefined);
      server.bindAsync(this.unixSocket !== null ? `unix:${this.unixSocket}` : `127.0.0.1:${this.boundPort}`, creds, (err, p) => (err ? reject(err) : resolve(p)));
    });
    this.server = server;
    this.boundPort = port;
    this.unsubscribeStore = this.store.onChange((types) => {
      for (const s of [...this.streams]) s.onStoreChange(types);
    });
    return port;
  }

  /**
   * Closes every stream and the listener; the port is free when this resolves. Idempotent.
   *   'unavailable' (default): each open stream first ends with status UNAVAILABLE, as when a
   *     control plane goes away, then the server shuts down (forced after 250 ms at most).
   *   'abrupt': grpc-js forceShutdown alone; sessions are destroyed with RST_STREAM CANCEL, which
   *     grpc-js clients report as CANCELLED (a client may read it as its own cancel).
   */
  async stop(mode: 'unavailable' | 'abrupt' = 'unavailable'): Promise<void> {
    const server = this.server;
    if (server === null) return;
    this.server = null;
    this.unsubscribeStore?.();
    this.unsubscribeStore = null;
    const streams = [...this.streams];
    for (const s of streams) s.isClosed = true;
    this.streams.clear();
    this.wake();
    if (mode === 'abrupt') {
      server.forceShutdown();
      return;
    }
    for (const s of streams) s.fail(grpc.status.UNAVAILABLE, 'xds test server stopped');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 250);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** stop(mode) then start() on the same port, keeping store and records. */
  async restart(mode: 'unavailable' | 'abrupt' = 'unavailable'): Promise<number> {
    await this.stop(mode);
    return this.start();
  }

  /** Resolves with the first recorded request (already received or future) matching `predicate`. */
  waitForRequest(predicate: (r: RecordedRequest) => boolean, timeoutMs = 5000): Promise<RecordedRequest> {
    return this.waitFor(() => this.requests.find(predicate), timeoutMs, () => `no matching xDS request in ${timeoutMs} ms; got:\n${this.describeRequests()}`);
  }

  /** Resolves with the first recorded response (already sent or future) matching `predicate`. */
  waitForResponse(predicate: (r: RecordedResponse) => boolean, timeoutMs = 5000): Promise<RecordedResponse> {
    return this.waitFor(() => this.responses.find(predicate), timeoutMs, () => `no matching xDS response in ${timeoutMs} ms; sent:\n${this.describeResponses()}`);
  }

  /** Resolves when exactly `n` streams are open. */
  async waitForStreams(n: number, timeoutMs = 5000): Promise<void> {
    await this.waitFor(() => (this.streams.size === n ? true : undefined), timeoutMs, () => `expected ${n} open xDS streams, have ${this.streams.size}`);
  }

  /** Resolves with the first ACK of `typeUrl` (of `version`, when given). */
  waitForAck(typeUrl: string, version?: string, timeoutMs = 5000): Promise<RecordedRequest> {
    return this.waitForRequest((r) => isAckOf(r, typeUrl, version), timeoutMs);
  }

  /** Resolves with the first NACK of `typeUrl`. */
  waitForNack(typeUrl: string, timeoutMs = 5000): Promise<RecordedRequest> {
    return this.waitForRequest((r) => r.typeUrl === typeUrl && r.errorDetail !== null, timeoutMs);
  }

  /** Whether the client ACKed a response of `typeUrl` (carrying `version`, when given). */
  acked(typeUrl: string, version?: string): boolean {
    return this.requests.some((r) => isAckOf(r, typeUrl, version));
  }

  /** Every request of `typeUrl` that carried error_detail (NACKs, including stale ones). */
  nacks(typeUrl: string): RecordedRequest[] {
    return this.requests.filter((r) => r.typeUrl === typeUrl && r.errorDetail !== null);
  }

  /** Forgets recorded requests and responses (stream state is kept). */
  clearRecords(): void {
    this.requests.length = 0;
    this.responses.length = 0;
  }

  /** One line per recorded request, for failure messages. */
  describeRequests(): string {
    return this.requests
      .map((r) => {
        const names = r.form === 'sotw' ? `names=[${r.resourceNames.join(',')}]` : `sub=[${r.subscribe.join(',')}] unsub=[${r.unsubscribe.join(',')}]`;
        const err = r.errorDetail === null ? '' : ` error=${JSON.stringify(r.errorDetail.message)}`;
        return `  #${r.seq} ${r.form} s${r.stream} ${r.kind} ${shortType(r.typeUrl)} v=${r.versionInfo} n=${r.responseNonce} ${names}${err}`;
      })
      .join('\n');
  }

  describeResponses(): string {
    return this.responses
      .map((r) => `  #${r.seq} ${r.form} s${r.stream} ${shortType(r.typeUrl)} v=${r.version} n=${r.nonce} [${r.resourceNames.join(',')}] removed=[${r.removed.join(',')}]`)
      .join('\n');
  }

  private method(path: string, req: protobuf.Type, res: protobuf.Type): grpc.MethodDefinition<object, Message> {
    return {
      path,
      requestStream: true,
      responseStream: true,
      requestSerialize: (v: object) => this.protos.encode(req, v),
      requestDeserialize: (b: Buffer) => this.protos.decode(req, b),
      responseSerialize: (v: object) => this.protos.encode(res, v),
      responseDeserialize: (b: Buffer) => this.protos.decode(res, b),
    };
  }

  private open(form: XdsForm, call: Call): void {
    const host: StreamHost = {
      store: this.store,
      nextNonce: () => String(++this.nonceCounter),
      record: (r) => {
        this.requests.push({ seq: this.requests.length, ...r });
        this.wake();
      },
      sent: (r) => {
        this.responses.push({ seq: this.responses.length, ...r });
        this.wake();
      },
    };
    const id = ++this.streamCounter;
    const stream: AdsStream = form === 'sotw' ? new SotwStream(id, host, call) : new DeltaStream(id, host, call);
    this.streams.add(stream);
    this.wake();
    const close = (): void => {
      if (stream.isClosed) return;
      stream.isClosed = true;
      this.streams.delete(stream);
      this.wake();
    };
    call.on('data', (msg: Message) => {
      if (!stream.isClosed) stream.onRequest(msg);
    });
    call.on('end', () => {
      // The client half-closed: finish the call with OK.
      close();
      call.end();
    });
    call.on('cancelled', close);
    call.on('error', close);
    call.on('close', close);
  }

  private waitFor<T>(find: () => T | undefined, timeoutMs: number, describe: () => string): Promise<T> {
    const found = find();
    if (found !== undefined) return Promise.resolve(found);
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter = {
        check: () => {
          const v = find();
          if (v === undefined) return false;
          clearTimeout(timer);
          resolve(v);
          return true;
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(describe()));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) if (w.check()) this.waiters.delete(w);
  }
}

function isAckOf(r: RecordedRequest, typeUrl: string, version: string | undefined): boolean {
  return r.kind === 'ack' && r.typeUrl === typeUrl && (version === undefined || r.respondsToVersion === version);
}

function shortType(typeUrl: string): string {
  return typeUrl.slice(typeUrl.lastIndexOf('.') + 1);
}

/** Creates a server and starts it. */
export async function startXdsServer(options: XdsServerOptions = {}): Promise<XdsServer> {
  const server = new XdsServer(options);
  await server.start();
  return server;
}
