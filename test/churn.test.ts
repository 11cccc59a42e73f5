// Churn: many connect / authenticate / exec / close cycles with the real
// OpenSSH client through the real daemon to the real sshd, a few parallel,
// with some clients SIGKILLed in the middle of their session. Afterwards the
// daemon's open descriptors, its children (sshd -i) and its RSS must come
// back to the baseline taken after a warm-up.
//
// 10,000 cycles as the issue asks (JSP_CHURN_CYCLES for fewer): ~60 ms per
// cycle with 8 in parallel on this 2-core machine, about 10 minutes. Debian's
// client logs in with sntrup761x25519-sha512, as its users do, and spends
// ~75 ms of CPU on its key pair each time (~45 ms per cycle on curve25519).
//
// The daemon runs as deployed (node flags, jemalloc), and both RSS figures are
// taken after its quiet collection (lib/quietgc.ts), which compacts the heap
// once a burst of ended connections is over. Without that, RSS measures how
// far V8 has let its heap grow, not what the daemon keeps: run with node's
// defaults, RSS climbed from ~93 MiB to ~135 MiB over the first ~1,500
// cycles and stayed there, so a baseline after a short warm-up sat anywhere
// from 108 to 112 MiB, and the end 24-28 MiB above it without any leak.
import { expect } from 'chai';
import type { ChildProcess } from 'node:child_process';
import { statusKb } from '../bench/procfs.js';
import { alive, children, fdCount, fdSummary, rssKiB } from '../fuzz/procfs.js';
import { DAEMON_ENV, DAEMON_NODE_ARGS } from './helpers/deployed.js';
import { createHubUser, createToken, startHub, type Hub } from './helpers/hub.js';
import { metricsOrigin, scrapeMetrics } from './helpers/metrics.js';
import { startProxy, type ProxyProcess } from './helpers/proxy.js';
import { ssh } from './helpers/ssh.js';
import { createUnixUser, type UnixUser } from './helpers/unixuser.js';
import { waitFor } from './helpers/wait.js';

const CYCLES = Number(process.env.JSP_CHURN_CYCLES ?? 10_000);
const PARALLEL = Number(process.env.JSP_CHURN_PARALLEL ?? 8);
/** Every KILL_EVERY-th cycle, the client is SIGKILLed while its command runs. */
const KILL_EVERY = 10;
/** Enough ended connections for the quiet collection to follow the warm-up (lib/quietgc.ts: 500). */
const WARMUP = Number(process.env.JSP_CHURN_WARMUP ?? 600);
/** What the quiet collection logs (at info), once per burst. */
const COLLECTION = /full garbage collection after/g;
/**
 * Growth allowed from the baseline to the end, both after a collection.
 * Measured over 10,000 cycles: V8's used heap +1.3 MiB (0.7 of it compiled
 * code), external memory +0.2 MiB, RSS +3.7 and +8.1 MiB (jemalloc keeps
 * some pages). A leak of 0.4 KiB per cycle fails the heap check; the RSS
 * check, for native memory, allows 1.6 KiB per cycle.
 */
const HEAP_TOLERANCE_MIB = Math.max(4, CYCLES * 0.4 / 1024);
const RSS_TOLERANCE_KIB = Math.max(16 * 1024, CYCLES * 1.6);
const QUIET = ['-o', 'LogLevel=ERROR'];

interface Snapshot {
  fds: number;
  children: number;
  rssKiB: number;
}

describe('churn: connect/auth/exec/close cycles with the real OpenSSH client', function () {
  let hub: Hub;
  let user: UnixUser;
  let token: string;
  let proxy: ProxyProcess;

  before(async function () {
    this.timeout(120_000);
    hub = await startHub();
    user = await createUnixUser('churn');
    await createHubUser(hub, user.name);
    token = (await createToken(hub, user.name)).token;
    // info: debug would log every sshd line of every cycle.
    proxy = await startProxy(hub.url, ['--metrics-ip', '127.0.0.1', '--metrics-port', '0'], { logLevel: 'info', nodeArgs: DAEMON_NODE_ARGS, env: DAEMON_ENV });
  });
  after(async function () {
    this.timeout(60_000);
    await proxy?.stop();
    await user?.remove();
    await hub?.stop();
  });

  /** A normal cycle: log in, run a command, check its output and exit status. */
  async function execCycle(i: number): Promise<string | undefined> {
    const r = await ssh(proxy.port, user.name, token, [`echo cycle-${i}`], QUIET, { timeoutMs: 60_000 });
    if (r.code === 0 && r.stdout.toString() === `cycle-${i}\n`) return undefined;
    return `cycle ${i}: exit ${r.code}, stdout ${JSON.stringify(r.stdout.toString())}, stderr ${JSON.stringify(r.stderr.trim())}`;
  }

  /** A cycle whose client is SIGKILLed once its command has started. */
  async function killedCycle(i: number): Promise<string | undefined> {
    let child: ChildProcess | undefined;
    let started = false;
    const result = ssh(proxy.port, user.name, token, [`echo started-${i}; sleep 30; echo not-killed`], QUIET, {
      timeoutMs: 60_000,
      onSpawn: (c) => {
        child = c;
        c.stdin!.end();
        c.stdout!.on('data', (d: Buffer) => {
          if (d.toString().includes(`started-${i}`)) started = true;
        });
      },
    });
    try {
      await waitFor(() => started || child?.exitCode !== null, { timeoutMs: 30_000, intervalMs: 20, what: `cycle ${i} to start` });
    } catch (err) {
      child?.kill('SIGKILL');
      await result.catch(() => undefined);
      return `cycle ${i}: ${(err as Error).message}`;
    }
    if (!started) {
      const r = await result;
      return `killed cycle ${i} never started: exit ${r.code}, stderr ${JSON.stringify(r.stderr.trim())}`;
    }
    child!.kill('SIGKILL');
    const r = await result;
    if (r.signal !== 'SIGKILL' || r.stdout.toString().includes('not-killed')) return `cycle ${i}: not killed (${r.code}, ${r.signal})`;
    return undefined;
  }

  async function runCycles(from: number, count: number): Promise<{ failures: string[]; ms: number }> {
    const failures: string[] = [];
    let next = from;
    const end = from + count;
    const t0 = Date.now();
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (next < end) {
          const i = next++;
          const failure = i % KILL_EVERY === KILL_EVERY - 1 ? await killedCycle(i) : await execCycle(i);
          if (failure) failures.push(failure);
        }
      }),
    );
    return { failures, ms: Date.now() - t0 };
  }

  function snapshot(pid: number): Snapshot {
    return { fds: fdCount(pid), children: children(pid).length, rssKiB: rssKiB(pid) };
  }

  /** Waits until the sessions are gone: no sshd children, descriptors settled. */
  async function settled(pid: number, fdLimit: number, timeoutMs: number): Promise<Snapshot> {
    return waitFor(
      () => {
        const s = snapshot(pid);
        return s.children === 0 && s.fds <= fdLimit ? s : undefined;
      },
      { timeoutMs, intervalMs: 200, what: `the daemon's sessions to be gone (descriptors ${fdSummary(pid)}; children ${children(pid).map((c) => c.comm).join(',')})` },
    );
  }

  /** The daemon's V8 heap in use and its external (Buffer) memory, in MiB, from its metrics. */
  async function heap(): Promise<{ usedMiB: number; externalMiB: number; codeMiB: number }> {
    const origin = await waitFor(() => metricsOrigin(proxy.logs()), { timeoutMs: 10_000, what: 'the metrics address' });
    const m = await scrapeMetrics(origin);
    const mib = (name: string) => (m.get(name) ?? NaN) / 1048576;
    return {
      usedMiB: mib('jupyter_ssh_proxy_nodejs_heap_size_used_bytes'),
      externalMiB: mib('jupyter_ssh_proxy_nodejs_external_memory_bytes'),
      codeMiB: mib('jupyter_ssh_proxy_nodejs_heap_space_size_used_bytes{space="code"}'),
    };
  }

  /** Quiet collections the daemon has logged so far. */
  function collections(): number {
    return proxy.logs().match(COLLECTION)?.length ?? 0;
  }

  /** Waits for the daemon's quiet collection number `n` (5 s after the last session, then once a second). */
  async function collected(n: number): Promise<void> {
    await waitFor(() => collections() >= n, {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: `the daemon's quiet collection number ${n}`,
    });
  }

  it(`${CYCLES} cycles, ${PARALLEL} at a time, every ${KILL_EVERY}th client SIGKILLed mid-session: descriptors, children and RSS back to the baseline`, async function () {
    // Generous: each ssh has its own 60 s deadline, so a hang fails long before this.
    this.timeout(10 * 60_000 + CYCLES * 300);
    const pid = proxy.child.pid!;

    // Warm-up: token cached, server running, V8 and the allocator at their working size.
    const warm = await runCycles(0, WARMUP);
    expect(warm.failures).to.deep.equal([]);
    const base = await settled(pid, Infinity, 30_000);
    await collected(collections() + 1);
    const baseRssKiB = rssKiB(pid);
    const heapBase = await heap();

    const { failures, ms } = await runCycles(WARMUP, CYCLES);
    // Read before the last sessions' 5 quiet seconds are over.
    const collectionsAfterChurn = collections();
    const perCycle = ms / CYCLES;
    console.log(
      `      ${CYCLES} cycles in ${(ms / 1000).toFixed(1)} s: ${perCycle.toFixed(1)} ms per cycle with ${PARALLEL} in parallel`,
    );
    expect(failures, `${failures.length} failed cycles`).to.deep.equal([]);
    expect(alive(pid)).to.equal(true);

    // sshd gets 3 s to exit after its connection ends, then SIGTERM, then SIGKILL at 6 s.
    const end = await settled(pid, base.fds + 2, 60_000);
    await collected(collectionsAfterChurn + 1);
    const heapEnd = await heap();
    const peakKiB = statusKb(pid, 'VmHWM');
    // Both figures follow a compacting collection; jemalloc's background thread returns freed pages within ~1 s (dirty_decay_ms).
    const rssLimit = baseRssKiB + RSS_TOLERANCE_KIB;
    const rss = await waitFor(() => {
      const now = rssKiB(pid);
      return now <= rssLimit ? now : undefined;
    }, { timeoutMs: 15_000, intervalMs: 250, what: `RSS back under ${(rssLimit / 1024).toFixed(1)} MiB (baseline ${(baseRssKiB / 1024).toFixed(1)} MiB)` }).catch(
      () => rssKiB(pid),
    );
    console.log(
      `      after warm-up and a collection: ${base.fds} descriptors, ${base.children} children, RSS ${(baseRssKiB / 1024).toFixed(1)} MiB; ` +
        `after churn and a collection: ${end.fds} descriptors, ${end.children} children, RSS ${(rss / 1024).toFixed(1)} MiB (peak ${(peakKiB / 1024).toFixed(1)} MiB)`,
    );
    expect(end.fds, fdSummary(pid)).to.be.at.most(base.fds + 2);
    expect(end.children).to.equal(0);
    console.log(
      `      V8 heap in use ${heapBase.usedMiB.toFixed(1)} -> ${heapEnd.usedMiB.toFixed(1)} MiB (compiled code ${heapBase.codeMiB.toFixed(1)} -> ${heapEnd.codeMiB.toFixed(1)}), ` +
        `external ${heapBase.externalMiB.toFixed(1)} -> ${heapEnd.externalMiB.toFixed(1)} MiB`,
    );
    expect(heapEnd.usedMiB - heapBase.usedMiB, 'V8 heap growth after churn and a collection, MiB').to.be.at.most(HEAP_TOLERANCE_MIB);
    expect(heapEnd.externalMiB - heapBase.externalMiB, 'external memory growth after churn and a collection, MiB').to.be.at.most(HEAP_TOLERANCE_MIB);
    expect(rss / 1024, 'RSS after churn and a collection, MiB').to.be.at.most(rssLimit / 1024);

    // And the daemon still serves.
    expect(await execCycle(-1)).to.equal(undefined);
  });
});
