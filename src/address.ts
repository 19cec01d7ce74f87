import type { SocketAddress } from './config/types.js';

/** `host:port`, with IPv6 literals bracketed: the one spelling of an endpoint's key. */
export function addressKey(ep: SocketAddress): string {
  return ep.host.includes(':') ? `[${ep.host}]:${ep.port}` : `${ep.host}:${ep.port}`;
}
