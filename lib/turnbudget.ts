/**
 * A bound on the work of one event-loop turn, shared by every connection.
 *
 * Node 20's libuv accepts one connection per turn of the event loop (libuv
 * PR #3696), and in one turn it reads up to 32 × 64 KiB from each readable
 * socket. With a hundred busy sessions a turn took 100–250 ms, so a new
 * client waited up to 15 s for the SSH banner (bench/README.md), and a
 * keystroke waited behind everyone else's bulk data.
 *
 * Legs charge the bytes they process to one budget per turn. A chunk that
 * arrives once the budget is spent goes to its leg's backlog instead (unless
 * it is small and nothing of its leg waits before it: mustWait); the
 * budget drains backlogs round-robin at the end of each turn, up to a
 * budget's worth, and leaves the rest for the next turn. Between two of
 * those the loop polls again: it accepts, and reads what has arrived.
 */

/** A reader whose chunks wait for a later turn. */
export interface Backlogged {
  /** Processes waiting chunks while the budget lasts; true if some are left. */
  drainBacklog(): boolean;
}

/** Chunks below this are processed in the turn they arrive, budget or not. */
export const SMALL_CHUNK_BYTES = 4096;

export class TurnBudget {
  /** Bytes processed since start, over all turns (lib/quietgc.ts watches it). */
  processedBytes = 0;
  private spent = 0;
  private waiting: Backlogged[] = [];
  private turnEndScheduled = false;

  constructor(readonly bytesPerTurn: number) {}

  /** True once this turn's bytes are used up: what arrives now waits for a later turn. */
  get exhausted(): boolean {
    return this.spent >= this.bytesPerTurn;
  }

  /**
   * Whether a chunk of `bytes` that nothing waits before must wait for a
   * later turn. A small one (a keystroke, a window adjustment) costs little
   * and is processed even once the budget is spent.
   */
  mustWait(bytes: number): boolean {
    return this.exhausted && bytes >= SMALL_CHUNK_BYTES;
  }

  /** Counts bytes processed in this turn. */
  charge(bytes: number): void {
    this.spent += bytes;
    this.processedBytes += bytes;
    this.scheduleTurnEnd();
  }

  /** Serves `reader`'s backlog from the next turn on, after those already waiting. */
  enqueue(reader: Backlogged): void {
    this.waiting.push(reader);
    this.scheduleTurnEnd();
  }

  /**
   * setImmediate runs after the poll phase, where socket data and new
   * connections are delivered; what it schedules runs after the next one.
   */
  private scheduleTurnEnd(): void {
    if (this.turnEndScheduled) return;
    this.turnEndScheduled = true;
    setImmediate(this.endTurn);
  }

  private readonly endTurn = (): void => {
    this.turnEndScheduled = false;
    this.spent = 0;
    // Readers this turn could not reach go first next turn, then those it served in part.
    const unserved: Backlogged[] = [];
    const served: Backlogged[] = [];
    for (const reader of this.waiting) {
      if (this.exhausted) unserved.push(reader);
      else if (reader.drainBacklog()) served.push(reader);
    }
    this.waiting = unserved.concat(served);
    if (this.waiting.length > 0) this.scheduleTurnEnd();
  };
}

/**
 * Bytes the daemon processes per event-loop turn: ~3 ms of relaying at the
 * daemon's ~300 MiB/s, so even while it is saturated it accepts a
 * connection every few milliseconds.
 */
export const BYTES_PER_TURN = 1024 * 1024;

/** The daemon's one budget: all connections share the one event loop. */
export const turnBudget = new TurnBudget(BYTES_PER_TURN);
