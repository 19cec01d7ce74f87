/**
 * Batched uncorking. A codec corks its socket when it starts writing a message, so the head
 * and the first body bytes leave in one writev; every socket corked during one turn of the
 * event loop is uncorked together in its check phase (one `setImmediate` for all of them).
 *
 * Why the check phase and not the end of the tick: the poll phase runs the read callbacks of
 * every socket epoll reported, each in its own tick, so uncorking at tick end put one write
 * system call between each pair of reads. Issuing the writes of the whole batch back to back
 * cut proxy CPU per request from 86 to 64-70 µs under wrk -c50 (decision log, 2026-11-26,
 * "uncork in the check phase"); our reading is that a write which wakes an idle peer on the
 * other vCPU is what costs (~35-40 µs a cross-core wake-up on this VM), and in a burst only
 * the first one does. A message written from a check-phase callback goes out at the next
 * turn's check phase; the poll between does not block while an immediate is pending.
 *
 * One `setImmediate` serves every socket (a nextTick per socket allocated a tick object per
 * message: 8% of the bytes allocated per request in bench/alloc.ts).
 */
export interface Corked {
  uncork(): void;
}

// Slots are overwritten, never truncated (`length = 0` would drop the backing store and
// allocate a new one every turn).
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

/** Uncork `c` in this turn's check phase. The caller keeps its own `isCorked` flag. */
export function uncorkThisTurn(c: Corked): void {
  queue[count++] = c;
  if (!isScheduled) {
    isScheduled = true;
    setImmediate(flush);
  }
}
