/**
 * The narrow, typed view of quiche's N-API binding (`@matrixai/quic` 2.0.9) that Skiff uses,
 * and the one mapping from the binding's thrown errors to `QuicError`.
 *
 * We import `@matrixai/quic/native/index.js`, not the package root: the root also loads the
 * library's QUICServer/QUICClient layer and its dependencies, which Skiff never uses.
 *
 * What the binding does, measured on this machine (Node 20, bench/quic-driver.ts method):
 * - Every quiche `Err` becomes a generic `Error` whose message is quiche's error name, with
 *   the code in parentheses for stream errors ("StreamReset(77)", "StreamStopped(3)",
 *   "InvalidStreamState(8)"). A throw costs 10-30 µs here (stack capture included), so hot
 *   paths avoid calls known to throw and the callers track stream state instead.
 * - `Done` is *not* thrown by `send`, `streamRecv` and `streamSend`: they return `null`.
 *   `streamShutdown` and `close` also return `null` for `Done` (nothing to do).
 * - `readable()` / `writable()` iterators cost ~5 µs to create and ~25 µs to walk even when
 *   empty; `streamReadable`, `isReadable`, `timeout`, `isClosed` cost 0.2-0.3 µs each.
 * - `send(buf)` into a buffer smaller than the path's max payload returns `null` as if idle.
 * - `recv` decrypts in place: the datagram passed in is scratch afterwards.
 */
import { quiche as nativeQuiche } from '@matrixai/quic/native/index.js';

export interface QuicheHostPort {
  host: string;
  port: number;
}

export interface QuicheRecvInfo {
  from: QuicheHostPort;
  to: QuicheHostPort;
}

/** quiche's `ConnectionError`: the CONNECTION_CLOSE a side sent (local) or received (peer). */
export interface QuicheConnectionError {
  isApp: boolean;
  errorCode: number;
  reason: Uint8Array;
}

export interface QuicheStats {
  recv: number;
  sent: number;
  lost: number;
  retrans: number;
  sentBytes: number;
  recvBytes: number;
  lostBytes: number;
  streamRetransBytes: number;
  peerMaxIdleTimeout: number;
  peerMaxUdpPayloadSize: number;
  peerInitialMaxData: number;
  peerInitialMaxStreamsBidi: number;
  peerInitialMaxStreamsUni: number;
}

export interface QuichePathStats {
  rtt: number;
  cwnd: number;
  deliveryRate: number;
}

/** The subset of quiche's `Config` Skiff sets (see config.ts). One Config serves many connections. */
export interface QuicheConfig {
  verifyPeer(verify: boolean): void;
  grease(grease: boolean): void;
  setApplicationProtos(protos: string[]): void;
  setMaxIdleTimeout(ms: number): void;
  setMaxRecvUdpPayloadSize(size: number): void;
  setMaxSendUdpPayloadSize(size: number): void;
  setInitialMaxData(v: number): void;
  setInitialMaxStreamDataBidiLocal(v: number): void;
  setInitialMaxStreamDataBidiRemote(v: number): void;
  setInitialMaxStreamDataUni(v: number): void;
  setInitialMaxStreamsBidi(v: number): void;
  setInitialMaxStreamsUni(v: number): void;
  setActiveConnectionIdLimit(v: number): void;
  setDisableActiveMigration(v: boolean): void;
  setCcAlgorithmName(name: string): void;
  enablePacing(v: boolean): void;
  enableHystart(v: boolean): void;
  setMaxStreamWindow(v: number): void;
  setMaxConnectionWindow(v: number): void;
}

/** The subset of quiche's `Connection` Skiff calls. Stream ids are plain numbers (< 2^53). */
export interface QuicheConnection {
  recv(data: Uint8Array, info: QuicheRecvInfo): number;
  /** `[bytes written, SendInfo]`, or null when there is nothing to send (quiche's Done). */
  send(out: Uint8Array): [number, unknown] | null;
  /** `[bytes read, fin]`, or null when the stream has no data (Done). Throws StreamReset(code). */
  streamRecv(streamId: number, out: Uint8Array): [number, boolean] | null;
  /** Bytes accepted (may be fewer than offered), or null when none fit (Done). */
  streamSend(streamId: number, data: Uint8Array, fin: boolean): number | null;
  streamShutdown(streamId: number, direction: number, err: number): void | null;
  streamCapacity(streamId: number): number;
  streamReadable(streamId: number): boolean;
  streamFinished(streamId: number): boolean;
  peerStreamsLeftBidi(): number;
  peerStreamsLeftUni(): number;
  readable(): Iterable<number>;
  isReadable(): boolean;
  timeout(): number | null;
  onTimeout(): void;
  close(app: boolean, err: number, reason: Uint8Array): void | null;
  applicationProto(): Uint8Array;
  serverName(): string | null;
  peerCertChain(): Uint8Array[] | null;
  isEstablished(): boolean;
  isDraining(): boolean;
  isClosed(): boolean;
  isTimedOut(): boolean;
  peerError(): QuicheConnectionError | null;
  localError(): QuicheConnectionError | null;
  stats(): QuicheStats;
  pathStats(): QuichePathStats[];
  maxSendUdpPayloadSize(): number;
}

export interface QuicheBinding {
  readonly MAX_CONN_ID_LEN: number;
  readonly MIN_CLIENT_INITIAL_LEN: number;
  readonly PROTOCOL_VERSION: number;
  readonly CRYPTO_ERROR_START: number;
  readonly CRYPTO_ERROR_STOP: number;
  negotiateVersion(scid: Uint8Array, dcid: Uint8Array, out: Uint8Array): number;
  versionIsSupported(version: number): boolean;
  readonly Config: {
    withBoringSslCtx(
      verifyPeer: boolean,
      verifyAllowFail: boolean,
      ca: Uint8Array | null,
      keys: Uint8Array[] | null,
      certs: Uint8Array[] | null,
      sigalgs: string | null,
    ): QuicheConfig;
  };
  readonly Connection: {
    connect(serverName: string | null, scid: Uint8Array, local: QuicheHostPort, remote: QuicheHostPort, config: QuicheConfig): QuicheConnection;
    accept(scid: Uint8Array, odcid: Uint8Array | null, local: QuicheHostPort, remote: QuicheHostPort, config: QuicheConfig): QuicheConnection;
  };
}

/** The binding, checked against the package's own declarations at compile time. */
export const quiche: QuicheBinding = nativeQuiche;

/** quiche's `Shutdown` values. */
export const ShutdownDirection = { Read: 0, Write: 1 } as const;

/** QUIC transport error codes (RFC 9000 section 20.1) Skiff sends or recognises. */
export const TransportErrorCode = {
  NoError: 0x0,
  InternalError: 0x1,
  ConnectionRefused: 0x2,
  ProtocolViolation: 0xa,
  ApplicationError: 0xc,
} as const;

/** TLS alert `bad_certificate` as a QUIC crypto error (0x100 + 42). */
export const CRYPTO_BAD_CERTIFICATE = 0x12a;

// ---- errors ----------------------------------------------------------------------------

/** Stable codes of `QuicError`. Stream-level ones come from quiche's names; the rest from close paths. */
export const QuicErrorCode = {
  /** The peer reset the stream (RESET_STREAM); `appCode` is its code. */
  StreamReset: 'QUIC_ERR_STREAM_RESET',
  /** The peer asked us to stop sending (STOP_SENDING); `appCode` is its code. */
  StreamStopped: 'QUIC_ERR_STREAM_STOPPED',
  /** The stream does not exist (any more) or the direction is wrong for it. */
  InvalidStreamState: 'QUIC_ERR_INVALID_STREAM_STATE',
  /** Opening the stream would exceed the peer's stream limit. */
  StreamLimit: 'QUIC_ERR_STREAM_LIMIT',
  /** Data after a FIN, or a FIN at a different offset. */
  FinalSize: 'QUIC_ERR_FINAL_SIZE',
  FlowControl: 'QUIC_ERR_FLOW_CONTROL',
  /** TLS handshake or certificate verification failed. */
  Tls: 'QUIC_ERR_TLS',
  /** A malformed packet or frame, a protocol violation by the peer. */
  Protocol: 'QUIC_ERR_PROTOCOL',
  /** The peer closed the connection with a non-zero code (`appCode`, `isApp`). */
  PeerClosed: 'QUIC_ERR_PEER_CLOSED',
  /** quiche closed the connection on our side for a transport error (`appCode`). */
  LocalTransport: 'QUIC_ERR_LOCAL_TRANSPORT',
  /** Idle timeout (quiche's max_idle_timeout, also during the handshake). */
  IdleTimeout: 'QUIC_ERR_IDLE_TIMEOUT',
  /** connect(): no handshake within the caller's deadline. */
  ConnectTimeout: 'QUIC_ERR_CONNECT_TIMEOUT',
  /** ICMP unreachable on a connected socket (ECONNREFUSED) or a socket error. */
  Unreachable: 'QUIC_ERR_UNREACHABLE',
  /** The peer's certificate does not name the IP address we dialed. */
  CertificateMismatch: 'QUIC_ERR_CERTIFICATE_MISMATCH',
  /** The endpoint was closed (or refused the connection: too many connections). */
  EndpointClosed: 'QUIC_ERR_ENDPOINT_CLOSED',
  /** A bad argument or configuration (host not an IP literal, unknown congestion control). */
  InvalidArgument: 'QUIC_ERR_INVALID_ARGUMENT',
  /** A handler threw, or quiche failed in a way Skiff does not expect. */
  Internal: 'QUIC_ERR_INTERNAL',
} as const;
export type QuicErrorCode = (typeof QuicErrorCode)[keyof typeof QuicErrorCode];

/**
 * The QUIC driver's error. `quicheName` is quiche's error name when the error came from the
 * binding ("StreamReset", "TlsFail", ...), else ''. `appCode` is the stream or connection
 * error code when there is one, else -1. Built without a stack trace (see createQuicError).
 */
export class QuicError extends Error {
  readonly code: QuicErrorCode;
  readonly quicheName: string;
  readonly appCode: number;
  readonly isApp: boolean;
  override readonly cause: unknown;

  constructor(code: QuicErrorCode, message: string, quicheName = '', appCode = -1, isApp = false, cause: unknown = null) {
    super(message);
    this.name = 'QuicError';
    this.code = code;
    this.quicheName = quicheName;
    this.appCode = appCode;
    this.isApp = isApp;
    this.cause = cause;
  }
}

/**
 * A QuicError without a stack trace: capturing one costs ~6 µs here, and these errors describe
 * the peer's behaviour, not a place in our code.
 */
export function createQuicError(code: QuicErrorCode, message: string, quicheName = '', appCode = -1, isApp = false, cause: unknown = null): QuicError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  const err = new QuicError(code, message, quicheName, appCode, isApp, cause);
  Error.stackTraceLimit = limit;
  return err;
}

const CODE_BY_QUICHE_NAME: Readonly<Record<string, QuicErrorCode>> = {
  StreamReset: QuicErrorCode.StreamReset,
  StreamStopped: QuicErrorCode.StreamStopped,
  InvalidStreamState: QuicErrorCode.InvalidStreamState,
  StreamLimit: QuicErrorCode.StreamLimit,
  FinalSize: QuicErrorCode.FinalSize,
  FlowControl: QuicErrorCode.FlowControl,
  TlsFail: QuicErrorCode.Tls,
  CryptoFail: QuicErrorCode.Tls,
  UnknownVersion: QuicErrorCode.Protocol,
  InvalidFrame: QuicErrorCode.Protocol,
  InvalidPacket: QuicErrorCode.Protocol,
  InvalidState: QuicErrorCode.Protocol,
  InvalidTransportParam: QuicErrorCode.Protocol,
  BufferTooShort: QuicErrorCode.Protocol,
  IdLimit: QuicErrorCode.Protocol,
  OutOfIdentifiers: QuicErrorCode.Protocol,
  KeyUpdate: QuicErrorCode.Protocol,
  CryptoBufferExceeded: QuicErrorCode.Protocol,
  CongestionControl: QuicErrorCode.InvalidArgument,
};

const NAME_PATTERN = /^([A-Za-z]+)(?:\((\d+)\))?$/;

/**
 * Maps anything the binding threw to a QuicError; returns null for quiche's `Done`, which is
 * not an error ("nothing to do"). Unknown names become `Internal` with the message kept.
 */
export function fromQuicheError(err: unknown): QuicError | null {
  const message = err instanceof Error ? err.message : String(err);
  const m = NAME_PATTERN.exec(message);
  if (m === null) return createQuicError(QuicErrorCode.Internal, `quiche: ${message}`, '', -1, false, err);
  const name = m[1] as string;
  if (name === 'Done') return null;
  const code = CODE_BY_QUICHE_NAME[name] ?? QuicErrorCode.Internal;
  const appCode = m[2] === undefined ? -1 : Number(m[2]);
  return createQuicError(code, `quiche: ${message}`, name, appCode, false, err);
}

/** True when the CONNECTION_CLOSE code is a TLS alert (crypto error range 0x100-0x1ff). */
export function isCryptoErrorCode(code: number): boolean {
  return code >= quiche.CRYPTO_ERROR_START && code <= quiche.CRYPTO_ERROR_STOP;
}
