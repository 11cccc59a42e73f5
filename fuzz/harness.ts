/**
 * Runs fuzz cases against a running daemon, a fixed number at a time, each
 * with a deadline, and watches the daemon while they run: alive, answering
 * (a well-formed canary connection now and then), its memory.
 */
import { clientOffer } from '../lib/algorithms.js';
import { generateCase, STAGES, type CaseContext, type Stage } from './cases.js';
import { FuzzClient } from './client.js';
import { alive, rssKiB } from './procfs.js';
import * as w from './wire.js';

export interface FuzzOptions {
  port: number;
  host?: string;
  /** Source address of every fuzz connection (a loopback address). */
  localAddress?: string;
  user: string;
  token: string;
  seed: number;
  /** Cases to run, starting at index `first` (default 0). */
  cases: number;
  first?: number;
  concurrency: number;
  /** Hard limit per case; the connection is destroyed then. */
  caseTimeoutMs: number;
  /** Only these stages (default all). */
  stages?: readonly Stage[];
  /** The daemon's pid, to watch it. */
  pid?: number;
  /** A well-formed connection must still get an answer this often (default 5 s). */
  canaryEveryMs?: number;
  /** Called about every `progressEveryMs` (default 10 s). */
  onProgress?: (stats: FuzzStats) => void;
  progressEveryMs?: number;
  /** Stops early when this returns a reason (e.g. an internal error in the daemon's log). */
  abortIf?: () => string | undefined;
}

export interface StageStats {
  cases: number;
  totalMs: number;
  outcomes: Record<string, number>;
}

export interface FuzzStats {
  seed: number;
  first: number;
  casesRun: number;
  elapsedMs: number;
  /** Cases per second. */
  rate: number;
  byStage: Record<Stage, StageStats>;
  /** Cases that hit their deadline (the daemon kept the connection open and silent that long). */
  deadlines: { index: number; desc: string }[];
  logins: number;
  canaries: { run: number; failed: number; maxMs: number; failures: string[] };
  rss: { startKiB: number; maxKiB: number; endKiB: number };
  /** Sudden RSS rises (over 16 MiB within 250 ms) and the cases in flight then, to find what costs memory. */
  rssJumps: { fromKiB: number; toKiB: number; inFlight: string[] }[];
  /** The most frequent DISCONNECT texts the daemon sent. */
  disconnects: Record<string, number>;
  /** Set when the run stopped because something went wrong. */
  failure?: string;
  /** Cases in flight when the run failed. */
  inFlight: string[];
}

/** Well-formed: key exchange, ssh-userauth, auth "none"; the daemon must answer USERAUTH_FAILURE. */
export async function canary(port: number, host = '127.0.0.1', timeoutMs = 10_000): Promise<number> {
  const started = Date.now();
  const client = new FuzzClient({ port, host, ssh: { offer: canaryOffer } });
  try {
    const steps: [string, () => boolean, () => void][] = [
      ['key exchange', () => client.ready, () => client.sendPayload(w.serviceRequest('ssh-userauth'))],
      ['SERVICE_ACCEPT', () => client.count(w.MSG.SERVICE_ACCEPT) > 0, () => client.sendPayload(w.authNone('canary'))],
      ['USERAUTH_FAILURE', () => client.count(w.MSG.USERAUTH_FAILURE) > 0, () => undefined],
    ];
    for (const [what, cond, next] of steps) {
      const left = timeoutMs - (Date.now() - started);
      const r = await client.wait(cond, Math.max(1, left));
      if (r !== 'ok') {
        throw new Error(
          `canary: no ${what} (${r}${client.connectError ? `, ${client.connectError}` : ''}${client.protoError ? `, ${client.protoError}` : ''})`,
        );
      }
      next();
    }
    return Date.now() - started;
  } finally {
    client.destroy();
  }
}

const canaryOffer = clientOffer();

function outcomeOf(client: FuzzClient | undefined): string {
  if (!client) return 'no-connection';
  if (client.connectError) return `connect-error:${client.connectError}`;
  if (client.count(w.MSG.USERAUTH_SUCCESS) > 0) return 'login';
  if (client.disconnectText !== undefined) return 'disconnect';
  if (client.closedByPeer) return 'closed-by-daemon';
  return 'open-at-end';
}

export async function runFuzz(o: FuzzOptions): Promise<FuzzStats> {
  const host = o.host ?? '127.0.0.1';
  const first = o.first ?? 0;
  const started = Date.now();
  const byStage = Object.fromEntries(STAGES.map((s) => [s, { cases: 0, totalMs: 0, outcomes: {} }])) as Record<Stage, StageStats>;
  const rssNow = () => (o.pid !== undefined ? rssKiB(o.pid) : 0);
  const stats: FuzzStats = {
    seed: o.seed,
    first,
    casesRun: 0,
    elapsedMs: 0,
    rate: 0,
    byStage,
    deadlines: [],
    logins: 0,
    canaries: { run: 0, failed: 0, maxMs: 0, failures: [] },
    rss: { startKiB: rssNow(), maxKiB: 0, endKiB: 0 },
    disconnects: {},
    inFlight: [],
    rssJumps: [],
  };
  stats.rss.maxKiB = stats.rss.startKiB;
  const inFlight = new Map<number, string>();
  let next = first;
  const end = first + o.cases;
  let stopped = false;
  const fail = (reason: string) => {
    if (stats.failure !== undefined) return;
    stats.failure = reason;
    stats.inFlight = [...inFlight].map(([i, d]) => `#${i} ${d}`);
    stopped = true;
  };
  const daemonGone = () => o.pid !== undefined && !alive(o.pid);

  async function runOne(index: number): Promise<void> {
    const c = generateCase(o.seed, index, o.user, o.token, o.stages);
    inFlight.set(index, c.desc);
    const clients: FuzzClient[] = [];
    const ctx: CaseContext = {
      port: o.port,
      host,
      localAddress: o.localAddress,
      user: o.user,
      token: o.token,
      open: (opts) => {
        const client = new FuzzClient({ ...opts, port: o.port, host, localAddress: o.localAddress });
        clients.push(client);
        return client;
      },
    };
    const t0 = Date.now();
    let timer: NodeJS.Timeout | undefined;
    let outcome: string;
    try {
      const deadline = new Promise<'deadline'>((resolve) => (timer = setTimeout(() => resolve('deadline'), o.caseTimeoutMs)));
      const r = await Promise.race([c.exec(ctx).then(() => 'done' as const), deadline]);
      outcome = r === 'deadline' ? 'deadline' : outcomeOf(clients[0]);
    } catch (err) {
      // A bug in the harness, not the daemon: report it, do not hide it.
      outcome = 'harness-error';
      fail(`harness error in case #${index} (${c.desc}): ${(err as Error).stack}`);
    } finally {
      clearTimeout(timer);
      for (const client of clients) client.destroy();
      inFlight.delete(index);
    }
    const s = byStage[c.stage];
    s.cases++;
    s.totalMs += Date.now() - t0;
    s.outcomes[outcome] = (s.outcomes[outcome] ?? 0) + 1;
    stats.casesRun++;
    if (outcome === 'login') stats.logins++;
    if (outcome === 'deadline' && stats.deadlines.length < 50) stats.deadlines.push({ index, desc: c.desc });
    const text = clients[0]?.disconnectText;
    if (text !== undefined) {
      const key = text.replace(/\d+/g, 'N').slice(0, 80);
      if (key in stats.disconnects || Object.keys(stats.disconnects).length < 100) stats.disconnects[key] = (stats.disconnects[key] ?? 0) + 1;
    }
    if (outcome.startsWith('connect-error') || daemonGone()) {
      if (daemonGone()) fail(`the daemon died (noticed after case #${index}: ${c.desc})`);
      else fail(`cannot connect to the daemon (${outcome}) in case #${index}`);
    }
  }

  async function worker(): Promise<void> {
    while (!stopped && next < end) await runOne(next++);
  }

  // Watchers: canary, memory, progress, abort conditions.
  let lastProgress = Date.now();
  let canaryRunning = false;
  let lastCanary = Date.now();
  let lastRss = stats.rss.startKiB;
  const watch = setInterval(() => {
    if (o.pid !== undefined && !daemonGone()) {
      const rss = rssNow();
      stats.rss.maxKiB = Math.max(stats.rss.maxKiB, rss);
      if (rss - lastRss > 16 * 1024 && stats.rssJumps.length < 10) {
        stats.rssJumps.push({ fromKiB: lastRss, toKiB: rss, inFlight: [...inFlight].map(([i, d]) => `#${i} ${d}`) });
      }
      lastRss = rss;
    }
    const reason = o.abortIf?.();
    if (reason) fail(reason);
    if (daemonGone()) fail('the daemon died');
    if (!canaryRunning && Date.now() - lastCanary >= (o.canaryEveryMs ?? 5000)) {
      canaryRunning = true;
      lastCanary = Date.now();
      stats.canaries.run++;
      canary(o.port, host)
        .then((ms) => (stats.canaries.maxMs = Math.max(stats.canaries.maxMs, ms)))
        .catch((err: Error) => {
          stats.canaries.failed++;
          if (stats.canaries.failures.length < 10) stats.canaries.failures.push(`after ${stats.casesRun} cases: ${err.message}`);
        })
        .finally(() => (canaryRunning = false));
    }
    if (o.onProgress && Date.now() - lastProgress >= (o.progressEveryMs ?? 10_000)) {
      lastProgress = Date.now();
      stats.elapsedMs = Date.now() - started;
      stats.rate = stats.casesRun / (stats.elapsedMs / 1000);
      o.onProgress(stats);
    }
  }, 250);
  try {
    await Promise.all(Array.from({ length: o.concurrency }, () => worker()));
  } finally {
    clearInterval(watch);
  }
  stats.elapsedMs = Date.now() - started;
  stats.rate = stats.casesRun / (stats.elapsedMs / 1000);
  if (!daemonGone()) stats.rss.endKiB = rssNow();
  return stats;
}

/** One line per stage: cases, mean duration, outcomes. */
export function formatStats(stats: FuzzStats): string {
  const lines = [
    `${stats.casesRun} cases (seed ${stats.seed}, from #${stats.first}) in ${(stats.elapsedMs / 1000).toFixed(1)} s: ${stats.rate.toFixed(1)} cases/s`,
  ];
  for (const [stage, s] of Object.entries(stats.byStage)) {
    if (s.cases === 0) continue;
    const outcomes = Object.entries(s.outcomes)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k}=${n}`)
      .join(' ');
    lines.push(`  ${stage.padEnd(9)} ${String(s.cases).padStart(8)} cases, ${(s.totalMs / s.cases).toFixed(0).padStart(5)} ms mean; ${outcomes}`);
  }
  lines.push(`  logins ${stats.logins}, deadlines ${stats.deadlines.length}, canaries ${stats.canaries.run} (failed ${stats.canaries.failed}, slowest ${stats.canaries.maxMs} ms)`);
  if (stats.rss.startKiB) {
    lines.push(`  daemon RSS: start ${(stats.rss.startKiB / 1024).toFixed(1)} MiB, max ${(stats.rss.maxKiB / 1024).toFixed(1)} MiB, end ${(stats.rss.endKiB / 1024).toFixed(1)} MiB`);
  }
  if (stats.failure) lines.push(`  FAILURE: ${stats.failure}`, ...stats.inFlight.map((c) => `    in flight: ${c}`));
  return lines.join('\n');
}
