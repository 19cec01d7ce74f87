import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RouteTable, hostOf } from '../../../src/routing/router.js';
import type { HeaderMatch, RouteConfig } from '../../../src/config/types.js';

interface MatchSpec {
  authority?: string;
  path?: string;
  prefix?: string;
  headers?: Record<string, string>;
}

function route(cluster: string, spec: MatchSpec): RouteConfig {
  const headers: HeaderMatch[] = Object.entries(spec.headers ?? {}).map(([name, value]) => ({ name, value }));
  return {
    match: { authority: spec.authority ?? null, path: spec.path ?? null, prefix: spec.prefix ?? null, headers },
    cluster,
    timeoutMs: 15_000,
    authorize: [],
  };
}

/** The cluster of the matching route, or null. */
function pick(table: RouteTable, authority: string, path: string, rawHeaders: readonly string[] = []): string | null {
  return table.match(authority, path, rawHeaders)?.cluster ?? null;
}

describe('RouteTable', () => {
  it('matches an exact path, ignoring the query', () => {
    const t = new RouteTable([route('exact', { path: '/healthz' })]);
    assert.equal(pick(t, 'a', '/healthz'), 'exact');
    assert.equal(pick(t, 'a', '/healthz?verbose=1'), 'exact');
    assert.equal(pick(t, 'a', '/healthz?'), 'exact');
    assert.equal(pick(t, 'a', '/healthz/'), null);
    assert.equal(pick(t, 'a', '/health'), null);
    assert.equal(pick(t, 'a', '/healthzz'), null);
    assert.equal(pick(t, 'a', '/HEALTHZ'), null, 'paths are case-sensitive');
  });

  it('matches a plain string prefix of the path before the query', () => {
    const t = new RouteTable([route('api', { prefix: '/api' })]);
    assert.equal(pick(t, 'a', '/api'), 'api');
    assert.equal(pick(t, 'a', '/api/v1/users'), 'api');
    assert.equal(pick(t, 'a', '/apiary'), 'api', 'a plain string prefix, not a segment prefix');
    assert.equal(pick(t, 'a', '/api?x=1'), 'api');
    assert.equal(pick(t, 'a', '/ap?i=1'), null, 'the prefix must lie before the query');
    assert.equal(pick(t, 'a', '/ap'), null);
    assert.equal(pick(t, 'a', '/other/api'), null);
  });

  it('prefix / matches every origin-form path', () => {
    const t = new RouteTable([route('all', { prefix: '/' })]);
    assert.equal(pick(t, '', '/'), 'all');
    assert.equal(pick(t, '', '/?q'), 'all');
    assert.equal(pick(t, '', '/x/y'), 'all');
  });

  it('first matching route in config order wins', () => {
    const t = new RouteTable([
      route('health', { path: '/healthz' }),
      route('api', { prefix: '/api/' }),
      route('api-v2', { prefix: '/api/v2/' }),
      route('catch-all', { prefix: '/' }),
    ]);
    assert.equal(pick(t, 'h', '/healthz'), 'health');
    assert.equal(pick(t, 'h', '/api/v2/x'), 'api', 'an earlier, shorter prefix wins over a later, longer one');
    assert.equal(pick(t, 'h', '/elsewhere'), 'catch-all');
  });

  it('returns null when nothing matches, and for an empty table', () => {
    assert.equal(new RouteTable([]).match('a', '/', []), null);
    const t = new RouteTable([route('x', { path: '/x' })]);
    assert.equal(t.match('a', '/y', []), null);
  });

  it('returns the configured RouteConfig object itself', () => {
    const r = route('x', { prefix: '/' });
    const t = new RouteTable([r]);
    assert.equal(t.match('a', '/', []), r);
  });

  it('matches an exact authority case-insensitively, without its port', () => {
    const t = new RouteTable([route('ex', { authority: 'example.com' })]);
    assert.equal(pick(t, 'example.com', '/'), 'ex');
    assert.equal(pick(t, 'Example.COM', '/'), 'ex');
    assert.equal(pick(t, 'example.com:8080', '/'), 'ex');
    assert.equal(pick(t, 'EXAMPLE.COM:443', '/'), 'ex');
    assert.equal(pick(t, 'example.com.', '/'), 'ex', 'a trailing dot is the same host');
    assert.equal(pick(t, 'example.com.:80', '/'), 'ex');
    assert.equal(pick(t, 'example.co', '/'), null);
    assert.equal(pick(t, 'example.com.au', '/'), null);
    assert.equal(pick(t, 'www.example.com', '/'), null);
    assert.equal(pick(t, '', '/'), null, 'no Host header matches no exact authority');
  });

  it('lower-cases a configured authority given in upper case', () => {
    const t = new RouteTable([route('ex', { authority: 'Example.COM' })]);
    assert.equal(pick(t, 'example.com', '/'), 'ex');
    assert.equal(pick(t, 'EXAMPLE.com:1', '/'), 'ex');
  });

  it('matches a wildcard authority on one or more labels before the suffix', () => {
    const t = new RouteTable([route('wild', { authority: '*.example.com' })]);
    assert.equal(pick(t, 'a.example.com', '/'), 'wild');
    assert.equal(pick(t, 'a.b.example.com', '/'), 'wild');
    assert.equal(pick(t, 'A.Example.Com:8443', '/'), 'wild');
    assert.equal(pick(t, 'example.com', '/'), null);
    assert.equal(pick(t, '.example.com', '/'), null);
    assert.equal(pick(t, 'badexample.com', '/'), null);
    assert.equal(pick(t, 'a.example.com.evil', '/'), null);
    assert.equal(pick(t, 'example.com:8080', '/'), null);
  });

  it('null authority matches any authority, including none', () => {
    const t = new RouteTable([route('any', { path: '/' })]);
    assert.equal(pick(t, '', '/'), 'any');
    assert.equal(pick(t, 'whatever:1', '/'), 'any');
    assert.equal(pick(t, '[::1]:80', '/'), 'any');
  });

  it('handles IPv6 literals with and without a port', () => {
    const t = new RouteTable([route('v6', { authority: '[::1]' }), route('v6-bare', { authority: 'FE80::1' })]);
    assert.equal(pick(t, '[::1]:8080', '/'), 'v6');
    assert.equal(pick(t, '[::1]', '/'), 'v6');
    assert.equal(pick(t, '[::2]:8080', '/'), null);
    assert.equal(pick(t, '[fe80::1]:80', '/'), 'v6-bare', 'a bare configured literal is bracketed');
    assert.equal(pick(t, '[FE80::1]', '/'), 'v6-bare');
    assert.equal(pick(t, '::1', '/'), null, 'an unbracketed literal in the request is not an IPv6 host');
  });

  it('matches headers by name case-insensitively and value exactly, HTTP/1.1 and HTTP/2 style', () => {
    const t = new RouteTable([route('canary', { headers: { 'x-canary': 'true' } }), route('rest', { prefix: '/' })]);
    assert.equal(pick(t, 'a', '/', ['Host', 'a', 'X-Canary', 'true']), 'canary');
    assert.equal(pick(t, 'a', '/', ['host', 'a', 'x-canary', 'true']), 'canary');
    assert.equal(pick(t, 'a', '/', ['X-CANARY', 'true']), 'canary');
    assert.equal(pick(t, 'a', '/', ['X-Canary', 'TRUE']), 'rest', 'values are exact');
    assert.equal(pick(t, 'a', '/', ['X-Canary', 'true ']), 'rest');
    assert.equal(pick(t, 'a', '/', ['X-Canary-Extra', 'true']), 'rest');
    assert.equal(pick(t, 'a', '/', ['X-Canar', 'true']), 'rest');
    assert.equal(pick(t, 'a', '/', ['true', 'x-canary']), 'rest', 'names and values are not confused');
    assert.equal(pick(t, 'a', '/', []), 'rest');
  });

  it('a configured header name in upper case is lower-cased', () => {
    const t = new RouteTable([route('canary', { headers: { 'X-Canary': 'yes' } })]);
    assert.equal(pick(t, 'a', '/', ['x-canary', 'yes']), 'canary');
  });

  it('a repeated header matches when any occurrence matches', () => {
    const t = new RouteTable([route('tenant', { headers: { 'x-tenant': 'b' } })]);
    assert.equal(pick(t, 'a', '/', ['X-Tenant', 'a', 'Accept', '*/*', 'x-tenant', 'b']), 'tenant');
    assert.equal(pick(t, 'a', '/', ['X-Tenant', 'a', 'X-Tenant', 'c']), null);
  });

  it('all header matches and all other conditions must hold', () => {
    const t = new RouteTable([
      route('both', { authority: 'api.local', prefix: '/v1/', headers: { 'x-a': '1', 'x-b': '2' } }),
    ]);
    const h = ['X-A', '1', 'X-B', '2'];
    assert.equal(pick(t, 'api.local:80', '/v1/x', h), 'both');
    assert.equal(pick(t, 'api.local:80', '/v1/x', ['X-A', '1']), null);
    assert.equal(pick(t, 'api.local:80', '/v2/x', h), null);
    assert.equal(pick(t, 'other.local', '/v1/x', h), null);
  });

  it('a header list with an odd length is read safely', () => {
    const t = new RouteTable([route('h', { headers: { 'x-a': '1' } })]);
    assert.equal(pick(t, 'a', '/', ['x-b', '2', 'x-a']), null);
  });

  it('a hand-built match with both path and prefix needs both to hold', () => {
    const inside = new RouteTable([route('x', { path: '/api/x', prefix: '/api/' })]);
    assert.equal(pick(inside, 'a', '/api/x'), 'x');
    assert.equal(pick(inside, 'a', '/api/y'), null);
    const outside = new RouteTable([route('x', { path: '/other', prefix: '/api/' })]);
    assert.equal(pick(outside, 'a', '/other'), null);
  });

  it('keeps the routes in order, frozen', () => {
    const routes = [route('a', { path: '/a' }), route('b', { path: '/b' })];
    const t = new RouteTable(routes);
    assert.deepEqual(
      t.routes.map((r) => r.cluster),
      ['a', 'b'],
    );
    assert.ok(Object.isFrozen(t.routes));
    routes.push(route('c', { path: '/c' }));
    assert.equal(t.routes.length, 2, 'the table does not see later changes to the input array');
  });
});

describe('hostOf', () => {
  it('strips the port and lower-cases', () => {
    assert.equal(hostOf('Example.COM:8080'), 'example.com');
    assert.equal(hostOf('example.com'), 'example.com');
    assert.equal(hostOf('example.com.'), 'example.com');
    assert.equal(hostOf('[::1]:8080'), '[::1]');
    assert.equal(hostOf('[FE80::1]'), '[fe80::1]');
    assert.equal(hostOf('127.0.0.1:15006'), '127.0.0.1');
    assert.equal(hostOf(''), '');
  });
});
