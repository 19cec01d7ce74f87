/**
 * The admin listener (default 127.0.0.1:15000): a small node:http server whose routes are
 * answered by an AdminHandler supplied by the runtime, so the admin logic itself stays free of
 * protocol imports.
 */
import http from 'node:http';
import type { SocketAddress } from '../../src/config/types.js';

export interface AdminResponse {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
}

export interface AdminHandler {
  handle(method: string, path: string, body: string): AdminResponse | Promise<AdminResponse>;
}

export class AdminServer {
  private readonly server: http.Server;
  private readonly address: SocketAddress;

  constructor(address: SocketAddress, handler: AdminHandler) {
    this.address = address;
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= 1 << 20) chunks.push(c);
      });
      req.on('end', () => {
        Promise.resolve(handler.handle(req.method ?? 'GET', req.url ?? '/', Buffer.concat(chunks).toString('utf8'))).then(
          (r) => {
            res.writeHead(r.status, { 'content-type': r.contentType, 'content-length': Buffer.byteLength(r.body) });
            res.end(r.body);
          },
          (err: unknown) => {
            const body = `admin error: ${err instanceof Error ? err.message : String(err)}\n`;
            res.writeHead(500, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
            res.end(body);
          },
        );
      });
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.address.port, this.address.host, () => {
        this.server.off('error', reject);
        const a = this.server.address();
        resolve(typeof a === 'object' && a !== null ? a.port : this.address.port);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
