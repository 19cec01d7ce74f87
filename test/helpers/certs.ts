// Test PKI: runs test/certs/make-certs.sh once per process into test/certs/out/ (gitignored)
// and hands back the file paths plus their contents. The script is idempotent and takes a
// lock, so parallel test processes share one set of files.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoPath } from './repo-root.js';

export interface TestCerts {
  /** Directory holding the files (absolute). */
  dir: string;
  /** Paths (absolute) of the PEM files: CA cert, server cert/key, client cert/key. */
  ca: string;
  cert: string;
  key: string;
  clientCert: string;
  clientKey: string;
  /** The same files read into memory, ready for tls/https/http2 options. */
  pem: {
    ca: Buffer;
    cert: Buffer;
    key: Buffer;
    clientCert: Buffer;
    clientKey: Buffer;
  };
}

let cached: TestCerts | null = null;

/**
 * Makes (if needed) and returns the test certificates. The server cert is for `localhost`,
 * 127.0.0.1 and ::1; the client cert has URI SAN spiffe://skiff.test/ns/default/sa/client.
 * Synchronous; runs openssl at most once per process. Throws with the script's stderr.
 */
export function ensureCerts(): TestCerts {
  if (cached !== null) return cached;
  const dir = repoPath('test', 'certs', 'out');
  const script = repoPath('test', 'certs', 'make-certs.sh');
  try {
    execFileSync('bash', [script, dir], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`ensureCerts: ${script} failed: ${(err as Error).message}\n${stderr}`);
  }
  const paths = {
    ca: join(dir, 'ca.pem'),
    cert: join(dir, 'server.pem'),
    key: join(dir, 'server-key.pem'),
    clientCert: join(dir, 'client.pem'),
    clientKey: join(dir, 'client-key.pem'),
  };
  cached = {
    dir,
    ...paths,
    pem: {
      ca: readFileSync(paths.ca),
      cert: readFileSync(paths.cert),
      key: readFileSync(paths.key),
      clientCert: readFileSync(paths.clientCert),
      clientKey: readFileSync(paths.clientKey),
    },
  };
  return cached;
}
