/**
 * QuicEndpoint: one UDP socket, many QUIC connections, driven directly on quiche's binding.
 *
 * The path of a datagram:
 * 1. `'message'` -> parse the header in JS (packet.ts) -> find the connection by DCID (a Map
 *    keyed by a number made from our SCID's first 6 bytes, then a full 16-byte compare) or,
 *    for a client's first Initials, by its original DCID -> `recv()` into quiche right away.
 *    A datagram whose DCID matches nothing is dropped (or, for an Initial on a server, starts
 *    a connection); it never reaches another connection's quiche state.
 * 2. The connection is marked dirty; one `setImmediate` per tick runs the flush, after the
 *    poll phase delivered every datagram that was waiting (libuv reads up to 32 per poll).
 * 3. The flush, per dirty connection: handshake completion, stream events (the handler
 *    runs here), then `send()` until quiche has nothing more (or a per-connection budget
 *    per tick), each datagram straight to the socket, then the connection's next deadline.
 *
 * Timers: one Node timer per endpoint, armed for the earliest connection deadline; when it
 * fires, every connection whose deadline passed gets `onTimeout()` and a flush. Per-connection
 * setTimeout would allocate a Timeout (and re-arm it) on every flush; the scan costs ~1-3 ns
 * per connection per fire (measured in bench/quic-driver.ts), so 10,000 connections cost
 * tens of µs per fire. Alternative rejected for now: a hashed timer wheel (O(1) per re-arm,
 * but more code and no measured need).
 *
 * Send buffers: quiche writes each datagram into the next free 1,350-1,500 byte window of a
 * 64 KiB chunk, and that window goes to `socket.send` as is. A chunk is never rewritten
 * (a new one is allocated when it is full), so a send that libuv had to queue can never see
 * its bytes change; one allocation serves ~45 datagrams.
 */
import dgram from 'node:dgram';
import { randomFillSync, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import {
  CRYPTO_BAD_CERTIFICATE,
  QuicError,
  QuicErrorCode,
  TransportErrorCode,
  createQuicError,
  quiche,
  type QuicheConnection,
} from './binding.js';
import { type QuicConfig } from './config.js';
import {
  ConnectionState,
  NOOP_HANDLER,
  QuicConnection,
  type QuicConnectionHandler,
  type QuicConnectionOwner,
} from './connection.js';
import {
  LongPacketType,
  MIN_INITIAL_DATAGRAM,
  PacketHeader,
  SCID_LENGTH,
  cidKey,
  cidMatches,
  foreignCidKey,
  parseHeader,
} from './packet.js';

export interface QuicServerOptions {
  config: QuicConfig;
  /**
   * Called once per connection when its handshake completed; returns the connection's
   * handler (onEstablished follows at once). Connections that never complete the handshake
   * are never shown to the application.
   */
  onConnection(conn: QuicConnection): QuicConnectionHandler;
  /**
   * Called for each Initial that would start a connection (after the maxConnections check);
   * false drops it like a refusal at the limit (counted in `refused`). The listener's load
   * shedding: no new connections above the memory mark.
   */
  admit?(): boolean;
}

export interface QuicEndpointOptions {
  /** IP literal to bind: '127.0.0.1', '::1' (or another local address). */
  host: string;
  /** Default 0 (any free port). */
  port?: number;
  /** Accept connections (server mode). */
  server?: QuicServerOptions;
  /** Default config for connect() (client mode). */
  client?: QuicConfig;
  /**
   * Connect the socket to this peer (client endpoints dialing one upstream): ICMP
   * unreachable then fails pending handshakes at once (QUIC_ERR_UNREACHABLE) instead of
   * waiting for the idle timeout. connect() may then only dial this address.
   */
  remote?: { host: string; port: number };
  /** Bound on live connections (each holds ~35 KB of native memory); Initials past it are dropped. Default 10,000. */
  maxConnections?: number;
  /** SO_RCVBUF / SO_SNDBUF request (the kernel caps it at net.core.[rw]mem_max). Default 4 MiB. */
  socketBufferBytes?: number;
  /**
   * false (default): onStreamData gets a view into one reused 64 KiB slab (consume or copy
   * before returning). true: views into 256 KiB chunks that are never overwritten (zero-copy
   * ownership; a retained small view keeps its chunk alive).
   */
  ownedStreamData?: boolean;
  /** Datagrams one connection may send per flush before yielding to I/O. Default 128. */
  maxDatagramsPerFlush?: number;
}

export interface QuicConnectOptions {
  /** Overrides the endpoint's client config. */
  config?: QuicConfig;
  /** Reject with QUIC_ERR_CONNECT_TIMEOUT after this many ms (the idle timeout bounds it too). */
  timeoutMs?: number;
}

export interface QuicEndpointCounters {
  datagramsIn: number;
  datagramsOut: number;
  /** Datagrams that matched no connection, failed header checks, or came from the wrong address. */
  datagramsDropped: number;
  /** recv() calls quiche refused (the connection decides whether that closes it). */
  recvErrors: number;
  versionNegotiations: number;
  accepted: number;
  /** Initials refused because maxConnections was reached, `admit()` said no, or the endpoint is closing. */
  refused: number;
  /** Of those, the ones refused at maxConnections. */
  refusedAtLimit: number;
  socketErrors: number;
}

const OUT_CHUNK = 64 * 1024;
const BORROWED_SLAB = 64 * 1024;
const OWNED_CHUNK = 256 * 1024;
const OWNED_MIN_WINDOW = 16 * 1024;
const OWNED_MAX_WINDOW = 64 * 1024;
/** Entries of the IP-SAN check cache (see certificateHasIp). */
const SAN_CACHE_LIMIT = 256;
/** Datagrams a closing connection may send before it is considered stuck (see sendPending). */
const CLOSING_SEND_LIMIT = 256;
/** Connections one flush pass may process before yielding (those past it go to the next tick). */
const MAX_FLUSH_PASS = 100_000;

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string, family: number) => void;

// Only IP literals of the socket's family reach the socket; answering synchronously saves
// dns.lookup's nextTick per datagram (node:dgram runs the lookup on every unconnected send),
// and a fixed family saves isIP()'s regular expression.
function syncLookup4(hostname: string, _options: unknown, callback: LookupCallback): void {
  callback(null, hostname, 4);
}

function syncLookup6(hostname: string, _options: unknown, callback: LookupCallback): void {
  callback(null, hostname, 6);
}

function onEndpointTimer(ep: QuicEndpoint): void {
  ep.onTimer();
}

function onEndpointFlush(ep: QuicEndpoint): void {
  ep.flush();
}

/** Reads stream data into a reused slab (borrowed) or into never-rewritten chunks (owned). */
class ReadArena {
  private readonly isOwned: boolean;
  private chunk: Buffer;
  private offset: number;

  constructor(isOwned: boolean) {
    this.isOwned = isOwned;
    this.chunk = Buffer.allocUnsafeSlow(isOwned ? OWNED_CHUNK : BORROWED_SLAB);
    this.offset = 0;
  }

  window(): Buffer {
    if (!this.isOwned) return this.chunk;
    if (this.chunk.length - this.offset < OWNED_MIN_WINDOW) {
      this.chunk = Buffer.allocUnsafeSlow(OWNED_CHUNK);
      this.offset = 0;
    }
    const end = Math.min(this.chunk.length, this.offset + OWNED_MAX_WINDOW);
    return this.chunk.subarray(this.offset, end);
  }

  take(window: Buffer, n: number): Buffer {
    if (this.isOwned) this.offset += (n + 7) & ~7;
    return window.subarray(0, n);
  }
}

/**
 * A QUIC endpoint on one UDP socket. Create with `QuicEndpoint.open()`; serve (options.server)
 * and/or dial (`connect`). Not thread-safe (one event loop), no hidden Promises on the data
 * path: only open(), connect() and close() return Promises.
 */
export class QuicEndpoint implements QuicConnectionOwner {
  readonly host: string;
  /** The bound port. */
  readonly port: number;
  readonly counters: QuicEndpointCounters;

  private readonly socket: dgram.Socket;
  private readonly isConnected: boolean;
  private readonly server: QuicServerOptions | null;
  private readonly clientConfig: QuicConfig | null;
  /** Bound on live connections (QuicEndpointOptions.maxConnections); may be changed at any time (config reload). */
  maxConnections: number;
  private readonly maxDatagramsPerFlush: number;
  private readonly sendWindow: number;
  private readonly header: PacketHeader;
  private readonly byKey: Map<number, QuicConnection>;
  private readonly byOdcid: Map<string, QuicConnection>;
  private readonly all: Set<QuicConnection>;
  private readonly dirty: (QuicConnection | null)[];
  private dirtyCount: number;
  private readonly carry: QuicConnection[];
  private isFlushScheduled: boolean;
  private timer: NodeJS.Timeout | null;
  private timerAt: number;
  private out: Buffer;
  private outOffset: number;
  private readonly arena: ReadArena;
  private readonly scidScratch: Buffer;
  private connectTimers: number;
  private readonly sanCache: Map<string, boolean>;
  private isClosing: boolean;
  private closePromise: Promise<void> | null;
  private onAllClosed: (() => void) | null;

  private constructor(socket: dgram.Socket, host: string, port: number, o: QuicEndpointOptions) {
    this.host = host;
    this.port = port;
    this.counters = {
      datagramsIn: 0,
      datagramsOut: 0,
      datagramsDropped: 0,
      recvErrors: 0,
      versionNegotiations: 0,
      accepted: 0,
      refused: 0,
      refusedAtLimit: 0,
      socketErrors: 0,
    };
    this.socket = socket;
    this.isConnected = o.remote !== undefined;
    this.server = o.server ?? null;
    this.clientConfig = o.client ?? null;
    this.maxConnections = o.maxConnections ?? 10_000;
    this.maxDatagramsPerFlush = o.maxDatagramsPerFlush ?? 128;
    const payloads = [o.server?.config.maxUdpPayload ?? 0, o.client?.maxUdpPayload ?? 0, 1350];
    // quiche returns null (as if idle) when the buffer is smaller than the path's max payload.
    this.sendWindow = Math.max(...payloads);
    this.header = new PacketHeader();
    this.byKey = new Map();
    this.byOdcid = new Map();
    this.all = new Set();
    this.dirty = [];
    this.dirtyCount = 0;
    this.carry = [];
    this.isFlushScheduled = false;
    this.timer = null;
    this.timerAt = Infinity;
    this.out = Buffer.allocUnsafeSlow(OUT_CHUNK);
    this.outOffset = 0;
    this.arena = new ReadArena(o.ownedStreamData ?? false);
    this.scidScratch = Buffer.alloc(SCID_LENGTH);
    this.connectTimers = 0;
    this.sanCache = new Map();
    this.isClosing = false;
    this.closePromise = null;
    this.onAllClosed = null;
    socket.on('message', (msg: Buffer, rinfo: dgram.RemoteInfo) => this.onMessage(msg, rinfo));
    socket.on('error', (err: Error) => this.onSocketError(err));
  }

  /** Binds the socket (and connects it when `remote` is set). Rejects on bind errors. */
  static async open(o: QuicEndpointOptions): Promise<QuicEndpoint> {
    const family = isIP(o.host);
    if (family === 0) throw createQuicError(QuicErrorCode.InvalidArgument, `QUIC endpoint host must be an IP literal, got ${o.host}`);
    if (o.remote !== undefined && isIP(o.remote.host) !== family) {
      throw createQuicError(QuicErrorCode.InvalidArgument, `QUIC endpoint remote ${o.remote.host} must be an IP literal of the bind family`);
    }
    const socket = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', ipv6Only: family === 6, lookup: family === 6 ? syncLookup6 : syncLookup4 });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      socket.once('error', onError);
      socket.bind({ address: o.host, port: o.port ?? 0, exclusive: true }, () => {
        socket.off('error', onError);
        resolve();
      });
    });
    const bufferBytes = o.socketBufferBytes ?? 4 * 1024 * 1024;
    try {
      socket.setRecvBufferSize(bufferBytes);
      socket.setSendBufferSize(bufferBytes);
    } catch {
      // Kernel limits or an unprivileged container: run with the default sizes.
    }
    if (o.remote !== undefined) {
      const remote = o.remote;
      await new Promise<void>((resolve, reject) => {
        socket.connect(remote.port, remote.host, (err?: Error) => (err ? reject(err) : resolve()));
      });
    }
    return new QuicEndpoint(socket, o.host, socket.address().port, o);
  }

  // ---- public API ----------------------------------------------------------------------

  /** Live connections (handshaking, established, draining). */
  get connectionCount(): number {
    return this.all.size;
  }

  /** Entries in the routing tables (SCID keys plus original-DCID keys of handshaking server connections). */
  get routingTableSize(): number {
    return this.byKey.size + this.byOdcid.size;
  }

  /** Timers this endpoint holds: its deadline timer (0 or 1) plus connect() timeouts pending. */
  get timerCount(): number {
    return (this.timer === null ? 0 : 1) + this.connectTimers;
  }

  /** SO_RCVBUF / SO_SNDBUF as the kernel reports them. */
  socketBufferSizes(): { recv: number; send: number } {
    return { recv: this.socket.getRecvBufferSize(), send: this.socket.getSendBufferSize() };
  }

  /**
   * Dials `host:port` (an IP literal of the socket's family) and resolves once the handshake
   * completed and the peer's certificate was checked. `serverName`: a DNS name is sent as SNI
   * and verified by BoringSSL; null or an IP literal sends no SNI and the certificate must
   * carry that IP (or `host`) as an IP SAN (checked here, since BoringSSL's name check only
   * matches DNS names). `handler` is the connection's handler from the first event on.
   */
  connect(host: string, port: number, serverName: string | null, handler: QuicConnectionHandler, o: QuicConnectOptions = {}): Promise<QuicConnection> {
    const config = o.config ?? this.clientConfig;
    if (this.isClosing) return Promise.reject(createQuicError(QuicErrorCode.EndpointClosed, 'QUIC endpoint is closing'));
    if (config === null) return Promise.reject(createQuicError(QuicErrorCode.InvalidArgument, 'QUIC connect: no client config'));
    if (isIP(host) !== isIP(this.host)) {
      return Promise.reject(createQuicError(QuicErrorCode.InvalidArgument, `QUIC connect: host must be an IP literal of the endpoint's family, got ${host}`));
    }
    if (this.all.size >= this.maxConnections) return Promise.reject(createQuicError(QuicErrorCode.EndpointClosed, 'QUIC endpoint: maxConnections reached'));
    const isNameIp = serverName === null || isIP(serverName) !== 0;
    const sni = isNameIp ? null : serverName;
    const dialedIp = isNameIp && config.verifyPeer ? (serverName ?? host) : null;
    const scid = this.newScid();
    let native: QuicheConnection;
    try {
      native = quiche.Connection.connect(sni, scid, { host: this.host, port: this.port }, { host, port }, config.native);
    } catch (err) {
      return Promise.reject(createQuicError(QuicErrorCode.Internal, `quiche connect failed: ${(err as Error).message}`, '', -1, false, err));
    }
    const conn = new QuicConnection(this, native, false, scid, cidKey(scid, 0), this.host, this.port, host, port, dialedIp, handler);
    this.byKey.set(conn.scidKey, conn);
    this.all.add(conn);
    this.markDirty(conn);
    return new Promise<QuicConnection>((resolve, reject) => {
      if (o.timeoutMs === undefined) {
        conn.waiter = { resolve, reject };
        return;
      }
      this.connectTimers++;
      const timer = setTimeout(() => {
        if (conn.waiter === null) return;
        const err = createQuicError(QuicErrorCode.ConnectTimeout, `QUIC handshake with ${host}:${port} took over ${o.timeoutMs} ms`);
        conn.waiter.reject(err);
        conn.fail(err, TransportErrorCode.NoError);
      }, o.timeoutMs);
      const settle = (): void => {
        clearTimeout(timer);
        this.connectTimers--;
        conn.waiter = null;
      };
      conn.waiter = {
        resolve: (c) => {
          settle();
          resolve(c);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      };
    });
  }

  /**
   * Closes every connection gracefully (application close with `code`/`reason`), waits
   * until quiche says each is closed (at most `timeoutMs`, then they are dropped with
   * QUIC_ERR_ENDPOINT_CLOSED), then closes the socket. Pending connect()s reject. Idempotent.
   */
  close(code = 0, reason = '', timeoutMs = 3000): Promise<void> {
    if (this.closePromise !== null) return this.closePromise;
    this.isClosing = true;
    this.closePromise = this.closeAll(code, reason, timeoutMs);
    return this.closePromise;
  }

  // ---- QuicConnectionOwner -------------------------------------------------------------

  /** @internal */
  markDirty(conn: QuicConnection): void {
    if (conn.isDirty) return;
    conn.isDirty = true;
    this.dirty[this.dirtyCount++] = conn;
    if (!this.isFlushScheduled) {
      this.isFlushScheduled = true;
      setImmediate(onEndpointFlush, this);
    }
  }

  /** @internal */
  readWindow(): Buffer {
    return this.arena.window();
  }

  /** @internal */
  takeRead(window: Buffer, n: number): Buffer {
    return this.arena.take(window, n);
  }

  // ---- receive path --------------------------------------------------------------------

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.counters.datagramsIn++;
    const h = this.header;
    if (!parseHeader(msg, msg.length, h)) {
      this.counters.datagramsDropped++;
      return;
    }
    let conn: QuicConnection | undefined;
    if (h.dcidLength === SCID_LENGTH) {
      conn = this.byKey.get(cidKey(msg, h.dcidOffset));
      if (conn !== undefined && !cidMatches(msg, h.dcidOffset, conn.scid)) conn = undefined;
    }
    if (conn === undefined && h.isLong) conn = this.routeLong(msg, rinfo, h);
    if (conn === undefined) {
      this.counters.datagramsDropped++;
      return;
    }
    // Migration is disabled: a packet for this connection from another address is dropped
    // (spoofed, or a NAT rebinding quiche would not accept anyway).
    if (rinfo.port !== conn.remotePort || rinfo.address !== conn.remoteHost) {
      this.counters.datagramsDropped++;
      return;
    }
    if (!h.isLong) conn.hasShortHeader = true;
    const native = conn.native as QuicheConnection;
    try {
      native.recv(msg, conn.recvInfo);
    } catch {
      // quiche drops what it cannot decrypt without throwing; a throw means it closed the
      // connection (handshake failure, protocol violation) or refused the packet.
      this.counters.recvErrors++;
      if (native.isClosed()) {
        this.finalize(conn);
        return;
      }
    }
    if (!conn.isDirty) this.markDirty(conn);
  }

  /** Long header with no SCID match: a handshaking server connection's ODCID, a new connection, or version negotiation. */
  private routeLong(msg: Buffer, rinfo: dgram.RemoteInfo, h: PacketHeader): QuicConnection | undefined {
    if (this.server === null) return undefined;
    if (h.version !== 1 && h.version !== 0 && !quiche.versionIsSupported(h.version)) {
      this.negotiateVersion(msg, rinfo, h);
      return undefined;
    }
    if (this.byOdcid.size > 0) {
      const c = this.byOdcid.get(foreignCidKey(msg, h.dcidOffset, h.dcidLength));
      if (c !== undefined) return c;
    }
    if (h.longType !== LongPacketType.Initial) return undefined;
    return this.accept(msg, rinfo, h);
  }

  private negotiateVersion(msg: Buffer, rinfo: dgram.RemoteInfo, h: PacketHeader): void {
    // Answer only datagrams big enough to be a client's first flight (no amplification).
    if (msg.length < MIN_INITIAL_DATAGRAM) return;
    const out = Buffer.allocUnsafe(this.sendWindow);
    const scid = msg.subarray(h.scidOffset, h.scidOffset + h.scidLength);
    const dcid = msg.subarray(h.dcidOffset, h.dcidOffset + h.dcidLength);
    let n: number;
    try {
      n = quiche.negotiateVersion(scid, dcid, out);
    } catch {
      return;
    }
    this.counters.versionNegotiations++;
    this.sendTo(out.subarray(0, n), rinfo.port, rinfo.address);
  }

  private accept(msg: Buffer, rinfo: dgram.RemoteInfo, h: PacketHeader): QuicConnection | undefined {
    const server = this.server as QuicServerOptions;
    // RFC 9000 sections 7.2 and 14.1: the client's first DCID has >= 8 bytes, its Initial datagram >= 1200.
    if (msg.length < MIN_INITIAL_DATAGRAM || h.dcidLength < 8) return undefined;
    if (this.isClosing || this.all.size >= this.maxConnections || (server.admit !== undefined && !server.admit())) {
      this.counters.refused++;
      if (!this.isClosing && this.all.size >= this.maxConnections) this.counters.refusedAtLimit++;
      return undefined;
    }
    const scid = this.newScid();
    let native: QuicheConnection;
    try {
      native = quiche.Connection.accept(scid, null, { host: this.host, port: this.port }, { host: rinfo.address, port: rinfo.port }, server.config.native);
    } catch {
      return undefined;
    }
    const conn = new QuicConnection(this, native, true, scid, cidKey(scid, 0), this.host, this.port, rinfo.address, rinfo.port, null, NOOP_HANDLER);
    conn.odcidKey = foreignCidKey(msg, h.dcidOffset, h.dcidLength);
    this.byKey.set(conn.scidKey, conn);
    this.byOdcid.set(conn.odcidKey, conn);
    this.all.add(conn);
    this.counters.accepted++;
    return conn;
  }

  /** A fresh random SCID whose 6-byte table key is unused (bounded retries; 2^48 key space). */
  private newScid(): Buffer {
    const scratch = this.scidScratch;
    for (let i = 0; i < 16; i++) {
      randomFillSync(scratch);
      if (!this.byKey.has(cidKey(scratch, 0))) break;
    }
    return Buffer.from(scratch);
  }

  private onSocketError(err: Error): void {
    this.counters.socketErrors++;
    const code = (err as NodeJS.ErrnoException).code;
    if (!this.isConnected || (code !== 'ECONNREFUSED' && code !== 'EHOSTUNREACH' && code !== 'ENETUNREACH')) return;
    // ICMP unreachable on the connected socket: handshakes to this peer cannot succeed. Established
    // connections carry on (ICMP is unauthenticated); quiche's idle timeout decides for them.
    for (const conn of this.all) {
      if (conn.state !== ConnectionState.Handshaking) continue;
      const e = createQuicError(QuicErrorCode.Unreachable, `QUIC peer ${conn.remoteHost}:${conn.remotePort} unreachable (${code})`);
      if (conn.waiter !== null) conn.waiter.reject(e);
      conn.waiter = null;
      conn.fail(e, TransportErrorCode.NoError);
    }
  }

  // ---- flush (once per tick) -----------------------------------------------------------

  /** @internal Runs from setImmediate: every dirty connection, in the order they were touched. */
  flush(): void {
    this.isFlushScheduled = false;
    const dirty = this.dirty;
    let i = 0;
    // Connections marked dirty during the pass (a handler writing to another connection) are
    // served in this same pass: the loop reads the live count.
    for (; i < this.dirtyCount && i < MAX_FLUSH_PASS; i++) {
      const conn = dirty[i] as QuicConnection;
      dirty[i] = null;
      this.flushConnection(conn);
      conn.isDirty = false;
    }
    if (i < this.dirtyCount) {
      // Pass bound hit: keep the rest for the next tick.
      let j = 0;
      for (; i < this.dirtyCount; i++, j++) {
        dirty[j] = dirty[i] as QuicConnection;
        dirty[i] = null;
      }
      this.dirtyCount = j;
      this.isFlushScheduled = true;
      setImmediate(onEndpointFlush, this);
    } else {
      this.dirtyCount = 0;
    }
    if (this.carry.length > 0) {
      for (const conn of this.carry) if (conn.native !== null) this.markDirty(conn);
      this.carry.length = 0;
    }
  }

  private flushConnection(conn: QuicConnection): void {
    const native = conn.native;
    if (native === null) return;
    if (conn.state === ConnectionState.Handshaking && native.isEstablished()) {
      conn.isCloseHeld = true;
      this.establish(conn);
    }
    if (conn.state === ConnectionState.Established) conn.processStreams();
    if (conn.native === null) return;
    this.sendPending(conn, native);
    if (conn.isCloseHeld) {
      conn.releaseClose();
      this.sendPending(conn, native);
    }
    if (conn.native === null) return;
    if (conn.state !== ConnectionState.Established && native.isClosed()) {
      this.finalize(conn);
      return;
    }
    const t = native.timeout();
    conn.deadline = t === null ? Infinity : performance.now() + t;
    if (conn.deadline < this.timerAt) this.armTimer(conn.deadline);
  }

  private sendPending(conn: QuicConnection, native: QuicheConnection): void {
    const window = this.sendWindow;
    for (let i = 0; i < this.maxDatagramsPerFlush; i++) {
      if (this.outOffset + window > this.out.length) {
        this.out = Buffer.allocUnsafeSlow(OUT_CHUNK);
        this.outOffset = 0;
      }
      const start = this.outOffset;
      let r: [number, unknown] | null;
      try {
        r = native.send(this.out.subarray(start, start + window));
      } catch {
        // quiche fails send only on internal errors; the connection closes through its timers.
        return;
      }
      if (r === null) return;
      const n = r[0];
      this.outOffset = start + ((n + 7) & ~7);
      if (this.isConnected) this.socket.send(this.out.subarray(start, start + n));
      else this.socket.send(this.out.subarray(start, start + n), conn.remotePort, conn.remoteHost);
      this.counters.datagramsOut++;
      // A closing connection sends one CONNECTION_CLOSE per received packet at most. Far more
      // means quiche is looping without draining (see QuicConnection.close): drop it.
      if (conn.state === ConnectionState.Closing && ++conn.closingSends > CLOSING_SEND_LIMIT) {
        conn.fail(createQuicError(QuicErrorCode.Internal, 'quiche kept sending while closing; connection dropped'), TransportErrorCode.InternalError);
        this.finalize(conn);
        return;
      }
    }
    // Budget spent: let the event loop read (ACKs) before sending more.
    this.carry.push(conn);
  }

  private sendTo(data: Buffer, port: number, host: string): void {
    if (this.isConnected) this.socket.send(data);
    else this.socket.send(data, port, host);
    this.counters.datagramsOut++;
  }

  private establish(conn: QuicConnection): void {
    conn.markEstablished();
    if (conn.odcidKey !== null) {
      this.byOdcid.delete(conn.odcidKey);
      conn.odcidKey = null;
    }
    if (conn.isServer) {
      const server = this.server as QuicServerOptions;
      try {
        conn.handler = server.onConnection(conn);
      } catch (err) {
        conn.onHandlerError(err);
        return;
      }
    } else if (conn.dialedIp !== null && !this.certificateHasIp(conn, conn.dialedIp)) {
      const err = createQuicError(QuicErrorCode.CertificateMismatch, `QUIC peer certificate does not name ${conn.dialedIp}`);
      if (conn.waiter !== null) conn.waiter.reject(err);
      conn.waiter = null;
      conn.fail(err, CRYPTO_BAD_CERTIFICATE);
      return;
    }
    conn.wasEstablished = true;
    try {
      conn.handler.onEstablished(conn);
    } catch (err) {
      conn.onHandlerError(err);
    }
    if (conn.waiter !== null) {
      const w = conn.waiter;
      conn.waiter = null;
      w.resolve(conn);
    }
  }

  /**
   * True when the (already chain-verified) leaf certificate carries `ip` as an IP SAN.
   * Parsing a certificate with node:crypto costs ~290 µs here, a sixth of a handshake, so the
   * answers are cached per (ip, certificate bytes); upstreams present the same certificate on
   * every connection. Bounded: the cache is dropped when it reaches SAN_CACHE_LIMIT entries.
   */
  private certificateHasIp(conn: QuicConnection, ip: string): boolean {
    const leaf = conn.peerCertificateChain[0];
    if (leaf === undefined) return false;
    const key = `${ip} ${leaf.toString('base64')}`;
    const known = this.sanCache.get(key);
    if (known !== undefined) return known;
    let ok = false;
    try {
      ok = new X509Certificate(leaf).checkIP(ip) !== undefined;
    } catch {
      ok = false;
    }
    if (this.sanCache.size >= SAN_CACHE_LIMIT) this.sanCache.clear();
    this.sanCache.set(key, ok);
    return ok;
  }

  /** quiche says closed (or the endpoint gave up on it): drop every reference, then tell the application. */
  private finalize(conn: QuicConnection): void {
    const err = conn.finish();
    if (this.byKey.get(conn.scidKey) === conn) this.byKey.delete(conn.scidKey);
    if (conn.odcidKey !== null) {
      this.byOdcid.delete(conn.odcidKey);
      conn.odcidKey = null;
    }
    this.all.delete(conn);
    if (conn.waiter !== null) {
      const w = conn.waiter;
      conn.waiter = null;
      w.reject(err ?? createQuicError(QuicErrorCode.EndpointClosed, 'QUIC connection closed before the handshake completed'));
    } else if (conn.wasEstablished) {
      try {
        conn.handler.onClosed(conn, err);
      } catch {
        // The connection is gone; nothing left to protect.
      }
    }
    if (this.all.size === 0 && this.onAllClosed !== null) this.onAllClosed();
  }

  // ---- timers --------------------------------------------------------------------------

  private armTimer(at: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timerAt = at;
    const delay = at - performance.now();
    // ceil: quiche's timeout() is truncated to whole ms; firing early only costs a no-op onTimeout.
    this.timer = setTimeout(onEndpointTimer, delay > 0 ? Math.ceil(delay) : 0, this);
  }

  /** @internal The endpoint timer: onTimeout() for every connection past its deadline, then flush them. */
  onTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer); // no-op when the timer itself fired
    this.timer = null;
    this.timerAt = Infinity;
    const now = performance.now();
    let next = Infinity;
    for (const conn of this.all) {
      const d = conn.deadline;
      if (d > now) {
        if (d < next) next = d;
        continue;
      }
      const native = conn.native as QuicheConnection;
      native.onTimeout();
      if (native.isClosed()) {
        this.finalize(conn);
        continue;
      }
      conn.deadline = Infinity;
      this.markDirty(conn);
    }
    if (next < this.timerAt) this.armTimer(next);
    if (this.dirtyCount > 0) this.flush();
  }

  // ---- close ---------------------------------------------------------------------------

  private async closeAll(code: number, reason: string, timeoutMs: number): Promise<void> {
    for (const conn of this.all) {
      if (conn.waiter !== null) {
        const w = conn.waiter;
        conn.waiter = null;
        w.reject(createQuicError(QuicErrorCode.EndpointClosed, 'QUIC endpoint closed during the handshake'));
      }
      conn.close(code, reason);
    }
    if (this.all.size > 0) {
      await new Promise<void>((resolve) => {
        const guard = setTimeout(() => {
          for (const conn of [...this.all]) {
            conn.fail(createQuicError(QuicErrorCode.EndpointClosed, 'QUIC endpoint closed before the connection finished draining'), TransportErrorCode.NoError);
            this.finalize(conn);
          }
        }, timeoutMs);
        this.onAllClosed = () => {
          clearTimeout(guard);
          this.onAllClosed = null;
          resolve();
        };
        if (this.all.size === 0) this.onAllClosed();
      });
    }
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
      this.timerAt = Infinity;
    }
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }
}

export { QuicError };
