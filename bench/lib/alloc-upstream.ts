/**
 * Upstream for the allocation bench and the soak, run as its own process so none of its
 * allocations land in the sidecar's count. HTTP/1.1 (node:http) and, with `--h2c`, a cleartext
 * HTTP/2 server, both on 127.0.0.1 ephemeral ports.
 *
 * GET/HEAD: 200 "ok". Any request with a body: reads it all (nothing answers before the body
 * is consumed: an early answer makes proxies stop forwarding), then 200 with the byte count as
 * the body, so clients can check that every byte arrived.
 *
 * Prints `{"pid":..,"h1":port,"h2c":port|null}` on its first stdout line; exits on SIGTERM.
 */
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';

const withH2c = process.argv.includes('--h2c');
const OK = Buffer.from('ok');

const h1 = http.createServer({ keepAliveTimeout: 120_000, requestTimeout: 0 }, (req, res) => {
  if (req.method === 'GET' || req.method === 'HEAD') {
    res.writeHead(200, ['content-type', 'text/plain', 'content-length', '2']);
    res.end(OK);
    req.resume();
    return;
  }
  let n = 0;
  req.on('data', (c: Buffer) => {
    n += c.length;
  });
  req.on('end', () => {
    const body = String(n);
    res.writeHead(200, ['content-type', 'text/plain', 'content-length', String(body.length)]);
    res.end(body);
  });
});
h1.headersTimeout = 60_000;

let h2: http2.Http2Server | null = null;
if (withH2c) {
  h2 = http2.createServer({ settings: { maxConcurrentStreams: 1000, initialWindowSize: 1 << 20 } });
  h2.on('stream', (stream, headers) => {
    const method = headers[':method'];
    if (method === 'GET' || method === 'HEAD') {
      stream.respond({ ':status': 200, 'content-type': 'text/plain', 'content-length': '2' });
      stream.end(OK);
      stream.resume();
      return;
    }
    let n = 0;
    stream.on('data', (c: Buffer) => {
      n += c.length;
    });
    stream.on('end', () => {
      const body = String(n);
      stream.respond({ ':status': 200, 'content-type': 'text/plain', 'content-length': String(body.length) });
      stream.end(body);
    });
    stream.on('error', () => undefined);
  });
  h2.on('sessionError', () => undefined);
}

function listen(server: http.Server | http2.Http2Server): Promise<number> {
  return new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => res((server.address() as AddressInfo).port));
  });
}

const h1Port = await listen(h1);
const h2Port = h2 === null ? null : await listen(h2);
process.stdout.write(JSON.stringify({ pid: process.pid, h1: h1Port, h2c: h2Port }) + '\n');

process.once('SIGTERM', () => {
  h1.closeAllConnections();
  h1.close();
  if (h2 !== null) h2.close();
  setTimeout(() => process.exit(0), 100).unref();
});
