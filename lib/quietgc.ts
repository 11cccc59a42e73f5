/**
 * One full garbage collection once relaying stops.
 *
 * Every socket read is a fresh buffer, and V8 frees them only at its next
 * full collection. With the heap limits the daemon runs with
 * (`--initial-old-space-size`, `--heap-growing-percent`: docs/deploy.md) that
 * collection may not come for minutes after a burst: with 1,000 idle
 * sessions ~2× the live heap stayed reserved, ~150 MiB of RSS instead of
 * ~123 (bench/README.md). So once the daemon has relayed a burst, or its
 * heap has grown by a burst of logins (little traffic, many objects), or a
 * burst of connections has ended (their objects are garbage, but nothing
 * allocates to make V8 look), and then nothing has passed for a few seconds,
 * it collects once itself, and jemalloc returns the freed pages. Needs node's
 * `--expose-gc` (every launcher passes it).
 *
 * The collection compacts the whole heap. A plain one frees the objects but
 * keeps every page that still holds a live one: after 1,000 sessions closed,
 * 14 MB in use kept 39 MB of heap (~122 MiB of RSS, against 89 compacted).
 * V8's own memory-reducing collection would compact, but `gc()` cannot ask
 * for it on Node 20, and V8 ran it only sometimes, up to 20 s later.
 */
import v8 from 'node:v8';
import type { Logger } from './logger.js';
import { dropFreeBlocks } from './packetbuffers.js';
import { socketRelayTotals } from './socketrelay.js';
import { turnBudget, type TurnBudget } from './turnbudget.js';

/** Time without traffic that counts as the end of a burst. */
export const QUIET_MS = 5_000;

/**
 * Bytes relayed between two checks (a second apart) that count as traffic.
 * Less is quiet, unless connections came or went: sshd's keepalives, after
 * 10 to 20 s of silence on each session, are ~12 KB/s with 1,000 idle
 * sessions, and never stop; were they traffic, the collection would never
 * come. A burst of logins moves little but makes many objects, and counts
 * by its connections.
 */
const TRAFFIC_BYTES = 256 * 1024;

/** Relayed bytes that leave enough garbage to be worth a full collection (~110 ms, compacting, with 1,000 sessions). */
const MIN_BYTES = 32 * 1024 * 1024;

/** Heap growth since the last collection that is worth one: ~500 logins' worth (~21 KiB of heap each when idle). */
const MIN_HEAP_GROWTH = 16 * 1024 * 1024;

/** Connections ended since the last collection that are worth one: ~10 MB of heap at ~21 KiB per idle session. */
const MIN_ENDED_CONNECTIONS = 500;

const CHECK_INTERVAL_MS = 1_000;

export interface QuietCollectorOptions {
  gc: () => void;
  /** V8's used heap in bytes. */
  heapUsed?: () => number;
  /** Connections accepted since the daemon started. */
  acceptedConnections?: () => number;
  /** Connections ended since the daemon started. */
  endedConnections: () => number;
  budget?: TurnBudget;
  quietMs?: number;
  trafficBytes?: number;
  minBytes?: number;
  minHeapGrowth?: number;
  minEndedConnections?: number;
  log?: Logger;
}

/**
 * Bytes relayed since start: through the legs (the budget counts them) and
 * by the socket relays. The latter leave little garbage, but a burst is a
 * burst: the free relay blocks the legs kept are dropped after it too.
 */
function relayedBytes(budget: TurnBudget): number {
  return budget.processedBytes + socketRelayTotals().bytesRead;
}

/** Decides when to collect; `check` is called with the time, once a second in the daemon. */
export class QuietCollector {
  private readonly budget: TurnBudget;
  private readonly quietMs: number;
  private readonly trafficBytes: number;
  private readonly minBytes: number;
  private readonly minHeapGrowth: number;
  private readonly minEndedConnections: number;
  private readonly heapUsed: () => number;
  /** relayedBytes, the used heap and the ended connections after the last collection; relayedBytes at the last check, and when traffic last passed. */
  private collectedAt: number;
  private heapAfterCollection: number;
  private endedAtCollection: number;
  private seenBytes: number;
  private seenConnections: number;
  private lastTrafficAt = 0;

  constructor(private readonly options: QuietCollectorOptions) {
    this.budget = options.budget ?? turnBudget;
    this.quietMs = options.quietMs ?? QUIET_MS;
    this.trafficBytes = options.trafficBytes ?? TRAFFIC_BYTES;
    this.minBytes = options.minBytes ?? MIN_BYTES;
    this.minHeapGrowth = options.minHeapGrowth ?? MIN_HEAP_GROWTH;
    this.minEndedConnections = options.minEndedConnections ?? MIN_ENDED_CONNECTIONS;
    this.heapUsed = options.heapUsed ?? (() => v8.getHeapStatistics().used_heap_size);
    this.collectedAt = relayedBytes(this.budget);
    this.heapAfterCollection = this.heapUsed();
    this.endedAtCollection = options.endedConnections();
    this.seenBytes = this.collectedAt;
    this.seenConnections = this.connectionsSeen();
  }

  /** Connections that came or went since the daemon started. */
  private connectionsSeen(): number {
    return (this.options.acceptedConnections?.() ?? 0) + this.options.endedConnections();
  }

  /**
   * Collects if, since the last collection, at least minBytes were relayed,
   * the heap grew by minHeapGrowth or minEndedConnections connections ended,
   * and for quietMs no check saw trafficBytes relayed, or a connection come
   * or go, since the one before; true if it did.
   */
  check(now: number): boolean {
    const bytes = relayedBytes(this.budget);
    const moved = bytes - this.seenBytes;
    const connections = this.connectionsSeen();
    const cameOrWent = connections !== this.seenConnections;
    this.seenBytes = bytes;
    this.seenConnections = connections;
    if (moved >= this.trafficBytes || cameOrWent) {
      this.lastTrafficAt = now;
      return false;
    }
    if (now - this.lastTrafficAt < this.quietMs) return false;
    const relayed = bytes - this.collectedAt;
    const grown = this.heapUsed() - this.heapAfterCollection;
    const ended = this.options.endedConnections() - this.endedAtCollection;
    if (relayed < this.minBytes && grown < this.minHeapGrowth && ended < this.minEndedConnections) return false;
    this.collectedAt = bytes;
    this.endedAtCollection += ended;
    const started = performance.now();
    this.options.gc();
    this.heapAfterCollection = this.heapUsed();
    // info: a pause of ~100 ms that operators may want to see, at most once per burst.
    this.options.log?.info(
      `full garbage collection after ${Math.round((now - this.lastTrafficAt) / 1000)} s without traffic ` +
        `(since the last: ${Math.round(relayed / 1048576)} MiB relayed, heap ${grown >= 0 ? '+' : ''}${Math.round(grown / 1048576)} MB, connections ended: ${ended}): ` +
        `${(performance.now() - started).toFixed(0)} ms`,
    );
    return true;
  }
}

/**
 * `gc` made to move live objects out of every page with free space, so that
 * the pages can be returned. V8 reads the flag during a collection; it is
 * on only for ours (V8's own collections during traffic stay short: ~30 ms
 * plain against ~110 ms compacting with 1,000 sessions). test/quietgc.test.ts
 * fails if a V8 version drops the flag.
 */
export function compacting(gc: () => void): () => void {
  return () => {
    v8.setFlagsFromString('--compact-on-every-full-gc');
    try {
      gc();
    } finally {
      v8.setFlagsFromString('--no-compact-on-every-full-gc');
    }
  };
}

/** Starts checking once a second; returns a stop function. Off (with a warning) without `--expose-gc`. */
export function collectWhenQuiet(log: Logger, acceptedConnections: () => number, endedConnections: () => number): () => void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== 'function') {
    log.warn('node runs without --expose-gc: memory freed after a burst of traffic is returned only when V8 collects by itself (docs/deploy.md)');
    return () => {};
  }
  const collect = compacting(gc);
  const collector = new QuietCollector({
    gc: () => {
      // The recycled packet and relay blocks go with this collection.
      dropFreeBlocks();
      collect();
    },
    log,
    acceptedConnections,
    endedConnections,
  });
  const timer = setInterval(() => collector.check(Date.now()), CHECK_INTERVAL_MS).unref();
  return () => clearInterval(timer);
}
