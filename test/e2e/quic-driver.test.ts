// Interop of the QUIC driver (protocols/quic) with ngtcp2's example programs from Debian:
// gtlsclient against our server endpoint, our client endpoint against gtlsserver. Both speak
// HTTP/3 and our driver does not yet: the tests check the QUIC layer only (handshake, ALPN
// h3, the peer's HTTP/3 control and QPACK streams arriving as plain uni stream data, a
// graceful close). Every process started here is stopped by its PID in `finally`.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  NOOP_HANDLER,
  QuicEndpoint,
  createClientConfig,
  createServerConfig,
  type QuicConnection,
  type QuicConnectionHandler,
  type QuicError,
} from '../../protocols/quic/index.js';
import { ensureCerts } from '../helpers/certs.js';

const HOST = '127.0.0.1';
const GTLS_CLIENT = '/usr/bin/gtlsclient';
const GTLS_SERVER = '/usr/sbin/gtlsserver';
/** HTTP/3's H3_NO_ERROR, the code an HTTP/3 peer expects on a graceful close. */
const H3_NO_ERROR = 0x100;

async function waitFor(what: string, pred: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function stopByPid(child: ChildProcess): void {
  if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function collect(child: ChildProcess): { text: () => string } {
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-20_000)));
  child.stderr?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-20_000)));
  return { text: () => out };
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, HOST, () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('QUIC driver interop with ngtcp2 (gtlsclient / gtlsserver)', () => {
  it('gtlsclient completes a handshake with our server; its uni streams 2, 6, 10 arrive; we close gracefully', { skip: !existsSync(GTLS_CLIENT) }, async () => {
    const certs = ensureCerts();
    const streams = new Map<number, number>();
    const closed: (QuicError | null)[] = [];
    let serverConn: QuicConnection | null = null;
    const handler: QuicConnectionHandler = {
      ...NOOP_HANDLER,
      onStreamData(_c, id, data) {
        streams.set(id, (streams.get(id) ?? 0) + data.length);
      },
      onClosed(_c, err) {
        closed.push(err);
      },
    };
    const server = await QuicEndpoint.open({
      host: HOST,
      server: {
        config: createServerConfig({ certPem: certs.pem.cert, keyPem: certs.pem.key, alpn: ['h3'] }),
        onConnection: (conn) => {
          serverConn = conn;
          return handler;
        },
      },
    });
    const child = spawn(GTLS_CLIENT, ['-q', '--timeout=10s', HOST, String(server.port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = collect(child);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await waitFor('handshake with gtlsclient', () => serverConn !== null && serverConn.isEstablished, 10_000);
      const conn = serverConn as unknown as QuicConnection;
      assert.equal(conn.alpn, 'h3');
      // ngtcp2's HTTP/3 client opens its control stream and the QPACK encoder and decoder streams.
      await waitFor('control and QPACK streams', () => streams.has(2) && streams.has(6) && streams.has(10), 5000);
      assert.ok((streams.get(2) ?? 0) > 0, 'control stream carries SETTINGS');
      conn.close(H3_NO_ERROR, '');
      const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 5000))]);
      assert.equal(code, 0, `gtlsclient exit (${String(code)}): ${out.text()}`);
      await waitFor('onClosed', () => closed.length === 1, 5000);
      assert.equal(closed[0], null);
      assert.equal(server.counters.recvErrors, 0);
    } finally {
      stopByPid(child);
      await server.close(0, '', 2000);
    }
    assert.equal(server.connectionCount, 0);
  });

  it('our client completes a handshake with gtlsserver (ALPN h3, certificate verified)', { skip: !existsSync(GTLS_SERVER) }, async () => {
    const certs = ensureCerts();
    const port = await freeUdpPort();
    const docroot = mkdtempSync(join(tmpdir(), 'skiff-quic-'));
    const child = spawn(GTLS_SERVER, ['-q', '--timeout=10s', '-d', docroot, HOST, String(port), certs.key, certs.cert], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = collect(child);
    const client = await QuicEndpoint.open({ host: HOST, client: createClientConfig({ caPem: certs.pem.ca, alpn: ['h3'] }) });
    const closed: (QuicError | null)[] = [];
    const streams = new Set<number>();
    const handler: QuicConnectionHandler = {
      ...NOOP_HANDLER,
      onStreamData(_c, id) {
        streams.add(id);
      },
      onClosed(_c, err) {
        closed.push(err);
      },
    };
    try {
      // gtlsserver needs a moment to bind: retry the handshake a few times.
      let conn: QuicConnection | null = null;
      for (let attempt = 0; attempt < 10 && conn === null; attempt++) {
        try {
          conn = await client.connect(HOST, port, 'localhost', handler, { timeoutMs: 1000 });
        } catch (err) {
          if (attempt === 9) throw new Error(`no handshake with gtlsserver: ${(err as Error).message}\n${out.text()}`);
        }
      }
      const c = conn as QuicConnection;
      assert.equal(c.isEstablished, true);
      assert.equal(c.alpn, 'h3');
      assert.ok(c.peerCertificateChain.length >= 1);
      await waitFor('server control and QPACK streams', () => streams.has(3) && streams.has(7) && streams.has(11), 5000);
      c.close(H3_NO_ERROR, '');
      await waitFor('onClosed', () => closed.length === 1, 5000);
      assert.equal(closed[0], null);
    } finally {
      stopByPid(child);
      await client.close(0, '', 2000);
    }
    assert.equal(client.connectionCount, 0);
    assert.equal(client.timerCount, 0);
  });
});
