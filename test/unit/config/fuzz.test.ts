// Property tests (fast-check) for the config loader (src/config/load.ts parseConfig) and its
// value parsers (src/config/schema.ts):
//   - random text, YAML-looking token soup and mutated copies of the valid example (values,
//     keys and types changed at random paths; lines dropped, duplicated or re-indented) never
//     throw anything but ConfigError, every issue names a key path or a line (within the
//     document) and says something, and the YAML library writes no process warnings;
//   - documents built from generators parse, and the snapshot is frozen and holds the values
//     written (units converted, defaults filled in, paths resolved);
//   - parseDuration, parseSize and parseAddress round-trip what they accept and never throw.
// Runs are bounded (numRuns) so the file stays within a few seconds.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import {
  ConfigError,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_LIMITS,
  DEFAULT_MAX_CONNECTIONS_H2,
  DEFAULT_MAX_CONNECTIONS_HTTP1,
  DEFAULT_MAX_PENDING,
  DEFAULT_RETRIES,
  DEFAULT_ROUTE_TIMEOUT_MS,
  parseConfig,
} from '../../../src/config/load.js';
import { MAX_DURATION_MS, parseAddress, parseDuration, parseSize } from '../../../src/config/schema.js';
import type { ConfigSnapshot, Limits } from '../../../src/config/types.js';
import { RouteTable } from '../../../src/routing/router.js';

// Compiled to dist/test/unit/config/; the fixtures stay in the source tree.
const EXAMPLE_PATH = fileURLToPath(new URL('../../../../test/fixtures/config/example.yaml', import.meta.url));
const BASE_DIR = '/etc/skiff';
const SOURCE = 'fuzz.yaml';

type Outcome = { snapshot: ConfigSnapshot; error: null } | { snapshot: null; error: ConfigError };

/**
 * parseConfig, where a ConfigError is an outcome and anything else thrown fails the property.
 * Checks every issue: a key path or a line inside the document, and a message.
 */
function parseChecked(text: string): Outcome {
  try {
    return { snapshot: parseConfig(text, SOURCE, BASE_DIR, 1), error: null };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw new Error(`parseConfig threw ${String(err)} for ${JSON.stringify(text.slice(0, 300))}`);
    assert.equal(err.source, SOURCE);
    assert.ok(err.issues.length > 0, 'a ConfigError lists at least one issue');
    const lines = text.split(/\r\n|\r|\n/).length;
    for (const issue of err.issues) {
      const where = `${JSON.stringify(issue)} for ${JSON.stringify(text.slice(0, 300))}`;
      assert.ok(issue.path !== '' || issue.line > 0, `an issue names a key or a line: ${where}`);
      assert.ok(Number.isInteger(issue.line) && issue.line >= 0 && issue.line <= lines, `the line is in the document (${lines} lines): ${where}`);
      assert.ok(typeof issue.message === 'string' && issue.message.trim().length > 0, `an issue says what is wrong: ${where}`);
    }
    return { snapshot: null, error: err };
  }
}

/** Every plain object and array reachable from the snapshot is frozen (Maps and compiled route matchers are not plain data). */
function assertDeeplyFrozen(value: unknown, path: string, seen = new Set<object>()): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if (value instanceof Map) {
    for (const [k, v] of value) assertDeeplyFrozen(v, `${path}.get(${String(k)})`, seen);
    return;
  }
  if (value instanceof RouteTable) {
    assertDeeplyFrozen(value.routes, `${path}.routes`, seen);
    return;
  }
  assert.ok(Object.isFrozen(value), `${path} is frozen`);
  for (const [k, v] of Object.entries(value)) assertDeeplyFrozen(v, `${path}.${k}`, seen);
}

// Node warnings written while parsing (the YAML library's own, e.g. a map used as a key).
const warnings: string[] = [];
const onWarning = (w: Error): void => { warnings.push(w.message); };
before(() => { process.on('warning', onWarning); });
after(() => { process.off('warning', onWarning); });

// ---------------------------------------------------------------------------------------------
// Arbitrary text

const YAML_TOKENS = [
  'listeners:', 'routes:', 'clusters:', 'admin:', 'limits:', 'telemetry:', 'identity:', 'name: ', 'address: ', 'protocols: ',
  'endpoints: ', 'cluster: ', 'match: ', 'prefix: /', 'tls: ', 'retries: ', 'timeout: ', '127.0.0.1:80', '[::1]:0', 'localhost:1',
  'http1', 'h2c', 'h2', 'h3', '15s', '64KiB', '- ', '  ', '    ', ': ', '\n', '\r\n', '{', '}', '[', ']', ',', '&a ', '*a', '*b',
  '<<: *a', '!!str ', '!!int ', '!!binary ', '!!map ', '!custom ', '? ', '|', '>-', '#c', '"', "'", 'null', '~', 'true', '0x1f',
  '1e3', '-1', '.inf', '---', '...', '%YAML 1.2\n', '%TAG ! tag:x:\n', '\t', '\u00a0', '\ufeff', 'é', '\u0000',
];

describe('parseConfig on arbitrary input', () => {
  it('random text never throws anything but ConfigError, and every issue has a key or a line and a message', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (text) => { parseChecked(text); }), { numRuns: 400 });
    fc.assert(fc.property(fc.string({ maxLength: 200, unit: 'binary' }), (text) => { parseChecked(text); }), { numRuns: 300 });
  });

  it('YAML-looking token soup (anchors, aliases, tags, flow and block styles): the same', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...YAML_TOKENS), { maxLength: 60 }), (tokens) => { parseChecked(tokens.join('')); }),
      { numRuns: 1500 },
    );
  });

  it('alias and empty-document failures point at a line', () => {
    const unresolved = parseChecked('listeners:\n  - *nowhere\n');
    assert.equal(unresolved.error?.issues[0].line, 2);
    const empty = parseChecked('# only a comment\n');
    assert.equal(empty.error?.issues[0].line, 1);
    // An alias bomb (a billion laughs, in small): refused by the alias count, at the first alias.
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (const [name, prev] of [['b', 'a'], ['c', 'b'], ['d', 'c']]) bomb.push(`${name}: &${name} [${Array(10).fill(`*${prev}`).join(', ')}]`);
    const r = parseChecked(bomb.join('\n'));
    assert.ok(r.error !== null && r.error.issues[0].line === 2, JSON.stringify(r.error?.issues));
  });

  it('the YAML library writes no process warnings (a map used as a key is the schema\'s issue)', async () => {
    parseChecked('{ [a, b]: 1, { c: d }: 2 }\n');
    await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
    assert.deepEqual(warnings, []);
  });
});

// ---------------------------------------------------------------------------------------------
// Mutations of the valid example

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type PathStep = string | number;

const EXAMPLE_TEXT = readFileSync(EXAMPLE_PATH, 'utf8');
const EXAMPLE = parseYaml(EXAMPLE_TEXT) as Json;

/** Every path to a node of the document (the root included). */
function pathsOf(v: Json, prefix: PathStep[] = [], out: PathStep[][] = []): PathStep[][] {
  out.push(prefix);
  if (Array.isArray(v)) v.forEach((x, i) => pathsOf(x, [...prefix, i], out));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) pathsOf(x, [...prefix, k], out);
  return out;
}

function getAt(root: Json, path: readonly PathStep[]): Json {
  let v = root;
  for (const step of path) v = (v as Record<string, Json>)[step as string];
  return v;
}

/** Replaces the node at `path` (not the root) through `fn` on its container. */
function withParent(root: Json, path: readonly PathStep[], fn: (parent: Json[] | Record<string, Json>, key: PathStep) => void): void {
  if (path.length === 0) return;
  const parent = getAt(root, path.slice(0, -1));
  if (parent !== null && typeof parent === 'object') fn(parent as Json[] | Record<string, Json>, path[path.length - 1]);
}

const SCHEMA_KEYS = ['name', 'address', 'protocols', 'routes', 'clusters', 'listeners', 'tls', 'cert', 'key', 'endpoints', 'protocol', 'match', 'prefix', 'path', 'cluster', 'timeout', 'retries', 'attempts', 'retryOn', 'maxBodyBytes', 'connectTimeout', 'limits', 'admin', 'authorize', 'headers', 'authority'];

const jsonValue: fc.Arbitrary<Json> = fc.letrec<{ v: Json }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.integer({ min: -5, max: 70_000 }),
    fc.double({ noNaN: false }),
    fc.string({ maxLength: 20 }),
    fc.constantFrom('15s', '0', '-1s', '1.5s', '25h', '99999999999999h', '64KiB', '1TiB', '127.0.0.1:0', '[::1]:99999', 'localhost:80', 'h2', 'h3', 'http1', 'h2c', 'mesh', 'spiffe://x/y', '/', '*.example.com', 'round-robin', 'reset'),
    fc.array(tie('v'), { maxLength: 3 }),
    fc.dictionary(fc.oneof(fc.constantFrom(...SCHEMA_KEYS), fc.string({ maxLength: 8 })), tie('v'), { maxKeys: 3 }),
  ),
})).v;

type Mutation =
  | { kind: 'replace'; at: number; value: Json }
  | { kind: 'delete'; at: number }
  | { kind: 'rename'; at: number; key: string }
  | { kind: 'add'; at: number; key: string; value: Json }
  | { kind: 'wrap'; at: number }
  | { kind: 'stringify'; at: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), value: jsonValue }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('rename' as const), at: fc.nat(), key: fc.oneof(fc.constantFrom(...SCHEMA_KEYS), fc.string({ maxLength: 8 })) }),
  fc.record({ kind: fc.constant('add' as const), at: fc.nat(), key: fc.oneof(fc.constantFrom(...SCHEMA_KEYS), fc.string({ maxLength: 8 })), value: jsonValue }),
  fc.record({ kind: fc.constant('wrap' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('stringify' as const), at: fc.nat() }),
);

function mutate(doc: Json, m: Mutation): void {
  const paths = pathsOf(doc);
  const path = paths[m.at % paths.length];
  switch (m.kind) {
    case 'replace':
      withParent(doc, path, (p, k) => { (p as Record<string, Json>)[k as string] = m.value; });
      return;
    case 'delete':
      withParent(doc, path, (p, k) => {
        if (Array.isArray(p)) p.splice(k as number, 1);
        else delete p[k as string];
      });
      return;
    case 'rename':
      withParent(doc, path, (p, k) => {
        if (Array.isArray(p) || m.key === k) return;
        p[m.key] = p[k as string];
        delete p[k as string];
      });
      return;
    case 'add': {
      const target = getAt(doc, path);
      if (Array.isArray(target)) target.push(m.value);
      else if (target !== null && typeof target === 'object') target[m.key] = m.value;
      return;
    }
    case 'wrap':
      withParent(doc, path, (p, k) => { (p as Record<string, Json>)[k as string] = [getAt(doc, path)]; });
      return;
    case 'stringify':
      withParent(doc, path, (p, k) => {
        const v = getAt(doc, path);
        (p as Record<string, Json>)[k as string] = typeof v === 'object' ? JSON.stringify(v) : String(v);
      });
  }
}

type LineEdit = { kind: 'drop' | 'dup' | 'indent' | 'dedent'; at: number } | { kind: 'insert'; at: number; text: string };

const lineEdit: fc.Arbitrary<LineEdit> = fc.oneof(
  fc.record({ kind: fc.constantFrom('drop' as const, 'dup' as const, 'indent' as const, 'dedent' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom(...YAML_TOKENS)) }),
);

function editLines(text: string, edits: readonly LineEdit[]): string {
  const lines = text.split('\n');
  for (const e of edits) {
    const i = e.at % lines.length;
    if (e.kind === 'insert') {
      const col = e.at % (lines[i].length + 1);
      lines[i] = lines[i].slice(0, col) + e.text + lines[i].slice(col);
    } else if (e.kind === 'drop') lines.splice(i, 1);
    else if (e.kind === 'dup') lines.splice(i, 0, lines[i]);
    else if (e.kind === 'indent') lines[i] = `  ${lines[i]}`;
    else lines[i] = lines[i].replace(/^ {1,2}/, '');
    if (lines.length === 0) lines.push('');
  }
  return lines.join('\n');
}

describe('parseConfig on mutated copies of the valid example', () => {
  it('the example itself parses', () => {
    const r = parseChecked(EXAMPLE_TEXT);
    assert.ok(r.snapshot !== null, JSON.stringify(r.error?.issues));
    assert.ok(r.snapshot !== null && r.snapshot.listeners.length === 3);
  });

  it('values, keys and types changed at random paths: a snapshot or a ConfigError whose issues are located', () => {
    let failures = 0;
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), fc.boolean(), (mutations, isFlow) => {
        const doc = structuredClone(EXAMPLE);
        for (const m of mutations) mutate(doc, m);
        const text = stringifyYaml(doc, isFlow ? { collectionStyle: 'flow' } : {});
        if (parseChecked(text).error !== null) failures++;
      }),
      { numRuns: 600 },
    );
    assert.ok(failures > 100, `the mutations break documents often enough to test the error path (${failures} of 600)`);
  });

  it('lines dropped, duplicated, re-indented or spliced with text: the same', () => {
    fc.assert(
      fc.property(fc.array(lineEdit, { minLength: 1, maxLength: 4 }), (edits) => { parseChecked(editLines(EXAMPLE_TEXT, edits)); }),
      { numRuns: 600 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Valid documents from generators

interface Gen<T> {
  /** What goes into the YAML document. */
  yaml: Json;
  /** What the snapshot must hold. */
  value: T;
}

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
const SIZE_UNITS = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 } as const;

function durationArb(min: number): fc.Arbitrary<Gen<number>> {
  return fc.oneof(
    fc
      .tuple(fc.integer({ min, max: 100_000 }), fc.constantFrom(...(Object.keys(DURATION_UNITS) as Array<keyof typeof DURATION_UNITS>)))
      .map(([n, u]) => ({ yaml: `${n}${u}`, value: n * DURATION_UNITS[u] }))
      .filter((g) => g.value <= MAX_DURATION_MS),
    fc.integer({ min, max: 1_000_000_000 }).map((n) => ({ yaml: n, value: n })),
  );
}

function sizeArb(min: number): fc.Arbitrary<Gen<number>> {
  return fc.oneof(
    fc
      .tuple(fc.integer({ min, max: 4096 }), fc.constantFrom(...(Object.keys(SIZE_UNITS) as Array<keyof typeof SIZE_UNITS>)))
      .map(([n, u]) => ({ yaml: `${n}${u}`, value: n * SIZE_UNITS[u] })),
    fc.integer({ min, max: 2 ** 40 }).map((n) => ({ yaml: n, value: n })),
  );
}

const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));
const hexGroup = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16));
/** An IPv6 literal without brackets: 8 groups, or with one run of groups compressed to `::`. */
const ipv6 = fc
  .tuple(fc.array(hexGroup, { minLength: 8, maxLength: 8 }), fc.nat(8), fc.nat(8), fc.boolean())
  .map(([groups, a, b, upper]) => {
    const [from, to] = a <= b ? [a, b] : [b, a];
    const text = to > from ? `${groups.slice(0, from).join(':')}::${groups.slice(to).join(':')}` : groups.join(':');
    return upper ? text.toUpperCase() : text;
  });

/** host:port text and the SocketAddress it must become. */
function addressArb(allowPortZero: boolean): fc.Arbitrary<Gen<{ host: string; port: number }>> {
  const port = fc.integer({ min: allowPortZero ? 0 : 1, max: 65535 });
  return fc.oneof(
    fc.tuple(ipv4, port).map(([h, p]) => ({ yaml: `${h}:${p}`, value: { host: h, port: p } })),
    fc.tuple(fc.constantFrom('localhost', 'LocalHost'), port).map(([h, p]) => ({ yaml: `${h}:${p}`, value: { host: 'localhost', port: p } })),
    fc.tuple(ipv6, port).map(([h, p]) => ({ yaml: `[${h}]:${p}`, value: { host: h.toLowerCase(), port: p } })),
  );
}

const nameArb = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/);

interface Expected {
  admin: { host: string; port: number } | null;
  limits: Partial<Limits>;
  listeners: Array<{ name: string; address: { host: string; port: number }; protocols: string[]; tls: { cert: string; key: string } | null; routes: string }>;
  tables: Map<string, Array<{ cluster: string; prefix: string | null; path: string | null; timeoutMs: number }>>;
  clusters: Array<{ name: string; protocol: string; endpoints: Array<{ host: string; port: number }>; connectTimeoutMs: number | null; maxBodyBytes: number | null; loadBalancer: string | null; attempts: number | null; retryOn: string[] | null }>;
}

const LIMIT_KEYS = [
  ['maxHeaderBytes', 'maxHeaderBytes', 'size'],
  ['streamBufferBytes', 'streamBufferBytes', 'size'],
  ['headersTimeout', 'headersTimeoutMs', 'duration'],
  ['requestBodyTimeout', 'requestBodyTimeoutMs', 'duration'],
  ['keepAliveTimeout', 'keepAliveTimeoutMs', 'duration'],
  ['drainTimeout', 'drainTimeoutMs', 'duration'],
] as const;

/** A valid document (as data) and what its snapshot must hold. */
const validDoc: fc.Arbitrary<{ doc: Json; expected: Expected }> = fc
  .record({
    clusterNames: fc.uniqueArray(nameArb, { minLength: 1, maxLength: 4 }),
    listenerNames: fc.uniqueArray(nameArb, { minLength: 1, maxLength: 3 }),
    ports: fc.uniqueArray(fc.integer({ min: 1, max: 65535 }), { minLength: 4, maxLength: 4 }),
    hosts: fc.array(fc.oneof(ipv4, fc.constant('localhost')), { minLength: 4, maxLength: 4 }),
    isTls: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
    tlsProtocols: fc.subarray(['http1', 'h2', 'h3'], { minLength: 1 }),
    plainProtocols: fc.subarray(['http1', 'h2c'], { minLength: 1 }),
    hasAdmin: fc.boolean(),
    limits: fc.record({
      maxHeaderBytes: fc.option(sizeArb(1), { nil: undefined }),
      streamBufferBytes: fc.option(sizeArb(1), { nil: undefined }),
      headersTimeout: fc.option(durationArb(0), { nil: undefined }),
      requestBodyTimeout: fc.option(durationArb(0), { nil: undefined }),
      keepAliveTimeout: fc.option(durationArb(0), { nil: undefined }),
      drainTimeout: fc.option(durationArb(0), { nil: undefined }),
    }),
    clusters: fc.array(
      fc.record({
        protocol: fc.constantFrom('http1', 'h2c', 'h2', 'h3'),
        endpoints: fc.array(addressArb(false), { minLength: 1, maxLength: 3 }),
        connectTimeout: fc.option(durationArb(1), { nil: undefined }),
        maxBodyBytes: fc.option(sizeArb(0), { nil: undefined }),
        loadBalancer: fc.option(fc.constantFrom('p2c-ewma', 'round-robin', 'least-request'), { nil: undefined }),
        retries: fc.option(
          fc.record({ attempts: fc.integer({ min: 0, max: 10 }), retryOn: fc.subarray(['connect-failure', 'refused-stream', 'reset', '503', 'gateway-error']) }),
          { nil: undefined },
        ),
      }),
      { minLength: 4, maxLength: 4 },
    ),
    routes: fc.array(
      fc.record({ cluster: fc.nat(), isPrefix: fc.boolean(), segment: fc.stringMatching(/^[a-z0-9._~-]{0,8}$/), timeout: fc.option(durationArb(0), { nil: undefined }) }),
      { minLength: 1, maxLength: 4 },
    ),
    certDir: fc.constantFrom('certs', './tls', '/abs/certs', '../up'),
  })
  .map((g) => {
    const expected: Expected = { admin: null, limits: {}, listeners: [], tables: new Map(), clusters: [] };
    const doc: Record<string, Json> = {};
    if (g.hasAdmin) {
      doc.admin = { address: `${g.hosts[3]}:${g.ports[3]}` };
      expected.admin = { host: g.hosts[3], port: g.ports[3] };
    }
    const limits: Record<string, Json> = {};
    for (const [key, field] of LIMIT_KEYS) {
      const v = g.limits[key];
      if (v === undefined) continue;
      limits[key] = v.yaml;
      (expected.limits as Record<string, number>)[field] = v.value;
    }
    if (Object.keys(limits).length > 0) doc.limits = limits;
    const table: Array<Record<string, Json>> = [];
    const expectedRoutes: Array<{ cluster: string; prefix: string | null; path: string | null; timeoutMs: number }> = [];
    for (const r of g.routes) {
      const cluster = g.clusterNames[r.cluster % g.clusterNames.length];
      const p = `/${r.segment}`;
      const entry: Record<string, Json> = { match: r.isPrefix ? { prefix: p } : { path: p }, cluster };
      if (r.timeout !== undefined) entry.timeout = r.timeout.yaml;
      table.push(entry);
      expectedRoutes.push({ cluster, prefix: r.isPrefix ? p : null, path: r.isPrefix ? null : p, timeoutMs: r.timeout?.value ?? DEFAULT_ROUTE_TIMEOUT_MS });
    }
    doc.routes = { main: table };
    expected.tables.set('main', expectedRoutes);
    doc.listeners = g.listenerNames.map((name, i) => {
      const isTls = g.isTls[i];
      const protocols = isTls ? g.tlsProtocols : g.plainProtocols;
      const l: Record<string, Json> = { name, address: `${g.hosts[i]}:${g.ports[i]}`, protocols, routes: 'main' };
      const tls = isTls ? { cert: `${g.certDir}/${name}.pem`, key: `${g.certDir}/${name}-key.pem` } : null;
      if (tls !== null) l.tls = tls;
      expected.listeners.push({
        name,
        address: { host: g.hosts[i], port: g.ports[i] },
        protocols,
        tls: tls === null ? null : { cert: resolve(BASE_DIR, tls.cert), key: resolve(BASE_DIR, tls.key) },
        routes: 'main',
      });
      return l;
    });
    doc.clusters = g.clusterNames.map((name, i) => {
      const c = g.clusters[i];
      const out: Record<string, Json> = { name, protocol: c.protocol, endpoints: c.endpoints.map((e) => e.yaml) };
      if (c.connectTimeout !== undefined) out.connectTimeout = c.connectTimeout.yaml;
      if (c.maxBodyBytes !== undefined) out.maxBodyBytes = c.maxBodyBytes.yaml;
      if (c.loadBalancer !== undefined) out.loadBalancer = c.loadBalancer;
      if (c.retries !== undefined) out.retries = { attempts: c.retries.attempts, retryOn: c.retries.retryOn };
      expected.clusters.push({
        name,
        protocol: c.protocol,
        endpoints: c.endpoints.map((e) => e.value),
        connectTimeoutMs: c.connectTimeout?.value ?? null,
        maxBodyBytes: c.maxBodyBytes?.value ?? null,
        loadBalancer: c.loadBalancer ?? null,
        attempts: c.retries?.attempts ?? null,
        retryOn: c.retries?.retryOn ?? null,
      });
      return out;
    });
    return { doc, expected };
  });

function assertMatches(s: ConfigSnapshot, e: Expected): void {
  assert.deepEqual(s.admin, e.admin);
  assert.deepEqual(s.limits, { ...DEFAULT_LIMITS, ...e.limits });
  assert.equal(s.listeners.length, e.listeners.length);
  e.listeners.forEach((x, i) => {
    const l = s.listeners[i];
    assert.equal(l.name, x.name);
    assert.deepEqual(l.address, x.address);
    assert.deepEqual(l.protocols, x.protocols);
    assert.deepEqual(l.tls, x.tls);
    assert.equal(l.routes, x.routes);
    assert.equal(l.direction, 'inbound');
    assert.equal(l.meshTls, false);
    assert.deepEqual(l.authorize, []);
    assert.equal(s.listenerByName.get(x.name), l);
  });
  assert.deepEqual([...s.routeTables.keys()], [...e.tables.keys()]);
  for (const [name, routes] of e.tables) {
    const got = (s.routeTables.get(name) as RouteTable).routes;
    assert.deepEqual(got.map((r) => ({ cluster: r.cluster, prefix: r.match.prefix, path: r.match.path, timeoutMs: r.timeoutMs })), routes);
  }
  assert.deepEqual([...s.clusters.keys()], e.clusters.map((c) => c.name));
  for (const x of e.clusters) {
    const c = s.clusters.get(x.name);
    assert.ok(c !== undefined);
    assert.equal(c.protocol, x.protocol);
    assert.deepEqual(c.endpoints, x.endpoints);
    assert.equal(c.connectTimeoutMs, x.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
    assert.equal(c.idleTimeoutMs, DEFAULT_IDLE_TIMEOUT_MS);
    assert.equal(c.maxBodyBytes, x.maxBodyBytes ?? 0);
    assert.equal(c.loadBalancer, x.loadBalancer ?? 'p2c-ewma');
    assert.equal(c.maxConnectionsPerEndpoint, x.protocol === 'http1' ? DEFAULT_MAX_CONNECTIONS_HTTP1 : DEFAULT_MAX_CONNECTIONS_H2);
    assert.equal(c.maxPendingPerEndpoint, DEFAULT_MAX_PENDING);
    assert.equal(c.retries.attempts, x.attempts ?? DEFAULT_RETRIES.attempts);
    assert.deepEqual(c.retries.retryOn, x.retryOn ?? DEFAULT_RETRIES.retryOn);
    // h2 (TLS) gets default TLS settings; the others none unless given.
    assert.deepEqual(c.tls, x.protocol === 'h2' ? { ca: null, servername: null, insecureSkipVerify: false } : null);
  }
}

describe('parseConfig on generated valid documents', () => {
  it('parse to deeply frozen snapshots holding the values written (block and flow style)', () => {
    fc.assert(
      fc.property(validDoc, fc.boolean(), fc.integer({ min: 1, max: 1000 }), ({ doc, expected }, isFlow, version) => {
        const text = stringifyYaml(doc, isFlow ? { collectionStyle: 'flow' } : {});
        const s = parseConfig(text, SOURCE, BASE_DIR, version);
        assert.equal(s.version, version);
        assert.equal(s.source, SOURCE);
        assertDeeplyFrozen(s, 'snapshot');
        assertMatches(s, expected);
      }),
      { numRuns: 300 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Value parsers

/** The largest unit that divides `ms` exactly, as the config would write it. */
function formatDuration(ms: number): string {
  for (const [u, f] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms > 0 && ms % f === 0) return `${ms / f}${u}`;
  return `${ms}ms`;
}

function formatSize(bytes: number): string {
  for (const [u, f] of [['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) if (bytes > 0 && bytes % f === 0) return `${bytes / f}${u}`;
  return String(bytes);
}

function formatAddress(a: { host: string; port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

describe('value parsers', () => {
  it('parseDuration: N<unit>, digits and numbers round-trip; too long is refused', () => {
    fc.assert(
      fc.property(fc.nat(), fc.constantFrom(...(Object.keys(DURATION_UNITS) as Array<keyof typeof DURATION_UNITS>)), (n, u) => {
        const ms = n * DURATION_UNITS[u];
        const r = parseDuration(`${n}${u}`);
        if (ms > MAX_DURATION_MS) {
          assert.ok(!r.ok && /too long/.test(r.message));
          return;
        }
        assert.deepEqual(r, { ok: true, value: ms });
        assert.deepEqual(parseDuration(ms), { ok: true, value: ms });
        assert.deepEqual(parseDuration(String(ms)), { ok: true, value: ms });
        assert.deepEqual(parseDuration(` ${formatDuration(ms)} `), { ok: true, value: ms }, formatDuration(ms));
      }),
      { numRuns: 1000 },
    );
  });

  it('parseSize: N<unit>, digits and numbers round-trip; beyond 2^53 is refused', () => {
    fc.assert(
      fc.property(fc.oneof(fc.nat(), fc.maxSafeNat()), fc.constantFrom(...(Object.keys(SIZE_UNITS) as Array<keyof typeof SIZE_UNITS>)), (n, u) => {
        const bytes = n * SIZE_UNITS[u];
        const r = parseSize(`${n}${u}`);
        if (!Number.isSafeInteger(bytes)) {
          assert.ok(!r.ok && /too large/.test(r.message));
          return;
        }
        assert.deepEqual(r, { ok: true, value: bytes });
        assert.deepEqual(parseSize(bytes), { ok: true, value: bytes });
        assert.deepEqual(parseSize(formatSize(bytes)), { ok: true, value: bytes }, formatSize(bytes));
      }),
      { numRuns: 1000 },
    );
  });

  it('parseAddress: IPv4, localhost and IPv6 (compressed or not, any case) round-trip; ports are checked', () => {
    fc.assert(
      fc.property(addressArb(true), fc.boolean(), ({ yaml, value }, allowZero) => {
        const r = parseAddress(yaml as string, allowZero);
        if (value.port === 0 && !allowZero) {
          assert.ok(!r.ok && /port must be 1\.\.65535/.test(r.message));
          return;
        }
        assert.deepEqual(r, { ok: true, value });
        assert.deepEqual(parseAddress(formatAddress(value), allowZero), r, 'formatting the parsed address gives it back');
      }),
      { numRuns: 1000 },
    );
    fc.assert(
      fc.property(ipv4, fc.integer({ min: 65536, max: 10_000_000 }), (h, p) => { assert.equal(parseAddress(`${h}:${p}`, true).ok, false); }),
      { numRuns: 200 },
    );
  });

  it('never throw on arbitrary input, and a refusal says why', () => {
    const anyValue = fc.oneof(fc.string({ maxLength: 30 }), fc.double(), fc.integer(), fc.boolean(), fc.constant(null), fc.constant(undefined), fc.array(fc.nat(), { maxLength: 2 }), fc.object({ maxDepth: 1 }));
    fc.assert(
      fc.property(anyValue, (v) => {
        for (const r of [parseDuration(v), parseSize(v)]) {
          if (r.ok) assert.ok(Number.isSafeInteger(r.value) && r.value >= 0);
          else assert.ok(r.message.length > 0);
        }
      }),
      { numRuns: 1000 },
    );
    const addressLike = fc.oneof(fc.string({ maxLength: 40 }), fc.array(fc.constantFrom('[', ']', ':', '.', '::', '1', 'ff', 'localhost', '0', '65536', '%eth0', ' '), { maxLength: 12 }).map((a) => a.join('')));
    fc.assert(
      fc.property(addressLike, fc.boolean(), (s, allowZero) => {
        const r = parseAddress(s, allowZero);
        if (r.ok) {
          assert.ok(Number.isInteger(r.value.port) && r.value.port >= (allowZero ? 0 : 1) && r.value.port <= 65535);
          assert.deepEqual(parseAddress(formatAddress(r.value), allowZero), r);
        } else {
          assert.ok(r.message.length > 0);
        }
      }),
      { numRuns: 1000 },
    );
  });
});
