// IdentityStore (mesh/identity.ts): loading and validating the identity files, rotation by
// atomic rename and by the Kubernetes `..data` symlink swap, debouncing, rejection of a bad
// new set (the old material stays), and spiffeIdOf / spiffeIdFromSan.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { IdentityError, IdentityStore, spiffeIdFromSan, spiffeIdOf, type IdentityLog, type IdentityMaterial } from '../../../mesh/identity.js';
import { ensureCerts } from '../../helpers/certs.js';
import { SPIFFE, copyIdentity, ensureMeshCerts, type IdentityFiles } from '../../helpers/mesh-certs.js';

interface LogLine {
  level: string;
  obj: object;
  msg: string;
}

function recordingLog(): IdentityLog & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: string) => (obj: object, msg: string): void => {
    lines.push({ level, obj, msg });
  };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

function serialOf(path: string): string {
  return new X509Certificate(readFileSync(path)).serialNumber;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Writes `content` next to `path` and renames it over `path` (the atomic way). */
function replaceAtomically(path: string, content: Buffer | string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content);
  renameSync(tmp, path);
}

/** Resolves with the next rotation, or rejects after `ms`. */
function nextChange(store: IdentityStore, ms = 3000): Promise<IdentityMaterial> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no rotation within ${ms} ms`));
    }, ms);
    const off = store.onChange((next) => {
      clearTimeout(timer);
      off();
      resolve(next);
    });
  });
}

async function waitFor(what: string, check: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return;
    await delay(10);
  }
  assert.fail(`timed out waiting for ${what}`);
}

const dirs: string[] = [];
function tracked(files: IdentityFiles): IdentityFiles {
  dirs.push(files.dir);
  return files;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('IdentityStore: loading', () => {
  it('loads a valid identity: SPIFFE ID, serial, expiry, version 1', () => {
    const certs = ensureMeshCerts();
    const store = new IdentityStore({ cert: certs.frontend.cert, key: certs.frontend.key, trustBundle: certs.ca });
    assert.throws(() => store.current, IdentityError, 'current before load');
    const m = store.load();
    assert.equal(m.spiffeId, SPIFFE.frontend);
    assert.equal(m.version, 1);
    assert.equal(m.serialNumber, serialOf(certs.frontend.cert));
    assert.ok(m.notAfter.getTime() > Date.now());
    assert.deepEqual(m.certPem, readFileSync(certs.frontend.cert));
    assert.deepEqual(m.caPem, readFileSync(certs.ca));
    assert.equal(store.current, m);
    assert.ok(Object.isFrozen(m));
  });

  it('rejects a key that does not belong to the certificate', () => {
    const certs = ensureMeshCerts();
    const store = new IdentityStore({ cert: certs.backend.cert, key: certs.frontend.key, trustBundle: certs.ca });
    assert.throws(() => store.load(), (err: Error) => err instanceof IdentityError && /does not belong to the certificate/.test(err.message));
    // backend-rotated has the same SPIFFE ID but its own key: still a mismatch.
    const rotated = new IdentityStore({ cert: certs.backendRotated.cert, key: certs.backend.key, trustBundle: certs.ca });
    assert.throws(() => rotated.load(), /does not belong/);
  });

  it('rejects files that are not certificates or keys, and missing files', () => {
    const certs = ensureMeshCerts();
    const dir = mkdtempSync(join(tmpdir(), 'skiff-identity-bad-'));
    dirs.push(dir);
    const garbage = join(dir, 'garbage.pem');
    writeFileSync(garbage, 'not a pem file\n');
    const broken = join(dir, 'broken.pem');
    writeFileSync(broken, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    const cases: Array<[string, { cert: string; key: string; trustBundle: string }, RegExp]> = [
      ['garbage cert', { cert: garbage, key: certs.frontend.key, trustBundle: certs.ca }, /no PEM certificate/],
      ['broken cert', { cert: broken, key: certs.frontend.key, trustBundle: certs.ca }, /does not parse/],
      ['garbage key', { cert: certs.frontend.cert, key: garbage, trustBundle: certs.ca }, /not a usable private key/],
      ['garbage bundle', { cert: certs.frontend.cert, key: certs.frontend.key, trustBundle: garbage }, /trustBundle .* no PEM certificate/],
      ['missing cert', { cert: join(dir, 'nope.pem'), key: certs.frontend.key, trustBundle: certs.ca }, /ENOENT/],
    ];
    for (const [name, cfg, re] of cases) {
      assert.throws(() => new IdentityStore(cfg).load(), (err: Error) => err instanceof IdentityError && re.test(err.message), name);
    }
  });

  it('rejects a certificate without a SPIFFE ID, and one not issued by the trust bundle', () => {
    const mesh = ensureMeshCerts();
    const plain = ensureCerts(); // localhost server cert: DNS and IP SANs only
    assert.throws(() => new IdentityStore({ cert: plain.cert, key: plain.key, trustBundle: plain.ca }).load(), /no spiffe:\/\/ URI SAN/);
    assert.throws(() => new IdentityStore({ cert: mesh.rogue.cert, key: mesh.rogue.key, trustBundle: mesh.ca }).load(), /not issued by a CA in/);
    // With its own CA as the bundle the rogue identity is valid (it is only foreign to us).
    assert.equal(new IdentityStore({ cert: mesh.rogue.cert, key: mesh.rogue.key, trustBundle: mesh.rogueCa }).load().spiffeId, SPIFFE.frontend);
  });
});

describe('IdentityStore: rotation', () => {
  it('picks up cert and key replaced by atomic rename, and tells subscribers', async () => {
    const certs = ensureMeshCerts();
    const files = tracked(copyIdentity('backend'));
    const log = recordingLog();
    const store = new IdentityStore(files, { log, debounceMs: 50 });
    const first = store.load();
    store.watch();
    try {
      const changed = nextChange(store);
      replaceAtomically(files.cert, readFileSync(certs.backendRotated.cert));
      replaceAtomically(files.key, readFileSync(certs.backendRotated.key));
      const next = await changed;
      assert.equal(next.serialNumber, serialOf(certs.backendRotated.cert));
      assert.notEqual(next.serialNumber, first.serialNumber);
      assert.equal(next.spiffeId, SPIFFE.backend);
      assert.equal(next.version, 2);
      assert.equal(store.current, next);
      assert.equal(store.rejected, 0, 'cert and key arrived within the debounce window: no mismatch seen');
      assert.ok(log.lines.some((l) => l.level === 'info' && l.msg === 'mesh identity rotated'));
    } finally {
      store.close();
    }
  });

  it('rejects a broken new certificate with a logged error and keeps the old material; a later good set is taken', async () => {
    const certs = ensureMeshCerts();
    const files = tracked(copyIdentity('backend'));
    const log = recordingLog();
    const store = new IdentityStore(files, { log, debounceMs: 30 });
    const first = store.load();
    let changes = 0;
    store.onChange(() => changes++);
    store.watch();
    try {
      replaceAtomically(files.cert, '-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n');
      await waitFor('the rejection', () => store.rejected === 1);
      assert.equal(store.current, first);
      assert.equal(changes, 0);
      const err = log.lines.find((l) => l.level === 'error');
      assert.ok(err !== undefined);
      assert.match(err.msg, /rotation rejected; keeping the current certificate/);
      assert.match(JSON.stringify(err.obj), /does not parse/);

      // A mismatched pair (new cert, old key) is rejected too.
      replaceAtomically(files.cert, readFileSync(certs.backendRotated.cert));
      await waitFor('the second rejection', () => store.rejected === 2);
      assert.equal(store.current, first);
      assert.match(JSON.stringify(log.lines.filter((l) => l.level === 'error')[1].obj), /does not belong/);

      // The matching key completes the set.
      const changed = nextChange(store);
      replaceAtomically(files.key, readFileSync(certs.backendRotated.key));
      assert.equal((await changed).serialNumber, serialOf(certs.backendRotated.cert));
    } finally {
      store.close();
    }
  });

  it('follows the Kubernetes ..data symlink swap', async () => {
    const certs = ensureMeshCerts();
    const dir = mkdtempSync(join(tmpdir(), 'skiff-identity-k8s-'));
    dirs.push(dir);
    // What the kubelet's atomic writer builds: a timestamped dir, ..data -> it, and each file
    // name a symlink through ..data.
    const writeVersion = (name: string, cert: string, key: string): void => {
      mkdirSync(join(dir, name));
      copyFileSync(cert, join(dir, name, 'cert.pem'));
      copyFileSync(key, join(dir, name, 'key.pem'));
      copyFileSync(certs.ca, join(dir, name, 'ca.pem'));
    };
    writeVersion('..2026_11_26_10_00_00.1', certs.backend.cert, certs.backend.key);
    symlinkSync('..2026_11_26_10_00_00.1', join(dir, '..data'));
    for (const f of ['cert.pem', 'key.pem', 'ca.pem']) symlinkSync(join('..data', f), join(dir, f));
    const files = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), trustBundle: join(dir, 'ca.pem') };
    const store = new IdentityStore(files, { log: recordingLog(), debounceMs: 50 });
    const first = store.load();
    assert.equal(first.serialNumber, serialOf(certs.backend.cert));
    store.watch();
    try {
      const changed = nextChange(store);
      writeVersion('..2026_11_26_11_00_00.2', certs.backendRotated.cert, certs.backendRotated.key);
      symlinkSync('..2026_11_26_11_00_00.2', join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      rmSync(join(dir, '..2026_11_26_10_00_00.1'), { recursive: true });
      const next = await changed;
      assert.equal(next.serialNumber, serialOf(certs.backendRotated.cert));
      assert.equal(store.rejected, 0);

      // And a second swap, after the watchers followed the new target directory.
      const again = nextChange(store);
      writeVersion('..2026_11_26_12_00_00.3', certs.backend.cert, certs.backend.key);
      symlinkSync('..2026_11_26_12_00_00.3', join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      rmSync(join(dir, '..2026_11_26_11_00_00.2'), { recursive: true });
      assert.equal((await again).serialNumber, serialOf(certs.backend.cert));
    } finally {
      store.close();
    }
  });

  it('debounces a burst of file events into one reload', async () => {
    const certs = ensureMeshCerts();
    const files = tracked(copyIdentity('backend'));
    const store = new IdentityStore(files, { log: recordingLog(), debounceMs: 150 });
    store.load();
    let changes = 0;
    store.onChange(() => changes++);
    store.watch();
    try {
      const sets = [certs.backendRotated, certs.backend, certs.backendRotated, certs.backend, certs.backendRotated];
      for (const s of sets) {
        // cert and key apart: without the debounce each half-done pair would be a mismatch
        replaceAtomically(files.cert, readFileSync(s.cert));
        await delay(5);
        replaceAtomically(files.key, readFileSync(s.key));
        await delay(5);
      }
      await waitFor('the reload', () => changes > 0, 3000);
      await delay(400);
      assert.equal(changes, 1, 'one reload for the whole burst');
      assert.equal(store.rejected, 0, 'no half-rotated pair was ever read');
      assert.equal(store.current.serialNumber, serialOf(certs.backendRotated.cert));
      assert.equal(store.current.version, 2);
    } finally {
      store.close();
    }
  });

  it('ignores unrelated files in the watched directory and unchanged rewrites', async () => {
    const files = tracked(copyIdentity('backend'));
    const store = new IdentityStore(files, { log: recordingLog(), debounceMs: 30 });
    const first = store.load();
    let changes = 0;
    store.onChange(() => changes++);
    store.watch();
    try {
      writeFileSync(join(files.dir, 'unrelated.txt'), 'x');
      replaceAtomically(files.cert, readFileSync(files.cert)); // same bytes
      await delay(200);
      assert.equal(changes, 0);
      assert.equal(store.current, first);
      assert.equal(store.reload(), false, 'same bytes: no new version');
    } finally {
      store.close();
    }
  });

  it('close() stops watching', async () => {
    const certs = ensureMeshCerts();
    const files = tracked(copyIdentity('backend'));
    const store = new IdentityStore(files, { debounceMs: 20 });
    const first = store.load();
    store.watch();
    store.close();
    replaceAtomically(files.cert, readFileSync(certs.backendRotated.cert));
    replaceAtomically(files.key, readFileSync(certs.backendRotated.key));
    await delay(150);
    assert.equal(store.current, first);
  });
});

describe('spiffeIdOf', () => {
  it('reads the first spiffe:// URI SAN from an X509Certificate or DER bytes', () => {
    const certs = ensureMeshCerts();
    const x509 = new X509Certificate(readFileSync(certs.intruder.cert));
    assert.equal(spiffeIdOf(x509), SPIFFE.intruder);
    assert.equal(spiffeIdOf(x509.raw), SPIFFE.intruder);
    assert.equal(spiffeIdOf(new X509Certificate(readFileSync(certs.rogue.cert))), SPIFFE.frontend);
  });

  it('is empty for a certificate without one, and for bytes that are not a certificate', () => {
    assert.equal(spiffeIdOf(new X509Certificate(ensureCerts().pem.cert)), '');
    assert.equal(spiffeIdOf(Buffer.from('nope')), '');
  });

  it('parses node subjectAltName strings, quoted values included', () => {
    assert.equal(spiffeIdFromSan('DNS:a.example, URI:https://x/y, URI:spiffe://td/ns/a/sa/b, IP Address:127.0.0.1'), 'spiffe://td/ns/a/sa/b');
    assert.equal(spiffeIdFromSan('URI:"spiffe://td/ns/a, b/sa/c", DNS:x'), 'spiffe://td/ns/a, b/sa/c');
    assert.equal(spiffeIdFromSan('DNS:"a, b", URI:spiffe://td/x'), 'spiffe://td/x');
    assert.equal(spiffeIdFromSan('DNS:spiffe://not-a-uri-san'), '');
    assert.equal(spiffeIdFromSan(undefined), '');
    assert.equal(spiffeIdFromSan(''), '');
  });
});
