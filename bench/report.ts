// results.json (everything, every run) and results.md (the tables).
import fs from 'node:fs';
import path from 'node:path';
import { PROBE_INTERVAL_MS, type Run } from './cases.js';
import type { ProfileSummary } from './profile.js';
import type { PerfSummary } from './perfprofile.js';
import type { AddonAesGcmCost, RelayFloorResult } from './relayfloor.js';
import { GiB, MiB, fmt, max, median, min, spreadPercent } from './stats.js';

export interface CaseResult {
  id: string;
  group: 'bulk' | 'link' | 'latency' | 'concurrency' | 'clients' | 'websocket' | 'idle' | 'loaded';
  title: string;
  /** Client-leg cipher forced with -c, or 'default'. */
  cipher: string;
  bytesPerRun: number;
  direct: Run[];
  proxy: Run[];
  summary?: CaseSummary;
}

export interface CaseSummary {
  medianSeconds: { direct: number; proxy: number };
  /** median proxy time / median direct time (> 1: the proxy is slower). */
  ratio: number;
  medianMiBps?: { direct: number; proxy: number };
  spreadPercent: { direct: number; proxy: number };
  range: { direct: [number, number]; proxy: [number, number] };
  /** Median over proxy runs of the daemon's CPU seconds per GiB moved. */
  proxyCpuSecondsPerGiB?: number;
  /** The same, user space only (the rest is the kernel: socket reads and writes). */
  proxyUserCpuSecondsPerGiB?: number;
  /** Median sshd CPU seconds per GiB (direct: the sshd; proxy: the sshd -i behind it). */
  sshdCpuSecondsPerGiB?: { direct: number; proxy: number };
  clientCpuSecondsPerGiB?: { direct: number; proxy: number };
  /** Median of each run's sshd + client (+ daemon) CPU seconds per GiB: what the whole path costs the machine. */
  allCpuSecondsPerGiB?: { direct: number; proxy: number };
  /** Median of each run's sshd + client (+ daemon) CPU seconds ÷ its wall time: how many cores the path kept busy. */
  coresBusy?: { direct: number; proxy: number };
  /** Median of each run's host steal seconds ÷ its wall time: cores' worth of CPU the hypervisor gave other guests. */
  stealCores?: { direct: number; proxy: number };
}

/** One of issue 5's targets, checked against one case of the run. */
export interface TargetCheck {
  target: string;
  case: string;
  /** What the run measured, as the target states it (e.g. "0.91× direct throughput"). */
  measured: string;
  met: boolean;
}

export interface CpuCost {
  cipher: string;
  /** Daemon utime+stime read before and after the whole group (includes the direct runs' idle time). */
  wholeGroupProxyCpuSeconds: number;
  /** Sum over the proxy runs only. */
  perRunProxyCpuSeconds: number;
  proxiedGiB: number;
}

export interface Results {
  startedAt: string;
  finishedAt: string;
  machine: Record<string, unknown> & { cpu: string; cores: number; openssh: string; node: string; daemonNodeArgs?: string; daemonEnv?: string; ssh2: string };
  settings: Record<string, unknown>;
  loadavg: { start: number[]; end: number[] };
  /** One core's AES-128-GCM MiB/s at the start and after each case group (bench/hostspeed.ts): whether two runs' CPUs ran at the same speed. */
  hostSpeed: number[];
  cases: CaseResult[];
  cpuCost: CpuCost[];
  /** The relay-floor case (bench/relayfloor.ts): what a minimal Node relay spends per GiB. */
  relayFloor?: { bytes: number; aesGcmPassSecondsPerGiB: number; addonAesGcm?: AddonAesGcmCost[]; variants: RelayFloorResult[] };
  profiles: { what: string; cipher: string; summary: ProfileSummary }[];
  /** From Linux perf (absent in runs without it): the daemon's CPU time by kind. */
  perfProfiles?: { what: string; cipher: string; seconds: number; bytes: number; daemonCpuSeconds: number; summary: PerfSummary }[];
  notes: string[];
  /** checkTargets of the cases, written into results.json by writeReports for readers of the JSON. */
  targets?: TargetCheck[];
}

/** The median of one of the runs' extra figures, over the runs that have it. */
function medianExtra(runs: Run[], key: string): number {
  return median(runs.map((x) => x.extra?.[key] ?? NaN).filter((v) => !Number.isNaN(v)));
}

/** How the note of a run on reduced sizes begins (bench/run.ts). */
export const REDUCED_NOTE = 'Reduced from the full sizes';

/** Issue 5's targets (bench/README.md): only on the full sizes do they mean what the issue says. */
const THROUGHPUT_TARGET = 0.9;
const LATENCY_TARGET = 1.15;
const IDLE_RSS_TARGET_MIB = 100;

/**
 * Checks the run's cases against the targets: each bulk case's and the
 * parallel case's throughput (direct time ÷ proxy time), the warm login's
 * time ratio, and the daemon's RSS with the idle sessions open.
 */
export function checkTargets(r: Results): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const name = (c: CaseResult) => `${c.title}${c.cipher === 'default' ? '' : ` [${c.cipher.replace('@openssh.com', '')}]`}`;
  for (const c of r.cases) {
    const s = c.summary ?? summarizeCase(c);
    if (c.group === 'bulk' || c.group === 'concurrency') {
      const throughput = 1 / s.ratio;
      checks.push({ target: `throughput ≥ ${THROUGHPUT_TARGET}× direct`, case: name(c), measured: `${fmt(throughput, 3)}×`, met: throughput >= THROUGHPUT_TARGET });
    } else if (c.id === 'latency-warm') {
      checks.push({ target: `time ≤ ${LATENCY_TARGET}× direct`, case: name(c), measured: `${fmt(s.ratio, 2)}×`, met: s.ratio <= LATENCY_TARGET });
    } else if (c.group === 'idle') {
      const rssMiB = medianExtra(c.proxy, 'daemonRssKb') / 1024;
      checks.push({ target: `daemon RSS ≤ ${IDLE_RSS_TARGET_MIB} MiB`, case: name(c), measured: `${fmt(rssMiB, 1)} MiB`, met: rssMiB <= IDLE_RSS_TARGET_MIB });
    }
  }
  return checks;
}

function summarizeCase(c: CaseResult): CaseSummary {
  const secs = (rs: Run[]) => rs.map((r) => r.seconds);
  const perGiB = (rs: Run[], f: (r: Run) => number) => median(rs.filter((r) => r.bytes > 0).map((r) => f(r) / (r.bytes / GiB)));
  const d = secs(c.direct);
  const p = secs(c.proxy);
  const s: CaseSummary = {
    medianSeconds: { direct: median(d), proxy: median(p) },
    ratio: median(p) / median(d),
    spreadPercent: { direct: spreadPercent(d), proxy: spreadPercent(p) },
    range: { direct: [min(d), max(d)], proxy: [min(p), max(p)] },
  };
  if (c.bytesPerRun > 0) {
    s.medianMiBps = {
      direct: median(c.direct.map((r) => r.bytes / MiB / r.seconds)),
      proxy: median(c.proxy.map((r) => r.bytes / MiB / r.seconds)),
    };
    s.proxyCpuSecondsPerGiB = perGiB(c.proxy, (r) => r.cpu.proxy ?? 0);
    s.proxyUserCpuSecondsPerGiB = perGiB(c.proxy, (r) => r.cpu.proxyUser ?? 0);
    s.sshdCpuSecondsPerGiB = { direct: perGiB(c.direct, (r) => r.cpu.sshd), proxy: perGiB(c.proxy, (r) => r.cpu.sshd) };
    s.clientCpuSecondsPerGiB = { direct: perGiB(c.direct, (r) => r.cpu.client), proxy: perGiB(c.proxy, (r) => r.cpu.client) };
    const all = (r: Run) => r.cpu.sshd + r.cpu.client + (r.cpu.proxy ?? 0);
    s.allCpuSecondsPerGiB = { direct: perGiB(c.direct, all), proxy: perGiB(c.proxy, all) };
    const busy = (rs: Run[]) => median(rs.map((r) => all(r) / r.seconds));
    s.coresBusy = { direct: busy(c.direct), proxy: busy(c.proxy) };
    const steal = (rs: Run[]) => median(rs.map((r) => r.stealSeconds / r.seconds));
    s.stealCores = { direct: steal(c.direct), proxy: steal(c.proxy) };
  }
  return s;
}

/** Table cells cannot hold a bare '|'. */
function cell(text: string): string {
  return text.replaceAll('|', '\\|');
}

/** Logins take tens of milliseconds; keystroke echoes a fraction of one. */
function msDigits(c: CaseResult): number {
  return c.id.startsWith('echo') ? 2 : 0;
}

function value(c: CaseResult, which: 'direct' | 'proxy'): string {
  const s = c.summary!;
  if (c.group === 'latency') return `${fmt(s.medianSeconds[which] * 1000, msDigits(c))} ms`;
  if (c.group === 'idle') return `${fmt(s.medianSeconds[which], 1)} s`;
  return `${fmt(s.medianSeconds[which], 2)} s (${fmt(s.medianMiBps![which], 0)} MiB/s)`;
}

function range(c: CaseResult, which: 'direct' | 'proxy'): string {
  const [lo, hi] = c.summary!.range[which];
  const scale = c.group === 'latency' ? 1000 : 1;
  const digits = c.group === 'latency' ? msDigits(c) : 2;
  return `${fmt(lo * scale, digits)}–${fmt(hi * scale, digits)}`;
}

export function markdown(r: Results): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`# jupyter-ssh-proxy benchmark results`);
  out.push('');
  out.push(`- when: ${r.startedAt} – ${r.finishedAt || '(unfinished)'}`);
  out.push(`- machine: ${m.cpu}, ${m.cores} cores, ${String(m.memoryGiB)} GiB, Linux ${String(m.kernel)}; CPU flags ${(m.cpuFlags as string[]).join(' ')}`);
  out.push(`- ${m.openssh}; Node ${m.node}${m.daemonNodeArgs ? ` (daemon run as \`${m.daemonEnv ? `${m.daemonEnv} ` : ''}node ${m.daemonNodeArgs}\`)` : ''}; ssh2 ${m.ssh2} (native crypto binding ${m.ssh2NativeBinding ? 'built' : 'missing'}); the daemon's AES-GCM by ${m.daemonAesGcm ?? 'unknown'}`);
  out.push(
    `- client-leg cipher: as in the Cipher column (\`-c\`, same on both paths); "default" = ${String(m.clientDefaultCipher)}, ` +
      "except through the clients cases' daemon (--prefer-aes-gcm all), which switches the default client to AES-GCM once it moves bulk data",
  );
  const kex = m.keyExchange as { direct: string; proxy: string } | undefined;
  if (kex !== undefined) out.push(`- key exchange (every case, \`-o KexAlgorithms\` on both paths, bench/env.ts): direct ${kex.direct}, proxy ${kex.proxy}; the upstream leg curve25519-sha256`);
  out.push(`- upstream leg (proxy → sshd -i): ${String(m.upstreamCipher)}`);
  const s = r.settings;
  out.push(`- runs per case and path: ${String(s.runs)} (idle: ${String(s.idleRuns)}, latency: ${String(s.latencyRuns)}, cold: ${String(s.coldRuns)}), direct and proxy alternating`);
  out.push(`- load average at start ${r.loadavg.start.map((x) => x.toFixed(2)).join(' ')}, at end ${r.loadavg.end.map((x) => x.toFixed(2)).join(' ') || 'n/a'}`);
  out.push(
    `- host speed (one core's AES-128-GCM, \`openssl speed\` on 16 KiB blocks, at the start and after each case group; bench/hostspeed.ts): ${r.hostSpeed.length ? `median ${fmt(median(r.hostSpeed), 0)} MiB/s, ${r.hostSpeed.map((x) => fmt(x, 0)).join(', ')}` : 'n/a (no usable openssl)'}; a slower CPU reads lower here, a host slowed in its memory, kernel or scheduling may not (for those the direct path's times are the reference)`,
  );
  out.push('');
  out.push('Medians; ratio = proxy ÷ direct of the median time (> 1: the proxy is slower). Range = fastest–slowest run (s, or ms for latency).');
  out.push('');
  out.push('| Case | Cipher | Direct | Proxy | Proxy ÷ Direct | Proxy CPU s/GiB | Direct range | Proxy range |');
  out.push('|---|---|---|---|---|---|---|---|');
  for (const c of r.cases) {
    const cpu = c.summary!.proxyCpuSecondsPerGiB;
    out.push(
      `| ${cell(c.title)} | ${c.cipher.replace('@openssh.com', '')} | ${value(c, 'direct')} | ${value(c, 'proxy')} | ${fmt(c.summary!.ratio, 2)} | ${cpu === undefined ? '' : fmt(cpu, 2)} | ${range(c, 'direct')} | ${range(c, 'proxy')} |`,
    );
  }
  const targets = checkTargets(r);
  if (targets.length > 0) {
    out.push('');
    const reduced = r.notes.some((n) => n.startsWith(REDUCED_NOTE));
    out.push(
      `Issue 5's targets: ${targets.filter((t) => t.met).length} of ${targets.length} met in this run (medians, as above)` +
        `${reduced ? ", on reduced sizes (see the note at the end): not the issue's figures" : ''}.`,
    );
    out.push('');
    out.push('| Target | Case | Measured | Met |');
    out.push('|---|---|---|---|');
    for (const t of targets) out.push(`| ${t.target} | ${cell(t.case)} | ${t.measured} | ${t.met ? 'yes' : 'no'} |`);
  }
  const bulk = r.cases.filter((c) => c.group === 'bulk' || c.group === 'concurrency' || c.group === 'clients');
  if (bulk.length > 0) {
    out.push('');
    out.push(
      'CPU seconds per GiB moved (medians over runs). Proxy daemon = the daemon process only (user + kernel; user space alone in brackets); ' +
        'sshd = the sshd processes and the remote commands they run (a cgroup each: direct = the listener and its per-connection children, ' +
        'proxy = the `sshd -i` children); client = ssh/sftp (and askpass) and the local head/wc. ' +
        'All = the three together per run; when the cores are as busy on both paths, the ratio of the times follows the ratio of All ' +
        '(bench/README.md, "Why the throughput targets are out of reach on 2 cores"). ' +
        "Host steal = the CPU time the hypervisor gave other guests while the path's processes wanted to run (/proc/stat), in cores: " +
        'a run that lost CPU this way was slower for a reason outside both paths.',
    );
    out.push('');
    out.push(
      '| Case | Cipher | Proxy daemon (user) | sshd direct | sshd behind proxy | client direct | client via proxy | All direct | All via proxy | All: proxy ÷ direct | Cores busy, direct / proxy | Host steal, direct / proxy (cores) |',
    );
    out.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const c of bulk) {
      const x = c.summary!;
      out.push(
        `| ${cell(c.title)} | ${c.cipher.replace('@openssh.com', '')} | ${fmt(x.proxyCpuSecondsPerGiB!, 2)} (${fmt(x.proxyUserCpuSecondsPerGiB!, 2)}) | ${fmt(x.sshdCpuSecondsPerGiB!.direct, 2)} | ${fmt(x.sshdCpuSecondsPerGiB!.proxy, 2)} | ${fmt(x.clientCpuSecondsPerGiB!.direct, 2)} | ${fmt(x.clientCpuSecondsPerGiB!.proxy, 2)} | ` +
          `${fmt(x.allCpuSecondsPerGiB!.direct, 2)} | ${fmt(x.allCpuSecondsPerGiB!.proxy, 2)} | ${fmt(x.allCpuSecondsPerGiB!.proxy / x.allCpuSecondsPerGiB!.direct, 2)} | ${fmt(x.coresBusy!.direct, 2)} / ${fmt(x.coresBusy!.proxy, 2)} | ${fmt(x.stealCores!.direct, 2)} / ${fmt(x.stealCores!.proxy, 2)} |`,
      );
    }
  }
  if (r.cpuCost.length > 0) {
    out.push('');
    out.push('Proxy CPU per GiB forwarded over the bulk cases (daemon utime+stime):');
    out.push('');
    out.push('| Client cipher | GiB through the proxy | CPU s (proxy runs only) | s/GiB | CPU s (whole group, before/after) | s/GiB |');
    out.push('|---|---|---|---|---|---|');
    for (const k of r.cpuCost) {
      out.push(
        `| ${k.cipher.replace('@openssh.com', '')} | ${fmt(k.proxiedGiB, 1)} | ${fmt(k.perRunProxyCpuSeconds, 1)} | ${fmt(k.perRunProxyCpuSeconds / k.proxiedGiB, 2)} | ${fmt(k.wholeGroupProxyCpuSeconds, 1)} | ${fmt(k.wholeGroupProxyCpuSeconds / k.proxiedGiB, 2)} |`,
      );
    }
  }
  if (r.relayFloor) {
    const f = r.relayFloor;
    const daemon = r.cases.find((c) => c.id === 'download/aes128-gcm@openssh.com')?.summary?.proxyCpuSecondsPerGiB;
    const label: Record<RelayFloorResult['variant'], string> = {
      pipe: 'pipe: bytes passed on, no cryptography',
      'in-place': 'in place: decrypted and encrypted again where it lies in the read chunk, one write per chunk',
      reframed: 're-framed: payload copied into a new packet (recycled buffer, fresh padding), one write per packet, as the daemon does without its relay loop',
      loop: 'relay loop: the daemon\'s native loop (native/packetrelay.c), one call and one write per read chunk',
    };
    out.push('');
    out.push(
      `Relay floor: CPU seconds per GiB of a minimal Node relay between a producer and a consumer process over loopback (bench/relayfloor.ts; ` +
        `32 KiB channel-data packets in AES-128-GCM on both sides, ssh2's native binding or the daemon's addon, ${f.bytes / MiB} MiB per round, medians):`,
    );
    out.push('');
    out.push('| Relay | CPU s/GiB | Rounds |');
    out.push('|---|---|---|');
    for (const v of f.variants) out.push(`| ${label[v.variant]} | ${fmt(v.medianCpuSecondsPerGiB, 2)} | ${v.cpuSecondsPerGiB.map((x) => fmt(x, 2)).join(', ')} |`);
    out.push(`| one AES-GCM pass alone (in this process, no sockets) | ${fmt(f.aesGcmPassSecondsPerGiB, 2)} | |`);
    for (const c of f.addonAesGcm ?? []) out.push(`| the daemon's two passes (decrypt, encrypt again) alone, AES-GCM by ${c.implementation} | ${fmt(c.secondsPerGiB, 2)} | |`);
    if (daemon !== undefined) out.push(`| the daemon, aes128-gcm download above | ${fmt(daemon, 2)} | |`);
  }
  // Over the runs that have the figure (a probe without a banner, or a results.json from before the figure, has NaN).
  const e = medianExtra;
  const parallel = r.cases.find((c) => c.group === 'concurrency' && c.proxy.some((x) => x.extra?.bannerProbes !== undefined));
  if (parallel) {
    out.push('');
    out.push(
      `Logging in during the parallel case: a probe connects every ${PROBE_INTERVAL_MS} ms and times the server's identification line (medians over runs); the first probe starts together with the parallel sessions' logins, the others (counted, median, 90th percentile, longest) arrive while the transfers run:`,
    );
    out.push('');
    out.push('| | Direct | Proxy |');
    out.push('|---|---|---|');
    for (const [label, key] of [
      ['first probe, among the logins (ms; n/a if it got no banner)', 'bannerWaitDuringLoginsMs'],
      ['probes during the transfers that got the banner', 'bannerProbes'],
      ['probes during the transfers that got no banner (refused, reset or closed; not in the waits)', 'bannerProbesFailed'],
      ['median wait (ms)', 'bannerWaitMedianMs'],
      ['90th percentile (ms)', 'bannerWaitP90Ms'],
      ['longest (ms)', 'bannerWaitMaxMs'],
    ] as const) {
      out.push(`| ${label} | ${fmt(e(parallel.direct, key), 0)} | ${fmt(e(parallel.proxy, key), 0)} |`);
    }
  }
  const idle = r.cases.find((c) => c.group === 'idle');
  if (idle) {
    out.push('');
    out.push(`Idle sessions (${String(idle.proxy[0]?.extra?.sessions ?? '')} at once; medians over runs):`);
    out.push('');
    out.push('| | Direct | Proxy |');
    out.push('|---|---|---|');
    out.push(`| connect all (s) | ${fmt(e(idle.direct, 'connectSeconds'), 1)} | ${fmt(e(idle.proxy, 'connectSeconds'), 1)} |`);
    out.push(`| sessions/s | ${fmt(e(idle.direct, 'sessionsPerSecond'), 1)} | ${fmt(e(idle.proxy, 'sessionsPerSecond'), 1)} |`);
    out.push(`| daemon VmRSS before, once settled (MiB) | | ${fmt(e(idle.proxy, 'daemonRssBeforeKb') / 1024, 1)} |`);
    const holdSeconds = idle.proxy[0]?.extra?.holdSeconds;
    if (holdSeconds === undefined) {
      out.push(`| daemon VmRSS with all sessions, once settled (MiB) | | ${fmt(e(idle.proxy, 'daemonRssKb') / 1024, 1)} |`);
    } else {
      out.push(`| daemon VmRSS with all sessions, once settled (MiB) | | ${fmt(e(idle.proxy, 'daemonRssSettledKb') / 1024, 1)} |`);
      out.push(`| daemon VmRSS with all sessions, after ${String(holdSeconds)} s held: the target's reading (MiB) | | ${fmt(e(idle.proxy, 'daemonRssKb') / 1024, 1)} |`);
      out.push(`| daemon VmRSS, highest in the hold (MiB) | | ${fmt(e(idle.proxy, 'daemonRssHoldMaxKb') / 1024, 1)} |`);
      out.push(`| packets forwarded in the hold (the internal sshd's keepalives and the answers) | | ${fmt(e(idle.proxy, 'holdPacketsForwarded'), 0)} |`);
    }
    const waited = (key: string) => (e(idle.proxy, key) < 0 ? 'no full GC in 60 s' : fmt(e(idle.proxy, key), 0));
    out.push(`| seconds waited for a full GC and steady RSS, before / with sessions | | ${waited('daemonSettleSecondsBefore')} / ${waited('daemonSettleSecondsWith')} |`);
    out.push(`| daemon RSS per session (KiB) | | ${fmt(e(idle.proxy, 'daemonRssPerSessionKb'), 1)} |`);
    out.push(`| with all sessions: V8 heap used / reserved, V8 external memory (MiB) | | ${fmt(e(idle.proxy, 'daemonHeapUsedKb') / 1024, 1)} / ${fmt(e(idle.proxy, 'daemonHeapTotalKb') / 1024, 1)}, ${fmt(e(idle.proxy, 'daemonExternalKb') / 1024, 1)} |`);
    out.push(
      `| with all sessions: RssAnon / RssFile (node's mapped binary and libraries, page cache shared with every node process) / Pss (MiB) | | ${fmt(e(idle.proxy, 'daemonRssAnonKb') / 1024, 1)} / ${fmt(e(idle.proxy, 'daemonRssFileKb') / 1024, 1)} / ${fmt(e(idle.proxy, 'daemonPssKb') / 1024, 1)} |`,
    );
    out.push(`| daemon VmHWM (MiB) | | ${fmt(e(idle.proxy, 'daemonHwmKb') / 1024, 1)} |`);
    out.push(`| sshd processes | ${fmt(e(idle.direct, 'sshdProcesses'), 0)} | ${fmt(e(idle.proxy, 'sshdProcesses'), 0)} |`);
    out.push(`| sshd Pss per session (KiB) | ${fmt(e(idle.direct, 'sshdPssPerSessionKb'), 0)} | ${fmt(e(idle.proxy, 'sshdPssPerSessionKb'), 0)} |`);
  }
  for (const c of r.cases.filter((x) => x.proxy.some((run) => run.extra?.daemonFullGcs !== undefined))) {
    const gcs = c.proxy.map((x) => x.extra?.daemonFullGcs ?? NaN);
    const what = c.group === 'loaded' ? `Loaded case, ${c.id.split('-')[0]} (${c.cipher.replace('@openssh.com', '')})` : c.title;
    out.push('');
    out.push(
      `${what}: the daemon's full (mark-compact) collections per proxied run, median ${fmt(median(gcs), 0)}, runs ${gcs.map((g) => fmt(g, 0)).join(', ')}; daemon CPU ${fmt(c.summary!.proxyCpuSecondsPerGiB!, 2)} s/GiB.`,
    );
  }
  for (const { what, cipher, summary } of r.profiles) {
    out.push('');
    out.push(`Profile of the daemon, one ${what}, client cipher ${cipher} (busy ${fmt(summary.busyMs / 1000, 2)} s of ${fmt(summary.wallMs / 1000, 1)} s wall):`);
    out.push('');
    out.push('| Self % | Self s | Category |');
    out.push('|---|---|---|');
    for (const e of summary.categories.slice(0, 10)) out.push(`| ${fmt(e.percent, 1)} | ${fmt(e.selfMs / 1000, 2)} | ${e.name} |`);
    out.push('');
    out.push('| Self % | Self s | Function | Where |');
    out.push('|---|---|---|---|');
    for (const e of summary.functions.slice(0, 15)) out.push(`| ${fmt(e.percent, 1)} | ${fmt(e.selfMs / 1000, 2)} | \`${e.name}\` | ${e.where} |`);
  }
  for (const { what, cipher, seconds, bytes, daemonCpuSeconds, summary } of r.perfProfiles ?? []) {
    const perGiB = bytes > 0 ? `, ${fmt(daemonCpuSeconds / (bytes / GiB), 2)} s/GiB` : '';
    out.push('');
    out.push(
      `CPU time of the daemon under perf, one ${what}, client cipher ${cipher}: ${fmt(seconds, 1)} s, daemon ${fmt(daemonCpuSeconds, 2)} s of CPU${perGiB}; ` +
        `${summary.samples} samples, ${fmt(summary.mainThreadPercent, 0)} % on its main thread:`,
    );
    out.push('');
    out.push('| Share of the daemon\'s CPU | Kind |');
    out.push('|---|---|');
    for (const c of summary.categories) out.push(`| ${fmt(c.percent, 1)} % | ${c.name} |`);
    out.push('');
    out.push('| Share | Symbol (library) |');
    out.push('|---|---|');
    for (const e of summary.symbols.slice(0, 10)) out.push(`| ${fmt(e.percent, 1)} % | \`${e.name}\` |`);
  }
  for (const n of r.notes) out.push('', n);
  out.push('');
  return out.join('\n');
}

export function writeReports(r: Results, dir: string): void {
  for (const c of r.cases) c.summary = summarizeCase(c);
  r.targets = checkTargets(r);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'results.json'), `${JSON.stringify(r, null, 2)}\n`);
  fs.writeFileSync(path.join(dir, 'results.md'), markdown(r));
}
