/** Dialing upstream sockets (TCP or TLS) with the cluster's connect timeout. */
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { addressKey } from '../../src/address.js';
import { ErrorCode, SkiffError } from '../../src/errors.js';
import type { ClusterConfig, SocketAddress } from '../../src/config/types.js';
import type { IdentityStore } from '../../mesh/identity.js';
import { meshClientOptions } from '../tls/mesh.js';


/**
 * Dials one TCP (or TLS) connection, failing after the cluster's connect timeout. Mesh clusters
 * (`tls: mesh`) dial mTLS with `identity`'s current material and check the server's SPIFFE ID
 * (protocols/tls/mesh.ts); never in cleartext: without an identity the connect fails.
 */
export function dial(
  ep: SocketAddress,
  cluster: ClusterConfig,
  alpn: string[],
  identity: IdentityStore | null = null,
  onread: net.OnReadOpts | null = null,
): Promise<net.Socket> {
  if (cluster.meshTls && identity === null) {
    return Promise.reject(new SkiffError(ErrorCode.UpstreamConnect, 'upstream', `cluster ${cluster.name}: tls: mesh needs an identity`, false));
  }
  return new Promise((resolve, reject) => {
    let socket: net.Socket;
    const t = cluster.tls;
    if (cluster.meshTls && identity !== null) {
      socket = tls.connect({ host: ep.host, port: ep.port, ...meshClientOptions(identity.current, cluster, alpn) });
    } else if (t !== null) {
      socket = tls.connect({
        host: ep.host,
        port: ep.port,
        servername: t.servername ?? (net.isIP(ep.host) === 0 ? ep.host : undefined),
        ca: t.ca === null ? undefined : readFileSync(t.ca),
        rejectUnauthorized: !t.insecureSkipVerify,
        ALPNProtocols: alpn,
      });
    } else {
      // `onread` (cleartext only; TLS sockets have no such option): the bytes go to its callback
      // in its buffer instead of a new Buffer and a 'data' event per read.
      socket = net.connect({ host: ep.host, port: ep.port, noDelay: true, onread: onread ?? undefined });
    }
    // Once Skiff ends its side (HTTP/1.1 after a `connection: close` response, node:http2 at
    // the end of a graceful session close), the fd goes: the kernel finishes the close on its
    // own. Waiting for the peer's FIN instead kept the socket (and node:http2's session) open
    // for as long as the peer kept its side open, forever for some (a node:http2 server after
    // its own GOAWAY). Regression: test/regress/upstream-fin-wait-leak.test.ts.
    socket.once('finish', destroyAfterEnd);
    const readyEvent = t !== null || cluster.meshTls ? 'secureConnect' : 'connect';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new SkiffError(ErrorCode.ConnectTimeout, 'upstream', `connect to ${addressKey(ep)} timed out after ${cluster.connectTimeoutMs} ms`, true));
    }, cluster.connectTimeoutMs);
    const onError = (err: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(new SkiffError(ErrorCode.UpstreamConnect, 'upstream', `connect to ${addressKey(ep)} failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`, true, err));
    };
    socket.once('error', onError);
    socket.once(readyEvent, () => {
      clearTimeout(timer);
      socket.off('error', onError);
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}

/** 'finish' (our write side ended and flushed): close the socket without waiting for the peer. */
function destroyAfterEnd(this: net.Socket): void {
  this.destroy();
}
