// The per-turn read budget (lib/turnbudget.ts) and how a Leg uses it: a
// burst larger than a turn is spread over turns, in order and complete, and
// neither the end of the input nor relay backpressure is lost on the way.
import { expect } from 'chai';
import { OWN_PACKET } from '../lib/leg.js';
import { dropFreeBlocks, relayBlockStats } from '../lib/packetbuffers.js';
import { MAX_CHANNEL_PACKET } from '../lib/relay.js';
import { SMALL_CHUNK_BYTES, TurnBudget, type Backlogged } from '../lib/turnbudget.js';
import { CHANNEL_DATA, legPair, numbered } from './helpers/legs.js';
import { waitFor } from './helpers/wait.js';

/** Resolves after `n` turns of the event loop. */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** A fake reader with `chunks` chunks of `size` bytes waiting. */
function reader(name: string, budget: TurnBudget, chunks: number, size: number, log: string[]): Backlogged & { left: number } {
  const r = {
    left: chunks,
    drainBacklog(): boolean {
      while (r.left > 0 && !budget.exhausted) {
        budget.charge(size);
        r.left--;
        log.push(name);
      }
      return r.left > 0;
    },
  };
  return r;
}

describe('turn budget', () => {
  it('is exhausted once a turn has processed its bytes, and renewed at the next turn', async () => {
    const budget = new TurnBudget(100);
    budget.charge(60);
    expect(budget.exhausted).to.equal(false);
    budget.charge(40);
    expect(budget.exhausted).to.equal(true);
    await turns(1);
    expect(budget.exhausted).to.equal(false);
  });

  it('lets a chunk under SMALL_CHUNK_BYTES through a spent budget, and no larger one', async () => {
    const budget = new TurnBudget(100);
    expect(budget.mustWait(1 << 20), 'budget left').to.equal(false);
    budget.charge(100);
    expect(budget.mustWait(SMALL_CHUNK_BYTES - 1)).to.equal(false);
    expect(budget.mustWait(SMALL_CHUNK_BYTES)).to.equal(true);
    await turns(1);
    expect(budget.mustWait(SMALL_CHUNK_BYTES), 'renewed').to.equal(false);
  });

  it('serves backlogs round-robin: readers a turn did not reach go first next turn', async () => {
    const budget = new TurnBudget(3);
    const log: string[] = [];
    const a = reader('a', budget, 5, 1, log);
    const b = reader('b', budget, 2, 1, log);
    const c = reader('c', budget, 2, 1, log);
    for (const r of [a, b, c]) budget.enqueue(r);
    // Turn 1: a takes the whole budget. Turn 2: b and c (not reached) first;
    // c gets part of its backlog and a none. Turn 3: a (not reached) first, then c.
    await turns(1);
    expect(log).to.deep.equal(['a', 'a', 'a']);
    await turns(1);
    expect(log.slice(3)).to.deep.equal(['b', 'b', 'c']);
    await turns(1);
    expect(log.slice(6)).to.deep.equal(['a', 'a', 'c']);
    await turns(2);
    expect(log).to.have.length(9);
    expect([a.left, b.left, c.left]).to.deep.equal([0, 0, 0]);
  });
});

/** A budget the test can hold spent (every chunk then goes to a backlog) and release. */
class HeldBudget extends TurnBudget {
  private held = false;

  override get exhausted(): boolean {
    return this.held || super.exhausted;
  }

  hold(): void {
    this.held = true;
  }

  release(): void {
    this.held = false;
  }
}

const BUDGET = 256 * 1024;
/** A burst of 8 MiB: 32 turns' worth. */
const BURST = 256;
const all = Array.from({ length: BURST }, (_, i) => i);

describe('a leg under the turn budget', function () {
  this.timeout(30_000);

  it('spreads a burst over turns, at most a budget and one packet per turn, in order and complete', async () => {
    const budget = new TurnBudget(BUDGET);
    const pair = await legPair(budget);
    try {
      // The bytes the server leg processed in each turn while the burst lasts.
      const perTurn: number[] = [];
      let last = pair.server.bytesIn;
      let ticking = true;
      const tick = () => {
        perTurn.push(pair.server.bytesIn - last);
        last = pair.server.bytesIn;
        if (ticking) setImmediate(tick);
      };
      setImmediate(tick);
      for (const n of all) pair.client.send(numbered(n), OWN_PACKET);
      await waitFor(() => pair.received.length === BURST || undefined, { timeoutMs: 20_000, what: 'the whole burst' });
      ticking = false;
      expect(pair.received).to.deep.equal(all);
      // The chunk that crosses the budget is processed whole: at most one socket read (64 KiB).
      const chunk = 64 * 1024;
      expect(Math.max(...perTurn)).to.be.at.most(BUDGET + chunk);
      expect(perTurn.filter((bytes) => bytes > 0).length).to.be.at.least(Math.floor((BURST * MAX_CHANNEL_PACKET) / (BUDGET + chunk)));
    } finally {
      pair.close();
    }
  });

  it('ends only after the chunks waiting in its backlog are processed', async () => {
    const budget = new HeldBudget(BUDGET);
    const pair = await legPair(budget);
    try {
      // Four packets: a backlog below the size at which the leg stops reading, so the EOF is read too.
      const some = [0, 1, 2, 3];
      let legEndedAt = -1;
      pair.server.once('end', () => (legEndedAt = pair.received.length));
      budget.hold();
      const eofRead = new Promise((resolve) => pair.server.input.once('end', resolve));
      for (const n of some) pair.client.send(numbered(n), OWN_PACKET);
      pair.clientSocket.end();
      await eofRead;
      expect(pair.received).to.deep.equal([]);
      expect(legEndedAt).to.equal(-1);
      budget.release();
      await waitFor(() => legEndedAt >= 0 || undefined, { timeoutMs: 10_000, what: 'the leg to end' });
      expect(legEndedAt).to.equal(some.length);
      expect(pair.received).to.deep.equal(some);
    } finally {
      pair.close();
    }
  });

  it('holds shared reads in recycled relay blocks while the budget is spent, and gives every block back', async () => {
    const budget = new HeldBudget(BUDGET);
    const pair = await legPair(budget, true);
    // Other tests' free blocks could fill the pool to its bound, past which blocks are not kept.
    dropFreeBlocks();
    try {
      for (const round of [0, 1]) {
        const before = relayBlockStats();
        const received = pair.received.length;
        budget.hold();
        for (const n of all) pair.client.send(numbered(round * BURST + n), OWN_PACKET);
        await waitFor(() => pair.server.input.isPaused() || undefined, { timeoutMs: 10_000, what: 'a full backlog' });
        const held = relayBlockStats();
        expect(held.made - before.made + before.free - held.free, `round ${round}: relay blocks holding the backlog`).to.be.greaterThan(0);
        budget.release();
        await waitFor(() => pair.received.length === received + BURST || undefined, { timeoutMs: 20_000, what: 'the whole burst' });
        expect(pair.received.slice(received)).to.deep.equal(all.map((n) => round * BURST + n));
        const after = relayBlockStats();
        expect(after.free, `round ${round}: every block made or taken is free again`).to.equal(before.free + after.made - before.made);
      }
    } finally {
      pair.close();
    }
  });

  it('processes a small chunk at once, budget spent or not, unless older chunks wait', async () => {
    const budget = new HeldBudget(BUDGET);
    const pair = await legPair(budget, true);
    try {
      budget.hold();
      // A keystroke-sized packet: one read of well under SMALL_CHUNK_BYTES.
      const small = Buffer.alloc(64);
      small[0] = CHANNEL_DATA;
      small.writeUInt32BE(7, 1);
      pair.client.send(small, OWN_PACKET);
      await waitFor(() => pair.received.length === 1 || undefined, { timeoutMs: 5000, what: 'the small packet' });
      expect(pair.received).to.deep.equal([7]);
      // Behind a backlog, a small chunk waits its turn: order comes first.
      const backlogBytes = () => (pair.server as unknown as { backlogBytes: number }).backlogBytes;
      const heldBytes = pair.server.bytesIn;
      for (const n of [0, 1, 2]) pair.client.send(numbered(n), OWN_PACKET);
      await waitFor(() => backlogBytes() >= 3 * MAX_CHANNEL_PACKET || undefined, { timeoutMs: 5000, what: 'a backlog' });
      const before = backlogBytes();
      small.writeUInt32BE(8, 1);
      pair.client.send(small, OWN_PACKET);
      await waitFor(() => backlogBytes() > before || undefined, { timeoutMs: 5000, what: 'the small packet, backlogged' });
      expect(pair.received, 'nothing past the backlog').to.deep.equal([7]);
      expect(pair.server.bytesIn).to.equal(heldBytes);
      budget.release();
      await waitFor(() => pair.received.length === 5 || undefined, { timeoutMs: 5000, what: 'the rest' });
      expect(pair.received).to.deep.equal([7, 0, 1, 2, 8]);
    } finally {
      pair.close();
    }
  });

  it('keeps reading paused while the relay holds it back, even once its backlog is empty', async () => {
    const budget = new HeldBudget(BUDGET);
    const pair = await legPair(budget);
    try {
      budget.hold();
      for (const n of all) pair.client.send(numbered(n), OWN_PACKET);
      // The backlog fills up to its bound and the leg stops reading.
      await waitFor(() => pair.server.input.isPaused() || undefined, { timeoutMs: 10_000, what: 'a full backlog' });
      // The other leg is congested: the relay pauses this one. Then the backlog drains.
      pair.server.pause();
      budget.release();
      await waitFor(() => pair.received.length > 0 || undefined, { timeoutMs: 10_000, what: 'the backlog to drain' });
      // Enough turns to drain the backlog many times over.
      await turns(50);
      const stalledAt = pair.received.length;
      expect(stalledAt).to.be.below(BURST);
      expect(pair.server.input.isPaused()).to.equal(true);
      await turns(20);
      expect(pair.received.length).to.equal(stalledAt);
      pair.server.resume();
      await waitFor(() => pair.received.length === BURST || undefined, { timeoutMs: 20_000, what: 'the rest of the burst' });
      expect(pair.received).to.deep.equal(all);
    } finally {
      pair.close();
    }
  });
});
