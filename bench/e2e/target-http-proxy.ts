/**
 * The `http-proxy` (npm) target, run as its own process by bench/e2e/node-proxies.ts:
 *   node dist/bench/e2e/target-http-proxy.js --port P --upstream U
 * A node:http server handing every request to http-proxy, with a keep-alive agent to the
 * upstream (without one, http-proxy opens a connection per request). HTTP/1.1 only.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import httpProxy from 'http-proxy';

const { values } = parseArgs({ options: { port: { type: 'string' }, upstream: { type: 'string' } } });
const port = Number(values.port);
const upstream = Number(values.upstream);
if (!Number.isInteger(port) || !Number.isInteger(upstream)) {
  process.stderr.write('usage: target-http-proxy --port P --upstream U\n');
  process.exit(2);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256 });
const proxy = httpProxy.createProxyServer({ target: `http://127.0.0.1:${upstream}`, agent });
proxy.on('error', (err, _req, res) => {
  process.stderr.write(`http-proxy: ${err.message}\n`);
  if (res instanceof http.ServerResponse && !res.headersSent) res.writeHead(502).end();
  else res.destroy();
});

const server = http.createServer((req, res) => proxy.web(req, res));
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1');
process.once('SIGTERM', () => {
  server.close();
  agent.destroy();
  process.exit(0);
});
