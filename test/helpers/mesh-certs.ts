// Mesh test PKI: runs test/certs/make-mesh-certs.sh once per process into
// test/certs/out/mesh/ (gitignored with test/certs/out/) and hands back the file paths. The
// script is idempotent and takes a lock, so parallel test processes share one set of files.
// Tests that rotate or break files copy them into a temp dir first (copyIdentity).
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from './repo-root.js';

export const TRUST_DOMAIN = 'example.org';

export type MeshIdentityName = 'frontend' | 'backend' | 'backend-rotated' | 'intruder' | 'rogue';

/** SPIFFE IDs of the test identities (`rogue` claims the frontend's ID from another CA). */
export const SPIFFE = {
  frontend: `spiffe://${TRUST_DOMAIN}/ns/default/sa/frontend`,
  backend: `spiffe://${TRUST_DOMAIN}/ns/default/sa/backend`,
  intruder: `spiffe://${TRUST_DOMAIN}/ns/default/sa/intruder`,
} as const;

export interface CertKey {
  cert: string;
  key: string;
}

export interface MeshCerts {
  /** Directory holding the files (absolute). */
  dir: string;
  /** The mesh CA (trust bundle of every test identity). */
  ca: string;
  /** The unrelated CA that signed `rogue`. */
  rogueCa: string;
  frontend: CertKey;
  backend: CertKey;
  /** Same SPIFFE ID as backend, new key and serial. */
  backendRotated: CertKey;
  intruder: CertKey;
  rogue: CertKey;
}

let cached: MeshCerts | null = null;

/** Makes (if needed) and returns the mesh test certificates. Synchronous; throws with the script's stderr. */
export function ensureMeshCerts(): MeshCerts {
  if (cached !== null) return cached;
  const dir = repoPath('test', 'certs', 'out', 'mesh');
  const script = repoPath('test', 'certs', 'make-mesh-certs.sh');
  try {
    execFileSync('bash', [script, dir], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`ensureMeshCerts: ${script} failed: ${(err as Error).message}\n${stderr}`);
  }
  const pair = (name: MeshIdentityName): CertKey => ({ cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) });
  cached = {
    dir,
    ca: join(dir, 'ca.pem'),
    rogueCa: join(dir, 'rogue-ca.pem'),
    frontend: pair('frontend'),
    backend: pair('backend'),
    backendRotated: pair('backend-rotated'),
    intruder: pair('intruder'),
    rogue: pair('rogue'),
  };
  return cached;
}

export interface IdentityFiles {
  dir: string;
  cert: string;
  key: string;
  trustBundle: string;
}

/**
 * Copies one identity and the mesh CA into a fresh temp dir as cert.pem, key.pem, ca.pem:
 * files a test may rotate or break without touching the shared set. The caller removes `dir`.
 */
export function copyIdentity(name: MeshIdentityName): IdentityFiles {
  const certs = ensureMeshCerts();
  const src = name === 'backend-rotated' ? certs.backendRotated : certs[name];
  const dir = mkdtempSync(join(tmpdir(), `skiff-mesh-${name}-`));
  const files = { dir, cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), trustBundle: join(dir, 'ca.pem') };
  copyFileSync(src.cert, files.cert);
  copyFileSync(src.key, files.key);
  copyFileSync(certs.ca, files.trustBundle);
  return files;
}
