/**
 * HTTP/3 upstream codec: `protocol: h3` clusters, multiplexed under the two-layer pool.
 *
 * One client QuicEndpoint (UDP socket) per upstream connection, connected to the endpoint's
 * address. Rejected alternative: one socket per Connector shared by every upstream
 * connection. A connected socket turns ICMP port-unreachable into an immediate, retry-safe
 * connect failure (QUIC_ERR_UNREACHABLE) instead of a wait for the connect timeout, the kernel
 * filters datagrams by peer, and closing the connection closes its socket; the price is one
 * file descriptor and a bind per upstream connection, which the pool keeps few (default 4
 * per endpoint) and long-lived.
 *
 * `maxStreams` follows the peer's bidi stream credit: at the handshake the peer's
 * initial_max_streams_bidi (through `peerStreamsLeftBidi`), then, whenever a stream ends,
 * `activeStreams + peerStreamsLeftBidi()` (quiche's server raises the credit with MAX_STREAMS
 * as streams are collected); a raise is reported to the pool with onCapacity.
 *
 * TLS: the cluster's `tls.ca` (PEM), `servername` (SNI and the name checked; without one an
 * IP endpoint is checked against the certificate's IP SANs) and `insecureSkipVerify`, as the
 * HTTP/2 codec does. Without a CA file nothing can be verified (quiche here is not given the
 * system store), so `insecureSkipVerify` or `ca` is needed in practice.
 *
 * Mesh clusters (`tls: mesh`): the identity's certificate as client certificate, the chain
 * verified by BoringSSL against the identity's trust bundle, no SNI and no name or IP check
 * (endpoints are addresses, identities are SPIFFE IDs), then, before the HTTP/3 session
 * starts, the server's SPIFFE ID must equal the cluster's `peerIdentity` (any from the bundle
 * when unset); otherwise the connection is closed and the connect fails, retry-safe, with the
 * TCP path's message (protocols/tls/mesh.ts). One QuicConfig per identity material: a dial
 * after a rotation uses the new certificate and bundle.
 */
import { readFileSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { RequestContext } from '../../src/context.js';
import { addressKey } from '../../src/address.js';
import { ErrorCode, SkiffError } from '../../src/errors.js';
import type { FrameSink, FrameSource } from '../../src/frames.js';
import { buildUpstreamHeaders, getHeader } from '../../src/headers.js';
import type { ConnEvents, Connector, UpstreamConn, UpstreamHandler } from '../../src/pool/types.js';
import type { ClusterConfig, SocketAddress } from '../../src/config/types.js';
import { spiffeIdOf, type IdentityMaterial, type IdentityStore } from '../../mesh/identity.js';
import { QuicEndpoint, QuicErrorCode, createClientConfig, type QuicConfig, type QuicConnection, type QuicError } from '../quic/index.js';
import { meshIdentityMismatch } from '../tls/mesh.js';
import { H3Error, H3_GENERAL_PROTOCOL_ERROR, H3_NO_ERROR, H3_REQUEST_CANCELLED, H3_REQUEST_REJECTED, H3_STREAM_CREATION_ERROR } from './frames.js';
import { MessageKind, MessageReader, type MessageHandler } from './message.js';
import { H3Session, StreamOut, appendLowerFields, asBuffer, writeDataFrame } from './server.js';

/** Upper bound on streams per connection whatever the peer allows. */
const MAX_STREAMS_CAP = 1000;
/** Largest response header section we accept from an upstream. */
const MAX_RESPONSE_FIELD_SECTION = 64 * 1024;

/** Transport settings of every upstream HTTP/3 connection (mesh or not). */
const CLIENT_TRANSPORT = { alpn: ['h3'], initialMaxStreamDataBidiLocal: 1024 * 1024, initialMaxData: 16 * 1024 * 1024 } as const;

export class H3Connector implements Connector {
  /** Client configs by cluster object (a new snapshot brings new cluster objects). */
  private readonly configs: WeakMap<ClusterConfig, QuicConfig>;
  /** Mesh client configs by identity material (a rotation brings a new material). */
  private readonly meshConfigs: WeakMap<IdentityMaterial, QuicConfig>;
  /** This sidecar's mesh identity, for `tls: mesh` clusters; null without one. */
  private readonly identity: IdentityStore | null;

  constructor(identity: IdentityStore | null = null) {
    this.configs = new WeakMap();
    this.meshConfigs = new WeakMap();
    this.identity = identity;
  }

  async connect(endpoint: SocketAddress, cluster: ClusterConfig, events: ConnEvents): Promise<UpstreamConn> {
    // Never in cleartext or without the identity (as protocols/h1/dial.ts).
    if (cluster.meshTls && this.identity === null) {
      throw new SkiffError(ErrorCode.UpstreamConnect, 'upstream', `cluster ${cluster.name}: tls: mesh needs an identity`, false);
    }
    const key = addressKey(endpoint);
    let host = endpoint.host;
    if (isIP(host) === 0) {
      try {
        host = (await lookup(host)).address;
      } catch (err) {
        throw new SkiffError(ErrorCode.UpstreamConnect, 'upstream', `connect to ${key} failed: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, true, err);
      }
    }
    const family = isIP(host);
    const isLoopback = family === 4 ? host.startsWith('127.') : host === '::1';
    const bindHost = isLoopback ? host : family === 4 ? '0.0.0.0' : '::';
    let config: QuicConfig;
    try {
      config = cluster.meshTls && this.identity !== null ? this.meshConfigFor(this.identity.current) : this.configFor(cluster);
    } catch (err) {
      throw new SkiffError(ErrorCode.UpstreamConnect, 'upstream', `cluster ${cluster.name}: bad QUIC TLS settings: ${(err as Error).message}`, false, err);
    }
    let ep: QuicEndpoint;
    try {
      ep = await QuicEndpoint.open({ host: bindHost, client: config, remote: { host, port: endpoint.port }, ownedStreamData: true, maxConnections: 1 });
    } catch (err) {
      throw new SkiffError(ErrorCode.UpstreamConnect, 'upstream', `connect to ${key} failed: ${(err as Error).message}`, true, err);
    }
    const tls = cluster.tls;
    // Mesh: no SNI, hence no name check by BoringSSL; the SPIFFE ID is checked instead.
    const serverName = cluster.meshTls ? null : tls !== null && tls.servername !== null ? tls.servername : isIP(endpoint.host) === 0 ? endpoint.host : null;
    const conn = new H3Conn(key, events, ep);
    if (cluster.meshTls) {
      conn.isMesh = true;
      conn.expectedPeer = cluster.peerIdentity;
    }
    try {
      await ep.connect(host, endpoint.port, serverName, conn.handler, { timeoutMs: cluster.connectTimeoutMs });
    } catch (err) {
      void ep.close(0, '', 100);
      const q = err as QuicError;
      const isTimeout = q.code === QuicErrorCode.ConnectTimeout || q.code === QuicErrorCode.IdleTimeout;
      throw new SkiffError(
        isTimeout ? ErrorCode.ConnectTimeout : ErrorCode.UpstreamConnect,
        'upstream',
        isTimeout ? `QUIC handshake with ${key} timed out after ${cluster.connectTimeoutMs} ms` : `QUIC connect to ${key} failed: ${q.message}`,
        true,
        err,
      );
    }
    if (conn.refusal !== null) {
      // The server's SPIFFE ID is not the expected one; the shim closed the connection.
      void ep.close(0, '', 100);
      throw new SkiffError(ErrorCode.UpstreamConnect, 'upstream', `connect to ${key} failed: ${conn.refusal}`, true);
    }
    return conn;
  }

  private meshConfigFor(m: IdentityMaterial): QuicConfig {
    let c = this.meshConfigs.get(m);
    if (c === undefined) {
      c = createClientConfig({ ...CLIENT_TRANSPORT, caPem: m.caPem, certPem: m.certPem, keyPem: m.keyPem, verifyPeer: true, verifyPeerName: false });
      this.meshConfigs.set(m, c);
    }
    return c;
  }

  private configFor(cluster: ClusterConfig): QuicConfig {
    let c = this.configs.get(cluster);
    if (c === undefined) {
      const tls = cluster.tls;
      c = createClientConfig({
        ...CLIENT_TRANSPORT,
        caPem: tls !== null && tls.ca !== null ? readFileSync(tls.ca) : undefined,
        verifyPeer: tls === null ? true : !tls.insecureSkipVerify,
      });
      this.configs.set(cluster, c);
    }
    return c;
  }
}

/** The QUIC handler of one upstream connection: the H3 session with the client's streams. */
class H3ClientSession extends H3Session {
  readonly owner: H3Conn;
  readonly streams: Map<number, H3UpstreamExchange>;

  constructor(owner: H3Conn, quic: QuicConnection) {
    super(quic, false, MAX_RESPONSE_FIELD_SECTION);
    this.owner = owner;
    this.streams = new Map();
  }

  /**
   * Our streams are known by id from openBidi() on, whatever order the server's bytes arrive
   * in; an id not in `streams` is one we finished (late bytes: ignored). A server-initiated
   * bidi stream is a connection error (RFC 9114 §6.1): quiche would let the server open up
   * to our initial_max_streams_bidi of them, and an ignored one would stay open for good.
   */
  protected onRequestData(id: number, data: Buffer, fin: boolean): void {
    const ex = this.streams.get(id);
    if (ex !== undefined) ex.onWire(data, fin);
    else if ((id & 1) !== 0) this.refuseServerBidi();
  }

  protected onRequestReset(id: number, code: number): void {
    const ex = this.streams.get(id);
    if (ex !== undefined) ex.onPeerReset(code, false);
    else if ((id & 1) !== 0) this.refuseServerBidi();
  }

  private refuseServerBidi(): void {
    this.connectionError(new H3Error(H3_STREAM_CREATION_ERROR, 'server-initiated bidirectional stream'));
  }

  protected onRequestStopSending(id: number, code: number): void {
    const ex = this.streams.get(id);
    if (ex !== undefined) ex.onPeerReset(code, true);
  }

  protected onRequestWritable(id: number): void {
    const ex = this.streams.get(id);
    if (ex !== undefined) ex.onWritable();
  }

  protected onPeerGoaway(id: number): void {
    // No new streams; the ones at or above `id` were not processed (retry-safe).
    this.owner.markClosed();
    for (const ex of [...this.streams.values()]) if (ex.id >= id) ex.onRefused();
  }

  protected onConnectionClosed(error: QuicError | null): void {
    this.owner.markClosed();
    for (const ex of [...this.streams.values()]) ex.onConnectionGone(error);
    this.streams.clear();
    void this.owner.endpoint.close(0, '', 100);
  }
}

/**
 * Placeholder QUIC handler until the connection is established: the session needs the
 * QuicConnection, which exists only once connect() runs. It forwards every event.
 */
class HandlerShim {
  session: H3ClientSession | null;
  readonly owner: H3Conn;
  constructor(owner: H3Conn) {
    this.session = null;
    this.owner = owner;
  }
  onEstablished(conn: QuicConnection): void {
    if (this.owner.isMesh) {
      // Mesh: BoringSSL verified the chain against the bundle; the identity must be the
      // expected one before anything is sent (connect() turns `refusal` into the error).
      const leaf = conn.peerCertificateChain[0];
      const refusal = meshIdentityMismatch(leaf === undefined ? '' : spiffeIdOf(leaf), this.owner.expectedPeer);
      if (refusal !== null) {
        this.owner.refusal = refusal;
        conn.close(H3_GENERAL_PROTOCOL_ERROR, 'peer identity mismatch');
        return;
      }
    }
    const s = new H3ClientSession(this.owner, conn);
    this.session = s;
    this.owner.onEstablished(s);
    s.onEstablished(conn);
  }
  onStreamData(conn: QuicConnection, id: number, data: Buffer, fin: boolean): void {
    if (this.session !== null) this.session.onStreamData(conn, id, data, fin);
  }
  onStreamReset(conn: QuicConnection, id: number, code: number): void {
    if (this.session !== null) this.session.onStreamReset(conn, id, code);
  }
  onStreamStopSending(conn: QuicConnection, id: number, code: number): void {
    if (this.session !== null) this.session.onStreamStopSending(conn, id, code);
  }
  onStreamWritable(conn: QuicConnection, id: number): void {
    if (this.session !== null) this.session.onStreamWritable(conn, id);
  }
  onClosed(conn: QuicConnection, error: QuicError | null): void {
    if (this.session !== null) this.session.onClosed(conn, error);
    else void this.owner.endpoint.close(0, '', 100);
  }
}

export class H3Conn implements UpstreamConn {
  readonly endpointKey: string;
  readonly isMultiplexed: boolean;
  activeStreams: number;
  maxStreams: number;
  isClosed: boolean;
  idleSince: number;
  readonly events: ConnEvents;
  readonly endpoint: QuicEndpoint;
  readonly handler: HandlerShim;
  session: H3ClientSession | null;
  /** A `tls: mesh` connection: the server's SPIFFE ID is checked at the handshake. */
  isMesh: boolean;
  /** Mesh: the SPIFFE ID the server must present; null accepts any from the bundle. */
  expectedPeer: string | null;
  /** Mesh: why the server was refused after the handshake (identity mismatch); null when accepted. */
  refusal: string | null;

  constructor(endpointKey: string, events: ConnEvents, endpoint: QuicEndpoint) {
    this.endpointKey = endpointKey;
    this.isMultiplexed = true;
    this.activeStreams = 0;
    this.maxStreams = 1;
    this.isClosed = false;
    this.idleSince = 0;
    this.events = events;
    this.endpoint = endpoint;
    this.handler = new HandlerShim(this);
    this.session = null;
    this.isMesh = false;
    this.expectedPeer = null;
    this.refusal = null;
  }

  /** @internal The handshake completed: the peer's initial bidi credit is the stream limit. */
  onEstablished(session: H3ClientSession): void {
    this.session = session;
    this.maxStreams = Math.max(1, Math.min(session.quic.peerStreamsLeftBidi(), MAX_STREAMS_CAP));
  }

  /** @internal Recomputes the stream limit from the peer's current credit. */
  refreshCapacity(): void {
    const s = this.session;
    if (s === null || this.isClosed) return;
    const next = Math.min(this.activeStreams + s.quic.peerStreamsLeftBidi(), MAX_STREAMS_CAP);
    const prev = this.maxStreams;
    this.maxStreams = Math.max(next, 0);
    if (next > prev) this.events.onCapacity(this);
  }

  /** @internal No new streams (GOAWAY, closing, closed). */
  markClosed(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.events.onConnClosed(this);
  }

  dispatch(ctx: RequestContext, gen: number, handler: UpstreamHandler): void {
    const s = this.session;
    const id = s === null || this.isClosed ? -1 : s.quic.openBidi();
    if (s === null || id < 0) {
      this.events.onStreamDone(this);
      handler.onUpstreamError(ctx, gen, new SkiffError(ErrorCode.UpstreamReset, 'upstream', `no HTTP/3 stream credit on ${this.endpointKey}`, true));
      return;
    }
    buildUpstreamHeaders(ctx, ctx.outHeaders, false);
    const fields = s.fields;
    fields[0] = ':method';
    fields[1] = ctx.method;
    fields[2] = ':scheme';
    fields[3] = 'https';
    fields[4] = ':authority';
    fields[5] = ctx.authority === '' ? this.endpointKey : ctx.authority;
    fields[6] = ':path';
    fields[7] = ctx.path;
    let n = appendLowerFields(ctx.outHeaders, fields, 8);
    // `te: trailers` is the one TE value HTTP/3 allows (RFC 9114 §4.2); gRPC relies on it.
    const te = getHeader(ctx.rawHeaders, 'te');
    if (te !== null && te.includes('trailers')) {
      fields[n++] = 'te';
      fields[n++] = 'trailers';
    }
    fields.length = n;
    // A host field must equal :authority (RFC 9114 §4.3.1); ours is the same value, drop dups.
    const frame = s.encoder.encodeHeadersFrameView(fields);
    fields.length = 0;
    const hasBody = ctx.hasRequestBody;
    const ex = new H3UpstreamExchange(this, s, id, ctx, gen, handler);
    s.streams.set(id, ex);
    ctx.upstreamHandle = ex;
    ex.out.write(frame, false, !hasBody);
    if (!hasBody) ex.isSendDone = true;
    else ctx.requestBody.attachSink(ex);
  }

  close(): void {
    this.isClosed = true;
    const s = this.session;
    if (s !== null) s.quic.close(H3_NO_ERROR, '');
    else void this.endpoint.close(0, '', 100);
  }
}

/** One request stream: sink of the request body, source of the response body. */
class H3UpstreamExchange implements FrameSink, FrameSource {
  readonly conn: H3Conn;
  readonly session: H3ClientSession;
  readonly id: number;
  readonly ctx: RequestContext;
  readonly gen: number;
  readonly handler: UpstreamHandler;
  readonly out: StreamOut;
  readonly reader: MessageReader;
  private requestTrailers: readonly string[] | null;
  /** A final response head, held until the chunk that carried it is processed (see onWire). */
  private pendingHead: string[] | null;
  private hasHead: boolean;
  private hasTrailers: boolean;
  private isRecvEnded: boolean;
  isSendDone: boolean;
  /** The engine was told (done or error) or cancelled us; the pool was told once. */
  private isFinished: boolean;

  constructor(conn: H3Conn, session: H3ClientSession, id: number, ctx: RequestContext, gen: number, handler: UpstreamHandler) {
    this.conn = conn;
    this.session = session;
    this.id = id;
    this.ctx = ctx;
    this.gen = gen;
    this.handler = handler;
    this.out = new StreamOut(session.quic, id);
    this.reader = new MessageReader(new ResponseSide(this), session.decoder, id, { kind: MessageKind.Response, isResponseToHead: ctx.method === 'HEAD' });
    this.requestTrailers = null;
    this.pendingHead = null;
    this.hasHead = false;
    this.hasTrailers = false;
    this.isRecvEnded = false;
    this.isSendDone = false;
    this.isFinished = false;
  }

  // ---- response side ----

  onWire(data: Buffer, fin: boolean): void {
    if (this.isFinished) return;
    if (data.length > 0) this.reader.push(data);
    if (fin && !this.reader.isClosed) this.reader.end();
    // The head is reported after the chunk that carried it, so a response that ends in the
    // same chunk (no body, no trailers: e.g. gRPC trailers-only) is reported as ending there.
    if (this.pendingHead !== null) this.deliverHead();
    if (this.isRecvEnded && !this.isFinished) this.finishOk();
  }

  onHead(fields: string[], isTrailers: boolean): void {
    if (this.isFinished) return;
    if (isTrailers) {
      this.hasTrailers = true;
      this.ctx.responseBody.pushTrailers(fields);
      return;
    }
    const status = this.reader.info.status;
    if (status < 200) return; // interim responses are not relayed (as for HTTP/1.1)
    this.pendingHead = fields;
  }

  private deliverHead(): void {
    const fields = this.pendingHead as string[];
    this.pendingHead = null;
    this.hasHead = true;
    const isEnd = this.isRecvEnded && !this.hasTrailers && this.ctx.responseBody.totalBytes === 0;
    this.ctx.responseBody.source = this;
    this.handler.onUpstreamHead(this.ctx, this.gen, this.reader.info.status, fields, isEnd);
  }

  onBody(chunk: Uint8Array): void {
    if (!this.isFinished) this.ctx.responseBody.push(asBuffer(chunk));
  }

  onMessageEnd(): void {
    this.isRecvEnded = true;
  }

  onMessageError(err: H3Error): void {
    if (err.isConnectionError) {
      this.session.connectionError(err);
      return;
    }
    this.fail(new SkiffError(ErrorCode.UpstreamProtocol, 'upstream', `bad HTTP/3 response from ${this.conn.endpointKey}: ${err.message}`), err.code);
  }

  private finishOk(): void {
    this.isFinished = true;
    if (!this.hasHead) {
      this.fail(new SkiffError(ErrorCode.UpstreamProtocol, 'upstream', 'HTTP/3 response ended without a head'), H3_NO_ERROR);
      return;
    }
    this.detach();
    // The response is complete; request bytes still waiting are not wanted any more.
    this.isSendDone = true;
    if (!this.out.isClosed) this.out.reset(H3_NO_ERROR);
    this.ctx.responseBody.end();
    this.streamDone();
    this.handler.onUpstreamDone(this.ctx, this.gen);
  }

  /** The server reset its side (RESET_STREAM) or stopped ours (STOP_SENDING). */
  onPeerReset(code: number, isStopSending: boolean): void {
    if (this.isFinished) return;
    if (isStopSending && code === H3_NO_ERROR) {
      // RFC 9114 §4.1: the server answers without the rest of the body; keep reading.
      this.isSendDone = true;
      this.detach();
      return;
    }
    const isRefused = code === H3_REQUEST_REJECTED;
    const msg = isRefused ? 'upstream refused the stream' : this.hasHead ? `upstream reset the stream mid-response (code 0x${code.toString(16)})` : `upstream reset the stream (code 0x${code.toString(16)})`;
    this.fail(new SkiffError(ErrorCode.UpstreamReset, 'upstream', msg, isRefused), H3_REQUEST_CANCELLED);
  }

  onRefused(): void {
    if (this.isFinished || this.hasHead) return;
    this.fail(new SkiffError(ErrorCode.UpstreamReset, 'upstream', 'upstream sent GOAWAY before processing the stream', true), H3_REQUEST_CANCELLED);
  }

  onConnectionGone(error: QuicError | null): void {
    if (this.isFinished) return;
    this.out.isClosed = true;
    this.isSendDone = true;
    const why = error === null ? 'closed' : error.message;
    this.fail(new SkiffError(ErrorCode.UpstreamReset, 'upstream', `HTTP/3 connection to ${this.conn.endpointKey} ${error === null ? why : `failed: ${why}`}`), H3_NO_ERROR);
  }

  onWritable(): void {
    const drained = this.out.flush();
    if (this.isFinished) return;
    if (this.out.isClosed) this.isSendDone = true;
    else if (drained && this.ctx.isLive(this.gen)) this.ctx.requestBody.resumeSink();
  }

  private fail(err: SkiffError, code: number): void {
    this.isFinished = true;
    this.detach();
    this.abortStream(code);
    this.streamDone();
    this.handler.onUpstreamError(this.ctx, this.gen, err);
  }

  pauseSource(): void {
    this.session.quic.pauseStream(this.id);
  }

  resumeSource(): void {
    this.session.quic.resumeStream(this.id);
  }

  // ---- request side (FrameSink of ctx.requestBody) ----

  onData(chunk: Buffer): boolean {
    if (this.out.isClosed) return true;
    return writeDataFrame(this.out, this.session.scratch, chunk, false);
  }

  onTrailers(raw: readonly string[]): void {
    this.requestTrailers = raw;
  }

  onEnd(): void {
    if (this.out.isClosed) return;
    this.isSendDone = true;
    const trailers = this.requestTrailers;
    if (trailers !== null && trailers.length > 0) {
      const fields = this.session.fields;
      fields.length = appendLowerFields(trailers, fields, 0);
      const frame = this.session.encoder.encodeHeadersFrameView(fields);
      fields.length = 0;
      this.out.write(frame, false, true);
    } else {
      this.out.end();
    }
  }

  onReset(_err: SkiffError): void {
    this.cancel(_err);
  }

  // ---- engine handle ----

  cancel(_err: SkiffError): void {
    if (this.isFinished) return;
    this.isFinished = true;
    this.detach();
    this.abortStream(H3_REQUEST_CANCELLED);
    this.streamDone();
  }

  private abortStream(code: number): void {
    this.reader.abort();
    const quic = this.session.quic;
    if (!this.isRecvEnded) quic.streamShutdown(this.id, 'read', code);
    this.out.reset(code);
    this.isSendDone = true;
  }

  private detach(): void {
    const q = this.ctx.requestBody;
    if (q.sink === this) q.detachSink();
  }

  private streamDone(): void {
    const s = this.session;
    if (s.streams.get(this.id) === this) s.streams.delete(this.id);
    if (this.ctx.upstreamHandle === this) this.ctx.upstreamHandle = null;
    this.conn.events.onStreamDone(this.conn);
    this.conn.refreshCapacity();
  }
}

/** The response MessageReader's handler (FrameSink already uses onData/onEnd on the exchange). */
class ResponseSide implements MessageHandler {
  readonly ex: H3UpstreamExchange;
  constructor(ex: H3UpstreamExchange) {
    this.ex = ex;
  }
  onHeaders(fields: string[], isTrailers: boolean): void {
    this.ex.onHead(fields, isTrailers);
  }
  onData(chunk: Uint8Array): void {
    this.ex.onBody(chunk);
  }
  onEnd(): void {
    this.ex.onMessageEnd();
  }
  onError(error: H3Error): void {
    this.ex.onMessageError(error);
  }
}
