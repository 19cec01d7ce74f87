/** The protocol layer's exports for the bootstrap (src/runtime.ts). */
import type { ConnectorSet } from '../src/pool/types.js';
import type { IdentityStore } from '../mesh/identity.js';
import { H1ClientConnector } from './h1/client-conn.js';
import { H2Connector } from './h2/upstream.js';
import { H3Connector } from './h3/upstream.js';

export { Listener } from './listener.js';
export { AdminServer, type AdminHandler, type AdminResponse } from './admin/server.js';

/** The upstream connectors; `identity` is this sidecar's mesh identity for `tls: mesh` clusters. */
export function createConnectors(identity: IdentityStore | null = null): ConnectorSet {
  const h2 = new H2Connector(identity);
  return { http1: new H1ClientConnector(identity), h2c: h2, h2, h3: new H3Connector(identity) };
}
