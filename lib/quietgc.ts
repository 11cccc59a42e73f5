/**
 * One full garbage collection once relaying stops.
 *
 * Every socket read is a fresh buffer, and V8 frees them only at its next
 * full collection. With the heap limits the daemon runs with
 * (`--initial-old-space-size`, `--heap-growing-percent`: docs/deploy.md) that
 * collection may not come for minutes after a burst: with 1,000 idle
 * sessions ~2× the live heap stayed reserved, ~150 MiB of RSS instead of
 * ~123 (bench/README.md). So once the daemon has relayed a burst and then
 * nothing for a few seconds, it collects once itself, and jemalloc returns
 * the freed pages. Needs node's `--expose-gc` (every launcher passes it).
 */
import type { Logger } from './logger.js';
import { turnBudget, type TurnBudget } from './turnbudget.js';

/** Seconds without relayed bytes that count as the end of a burst. */
const QUIET_MS = 5_000;

/** Relayed bytes that leave enough garbage to be worth a full collection (~60 ms with 1,000 sessions). */
const MIN_BYTES = 32 * 1024 * 1024;

const CHECK_INTERVAL_MS = 1_000;

export interface QuietCollectorOptions {
  gc: () => void;
  budget?: TurnBudget;
  quietMs?: number;
  minBytes?: number;
  log?: Logger;
}

/** Decides when to collect; `check` is called with the time, once a second in the daemon. */
export class QuietCollector {
  private readonly budget: TurnBudget;
  private readonly quietMs: number;
  private readonly minBytes: number;
  /** processedBytes at the last collection, and when it last changed. */
  private collectedAt: number;
  private seenBytes: number;
  private lastTrafficAt = 0;

  constructor(private readonly options: QuietCollectorOptions) {
    this.budget = options.budget ?? turnBudget;
    this.quietMs = options.quietMs ?? QUIET_MS;
    this.minBytes = options.minBytes ?? MIN_BYTES;
    this.collectedAt = this.budget.processedBytes;
    this.seenBytes = this.collectedAt;
  }

  /** Collects if at least minBytes were relayed since the last collection and none for quietMs; true if it did. */
  check(now: number): boolean {
    const bytes = this.budget.processedBytes;
    if (bytes !== this.seenBytes) {
      this.seenBytes = bytes;
      this.lastTrafficAt = now;
      return false;
    }
    const relayed = bytes - this.collectedAt;
    if (relayed < this.minBytes || now - this.lastTrafficAt < this.quietMs) return false;
    this.collectedAt = bytes;
    const started = performance.now();
    this.options.gc();
    this.options.log?.debug(
      `full garbage collection after ${Math.round((now - this.lastTrafficAt) / 1000)} s without traffic ` +
        `(${Math.round(relayed / 1048576)} MiB relayed since the last): ${(performance.now() - started).toFixed(0)} ms`,
    );
    return true;
  }
}

/** Starts checking once a second; returns a stop function. Off (with a warning) without `--expose-gc`. */
export function collectWhenQuiet(log: Logger): () => void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== 'function') {
    log.warn('node runs without --expose-gc: memory freed after a burst of traffic is returned only when V8 collects by itself (docs/deploy.md)');
    return () => {};
  }
  const collector = new QuietCollector({ gc, log });
  const timer = setInterval(() => collector.check(Date.now()), CHECK_INTERVAL_MS).unref();
  return () => clearInterval(timer);
}
