/**
 * The ADS client (issue 8 item 1): one gRPC stream to the control plane carrying Clusters,
 * ClusterLoadAssignments, Listeners and RouteConfigurations, in the incremental form
 * (DeltaAggregatedResources) or the state-of-the-world form (StreamAggregatedResources).
 * `protocol: auto` starts with delta and falls back to state-of-the-world for good when the
 * server answers UNIMPLEMENTED (a server without delta support).
 *
 * Protocol, as the xDS spec (envoyproxy.io, "xDS REST and gRPC protocol") has it:
 * - Listeners and Clusters are wildcard subscriptions; RouteConfigurations and
 *   ClusterLoadAssignments are named, by what the listeners and clusters reference. A name is
 *   subscribed after the resource that references it has been accepted.
 * - Every response is ACKed (its nonce, and in state-of-the-world its version) or NACKed
 *   (the nonce, the last accepted version, and error_detail saying what was refused). A
 *   response is accepted or refused whole.
 * - State-of-the-world Listener and Cluster responses are complete: a name missing from one
 *   is removed. Delta responses list changes and removals.
 * - On a reconnect the subscriptions are sent again; delta sends initial_resource_versions so
 *   the server sends only what changed. The last accepted configuration keeps serving while
 *   disconnected. Reconnects back off exponentially with full jitter, reset by a response.
 *
 * Responses are handled one at a time, in order (a NACK never races the next response).
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import type { XdsConfig } from '../../src/config/types.js';
import {
  CLUSTER_TYPE,
  DELTA_METHOD,
  ENDPOINT_TYPE,
  LISTENER_TYPE,
  RESOURCE_TYPES,
  ROUTE_TYPE,
  SOTW_METHOD,
  type Message,
  type PackedAny,
  type ResourceType,
  type XdsProtos,
} from './protos.js';
import type { ResourceUpdate } from './state.js';

/** What the client needs from whoever holds the resources (mesh/xds/source.ts). */
export interface XdsHandler {
  /** Applies one response. Rejects to NACK it; the error's message goes to the control plane. */
  update(update: ResourceUpdate): Promise<void>;
  /** The names of a named type (RouteConfiguration, ClusterLoadAssignment) wanted now. */
  wanted(typeUrl: ResourceType): ReadonlySet<string>;
  /** Name → version of every resource of the type held now (delta initial_resource_versions). */
  versions(typeUrl: ResourceType): ReadonlyMap<string, string>;
}

export interface XdsClientLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export type XdsForm = 'delta' | 'sotw';

/** Per type: what was last sent, received and accepted (for ACKs and /config_dump). */
interface TypeState {
  /** Names subscribed on the current stream (named types); null before the first request. */
  subscribed: Set<string> | null;
  /** Nonce of the last response of this type. */
  nonce: string;
  /** State-of-the-world: the version_info last accepted. */
  acceptedVersion: string;
  lastAckAt: string | null;
  lastNack: { readonly at: string; readonly nonce: string; readonly message: string } | null;
}

export interface XdsClientStatus {
  readonly server: string;
  readonly form: XdsForm;
  readonly connected: boolean;
  readonly connects: number;
  readonly responses: number;
  readonly acks: number;
  readonly nacks: number;
  readonly lastError: string | null;
  readonly types: Record<string, { readonly version: string; readonly nonce: string; readonly lastAckAt: string | null; readonly lastNack: TypeState['lastNack'] }>;
}

const GRPC_INVALID_ARGUMENT = 3;
const NAMED_TYPES: readonly ResourceType[] = [ENDPOINT_TYPE, ROUTE_TYPE];
const WILDCARD_TYPES: readonly ResourceType[] = [CLUSTER_TYPE, LISTENER_TYPE];

export class XdsClient {
  private readonly config: XdsConfig;
  private readonly protos: XdsProtos;
  private readonly handler: XdsHandler;
  private readonly log: XdsClientLog;
  private readonly grpcClient: grpc.Client;
  private call: grpc.ClientDuplexStream<Buffer, Buffer> | null;
  /** The form in use; `auto` settles on one at the first UNIMPLEMENTED. */
  form: XdsForm;
  private readonly types: Map<ResourceType, TypeState>;
  private queue: Promise<void>;
  private attempt: number;
  private retryTimer: NodeJS.Timeout | null;
  private isClosed: boolean;
  /** Node info goes in the first request of each stream only. */
  private sentNode: boolean;
  connected: boolean;
  connects: number;
  responses: number;
  acks: number;
  nacks: number;
  lastError: string | null;

  constructor(config: XdsConfig, protos: XdsProtos, handler: XdsHandler, log: XdsClientLog) {
    this.config = config;
    this.protos = protos;
    this.handler = handler;
    this.log = log;
    this.grpcClient = new grpc.Client(config.server, credentialsOf(config), channelOptions(config));
    this.call = null;
    this.form = config.protocol === 'sotw' ? 'sotw' : 'delta';
    this.types = new Map(RESOURCE_TYPES.map((t) => [t, { subscribed: null, nonce: '', acceptedVersion: '', lastAckAt: null, lastNack: null }]));
    this.queue = Promise.resolve();
    this.attempt = 0;
    this.retryTimer = null;
    this.isClosed = false;
    this.sentNode = false;
    this.connected = false;
    this.connects = 0;
    this.responses = 0;
    this.acks = 0;
    this.nacks = 0;
    this.lastError = null;
  }

  start(): void {
    this.connect();
  }

  /** Closes the stream and the channel; the configuration received stays in use. */
  close(): void {
    this.isClosed = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const call = this.call;
    this.call = null;
    if (call !== null) call.cancel();
    this.grpcClient.close();
  }

  /**
   * Sends subscription changes for the named types (after an accepted update changed which
   * routes and endpoints are referenced). Called by the handler's owner after `update`.
   */
  syncSubscriptions(): void {
    if (this.call === null) return;
    for (const t of NAMED_TYPES) this.subscribe(t);
  }

  status(): XdsClientStatus {
    const types: Record<string, XdsClientStatus['types'][string]> = {};
    for (const [t, s] of this.types) types[t] = { version: s.acceptedVersion, nonce: s.nonce, lastAckAt: s.lastAckAt, lastNack: s.lastNack };
    return {
      server: this.config.server,
      form: this.form,
      connected: this.connected,
      connects: this.connects,
      responses: this.responses,
      acks: this.acks,
      nacks: this.nacks,
      lastError: this.lastError,
      types,
    };
  }

  // ---- stream lifecycle ----

  private connect(): void {
    if (this.isClosed) return;
    this.retryTimer = null;
    const form = this.form;
    const p = this.protos;
    const resType = form === 'delta' ? p.deltaDiscoveryResponse : p.discoveryResponse;
    const call = this.grpcClient.makeBidiStreamRequest(
      form === 'delta' ? DELTA_METHOD : SOTW_METHOD,
      (b: Buffer) => b,
      (b: Buffer) => b,
    );
    this.call = call;
    this.sentNode = false;
    for (const s of this.types.values()) {
      s.subscribed = null;
      s.nonce = '';
    }
    let isDone = false;
    call.on('data', (bytes: Buffer) => {
      if (this.call !== call) return;
      let msg: Message;
      try {
        msg = p.decode(resType, bytes);
      } catch (err) {
        this.log.error({ server: this.config.server, err: errMessage(err) }, 'xDS response does not decode; reconnecting');
        call.cancel();
        return;
      }
      if (!this.connected) {
        this.connected = true;
        this.log.info({ server: this.config.server, form }, 'xDS stream up');
      }
      this.attempt = 0;
      this.responses++;
      // The chain must survive a failure, or every later response would be skipped.
      this.queue = this.queue
        .then(() => (form === 'delta' ? this.onDelta(call, msg) : this.onSotw(call, msg)))
        .catch((err: unknown) => this.log.error({ server: this.config.server, err: errMessage(err) }, 'xDS response handling failed'));
    });
    call.on('error', () => {
      // 'status' carries the detail and drives the reconnect.
    });
    call.on('status', (status: grpc.StatusObject) => {
      if (isDone) return;
      isDone = true;
      if (this.call === call) this.call = null;
      this.connected = false;
      if (this.isClosed) return;
      this.lastError = `${grpc.status[status.code] ?? status.code}: ${status.details}`;
      if (status.code === grpc.status.UNIMPLEMENTED && form === 'delta' && this.config.protocol === 'auto') {
        this.form = 'sotw';
        this.log.info({ server: this.config.server }, 'xDS server has no delta xDS; using state-of-the-world');
        this.connect();
        return;
      }
      this.scheduleReconnect(status);
    });
    this.connects++;
    // Wildcard types first, as Envoy does (CDS, then LDS); named types once they are known.
    for (const t of WILDCARD_TYPES) this.subscribe(t);
    for (const t of NAMED_TYPES) this.subscribe(t);
  }

  private scheduleReconnect(status: grpc.StatusObject): void {
    const cap = Math.min(this.config.backoffMaxMs, this.config.backoffBaseMs * 2 ** Math.min(this.attempt, 20));
    const delay = Math.round(Math.random() * cap);
    this.attempt++;
    this.log.warn(
      { server: this.config.server, code: grpc.status[status.code] ?? status.code, details: status.details, retryInMs: delay },
      `xDS stream closed (${grpc.status[status.code] ?? status.code}); the last configuration keeps serving; reconnecting`,
    );
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.retryTimer.unref();
  }

  private write(call: grpc.ClientDuplexStream<Buffer, Buffer>, req: Record<string, unknown>): void {
    if (this.call !== call) return;
    if (!this.sentNode) {
      req.node = nodeOf(this.config);
      this.sentNode = true;
    }
    const type = this.form === 'delta' ? this.protos.deltaDiscoveryRequest : this.protos.discoveryRequest;
    call.write(this.protos.encode(type, req));
  }

  /** Sends the first request for a type, or a subscription change for a named one. */
  private subscribe(typeUrl: ResourceType): void {
    const call = this.call;
    if (call === null) return;
    const s = this.stateOf(typeUrl);
    const isWildcard = WILDCARD_TYPES.includes(typeUrl);
    if (isWildcard) {
      if (s.subscribed !== null) return;
      s.subscribed = new Set();
      if (this.form === 'delta') {
        this.write(call, { typeUrl, initialResourceVersions: Object.fromEntries(this.handler.versions(typeUrl)) });
      } else {
        this.write(call, { typeUrl, versionInfo: s.acceptedVersion, resourceNames: [] });
      }
      return;
    }
    const wanted = this.handler.wanted(typeUrl);
    const had = s.subscribed ?? new Set<string>();
    const added = [...wanted].filter((n) => !had.has(n));
    const removed = [...had].filter((n) => !wanted.has(n));
    if (s.subscribed === null && wanted.size === 0) return; // an empty named request would be a wildcard
    if (s.subscribed !== null && added.length === 0 && removed.length === 0) return;
    const isFirst = s.subscribed === null;
    s.subscribed = new Set(wanted);
    if (this.form === 'delta') {
      const req: Record<string, unknown> = { typeUrl, resourceNamesSubscribe: added, resourceNamesUnsubscribe: removed };
      if (isFirst) {
        const versions = this.handler.versions(typeUrl);
        req.initialResourceVersions = Object.fromEntries([...versions].filter(([n]) => wanted.has(n)));
      }
      this.write(call, req);
    } else {
      // State-of-the-world: the full list each time, with the last version and nonce seen.
      this.write(call, { typeUrl, versionInfo: s.acceptedVersion, resourceNames: [...wanted], responseNonce: s.nonce });
    }
  }

  private stateOf(typeUrl: ResourceType): TypeState {
    const s = this.types.get(typeUrl);
    if (s === undefined) throw new Error(`unknown type ${typeUrl}`);
    return s;
  }

  // ---- responses ----

  private async onSotw(call: grpc.ClientDuplexStream<Buffer, Buffer>, msg: Message): Promise<void> {
    const typeUrl = String(msg.typeUrl ?? '');
    const nonce = String(msg.nonce ?? '');
    const version = String(msg.versionInfo ?? '');
    if (!isResourceType(typeUrl)) {
      this.write(call, { typeUrl, responseNonce: nonce, errorDetail: { code: GRPC_INVALID_ARGUMENT, message: `Skiff does not subscribe to ${typeUrl}` } });
      return;
    }
    const s = this.stateOf(typeUrl);
    s.nonce = nonce;
    const names = (): string[] => [...(s.subscribed ?? [])];
    let update: ResourceUpdate;
    try {
      const upserts = (Array.isArray(msg.resources) ? msg.resources : []).map((r: unknown) => this.unpackResource(typeUrl, r, version));
      const isComplete = WILDCARD_TYPES.includes(typeUrl);
      const present = new Set(upserts.map((u) => u.name));
      const removals = isComplete ? [...this.handler.versions(typeUrl).keys()].filter((n) => !present.has(n)) : [];
      update = { typeUrl, upserts, removals };
      await this.handler.update(update);
    } catch (err) {
      this.nack(call, typeUrl, nonce, err, { versionInfo: s.acceptedVersion, resourceNames: names() });
      return;
    }
    s.acceptedVersion = version;
    this.ack(typeUrl, version);
    this.write(call, { typeUrl, versionInfo: version, resourceNames: names(), responseNonce: nonce });
    this.syncSubscriptions();
  }

  private async onDelta(call: grpc.ClientDuplexStream<Buffer, Buffer>, msg: Message): Promise<void> {
    const typeUrl = String(msg.typeUrl ?? '');
    const nonce = String(msg.nonce ?? '');
    if (!isResourceType(typeUrl)) {
      this.write(call, { typeUrl, responseNonce: nonce, errorDetail: { code: GRPC_INVALID_ARGUMENT, message: `Skiff does not subscribe to ${typeUrl}` } });
      return;
    }
    const s = this.stateOf(typeUrl);
    s.nonce = nonce;
    const systemVersion = String(msg.systemVersionInfo ?? '');
    try {
      const upserts: { name: string; version: string; resource: Message }[] = [];
      for (const r of Array.isArray(msg.resources) ? msg.resources : []) {
        if (typeof r !== 'object' || r === null) continue;
        const res = r as { name?: unknown; version?: unknown; resource?: unknown };
        if (res.resource === undefined || res.resource === null) continue; // a heartbeat (TTL refresh)
        const u = this.unpackResource(typeUrl, res.resource, String(res.version ?? ''));
        if (typeof res.name === 'string' && res.name !== '' && res.name !== u.name) {
          throw new Error(`resource "${res.name}" holds a message named "${u.name}"`);
        }
        upserts.push(u);
      }
      const removals = (Array.isArray(msg.removedResources) ? msg.removedResources : []).map(String);
      await this.handler.update({ typeUrl, upserts, removals });
    } catch (err) {
      this.nack(call, typeUrl, nonce, err, {});
      return;
    }
    s.acceptedVersion = systemVersion;
    this.ack(typeUrl, systemVersion);
    this.write(call, { typeUrl, responseNonce: nonce });
    this.syncSubscriptions();
  }

  private unpackResource(typeUrl: ResourceType, r: unknown, version: string): { name: string; version: string; resource: Message } {
    if (typeof r !== 'object' || r === null || typeof (r as { type_url?: unknown }).type_url !== 'string') throw new Error('a resource without a type');
    const packed = r as PackedAny;
    if (packed.type_url !== typeUrl) throw new Error(`a ${packed.type_url} resource in a ${typeUrl} response`);
    let resource: Message;
    try {
      resource = this.protos.unpack(packed);
    } catch (err) {
      throw new Error(`a ${typeUrl} resource does not decode: ${errMessage(err)}`);
    }
    const name = typeUrl === ENDPOINT_TYPE ? resource.clusterName : resource.name;
    if (typeof name !== 'string' || name === '') throw new Error(`a ${typeUrl} resource without a name`);
    return { name, version, resource };
  }

  private ack(typeUrl: ResourceType, version: string): void {
    this.acks++;
    const s = this.stateOf(typeUrl);
    s.lastAckAt = new Date().toISOString();
    this.log.debug({ typeUrl, version }, 'xDS update accepted');
  }

  private nack(call: grpc.ClientDuplexStream<Buffer, Buffer>, typeUrl: ResourceType, nonce: string, err: unknown, extra: Record<string, unknown>): void {
    this.nacks++;
    const message = errMessage(err);
    const s = this.stateOf(typeUrl);
    s.lastNack = { at: new Date().toISOString(), nonce, message };
    this.log.error({ server: this.config.server, typeUrl, nonce, error: message }, `xDS update rejected (NACK), the previous configuration keeps serving: ${message}`);
    this.write(call, { typeUrl, responseNonce: nonce, errorDetail: { code: GRPC_INVALID_ARGUMENT, message }, ...extra });
  }
}

function isResourceType(t: string): t is ResourceType {
  return (RESOURCE_TYPES as readonly string[]).includes(t);
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Envoy's Node message: id, cluster, locality, metadata (a Struct of strings), agent name. */
function nodeOf(config: XdsConfig): Record<string, unknown> {
  const n = config.node;
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(n.metadata)) fields[k] = { stringValue: v };
  const locality: Record<string, string> = {};
  if (n.locality.region !== '') locality.region = n.locality.region;
  if (n.locality.zone !== '') locality.zone = n.locality.zone;
  if (n.locality.subZone !== '') locality.subZone = n.locality.subZone;
  return {
    id: n.id,
    cluster: n.cluster,
    locality,
    metadata: { fields },
    userAgentName: 'skiff',
    userAgentVersion: '0.1.0',
    clientFeatures: ['envoy.lb.does_not_support_overprovisioning'],
  };
}

function credentialsOf(config: XdsConfig): grpc.ChannelCredentials {
  const t = config.tls;
  if (t === null) return grpc.credentials.createInsecure();
  const read = (p: string | null): Buffer | null => (p === null ? null : readFileSync(p));
  return grpc.credentials.createSsl(read(t.ca), read(t.key), read(t.cert));
}

function channelOptions(config: XdsConfig): grpc.ChannelOptions {
  const opts: grpc.ChannelOptions = {
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    // Reconnects are paced here, not by the channel.
    'grpc.initial_reconnect_backoff_ms': Math.min(config.backoffBaseMs, 1000),
    'grpc.max_reconnect_backoff_ms': config.backoffMaxMs,
  };
  if (config.tls !== null && config.tls.servername !== null) opts['grpc.ssl_target_name_override'] = config.tls.servername;
  return opts;
}
