/**
 * Load generator for the allocation bench's POST phase, run as its own process so its
 * allocations stay out of the sidecar's count: `--concurrency` keep-alive connections each
 * POSTing `--size` bytes (one preallocated Buffer, sent with a content-length) back to back
 * for `--seconds`, checking that the upstream saw every byte (it answers with the count).
 *
 * stdout: `{"pid":..}` when started, then one result line
 * `{"requests":..,"bytes":..,"errors":..,"seconds":..}`.
 */
import http from 'node:http';
import { numberFlag, parseFlags } from './alloc-common.js';

const flags = parseFlags(process.argv.slice(2));
const port = numberFlag(flags, 'port', 0);
if (port === 0) throw new Error('--port is required');
const size = numberFlag(flags, 'size', 1 << 20);
const concurrency = numberFlag(flags, 'concurrency', 4);
const seconds = numberFlag(flags, 'seconds', 10);
const maxRequests = numberFlag(flags, 'max-requests', 1_000_000);
const path = flags.get('path') ?? '/upload';

const body = Buffer.alloc(size, 0x61);
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const deadline = performance.now() + seconds * 1000;
let requests = 0;
let errors = 0;
let bytes = 0;

function postOnce(): Promise<void> {
  return new Promise((res) => {
    const req = http.request(
      { host: '127.0.0.1', port, method: 'POST', path, agent, headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) } },
      (resp) => {
        let text = '';
        resp.setEncoding('utf8');
        resp.on('data', (c: string) => {
          text += c;
        });
        resp.on('end', () => {
          if (resp.statusCode === 200 && text === String(size)) {
            requests++;
            bytes += size;
          } else {
            errors++;
          }
          res();
        });
        resp.on('error', () => {
          errors++;
          res();
        });
      },
    );
    req.on('error', () => {
      errors++;
      res();
    });
    req.end(body);
  });
}

async function worker(): Promise<void> {
  // Bounded: by time, by request count, and by errors (a dead sidecar must not spin here).
  while (performance.now() < deadline && requests + errors < maxRequests && errors < 1000) {
    await postOnce();
  }
}

process.stdout.write(JSON.stringify({ pid: process.pid }) + '\n');
const t0 = performance.now();
await Promise.all(Array.from({ length: concurrency }, () => worker()));
const elapsed = (performance.now() - t0) / 1000;
agent.destroy();
process.stdout.write(JSON.stringify({ requests, bytes, errors, seconds: elapsed }) + '\n');
