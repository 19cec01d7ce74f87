/**
 * Batched uncorking. A codec corks its socket when it starts writing a message, so the head
 * and the first body bytes leave in one writev; the socket is uncorked at the end of the
 * current tick. One `process.nextTick` serves every socket corked in the same tick (a
 * nextTick per socket allocated a tick object per message: 8% of the bytes allocated per
 * request in bench/alloc.ts).
 */
export interface Corked {
  uncork(): void;
}

// Slots are overwritten, never truncated (`length = 0` would drop the backing store and
// allocate a new one every tick).
const queue: (Corked | null)[] = [];
let count = 0;
let isScheduled = false;

function flush(): void {
  isScheduled = false;
  // Items corked while flushing are served in this same loop (it reads the live count).
  for (let i = 0; i < count; i++) {
    const c = queue[i] as Corked;
    queue[i] = null;
    c.uncork();
  }
  count = 0;
}

/** Uncork `c` at the end of this tick. The caller keeps its own `isCorked` flag. */
export function uncorkAtTickEnd(c: Corked): void {
  queue[count++] = c;
  if (!isScheduled) {
    isScheduled = true;
    process.nextTick(flush);
  }
}
