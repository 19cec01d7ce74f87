// The request authority on HTTP/2 and HTTP/3 is held to the rule the HTTP/1.1 listener applies
// to Host (protocols/h1/parse.ts `isValidAuthority`: reg-name, IPv4 or [IPv6], optional digits
// port, no userinfo). Until 2026-11-26 an HTTP/2 `:authority: u@h` or `h:x`, or an HTTP/3
// `:authority: a/b`, was routed and sent upstream as the host header; now it gets 400
// SKIFF_ERR_BAD_REQUEST through the engine's one error path, per stream: the connection goes on.
// On HTTP/2, node:http2 (nghttp2) resets a stream whose :authority holds a character no
// authority may hold (space, / ? # \, non-ASCII) with PROTOCOL_ERROR before Skiff sees it;
// either answer is accepted for those, as long as nothing reaches the upstream. RFC 9113
// §8.3.1: :authority and host, both present, must be the same (400 otherwise).
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ensureCerts, type TestCerts } from '../helpers/certs.js';
import { Flag, connectRaw, errorName, headers as headersFrame, literal } from '../helpers/h2-frames.js';
import { H3TestClient, type H3Response } from '../helpers/h3-client.js';
import { freePort, freePorts, plainAndTlsConfig, startSkiff, type SkiffProcess } from '../helpers/skiff.js';

const HOST = '127.0.0.1';

/** Refused by Skiff's own check on every protocol. */
const INVALID = ['u@h', 'user:pw@h', 'h:x', 'h:80x', 'h:123456', 'h:1:2', '[]', '[::1', '[::1]x', '[::1]:x'];
/** Refused by node:http2 (nghttp2) before Skiff sees the stream on HTTP/2; by Skiff on HTTP/3. */
const INVALID_CHARS = ['a b', 'a/b', 'h?x', 'h#x', 'h\\x', 'caf\u00e9', 'h/.:80', '[a b]'];
const VALID = ['h', 'h.example', 'Mixed.Case.example:8080', '[::1]:8080', '[::1]', '127.0.0.1', '127.0.0.1:9', "a-b_c~d!$&'()*+,;=%20.example"];

const BAD_REQUEST = '400 SKIFF_ERR_BAD_REQUEST';

describe('request authority on HTTP/2 and HTTP/3', () => {
  let certs: TestCerts;
  let upstream: http.Server;
  let upPort = 0;
  /** Host header of every request the upstream saw, in order. */
  const hosts: string[] = [];
  let sk: SkiffProcess;
  let plainPort = 0;
  let tlsPort = 0;

  before(async () => {
    certs = ensureCerts();
    upstream = http.createServer((req, res) => {
      hosts.push(req.headers.host ?? '(none)');
      res.end('ok');
    });
    await new Promise<void>((r) => upstream.listen(0, HOST, r));
    upPort = (upstream.address() as net.AddressInfo).port;
    tlsPort = await freePort({ udp: true });
    let admin: number;
    [admin, plainPort] = await freePorts(2);
    sk = await startSkiff(plainAndTlsConfig({ admin, plain: plainPort, tls: tlsPort, upstream: upPort, cert: certs.cert, key: certs.key }));
  });

  after(async () => {
    await sk?.stop();
    upstream?.closeAllConnections();
    await new Promise((r) => upstream?.close(r));
  });

  /** One HTTP/2 request: '<status> <x-skiff-error>' if a response came, else 'reset <code>'. */
  function h2Get(session: http2.ClientHttp2Session, path: string, fields: http2.OutgoingHttpHeaders): Promise<string> {
    return new Promise((resolve) => {
      const req = session.request({ ':path': path, ...fields });
      let outcome = '';
      req.on('response', (h) => {
        const err = h['x-skiff-error'];
        outcome = `${String(h[':status'])} ${typeof err === 'string' ? err : ''}`.trimEnd();
      });
      req.on('data', () => undefined);
      req.on('error', () => undefined);
      req.on('close', () => resolve(outcome !== '' ? outcome : `reset ${errorName(req.rstCode ?? -1)}`));
      req.end();
    });
  }

  function h3Outcome(r: H3Response): string {
    const i = r.headers.indexOf('x-skiff-error');
    return `${r.status} ${i >= 0 && i % 2 === 0 ? r.headers[i + 1] : ''}`.trimEnd();
  }

  it('HTTP/2: an invalid :authority gets 400 (or nghttp2 resets it), never reaches the upstream; the session goes on', async () => {
    const session = http2.connect(`http://${HOST}:${plainPort}`);
    session.on('error', () => undefined);
    try {
      let n = 0;
      for (const a of [...INVALID, ...INVALID_CHARS]) {
        const before = hosts.length;
        const outcome = await h2Get(session, `/bad/${n++}`, { ':authority': a });
        if (INVALID_CHARS.includes(a)) assert.ok(outcome === BAD_REQUEST || outcome === 'reset PROTOCOL_ERROR', `${JSON.stringify(a)}: ${outcome}`);
        else assert.equal(outcome, BAD_REQUEST, JSON.stringify(a));
        assert.equal(hosts.length, before, `${JSON.stringify(a)} reached the upstream as ${JSON.stringify(hosts.slice(before))}`);
        // The error is per stream: the same session serves the next request.
        assert.equal(await h2Get(session, `/good/${n}`, { ':authority': 'h' }), '200', `after ${JSON.stringify(a)}`);
        assert.deepEqual(hosts.slice(before), ['h']);
      }
      assert.equal(session.closed || session.destroyed, false);
    } finally {
      session.close();
    }
  });

  it('HTTP/2: an invalid host without :authority gets 400', async () => {
    const session = http2.connect(`http://${HOST}:${plainPort}`);
    session.on('error', () => undefined);
    try {
      const before = hosts.length;
      // node's client adds :authority only when neither :authority nor host is given.
      for (const h of ['u@h', 'h:x', '[]']) assert.equal(await h2Get(session, '/host-only', { host: h }), BAD_REQUEST, h);
      assert.equal(hosts.length, before);
      assert.equal(await h2Get(session, '/host-only', { host: 'h:81' }), '200');
      assert.deepEqual(hosts.slice(before), ['h:81']);
    } finally {
      session.close();
    }
  });

  it('HTTP/2: :authority and host that differ get 400 (RFC 9113 §8.3.1); equal ones pass', async () => {
    const session = http2.connect(`http://${HOST}:${plainPort}`);
    session.on('error', () => undefined);
    try {
      const before = hosts.length;
      assert.equal(await h2Get(session, '/mismatch', { ':authority': 'a.example', host: 'b.example' }), BAD_REQUEST);
      assert.equal(await h2Get(session, '/mismatch', { ':authority': 'a.example', host: 'a.example:80' }), BAD_REQUEST);
      assert.equal(hosts.length, before);
      assert.equal(await h2Get(session, '/same', { ':authority': 'a.example', host: 'a.example' }), '200');
      assert.deepEqual(hosts.slice(before), ['a.example']);
    } finally {
      session.close();
    }
  });

  it('HTTP/2: valid forms get 200 and the upstream sees them as the host header', async () => {
    const session = http2.connect(`http://${HOST}:${plainPort}`);
    session.on('error', () => undefined);
    try {
      for (const a of VALID) {
        const before = hosts.length;
        assert.equal(await h2Get(session, '/valid', { ':authority': a }), '200', a);
        assert.deepEqual(hosts.slice(before), [a]);
      }
    } finally {
      session.close();
    }
  });

  it('HTTP/2: neither :authority nor host: node:http2 resets the stream (PROTOCOL_ERROR) before Skiff sees it', async () => {
    // Skiff itself lets an absent authority ('') through; nghttp2 refuses it first on HTTP/2 (and
    // protocols/h3/fields.ts on HTTP/3), so only HTTP/1.0 without Host reaches the router so.
    const conn = await connectRaw(plainPort);
    try {
      const before = hosts.length;
      const block = Buffer.concat([literal(':method', 'GET'), literal(':scheme', 'http'), literal(':path', '/no-authority')]);
      await conn.write(headersFrame(1, block, Flag.END_HEADERS | Flag.END_STREAM));
      const deadline = Date.now() + 5000;
      while (conn.rstCount === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual([...conn.rstCodes].map(errorName), ['PROTOCOL_ERROR']);
      assert.equal(conn.goaway, null);
      assert.equal(hosts.length, before);
    } finally {
      conn.destroy();
    }
  });

  it('HTTP/3: an invalid :authority gets 400, never reaches the upstream; the connection goes on', async () => {
    const h3 = await H3TestClient.connect(HOST, tlsPort, certs.pem.ca);
    try {
      let n = 0;
      for (const a of [...INVALID, ...INVALID_CHARS]) {
        const before = hosts.length;
        assert.equal(h3Outcome(await h3.request(`/bad/${n++}`, { authority: a })), BAD_REQUEST, JSON.stringify(a));
        assert.equal(hosts.length, before, `${JSON.stringify(a)} reached the upstream as ${JSON.stringify(hosts.slice(before))}`);
        assert.equal(h3Outcome(await h3.request(`/good/${n}`, { authority: 'h' })), '200', `after ${JSON.stringify(a)}`);
        assert.deepEqual(hosts.slice(before), ['h']);
      }
      assert.equal(h3.isClosing, false);
    } finally {
      await h3.close().catch(() => undefined);
    }
  });

  it('HTTP/3: valid forms get 200 and the upstream sees them as the host header; :authority and host that differ get 400', async () => {
    const h3 = await H3TestClient.connect(HOST, tlsPort, certs.pem.ca);
    try {
      for (const a of VALID) {
        const before = hosts.length;
        assert.equal(h3Outcome(await h3.request('/valid', { authority: a })), '200', a);
        assert.deepEqual(hosts.slice(before), [a]);
      }
      const before = hosts.length;
      assert.equal(h3Outcome(await h3.request('/mismatch', { authority: 'a.example', headers: [['host', 'b.example']] })), BAD_REQUEST);
      assert.equal(hosts.length, before);
      assert.equal(h3Outcome(await h3.request('/same', { authority: 'a.example', headers: [['host', 'a.example']] })), '200');
      assert.deepEqual(hosts.slice(before), ['a.example']);
    } finally {
      await h3.close().catch(() => undefined);
    }
  });
});
