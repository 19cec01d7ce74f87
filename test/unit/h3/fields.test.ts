// HTTP/3 field validation (protocols/h3/fields.ts): the RFC 9114 §4.2-§4.4 rules for requests,
// responses and trailers. Every refusal is a stream error H3_MESSAGE_ERROR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { H3Error, H3_MESSAGE_ERROR } from '../../../protocols/h3/frames.js';
import {
  FieldInfo,
  isValidFieldName,
  isValidFieldValue,
  validateRequestFields,
  validateResponseFields,
  validateTrailerFields,
} from '../../../protocols/h3/fields.js';

const GET = [':method', 'GET', ':scheme', 'https', ':authority', 'example.com', ':path', '/a?b=1'];

function requestOk(fields: string[], extended = false): FieldInfo {
  const info = new FieldInfo();
  const err = validateRequestFields(fields, info, { isExtendedConnectEnabled: extended });
  if (err !== null) assert.fail(`unexpected ${err.toString()}`);
  return info;
}

function requestBad(fields: string[], why: string, extended = false): void {
  const err = validateRequestFields(fields, new FieldInfo(), { isExtendedConnectEnabled: extended });
  assert.ok(err instanceof H3Error, `expected malformed: ${why}`);
  assert.equal(err.code, H3_MESSAGE_ERROR, why);
  assert.equal(err.isConnectionError, false, why);
}

function responseBad(fields: string[], why: string): void {
  const err = validateResponseFields(fields, new FieldInfo());
  assert.ok(err instanceof H3Error, `expected malformed: ${why}`);
  assert.equal(err.code, H3_MESSAGE_ERROR, why);
}

test('names and values', () => {
  assert.ok(isValidFieldName('x-request-id'));
  assert.ok(isValidFieldName("a!#$%&'*+-.^_`|~09"));
  assert.ok(!isValidFieldName(''));
  assert.ok(!isValidFieldName('Content-Type'), 'upper case is malformed in HTTP/3');
  assert.ok(!isValidFieldName('a b'));
  assert.ok(!isValidFieldName('a:b'));
  assert.ok(!isValidFieldName('caf\u00e9'));
  assert.ok(isValidFieldValue(''));
  assert.ok(isValidFieldValue('text/html; charset=utf-8'));
  assert.ok(isValidFieldValue('a\tb'));
  assert.ok(isValidFieldValue('obs-text \u00ff'));
  for (const bad of ['a\r\nb', 'a\nb', 'a\0b', 'a\x7fb', ' lead', 'trail ', '\ttab', 'x\x01']) {
    assert.ok(!isValidFieldValue(bad), JSON.stringify(bad));
  }
});

test('request: a plain GET fills FieldInfo', () => {
  const info = requestOk([...GET, 'user-agent', 'curl', 'content-length', '0', 'te', 'trailers']);
  assert.equal(info.method, 'GET');
  assert.equal(info.scheme, 'https');
  assert.equal(info.authority, 'example.com');
  assert.equal(info.path, '/a?b=1');
  assert.equal(info.contentLength, 0);
  assert.equal(info.isConnect, false);
});

test('request: host instead of :authority, OPTIONS *, repeated identical content-length', () => {
  requestOk([':method', 'GET', ':scheme', 'http', ':path', '/', 'host', 'example.com']);
  requestOk([':method', 'OPTIONS', ':scheme', 'https', ':authority', 'a', ':path', '*']);
  assert.equal(requestOk([...GET, 'content-length', '12', 'content-length', '12']).contentLength, 12);
  requestOk([...GET, 'host', 'example.com']);
  // A non-http scheme has no mandatory authority.
  requestOk([':method', 'GET', ':scheme', 'urn', ':path', 'x']);
});

test('request: pseudo-header rules', () => {
  requestBad([':scheme', 'https', ':authority', 'a', ':path', '/'], 'missing :method');
  requestBad([':method', 'GET', ':authority', 'a', ':path', '/'], 'missing :scheme');
  requestBad([':method', 'GET', ':scheme', 'https', ':authority', 'a'], 'missing :path');
  requestBad([':method', 'GET', ':scheme', 'https', ':authority', 'a', ':path', ''], 'empty :path');
  requestBad([':method', 'GET', ':scheme', 'https', ':authority', 'a', ':path', 'x'], 'path not origin-form');
  requestBad([':method', 'GET', ':scheme', 'https', ':authority', 'a', ':path', '*'], '* without OPTIONS');
  requestBad([...GET, ':method', 'GET'], 'duplicate :method');
  requestBad([':method', 'GET', ':method', 'POST', ':scheme', 'https', ':authority', 'a', ':path', '/'], 'two methods');
  requestBad([...GET, ':status', '200'], 'response pseudo-header in a request');
  requestBad([':status', '200', ...GET], 'response pseudo-header first');
  requestBad([...GET, ':foo', 'x'], 'unknown pseudo-header');
  requestBad([':method', 'GET', 'user-agent', 'x', ':scheme', 'https', ':authority', 'a', ':path', '/'], 'pseudo after regular');
  requestBad([':method', 'GET', ':scheme', 'https', ':path', '/'], 'no :authority nor host');
  requestBad([':method', 'GET', ':scheme', 'https', ':authority', '', ':path', '/', 'host', 'a'], 'empty :authority');
  requestBad([...GET, 'host', 'other.example'], ':authority and host differ');
  requestBad([':method', '', ':scheme', 'https', ':authority', 'a', ':path', '/'], 'empty :method');
  requestBad([':method', 'G T', ':scheme', 'https', ':authority', 'a', ':path', '/'], 'bad :method');
  requestBad([':method', 'GET', ':scheme', 'https', ':authority', 'a\r\nx: y', ':path', '/'], 'CRLF in :authority');
  requestBad(['user-agent'], 'odd list');
  requestBad([':method', 'GET', ':scheme', 'https', ':authority', 'a', ':path', '/a b'], 'space in :path');
  requestBad([':method', 'GET', ':scheme', 'https', ':authority', 'a', ':path', '/caf\u00e9'], 'obs-text in :path');
  requestBad([':method', 'GET', ':scheme', 'https', ':authority', 'a b', ':path', '/'], 'space in :authority');
  requestBad([':method', 'GET', ':scheme', 'https', ':authority', 'user@a', ':path', '/'], 'userinfo');
  requestBad([':method', 'GET', ':scheme', 'http', ':path', '/', 'host', 'u:p@a'], 'userinfo in host');
  requestBad([':method', 'GET', ':scheme', '1http', ':authority', 'a', ':path', '/'], 'bad :scheme');
  requestBad([':method', 'GET', ':scheme', 'ht tp', ':authority', 'a', ':path', '/'], 'space in :scheme');
  requestOk([':method', 'GET', ':scheme', 'coap+tcp', ':path', '/x']);
});

test('request: regular field rules', () => {
  requestBad([...GET, 'Content-Type', 'x'], 'upper-case name');
  requestBad([...GET, 'x y', 'x'], 'space in name');
  requestBad([...GET, '', 'x'], 'empty name');
  requestBad([...GET, 'x-a', 'a\nb'], 'LF in value');
  requestBad([...GET, 'x-a', ' padded'], 'leading space');
  for (const name of ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']) {
    requestBad([...GET, name, 'x'], `connection-specific ${name}`);
  }
  requestOk([...GET, 'te', 'Trailers']);
  requestBad([...GET, 'te', 'gzip'], 'te other than trailers');
  requestBad([...GET, 'te', 'trailers, gzip'], 'te list');
  requestBad([...GET, 'content-length', '1', 'content-length', '2'], 'conflicting content-length');
  requestBad([...GET, 'content-length', '1, 1'], 'content-length list');
  requestBad([...GET, 'content-length', '-1'], 'negative content-length');
  requestBad([...GET, 'content-length', ''], 'empty content-length');
  requestBad([...GET, 'content-length', '1234567890123456'], 'content-length beyond 2^53');
});

test('request: CONNECT and extended CONNECT', () => {
  const connect = requestOk([':method', 'CONNECT', ':authority', 'db.internal:5432']);
  assert.equal(connect.isConnect, true);
  requestBad([':method', 'CONNECT', ':authority', 'a:1', ':path', '/'], 'CONNECT with :path');
  requestBad([':method', 'CONNECT', ':authority', 'a:1', ':scheme', 'https'], 'CONNECT with :scheme');
  requestBad([':method', 'CONNECT'], 'CONNECT without :authority');
  const ws = [':method', 'CONNECT', ':protocol', 'websocket', ':scheme', 'https', ':authority', 'a', ':path', '/chat'];
  const info = requestOk(ws, true);
  assert.equal(info.protocol, 'websocket');
  assert.equal(info.isConnect, false, 'extended CONNECT is not a raw tunnel');
  requestBad(ws, ':protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL', false);
  requestBad([':method', 'GET', ':protocol', 'websocket', ':scheme', 'https', ':authority', 'a', ':path', '/'], ':protocol on GET', true);
  requestBad([':method', 'CONNECT', ':protocol', 'websocket', ':authority', 'a'], 'extended CONNECT without :path', true);
});

test('response rules', () => {
  const info = new FieldInfo();
  assert.equal(validateResponseFields([':status', '200', 'content-length', '5', 'server', 'skiff'], info), null);
  assert.equal(info.status, 200);
  assert.equal(info.contentLength, 5);
  assert.equal(validateResponseFields([':status', '103', 'link', '</a>; rel=preload'], info), null);
  assert.equal(info.status, 103);
  responseBad([], 'missing :status');
  responseBad(['server', 'x'], 'missing :status with fields');
  responseBad([':status', '200', ':status', '200'], 'duplicate :status');
  responseBad([':status', '20'], 'two digits');
  responseBad([':status', '2000'], 'four digits');
  responseBad([':status', 'abc'], 'not digits');
  responseBad([':status', '099'], 'below 100');
  responseBad([':status', '600'], 'above 599');
  responseBad([':status', '101'], '101 is not allowed in HTTP/3');
  responseBad([':status', '200', ':path', '/'], 'request pseudo-header in a response');
  responseBad([':status', '200', 'x', 'y', ':status', '200'], 'pseudo after regular');
  responseBad([':status', '200', 'te', 'trailers'], 'te in a response');
  responseBad([':status', '200', 'Server', 'x'], 'upper case');
  responseBad([':status', '200', 'transfer-encoding', 'chunked'], 'transfer-encoding');
});

test('trailer rules', () => {
  const info = new FieldInfo();
  info.contentLength = 7;
  assert.equal(validateTrailerFields(['grpc-status', '0', 'grpc-message', 'ok'], info), null);
  assert.equal(info.contentLength, 7, 'trailers do not change the framing');
  for (const [fields, why] of [
    [[':status', '200'], 'pseudo-header in trailers'],
    [['x', 'y', ':path', '/'], 'late pseudo-header in trailers'],
    [['Grpc-Status', '0'], 'upper case'],
    [['connection', 'close'], 'connection-specific'],
    [['x', 'a\r\n'], 'CRLF'],
  ] as Array<[string[], string]>) {
    const err = validateTrailerFields(fields, info);
    assert.equal(err?.code, H3_MESSAGE_ERROR, why);
  }
});

test('property: validation never throws on arbitrary latin1 field lists', () => {
  const str = fc.uint8Array({ maxLength: 12 }).map((b) => Buffer.from(b).toString('latin1'));
  const pseudo = fc.constantFrom(':method', ':scheme', ':authority', ':path', ':status', ':protocol', 'host', 'te');
  const list = fc.array(fc.oneof(str, pseudo), { maxLength: 16 });
  const info = new FieldInfo();
  fc.assert(
    fc.property(list, (fields) => {
      for (const err of [
        validateRequestFields(fields, info, { isExtendedConnectEnabled: true }),
        validateResponseFields(fields, info),
        validateTrailerFields(fields, info),
      ]) {
        if (err !== null) assert.equal(err.code, H3_MESSAGE_ERROR);
      }
    }),
    { numRuns: 1000 },
  );
});

test('property: whatever validation accepts has clean names and values', () => {
  const str = fc.uint8Array({ maxLength: 10 }).map((b) => Buffer.from(b).toString('latin1'));
  fc.assert(
    fc.property(fc.array(fc.tuple(str, str), { maxLength: 6 }), (pairs) => {
      const fields = [...GET, ...pairs.flat()];
      if (validateRequestFields(fields, new FieldInfo()) === null) {
        for (let i = 8; i < fields.length; i += 2) {
          assert.ok(isValidFieldName(fields[i]));
          assert.ok(isValidFieldValue(fields[i + 1]));
          assert.ok(!/[\r\n\0]/.test(fields[i + 1]));
        }
      }
    }),
    { numRuns: 1000 },
  );
});
