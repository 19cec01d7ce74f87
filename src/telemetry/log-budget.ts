/**
 * At most `perSecond` lines a second for one kind of event (denied requests, refused
 * handshakes): a flood of them must not flood the log. `take()` says whether this event may be
 * logged; when a new second starts, `suppressed` holds how many of the previous second's events
 * were not, for one summary line.
 */
export class LogBudget {
  readonly perSecond: number;
  private second: number;
  private count: number;
  /** Events of the last finished second that were not logged (read right after `take()`). */
  suppressed: number;

  constructor(perSecond: number) {
    this.perSecond = perSecond;
    this.second = 0;
    this.count = 0;
    this.suppressed = 0;
  }

  take(now: number): boolean {
    const second = Math.floor(now / 1000);
    this.suppressed = 0;
    if (second !== this.second) {
      if (this.count > this.perSecond) this.suppressed = this.count - this.perSecond;
      this.second = second;
      this.count = 0;
    }
    return ++this.count <= this.perSecond;
  }
}
