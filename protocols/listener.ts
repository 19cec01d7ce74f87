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
import { H1ServerConn, H1ServerSettings } from './h1/server-conn.js';
import { H2Listener } from './h2/server.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export class Listener {
  readonly config: ListenerConfig;
  readonly server: net.Server;
  private readonly h1: H1ServerSettings | null;
  private readonly h2: H2Listener | null;
  private readonly sockets: Set<net.Socket>;
  /** Downstream connections accepted (TLS: handshake done) and closed, for /metrics. */
  connectionsOpened: number;
  connectionsClosed: number;

  constructor(engine: ProxyEngine, arena: ContextArena, config: ListenerConfig, limits: Limits) {
    this.config = config;
    // Never serve a mesh listener in cleartext: until mesh TLS is wired in, refuse to start.
    if (config.meshTls) throw new Error(`listener ${config.name}: tls: mesh is not supported yet`);
    const isTls = config.tls !== null;
    const hasH1 = config.protocols.includes('http1');
    const hasH2 = config.protocols.includes('h2') || config.protocols.includes('h2c');
    this.h1 = hasH1 ? new H1ServerSettings(engine, arena, config, limits, isTls) : null;
    this.h2 = hasH2 ? new H2Listener(engine, arena, config, limits, isTls) : null;
    this.sockets = new Set();
    this.connectionsOpened = 0;
    this.connectionsClosed = 0;
    if (config.tls !== null) {
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
  }

  /** Binds the socket; resolves with the bound port (useful with port 0). */
  listen(): Promise<number> {
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

  /** Stops accepting; existing connections finish their requests (idle ones close now). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.h1 !== null) {
      // Idle HTTP/1.1 connections close now; busy ones answer with `connection: close`.
      this.h1.isDraining = true;
      for (const c of this.h1.conns) c.drain();
    }
    if (this.h2 !== null) {
      // GOAWAY to every HTTP/2 session: no new streams, in-flight ones finish.
      this.h2.server.close();
    }
    await closed;
  }

  /** Destroys every remaining connection (after the drain timeout). */
  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  get connectionCount(): number {
    return this.sockets.size;
  }
}
