// ConfigFileSource (mesh/file-source.ts) against real files in a temp folder: editor-style
// atomic rename, in-place writes, the Kubernetes `..data` symlink swap, a plain symlink to a
// file elsewhere, bad files rejected with every issue line logged while the running snapshot
// stays (a revert to the running content applies nothing), bursts collapsed by the debounce, identical content ignored, a briefly missing file,
// the polling fallback with fs.watch off, a failing apply, and close().
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { ConfigSnapshot } from '../../../src/config/types.js';
import { ConfigFileSource, type ConfigFileSourceOptions } from '../../../mesh/file-source.js';

/** A valid config whose only cluster points at 127.0.0.1:PORT. */
function configYaml(port: number, extra = ''): string {
  return [
    'listeners:',
    '  - name: a',
    '    address: 127.0.0.1:0',
    '    protocols: [http1]',
    '    routes: r',
    'routes:',
    '  r:',
    '    - match: { prefix: / }',
    '      cluster: c',
    'clusters:',
    '  - name: c',
    '    protocol: http1',
    `    endpoints: [127.0.0.1:${port}]`,
    extra,
  ].join('\n');
}

function portOf(snap: ConfigSnapshot): number {
  return snap.clusters.get('c')?.endpoints[0].port ?? -1;
}

interface LogRecord {
  level: 'info' | 'warn' | 'error';
  obj: Record<string, unknown>;
  msg: string;
}

/** The store, the log and the applied snapshots of one source under test. */
class Harness {
  version = 1;
  readonly applied: ConfigSnapshot[] = [];
  readonly logs: LogRecord[] = [];
  failApply = false;
  source: ConfigFileSource | null = null;

  options(path: string, extra: Partial<ConfigFileSourceOptions> = {}): ConfigFileSourceOptions {
    const self = this;
    const record = (level: LogRecord['level']) => (obj: object, msg: string): void => {
      self.logs.push({ level, obj: obj as Record<string, unknown>, msg });
    };
    return {
      path,
      versions: {
        get nextVersion() { return self.version + 1; },
        get current() { return { version: self.version }; },
      },
      apply: (next) => {
        if (self.failApply) throw new Error('listener cannot bind');
        self.applied.push(next);
        self.version = next.version;
      },
      log: { info: record('info'), warn: record('warn'), error: record('error') },
      debounceMs: 100,
      pollMs: 0,
      ...extra,
    };
  }

  async start(path: string, extra: Partial<ConfigFileSourceOptions> = {}): Promise<ConfigFileSource> {
    this.source = new ConfigFileSource(this.options(path, extra));
    await this.source.start();
    return this.source;
  }

  errors(): LogRecord[] {
    return this.logs.filter((l) => l.level === 'error');
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(20);
  }
}

/** Editor-style replacement: write a temp file next to the target, rename it over. */
function atomicWrite(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

describe('ConfigFileSource', () => {
  let dir: string;
  let h: Harness;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'skiff-fsrc-'));
    h = new Harness();
  });

  afterEach(async () => {
    if (h.source !== null) await h.source.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('applies a file replaced by an atomic rename (editor / tmp + rename)', async () => {
    const path = join(dir, 'skiff.yaml');
    writeFileSync(path, configYaml(1001));
    await h.start(path);
    atomicWrite(path, configYaml(1002));
    await waitFor('the reload', () => h.applied.length === 1);
    assert.equal(portOf(h.applied[0]), 1002);
    assert.equal(h.applied[0].version, 2);
    // and again: the watch survives the inode change
    atomicWrite(path, configYaml(1003));
    await waitFor('the second reload', () => h.applied.length === 2);
    assert.equal(portOf(h.applied[1]), 1003);
    assert.equal(h.applied[1].version, 3);
    assert.equal(h.errors().length, 0);
  });

  it('applies an in-place write', async () => {
    const path = join(dir, 'skiff.yaml');
    writeFileSync(path, configYaml(1001));
    await h.start(path);
    writeFileSync(path, configYaml(1004));
    await waitFor('the reload', () => h.applied.length === 1);
    assert.equal(portOf(h.applied[0]), 1004);
  });

  it('follows the Kubernetes ..data symlink swap', async () => {
    // config.yaml -> ..data/config.yaml, ..data -> ..2026_11_26_10_00_00.1 (what the kubelet builds)
    const v1 = join(dir, '..2026_11_26_10_00_00.1');
    mkdirSync(v1);
    writeFileSync(join(v1, 'config.yaml'), configYaml(2001));
    symlinkSync('..2026_11_26_10_00_00.1', join(dir, '..data'));
    symlinkSync('..data/config.yaml', join(dir, 'config.yaml'));
    const path = join(dir, 'config.yaml');
    await h.start(path);

    // The kubelet's update: new timestamped folder, ..data_tmp -> it, rename over ..data, remove the old one.
    const v2 = join(dir, '..2026_11_26_10_05_00.2');
    mkdirSync(v2);
    writeFileSync(join(v2, 'config.yaml'), configYaml(2002));
    symlinkSync('..2026_11_26_10_05_00.2', join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    rmSync(v1, { recursive: true });
    await waitFor('the reload', () => h.applied.length === 1);
    assert.equal(portOf(h.applied[0]), 2002);
    assert.equal(h.errors().length, 0);
  });

  it('follows a symlink to a file in another folder (edits of the target)', async () => {
    const other = join(dir, 'real');
    mkdirSync(other);
    writeFileSync(join(other, 'skiff.yaml'), configYaml(3001));
    const link = join(dir, 'conf');
    mkdirSync(link);
    symlinkSync(join(other, 'skiff.yaml'), join(link, 'skiff.yaml'));
    await h.start(join(link, 'skiff.yaml'));
    atomicWrite(join(other, 'skiff.yaml'), configYaml(3002));
    await waitFor('the reload', () => h.applied.length === 1);
    assert.equal(portOf(h.applied[0]), 3002);
  });

  it('rejects a bad file with every issue line logged at error level, keeps the old snapshot, then takes a good one', async () => {
    const path = join(dir, 'skiff.yaml');
    writeFileSync(path, configYaml(1001));
    await h.start(path);

    atomicWrite(path, 'listeners: [\n  - name: a\n'); // YAML syntax error
    await waitFor('the YAML error', () => h.errors().length === 1);
    assert.equal(h.applied.length, 0);
    assert.equal(h.version, 1);
    const yamlErr = h.errors()[0];
    assert.match(yamlErr.msg, /config rejected, keeping version 1: /);
    assert.match(String((yamlErr.obj.issues as string[])[0]), /skiff\.yaml:\d+: YAML: /);

    // Two schema problems: both lines are in the record.
    atomicWrite(path, configYaml(1001).replace('protocol: http1', 'protocol: spdy').replace('address: 127.0.0.1:0', 'address: 127.0.0.1:notaport'));
    await waitFor('the schema error', () => h.errors().length === 2);
    const issues = h.errors()[1].obj.issues as string[];
    assert.equal(issues.length, 2, issues.join('\n'));
    assert.match(issues[0], /skiff\.yaml:3: listeners\[0\]\.address: /);
    assert.match(issues[1], /skiff\.yaml:12: clusters\[0\]\.protocol: /);
    assert.match(h.errors()[1].msg, /\(\+1 more\)/);
    assert.equal(h.applied.length, 0);
    assert.equal(h.source?.rejected, 2);

    // Reverting to the running content applies nothing.
    atomicWrite(path, configYaml(1001));
    await waitFor('the revert', () => h.logs.some((l) => /matches the running version 1 again/.test(l.msg)));
    assert.equal(h.applied.length, 0);

    atomicWrite(path, configYaml(1005));
    await waitFor('the good file', () => h.applied.length === 1);
    assert.equal(portOf(h.applied[0]), 1005);
    assert.equal(h.applied[0].version, 2);
  });

  it('collapses a burst of writes into one reload of the final content; identical content is a no-op', async () => {
    const path = join(dir, 'skiff.yaml');
    writeFileSync(path, configYaml(1001));
    const src = await h.start(path);
    for (let i = 0; i < 8; i++) {
      writeFileSync(path, configYaml(1100 + i));
      await delay(15);
    }
    await waitFor('the reload', () => h.applied.length >= 1);
    await delay(400);
    assert.equal(h.applied.length, 1, 'one reload for the burst');
    assert.equal(portOf(h.applied[0]), 1107);
    assert.ok(src.checks <= 2, `checks: ${src.checks}`);

    // Rewriting the same bytes (a touch, an editor saving unchanged) reads the file and stops there.
    const checks = src.checks;
    atomicWrite(path, configYaml(1107));
    await waitFor('a check', () => src.checks > checks);
    await delay(200);
    assert.equal(h.applied.length, 1);
    assert.equal(h.errors().length, 0);
  });

  it('survives the file being missing for a while', async () => {
    const path = join(dir, 'skiff.yaml');
    writeFileSync(path, configYaml(1001));
    await h.start(path);
    unlinkSync(path);
    await waitFor('the missing-file warning', () => h.logs.some((l) => l.level === 'warn' && /unreadable/.test(l.msg)));
    assert.equal(h.applied.length, 0);
    await delay(250);
    assert.equal(h.logs.filter((l) => /unreadable/.test(l.msg)).length, 1, 'warned once');
    writeFileSync(path, configYaml(1006));
    await waitFor('the reload', () => h.applied.length === 1);
    assert.equal(portOf(h.applied[0]), 1006);
    assert.ok(h.logs.some((l) => /file is back/.test(l.msg)));
  });

  it('polls when fs.watch is unavailable (inode, size, mtime)', async () => {
    const path = join(dir, 'skiff.yaml');
    writeFileSync(path, configYaml(1001));
    await h.start(path, { useWatch: false, pollMs: 100 });
    await delay(250);
    assert.equal(h.applied.length, 0, 'no change, no reload');
    atomicWrite(path, configYaml(1007));
    await waitFor('the polled reload', () => h.applied.length === 1, 3000);
    assert.equal(portOf(h.applied[0]), 1007);
    writeFileSync(path, configYaml(1008));
    await waitFor('the polled in-place write', () => h.applied.length === 2, 3000);
    assert.equal(portOf(h.applied[1]), 1008);
  });

  it('logs a failing apply as a failed reload and keeps the running version', async () => {
    const path = join(dir, 'skiff.yaml');
    writeFileSync(path, configYaml(1001));
    await h.start(path);
    h.failApply = true;
    atomicWrite(path, configYaml(1009));
    await waitFor('the failure', () => h.errors().length === 1);
    assert.match(h.errors()[0].msg, /config reload failed, keeping version 1: listener cannot bind/);
    assert.equal(h.version, 1);
  });

  it('stops watching on close()', async () => {
    const path = join(dir, 'skiff.yaml');
    writeFileSync(path, configYaml(1001));
    const src = await h.start(path, { pollMs: 50 });
    await src.close();
    atomicWrite(path, configYaml(1010));
    await delay(400);
    assert.equal(h.applied.length, 0);
    assert.equal(src.checks, 0);
  });
});
