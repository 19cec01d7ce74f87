// Builders for Envoy v3 xDS resources as plain camelCase objects, the form mesh/xds/protos.ts
// packs (`pack(typeUrl, obj)`) and the xDS test server stores. Nested Anys are written as
// `{ '@type': url, ...fields }`; `faultFilter()` is a raw PackedAny of a type Skiff does not load.
//
// Field names are protobufjs's camelCase of the .proto names under
// node_modules/@grpc/grpc-js-xds/deps/envoy-api/. protobufjs only upper-cases a letter after "_",
// so `consecutive_5xx` stays `consecutive_5xx` (not `consecutive5xx`). `fromObject` drops unknown
// keys silently, so `unknownFields()` below walks an object against the loaded types; the unit
// test runs it on every builder.
//
// Each builder returns a fresh mutable object, so a test can change one field before storing it.
import protobuf from 'protobufjs';
import { loadXdsProtos, type PackedAny } from '../../mesh/xds/protos.js';

/** A plain Envoy object (camelCase fields). */
export type EnvoyObject = Record<string, unknown>;

export const HCM_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
export const ROUTER_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
export const HTTP_PROTOCOL_OPTIONS_TYPE = 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
export const HTTP_PROTOCOL_OPTIONS_KEY = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
export const FAULT_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault';
export const HCM_FILTER_NAME = 'envoy.filters.network.http_connection_manager';
export const ROUTER_FILTER_NAME = 'envoy.filters.http.router';

export interface HostPort {
  host: string;
  port: number;
}

/** google.protobuf.Duration from milliseconds (zero parts left out, as the decoder reads them). */
export function duration(ms: number): EnvoyObject {
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.round((ms - seconds * 1000) * 1e6);
  const d: EnvoyObject = {};
  if (seconds !== 0) d.seconds = seconds;
  if (nanos !== 0) d.nanos = nanos;
  return d;
}

/** envoy.config.core.v3.Address with a socket address. */
export function socketAddress(host: string, port: number): EnvoyObject {
  return { socketAddress: { address: host, portValue: port } };
}

export type LbPolicy = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RING_HASH' | 'RANDOM' | 'MAGLEV' | 'CLUSTER_PROVIDED' | 'LOAD_BALANCING_POLICY_CONFIG';

export interface CircuitBreakerLimits {
  maxConnections?: number;
  maxPendingRequests?: number;
  maxRequests?: number;
  maxRetries?: number;
}

export interface OutlierDetectionOptions {
  consecutive5xx?: number;
  intervalMs?: number;
  baseEjectionTimeMs?: number;
  maxEjectionPercent?: number;
}

export interface ClusterOptions {
  /** Default 1000. */
  connectTimeoutMs?: number;
  /** Upstream HTTP/2 via typed_extension_protocol_options (HttpProtocolOptions explicit_http_config). */
  http2?: boolean;
  lbPolicy?: LbPolicy;
  /** Thresholds at DEFAULT priority. */
  circuitBreakers?: CircuitBreakerLimits;
  outlierDetection?: OutlierDetectionOptions;
}

export interface EdsClusterOptions extends ClusterOptions {
  /** eds_cluster_config.service_name: the ClusterLoadAssignment name, when not the cluster's. */
  serviceName?: string;
}

function applyClusterOptions(cluster: EnvoyObject, opts: ClusterOptions): EnvoyObject {
  if (opts.lbPolicy !== undefined) cluster.lbPolicy = opts.lbPolicy;
  if (opts.http2 === true) {
    cluster.typedExtensionProtocolOptions = {
      [HTTP_PROTOCOL_OPTIONS_KEY]: { '@type': HTTP_PROTOCOL_OPTIONS_TYPE, explicitHttpConfig: { http2ProtocolOptions: {} } },
    };
  }
  const cb = opts.circuitBreakers;
  if (cb !== undefined) {
    const t: EnvoyObject = { priority: 'DEFAULT' };
    if (cb.maxConnections !== undefined) t.maxConnections = { value: cb.maxConnections };
    if (cb.maxPendingRequests !== undefined) t.maxPendingRequests = { value: cb.maxPendingRequests };
    if (cb.maxRequests !== undefined) t.maxRequests = { value: cb.maxRequests };
    if (cb.maxRetries !== undefined) t.maxRetries = { value: cb.maxRetries };
    cluster.circuitBreakers = { thresholds: [t] };
  }
  const od = opts.outlierDetection;
  if (od !== undefined) {
    const o: EnvoyObject = {};
    if (od.consecutive5xx !== undefined) o.consecutive_5xx = { value: od.consecutive5xx };
    if (od.intervalMs !== undefined) o.interval = duration(od.intervalMs);
    if (od.baseEjectionTimeMs !== undefined) o.baseEjectionTime = duration(od.baseEjectionTimeMs);
    if (od.maxEjectionPercent !== undefined) o.maxEjectionPercent = { value: od.maxEjectionPercent };
    cluster.outlierDetection = o;
  }
  return cluster;
}

/** envoy.config.cluster.v3.Cluster of type EDS, endpoints over ADS. */
export function edsCluster(name: string, opts: EdsClusterOptions = {}): EnvoyObject {
  const edsClusterConfig: EnvoyObject = { edsConfig: { ads: {} } };
  if (opts.serviceName !== undefined) edsClusterConfig.serviceName = opts.serviceName;
  return applyClusterOptions({ name, type: 'EDS', edsClusterConfig, connectTimeout: duration(opts.connectTimeoutMs ?? 1000) }, opts);
}

/** envoy.config.cluster.v3.Cluster of type STATIC with an inline load_assignment. */
export function staticCluster(name: string, endpoints: readonly EndpointSpec[], opts: ClusterOptions = {}): EnvoyObject {
  return applyClusterOptions({ name, type: 'STATIC', connectTimeout: duration(opts.connectTimeoutMs ?? 1000), loadAssignment: loadAssignment(name, endpoints) }, opts);
}

export type HealthStatus = 'UNKNOWN' | 'HEALTHY' | 'UNHEALTHY' | 'DRAINING' | 'TIMEOUT' | 'DEGRADED';

export interface EndpointSpec extends HostPort {
  healthStatus?: HealthStatus;
  /** load_balancing_weight. */
  weight?: number;
}

export interface LoadAssignmentOptions {
  /** Applied to every endpoint that does not set its own. */
  healthStatus?: HealthStatus;
  locality?: { region?: string; zone?: string; subZone?: string };
  /** LocalityLbEndpoints.priority. */
  priority?: number;
}

/** envoy.config.endpoint.v3.ClusterLoadAssignment with one locality. */
export function loadAssignment(clusterName: string, endpoints: readonly EndpointSpec[], opts: LoadAssignmentOptions = {}): EnvoyObject {
  const lbEndpoints = endpoints.map((e) => {
    const lb: EnvoyObject = { endpoint: { address: socketAddress(e.host, e.port) } };
    const health = e.healthStatus ?? opts.healthStatus;
    if (health !== undefined) lb.healthStatus = health;
    if (e.weight !== undefined) lb.loadBalancingWeight = { value: e.weight };
    return lb;
  });
  const locality: EnvoyObject = { lbEndpoints };
  if (opts.locality !== undefined) locality.locality = { ...opts.locality };
  if (opts.priority !== undefined) locality.priority = opts.priority;
  return { clusterName, endpoints: [locality] };
}

/** The router http filter entry (always last in a chain). */
export function routerFilter(): EnvoyObject {
  return { name: ROUTER_FILTER_NAME, typedConfig: { '@type': ROUTER_TYPE } };
}

export interface HttpListenerOptions {
  /** Default: the listener name. */
  statPrefix?: string;
  /** Default 'AUTO'. */
  codecType?: 'AUTO' | 'HTTP1' | 'HTTP2' | 'HTTP3';
  /** Http filter entries placed before the router. */
  httpFilters?: readonly EnvoyObject[];
  trafficDirection?: 'UNSPECIFIED' | 'INBOUND' | 'OUTBOUND';
}

/**
 * envoy.config.listener.v3.Listener on `address` with one filter chain holding one
 * http_connection_manager whose routes come over RDS (ADS) as `routeConfigName`.
 */
export function httpListener(name: string, address: HostPort, routeConfigName: string, opts: HttpListenerOptions = {}): EnvoyObject {
  const hcm: EnvoyObject = {
    '@type': HCM_TYPE,
    statPrefix: opts.statPrefix ?? name,
    codecType: opts.codecType ?? 'AUTO',
    rds: { routeConfigName, configSource: { ads: {} } },
    httpFilters: [...(opts.httpFilters ?? []).map((f) => ({ ...f })), routerFilter()],
  };
  const listener: EnvoyObject = {
    name,
    address: socketAddress(address.host, address.port),
    filterChains: [{ filters: [{ name: HCM_FILTER_NAME, typedConfig: hcm }] }],
  };
  if (opts.trafficDirection !== undefined) listener.trafficDirection = opts.trafficDirection;
  return listener;
}

/** envoy.config.route.v3.RouteConfiguration. */
export function routeConfiguration(name: string, virtualHosts: readonly EnvoyObject[]): EnvoyObject {
  return { name, virtualHosts: [...virtualHosts] };
}

/** envoy.config.route.v3.VirtualHost. */
export function virtualHost(name: string, domains: readonly string[], routes: readonly EnvoyObject[]): EnvoyObject {
  return { name, domains: [...domains], routes: [...routes] };
}

export interface RouteSpec {
  /** One of prefix / path; neither means prefix "/". */
  prefix?: string;
  path?: string;
  /** Exact-match header matchers (HeaderMatcher.string_match.exact), by header name. */
  headers?: Readonly<Record<string, string>>;
  cluster: string;
  timeoutMs?: number;
  /** Route.name. */
  name?: string;
}

/** envoy.config.route.v3.Route forwarding to one cluster. */
export function route(spec: RouteSpec): EnvoyObject {
  const match: EnvoyObject = spec.path !== undefined ? { path: spec.path } : { prefix: spec.prefix ?? '/' };
  if (spec.headers !== undefined) {
    match.headers = Object.entries(spec.headers).map(([name, exact]) => ({ name, stringMatch: { exact } }));
  }
  const action: EnvoyObject = { cluster: spec.cluster };
  if (spec.timeoutMs !== undefined) action.timeout = duration(spec.timeoutMs);
  const r: EnvoyObject = { match, route: action };
  if (spec.name !== undefined) r.name = spec.name;
  return r;
}

/**
 * An http filter entry for envoy.filters.http.fault, whose typed_config is a raw PackedAny of
 * HTTPFault (not among the protos Skiff loads): abort 503 for 100% of requests. Encoded by hand:
 * HTTPFault.abort = 2 { FaultAbort.http_status = 2: 503, percentage = 3 { numerator = 1: 100 } }.
 */
export function faultFilter(name = 'envoy.filters.http.fault'): EnvoyObject {
  const w = protobuf.Writer.create();
  w.uint32((2 << 3) | 2).fork(); // abort
  w.uint32((2 << 3) | 0).uint32(503); // http_status
  w.uint32((3 << 3) | 2).fork().uint32((1 << 3) | 0).uint32(100).ldelim(); // percentage.numerator
  w.ldelim();
  const typedConfig: PackedAny = { type_url: FAULT_TYPE, value: Buffer.from(w.finish()) };
  return { name, typedConfig };
}

/**
 * Problems in a plain Envoy object checked against the loaded protos: keys that are not fields
 * (what `fromObject` would drop), enum names that do not exist, and nested Anys of types not
 * loaded given in `@type` form (which would pack empty). Raw PackedAnys are accepted as they are.
 * Returns [] when the object is clean; each entry names the path.
 */
export function unknownFields(typeUrl: string, value: object): string[] {
  const protos = loadXdsProtos();
  const type = protos.typeOf(typeUrl);
  if (type === null) return [`${typeUrl}: type not loaded`];
  const problems: string[] = [];
  checkMessage(type, value as Record<string, unknown>, typeUrl.slice(typeUrl.lastIndexOf('/') + 1), problems, (url) => protos.typeOf(url));
  return problems;
}

function checkMessage(type: protobuf.Type, obj: Record<string, unknown>, path: string, problems: string[], typeOf: (url: string) => protobuf.Type | null): void {
  for (const [key, v] of Object.entries(obj)) {
    if (key === '@type') continue;
    const field = type.fields[key];
    if (field === undefined) {
      problems.push(`${path}.${key}: no such field in ${type.fullName.slice(1)}`);
      continue;
    }
    field.resolve();
    const items: Array<[unknown, string]> = [];
    if (field.map) {
      if (typeof v !== 'object' || v === null) problems.push(`${path}.${key}: map expected`);
      else for (const [k, x] of Object.entries(v)) items.push([x, `${path}.${key}[${JSON.stringify(k)}]`]);
    } else if (field.repeated) {
      if (!Array.isArray(v)) problems.push(`${path}.${key}: array expected`);
      else v.forEach((x, i) => items.push([x, `${path}.${key}[${i}]`]));
    } else items.push([v, `${path}.${key}`]);
    for (const [x, p] of items) checkValue(field.resolvedType, x, p, problems, typeOf);
  }
}

function checkValue(resolved: protobuf.Type | protobuf.Enum | null, v: unknown, path: string, problems: string[], typeOf: (url: string) => protobuf.Type | null): void {
  if (resolved === null) return; // scalar
  if (resolved instanceof protobuf.Enum) {
    if (typeof v === 'string' && resolved.values[v] === undefined) problems.push(`${path}: ${v} is not a value of ${resolved.fullName.slice(1)}`);
    return;
  }
  if (typeof v !== 'object' || v === null) {
    problems.push(`${path}: message expected`);
    return;
  }
  const o = v as Record<string, unknown>;
  if (resolved.fullName === '.google.protobuf.Any') {
    if (typeof o['@type'] === 'string') {
      const inner = typeOf(o['@type']);
      if (inner === null) problems.push(`${path}: Any of ${o['@type']} is not loaded (give a PackedAny {type_url, value})`);
      else checkMessage(inner, o, path, problems, typeOf);
    } else if (!(typeof o.type_url === 'string' && o.value instanceof Uint8Array)) {
      problems.push(`${path}: Any needs '@type' or {type_url, value}`);
    }
    return;
  }
  checkMessage(resolved, o, path, problems, typeOf);
}
