/**
 * Mutual TLS between sidecars (`tls: mesh`), built from the IdentityStore's material
 * (mesh/identity.ts).
 *
 * Server side (mesh listeners): serve the identity certificate, ask for the peer's, trust only
 * the bundle. The server is created with `rejectUnauthorized: false` on purpose and the listener
 * refuses an untrusted peer itself (`checkMeshPeer`, then destroy) before any byte of HTTP is
 * read: with node's own rejection the handshake fails inside OpenSSL and the presented
 * certificate is gone by `tlsClientError` (checked on Node 20: `getPeerCertificate()` is empty
 * there), so the refusal could not be logged with the identity the peer claimed. Under TLS 1.3
 * the client sees the same thing either way: its handshake completes, then the connection
 * closes. Rotation: `watchRotation` swaps the server's secure context
 * (`server.setSecureContext`); new handshakes get the new certificate and bundle, established
 * connections keep theirs.
 *
 * Client side (mesh clusters): present the identity certificate, verify the chain against the
 * bundle, and instead of hostname checking (endpoints are addresses, identities are SPIFFE
 * IDs) require the server's URI SAN to be the cluster's `peerIdentity` (any SPIFFE ID from the
 * bundle when none is set). Every dial reads the store's current material, so new connections
 * use a rotated certificate at once.
 */
import tls from 'node:tls';
import type { ClusterConfig } from '../../src/config/types.js';
import { spiffeIdFromSan, spiffeIdOf, type IdentityMaterial, type IdentityStore } from '../../mesh/identity.js';

/** One SecureContext per material (client side): PEM is parsed once per rotation, not per dial. */
const clientContexts = new WeakMap<IdentityMaterial, tls.SecureContext>();

function secureContextOptions(m: IdentityMaterial): tls.SecureContextOptions {
  return { cert: m.certPem, key: m.keyPem, ca: m.caPem };
}

/** Options for `tls.createServer` of a mesh listener offering `alpn`. */
export function meshServerOptions(m: IdentityMaterial, alpn: readonly string[]): tls.TlsOptions {
  return {
    ...secureContextOptions(m),
    requestCert: true,
    // The listener rejects untrusted peers itself, after reading what they presented.
    rejectUnauthorized: false,
    ALPNProtocols: alpn.slice(),
  };
}

/**
 * Swaps `server`'s secure context on every rotation; returns the unsubscribe function.
 * Established connections are not touched.
 */
export function watchRotation(server: tls.Server, store: IdentityStore): () => void {
  return store.onChange((next) => server.setSecureContext(secureContextOptions(next)));
}

/** What a mesh listener learned about a peer after the handshake. */
export interface MeshPeer {
  /** The SPIFFE ID the peer's certificate carries (verified or not); '' when none or no cert. */
  readonly spiffeId: string;
  /** Why the peer is refused (OpenSSL's verify code, e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE); null when trusted. */
  readonly refusal: string | null;
}

/**
 * Checks a mesh listener's freshly handshaken socket: the peer must have sent a certificate
 * that chains to the trust bundle (node's `authorized`). Reads the presented SPIFFE ID either
 * way, for routing when trusted and for the log line when refused.
 */
export function checkMeshPeer(socket: tls.TLSSocket): MeshPeer {
  const x509 = socket.getPeerX509Certificate();
  if (x509 === undefined) return { spiffeId: '', refusal: 'NO_CLIENT_CERTIFICATE' };
  const spiffeId = spiffeIdOf(x509);
  if (socket.authorized) return { spiffeId, refusal: null };
  // Typed as an Error; node sets the verify code string (`verifyError.code || .message`).
  const why: unknown = socket.authorizationError;
  return { spiffeId, refusal: typeof why === 'string' ? why : why instanceof Error ? why.message : 'UNTRUSTED_CERTIFICATE' };
}

/** The SPIFFE ID of the peer's certificate on a TLS socket; '' without one. */
export function peerSpiffeIdOf(socket: tls.TLSSocket): string {
  const x509 = socket.getPeerX509Certificate();
  return x509 === undefined ? '' : spiffeIdOf(x509);
}

/**
 * Options for `tls.connect` to a mesh endpoint (host and port added by the caller): client
 * certificate and bundle from `m`, ALPN `alpn`, the server's SPIFFE ID checked against
 * `cluster.peerIdentity`.
 */
export function meshClientOptions(m: IdentityMaterial, cluster: ClusterConfig, alpn: readonly string[]): tls.ConnectionOptions {
  let ctx = clientContexts.get(m);
  if (ctx === undefined) {
    ctx = tls.createSecureContext(secureContextOptions(m));
    clientContexts.set(m, ctx);
  }
  return {
    secureContext: ctx,
    ALPNProtocols: alpn.slice(),
    rejectUnauthorized: true,
    checkServerIdentity: identityChecker(cluster.peerIdentity),
  };
}

type ServerIdentityCheck = (host: string, cert: tls.PeerCertificate) => Error | undefined;
const checkers = new Map<string, ServerIdentityCheck>();

/**
 * node calls this only after the chain verified against the bundle. The returned error fails
 * the connect; its message is what the 502 says (no `code`, so dial() shows the message).
 */
function identityChecker(expected: string | null): ServerIdentityCheck {
  const key = expected ?? '';
  let check = checkers.get(key);
  if (check === undefined) {
    check = (_host, cert) => {
      const got = spiffeIdFromSan(cert.subjectaltname);
      if (got === '') return new Error(`peer identity mismatch: the server's certificate has no SPIFFE ID${expected === null ? '' : `, expected ${expected}`}`);
      if (expected !== null && got !== expected) return new Error(`peer identity mismatch: the server presented ${got}, expected ${expected}`);
      return undefined;
    };
    checkers.set(key, check);
  }
  return check;
}
