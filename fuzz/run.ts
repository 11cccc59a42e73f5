/**
 * `npm run fuzz -- [options]`: starts a JupyterHub, a user, and the daemon,
 * runs the fuzz cases against it, then checks the daemon (see fuzz/README.md).
 * Exits 0 only if the daemon survived and passed every check.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { generateCase, STAGES, type Stage } from './cases.js';
import { formatStats, runFuzz, type FuzzStats } from './harness.js';
import { alive, rssKiB } from './procfs.js';
import { baseline, checkAfterRun, FUZZ_PROXY_ARGS, startTarget, type FuzzTarget } from './setup.js';

const USAGE = `usage: npm run fuzz -- [options]
  --seed N             run seed (default: random, printed)
  --cases N            cases to run (default 20000)
  --first N            index of the first case (default 0)
  --concurrency N      connections at a time (default 16)
  --case-timeout S     seconds a case may take before its connection is cut (default 10)
  --warmup N           cases run before the memory baseline is taken (default min(1000, cases/10))
  --stages LIST        only these stages: ${STAGES.join(',')} (changes what each index draws)
  --rss-growth-mib N   fail if RSS grew more than this after warm-up (default 64)
  --replay I           run case I alone, with the daemon at debug level, and print its log
  --list               print the descriptions of the selected cases and exit (no daemon)
  --json FILE          write the statistics as JSON
  --log-level LEVEL    the daemon's log level (default info)
  --daemon-log FILE    write everything the daemon logged to FILE`;

function int(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${value}`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string' },
      cases: { type: 'string' },
      first: { type: 'string' },
      concurrency: { type: 'string' },
      'case-timeout': { type: 'string' },
      warmup: { type: 'string' },
      stages: { type: 'string' },
      'rss-growth-mib': { type: 'string' },
      replay: { type: 'string' },
      list: { type: 'boolean' },
      json: { type: 'string' },
      'log-level': { type: 'string' },
      'daemon-log': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const seed = int(values.seed, (Date.now() ^ (process.pid << 16)) >>> 0, 'seed');
  const replay = values.replay === undefined ? undefined : int(values.replay, 0, 'replay');
  const cases = replay !== undefined ? 1 : int(values.cases, 20_000, 'cases');
  const first = replay ?? int(values.first, 0, 'first');
  const concurrency = replay !== undefined ? 1 : Math.max(1, int(values.concurrency, 16, 'concurrency'));
  const caseTimeoutMs = int(values['case-timeout'], 10, 'case-timeout') * 1000;
  const warmup = replay !== undefined ? 0 : Math.min(cases, int(values.warmup, Math.min(1000, Math.floor(cases / 10)), 'warmup'));
  const rssGrowthMiB = int(values['rss-growth-mib'], 64, 'rss-growth-mib');
  const stages = values.stages?.split(',').map((s) => s.trim()) as Stage[] | undefined;
  for (const s of stages ?? []) if (!STAGES.includes(s)) throw new Error(`unknown stage ${s}; known: ${STAGES.join(', ')}`);

  if (values.list) {
    for (let i = first; i < first + cases; i++) {
      const c = generateCase(seed, i, 'jsp-fuzz-user', 'x'.repeat(32), stages);
      console.log(`#${i} ${c.desc}`);
    }
    return 0;
  }

  console.log(`fuzz: seed ${seed}, cases #${first}..#${first + cases - 1}, concurrency ${concurrency}, case timeout ${caseTimeoutMs / 1000} s`);
  const target: FuzzTarget = await startTarget({
    proxyArgs: FUZZ_PROXY_ARGS,
    logLevel: values['log-level'] ?? (replay !== undefined ? 'debug' : 'info'),
  });
  const stopOnSignal = () => {
    console.log('interrupted: stopping the daemon, the Hub and the user');
    void target.stop().then(() => process.exit(130));
  };
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  let ok = true;
  try {
    const pid = target.pid;
    console.log(`daemon pid ${pid} on port ${target.proxy.port}; Hub at ${target.hub.url}; user ${target.user.name}`);
    const before = baseline(pid);
    console.log(`before fuzzing: RSS ${(before.rssKiB / 1024).toFixed(1)} MiB, ${before.fds} descriptors`);
    const common = {
      port: target.proxy.port,
      user: target.user.name,
      token: target.token,
      seed,
      concurrency,
      caseTimeoutMs,
      stages,
      pid,
      onProgress: (s: FuzzStats) =>
        console.log(`  ... ${s.casesRun} cases, ${s.rate.toFixed(1)}/s, RSS ${alive(pid) ? (rssKiB(pid) / 1024).toFixed(1) : "-"} MiB`),
    };
    if (replay !== undefined) {
      const c = generateCase(seed, replay, target.user.name, target.token, stages);
      console.log(`case #${replay} ${c.desc}`);
    }
    let warm: FuzzStats | undefined;
    if (warmup > 0) {
      warm = await runFuzz({ ...common, first, cases: warmup });
      console.log(`warm-up: ${formatStats(warm)}`);
    }
    const warmRss = alive(pid) ? rssKiB(pid) : 0;
    const stats = warm?.failure ? warm : await runFuzz({ ...common, first: first + warmup, cases: cases - warmup });
    if (!warm?.failure) console.log(formatStats(stats));
    if (Object.keys(stats.disconnects).length > 0) {
      console.log('  DISCONNECT texts seen:');
      for (const [text, n] of Object.entries(stats.disconnects).sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`    ${n}x ${JSON.stringify(text)}`);
    }
    for (const j of [...(warm?.rssJumps ?? []), ...stats.rssJumps].slice(0, 5)) {
      console.log(`  RSS jump ${(j.fromKiB / 1024).toFixed(1)} -> ${(j.toKiB / 1024).toFixed(1)} MiB with in flight:\n    ${j.inFlight.join('\n    ')}`);
    }
    const problems: string[] = [];
    if (stats.failure) problems.push(stats.failure, ...stats.inFlight.map((c) => `  in flight: ${c}`));
    if (stats.canaries.failed > 0) problems.push(`canaries failed: ${stats.canaries.failures.join('; ')}`);
    const deadlines = [...(warm?.deadlines ?? []), ...(warm?.failure ? [] : stats.deadlines)];
    if (deadlines.length > 0) console.log(`  cases that hit the deadline: ${deadlines.slice(0, 5).map((d) => `#${d.index} ${d.desc}`).join('; ')}`);
    const after = await checkAfterRun(target, before);
    problems.push(...after.problems);
    if (!after.alive) console.log(`--- last 60 lines of the daemon's output ---\n${target.proxy.logs().split('\n').slice(-60).join('\n')}`);
    const growth = (after.rssKiB - warmRss) / 1024;
    console.log(
      `after the run: daemon ${after.alive ? 'alive' : 'DEAD'}; RSS before ${(before.rssKiB / 1024).toFixed(1)} MiB, ` +
        `after warm-up ${(warmRss / 1024).toFixed(1)} MiB, max ${(Math.max(stats.rss.maxKiB, warm?.rss.maxKiB ?? 0) / 1024).toFixed(1)} MiB, ` +
        `end ${(after.rssKiB / 1024).toFixed(1)} MiB; descriptors ${after.fds} (baseline ${before.fds}); ` +
        `children ${after.children.length}; real ssh login ${after.loginOk ? 'OK' : after.alive ? 'FAILED' : 'not tried'}`,
    );
    if (after.alive && growth > rssGrowthMiB) problems.push(`RSS grew ${growth.toFixed(1)} MiB after warm-up (limit ${rssGrowthMiB})`);
    if (target.suspiciousCount() > 0) problems.push(`${target.suspiciousCount()} suspicious daemon log lines, e.g.:\n${target.suspicious.slice(0, 10).join('\n')}`);
    if (replay !== undefined) console.log(`--- daemon log ---\n${target.proxy.logs()}`);
    if (values['daemon-log']) fs.writeFileSync(values['daemon-log'], target.proxy.logs());
    if (values.json) {
      fs.writeFileSync(values.json, JSON.stringify({ seed, warm, stats, before, warmRssKiB: warmRss, after, problems }, null, 2));
    }
    if (problems.length > 0) {
      ok = false;
      console.log(`FAILED:\n- ${problems.join('\n- ')}`);
    } else {
      console.log('PASSED');
    }
  } finally {
    await target.stop();
  }
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(err.stack ?? err.message);
    process.exit(2);
  },
);
