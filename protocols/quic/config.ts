/**
 * quiche Configs for Skiff's QUIC endpoints. A `QuicConfig` wraps one quiche Config (shared by
 * every connection made with it) plus the resolved settings the endpoint needs itself.
 *
 * Window sizing follows the frame model (DESIGN invariant 2): a stream's queue pauses its
 * source at 256 KiB, so a stream starts with a 256 KiB receive window that quiche may
 * auto-tune up to 1 MiB; the connection starts at 4 MiB and may grow to 16 MiB. Worst case per
 * connection is the connection window, whatever the stream count.
 */
import { QuicErrorCode, createQuicError, quiche, type QuicheConfig } from './binding.js';

export type CongestionControl = 'cubic' | 'reno' | 'bbr';

export interface QuicTransportOptions {
  /** ALPN protocols in preference order. Default `['h3']`. */
  alpn?: readonly string[];
  /** quiche's max_idle_timeout in ms (also bounds the handshake); 0 disables. Default 30,000. */
  maxIdleTimeoutMs?: number;
  /** Max UDP payload we send and accept (bytes). Default 1350 (fits any IPv4/IPv6 path MTU we expect). */
  maxUdpPayload?: number;
  /** Connection receive window at start (bytes). Default 4 MiB. */
  initialMaxData?: number;
  /** Receive window of streams we open (bidi) at start. Default 256 KiB. */
  initialMaxStreamDataBidiLocal?: number;
  /** Receive window of streams the peer opens (bidi) at start. Default 256 KiB. */
  initialMaxStreamDataBidiRemote?: number;
  /** Receive window of the peer's unidirectional streams at start. Default 256 KiB. */
  initialMaxStreamDataUni?: number;
  /** Bidi streams the peer may open at once. Default 128. */
  initialMaxStreamsBidi?: number;
  /** Uni streams the peer may open at once (HTTP/3 needs 3). Default 16. */
  initialMaxStreamsUni?: number;
  /** Upper bound of quiche's stream window auto-tuning. Default 1 MiB. */
  maxStreamWindow?: number;
  /** Upper bound of quiche's connection window auto-tuning. Default 16 MiB. */
  maxConnectionWindow?: number;
  /** active_connection_id_limit transport parameter. Default 2 (no migration, no CID rotation). */
  activeConnectionIdLimit?: number;
  /** Default 'cubic'. quiche in this binding does not know 'bbr2'. */
  congestionControl?: CongestionControl;
  /** GREASE values in the handshake. Default true. */
  grease?: boolean;
}

export interface QuicServerConfigOptions extends QuicTransportOptions {
  /** PEM certificate chain (leaf first). */
  certPem: string | Uint8Array;
  /** PEM private key. */
  keyPem: string | Uint8Array;
  /** PEM CA bundle for client certificates. With it, clients must present a certificate (mTLS). */
  clientCaPem?: string | Uint8Array;
  /**
   * With `clientCaPem`: true (default) lets BoringSSL verify the client's chain against it and
   * fail the handshake otherwise (the application never sees the connection). false: a
   * certificate is still required and its CertificateVerify signature checked, but any chain
   * is accepted; the application must then verify `peerCertificateChain` itself when the
   * connection is handed to it (`onConnection`) and close it if untrusted. Mesh listeners do
   * this to log the identity an untrusted peer presented (protocols/tls/mesh.ts).
   */
  verifyClientChain?: boolean;
}

export interface QuicClientConfigOptions extends QuicTransportOptions {
  /** PEM CA bundle to verify the server with. Without it, the system store is not used: set it. */
  caPem?: string | Uint8Array;
  /** Verify the server's certificate (chain, and the name we dialed). Default true. */
  verifyPeer?: boolean;
  /**
   * With `verifyPeer`: false verifies the chain against `caPem` but not the dialed name or IP
   * (the endpoint's IP SAN check is off; pass no DNS name as serverName to connect(), since
   * BoringSSL checks an SNI name). For callers that check the peer's identity themselves
   * (mesh clusters: the SPIFFE ID). Default true.
   */
  verifyPeerName?: boolean;
  /** Client certificate for mTLS (PEM), with `keyPem`. */
  certPem?: string | Uint8Array;
  keyPem?: string | Uint8Array;
}

export type QuicRole = 'server' | 'client';

/** A built configuration. Immutable after construction; share it between endpoints freely. */
export class QuicConfig {
  readonly role: QuicRole;
  readonly native: QuicheConfig;
  readonly alpn: readonly string[];
  readonly maxUdpPayload: number;
  readonly maxIdleTimeoutMs: number;
  /**
   * Server configs: client certificates are asked for. Client configs: the endpoint checks
   * that the server's certificate names the dialed IP (`verifyPeer` and `verifyPeerName`).
   */
  readonly verifyPeer: boolean;

  constructor(role: QuicRole, native: QuicheConfig, alpn: readonly string[], maxUdpPayload: number, maxIdleTimeoutMs: number, verifyPeer: boolean) {
    this.role = role;
    this.native = native;
    this.alpn = alpn;
    this.maxUdpPayload = maxUdpPayload;
    this.maxIdleTimeoutMs = maxIdleTimeoutMs;
    this.verifyPeer = verifyPeer;
  }
}

const KiB = 1024;
const MiB = 1024 * 1024;

/** The defaults above, in one place (the bench and tests print them). */
export const QUIC_DEFAULTS = {
  alpn: ['h3'] as readonly string[],
  maxIdleTimeoutMs: 30_000,
  maxUdpPayload: 1350,
  initialMaxData: 4 * MiB,
  initialMaxStreamDataBidiLocal: 256 * KiB,
  initialMaxStreamDataBidiRemote: 256 * KiB,
  initialMaxStreamDataUni: 256 * KiB,
  initialMaxStreamsBidi: 128,
  initialMaxStreamsUni: 16,
  maxStreamWindow: 1 * MiB,
  maxConnectionWindow: 16 * MiB,
  activeConnectionIdLimit: 2,
  congestionControl: 'cubic' as CongestionControl,
  grease: true,
} as const;

function toBytes(pem: string | Uint8Array): Uint8Array {
  return typeof pem === 'string' ? Buffer.from(pem, 'utf8') : pem;
}

function buildNative(verifyPeer: boolean, ca: Uint8Array | null, key: Uint8Array | null, cert: Uint8Array | null, verifyAllowFail = false): QuicheConfig {
  try {
    // verifyAllowFail=false: quiche/BoringSSL decides; true: a peer certificate is still
    // required, but a chain that does not verify is accepted (the application checks it).
    return quiche.Config.withBoringSslCtx(verifyPeer, verifyAllowFail, ca, key === null ? null : [key], cert === null ? null : [cert], null);
  } catch (err) {
    throw createQuicError(QuicErrorCode.InvalidArgument, `QUIC TLS configuration rejected: ${(err as Error).message}`, '', -1, false, err);
  }
}

function applyTransport(cfg: QuicheConfig, o: QuicTransportOptions): { alpn: readonly string[]; maxUdpPayload: number; maxIdleTimeoutMs: number } {
  const alpn = o.alpn ?? QUIC_DEFAULTS.alpn;
  if (alpn.length === 0) throw createQuicError(QuicErrorCode.InvalidArgument, 'QUIC config: alpn must name at least one protocol');
  const maxUdpPayload = o.maxUdpPayload ?? QUIC_DEFAULTS.maxUdpPayload;
  if (maxUdpPayload < 1200 || maxUdpPayload > 65527) {
    throw createQuicError(QuicErrorCode.InvalidArgument, `QUIC config: maxUdpPayload ${maxUdpPayload} outside 1200..65527`);
  }
  const maxIdleTimeoutMs = o.maxIdleTimeoutMs ?? QUIC_DEFAULTS.maxIdleTimeoutMs;
  cfg.setApplicationProtos([...alpn]);
  cfg.setMaxIdleTimeout(maxIdleTimeoutMs);
  cfg.setMaxRecvUdpPayloadSize(maxUdpPayload);
  cfg.setMaxSendUdpPayloadSize(maxUdpPayload);
  cfg.setInitialMaxData(o.initialMaxData ?? QUIC_DEFAULTS.initialMaxData);
  cfg.setInitialMaxStreamDataBidiLocal(o.initialMaxStreamDataBidiLocal ?? QUIC_DEFAULTS.initialMaxStreamDataBidiLocal);
  cfg.setInitialMaxStreamDataBidiRemote(o.initialMaxStreamDataBidiRemote ?? QUIC_DEFAULTS.initialMaxStreamDataBidiRemote);
  cfg.setInitialMaxStreamDataUni(o.initialMaxStreamDataUni ?? QUIC_DEFAULTS.initialMaxStreamDataUni);
  cfg.setInitialMaxStreamsBidi(o.initialMaxStreamsBidi ?? QUIC_DEFAULTS.initialMaxStreamsBidi);
  cfg.setInitialMaxStreamsUni(o.initialMaxStreamsUni ?? QUIC_DEFAULTS.initialMaxStreamsUni);
  cfg.setMaxStreamWindow(o.maxStreamWindow ?? QUIC_DEFAULTS.maxStreamWindow);
  cfg.setMaxConnectionWindow(o.maxConnectionWindow ?? QUIC_DEFAULTS.maxConnectionWindow);
  cfg.setActiveConnectionIdLimit(o.activeConnectionIdLimit ?? QUIC_DEFAULTS.activeConnectionIdLimit);
  // The endpoint has one socket and routes by our own CIDs; migration is not supported.
  cfg.setDisableActiveMigration(true);
  // The driver sends as soon as quiche produces a datagram and ignores SendInfo.at, so
  // quiche's pacing hints would only cost bookkeeping.
  cfg.enablePacing(false);
  cfg.grease(o.grease ?? QUIC_DEFAULTS.grease);
  try {
    cfg.setCcAlgorithmName(o.congestionControl ?? QUIC_DEFAULTS.congestionControl);
  } catch (err) {
    throw createQuicError(QuicErrorCode.InvalidArgument, `QUIC config: unknown congestion control ${String(o.congestionControl)}`, '', -1, false, err);
  }
  return { alpn, maxUdpPayload, maxIdleTimeoutMs };
}

/**
 * A server config from a PEM certificate chain and key; with `clientCaPem`, client
 * certificates are required (and verified by BoringSSL unless `verifyClientChain: false`).
 */
export function createServerConfig(o: QuicServerConfigOptions): QuicConfig {
  const verifyClients = o.clientCaPem !== undefined;
  const allowFail = verifyClients && o.verifyClientChain === false;
  const native = buildNative(verifyClients, verifyClients ? toBytes(o.clientCaPem as string | Uint8Array) : null, toBytes(o.keyPem), toBytes(o.certPem), allowFail);
  const t = applyTransport(native, o);
  return new QuicConfig('server', native, t.alpn, t.maxUdpPayload, t.maxIdleTimeoutMs, verifyClients);
}

/** A client config: the CA to verify servers with (or `verifyPeer: false`), optionally a client certificate. */
export function createClientConfig(o: QuicClientConfigOptions = {}): QuicConfig {
  const verifyPeer = o.verifyPeer ?? true;
  if ((o.certPem === undefined) !== (o.keyPem === undefined)) {
    throw createQuicError(QuicErrorCode.InvalidArgument, 'QUIC client config: certPem and keyPem go together');
  }
  const native = buildNative(
    verifyPeer,
    o.caPem === undefined ? null : toBytes(o.caPem),
    o.keyPem === undefined ? null : toBytes(o.keyPem),
    o.certPem === undefined ? null : toBytes(o.certPem),
  );
  const t = applyTransport(native, o);
  return new QuicConfig('client', native, t.alpn, t.maxUdpPayload, t.maxIdleTimeoutMs, verifyPeer && o.verifyPeerName !== false);
}
