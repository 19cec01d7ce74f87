/**
 * The `node-floor` target, run as its own process by bench/e2e/node-proxies.ts:
 *   node dist/bench/e2e/target-node-floor.js --port P --h2-port Q --upstream U
 * Not a proxy anyone should run: the least Node can do for each scenario, as a floor to read
 * Skiff's figures against (docs/DESIGN.md, "Where the time goes").
 * - Port P: every client connection is piped byte for byte to its own upstream connection
 *   (`net` sockets, `pipe()` both ways): no parsing at all.
 * - Port Q: HTTP/2 with prior knowledge on node:http2; each stream borrows an idle keep-alive
 *   HTTP/1.1 connection to the upstream (or opens one), writes `GET path`, reads the response
 *   by its content-length, answers with `respond()` and `end(body)`. Request bodies are not
 *   forwarded (501): the rig's HTTP/2 scenario is GETs.
 */
import http2 from 'node:http2';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string' }, 'h2-port': { type: 'string' }, upstream: { type: 'string' } } });
const port = Number(values.port);
const h2Port = Number(values['h2-port']);
const upstream = Number(values.upstream);
if (!Number.isInteger(port) || !Number.isInteger(h2Port) || !Number.isInteger(upstream)) {
  process.stderr.write('usage: target-node-floor --port P --h2-port Q --upstream U\n');
  process.exit(2);
}

const pipeServer = net.createServer({ noDelay: true }, (client) => {
  const up = net.connect({ port: upstream, host: '127.0.0.1', noDelay: true });
  client.pipe(up);
  up.pipe(client);
  client.on('error', () => up.destroy());
  up.on('error', () => client.destroy());
  client.on('close', () => up.destroy());
  up.on('close', () => client.destroy());
});
pipeServer.listen(port, '127.0.0.1');

type Waiter = (status: number, body: Buffer | null) => void;

/** One keep-alive HTTP/1.1 connection to the upstream, one request at a time. */
class UpConn {
  readonly socket: net.Socket;
  private buf: Buffer;
  private waiter: Waiter | null;

  constructor(onClose: (c: UpConn) => void) {
    this.buf = Buffer.alloc(0);
    this.waiter = null;
    this.socket = net.connect({ port: upstream, host: '127.0.0.1', noDelay: true });
    this.socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.parse();
    });
    const fail = (): void => {
      const w = this.waiter;
      this.waiter = null;
      onClose(this);
      if (w !== null) w(502, null);
    };
    this.socket.on('error', fail);
    this.socket.on('close', fail);
  }

  request(path: string, authority: string, waiter: Waiter): void {
    this.waiter = waiter;
    this.socket.write(`GET ${path} HTTP/1.1\r\nhost: ${authority}\r\n\r\n`, 'latin1');
  }

  private parse(): void {
    const b = this.buf;
    const end = b.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = b.toString('latin1', 0, end);
    const m = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (m === null) {
      this.socket.destroy(); // the floor handles content-length responses only
      return;
    }
    const len = Number(m[1]);
    if (b.length < end + 4 + len) return;
    const body = b.subarray(end + 4, end + 4 + len);
    this.buf = b.subarray(end + 4 + len);
    const w = this.waiter;
    this.waiter = null;
    if (w !== null) w(Number(head.slice(9, 12)), body);
  }
}

const idle: UpConn[] = [];
const removeIdle = (c: UpConn): void => {
  const i = idle.indexOf(c);
  if (i >= 0) idle.splice(i, 1);
};

const h2 = http2.createServer({ settings: { maxConcurrentStreams: 256 } });
h2.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
  stream.on('error', () => undefined);
  if (!stream.endAfterHeaders) {
    stream.respond({ ':status': 501 }, { endStream: true });
    return;
  }
  const conn = idle.pop() ?? new UpConn(removeIdle);
  conn.request(String(headers[':path'] ?? '/'), String(headers[':authority'] ?? 'localhost'), (status, body) => {
    if (body !== null) idle.push(conn);
    if (stream.destroyed) return;
    if (body === null) {
      stream.respond({ ':status': 502 }, { endStream: true });
      return;
    }
    stream.respond({ ':status': status, 'content-length': body.length });
    stream.end(body);
  });
});
h2.on('sessionError', () => undefined);
h2.listen(h2Port, '127.0.0.1');

process.once('SIGTERM', () => process.exit(0));
