/**
 * The xDS resources Skiff holds, and their composition with the config file into one Skiff
 * config document (issue 8 items 1 and 2).
 *
 * XdsState is a plain value: the client applies an update to a copy, the copy is composed and
 * built into a snapshot, and only when that snapshot is running does the copy replace the
 * state (a NACK leaves the state as it was).
 *
 * Warming (Envoy's rule): a cluster is used only once its endpoints have arrived, a listener
 * only once its route configuration has. Until then the previous version of the same name
 * keeps serving, or, for a new name, it is not there yet. A route naming a cluster that
 * neither xDS nor the file has gets an empty cluster of that name, so its requests are
 * answered 503 (no healthy upstream) instead of the whole update failing.
 */
import { isDeepStrictEqual } from 'node:util';
import {
  XdsNack,
  translateCluster,
  translateClusterLoadAssignment,
  translateListener,
  translateRouteConfiguration,
  type RouteDoc,
  type XdsCluster,
  type XdsEndpoints,
  type XdsListener,
  type XdsRoutes,
} from './translate.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, type Message, type ResourceType } from './protos.js';

export interface Versioned<T> {
  readonly value: T;
  readonly version: string;
}

/** One response's worth of change to one resource type. */
export interface ResourceUpdate {
  readonly typeUrl: ResourceType;
  readonly upserts: readonly { readonly name: string; readonly version: string; readonly resource: Message }[];
  readonly removals: readonly string[];
}

export class XdsState {
  readonly clusters: Map<string, Versioned<XdsCluster>>;
  readonly endpoints: Map<string, Versioned<XdsEndpoints>>;
  readonly listeners: Map<string, Versioned<XdsListener>>;
  readonly routes: Map<string, Versioned<XdsRoutes>>;

  constructor(from?: XdsState) {
    this.clusters = new Map(from?.clusters);
    this.endpoints = new Map(from?.endpoints);
    this.listeners = new Map(from?.listeners);
    this.routes = new Map(from?.routes);
  }

  /**
   * A copy with `update` applied. Throws XdsNack naming the first resource that cannot be
   * used; the copy is then dropped and nothing changes.
   */
  withUpdate(update: ResourceUpdate): XdsState {
    const next = new XdsState(this);
    for (const { name, version, resource } of update.upserts) {
      switch (update.typeUrl) {
        case CLUSTER_TYPE:
          next.clusters.set(name, { value: checkName(translateCluster(resource), name), version });
          break;
        case ENDPOINT_TYPE:
          next.endpoints.set(name, { value: checkName(translateClusterLoadAssignment(resource), name), version });
          break;
        case LISTENER_TYPE:
          next.listeners.set(name, { value: checkName(translateListener(resource), name), version });
          break;
        case ROUTE_TYPE:
          next.routes.set(name, { value: checkName(translateRouteConfiguration(resource), name), version });
          break;
      }
    }
    for (const name of update.removals) next.mapOf(update.typeUrl).delete(name);
    return next;
  }

  /** Keeps only the named resources of a type (an unsubscribed EDS or RDS name is forgotten). */
  retain(typeUrl: ResourceType, names: ReadonlySet<string>): void {
    const map = this.mapOf(typeUrl);
    for (const name of [...map.keys()]) if (!names.has(name)) map.delete(name);
  }

  mapOf(typeUrl: ResourceType): Map<string, Versioned<unknown>> {
    switch (typeUrl) {
      case CLUSTER_TYPE:
        return this.clusters;
      case ENDPOINT_TYPE:
        return this.endpoints;
      case LISTENER_TYPE:
        return this.listeners;
      case ROUTE_TYPE:
        return this.routes;
    }
  }

  /** The EDS names the clusters need. */
  endpointNames(): Set<string> {
    const out = new Set<string>();
    for (const { value } of this.clusters.values()) if (value.edsName !== null) out.add(value.edsName);
    return out;
  }

  /** The RDS names the listeners need. */
  routeNames(): Set<string> {
    const out = new Set<string>();
    for (const { value } of this.listeners.values()) if (value.rds !== null) out.add(value.rds);
    return out;
  }
}

function checkName<T extends { readonly name: string }>(value: T, name: string): T {
  if (value.name !== name) throw new XdsNack(`resource "${name}" holds a message named "${value.name}"`);
  return value;
}

/** A file-shaped cluster document (with endpoints). */
type Doc = Readonly<Record<string, unknown>>;

/** What was composed last: warming resources keep serving these versions. */
export interface Composition {
  /** The whole document: the file's, with the xDS listeners, route tables and clusters added. */
  readonly document: Readonly<Record<string, unknown>>;
  readonly clusters: ReadonlyMap<string, Doc>;
  readonly listeners: ReadonlyMap<string, { readonly doc: Doc; readonly table: string; readonly routes: readonly RouteDoc[] }>;
  /** Names not in use yet because their endpoints or routes have not arrived. */
  readonly warming: { readonly clusters: readonly string[]; readonly listeners: readonly string[] };
}

/**
 * Builds the Skiff document from the file's document (`base`, plain data as parsed from
 * YAML) and the xDS state. Throws XdsNack when an xDS name collides with one from the file.
 */
export function compose(base: Readonly<Record<string, unknown>>, state: XdsState, previous: Composition | null): Composition {
  const baseListeners = arrayOf(base.listeners);
  const baseClusters = arrayOf(base.clusters);
  const baseRoutes = recordOf(base.routes);
  const fileClusterNames = new Set(baseClusters.map((c) => nameOf(c)));
  const fileListenerNames = new Set(baseListeners.map((l) => nameOf(l)));

  const clusters = new Map<string, Doc>();
  const warmingClusters: string[] = [];
  for (const [name, { value: c }] of state.clusters) {
    if (fileClusterNames.has(name)) throw new XdsNack(`Cluster "${name}": the config file has a cluster of that name`);
    const eps = c.staticEndpoints ?? (c.edsName === null ? undefined : state.endpoints.get(c.edsName)?.value.endpoints);
    if (eps === undefined) {
      warmingClusters.push(name);
      const prev = previous?.clusters.get(name);
      if (prev !== undefined) clusters.set(name, prev);
      continue;
    }
    clusters.set(name, { ...c.doc, endpoints: eps.slice() });
  }

  const listeners = new Map<string, { doc: Doc; table: string; routes: readonly RouteDoc[] }>();
  const warmingListeners: string[] = [];
  for (const [name, { value: l }] of state.listeners) {
    if (fileListenerNames.has(name)) throw new XdsNack(`Listener "${name}": the config file has a listener of that name`);
    const routes = l.inlineRoutes ?? (l.rds === null ? undefined : state.routes.get(l.rds)?.value.routes);
    if (routes === undefined) {
      warmingListeners.push(name);
      const prev = previous?.listeners.get(name);
      if (prev !== undefined) listeners.set(name, prev);
      continue;
    }
    const table = l.rds ?? `listener/${name}`;
    if (Object.hasOwn(baseRoutes, table)) throw new XdsNack(`RouteConfiguration "${table}": the config file has a route table of that name`);
    listeners.set(name, { doc: { ...l.doc, routes: table }, table, routes });
  }

  const tables: Record<string, unknown> = { ...baseRoutes };
  const xdsClusters: Doc[] = [...clusters.values()];
  const known = new Set([...fileClusterNames, ...clusters.keys()]);
  for (const { table, routes } of listeners.values()) {
    tables[table] = routes;
    for (const r of routes) {
      if (known.has(r.cluster)) continue;
      known.add(r.cluster);
      xdsClusters.push({ name: r.cluster, protocol: 'http1', endpoints: [] });
    }
  }
  const document: Record<string, unknown> = {
    ...base,
    listeners: [...baseListeners, ...[...listeners.values()].map((l) => l.doc)],
    routes: tables,
    clusters: [...baseClusters, ...xdsClusters],
  };
  return { document, clusters, listeners, warming: { clusters: warmingClusters, listeners: warmingListeners } };
}

/** True when two compositions build the same config (nothing to apply). */
export function sameDocument(a: Composition | null, b: Composition): boolean {
  return a !== null && isDeepStrictEqual(a.document, b.document);
}

function arrayOf(v: unknown): readonly Record<string, unknown>[] {
  return Array.isArray(v) ? (v as Record<string, unknown>[]) : [];
}

function recordOf(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function nameOf(v: Record<string, unknown>): string {
  return typeof v.name === 'string' ? v.name : '';
}
