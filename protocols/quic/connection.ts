/**
 * QuicConnection: the application-facing side of one QUIC connection. Event-driven through one
 * handler object per connection (`QuicConnectionHandler`): no Promise, event object or web
 * stream per packet or per chunk (STYLE "callbacks plus a controller for bodies").
 *
 * Who calls what:
 * - The endpoint (endpoint.ts) feeds datagrams to quiche and, once per tick for every
 *   connection it touched, calls `processStreams()` and then sends what quiche produced.
 *   Handler callbacks therefore run inside the endpoint's flush, never re-entrantly from
 *   `streamWrite` and friends.
 * - The application (HTTP/3 later) calls `streamWrite`, `streamShutdown`, `pauseStream`,
 *   `resumeStream`, `openBidi`, `openUni` and `close` at any time; each marks the connection
 *   dirty so its datagrams leave in the same tick's flush.
 *
 * Stream discovery without quiche's `readable()` iterator (~15 µs to create plus ~2 µs per
 * stream on this machine, against ~0.35 µs for `streamReadable(id)`):
 * the connection tracks the streams it reads (`reading`), asks `streamReadable(id)` for each
 * (~0.2 µs) when `isReadable()` says anything is readable, probes the next peer stream ids in
 * order, and falls back to the iterator only when quiche still reports readable data that no
 * known stream explains (streams that arrived out of order).
 */
import {
  QuicErrorCode,
  ShutdownDirection,
  TransportErrorCode,
  createQuicError,
  fromQuicheError,
  isCryptoErrorCode,
  type QuicError,
  type QuicheConnection,
  type QuicheRecvInfo,
  type QuicheStats,
} from './binding.js';

/**
 * The application's side of a connection. Every method runs inside the endpoint's flush.
 *
 * `onStreamData`'s `data` may be a view into a slab the endpoint reuses for the next read
 * (the endpoint's default, `ownedStreamData: false`): consume it or copy it before returning.
 * With `ownedStreamData: true` the endpoint hands out views that are never overwritten.
 */
export interface QuicConnectionHandler {
  /** The handshake completed (client: before connect() resolves; server: right after onConnection). */
  onEstablished(conn: QuicConnection): void;
  /** Stream bytes in order. `fin` true: this is the last call for the stream's receive side (data may be empty). */
  onStreamData(conn: QuicConnection, streamId: number, data: Buffer, fin: boolean): void;
  /** The peer reset its sending side (RESET_STREAM) with `errorCode`; no more data will come. */
  onStreamReset(conn: QuicConnection, streamId: number, errorCode: number): void;
  /**
   * The peer sent STOP_SENDING with `errorCode`; quiche has reset our sending side. Detected
   * when a write is attempted or while the stream waits for capacity (quiche offers no event
   * for a stream that is neither written nor blocked).
   */
  onStreamStopSending(conn: QuicConnection, streamId: number, errorCode: number): void;
  /** A stream whose last `streamWrite` came up short has room again. */
  onStreamWritable(conn: QuicConnection, streamId: number): void;
  /** The connection is gone (after draining). `error` is null for a clean close (local close(), or the peer closing with code 0). */
  onClosed(conn: QuicConnection, error: QuicError | null): void;
}

/** What a connection needs from its endpoint. */
export interface QuicConnectionOwner {
  /** Schedule this connection for the tick's flush (idempotent per tick). */
  markDirty(conn: QuicConnection): void;
  /** A buffer to `streamRecv` into (at least 16 KiB). */
  readWindow(): Buffer;
  /** The data handed to onStreamData for `n` bytes read into the last readWindow(). */
  takeRead(window: Buffer, n: number): Buffer;
}

export const ConnectionState = {
  Handshaking: 'handshaking',
  Established: 'established',
  /** close() was called or quiche is closing/draining; onClosed follows when quiche says closed. */
  Closing: 'closing',
  Closed: 'closed',
} as const;
export type ConnectionState = (typeof ConnectionState)[keyof typeof ConnectionState];

/** How the connection ended, for logs and pools. */
export interface QuicCloseInfo {
  readonly byPeer: boolean;
  readonly isApp: boolean;
  readonly code: number;
  readonly reason: string;
  readonly timedOut: boolean;
}

export type StreamDirection = 'read' | 'write';

export interface ConnectWaiter {
  resolve(conn: QuicConnection): void;
  reject(err: QuicError): void;
}

/** Bound on stream discovery probes per flush; streams past it are found on later flushes. */
const MAX_PROBES = 1024;
/**
 * onStreamWritable fires when capacity reaches min(bytes the writer still holds, this). It
 * must not exceed quiche's minimum congestion window (2 datagrams of at least 1,200 bytes):
 * with nothing in flight the capacity is the window, and no ACK comes to re-check it, so a
 * larger threshold can stall a writer until the idle timeout (seen with 16 KiB against a
 * 16,200-byte window: HTTP/3 responses over ~15 KB stalled on some new connections).
 */
const WRITABLE_LOW_WATER = 2 * 1200;

/** A no-op handler: the default until the application sets its own. */
export const NOOP_HANDLER: QuicConnectionHandler = {
  onEstablished() {},
  onStreamData() {},
  onStreamReset() {},
  onStreamStopSending() {},
  onStreamWritable() {},
  onClosed() {},
};

export class QuicConnection {
  /** The application's handler. Set it in the server's onConnection or before connect() resolves. */
  handler: QuicConnectionHandler;
  /** A slot for the application (HTTP/3 session object); the driver never reads it. */
  context: unknown;
  readonly isServer: boolean;
  /** Our source connection id (16 bytes); the peer addresses us with it. */
  readonly scid: Buffer;
  /** @internal table key of scid (packet.ts cidKey). */
  readonly scidKey: number;
  /** @internal the client's original DCID as a table key until the handshake completes (server only). */
  odcidKey: string | null;
  readonly remoteHost: string;
  readonly remotePort: number;
  /** @internal reused for every recv() of this connection. */
  readonly recvInfo: QuicheRecvInfo;
  /** @internal */
  native: QuicheConnection | null;
  state: ConnectionState;
  /** @internal absolute quiche deadline (performance.now() ms); Infinity when none. */
  deadline: number;
  /** @internal */
  isDirty: boolean;
  /** The last stream-level failure a method reported with -1/false (for diagnostics). */
  lastStreamError: QuicError | null;
  /** Set when the connection is closed. */
  closeInfo: QuicCloseInfo | null;
  /** @internal the IP literal a client dialed, checked against the certificate's IP SANs. */
  readonly dialedIp: string | null;
  /** @internal */
  waiter: ConnectWaiter | null;
  /** @internal the handler saw onEstablished, so it gets onClosed. */
  wasEstablished: boolean;
  /**
   * @internal A short-header (1-RTT) packet arrived after the handshake completed: for a
   * client, the server has confirmed the handshake (its HANDSHAKE_DONE rides in such a packet).
   */
  hasShortHeader: boolean;
  /** @internal Datagrams sent since the connection started closing (bug guard, see endpoint). */
  closingSends: number;

  /**
   * @internal Set by the endpoint while the flush that completed the handshake has not sent
   * yet. A close requested then waits for that send: once quiche has a close pending it no
   * longer sends the client's Finished, and the server, still handshaking, cannot read the
   * 1-RTT CONNECTION_CLOSE that goes instead (checked on the binding: the server never
   * learns, and idles out).
   */
  isCloseHeld: boolean;
  /** @internal A close held by isCloseHeld: [isApp, code, reason]. */
  heldClose: [boolean, number, string] | null;

  private readonly owner: QuicConnectionOwner;
  private closeError: QuicError | null;
  private isCloseRequested: boolean;
  private alpnValue: string;
  private peerChain: Buffer[] | null;
  /** Streams whose receive side is open and known to us. */
  private readonly reading: Set<number>;
  private paused: Set<number> | null;
  /** Writers waiting for capacity: stream id -> bytes of capacity that wakes them. */
  private blocked: Map<number, number> | null;
  /** Pending STOP_SENDING notifications found by streamWrite: [id, code, id, code, ...]. */
  private stops: number[] | null;
  /** Peer stream ids found above the probe frontier (out of order). */
  private ahead: Set<number> | null;
  private nextPeerBidi: number;
  private nextPeerUni: number;
  private nextLocalBidi: number;
  private nextLocalUni: number;
  /** Local streams quiche has created (highest written index + 1), per direction type. */
  private localBidiWritten: number;
  private localUniWritten: number;

  constructor(
    owner: QuicConnectionOwner,
    native: QuicheConnection,
    isServer: boolean,
    scid: Buffer,
    scidKey: number,
    localHost: string,
    localPort: number,
    remoteHost: string,
    remotePort: number,
    dialedIp: string | null,
    handler: QuicConnectionHandler,
  ) {
    this.handler = handler;
    this.context = null;
    this.isServer = isServer;
    this.scid = scid;
    this.scidKey = scidKey;
    this.odcidKey = null;
    this.remoteHost = remoteHost;
    this.remotePort = remotePort;
    this.recvInfo = { from: { host: remoteHost, port: remotePort }, to: { host: localHost, port: localPort } };
    this.native = native;
    this.state = ConnectionState.Handshaking;
    this.deadline = Infinity;
    this.isDirty = false;
    this.lastStreamError = null;
    this.closeInfo = null;
    this.dialedIp = dialedIp;
    this.waiter = null;
    this.wasEstablished = false;
    this.hasShortHeader = false;
    this.closingSends = 0;
    this.isCloseHeld = false;
    this.heldClose = null;
    this.owner = owner;
    this.closeError = null;
    this.isCloseRequested = false;
    this.alpnValue = '';
    this.peerChain = null;
    this.reading = new Set();
    this.paused = null;
    this.blocked = null;
    this.stops = null;
    this.ahead = null;
    // RFC 9000 section 2.1: bit 0 = initiator (0 client, 1 server), bit 1 = uni.
    this.nextPeerBidi = isServer ? 0 : 1;
    this.nextPeerUni = isServer ? 2 : 3;
    this.nextLocalBidi = isServer ? 1 : 0;
    this.nextLocalUni = isServer ? 3 : 2;
    this.localBidiWritten = 0;
    this.localUniWritten = 0;
  }

  // ---- application API -----------------------------------------------------------------

  get isEstablished(): boolean {
    return this.state === ConnectionState.Established;
  }

  /** True once quiche is draining (a CONNECTION_CLOSE was sent or received): take it out of pools. */
  get isDraining(): boolean {
    return this.native === null || this.state === ConnectionState.Closing || this.native.isDraining();
  }

  /** The negotiated ALPN protocol ('' before establishment). */
  get alpn(): string {
    return this.alpnValue;
  }

  /**
   * The peer's certificate chain as DER buffers, leaf first; empty when the peer sent none
   * (a server that does not ask for client certificates). Parse with node:crypto's
   * X509Certificate (e.g. `subjectAltName` for a SPIFFE URI). Cached after the first call.
   */
  get peerCertificateChain(): readonly Buffer[] {
    if (this.peerChain === null) {
      const raw = this.native === null ? null : this.native.peerCertChain();
      this.peerChain = raw === null ? [] : raw.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength));
    }
    return this.peerChain;
  }

  /** quiche's counters (allocates; not for per-packet use). Null once closed. */
  stats(): QuicheStats | null {
    return this.native === null ? null : this.native.stats();
  }

  /** Smoothed RTT in ms from quiche's path stats (allocates). -1 once closed. */
  rttMs(): number {
    if (this.native === null) return -1;
    const paths = this.native.pathStats();
    return paths.length === 0 ? -1 : (paths[0] as { rtt: number }).rtt;
  }

  /**
   * Bidi streams we may still open under the peer's limit (pool admission); 0 when not
   * established. quiche creates a stream at its first write and counts opened streams by the
   * highest id written, so ids handed out by openBidi() but not written yet are subtracted here
   * (an empty write per openBidi() to create it at once cost a binding call per request).
   */
  peerStreamsLeftBidi(): number {
    if (this.native === null || this.state !== ConnectionState.Established) return 0;
    return this.native.peerStreamsLeftBidi() - (((this.nextLocalBidi - (this.isServer ? 1 : 0)) >> 2) - this.localBidiWritten);
  }

  peerStreamsLeftUni(): number {
    if (this.native === null || this.state !== ConnectionState.Established) return 0;
    return this.native.peerStreamsLeftUni() - (((this.nextLocalUni - (this.isServer ? 3 : 2)) >> 2) - this.localUniWritten);
  }

  /**
   * Opens a bidirectional stream (ids per RFC 9000: client 0, 4, 8, ...; server 1, 5, 9, ...)
   * and returns its id, or -1 when not established or the peer's stream limit is reached.
   * Its receive side is read like any other stream.
   */
  openBidi(): number {
    if (this.peerStreamsLeftBidi() <= 0) return -1;
    const id = this.nextLocalBidi;
    this.nextLocalBidi += 4;
    this.reading.add(id);
    return id;
  }

  /** Opens a unidirectional (send-only) stream: client 2, 6, 10, ...; server 3, 7, 11, ... -1 as for openBidi. */
  openUni(): number {
    if (this.peerStreamsLeftUni() <= 0) return -1;
    const id = this.nextLocalUni;
    this.nextLocalUni += 4;
    return id;
  }

  /**
   * Offers `data` (and FIN when `fin`) to the stream. Returns the bytes quiche accepted:
   * fewer than `data.length` when flow control or the congestion window is short, in which
   * case FIN was not applied, the caller keeps the rest and waits for onStreamWritable (the
   * frame model's pauseSource/resumeSource). Returns -1 when the stream cannot be written
   * (stopped by the peer, reset, finished, unknown, connection not established); the reason
   * is in `lastStreamError` and a STOP_SENDING is also delivered to onStreamStopSending.
   * quiche copies what it accepts: `data` is the caller's again on return.
   */
  streamWrite(streamId: number, data: Uint8Array, fin: boolean): number {
    const native = this.native;
    if (native === null || this.state !== ConnectionState.Established) return -1;
    let n: number | null;
    try {
      n = native.streamSend(streamId, data, fin);
    } catch (err) {
      return this.onSendError(streamId, err);
    }
    if (n === null) n = 0;
    this.noteLocalWrite(streamId);
    if (n < data.length) {
      const left = data.length - n;
      if (this.blocked === null) this.blocked = new Map();
      this.blocked.set(streamId, left < WRITABLE_LOW_WATER ? left : WRITABLE_LOW_WATER);
    }
    if (!this.isDirty) this.owner.markDirty(this);
    return n;
  }

  /**
   * True when quiche no longer holds `streamId` for delivery: the stream was collected
   * (everything we sent on it, FIN included, was acknowledged and everything received was
   * read), the peer stopped it, or the connection is gone. False while quiche keeps it. A
   * draining server asks this before CONNECTION_CLOSE, which would discard what is still
   * unacknowledged. quiche answers by throwing (InvalidStreamState, StreamStopped), so a true
   * costs an exception: for the drain, not per request.
   */
  isStreamSettled(streamId: number): boolean {
    const native = this.native;
    if (native === null || this.state !== ConnectionState.Established) return true;
    try {
      native.streamCapacity(streamId);
      return false;
    } catch {
      return true;
    }
  }

  /**
   * Ends one direction of a stream abruptly: 'write' sends RESET_STREAM(code), 'read' sends
   * STOP_SENDING(code) and discards what quiche buffered. Returns false when there was nothing
   * to shut down (already done, unknown stream).
   */
  streamShutdown(streamId: number, direction: StreamDirection, code: number): boolean {
    const native = this.native;
    if (native === null || this.state === ConnectionState.Closed) return false;
    let r: void | null;
    try {
      r = native.streamShutdown(streamId, direction === 'read' ? ShutdownDirection.Read : ShutdownDirection.Write, code);
    } catch (err) {
      this.lastStreamError = fromQuicheError(err);
      return false;
    }
    if (direction === 'read') {
      this.reading.delete(streamId);
      if (this.paused !== null) this.paused.delete(streamId);
    } else if (this.blocked !== null) {
      this.blocked.delete(streamId);
    }
    if (!this.isDirty) this.owner.markDirty(this);
    return r !== null;
  }

  /**
   * Stops reading the stream out of quiche: its bytes stay in quiche's buffer, the receive
   * window stops moving and the peer is held back (inbound backpressure). Idempotent.
   */
  pauseStream(streamId: number): void {
    if (this.paused === null) this.paused = new Set();
    this.paused.add(streamId);
  }

  /** Undoes pauseStream; buffered data is delivered in this tick's flush. */
  resumeStream(streamId: number): void {
    if (this.paused === null || !this.paused.delete(streamId)) return;
    if (this.native !== null && !this.isDirty) this.owner.markDirty(this);
  }

  isStreamPaused(streamId: number): boolean {
    return this.paused !== null && this.paused.has(streamId);
  }

  /**
   * Graceful close: sends an application CONNECTION_CLOSE with `code` and `reason`, then
   * drains (quiche's 3 x PTO) before onClosed(conn, null). Idempotent.
   */
  close(code = 0, reason = ''): void {
    const native = this.native;
    if (native === null || this.state === ConnectionState.Closing || this.state === ConnectionState.Closed) return;
    // An application CONNECTION_CLOSE may only travel in 1-RTT packets. Before the handshake
    // is confirmed quiche keeps choosing Handshake packets and never sends it: it loops on
    // send() without ever draining (seen in bench/quic-driver.ts; cloudflare/quiche#1118 is the
    // server-side variant). RFC 9000 section 10.2.3: send a transport CONNECTION_CLOSE with
    // APPLICATION_ERROR instead; the peer then sees 0xc, not `code`.
    const isConfirmed = this.state === ConnectionState.Established && (this.isServer || this.hasShortHeader);
    this.isCloseRequested = true;
    this.state = ConnectionState.Closing;
    this.closeNative(isConfirmed, isConfirmed ? code : TransportErrorCode.ApplicationError, reason);
  }

  // ---- endpoint side (internal) --------------------------------------------------------

  /** @internal Closes with a transport error and keeps `error` for onClosed. */
  fail(error: QuicError, transportCode: number): void {
    const native = this.native;
    if (native === null || this.state === ConnectionState.Closed) return;
    if (this.closeError === null) this.closeError = error;
    this.state = ConnectionState.Closing;
    this.closeNative(false, transportCode, error.code);
  }

  /** @internal Applies a held close (the endpoint sends right after). */
  releaseClose(): void {
    this.isCloseHeld = false;
    const held = this.heldClose;
    if (held === null) return;
    this.heldClose = null;
    this.closeNative(held[0], held[1], held[2]);
  }

  private closeNative(isApp: boolean, code: number, reason: string): void {
    const native = this.native;
    if (native === null) return;
    if (this.isCloseHeld) {
      if (this.heldClose === null) this.heldClose = [isApp, code, reason];
      return;
    }
    try {
      native.close(isApp, code, Buffer.from(reason));
    } catch {
      // quiche refuses only when already closed; the flush finds out.
    }
    if (!this.isDirty) this.owner.markDirty(this);
  }

  /** @internal The handshake just completed (the endpoint checked isEstablished()). */
  markEstablished(): void {
    const native = this.native as QuicheConnection;
    this.state = ConnectionState.Established;
    this.alpnValue = Buffer.from(native.applicationProto()).toString('latin1');
  }

  /**
   * @internal Delivers stream events for this flush: STOP_SENDING found by writes, blocked
   * writers that have room, then readable streams. Runs only while established.
   */
  processStreams(): void {
    if (this.stops !== null) this.deliverStops();
    if (this.blocked !== null && this.blocked.size > 0) this.checkBlocked();
    const native = this.native;
    if (native === null || this.state !== ConnectionState.Established || !native.isReadable()) return;
    const paused = this.paused;
    for (const id of this.reading) {
      if (paused !== null && paused.has(id)) continue;
      if (native.streamReadable(id)) {
        this.drain(native, id);
        if (this.state !== ConnectionState.Established) return;
        // Nothing else readable (new peer streams included): skip the rest of the scan. Streams
        // are scanned in the order they were opened, which is roughly the order they finish.
        if (!native.isReadable()) return;
      }
    }
    this.nextPeerBidi = this.probe(native, this.nextPeerBidi);
    this.nextPeerUni = this.probe(native, this.nextPeerUni);
    if (this.state !== ConnectionState.Established) return;
    // Readable data no known stream explains: a peer stream above a gap (reordering or loss).
    // quiche's readable() walk costs ~15 µs plus ~2 µs per stream here, so only then.
    if (native.isReadable() && !this.hasReadablePaused(native)) this.discover(native);
  }

  /** @internal quiche says closed: compute the outcome once, drop the native connection. */
  finish(): QuicError | null {
    const native = this.native;
    if (native === null) return this.closeError;
    let result: QuicError | null = this.closeError;
    const peer = native.peerError();
    const local = native.localError();
    const timedOut = native.isTimedOut();
    const info = peer ?? local;
    this.closeInfo = {
      byPeer: peer !== null,
      isApp: info === null ? false : info.isApp,
      code: info === null ? 0 : info.errorCode,
      reason: info === null ? '' : Buffer.from(info.reason).toString('utf8'),
      timedOut,
    };
    if (result === null && !this.isCloseRequested) {
      if (peer !== null) {
        if (peer.errorCode !== 0) {
          const code = !peer.isApp && isCryptoErrorCode(peer.errorCode) ? QuicErrorCode.Tls : QuicErrorCode.PeerClosed;
          result = createQuicError(code, `peer closed the connection (${peer.isApp ? 'application' : 'transport'} code 0x${peer.errorCode.toString(16)})`, '', peer.errorCode, peer.isApp);
        }
      } else if (local !== null) {
        if (local.errorCode !== 0 || local.isApp) {
          const code = !local.isApp && isCryptoErrorCode(local.errorCode) ? QuicErrorCode.Tls : QuicErrorCode.LocalTransport;
          result = createQuicError(code, `connection closed by quiche (transport code 0x${local.errorCode.toString(16)})`, '', local.errorCode, local.isApp);
        }
      } else if (timedOut) {
        result = createQuicError(QuicErrorCode.IdleTimeout, 'QUIC idle timeout');
      }
    }
    this.closeError = result;
    this.state = ConnectionState.Closed;
    this.native = null;
    this.deadline = Infinity;
    this.reading.clear();
    this.paused = null;
    this.blocked = null;
    this.stops = null;
    this.ahead = null;
    return result;
  }

  /** @internal A handler threw: close the connection (transport INTERNAL_ERROR) instead of unwinding the endpoint's flush. */
  onHandlerError(err: unknown): void {
    this.fail(createQuicError(QuicErrorCode.Internal, `QUIC connection handler threw: ${(err as Error)?.message ?? String(err)}`, '', -1, false, err), TransportErrorCode.InternalError);
  }

  // ---- private -------------------------------------------------------------------------

  /** Keeps the count of local streams quiche knows (see peerStreamsLeftBidi). */
  private noteLocalWrite(id: number): void {
    const kind = id % 4;
    const n = Math.floor(id / 4) + 1;
    if (kind === (this.isServer ? 1 : 0)) {
      if (n > this.localBidiWritten) this.localBidiWritten = n;
    } else if (kind === (this.isServer ? 3 : 2)) {
      if (n > this.localUniWritten) this.localUniWritten = n;
    }
  }

  private onSendError(streamId: number, err: unknown): number {
    const e = fromQuicheError(err);
    if (e === null) return 0;
    this.lastStreamError = e;
    if (this.blocked !== null) this.blocked.delete(streamId);
    if (e.code === QuicErrorCode.StreamStopped) {
      if (this.stops === null) this.stops = [];
      this.stops.push(streamId, e.appCode);
      if (!this.isDirty) this.owner.markDirty(this);
    }
    return -1;
  }

  private deliverStops(): void {
    const stops = this.stops as number[];
    this.stops = null;
    for (let i = 0; i < stops.length && this.state === ConnectionState.Established; i += 2) {
      try {
        this.handler.onStreamStopSending(this, stops[i] as number, stops[i + 1] as number);
      } catch (err) {
        this.onHandlerError(err);
      }
    }
  }

  private checkBlocked(): void {
    const native = this.native as QuicheConnection;
    const blocked = this.blocked as Map<number, number>;
    for (const [id, want] of blocked) {
      let cap: number;
      try {
        cap = native.streamCapacity(id);
      } catch (err) {
        blocked.delete(id);
        const e = fromQuicheError(err);
        if (e !== null && e.code === QuicErrorCode.StreamStopped) {
          try {
            this.handler.onStreamStopSending(this, id, e.appCode);
          } catch (herr) {
            this.onHandlerError(herr);
          }
        }
        if (this.state !== ConnectionState.Established) return;
        continue;
      }
      if (cap >= want) {
        blocked.delete(id);
        try {
          this.handler.onStreamWritable(this, id);
        } catch (err) {
          this.onHandlerError(err);
        }
        if (this.state !== ConnectionState.Established) return;
      }
    }
  }

  /** Reads a stream until quiche has no more, FIN, a pause or a closed connection. */
  private drain(native: QuicheConnection, id: number): void {
    for (let guard = 0; guard < 4096; guard++) {
      const window = this.owner.readWindow();
      let r: [number, boolean] | null;
      try {
        r = native.streamRecv(id, window);
      } catch (err) {
        this.onRecvError(id, err);
        return;
      }
      if (r === null) return;
      const n = r[0];
      const fin = r[1];
      if (fin) {
        this.reading.delete(id);
        if (this.paused !== null) this.paused.delete(id);
      }
      const data = this.owner.takeRead(window, n);
      try {
        this.handler.onStreamData(this, id, data, fin);
      } catch (err) {
        this.onHandlerError(err);
        return;
      }
      if (fin || this.state !== ConnectionState.Established) return;
      if (this.paused !== null && this.paused.has(id)) return;
      // A short read means quiche's buffer for the stream is empty: skip the call that would say Done.
      if (n < window.length) return;
    }
  }

  private onRecvError(id: number, err: unknown): void {
    this.reading.delete(id);
    if (this.paused !== null) this.paused.delete(id);
    const e = fromQuicheError(err);
    if (e === null) return;
    if (e.code !== QuicErrorCode.StreamReset) {
      this.lastStreamError = e;
      return;
    }
    try {
      this.handler.onStreamReset(this, id, e.appCode);
    } catch (herr) {
      this.onHandlerError(herr);
    }
  }

  /** Reads new peer streams in id order from `next`; returns the new frontier. */
  private probe(native: QuicheConnection, next: number): number {
    let id = next;
    for (let i = 0; i < MAX_PROBES && this.state === ConnectionState.Established; i++) {
      if (this.ahead !== null && this.ahead.delete(id)) {
        id += 4;
        continue;
      }
      if (!native.streamReadable(id)) break;
      this.reading.add(id);
      id += 4;
      this.drain(native, id - 4);
    }
    return id;
  }

  private hasReadablePaused(native: QuicheConnection): boolean {
    if (this.paused === null) return false;
    for (const id of this.paused) if (native.streamReadable(id)) return true;
    return false;
  }

  /** The slow path: walk quiche's readable set for peer streams above a gap. */
  private discover(native: QuicheConnection): void {
    const found: number[] = [];
    for (const id of native.readable()) {
      if (this.reading.has(id) || (this.paused !== null && this.paused.has(id))) continue;
      const isPeer = (id % 2 === 0) === this.isServer;
      if (!isPeer) continue;
      const frontier = id % 4 < 2 ? this.nextPeerBidi : this.nextPeerUni;
      if (id < frontier) continue;
      found.push(id);
    }
    for (const id of found) {
      if (this.state !== ConnectionState.Established) return;
      if (this.ahead === null) this.ahead = new Set();
      this.ahead.add(id);
      this.reading.add(id);
      this.drain(native, id);
    }
  }
}
