import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { QuietCollector } from '../lib/quietgc.js';
import { TurnBudget } from '../lib/turnbudget.js';
import { DAEMON_ENV, DAEMON_NODE_ARGS } from './helpers/deployed.js';
import { useEnv } from './helpers/fixture.js';
import { startProxy } from './helpers/proxy.js';
import { waitFor } from './helpers/wait.js';

describe('quiet collector: one full GC once a burst of traffic is over', function () {
  /** A collector whose every relayed byte counts as traffic, unless `trafficBytes` says otherwise. */
  function setUp(trafficBytes = 1) {
    const budget = new TurnBudget(1 << 20);
    const calls: number[] = [];
    const heap = { used: 1000 };
    const accepted = { count: 0 };
    const ended = { count: 0 };
    const collector = new QuietCollector({
      gc: () => {
        calls.push(1);
        heap.used = 1000;
      },
      heapUsed: () => heap.used,
      acceptedConnections: () => accepted.count,
      endedConnections: () => ended.count,
      budget,
      quietMs: 5000,
      trafficBytes,
      minBytes: 100,
      minHeapGrowth: 500,
      minEndedConnections: 50,
    });
    return { budget, calls, collector, heap, accepted, ended };
  }

  it('collects once, after enough traffic and then none for the quiet time', function () {
    const { budget, calls, collector } = setUp();
    budget.charge(150);
    expect(collector.check(0)).to.equal(false);
    expect(collector.check(4999)).to.equal(false);
    expect(collector.check(5000)).to.equal(true);
    expect(collector.check(60_000)).to.equal(false);
    expect(calls).to.have.length(1);
  });

  it('does not collect after less traffic than the minimum', function () {
    const { budget, calls, collector } = setUp();
    budget.charge(99);
    collector.check(0);
    expect(collector.check(60_000)).to.equal(false);
    expect(calls).to.have.length(0);
  });

  it('collects after a burst of logins: little traffic, a grown heap', function () {
    const { budget, calls, collector, heap } = setUp();
    budget.charge(10);
    heap.used += 499;
    collector.check(0);
    expect(collector.check(5000)).to.equal(false);
    budget.charge(10);
    heap.used += 1;
    collector.check(6000);
    expect(collector.check(11_000)).to.equal(true);
    expect(collector.check(60_000)).to.equal(false);
    expect(calls).to.have.length(1);
  });

  it('collects after a burst of connections ended: garbage that no allocation makes V8 look for', function () {
    const { budget, calls, collector, ended } = setUp();
    budget.charge(10);
    ended.count += 49;
    collector.check(0);
    expect(collector.check(5000)).to.equal(false);
    budget.charge(10);
    ended.count += 1;
    collector.check(6000);
    expect(collector.check(11_000)).to.equal(true);
    // Counted from the last collection: 49 more are not enough.
    ended.count += 49;
    budget.charge(10);
    collector.check(12_000);
    expect(collector.check(60_000)).to.equal(false);
    expect(calls).to.have.length(1);
  });

  it('waits while traffic goes on', function () {
    const { budget, calls, collector } = setUp();
    for (let t = 0; t <= 30_000; t += 1000) {
      budget.charge(1000);
      expect(collector.check(t)).to.equal(false);
    }
    expect(collector.check(35_000)).to.equal(true);
    expect(calls).to.have.length(1);
  });

  it("counts a trickle under trafficBytes between checks as quiet: idle sessions' keepalives, which never stop, do not hold it back", function () {
    const { budget, calls, collector } = setUp(500);
    budget.charge(1000);
    expect(collector.check(0)).to.equal(false);
    const collectedAt: number[] = [];
    for (let t = 1000; t <= 30_000; t += 1000) {
      budget.charge(20);
      if (collector.check(t)) collectedAt.push(t);
    }
    // 5 s after the burst despite the trickle; then each time the trickle itself has added up to minBytes.
    expect(collectedAt).to.deep.equal([5000, 10_000, 15_000, 20_000, 25_000, 30_000]);
    expect(calls).to.have.length(6);
  });

  it('waits while connections come or go, however little they move: a burst of logins', function () {
    const { budget, calls, collector, accepted } = setUp(500);
    budget.charge(1000);
    for (let t = 0; t <= 20_000; t += 1000) {
      accepted.count++;
      expect(collector.check(t), `a login at ${t} ms`).to.equal(false);
    }
    expect(collector.check(24_000)).to.equal(false);
    expect(collector.check(25_000)).to.equal(true);
    expect(calls).to.have.length(1);
  });

  it('counts the next burst from the last collection', function () {
    const { budget, calls, collector } = setUp();
    budget.charge(150);
    collector.check(0);
    expect(collector.check(5000)).to.equal(true);
    budget.charge(60);
    collector.check(6000);
    expect(collector.check(12_000)).to.equal(false);
    budget.charge(60);
    collector.check(13_000);
    expect(collector.check(18_000)).to.equal(true);
    expect(calls).to.have.length(2);
  });

  it("the compacting collection returns the pages a plain one keeps (V8 still knows --compact-on-every-full-gc)", function () {
    // A child node with --expose-gc: half of every old-space page becomes
    // garbage, as when half the sessions end.
    const script = `
      import v8 from 'node:v8';
      import { compacting } from ${JSON.stringify(new URL('../lib/quietgc.js', import.meta.url).href)};
      const objs = [];
      for (let i = 0; i < 400000; i++) objs.push({ a: i, b: i + 1, c: i + 2, d: i + 3, e: i + 4 });
      gc(); gc();
      for (let i = 0; i < objs.length; i += 2) objs[i] = null;
      const heap = () => v8.getHeapStatistics().total_heap_size;
      gc();
      const plain = heap();
      compacting(gc)();
      console.log(JSON.stringify({ plain, compacted: heap(), kept: objs.length }));
    `;
    const out = execFileSync(process.execPath, ['--expose-gc', '--max-semi-space-size=2', '--input-type=module', '-e', script], { encoding: 'utf8' });
    const { plain, compacted } = JSON.parse(out) as { plain: number; compacted: number };
    // ~13 MB of garbage spread over ~39 MB of pages: measured 38.7 -> 25.9 MB.
    expect(plain - compacted).to.be.above(8e6);
  });

  it('a daemon started without --expose-gc says so at start', async function () {
    this.timeout(60_000);
    // No Hub needed: the daemon starts and listens without one.
    const proxy = await startProxy('http://127.0.0.1:9');
    try {
      await waitFor(() => proxy.logs().includes('node runs without --expose-gc'), { timeoutMs: 20_000, what: 'the --expose-gc warning' });
    } finally {
      await proxy.stop();
    }
  });

  describe('in the daemon, run as deployed (real Hub, ssh and sshd)', function () {
    const env = useEnv({ proxyOptions: { nodeArgs: DAEMON_NODE_ARGS, env: DAEMON_ENV } });

    it('collects once after a 48 MiB download, without further traffic', async function () {
      this.timeout(120_000);
      expect(env.proxy.logs()).not.to.include('without --expose-gc');
      const bytes = 48 * 1024 * 1024;
      const r = await env.ssh(['head', '-c', String(bytes), '/dev/zero']);
      expect(r.code).to.equal(0);
      expect(r.stdout.length).to.equal(bytes);
      const line = await waitFor(
        () => /full garbage collection after (\d+) s without traffic \(since the last: (\d+) MiB relayed, heap [+-]?\d+ MB, connections ended: (\d+)\)/.exec(env.proxy.logs()) ?? undefined,
        {
          timeoutMs: 30_000,
          what: "the daemon's collection after the download",
        },
      );
      expect(Number(line[1])).to.be.at.least(5);
      expect(Number(line[2])).to.be.at.least(48);
      // The download's own connection, counted by the daemon as it closed.
      expect(Number(line[3])).to.be.at.least(1);
    });
  });
});
