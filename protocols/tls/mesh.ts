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
import { X509Certificate } from 'node:crypto';
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

// ---- QUIC (HTTP/3) mesh connections -------------------------------------------------------
//
// quiche gives the peer's chain as DER buffers and, for mesh listeners, is configured to
// accept any chain (protocols/quic/config.ts `verifyClientChain: false`, still requiring a
// certificate and its CertificateVerify signature), so that a refusal can be logged with the
// identity the peer presented, as on TCP. The chain is verified here instead.

/** Parsed trust bundle per material: parsed once per rotation, not per connection. */
const bundles = new WeakMap<IdentityMaterial, readonly X509Certificate[]>();
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const EKU_ANY = '2.5.29.37.0';
/** Intermediates followed at most (OpenSSL's default depth is 100; mesh chains have 0-2). */
const MAX_INTERMEDIATES = 8;

function bundleOf(m: IdentityMaterial): readonly X509Certificate[] {
  let roots = bundles.get(m);
  if (roots === undefined) {
    const parsed: X509Certificate[] = [];
    // IdentityStore validated the bundle (every block parses) before making `m`.
    for (const block of m.caPem.toString('latin1').match(PEM_CERT) ?? []) parsed.push(new X509Certificate(block));
    roots = parsed;
    bundles.set(m, roots);
  }
  return roots;
}

/** null when `c` is within its validity period at `now`, else OpenSSL's name for the problem. */
function validityProblem(c: X509Certificate, now: number): string | null {
  if (now < Date.parse(c.validFrom)) return 'CERT_NOT_YET_VALID';
  if (now > Date.parse(c.validTo)) return 'CERT_HAS_EXPIRED';
  return null;
}

function isSignedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/**
 * Verifies a client certificate chain (DER, leaf first: QuicConnection.peerCertificateChain)
 * against `m`'s trust bundle, as OpenSSL does for a TLS client: the leaf, within its validity
 * period and usable for client authentication (extended key usage clientAuth or any, when the
 * extension is present), is signed through the presented intermediates by a bundle CA; every
 * issuer on the path is a CA (basicConstraints) within its validity period and its signature
 * verifies (node:crypto `checkIssued` + `verify`). Not checked (as for TCP, where no CRLs are
 * configured either): revocation; also not name constraints or path length limits.
 * Returns the presented SPIFFE ID either way and OpenSSL-style refusal codes
 * (UNABLE_TO_VERIFY_LEAF_SIGNATURE, CERT_HAS_EXPIRED, ...), like `checkMeshPeer`.
 */
export function checkMeshChain(chain: readonly Buffer[], m: IdentityMaterial, now: number = Date.now()): MeshPeer {
  if (chain.length === 0) return { spiffeId: '', refusal: 'NO_CLIENT_CERTIFICATE' };
  const certs: X509Certificate[] = [];
  for (const der of chain) {
    try {
      certs.push(new X509Certificate(der));
    } catch {
      return { spiffeId: certs.length === 0 ? '' : spiffeIdOf(certs[0]), refusal: 'CERT_PARSE_ERROR' };
    }
  }
  const leaf = certs[0];
  const spiffeId = spiffeIdOf(leaf);
  const refuse = (refusal: string): MeshPeer => ({ spiffeId, refusal });
  const leafValidity = validityProblem(leaf, now);
  if (leafValidity !== null) return refuse(leafValidity);
  // node names the extended key usage list `keyUsage`; undefined without the extension.
  const eku = leaf.keyUsage as readonly string[] | undefined;
  if (eku !== undefined && !eku.includes(EKU_CLIENT_AUTH) && !eku.includes(EKU_ANY)) return refuse('UNSUPPORTED_CERTIFICATE_PURPOSE');
  const roots = bundleOf(m);
  const intermediates = certs.slice(1, 1 + MAX_INTERMEDIATES);
  let at = leaf;
  for (let depth = 0; depth <= intermediates.length; depth++) {
    let problem: string | null = null;
    for (const root of roots) {
      if (!isSignedBy(at, root)) continue;
      problem = root.ca ? validityProblem(root, now) : 'INVALID_CA';
      if (problem === null) return { spiffeId, refusal: null };
    }
    let next: X509Certificate | null = null;
    for (const c of intermediates) {
      if (c === at || !isSignedBy(at, c)) continue;
      const p = c.ca ? validityProblem(c, now) : 'INVALID_CA';
      if (p === null) {
        next = c;
        break;
      }
      problem ??= p;
    }
    if (next === null) return refuse(problem ?? (depth === 0 ? 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' : 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY'));
    at = next;
  }
  return refuse('CERT_CHAIN_TOO_LONG');
}

/**
 * The connect error text for a mesh server whose SPIFFE ID `got` ('' when its certificate has
 * none) is not `expected` (null: any SPIFFE ID from the bundle), the same text as the TCP
 * check's; null when it is acceptable. The chain itself was verified by the TLS stack.
 */
export function meshIdentityMismatch(got: string, expected: string | null): string | null {
  if (got === '') return `peer identity mismatch: the server's certificate has no SPIFFE ID${expected === null ? '' : `, expected ${expected}`}`;
  if (expected !== null && got !== expected) return `peer identity mismatch: the server presented ${got}, expected ${expected}`;
  return null;
}
