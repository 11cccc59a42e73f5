// `npm run bench [-- --runs N] [--quick] [--cases ...] [--ciphers ...]`
//
// Compares a direct OpenSSH sshd with the same sshd behind jupyter-ssh-proxy
// (a real JupyterHub, a real unix user, the real OpenSSH client), running
// each case on both paths alternately, and writes bench/results.json and
// bench/results.md. See bench/README.md.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { createToken } from '../test/helpers/hub.js';
import { REPO_ROOT } from '../test/helpers/proxy.js';
import {
  download,
  countingGcs,
  idleSessions,
  keyExchange,
  keystrokeEcho,
  measure,
  openIdleSessions,
  parallelChecksums,
  quiesce,
  randomFile,
  sftpGet,
  sftpPut,
  trueCommand,
  upload,
  type Moved,
  type Run,
} from './cases.js';
import { DAEMON_ENV, DAEMON_NODE_ARGS } from '../test/helpers/deployed.js';
import { startDelayLine } from './delayline.js';
import { cleanup, onCleanup, setUp, type BenchEnv, type SshPath } from './env.js';
import { aesGcmMiBps } from './hostspeed.js';
import { addonAesGcmCosts, aesGcmPassSecondsPerGiB, measureRelayFloor } from './relayfloor.js';
import { cpuTimes } from './procfs.js';
import { formatSummary, summarize, type ProfileSummary } from './profile.js';
import { formatPerfSummary, perfUnusable, recordPerf, summarizePerf } from './perfprofile.js';
import { REDUCED_NOTE, writeReports, type CaseResult, type Results } from './report.js';
import { GiB, MiB, fmt, median } from './stats.js';

/**
 * In the order they run. The profiles come before the idle and loaded cases:
 * after 1,000 sessions were opened and closed, transfers on this kind of
 * host ran 2-3x slower for minutes (a profiled 1 GiB download took 5.2 s
 * there and 2.6 s alone), and the profiles would show that state rather
 * than the one the bulk cases measured.
 */
const ALL_CASES = ['bulk', 'relay-floor', 'latency', 'cold', 'key', 'echo', 'link', 'concurrency', 'clients', 'websocket', 'profile', 'idle', 'loaded'] as const;
type CaseGroup = (typeof ALL_CASES)[number];
const PROFILERS = ['v8', 'perf'] as const;
type Profiler = (typeof PROFILERS)[number];

/**
 * How long the idle case holds its sessions before reading the daemon's
 * memory: the internal sshd sends its first keepalive after 60 to 120 s of
 * silence, and the sessions come up over ~40 s, so by then every one has
 * had a keepalive relayed both ways.
 */
const IDLE_HOLD_SECONDS = 150;

const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    quick: { type: 'boolean', default: false },
    cases: { type: 'string', default: ALL_CASES.join(',') },
    ciphers: { type: 'string', default: 'aes128-gcm@openssh.com,chacha20-poly1305@openssh.com' },
    bulk: { type: 'string', default: 'download,upload,sftp-get,sftp-put' },
    profile: { type: 'string', default: 'download,upload,parallel' },
    profilers: { type: 'string', default: 'v8,perf' },
    'size-mib': { type: 'string' },
    sessions: { type: 'string' },
    'session-mib': { type: 'string' },
    idle: { type: 'string' },
    'idle-runs': { type: 'string' },
    'idle-parallel': { type: 'string', default: '50' },
    'idle-hold': { type: 'string' },
    'latency-runs': { type: 'string' },
    'cold-runs': { type: 'string' },
    echoes: { type: 'string' },
    'link-ms': { type: 'string', default: '10' },
    'link-mib': { type: 'string' },
    out: { type: 'string', default: path.join(REPO_ROOT, 'bench') },
    help: { type: 'boolean', default: false },
  },
  strict: true,
});

if (opts.help) {
  console.log(`usage: npm run bench -- [options]
  --runs N            runs per case and path, alternating direct/proxy (default 5)
  --quick             smaller sizes: 128 MiB bulk, 20 x 20 MiB parallel, 100 idle sessions, 10 latency runs
  --cases LIST        any of ${ALL_CASES.join(',')} (default: all)
  --ciphers LIST      client ciphers for the bulk cases (default aes128-gcm@openssh.com,chacha20-poly1305@openssh.com)
  --bulk LIST         which bulk cases, also in the link case (default download,upload,sftp-get,sftp-put)
  --profile LIST      what the profile case profiles: download, upload (one run per bulk cipher),
                      parallel (one run of the concurrency case, default cipher) (default: all three)
  --profilers LIST    how: v8 (node --cpu-prof: JavaScript functions, wall time), perf (Linux perf:
                      CPU time by kind and thread, kernel included) (default: both; perf if installed)
  --size-mib N        bulk transfer size (default 1024)
  --sessions N        parallel sessions in the concurrency case (default 100)
  --session-mib N     MiB per parallel session (default 100)
  --idle N            concurrent idle sessions (default 1000; also held open by the loaded case)
  --idle-runs N       runs of the idle case per path (default: --runs)
  --idle-parallel N   idle sessions being opened at a time (default 50)
  --idle-hold S       seconds the idle sessions stay open before the daemon's memory is read
                      (default ${IDLE_HOLD_SECONDS}, 0 with --quick: the internal sshd's keepalives begin after 60 s)
  --latency-runs N    ssh true runs per path (default 20)
  --cold-runs N       ssh true runs with a never-seen token (default 10)
  --echoes N          keystroke echoes timed per echo run (default 200)
  --link-ms N         the link case's one-way delay, each direction (default 10: a 20 ms round trip)
  --link-mib N        the link case's transfer size (default 256)
  --out DIR           where results.json and results.md go (default bench/)`);
  process.exit(0);
}

const int = (v: string | undefined, d: number) => (v === undefined ? d : Math.max(1, Math.floor(Number(v))));
const quick = opts.quick;
const settings = {
  runs: int(opts.runs, 5),
  quick,
  cases: opts.cases.split(',').map((s) => s.trim()).filter(Boolean) as CaseGroup[],
  ciphers: opts.ciphers.split(',').map((s) => s.trim()).filter(Boolean),
  bulk: opts.bulk.split(',').map((s) => s.trim()).filter(Boolean),
  profile: opts.profile.split(',').map((s) => s.trim()).filter(Boolean),
  profilers: opts.profilers.split(',').map((s) => s.trim()).filter(Boolean) as Profiler[],
  bulkBytes: int(opts['size-mib'], quick ? 128 : 1024) * MiB,
  sessions: int(opts.sessions, quick ? 20 : 100),
  sessionBytes: int(opts['session-mib'], quick ? 20 : 100) * MiB,
  idleSessions: int(opts.idle, quick ? 100 : 1000),
  idleRuns: int(opts['idle-runs'], int(opts.runs, 5)),
  idleParallel: int(opts['idle-parallel'], 50),
  idleHoldSeconds: opts['idle-hold'] === undefined ? (quick ? 0 : IDLE_HOLD_SECONDS) : Math.max(0, Math.floor(Number(opts['idle-hold']))),
  latencyRuns: int(opts['latency-runs'], quick ? 10 : 20),
  coldRuns: int(opts['cold-runs'], quick ? 5 : 10),
  echoes: int(opts.echoes, quick ? 50 : 200),
  linkOneWayMs: Number(opts['link-ms']),
  linkBytes: int(opts['link-mib'], quick ? 64 : 256) * MiB,
};
if (!(settings.linkOneWayMs >= 0)) throw new Error(`--link-ms must be a number of milliseconds, not ${opts['link-ms']}`);
for (const c of settings.cases) if (!ALL_CASES.includes(c)) throw new Error(`unknown case ${c}; known: ${ALL_CASES.join(',')}`);
for (const p of settings.profilers) if (!PROFILERS.includes(p)) throw new Error(`unknown profiler ${p}; known: ${PROFILERS.join(',')}`);

const startedAt = new Date();
const log = (line: string) => console.log(`${new Date().toISOString().slice(11, 19)} ${line}`);

function machine() {
  const cpu = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const flags = /^flags\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(' ') ?? [];
  let openssh = 'unknown';
  try {
    openssh = execFileSync('ssh', ['-V'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    openssh = String((err as { stderr?: string }).stderr ?? '').trim();
  }
  // ssh -V prints on stderr and exits 0.
  if (openssh === '') openssh = execFileSync('sh', ['-c', 'ssh -V 2>&1'], { encoding: 'utf8' }).trim();
  const ssh2 = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'node_modules', 'ssh2', 'package.json'), 'utf8')) as { version: string };
  const binding = fs.existsSync(path.join(REPO_ROOT, 'node_modules', 'ssh2', 'lib', 'protocol', 'crypto', 'build', 'Release', 'sshcrypto.node'));
  return {
    cpu,
    cores: os.cpus().length,
    cpuFlags: ['aes', 'vaes', 'pclmulqdq', 'vpclmulqdq', 'avx2', 'sha_ni'].filter((f) => flags.includes(f)),
    memoryGiB: Math.round(os.totalmem() / GiB),
    kernel: os.release(),
    openssh,
    node: process.version,
    daemonNodeArgs: DAEMON_NODE_ARGS.join(' '),
    daemonEnv: Object.entries(DAEMON_ENV).map(([k, v]) => `${k}=${v}`).join(' '),
    ssh2: ssh2.version,
    ssh2NativeBinding: binding,
    clientDefaultCipher: 'chacha20-poly1305@openssh.com (OpenSSH default order; used by latency, concurrency, idle)',
    upstreamCipher: 'aes128-gcm@openssh.com (the proxy\'s first choice towards sshd -i)',
    /** The key exchange each path negotiates (measured after set-up). */
    keyExchange: undefined as { direct: string; proxy: string } | undefined,
    /** The daemon's AES-GCM code, from its start-up log ("AES-GCM by ..."). */
    daemonAesGcm: undefined as string | undefined,
  };
}

/** Alternates paths: even runs direct first, odd runs proxy first. */
function order<T>(run: number, direct: T, proxy: T): T[] {
  return run % 2 === 0 ? [direct, proxy] : [proxy, direct];
}

function describeRun(r: Run): string {
  const rate = r.bytes > 0 ? ` ${fmt(r.bytes / MiB / r.seconds, 0)} MiB/s` : '';
  const cpu = r.cpu.proxy !== undefined ? ` proxy-cpu ${fmt(r.cpu.proxy, 2)} s` : '';
  const stealCores = r.stealSeconds / r.seconds;
  const steal = stealCores >= 0.01 ? ` host steal ${fmt(stealCores, 2)} cores` : '';
  return `${r.path.padEnd(6)} ${fmt(r.seconds, 3)} s${rate}${cpu}${steal}`;
}

async function runCase(
  result: CaseResult,
  runs: number,
  paths: () => [SshPath, SshPath],
  body: (p: SshPath, run: number) => Promise<Moved>,
  quiet = false,
): Promise<CaseResult> {
  log(`${result.title}${result.cipher ? ` [${result.cipher}]` : ''}: ${runs} runs per path`);
  for (let i = 0; i < runs; i++) {
    const [direct, proxy] = paths();
    for (const p of order(i, direct, proxy)) {
      const r = await measure(p, () => body(p, i));
      (p.name === 'direct' ? result.direct : result.proxy).push(r);
      if (!quiet) log(`  run ${i + 1}/${runs} ${describeRun(r)}`);
    }
  }
  logMedians(result);
  return result;
}

/**
 * One untimed run per path before a bulk case's measured runs. Without it
 * the first run of a case was an outlier, and always a direct one (the first
 * measured run goes direct first): in the sftp cases 5.9–7.0 s against
 * 2.4–3.5 s for every later run of either path, with half again the CPU,
 * in each of the fortieth session's runs (bench/README.md, "A warm-up run
 * per bulk case").
 */
async function warmUpCase(title: string, paths: () => [SshPath, SshPath], body: (p: SshPath) => Promise<Moved>): Promise<void> {
  const [direct, proxy] = paths();
  const times: string[] = [];
  for (const p of [direct, proxy]) {
    const r = await measure(p, () => body(p));
    times.push(`${p.name} ${fmt(r.seconds, 3)} s`);
  }
  log(`${title}: warm-up (not counted) ${times.join(', ')}`);
}

function logMedians(result: CaseResult): void {
  const md = median(result.direct.map((r) => r.seconds));
  const mp = median(result.proxy.map((r) => r.seconds));
  // Latency cases in ms: a keystroke echo is a fraction of one.
  const [scale, digits, unit] = result.group === 'latency' ? [1000, 2, 'ms'] : [1, 3, 's'];
  log(`  median direct ${fmt(md * scale, digits)} ${unit}, proxy ${fmt(mp * scale, digits)} ${unit}, proxy/direct ${fmt(mp / md, 2)}`);
}

function newCase(id: string, group: CaseResult['group'], title: string, cipher: string, bytesPerRun: number): CaseResult {
  return { id, group, title, cipher, bytesPerRun, direct: [], proxy: [] };
}

/**
 * The sftp cases' files, sparse (no disk reads or writes): `remoteName` in
 * the user's home for sftp get, `localFile` for sftp put.
 */
interface SftpFiles {
  remoteName: string;
  localFile: string;
  /** Deletes both (also at cleanup). */
  remove(): void;
}

/** Makes the SftpFiles for a case group, named after `prefix`. */
function sftpFiles(env: BenchEnv, prefix: string, bytes: number): SftpFiles {
  const remoteName = `${prefix}-get.bin`;
  const remoteFile = path.join(env.user.home, remoteName);
  fs.writeFileSync(remoteFile, '');
  fs.truncateSync(remoteFile, bytes);
  execFileSync('chown', [`${env.user.name}:`, remoteFile]);
  const localFile = path.join(env.tmp, `${prefix}-put-source.bin`);
  fs.writeFileSync(localFile, '');
  fs.truncateSync(localFile, bytes);
  const remove = () => {
    fs.rmSync(remoteFile, { force: true });
    fs.rmSync(localFile, { force: true });
  };
  onCleanup(remove);
  return { remoteName, localFile, remove };
}

interface BulkTransfer {
  id: 'download' | 'upload' | 'sftp-get' | 'sftp-put';
  what: string;
  /** The command it times, for the title ('' for sftp). */
  command: string;
  run(p: SshPath): Promise<{ bytes: number }>;
}

/** The bulk transfers --bulk selects, of `bytes` each with `cipher` (the bulk and link cases). */
function bulkTransfers(env: BenchEnv, files: SftpFiles, cipher: string, bytes: number): BulkTransfer[] {
  const all: BulkTransfer[] = [
    { id: 'download', what: 'download', command: "ssh host 'head -c N /dev/zero' > wc -c", run: (p) => download(p, cipher, bytes) },
    { id: 'upload', what: 'upload', command: "head -c N /dev/zero piped to ssh host 'wc -c'", run: (p) => upload(p, cipher, bytes) },
    { id: 'sftp-get', what: 'sftp get', command: '', run: (p) => sftpGet(p, cipher, bytes, files.remoteName, env.tmp) },
    { id: 'sftp-put', what: 'sftp put', command: '', run: (p) => sftpPut(p, cipher, bytes, files.localFile, env.user.home, env.tmp) },
  ];
  return all.filter((t) => settings.bulk.includes(t.id));
}

async function bulk(env: BenchEnv, results: Results): Promise<void> {
  const bytes = settings.bulkBytes;
  const size = bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`;
  const files = sftpFiles(env, 'bench', bytes);

  const daemon = env.proxy.child.pid!;
  const before = cpuTimes(daemon);
  const paths = (): [SshPath, SshPath] => [env.directPath, env.proxyPath()];
  // The daemon's CPU in warm-up runs, which the group's figures leave out.
  let warmUpCpu = 0;
  for (const cipher of settings.ciphers) {
    const c0 = cpuTimes(daemon);
    let groupWarmUpCpu = 0;
    for (const t of bulkTransfers(env, files, cipher, bytes)) {
      const title = `${t.what} ${size}${t.command ? `: ${t.command}` : ''}`;
      const w0 = cpuTimes(daemon).self;
      await warmUpCase(title, paths, t.run);
      groupWarmUpCpu += cpuTimes(daemon).self - w0;
      results.cases.push(await runCase(newCase(`${t.id}/${cipher}`, 'bulk', title, cipher, bytes), settings.runs, paths, t.run));
    }
    warmUpCpu += groupWarmUpCpu;
    const c1 = cpuTimes(daemon);
    const proxied = results.cases.filter((c) => c.group === 'bulk' && c.cipher === cipher).flatMap((c) => c.proxy);
    results.cpuCost.push({
      cipher,
      wholeGroupProxyCpuSeconds: c1.self - c0.self - groupWarmUpCpu,
      proxiedGiB: proxied.reduce((a, r) => a + r.bytes, 0) / GiB,
      perRunProxyCpuSeconds: proxied.reduce((a, r) => a + (r.cpu.proxy ?? 0), 0),
    });
  }
  const after = cpuTimes(daemon);
  const proxied = results.cases.filter((c) => c.group === 'bulk').flatMap((c) => c.proxy);
  results.cpuCost.push({
    cipher: 'all bulk cases',
    wholeGroupProxyCpuSeconds: after.self - before.self - warmUpCpu,
    proxiedGiB: proxied.reduce((a, r) => a + r.bytes, 0) / GiB,
    perRunProxyCpuSeconds: proxied.reduce((a, r) => a + (r.cpu.proxy ?? 0), 0),
  });
  files.remove();
}

/** The least a Node process can spend relaying the bulk cases' packets, for the daemon's CPU per GiB to be read against. */
async function relayFloor(_env: BenchEnv, results: Results): Promise<void> {
  log(`relay floor: a minimal Node relay of AES-128-GCM packets, ${settings.runs} rounds of ${settings.bulkBytes / MiB} MiB per variant (bench/relayfloor.ts)`);
  const variants = await measureRelayFloor(settings.bulkBytes, settings.runs, log);
  const aesGcmPass = aesGcmPassSecondsPerGiB(settings.bulkBytes);
  const addonAesGcm = addonAesGcmCosts(settings.bulkBytes);
  log(`relay floor: ${variants.map((v) => `${v.variant} ${fmt(v.medianCpuSecondsPerGiB, 2)}`).join(', ')} CPU s/GiB; one AES-GCM pass ${fmt(aesGcmPass, 2)}`);
  log(`the addon's AES-GCM, decrypt and encrypt again: ${addonAesGcm.map((c) => `${c.implementation} ${fmt(c.secondsPerGiB, 2)}`).join(', ')} CPU s/GiB`);
  results.relayFloor = { bytes: settings.bulkBytes, aesGcmPassSecondsPerGiB: aesGcmPass, addonAesGcm, variants };
}

async function latency(env: BenchEnv, results: Results): Promise<void> {
  // Warm: the proxy has just checked this token (its cache holds it).
  await trueCommand(env.proxyPath());
  await trueCommand(env.directPath);
  results.cases.push(
    await runCase(
      newCase('latency-warm', 'latency', "latency: ssh host true (proxy: token just used)", 'default', 0),
      settings.latencyRuns,
      () => [env.directPath, env.proxyPath()],
      (p) => trueCommand(p),
      true,
    ),
  );
}

/** The same key on both paths: the daemon reads it from the user's authorized_keys, as sshd does. */
async function keyLatency(env: BenchEnv, results: Results): Promise<void> {
  await trueCommand(env.proxyKeyPath);
  results.cases.push(
    await runCase(
      newCase('latency-key', 'latency', 'latency: ssh host true, the same key on both paths (proxy: a key login)', 'default', 0),
      settings.latencyRuns,
      () => [env.directPath, env.proxyKeyPath],
      (p) => trueCommand(p),
      true,
    ),
  );
}

async function coldLatency(env: BenchEnv, results: Results): Promise<void> {
  // Cold: every proxy run uses a token minted just before (outside the timing),
  // so the proxy has to ask JupyterHub about it.
  const tokens: string[] = [];
  for (let i = 0; i < settings.coldRuns; i++) tokens.push((await createToken(env.hub, env.user.name)).token);
  results.cases.push(
    await runCase(
      newCase('latency-cold', 'latency', 'latency: ssh host true (proxy: token never seen)', 'default', 0),
      settings.coldRuns,
      () => [env.directPath, env.proxyPath(tokens.shift())],
      (p) => trueCommand(p),
      true,
    ),
  );
}

/**
 * Keystroke echo times in one channel of a connection, with nothing else on
 * it and while another channel downloads (cases.ts, keystrokeEcho). A run's
 * time is its median echo; the first bulk cipher, so that the download runs
 * through the daemon's relay loop.
 */
async function echo(env: BenchEnv, results: Results): Promise<void> {
  const cipher = settings.ciphers[0]!;
  for (const download of [false, true]) {
    const result = newCase(
      download ? 'echo-download' : 'echo-idle',
      'latency',
      download ? `latency: keystroke echo while another channel of the connection downloads (median of ${settings.echoes})` : `latency: keystroke echo, connection otherwise idle (median of ${settings.echoes})`,
      cipher,
      0,
    );
    log(`${result.title} [${cipher}]: ${settings.runs} runs per path`);
    for (let i = 0; i < settings.runs; i++) {
      for (const p of order(i, env.directPath, env.proxyPath())) {
        const r = await measure(p, () => keystrokeEcho(p, cipher, settings.echoes, download, env.tmp));
        r.seconds = r.extra!.medianMs! / 1000;
        (p.name === 'direct' ? result.direct : result.proxy).push(r);
        log(`  run ${i + 1}/${settings.runs} ${p.name.padEnd(6)} median ${fmt(r.extra!.medianMs!, 2)} ms, p90 ${fmt(r.extra!.p90Ms!, 2)} ms${download ? `, download ${fmt(r.extra!.downloadMiBps!, 0)} MiB/s` : ''}`);
      }
    }
    logMedians(result);
    results.cases.push(result);
  }
}

/**
 * The bulk cases over a link with latency (a delay line in front of each
 * server, bench/delayline.ts; first bulk cipher): what users on a real
 * network see. There a transfer moves at most one channel window (2 MiB in
 * OpenSSH) per round trip, so any time the daemon holds bytes back (its
 * batched reads wait up to 1 ms) would show here as a lower rate.
 */
async function link(env: BenchEnv, results: Results): Promise<void> {
  const cipher = settings.ciphers[0]!;
  const bytes = settings.linkBytes;
  const rtt = `${fmt(2 * settings.linkOneWayMs, 0)} ms round trip`;
  const files = sftpFiles(env, 'bench-link', bytes);
  const lines = await Promise.all([env.directPath, env.proxyPath()].map((p) => startDelayLine(p.port, settings.linkOneWayMs)));
  onCleanup(() => lines.forEach((l) => l.stop()));
  const paths = (): [SshPath, SshPath] => [env.viaPort(env.directPath, lines[0]!.port), env.viaPort(env.proxyPath(), lines[1]!.port)];
  const size = `${bytes / MiB} MiB`;
  for (const t of bulkTransfers(env, files, cipher, bytes)) {
    results.cases.push(await runCase(newCase(`link-${t.id}/${cipher}`, 'link', `${t.what} ${size} over a ${rtt}`, cipher, bytes), settings.runs, paths, t.run));
  }
  for (const l of lines) l.stop();
  files.remove();
}

/** The parallel sessions' data: a random file and its digest, removed by `remove`. */
function parallelData(env: BenchEnv): { file: string; digest: string; title: string; total: number; remove(): void } {
  const file = path.join(env.tmp, 'session-data.bin');
  log(`writing ${settings.sessionBytes / MiB} MiB of random data for the parallel sessions`);
  const digest = randomFile(file, settings.sessionBytes);
  const title = `${settings.sessions} parallel sessions x ${settings.sessionBytes / MiB} MiB piped into remote sha256, verified`;
  return { file, digest, title, total: settings.sessions * settings.sessionBytes, remove: () => fs.rmSync(file, { force: true }) };
}

async function concurrency(env: BenchEnv, results: Results): Promise<void> {
  const data = parallelData(env);
  results.cases.push(
    await runCase(
      newCase('parallel-checksums', 'concurrency', data.title, 'default', data.total),
      settings.runs,
      () => [env.directPath, env.proxyPath()],
      (p) => countingGcs(p, () => parallelChecksums(p, settings.sessions, data.file, settings.sessionBytes, data.digest)),
    ),
  );
  data.remove();
}

/**
 * What OpenSSH's default client gets (no -c on either path) from a daemon
 * run with --prefer-aes-gcm all: directly it uses chacha20-poly1305, its first
 * choice; through that daemon, AES-GCM once it moves bulk data. The lever's
 * effect for users, not one of the issue's targets, which keep one cipher on
 * both paths.
 */
async function clients(env: BenchEnv, results: Results): Promise<void> {
  const prefer = await env.extraDaemon({ flags: ['--prefer-aes-gcm', 'all'] });
  const bytes = settings.bulkBytes;
  log('warm-up: a download and an upload through the --prefer-aes-gcm all daemon');
  await download(prefer.path, 'default', bytes);
  await upload(prefer.path, 'default', bytes);
  const paths = (): [SshPath, SshPath] => [env.directPath, prefer.path];
  const what = "OpenSSH's default client, proxy with --prefer-aes-gcm all";
  const size = bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`;
  results.cases.push(await runCase(newCase('clients-download', 'clients', `download ${size}, ${what}`, 'default', bytes), settings.runs, paths, (p) => download(p, 'default', bytes)));
  results.cases.push(await runCase(newCase('clients-upload', 'clients', `upload ${size}, ${what}`, 'default', bytes), settings.runs, paths, (p) => upload(p, 'default', bytes)));
  const data = parallelData(env);
  results.cases.push(
    await runCase(newCase('clients-parallel', 'clients', `${data.title}, ${what}`, 'default', data.total), settings.runs, paths, (p) =>
      parallelChecksums(p, settings.sessions, data.file, settings.sessionBytes, data.digest),
    ),
  );
  data.remove();
  await prefer.stop();
}

/**
 * The bulk transfers (first bulk cipher) with the session in the user's
 * server (--upstream websocket): through the daemon, the Hub's proxy
 * (configurable-http-proxy) and the server extension's `sshd -i` in the
 * Jupyter server, here all on this machine, against the direct sshd. What
 * container spawners' users get; not one of issue 5's targets. The proxy
 * CPU column is the daemon's alone: the Hub's proxy, the Jupyter server and
 * its sshd are outside the daemon's cgroup.
 */
async function websocket(env: BenchEnv, results: Results): Promise<void> {
  const server = await env.extraDaemon({ flags: ['--upstream', 'websocket'] });
  const cipher = settings.ciphers[0]!;
  const bytes = settings.bulkBytes;
  const size = bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`;
  const files = sftpFiles(env, 'bench-websocket', bytes);
  const paths = (): [SshPath, SshPath] => [env.directPath, server.path];
  for (const t of bulkTransfers(env, files, cipher, bytes)) {
    const title = `${t.what} ${size}, session in the user's server (--upstream websocket, through the Hub's proxy)`;
    await warmUpCase(title, paths, t.run);
    results.cases.push(await runCase(newCase(`websocket-${t.id}/${cipher}`, 'websocket', title, cipher, bytes), settings.runs, paths, t.run));
  }
  files.remove();
  await server.stop();
}

/** settleDaemon's answer for the log: seconds waited, or that no full GC came. */
function settleText(seconds: number): string {
  return seconds < 0 ? 'never (RSS still moving after 60 s)' : `in ${fmt(seconds, 0)} s`;
}

async function idle(env: BenchEnv, results: Results): Promise<void> {
  const held = settings.idleHoldSeconds > 0 ? `, held ${settings.idleHoldSeconds} s` : '';
  const result = newCase('idle', 'idle', `${settings.idleSessions} concurrent idle sessions (connect all, ${settings.idleParallel} at a time${held})`, 'default', 0);
  log(`${result.title}: ${settings.idleRuns} runs per path`);
  for (let i = 0; i < settings.idleRuns; i++) {
    for (const p of order(i, env.directPath, env.proxyPath())) {
      // Up to 2 x 60 s of it waiting for the daemon's memory to settle (settleDaemon).
      const r = await measure(p, () => idleSessions(p, settings.idleSessions, settings.idleParallel, settings.idleHoldSeconds, log), 420_000 + settings.idleHoldSeconds * 1000);
      // The idle case's time is the connect time of all sessions, not the teardown.
      r.seconds = r.extra!.connectSeconds!;
      (p.name === 'direct' ? result.direct : result.proxy).push(r);
      const e = r.extra!;
      log(
        `  run ${i + 1}/${settings.idleRuns} ${p.name.padEnd(6)} connect ${fmt(e.connectSeconds!, 1)} s` +
          (p.name === 'proxy'
            ? `, daemon RSS ${fmt(e.daemonRssBeforeKb! / 1024, 1)} -> ${fmt(e.daemonRssKb! / 1024, 1)} MiB (${fmt(e.daemonRssPerSessionKb!, 1)} KiB/session;` +
              ` settled ${settleText(e.daemonSettleSecondsBefore!)} before, ${settleText(e.daemonSettleSecondsWith!)} after opening` +
              (e.holdSeconds !== undefined
                ? `; ${fmt(e.daemonRssSettledKb! / 1024, 1)} MiB then, at most ${fmt(e.daemonRssHoldMaxKb! / 1024, 1)} MiB in ${e.holdSeconds} s held, ${e.holdPacketsForwarded} packets forwarded meanwhile)`
                : ')')
            : '') +
          `, sshd Pss ${fmt(e.sshdPssPerSessionKb!, 0)} KiB/session (${e.sshdProcesses} sshd)`,
      );
    }
  }
  results.cases.push(result);
}

/**
 * How long the loaded case leaves the daemon without traffic before each
 * download, as between two users' transfers. The first transfer after such a
 * pause is where V8's full collections came back with 1,000 sessions open
 * (bench/README.md, "Full collections with 1,000 sessions open"); runs back
 * to back mostly missed them.
 */
const LOADED_QUIET_MS = 11_000;

async function loaded(env: BenchEnv, results: Results): Promise<void> {
  const cipher = settings.ciphers[0]!;
  const bytes = settings.bulkBytes;
  const size = bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`;
  const directions: [string, (p: SshPath) => Promise<{ bytes: number }>][] = [
    ['download', (p) => download(p, cipher, bytes)],
    ['upload', (p) => upload(p, cipher, bytes)],
  ];
  log(`loaded: ${settings.runs} runs per direction and path while ${settings.idleSessions} idle sessions stay open`);
  // The idle sessions load the machine for both paths alike; the daemon also holds their state.
  const sessions = await openIdleSessions(env.proxyPath(), settings.idleSessions, settings.idleParallel, log);
  try {
    for (const [direction, transfer] of directions) {
      const result = newCase(
        `${direction}-loaded/${cipher}`,
        'loaded',
        `${direction} ${size} while ${settings.idleSessions} idle sessions stay open through the proxy (${LOADED_QUIET_MS / 1000} s without traffic before each run)`,
        cipher,
        bytes,
      );
      log(result.title);
      for (let i = 0; i < settings.runs; i++) {
        for (const p of order(i, env.directPath, env.proxyPath())) {
          await sleep(LOADED_QUIET_MS);
          const r = await measure(p, () => countingGcs(p, () => transfer(p)), 20_000, sessions.sshdPids);
          (p.name === 'direct' ? result.direct : result.proxy).push(r);
          const gcs = r.extra?.daemonFullGcs;
          log(`  run ${i + 1}/${settings.runs} ${describeRun(r)}${gcs === undefined ? '' : `, ${gcs} full GCs`}`);
        }
      }
      logMedians(result);
      results.cases.push(result);
    }
  } finally {
    await sessions.close();
  }
}

/** A transfer the profile case runs through the profiled daemon. */
interface Profiled {
  /** As the report names it: "bulk download", "parallel (100 x 100 MiB)". */
  what: string;
  cipher: string;
  /** Names its files in bench/out/profile. */
  name: string;
  run(p: SshPath): Promise<{ bytes: number }>;
}

/**
 * A download and an upload per bulk cipher. A fresh daemon spends ~8 % of its
 * first GiB's CPU in V8's optimizing compiler and ~2.0 s/GiB against ~1.5
 * later; after 2 GiB the compiler's share is below 1 % (bench/README.md,
 * "Eleventh session"). A daemon that has served users for a while is what
 * users meet, and what the throughput cases and profiles should measure.
 */
async function warmUp(p: SshPath): Promise<void> {
  for (const cipher of settings.ciphers) {
    await download(p, cipher, settings.bulkBytes);
    await upload(p, cipher, settings.bulkBytes);
  }
}

/**
 * Profiles each transfer --profile selects (download and upload once per bulk
 * cipher; the concurrency case once, with its default cipher), once per
 * profiler, each profiler with a daemon of its own: under `node --cpu-prof`,
 * summarized over each transfer's window, and under `perf record` for each
 * transfer alone.
 *
 * Each daemon is warmed up first (warmUp), as the bench's own daemon is.
 */
async function profile(env: BenchEnv, results: Results): Promise<void> {
  const dir = path.join(REPO_ROOT, 'bench', 'out', 'profile');
  fs.mkdirSync(dir, { recursive: true });
  const profilers = settings.profilers.filter((p) => {
    if (p !== 'perf') return true;
    const why = perfUnusable();
    if (why) {
      log(`  no perf profiles: ${why}`);
      results.notes.push(`No perf profiles in this run: ${why}.`);
    }
    return why === undefined;
  });
  const bytes = settings.bulkBytes;
  const transfers: Profiled[] = [];
  for (const direction of ['download', 'upload'] as const) {
    if (!settings.profile.includes(direction)) continue;
    const transfer = direction === 'download' ? download : upload;
    for (const cipher of settings.ciphers) {
      transfers.push({ what: `bulk ${direction}`, cipher, name: `${direction}-${cipher.replace(/@.*/, '')}`, run: (p) => transfer(p, cipher, bytes) });
    }
  }
  const file = path.join(env.tmp, 'profile-session-data.bin');
  try {
    if (settings.profile.includes('parallel')) {
      const digest = randomFile(file, settings.sessionBytes);
      transfers.push({
        what: `parallel (${settings.sessions} x ${settings.sessionBytes / MiB} MiB piped into remote sha256)`,
        cipher: 'default',
        name: 'parallel',
        run: (p) => parallelChecksums(p, settings.sessions, file, settings.sessionBytes, digest),
      });
    }
    for (const profiler of profilers) await profileWith(profiler, env, results, dir, transfers);
  } finally {
    fs.rmSync(file, { force: true });
  }
}

async function profileWith(profiler: Profiler, env: BenchEnv, results: Results, dir: string, transfers: Profiled[]): Promise<void> {
  const before = new Set(fs.readdirSync(dir));
  const daemon = await env.extraDaemon({ nodeArgs: profiler === 'v8' ? ['--cpu-prof', '--cpu-prof-dir', dir] : [] });
  const p = daemon.path;
  const windows: { transfer: Profiled; window: { fromUs: number; toUs: number } }[] = [];
  try {
    await trueCommand(p); // the login and the Hub's server check before any window
    const warmUpStart = p.serverCpu().daemon ?? 0;
    await warmUp(p);
    log(`  ${profiler}: daemon warmed up (${((p.serverCpu().daemon ?? 0) - warmUpStart).toFixed(1)} s of CPU)`);
    for (const transfer of transfers) {
      await quiesce(p); // the previous transfer's sshd gone, so that its end is not in the window
      const perfFile = path.join(dir, `${transfer.name}.perf`);
      const recording = profiler === 'perf' ? await recordPerf(daemon.pid, perfFile) : undefined;
      const fromUs = Number(process.hrtime.bigint() / 1000n);
      let r: Run;
      try {
        r = await measure(p, () => transfer.run(p));
      } finally {
        await recording?.stop();
      }
      windows.push({ transfer, window: { fromUs, toUs: Number(process.hrtime.bigint() / 1000n) } });
      log(`  profiled ${transfer.what} [${transfer.cipher}] under ${profiler}: ${describeRun(r)}`);
      if (recording) {
        const summary = summarizePerf(perfFile, daemon.pid);
        results.perfProfiles = [
          ...(results.perfProfiles ?? []),
          { what: transfer.what, cipher: transfer.cipher, daemonCpuSeconds: r.cpu.proxy ?? 0, seconds: r.seconds, bytes: r.bytes, summary },
        ];
        console.log(formatPerfSummary(summary));
      }
    }
  } finally {
    await daemon.stop();
  }
  if (profiler !== 'v8') return;
  const written = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile') && !before.has(f));
  if (written.length !== 1) {
    log(`  no single new .cpuprofile in ${dir} (${written.join(', ')})`);
    return;
  }
  const file = path.join(dir, 'daemon.cpuprofile');
  fs.renameSync(path.join(dir, written[0]!), file);
  for (const { transfer, window } of windows) {
    const summary: ProfileSummary = summarize(file, 30, window);
    results.profiles.push({ what: transfer.what, cipher: transfer.cipher, summary });
    console.log(`${transfer.name}: ${formatSummary(summary)}`);
  }
}

/** Records (and logs) how fast the host runs now, between cases so that no transfer competes with it. */
function probeHostSpeed(results: Results, when: string): void {
  const mibps = aesGcmMiBps();
  if (mibps === undefined) {
    log(`host speed ${when}: no usable openssl`);
    return;
  }
  results.hostSpeed.push(mibps);
  log(`host speed ${when}: one core's AES-128-GCM (openssl speed) at ${mibps.toFixed(0)} MiB/s`);
}

async function main(): Promise<void> {
  const m = machine();
  const results: Results = {
    startedAt: startedAt.toISOString(),
    finishedAt: '',
    machine: m,
    settings,
    loadavg: { start: os.loadavg(), end: [] },
    hostSpeed: [],
    cases: [],
    cpuCost: [],
    profiles: [],
    notes: [],
  };
  log(`machine: ${m.cpu}, ${m.cores} cores (${m.cpuFlags.join(' ')}), ${m.memoryGiB} GiB, Linux ${m.kernel}`);
  log(`versions: ${m.openssh}; Node ${m.node} (daemon: ${m.daemonEnv} node ${m.daemonNodeArgs}); ssh2 ${m.ssh2} (native binding ${m.ssh2NativeBinding ? 'built' : 'MISSING'})`);
  log(`bulk ciphers (client leg, both paths): ${settings.ciphers.join(', ')}; upstream leg: ${m.upstreamCipher}`);
  log(`load average at start: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  probeHostSpeed(results, 'at start');
  if (settings.sessionBytes < 100 * MiB || settings.sessions < 100 || settings.idleSessions < 1000 || settings.bulkBytes < GiB || settings.idleRuns < settings.runs || settings.idleHoldSeconds < IDLE_HOLD_SECONDS) {
    results.notes.push(
      `${REDUCED_NOTE} (1 GiB bulk, 100 x 100 MiB parallel, 1,000 idle sessions held ${IDLE_HOLD_SECONDS} s, every case ${settings.runs} runs): ` +
        `bulk ${settings.bulkBytes / MiB} MiB, parallel ${settings.sessions} x ${settings.sessionBytes / MiB} MiB, ` +
        `idle ${settings.idleSessions} sessions held ${settings.idleHoldSeconds} s in ${settings.idleRuns} runs.`,
    );
  }

  const env = await setUp(log);
  // The first login through the proxy starts the user's Jupyter server.
  log('warm-up: first login (starts the Jupyter server)');
  await trueCommand(env.proxyPath());
  await trueCommand(env.directPath);
  m.keyExchange = { direct: await keyExchange(env.directPath), proxy: await keyExchange(env.proxyPath()) };
  log(`key exchange: direct ${m.keyExchange.direct}, proxy ${m.keyExchange.proxy}`);
  m.daemonAesGcm = /AES-GCM by ([^,]+),/.exec(env.proxy.logs())?.[1] ?? 'unknown (not in its start-up log)';
  log(`the daemon's AES-GCM: ${m.daemonAesGcm}`);
  if (settings.cases.some((c) => c === 'bulk' || c === 'link' || c === 'concurrency' || c === 'loaded')) {
    log(`warm-up: a download and an upload per bulk cipher on both paths (V8 compiles the daemon's data path)`);
    await warmUp(env.proxyPath());
    await warmUp(env.directPath);
  }

  const groups: Record<CaseGroup, (e: BenchEnv, r: Results) => Promise<void>> = {
    bulk,
    'relay-floor': relayFloor,
    latency,
    cold: coldLatency,
    key: keyLatency,
    echo,
    link,
    concurrency,
    clients,
    websocket,
    idle,
    loaded,
    profile,
  };
  for (const c of ALL_CASES) {
    if (!settings.cases.includes(c)) continue;
    await groups[c](env, results);
    probeHostSpeed(results, `after ${c}`);
    writeReports(results, opts.out); // partial results survive a later failure
  }
  results.finishedAt = new Date().toISOString();
  results.loadavg.end = os.loadavg();
  writeReports(results, opts.out);
  log(`wrote ${path.join(opts.out, 'results.json')} and results.md`);
}

let exiting = false;
const abort = (why: string, code: number) => {
  if (exiting) return;
  exiting = true;
  console.error(`\n${why}: cleaning up`);
  void cleanup().finally(() => process.exit(code));
};
process.on('SIGINT', () => abort('SIGINT', 130));
process.on('SIGTERM', () => abort('SIGTERM', 143));
process.on('SIGHUP', () => abort('SIGHUP', 129));
process.on('uncaughtException', (err) => {
  console.error(err);
  abort('uncaught exception', 1);
});

main().then(
  async () => {
    if (exiting) return;
    exiting = true;
    log('cleaning up');
    await cleanup();
    process.exit(0);
  },
  (err: Error) => {
    if (exiting) return; // interrupted: the children were killed on purpose
    console.error(err.stack ?? err.message);
    abort('failure', 1);
  },
);
