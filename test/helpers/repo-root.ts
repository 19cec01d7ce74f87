// Finds the repository root from a compiled helper. Helpers run from dist/test/helpers, so
// paths relative to the module are wrong for source files (scripts, fixtures, the CLI);
// walk up from this module to the first directory that holds package.json instead.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | null = null;

/** Absolute path of the directory holding package.json above this module. Throws if none. */
export function repoRoot(): string {
  if (cached !== null) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) {
      cached = dir;
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`repoRoot: no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

/** Path inside the repository, from path segments relative to the root. */
export function repoPath(...segments: string[]): string {
  return join(repoRoot(), ...segments);
}
