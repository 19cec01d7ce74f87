/**
 * The `@fastify/http-proxy` target, run as its own process by bench/e2e/node-proxies.ts:
 *   node dist/bench/e2e/target-fastify.js --port P --h2-port Q --upstream U
 * Two Fastify instances in this one process (so CPU and RSS are of one process): HTTP/1.1 on
 * P, cleartext HTTP/2 with prior knowledge on Q (Fastify's `http2: true` serves only h2 on a
 * cleartext port). Both forward over undici pools (@fastify/reply-from's default client)
 * with keep-alive; logging off.
 */
import Fastify from 'fastify';
import fastifyHttpProxy from '@fastify/http-proxy';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { port: { type: 'string' }, 'h2-port': { type: 'string' }, upstream: { type: 'string' } },
});
const port = Number(values.port);
const h2Port = Number(values['h2-port']);
const upstream = `http://127.0.0.1:${Number(values.upstream)}`;
if (!Number.isInteger(port) || !Number.isInteger(h2Port)) {
  process.stderr.write('usage: target-fastify --port P --h2-port Q --upstream U\n');
  process.exit(2);
}

const undici = { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 };

const h1 = Fastify({ logger: false, keepAliveTimeout: 60_000 });
await h1.register(fastifyHttpProxy, { upstream, undici });
await h1.listen({ host: '127.0.0.1', port });

const h2 = Fastify({ logger: false, http2: true });
await h2.register(fastifyHttpProxy, { upstream, undici });
await h2.listen({ host: '127.0.0.1', port: h2Port });

process.once('SIGTERM', () => {
  void Promise.all([h1.close(), h2.close()]).then(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
