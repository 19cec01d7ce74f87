// Runs every compiled test file under dist/test with node's own test runner.
// Node 20's `node --test DIR` would also run helper modules that live under test/,
// so the files are listed explicitly: *.test.js only.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function collect(dir, out) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) collect(p, out);
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const roots = process.argv.slice(2);
const files = [];
for (const root of roots.length > 0 ? roots : ['dist/test']) {
  if (statSync(root).isDirectory()) collect(root, files);
  else files.push(root);
}
files.sort();
const res = spawnSync(process.execPath, ['--test', '--test-timeout=120000', ...files], { stdio: 'inherit' });
process.exit(res.status ?? 1);
