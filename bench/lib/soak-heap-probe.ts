/**
 * Preloaded into the soak's sidecar process (`node --import .../soak-heap-probe.js
 * dist/src/cli.js ...`) because the admin /stats document has no heap figures. It talks over
 * file descriptor 3, a socket pair the soak opened: each line `sample` is answered with one
 * JSON line of V8 heap figures, `gc-sample` with the same after a forced full GC (the live
 * heap, used twice per run: at the end of the warm-up and at the end). The socket is unref'd,
 * so the probe never keeps the process alive; it allocates only when asked. The sidecar's code
 * is untouched; once /stats reports heap figures this probe can go.
 */
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';

v8.setFlagsFromString('--expose-gc');
const forceGc = vm.runInNewContext('gc') as () => void;

function figures(): string {
  const h = v8.getHeapStatistics();
  let oldSpace = 0;
  let newSpace = 0;
  for (const s of v8.getHeapSpaceStatistics()) {
    if (s.space_name === 'old_space') oldSpace = s.space_used_size;
    else if (s.space_name === 'new_space') newSpace = s.space_used_size;
  }
  const m = process.memoryUsage();
  return JSON.stringify({
    heapUsed: h.used_heap_size,
    heapTotal: h.total_heap_size,
    oldSpaceUsed: oldSpace,
    newSpaceUsed: newSpace,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    mallocedMemory: h.malloced_memory,
  });
}

const channel = new net.Socket({ fd: 3, readable: true, writable: true });
channel.unref();
channel.setEncoding('utf8');
let pending = '';
channel.on('data', (text: string) => {
  pending += text;
  for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
    const command = pending.slice(0, nl).trim();
    pending = pending.slice(nl + 1);
    if (command === 'gc-sample') forceGc();
    if (command === 'sample' || command === 'gc-sample') channel.write(figures() + '\n');
  }
  if (pending.length > 1024) pending = '';
});
channel.on('error', () => undefined);
