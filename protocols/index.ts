/** The protocol layer's exports for the bootstrap (src/runtime.ts). */
import type { ConnectorSet } from '../src/pool/types.js';
import { H1ClientConnector } from './h1/client-conn.js';
import { H2Connector } from './h2/upstream.js';

export { Listener } from './listener.js';
export { AdminServer, type AdminHandler, type AdminResponse } from './admin/server.js';

export function createConnectors(): ConnectorSet {
  const h2 = new H2Connector();
  return { http1: new H1ClientConnector(), h2c: h2, h2 };
}
