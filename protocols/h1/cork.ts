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

const queue: Corked[] = [];
let isScheduled = false;

function flush(): void {
  isScheduled = false;
  // Items corked while flushing wait for the next round (the loop reads the live length).
  for (let i = 0; i < queue.length; i++) queue[i].uncork();
  queue.length = 0;
}

/** Uncork `c` at the end of this tick. The caller keeps its own `isCorked` flag. */
export function uncorkAtTickEnd(c: Corked): void {
  queue.push(c);
  if (!isScheduled) {
    isScheduled = true;
    process.nextTick(flush);
  }
}
