/**
 * One listening socket per configured listener. Cleartext listeners with both `http1` and
 * `h2c` look at the first bytes of each connection: the HTTP/2 connection preface
 * (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`) goes to the HTTP/2 adapter, anything else to HTTP/1.1.
 * TLS listeners choose by ALPN (`h2`, `http/1.1`); a client without ALPN gets HTTP/1.1.
 */
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import type { ContextArena } from '../src/arena.js';
import type { Limits, ListenerConfig } from '../src/config/types.js';
import type { ProxyEngine } from '../src/proxy/engine.js';
import type { OverloadManager } from '../src/overload.js';
import type { IdentityLog, IdentityStore } from '../mesh/identity.js';
import { LogBudget } from '../src/telemetry/log-budget.js';
import { H1ServerConn, H1ServerSettings } from './h1/server-conn.js';
import { checkMeshPeer, meshServerOptions, watchRotation } from './tls/mesh.js';
import { H2Listener } from './h2/server.js';
import type { H3Listener, H3MeshOptions } from './h3/server.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** Refused mesh handshakes logged per second per listener; the rest are counted in one line. */
const REFUSALS_LOGGED_PER_SECOND = 10;

export class Listener {
  readonly config: ListenerConfig;
  readonly server: net.Server;
  private readonly h1: H1ServerSettings | null;
  private readonly h2: H2Listener | null;
  /**
   * HTTP/3 on UDP at the same host:port (TLS listeners with `h3` in protocols). Created by
   * `listen()`: the HTTP/3 modules and the QUIC binding (~6 MiB of RSS) are imported only by a
   * sidecar that serves HTTP/3.
   */
  private h3: H3Listener | null;
  /** What `listen()` needs to create `h3`; null when the listener has no HTTP/3. */
  private h3Args: { engine: ProxyEngine; arena: ContextArena; limits: Limits; mesh: H3MeshOptions | null } | null;
  /** A reloaded limits.maxConnections not yet applied to `h3` (set before `listen()`); -1: none. */
  private h3MaxConnections: number;
  private readonly sockets: Set<net.Socket>;
  /** Downstream connections accepted (TLS: handshake done) and closed, for /metrics. */
  connectionsOpened: number;
  connectionsClosed: number;
  // ---- mesh TLS (`tls: mesh`) ----
  /** Stops following identity rotations; null unless mesh. */
  private readonly unwatchIdentity: (() => void) | null;
  private readonly log: IdentityLog | null;
  /** Mesh handshakes refused (untrusted or missing peer certificate). */
  meshRefusals: number;
  /** TCP connections closed at accept: over limits.maxConnections (node's `drop`), or while the overload manager refuses connections. */
  tcpRefusedAtLimit: number;
  tcpRefusedOverload: number;
  private readonly overload: OverloadManager;
  private readonly refusalLog: LogBudget;

  /**
   * `identity` is required for `tls: mesh` listeners (mTLS with the identity certificate, peers
   * from the trust bundle, the peer's SPIFFE ID on every request's context); `log` receives
   * refused mesh handshakes.
   */
  constructor(engine: ProxyEngine, arena: ContextArena, config: ListenerConfig, limits: Limits, identity: IdentityStore | null = null, log: IdentityLog | null = null) {
    this.config = config;
    // Never serve a mesh listener in cleartext or without an identity.
    if (config.meshTls && identity === null) throw new Error(`listener ${config.name}: tls: mesh needs an identity`);
    const isTls = config.tls !== null;
    const hasH1 = config.protocols.includes('http1');
    const hasH2 = config.protocols.includes('h2') || config.protocols.includes('h2c');
    this.h1 = hasH1 ? new H1ServerSettings(engine, arena, config, limits, isTls || config.meshTls) : null;
    this.h2 = hasH2 ? new H2Listener(engine, arena, config, limits, isTls || config.meshTls) : null;
    // HTTP/3 on mesh listeners: the identity's certificate, client chains checked against the
    // bundle by the H3 side, refusals logged and counted here like the TCP ones.
    const h3Mesh: H3MeshOptions | null =
      config.meshTls && identity !== null
        ? {
            identity,
            onRefused: (peer, reason, remote) => {
              this.meshRefusals++;
              this.logMeshFailure(remote, peer, reason, 'mesh handshake refused: peer certificate not trusted');
            },
            onConfigError: (err) => this.log?.error({ listener: config.name, err: err.message }, 'mesh identity rotation: HTTP/3 certificate not updated'),
          }
        : null;
    this.h3 = null;
    this.h3Args = (isTls || config.meshTls) && config.protocols.includes('h3') ? { engine, arena, limits, mesh: h3Mesh } : null;
    this.h3MaxConnections = -1;
    this.sockets = new Set();
    this.connectionsOpened = 0;
    this.connectionsClosed = 0;
    this.unwatchIdentity = null;
    this.log = log;
    this.meshRefusals = 0;
    this.tcpRefusedAtLimit = 0;
    this.tcpRefusedOverload = 0;
    this.overload = engine.overload;
    this.refusalLog = new LogBudget(REFUSALS_LOGGED_PER_SECOND);
    if (config.meshTls && identity !== null) {
      const alpn: string[] = [];
      if (hasH2) alpn.push('h2');
      if (hasH1) alpn.push('http/1.1');
      const server = tls.createServer(meshServerOptions(identity.current, alpn));
      server.on('secureConnection', (socket: tls.TLSSocket) => this.onMeshSecure(socket));
      server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => this.onMeshClientError(err, socket));
      this.unwatchIdentity = watchRotation(server, identity);
      this.server = server;
    } else if (config.tls !== null) {
      const alpn: string[] = [];
      if (hasH2) alpn.push('h2');
      if (hasH1) alpn.push('http/1.1');
      this.server = tls.createServer({
        ALPNProtocols: alpn,
        cert: readFileSync(config.tls.cert),
        key: readFileSync(config.tls.key),
      });
      this.server.on('secureConnection', (socket: tls.TLSSocket) => this.onSecure(socket));
      this.server.on('tlsClientError', (_err: Error, socket: tls.TLSSocket) => socket.destroy());
    } else {
      this.server = net.createServer({ noDelay: true }, (socket) => this.onPlain(socket));
    }
    // limits.maxConnections: node accepts and closes the connection past it before any JS
    // object is made (Envoy: accept, close, downstream_cx_overflow). Counts TCP connections,
    // TLS handshakes in progress included. Never 0: Node 20 reads 0 as "no limit", later
    // versions as "refuse all".
    this.server.maxConnections = limits.maxConnections;
    this.server.on('drop', () => this.tcpRefusedAtLimit++);
    // Over the memory connection mark: TLS connections are closed before the handshake (the
    // plain ones in onPlain). node's TLS wrapper then reports ECONNRESET to tlsClientError.
    if (this.server instanceof tls.Server) this.server.prependListener('connection', (raw: net.Socket) => this.refuseIfOverloaded(raw));
  }

  /** Closes `socket` at once when the overload manager refuses new connections; true if it did. */
  private refuseIfOverloaded(socket: net.Socket): boolean {
    if (!this.overload.isRefusingConnections) return false;
    this.tcpRefusedOverload++;
    socket.destroy();
    return true;
  }

  /** A reloaded limits.maxConnections; connections over a lowered limit stay open. */
  setMaxConnections(n: number): void {
    this.server.maxConnections = n;
    if (this.h3 !== null) this.h3.setMaxConnections(n);
    else this.h3MaxConnections = n;
  }

  /** Connections refused at limits.maxConnections (TCP, plus QUIC Initials dropped). */
  get connectionsRefusedAtLimit(): number {
    return this.tcpRefusedAtLimit + (this.h3 === null ? 0 : this.h3.refusedAtLimit);
  }

  /** Connections refused over limits.memoryConnectionWatermark (TCP, plus QUIC Initials dropped). */
  get connectionsRefusedOverload(): number {
    return this.tcpRefusedOverload + (this.h3 === null ? 0 : this.h3.refusedOverload);
  }

  /**
   * Binds the socket; resolves with the bound port (useful with port 0). With `h3`, also
   * binds UDP on the same port and advertises it (`alt-svc: h3=":PORT"`) on HTTP/1.1 and
   * HTTP/2 responses.
   */
  async listen(): Promise<number> {
    const port = await this.listenTcp();
    const args = this.h3Args;
    const tlsFiles = this.config.tls;
    if (args !== null) {
      try {
        const { H3Listener } = await import('./h3/server.js');
        const h3 = new H3Listener(args.engine, args.arena, this.config, args.limits, args.mesh);
        if (this.h3MaxConnections >= 0) h3.setMaxConnections(this.h3MaxConnections);
        this.h3 = h3;
        // A mesh listener's H3 side takes its certificate from the identity.
        if (tlsFiles === null) await h3.listen({ host: this.config.address.host, port });
        else await h3.listen({ host: this.config.address.host, port, certPem: readFileSync(tlsFiles.cert), keyPem: readFileSync(tlsFiles.key) });
      } catch (err) {
        this.server.close();
        throw err;
      }
      const altSvc = `h3=":${port}"`;
      if (this.h1 !== null) this.h1.altSvc = altSvc;
      if (this.h2 !== null) this.h2.altSvc = altSvc;
    }
    return port;
  }

  private listenTcp(): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen({ host: this.config.address.host, port: this.config.address.port, backlog: 1024 }, () => {
        this.server.off('error', onError);
        const addr = this.server.address();
        resolve(typeof addr === 'object' && addr !== null ? addr.port : this.config.address.port);
      });
    });
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    this.connectionsOpened++;
    socket.once('close', () => {
      this.sockets.delete(socket);
      this.connectionsClosed++;
    });
  }

  private onPlain(socket: net.Socket): void {
    if (this.refuseIfOverloaded(socket)) return;
    this.track(socket);
    socket.setNoDelay(true);
    if (this.h2 === null && this.h1 !== null) {
      new H1ServerConn(socket, this.h1);
      return;
    }
    if (this.h1 === null && this.h2 !== null) {
      this.h2.attach(socket);
      return;
    }
    this.sniff(socket, null);
  }

  /** Reads until the first bytes decide between the preface and HTTP/1.1. */
  private sniff(socket: net.Socket, seen: Buffer | null): void {
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      const data = seen === null ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(data.length, PREFACE.length);
      const isPrefix = data.compare(PREFACE, 0, n, 0, n) === 0;
      if (isPrefix && data.length < PREFACE.length) {
        socket.resume();
        this.sniff(socket, data);
        return;
      }
      if (isPrefix && this.h2 !== null) {
        // node:http2 drains the socket's read buffer itself when it takes the socket over.
        socket.unshift(data);
        this.h2.attach(socket);
      } else if (this.h1 !== null) {
        const conn = new H1ServerConn(socket, this.h1);
        socket.resume();
        conn.read(data);
      } else {
        socket.destroy();
      }
    });
    socket.on('error', () => socket.destroy());
  }

  private onSecure(socket: tls.TLSSocket): void {
    this.track(socket);
    if (socket.alpnProtocol === 'h2' && this.h2 !== null) this.h2.attach(socket);
    else if (this.h1 !== null) new H1ServerConn(socket, this.h1);
    else socket.destroy();
  }

  /**
   * A mesh handshake completed: refuse a peer whose certificate is missing or does not chain
   * to the bundle before reading a byte from it (see protocols/tls/mesh.ts for why node does
   * not reject it itself), else hand it on with its SPIFFE ID, read once per connection.
   */
  private onMeshSecure(socket: tls.TLSSocket): void {
    const peer = checkMeshPeer(socket);
    if (peer.refusal !== null) {
      this.meshRefusals++;
      this.logMeshFailure(socket.remoteAddress ?? null, peer.spiffeId, peer.refusal, 'mesh handshake refused: peer certificate not trusted');
      socket.destroy();
      return;
    }
    this.track(socket);
    if (socket.alpnProtocol === 'h2' && this.h2 !== null) this.h2.attach(socket, peer.spiffeId);
    else if (this.h1 !== null) new H1ServerConn(socket, this.h1, peer.spiffeId);
    else socket.destroy();
  }

  /** The handshake failed inside TLS (e.g. the peer rejected our certificate); resets and probes stay at debug. */
  private onMeshClientError(err: Error, socket: tls.TLSSocket): void {
    const code = (err as NodeJS.ErrnoException).code ?? err.message;
    if (code.startsWith('ERR_SSL')) this.logMeshFailure(socket.remoteAddress ?? null, '', code, 'mesh handshake failed');
    else this.log?.debug({ listener: this.config.name, remote: socket.remoteAddress ?? null, reason: code }, 'mesh handshake failed');
    socket.destroy();
  }

  /** At most REFUSALS_LOGGED_PER_SECOND lines a second (TCP and QUIC together); the rest are counted in one line. */
  private logMeshFailure(remote: string | null, peer: string, reason: string, msg: string): void {
    const log = this.log;
    if (log === null) return;
    const allowed = this.refusalLog.take(performance.now());
    if (this.refusalLog.suppressed > 0) log.warn({ listener: this.config.name, suppressed: this.refusalLog.suppressed }, 'more mesh handshakes refused than logged');
    if (!allowed) return;
    log.warn({ listener: this.config.name, peer: peer === '' ? null : peer, remote, reason }, msg);
  }

  /** Stops accepting; existing connections finish their requests (idle ones close now). */
  async close(): Promise<void> {
    if (this.unwatchIdentity !== null) this.unwatchIdentity();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.h1 !== null) {
      // Idle HTTP/1.1 connections close now; busy ones answer with `connection: close`.
      this.h1.isDraining = true;
      for (const c of this.h1.conns) c.drain();
    }
    if (this.h2 !== null) {
      // GOAWAY to every HTTP/2 session: no new streams, in-flight ones finish.
      this.h2.drain();
    }
    // HTTP/3: GOAWAY to every QUIC connection, close each when its requests are done.
    if (this.h3 !== null) await Promise.all([closed, this.h3.close()]);
    await closed;
  }

  /** Destroys every remaining connection (after the drain timeout). */
  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
    if (this.h3 !== null) this.h3.destroyAll();
  }

  get connectionCount(): number {
    return this.sockets.size;
  }
}
