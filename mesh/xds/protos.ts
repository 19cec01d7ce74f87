/**
 * Envoy's xDS protos, loaded with protobufjs from the `.proto` files that @grpc/grpc-js-xds
 * ships (envoy-api, xds, googleapis, protoc-gen-validate under its `deps/`); none are copied
 * into this repository (issue 8 item 3). Loading parses ~150 files and takes ~0.3 s, so it
 * happens once, on first use, and only when an `xds:` block is configured.
 *
 * Messages are read with `toObject` in camelCase (`connect_timeout` is `connectTimeout`),
 * enums as their names, 64-bit integers as numbers, and only the fields that are set
 * (`defaults: false`): a field present in the object was sent by the control plane, which is
 * what lets the translator NACK any field it does not support instead of dropping it.
 * `google.protobuf.Any` values are decoded in place by `unpackAny` to `{ '@type': url, ...fields }`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import protobuf from 'protobufjs';

export const TYPE_PREFIX = 'type.googleapis.com/';
export const LISTENER_TYPE = `${TYPE_PREFIX}envoy.config.listener.v3.Listener`;
export const ROUTE_TYPE = `${TYPE_PREFIX}envoy.config.route.v3.RouteConfiguration`;
export const CLUSTER_TYPE = `${TYPE_PREFIX}envoy.config.cluster.v3.Cluster`;
export const ENDPOINT_TYPE = `${TYPE_PREFIX}envoy.config.endpoint.v3.ClusterLoadAssignment`;

/** The four resource types Skiff subscribes to, in the order Envoy requests them (CDS, EDS, LDS, RDS). */
export const RESOURCE_TYPES = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE] as const;
export type ResourceType = (typeof RESOURCE_TYPES)[number];

export const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';
export const SOTW_METHOD = `/${ADS_SERVICE}/StreamAggregatedResources`;
export const DELTA_METHOD = `/${ADS_SERVICE}/DeltaAggregatedResources`;

/** Every proto file loaded: the discovery service and each message type that can arrive in an Any. */
const FILES = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto',
  'envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
];

/** A decoded message: field names in camelCase; nested Any values carry their type in `@type`. */
export type Message = { readonly [field: string]: unknown };

/**
 * A packed `google.protobuf.Any` as protobufjs reads and writes it. protobufjs's built-in
 * well-known types keep proto field names, so it is `type_url` here, not `typeUrl`.
 */
export interface PackedAny {
  readonly type_url: string;
  readonly value: Uint8Array;
}

export interface XdsProtos {
  readonly root: protobuf.Root;
  readonly discoveryRequest: protobuf.Type;
  readonly discoveryResponse: protobuf.Type;
  readonly deltaDiscoveryRequest: protobuf.Type;
  readonly deltaDiscoveryResponse: protobuf.Type;
  /** The protobufjs type of a type URL, or null when it is not one of the loaded protos. */
  typeOf(typeUrl: string): protobuf.Type | null;
  /**
   * Encodes a plain object (camelCase fields) as the message `type`. An Any field is given
   * either as `{ '@type': url, ...fields }` (encoded here) or as a PackedAny. Unknown keys
   * are ignored (protobufjs `fromObject`).
   */
  encode(type: protobuf.Type, value: object): Buffer;
  /** Decodes bytes of `type` to a plain object; Any fields stay packed (PackedAny). */
  decode(type: protobuf.Type, bytes: Uint8Array): Message;
  /** Encodes a plain object as an Any of `typeUrl`; throws for a type not loaded. */
  pack(typeUrl: string, value: object): PackedAny;
  /**
   * Unpacks an Any to `{ '@type': url, ...fields }`, nested Anys of loaded types unpacked the
   * same way; a nested Any of a type not loaded stays a PackedAny (the translator names it).
   * Throws for a top-level type not loaded, and for bytes that do not decode.
   */
  unpack(packed: PackedAny): Message;
}

/** toObject options for envelopes: see the module comment. */
const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, enums: String, bytes: Buffer, defaults: false, arrays: false, objects: false, oneofs: false };
/** For resources: `json` makes protobufjs's Any wrapper unpack nested Anys to `@type` form. */
const TO_OBJECT_JSON: protobuf.IConversionOptions = { ...TO_OBJECT, json: true };

let cached: XdsProtos | null = null;

/** Loads the protos once per process. */
export function loadXdsProtos(): XdsProtos {
  if (cached === null) cached = load();
  return cached;
}

function depsDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
}

/**
 * Where the build writes the parsed protos as a protobufjs JSON descriptor
 * (scripts/xds-descriptor.mjs, run by `npm run build` from the package's `.proto` files):
 * loading it costs ~10 MiB RSS and 3.2 MiB of heap where parsing the `.proto` text costs ~25
 * MiB and 5.4 MiB. Without it (a build that skipped the script) the `.proto` files are parsed.
 */
export const DESCRIPTOR_PATH = fileURLToPath(new URL('./envoy-descriptor.json', import.meta.url));

function load(): XdsProtos {
  let root: protobuf.Root;
  if (existsSync(DESCRIPTOR_PATH)) {
    root = protobuf.Root.fromJSON(JSON.parse(readFileSync(DESCRIPTOR_PATH, 'utf8')) as protobuf.INamespace);
    root.resolveAll();
  } else {
    root = parseEnvoyProtos();
  }
  return wrap(root);
}

/** Parses Envoy's `.proto` files from @grpc/grpc-js-xds (the build's descriptor comes from here). */
export function parseEnvoyProtos(): protobuf.Root {
  const deps = depsDir();
  const includeDirs = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => join(deps, d));
  const protobufDir = dirname(createRequire(import.meta.url).resolve('protobufjs/package.json'));
  const root = new protobuf.Root();
  root.resolvePath = (_origin: string, target: string): string => {
    if (target.startsWith('google/protobuf/')) {
      // protobufjs has the well-known types built in; descriptor.proto ships beside them.
      const own = join(protobufDir, target);
      return existsSync(own) ? own : target;
    }
    for (const dir of includeDirs) {
      const p = join(dir, target);
      if (existsSync(p)) return p;
    }
    return target;
  };
  root.loadSync(FILES, { keepCase: false });
  root.resolveAll();
  return root;
}

function wrap(root: protobuf.Root): XdsProtos {
  const typeCache = new Map<string, protobuf.Type | null>();
  const typeOf = (typeUrl: string): protobuf.Type | null => {
    let t = typeCache.get(typeUrl);
    if (t === undefined) {
      t = null;
      if (typeUrl.startsWith(TYPE_PREFIX)) {
        try {
          const found = root.lookup(typeUrl.slice(TYPE_PREFIX.length));
          if (found instanceof protobuf.Type) t = found;
        } catch {
          // not a name protobufjs can look up
        }
      }
      typeCache.set(typeUrl, t);
    }
    return t;
  };

  const encode = (type: protobuf.Type, value: object): Buffer => Buffer.from(type.encode(type.fromObject(value as Record<string, unknown>)).finish());

  return {
    root,
    discoveryRequest: root.lookupType('envoy.service.discovery.v3.DiscoveryRequest'),
    discoveryResponse: root.lookupType('envoy.service.discovery.v3.DiscoveryResponse'),
    deltaDiscoveryRequest: root.lookupType('envoy.service.discovery.v3.DeltaDiscoveryRequest'),
    deltaDiscoveryResponse: root.lookupType('envoy.service.discovery.v3.DeltaDiscoveryResponse'),
    typeOf,
    encode,
    decode(type, bytes) {
      return type.toObject(type.decode(bytes), TO_OBJECT) as Message;
    },
    pack(typeUrl, value) {
      const type = typeOf(typeUrl);
      if (type === null) throw new Error(`unsupported type ${typeUrl}`);
      return { type_url: typeUrl, value: encode(type, value) };
    },
    unpack(packed) {
      const type = typeOf(packed.type_url);
      if (type === null) throw new Error(`unsupported type ${packed.type_url}`);
      return { '@type': packed.type_url, ...(type.toObject(type.decode(packed.value), TO_OBJECT_JSON) as Record<string, unknown>) };
    },
  };
}
