/** The protocol layer's exports for the bootstrap (src/runtime.ts). */
import type { ClusterConfig, SocketAddress } from '../src/config/types.js';
import type { ConnEvents, Connector, ConnectorSet, UpstreamConn } from '../src/pool/types.js';
import type { IdentityStore } from '../mesh/identity.js';
import { ErrorCode, SkiffError } from '../src/errors.js';
import { H1ClientConnector } from './h1/client-conn.js';
import { H2Connector } from './h2/upstream.js';

export { Listener } from './listener.js';
export { AdminServer, type AdminHandler, type AdminResponse } from './admin/server.js';

/** The upstream connectors; `identity` is this sidecar's mesh identity for `tls: mesh` clusters. */
export function createConnectors(identity: IdentityStore | null = null): ConnectorSet {
  const h2 = new H2Connector(identity);
  return { http1: new H1ClientConnector(identity), h2c: h2, h2, h3: new LazyH3Connector(identity) };
}

/**
 * The HTTP/3 connector, imported at the first HTTP/3 connect: the HTTP/3 modules and the QUIC
 * binding (~6 MiB of RSS) stay unloaded in a sidecar without HTTP/3 clusters.
 */
class LazyH3Connector implements Connector {
  private readonly identity: IdentityStore | null;
  private real: Promise<Connector> | null;

  constructor(identity: IdentityStore | null) {
    this.identity = identity;
    this.real = null;
  }

  async connect(endpoint: SocketAddress, cluster: ClusterConfig, events: ConnEvents): Promise<UpstreamConn> {
    this.real ??= import('./h3/upstream.js').then(
      (m) => new m.H3Connector(this.identity),
      (err: unknown) => {
        // The QUIC binding could not load (no prebuilt addon for this platform): every HTTP/3
        // connect fails with the reason, the rest of the sidecar keeps serving.
        throw new SkiffError(ErrorCode.UpstreamConnect, 'upstream', `HTTP/3 unavailable: ${err instanceof Error ? err.message : String(err)}`, false, err);
      },
    );
    return (await this.real).connect(endpoint, cluster, events);
  }
}
