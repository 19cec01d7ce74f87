/**
 * Envoy v3 resources → pieces of a Skiff config document (issue 8 item 2).
 *
 * Each function takes one decoded resource (mesh/xds/protos.ts: camelCase fields, only the
 * fields the control plane set, nested Anys unpacked to `{ '@type', ...fields }`) and returns
 * the part of a Skiff YAML document it stands for, in the very shape a file has (durations in
 * ms, addresses as `host:port` strings), so xDS config passes the same schema and build checks
 * as a file (src/config/load.ts parseConfigObject). A resource that uses anything Skiff does
 * not implement throws XdsNack naming the resource and the field: every field is either
 * mapped, listed below as having no effect for Skiff, or refused. Nothing is dropped silently.
 *
 * Fields accepted without effect (they describe, or only matter to things Skiff refuses):
 * `metadata`, `altStatName` and `dnsLookupFamily` (clusters are STATIC or EDS, never DNS) on a
 * Cluster; `interval` in outlier detection (Skiff ejects on the count and re-admits at the
 * ejection time, without a periodic sweep); `locality`, `metadata` and `hostname` on endpoints;
 * `policy.overprovisioningFactor` (one priority level, and the node says
 * envoy.lb.does_not_support_overprovisioning); `statPrefix` on the HTTP connection manager;
 * `name` on routes and virtual hosts; `validateClusters`, and the
 * tls_inspector and http_inspector listener filters (Skiff detects TLS, ALPN and h2c itself).
 * `maxRetries` in circuit breakers only as "unlimited" (>= 2^32-1, Istio's value): Skiff bounds
 * retries with its retry budget instead.
 */
import type { Message } from './protos.js';

/** A resource Skiff refuses; the message goes to the control plane in the NACK's error_detail. */
export class XdsNack extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'XdsNack';
  }
}

/** A route as the file's `routes:` tables have it. */
export interface RouteDoc {
  readonly match: { readonly path?: string; readonly prefix?: string; readonly authority?: string; readonly headers?: Readonly<Record<string, string>> };
  readonly cluster: string;
  readonly timeout?: number;
}

export interface XdsCluster {
  readonly name: string;
  /** The ClusterLoadAssignment name to subscribe to (EDS); null for a STATIC cluster. */
  readonly edsName: string | null;
  /** STATIC clusters: their inline endpoints (`host:port`). */
  readonly staticEndpoints: readonly string[] | null;
  /** The file-shaped cluster without `endpoints`. */
  readonly doc: Readonly<Record<string, unknown>>;
}

export interface XdsEndpoints {
  readonly name: string;
  /** Endpoints that may take traffic (`host:port`); unhealthy and draining ones are left out. */
  readonly endpoints: readonly string[];
}

export interface XdsListener {
  readonly name: string;
  /** The file-shaped listener without `routes`. */
  readonly doc: Readonly<Record<string, unknown>>;
  /** The RouteConfiguration to subscribe to (RDS), or null when the routes are inline. */
  readonly rds: string | null;
  readonly inlineRoutes: readonly RouteDoc[] | null;
}

export interface XdsRoutes {
  readonly name: string;
  readonly routes: readonly RouteDoc[];
}

const HCM_FILTER = 'envoy.filters.network.http_connection_manager';
const HCM_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
const TLS_SOCKET = 'envoy.transport_sockets.tls';
const UPSTREAM_TLS_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';
const DOWNSTREAM_TLS_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';
const HTTP_OPTIONS_KEY = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
const HTTP_OPTIONS_TYPE = `type.googleapis.com/${HTTP_OPTIONS_KEY}`;
const LISTENER_FILTERS_WITHOUT_EFFECT = new Set([
  'envoy.filters.listener.tls_inspector',
  'envoy.filters.listener.http_inspector',
  'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector',
  'type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector',
]);
/** Envoy's "no limit" for uint32 thresholds. */
const UINT32_MAX = 4_294_967_295;

// ---------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------

export function translateCluster(c: Message): XdsCluster {
  const name = requireString(c, 'name', 'Cluster');
  const at = `Cluster "${name}"`;
  only(c, at, ['@type', 'name', 'type', 'edsClusterConfig', 'connectTimeout', 'lbPolicy', 'loadAssignment', 'circuitBreakers', 'outlierDetection',
    'typedExtensionProtocolOptions', 'http2ProtocolOptions', 'transportSocket', 'metadata', 'altStatName', 'dnsLookupFamily']);
  const doc: Record<string, unknown> = { name };

  const type = c.type ?? 'STATIC';
  let edsName: string | null = null;
  let staticEndpoints: string[] | null = null;
  if (type === 'EDS') {
    const eds = c.edsClusterConfig === undefined ? {} : message(c.edsClusterConfig, `${at} eds_cluster_config`);
    only(eds, `${at} eds_cluster_config`, ['edsConfig', 'serviceName']);
    if (eds.edsConfig !== undefined) checkAdsSource(message(eds.edsConfig, `${at} eds_cluster_config.eds_config`), `${at} eds_cluster_config.eds_config`);
    edsName = typeof eds.serviceName === 'string' && eds.serviceName !== '' ? eds.serviceName : name;
    if (c.loadAssignment !== undefined) throw new XdsNack(`${at}: load_assignment is for STATIC clusters; an EDS cluster gets its endpoints from EDS`);
  } else if (type === 'STATIC') {
    if (c.edsClusterConfig !== undefined) throw new XdsNack(`${at}: eds_cluster_config needs type EDS`);
    if (c.loadAssignment === undefined) throw new XdsNack(`${at}: a STATIC cluster needs load_assignment`);
    staticEndpoints = [...translateEndpoints(message(c.loadAssignment, `${at} load_assignment`), `${at} load_assignment`).endpoints];
  } else {
    throw new XdsNack(`${at}: discovery type ${String(type)} is not supported (Skiff takes STATIC and EDS clusters; endpoints are IP addresses, no DNS)`);
  }

  if (c.connectTimeout !== undefined) doc.connectTimeout = positiveMs(c.connectTimeout, `${at} connect_timeout`);
  const lb = c.lbPolicy ?? 'ROUND_ROBIN';
  if (lb === 'ROUND_ROBIN') doc.loadBalancer = 'round-robin';
  else if (lb === 'LEAST_REQUEST') doc.loadBalancer = 'least-request';
  else throw new XdsNack(`${at}: lb_policy ${String(lb)} is not supported (ROUND_ROBIN, LEAST_REQUEST)`);

  // Upstream protocol: HTTP/1.1 unless HTTP/2 is configured (Envoy's default too).
  let http2 = false;
  if (c.http2ProtocolOptions !== undefined) {
    only(message(c.http2ProtocolOptions, `${at} http2_protocol_options`), `${at} http2_protocol_options`, []);
    http2 = true;
  }
  if (c.typedExtensionProtocolOptions !== undefined) {
    const opts = message(c.typedExtensionProtocolOptions, `${at} typed_extension_protocol_options`);
    for (const [key, value] of Object.entries(opts)) {
      if (key !== HTTP_OPTIONS_KEY) throw new XdsNack(`${at}: typed_extension_protocol_options "${key}" is not supported`);
      const o = typed(value, HTTP_OPTIONS_TYPE, `${at} typed_extension_protocol_options["${key}"]`);
      const where = `${at} HttpProtocolOptions`;
      only(o, where, ['@type', 'explicitHttpConfig', 'commonHttpProtocolOptions']);
      if (o.explicitHttpConfig === undefined) throw new XdsNack(`${where}: only explicit_http_config is supported (not use_downstream_protocol_config or auto_config)`);
      const e = message(o.explicitHttpConfig, `${where} explicit_http_config`);
      only(e, `${where} explicit_http_config`, ['httpProtocolOptions', 'http2ProtocolOptions']);
      if (e.http2ProtocolOptions !== undefined) {
        only(message(e.http2ProtocolOptions, `${where} http2_protocol_options`), `${where} http2_protocol_options`, []);
        http2 = true;
      } else if (e.httpProtocolOptions !== undefined) {
        only(message(e.httpProtocolOptions, `${where} http_protocol_options`), `${where} http_protocol_options`, []);
      }
      if (o.commonHttpProtocolOptions !== undefined) {
        const common = message(o.commonHttpProtocolOptions, `${where} common_http_protocol_options`);
        only(common, `${where} common_http_protocol_options`, ['idleTimeout']);
        if (common.idleTimeout !== undefined) doc.idleTimeout = positiveMs(common.idleTimeout, `${where} common_http_protocol_options.idle_timeout`);
      }
    }
  }
  let tls = false;
  if (c.transportSocket !== undefined) {
    doc.tls = upstreamTls(message(c.transportSocket, `${at} transport_socket`), `${at} transport_socket`);
    tls = true;
  }
  doc.protocol = http2 ? (tls ? 'h2' : 'h2c') : 'http1';

  if (c.circuitBreakers !== undefined) doc.circuitBreakers = circuitBreakers(message(c.circuitBreakers, `${at} circuit_breakers`), `${at} circuit_breakers`);
  if (c.outlierDetection !== undefined) doc.outlierDetection = outlierDetection(message(c.outlierDetection, `${at} outlier_detection`), `${at} outlier_detection`);
  else doc.outlierDetection = null; // Envoy: no outlier_detection, no ejection
  // Envoy retries only what a route's retry_policy asks for; Skiff's cluster default retries
  // connect failures and refused streams, which are safe for any method, and nothing else.
  doc.retries = { retryOn: ['connect-failure', 'refused-stream'] };
  return { name, edsName, staticEndpoints, doc };
}

function checkAdsSource(src: Message, where: string): void {
  only(src, where, ['ads', 'resourceApiVersion', 'initialFetchTimeout']);
  if (src.ads === undefined) throw new XdsNack(`${where}: only ads config sources are supported (Skiff runs one ADS stream)`);
  if (src.resourceApiVersion !== undefined && src.resourceApiVersion !== 'V3') throw new XdsNack(`${where}: resource_api_version ${String(src.resourceApiVersion)} is not supported (V3)`);
}

function upstreamTls(ts: Message, where: string): Record<string, unknown> {
  only(ts, where, ['name', 'typedConfig']);
  if (ts.name !== undefined && ts.name !== TLS_SOCKET) throw new XdsNack(`${where}: transport socket "${String(ts.name)}" is not supported (${TLS_SOCKET})`);
  const ctx = typed(ts.typedConfig, UPSTREAM_TLS_TYPE, `${where} typed_config`);
  only(ctx, `${where} UpstreamTlsContext`, ['@type', 'sni', 'commonTlsContext']);
  const out: Record<string, unknown> = {};
  if (typeof ctx.sni === 'string' && ctx.sni !== '') out.servername = ctx.sni;
  if (ctx.commonTlsContext !== undefined) {
    const common = message(ctx.commonTlsContext, `${where} common_tls_context`);
    only(common, `${where} common_tls_context`, ['validationContext', 'alpnProtocols']);
    if (common.validationContext !== undefined) {
      const v = message(common.validationContext, `${where} validation_context`);
      only(v, `${where} validation_context`, ['trustedCa']);
      if (v.trustedCa !== undefined) out.ca = dataSourceFile(v.trustedCa, `${where} validation_context.trusted_ca`);
    }
  }
  return out;
}

function circuitBreakers(cb: Message, where: string): Record<string, unknown> {
  only(cb, where, ['thresholds']);
  const out: Record<string, unknown> = {};
  for (const [i, t] of list(cb.thresholds, `${where} thresholds`).entries()) {
    const at = `${where} thresholds[${i}]`;
    const th = message(t, at);
    only(th, at, ['priority', 'maxConnections', 'maxPendingRequests', 'maxRequests', 'maxRetries']);
    if (th.priority !== undefined && th.priority !== 'DEFAULT') throw new XdsNack(`${at}: priority ${String(th.priority)} is not supported (DEFAULT only)`);
    const limit = (key: string, field: string, min: number): void => {
      const v = uint32(th[key], `${at} ${field}`);
      if (v === undefined) return;
      if (v < min) throw new XdsNack(`${at} ${field}: must be at least ${min}`);
      out[key] = v;
    };
    limit('maxConnections', 'max_connections', 1);
    limit('maxPendingRequests', 'max_pending_requests', 0);
    limit('maxRequests', 'max_requests', 1);
    const retries = uint32(th.maxRetries, `${at} max_retries`);
    if (retries !== undefined && retries < UINT32_MAX) {
      throw new XdsNack(`${at} max_retries: a limit on concurrent retries is not supported (Skiff bounds retries with a retry budget); leave it unset or at 4294967295`);
    }
  }
  return out;
}

function outlierDetection(o: Message, where: string): Record<string, unknown> {
  only(o, where, ['consecutive_5xx', 'interval', 'baseEjectionTime', 'maxEjectionTime', 'maxEjectionPercent', 'consecutiveLocalOriginFailure']);
  const out: Record<string, unknown> = {};
  const c5 = uint32(o.consecutive_5xx, `${where} consecutive_5xx`);
  if (c5 !== undefined) out.consecutive5xx = Math.max(1, c5);
  const lo = uint32(o.consecutiveLocalOriginFailure, `${where} consecutive_local_origin_failure`);
  if (lo !== undefined) out.consecutiveConnectFailures = Math.max(1, lo);
  if (o.baseEjectionTime !== undefined) out.baseEjectionTime = positiveMs(o.baseEjectionTime, `${where} base_ejection_time`);
  if (o.maxEjectionTime !== undefined) out.maxEjectionTime = positiveMs(o.maxEjectionTime, `${where} max_ejection_time`);
  const pct = uint32(o.maxEjectionPercent, `${where} max_ejection_percent`);
  if (pct !== undefined) out.maxEjectionPercent = Math.min(100, pct);
  return out;
}

// ---------------------------------------------------------------------------------------
// ClusterLoadAssignment
// ---------------------------------------------------------------------------------------

export function translateClusterLoadAssignment(cla: Message): XdsEndpoints {
  const name = requireString(cla, 'clusterName', 'ClusterLoadAssignment');
  return translateEndpoints(cla, `ClusterLoadAssignment "${name}"`);
}

function translateEndpoints(cla: Message, at: string): XdsEndpoints {
  only(cla, at, ['@type', 'clusterName', 'endpoints', 'policy']);
  if (cla.policy !== undefined) {
    const p = message(cla.policy, `${at} policy`);
    only(p, `${at} policy`, ['overprovisioningFactor']);
  }
  const out: string[] = [];
  let localityWeight: number | undefined;
  let endpointWeight: number | undefined;
  for (const [i, l] of list(cla.endpoints, `${at} endpoints`).entries()) {
    const where = `${at} endpoints[${i}]`;
    const loc = message(l, where);
    only(loc, where, ['locality', 'lbEndpoints', 'loadBalancingWeight', 'priority']);
    if (typeof loc.priority === 'number' && loc.priority !== 0) throw new XdsNack(`${where}: priority ${loc.priority} is not supported (one priority level, 0)`);
    const lw = uint32(loc.loadBalancingWeight, `${where} load_balancing_weight`);
    if (lw !== undefined) {
      if (localityWeight !== undefined && lw !== localityWeight) throw new XdsNack(`${where}: unequal locality weights are not supported`);
      localityWeight = lw;
    }
    for (const [j, e] of list(loc.lbEndpoints, `${where} lb_endpoints`).entries()) {
      const ew = `${where} lb_endpoints[${j}]`;
      const lbe = message(e, ew);
      only(lbe, ew, ['endpoint', 'healthStatus', 'loadBalancingWeight', 'metadata']);
      const w = uint32(lbe.loadBalancingWeight, `${ew} load_balancing_weight`);
      if (w !== undefined) {
        if (endpointWeight !== undefined && w !== endpointWeight) throw new XdsNack(`${ew}: unequal endpoint weights are not supported`);
        endpointWeight = w;
      }
      const health = lbe.healthStatus ?? 'UNKNOWN';
      if (lbe.endpoint === undefined) throw new XdsNack(`${ew}: endpoint is missing`);
      const ep = message(lbe.endpoint, `${ew} endpoint`);
      only(ep, `${ew} endpoint`, ['address', 'hostname']);
      const address = socketAddress(ep.address, `${ew} endpoint.address`, false);
      // Envoy sends no traffic to UNHEALTHY, DRAINING or TIMEOUT hosts; DEGRADED ones still serve.
      if (health === 'HEALTHY' || health === 'UNKNOWN' || health === 'DEGRADED') out.push(address);
    }
  }
  return { name: typeof cla.clusterName === 'string' ? cla.clusterName : '', endpoints: out };
}

// ---------------------------------------------------------------------------------------
// Listener
// ---------------------------------------------------------------------------------------

export function translateListener(l: Message): XdsListener {
  const name = requireString(l, 'name', 'Listener');
  const at = `Listener "${name}"`;
  only(l, at, ['@type', 'name', 'address', 'filterChains', 'listenerFilters', 'trafficDirection', 'metadata']);
  const address = socketAddress(l.address, `${at} address`, true);
  for (const [i, f] of list(l.listenerFilters, `${at} listener_filters`).entries()) {
    const lf = message(f, `${at} listener_filters[${i}]`);
    const typeUrl = isMessage(lf.typedConfig) && typeof lf.typedConfig['@type'] === 'string' ? lf.typedConfig['@type'] : '';
    if (!LISTENER_FILTERS_WITHOUT_EFFECT.has(String(lf.name)) && !LISTENER_FILTERS_WITHOUT_EFFECT.has(typeUrl)) {
      throw new XdsNack(`${at}: listener filter "${String(lf.name)}" is not supported`);
    }
  }
  const chains = list(l.filterChains, `${at} filter_chains`);
  if (chains.length !== 1) throw new XdsNack(`${at}: exactly one filter chain is supported (got ${chains.length})`);
  const chain = message(chains[0], `${at} filter_chains[0]`);
  only(chain, `${at} filter_chains[0]`, ['filters', 'transportSocket', 'name', 'filterChainMatch']);
  if (chain.filterChainMatch !== undefined && Object.keys(message(chain.filterChainMatch, `${at} filter_chain_match`)).length > 0) {
    throw new XdsNack(`${at}: filter_chain_match is not supported`);
  }
  const filters = list(chain.filters, `${at} filters`);
  if (filters.length !== 1) throw new XdsNack(`${at}: the filter chain must hold exactly one filter, ${HCM_FILTER} (got ${filters.length})`);
  const filter = message(filters[0], `${at} filters[0]`);
  only(filter, `${at} filters[0]`, ['name', 'typedConfig']);
  const hcmWhere = `${at} filter "${String(filter.name ?? '')}"`;
  if (!isMessage(filter.typedConfig) || filter.typedConfig['@type'] !== HCM_TYPE) {
    throw new XdsNack(`${hcmWhere}: network filter ${describeType(filter.typedConfig)} is not supported (only ${HCM_FILTER})`);
  }
  const hcm = filter.typedConfig;
  only(hcm, hcmWhere, ['@type', 'statPrefix', 'codecType', 'rds', 'routeConfig', 'httpFilters']);

  let tlsFiles: Record<string, string> | null = null;
  if (chain.transportSocket !== undefined) tlsFiles = downstreamTls(message(chain.transportSocket, `${at} transport_socket`), `${at} transport_socket`);
  const codec = hcm.codecType ?? 'AUTO';
  let protocols: string[];
  if (codec === 'AUTO') protocols = tlsFiles === null ? ['http1', 'h2c'] : ['http1', 'h2'];
  else if (codec === 'HTTP1') protocols = ['http1'];
  else if (codec === 'HTTP2') protocols = [tlsFiles === null ? 'h2c' : 'h2'];
  else throw new XdsNack(`${hcmWhere}: codec_type ${String(codec)} is not supported over xDS (AUTO, HTTP1, HTTP2)`);

  const httpFilters = list(hcm.httpFilters, `${hcmWhere} http_filters`);
  httpFilters.forEach((f, i) => {
    const hf = message(f, `${hcmWhere} http_filters[${i}]`);
    const isRouter = isMessage(hf.typedConfig) && hf.typedConfig['@type'] === ROUTER_TYPE;
    if (!isRouter || i !== httpFilters.length - 1) {
      throw new XdsNack(`${hcmWhere}: http filter "${String(hf.name ?? '')}" (${describeType(hf.typedConfig)}) is not supported (only the router, last)`);
    }
    only(hf, `${hcmWhere} http_filters[${i}]`, ['name', 'typedConfig']);
    only(hf.typedConfig as Message, `${hcmWhere} router`, ['@type']);
  });
  if (httpFilters.length === 0) throw new XdsNack(`${hcmWhere}: http_filters must end with the router filter`);

  let rds: string | null = null;
  let inlineRoutes: RouteDoc[] | null = null;
  if (hcm.rds !== undefined) {
    const r = message(hcm.rds, `${hcmWhere} rds`);
    only(r, `${hcmWhere} rds`, ['routeConfigName', 'configSource']);
    rds = requireString(r, 'routeConfigName', `${hcmWhere} rds`);
    if (r.configSource !== undefined) checkAdsSource(message(r.configSource, `${hcmWhere} rds.config_source`), `${hcmWhere} rds.config_source`);
  } else if (hcm.routeConfig !== undefined) {
    inlineRoutes = routesOf(message(hcm.routeConfig, `${hcmWhere} route_config`), `${hcmWhere} route_config`);
  } else {
    throw new XdsNack(`${hcmWhere}: needs rds or route_config`);
  }

  const direction = l.trafficDirection === 'OUTBOUND' ? 'outbound' : 'inbound';
  const doc: Record<string, unknown> = { name, direction, address, protocols };
  if (tlsFiles !== null) doc.tls = tlsFiles;
  return { name, doc, rds, inlineRoutes };
}

function downstreamTls(ts: Message, where: string): Record<string, string> {
  only(ts, where, ['name', 'typedConfig']);
  if (ts.name !== undefined && ts.name !== TLS_SOCKET) throw new XdsNack(`${where}: transport socket "${String(ts.name)}" is not supported (${TLS_SOCKET})`);
  const ctx = typed(ts.typedConfig, DOWNSTREAM_TLS_TYPE, `${where} typed_config`);
  only(ctx, `${where} DownstreamTlsContext`, ['@type', 'commonTlsContext']);
  const common = message(ctx.commonTlsContext, `${where} common_tls_context`);
  only(common, `${where} common_tls_context`, ['tlsCertificates', 'alpnProtocols']);
  const certs = list(common.tlsCertificates, `${where} tls_certificates`);
  if (certs.length !== 1) throw new XdsNack(`${where}: exactly one tls_certificates entry is supported (got ${certs.length})`);
  const cert = message(certs[0], `${where} tls_certificates[0]`);
  only(cert, `${where} tls_certificates[0]`, ['certificateChain', 'privateKey']);
  return {
    cert: dataSourceFile(cert.certificateChain, `${where} certificate_chain`),
    key: dataSourceFile(cert.privateKey, `${where} private_key`),
  };
}

// ---------------------------------------------------------------------------------------
// RouteConfiguration
// ---------------------------------------------------------------------------------------

/**
 * Envoy picks a virtual host by the most specific domain (exact, then the longest `*.suffix`,
 * then `*`) and then the first matching route in it; Skiff's route table is one ordered list.
 * So the routes are flattened as (domain, route) pairs ordered by domain specificity, each
 * virtual host's routes in their order: the first Skiff match is the route Envoy would pick.
 * A domain's `:port` is dropped (a Skiff listener is one port; Istio sends both `name` and
 * `name:port`).
 */
export function translateRouteConfiguration(rc: Message): XdsRoutes {
  const name = requireString(rc, 'name', 'RouteConfiguration');
  return { name, routes: routesOf(rc, `RouteConfiguration "${name}"`) };
}

function routesOf(rc: Message, at: string): RouteDoc[] {
  only(rc, at, ['@type', 'name', 'virtualHosts', 'validateClusters']);
  const byDomain: { domain: string; rank: number; order: number; routes: RouteDoc[] }[] = [];
  /** Domain (port dropped) → the virtual host that has it. */
  const seen = new Map<string, number>();
  for (const [i, v] of list(rc.virtualHosts, `${at} virtual_hosts`).entries()) {
    const vw = `${at} virtual_hosts[${i}]`;
    const vh = message(v, vw);
    only(vh, vw, ['name', 'domains', 'routes']);
    const routes = list(vh.routes, `${vw} routes`).map((r, j) => translateRoute(message(r, `${vw} routes[${j}]`), `${vw} routes[${j}]`));
    for (const d of list(vh.domains, `${vw} domains`)) {
      if (typeof d !== 'string' || d === '') throw new XdsNack(`${vw}: a domain must be a non-empty string`);
      const domain = stripPort(d.toLowerCase());
      if (domain !== '*' && domain.includes('*') && !(domain.startsWith('*.') && !domain.slice(2).includes('*'))) {
        throw new XdsNack(`${vw}: domain "${d}" is not supported (exact names, *.suffix and * only)`);
      }
      const owner = seen.get(domain);
      if (owner === i) continue; // `name` and `name:port` in one virtual host
      if (owner !== undefined) {
        throw new XdsNack(`${vw}: domain "${d}" is also in virtual_hosts[${owner}] (Skiff matches hosts without ports, so domains differing only in port collide)`);
      }
      seen.set(domain, i);
      const rank = domain === '*' ? 0 : domain.startsWith('*.') ? 1 : 2;
      byDomain.push({ domain, rank, order: byDomain.length, routes });
    }
  }
  byDomain.sort((a, b) => b.rank - a.rank || b.domain.length - a.domain.length || a.order - b.order);
  const out: RouteDoc[] = [];
  for (const d of byDomain) {
    for (const r of d.routes) {
      out.push(d.domain === '*' ? r : { ...r, match: { ...r.match, authority: d.domain } });
    }
  }
  return out;
}

function translateRoute(r: Message, at: string): RouteDoc {
  if (r.route === undefined) throw new XdsNack(`${at}: only route actions are supported (not redirect, direct_response or filter_action)`);
  only(r, at, ['name', 'match', 'route']);
  const m = message(r.match, `${at} match`);
  only(m, `${at} match`, ['prefix', 'path', 'headers', 'caseSensitive']);
  if (isMessage(m.caseSensitive) && m.caseSensitive.value === false) throw new XdsNack(`${at} match: case_sensitive false is not supported`);
  const match: { path?: string; prefix?: string; headers?: Record<string, string> } = {};
  if (typeof m.path === 'string') match.path = m.path;
  else if (typeof m.prefix === 'string') match.prefix = m.prefix === '' ? '/' : m.prefix;
  else throw new XdsNack(`${at} match: only prefix and path matching are supported (not safe_regex, path_separated_prefix or connect_matcher)`);
  const headers = list(m.headers, `${at} match.headers`);
  if (headers.length > 0) {
    match.headers = {};
    headers.forEach((h, k) => {
      const hw = `${at} match.headers[${k}]`;
      const hm = message(h, hw);
      only(hm, hw, ['name', 'exactMatch', 'stringMatch']);
      const hname = requireString(hm, 'name', hw);
      let value: unknown = hm.exactMatch;
      if (hm.stringMatch !== undefined) {
        const sm = message(hm.stringMatch, `${hw} string_match`);
        only(sm, `${hw} string_match`, ['exact']);
        value = sm.exact;
      }
      if (typeof value !== 'string') throw new XdsNack(`${hw}: only exact header matches are supported`);
      (match.headers as Record<string, string>)[hname] = value;
    });
  }
  const a = message(r.route, `${at} route`);
  only(a, `${at} route`, ['cluster', 'timeout']);
  if (typeof a.cluster !== 'string' || a.cluster === '') throw new XdsNack(`${at} route: needs cluster (weighted_clusters and cluster_header are not supported)`);
  const out: { match: typeof match; cluster: string; timeout?: number } = { match, cluster: a.cluster };
  if (a.timeout !== undefined) out.timeout = durationMs(a.timeout, `${at} route.timeout`);
  return out;
}

function stripPort(domain: string): string {
  if (domain.startsWith('[')) {
    const close = domain.indexOf(']');
    return close < 0 ? domain : domain.slice(0, close + 1);
  }
  const colon = domain.lastIndexOf(':');
  return colon > 0 && domain.indexOf(':') === colon ? domain.slice(0, colon) : domain;
}

// ---------------------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------------------

function isMessage(v: unknown): v is Message {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

function message(v: unknown, where: string): Message {
  if (!isMessage(v)) throw new XdsNack(`${where}: expected a message`);
  return v;
}

function list(v: unknown, where: string): readonly unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new XdsNack(`${where}: expected a list`);
  return v;
}

function requireString(m: Message, key: string, where: string): string {
  const v = m[key];
  if (typeof v !== 'string' || v === '') throw new XdsNack(`${where}: ${snake(key)} is required`);
  return v;
}

/** Refuses the first field of `m` not in `allowed`, by its proto name. */
function only(m: Message, where: string, allowed: readonly string[]): void {
  for (const key of Object.keys(m)) {
    if (!allowed.includes(key)) throw new XdsNack(`${where}: field ${snake(key)} is not supported`);
  }
}

/** A typed_config that must be of `typeUrl`. */
function typed(v: unknown, typeUrl: string, where: string): Message {
  if (!isMessage(v) || v['@type'] !== typeUrl) throw new XdsNack(`${where}: ${describeType(v)} is not supported (expected ${typeUrl})`);
  return v;
}

/** The type of a typed_config for a message: its URL, also for Anys of types Skiff does not load. */
function describeType(v: unknown): string {
  if (!isMessage(v)) return 'an empty typed_config';
  if (typeof v['@type'] === 'string') return v['@type'];
  if (typeof v.type_url === 'string') return v.type_url;
  return 'an untyped config';
}

function uint32(v: unknown, where: string): number | undefined {
  if (v === undefined) return undefined;
  const n = isMessage(v) ? (v.value ?? 0) : v; // google.protobuf.UInt32Value
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) throw new XdsNack(`${where}: expected an unsigned integer`);
  return n;
}

/** google.protobuf.Duration → whole ms (rounded up, so 1 ns is not 0). */
function durationMs(v: unknown, where: string): number {
  const d = message(v, where);
  const seconds = d.seconds ?? 0;
  const nanos = d.nanos ?? 0;
  if (typeof seconds !== 'number' || typeof nanos !== 'number' || seconds < 0 || nanos < 0) throw new XdsNack(`${where}: invalid duration`);
  const ms = seconds * 1000 + Math.ceil(nanos / 1e6);
  if (ms > 2_147_483_647) throw new XdsNack(`${where}: duration too long (at most about 24 days)`);
  return ms;
}

function positiveMs(v: unknown, where: string): number {
  const ms = durationMs(v, where);
  if (ms <= 0) throw new XdsNack(`${where}: must be greater than 0`);
  return ms;
}

/** A SocketAddress as `host:port` (IPv6 bracketed); IP literals only (Skiff does not resolve names). */
function socketAddress(v: unknown, where: string, isListen: boolean): string {
  const a = message(v, where);
  only(a, where, ['socketAddress']);
  const sa = message(a.socketAddress, `${where}.socket_address`);
  only(sa, `${where}.socket_address`, ['address', 'portValue', 'protocol']);
  if (sa.protocol !== undefined && sa.protocol !== 'TCP') throw new XdsNack(`${where}: protocol ${String(sa.protocol)} is not supported (TCP)`);
  const host = sa.address;
  const port = sa.portValue ?? 0;
  if (typeof host !== 'string' || host === '') throw new XdsNack(`${where}: address is required`);
  if (typeof port !== 'number' || (!isListen && port === 0)) throw new XdsNack(`${where}: port_value is required`);
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A DataSource that names a file (inline bytes and SDS are not supported). */
function dataSourceFile(v: unknown, where: string): string {
  const d = message(v, where);
  only(d, where, ['filename']);
  if (typeof d.filename !== 'string' || d.filename === '') throw new XdsNack(`${where}: only filename data sources are supported`);
  return d.filename;
}

function snake(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
