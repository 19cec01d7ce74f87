/**
 * ConfigStore: the data plane's view of the control plane (DESIGN invariant 6). `current` is an
 * immutable snapshot; `swap()` replaces it atomically (one reference assignment), so a request
 * that read `current` at its start finishes on that snapshot. Listeners for swaps are told
 * after the swap, synchronously, in registration order.
 */
import type { ConfigSnapshot } from '../src/config/types.js';

export type SwapListener = (next: ConfigSnapshot, prev: ConfigSnapshot) => void;

export class ConfigStore {
  current: ConfigSnapshot;
  private readonly listeners: SwapListener[];

  constructor(initial: ConfigSnapshot) {
    this.current = initial;
    this.listeners = [];
  }

  swap(next: ConfigSnapshot): void {
    const prev = this.current;
    this.current = next;
    for (const l of this.listeners) l(next, prev);
  }

  onSwap(listener: SwapListener): void {
    this.listeners.push(listener);
  }

  /** The version the next snapshot should carry. */
  get nextVersion(): number {
    return this.current.version + 1;
  }
}
